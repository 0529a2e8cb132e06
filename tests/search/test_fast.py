"""Fast mode: nested pretraining, cheap probes, batch-fitted predictor, warm-started
retraining; the config preset that bundles them."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.budget.core import check_budget
from embudget.config import TrainConfig, flatten, load_config, load_preset
from embudget.data import load_dataset
from embudget.errors import ConfigError
from embudget.io import load_npz
from embudget.models.mf import MF
from embudget.pipeline import run as loop
from embudget.pipeline.pretrain import pretrain_key
from embudget.search.actions import RankAssignment
from embudget.search.loop import Searcher
from embudget.search.nested import NestedSizes
from embudget.search.predictor import DeepSetsPredictor, PredictorTrainer
from embudget.search.probe import NOISY_FITNESS_USERS, ProbePlan, probe_plan
from embudget.seeds import np_rng
from embudget.training.fit import fit, validation_users

from .test_loop import SETTINGS


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------
def test_fast_preset_is_applied_under_explicit_settings() -> None:
    cfg = load_config(fast=True)
    for key, value in flatten(load_preset("fast")).items():
        assert cfg.flat()[key] == value
    # --set and files win over the preset; the backbone defaults still apply
    cfg = load_config(overrides=["search.probe.steps=7"], fast=True)
    assert cfg.search.probe.steps == 7 and cfg.search.pretrain.mode == "nested"
    assert cfg.search.probe.lr == 0.005  # MF's backbone default survives the preset
    assert load_config(fast=False).search.pretrain.mode == "standard"  # faithful by default


def test_ngcf_default_is_the_procedure_its_committed_cells_measured() -> None:
    """NGCF's default search is the one run in results/gowalla-mini-ngcf-90-e40 (RESULTS.md,
    "gowalla-mini, NGCF"): its config rebuilds those cells' recorded hashes exactly."""
    from embudget.bench.cells import Cell, Settings, cell_config
    from embudget.bench.records import load_results

    folder = Path(__file__).resolve().parents[2] / "results" / "gowalla-mini-ngcf-90-e40"
    records = load_results(folder / "results.jsonl")
    cells = {(r["seed"], r["config_hash"]) for r in records if r["method"] == "bet"}
    assert len(cells) == 2
    for seed, recorded in cells:
        cell = Cell("gowalla-mini", "ngcf", "bet", 0.9, seed)
        default = cell_config(cell, Settings(overrides=("search.retrain.top=1",), fast=None))
        assert default.hash() == recorded
        assert default.search.probe.steps == 20 and default.search.pretrain.mode == "standard"
        assert default.train.eval_every_epochs == 40


def test_fast_preset_differs_by_backbone() -> None:
    cfg = load_config(overrides=["model.name=lightgcn"], fast=True)
    for key, value in flatten(load_preset("fast-lightgcn")).items():
        assert cfg.flat()[key] == value
    lightgcn = cfg.search
    assert lightgcn.pretrain.mode == "standard" and lightgcn.probe.steps == 20
    assert lightgcn.retrain.init == "scratch"
    # the rest of the fast preset still applies, and --set still wins
    assert lightgcn.predictor.update_mode == "batch" and lightgcn.probe.user_fraction == 0.25
    cfg = load_config(overrides=["model.name=lightgcn", "search.probe.steps=0"], fast=True)
    assert cfg.search.probe.steps == 0
    # a backbone chosen in a file or mapping is seen as well as one chosen by --set
    from_mapping = load_config(updates={"model": {"name": "lightgcn"}}, fast=True)
    assert from_mapping.search.probe.steps == 20
    # MF and NCF keep the nested Θ0 and warm retraining; faithful LightGCN is untouched
    for name in ("mf", "ncf"):
        fast = load_config(overrides=[f"model.name={name}"], fast=True)
        assert fast.search.pretrain.mode == "nested"
    assert load_config(overrides=["model.name=lightgcn"], fast=False).search.probe.steps is None


def test_fast_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="needs search.pretrain.mode=nested"):
        load_config(overrides=["search.retrain.init=shared"], fast=False)
    with pytest.raises(ConfigError, match="nested_kept_min"):
        load_config(overrides=["search.pretrain.nested_kept_min=0"], fast=True)
    with pytest.raises(ConfigError, match="not one of"):
        load_config(overrides=["search.predictor.update_mode=sometimes"], fast=False)
    with pytest.raises(ConfigError, match="probe.steps"):
        load_config(overrides=["search.probe.steps=-1"], fast=False)


# --------------------------------------------------------------------------------------------
# nested sizes
# --------------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    n_users=st.integers(1, 60),
    n_items=st.integers(1, 60),
    d_max=st.sampled_from([4, 8, 32]),
    kept_min=st.floats(0.01, 1.0),
    step=st.integers(0, 10_000),
    seed=st.integers(0, 2**31),
)
def test_nested_sizes_are_valid_ranked_and_a_function_of_the_step(
    n_users: int, n_items: int, d_max: int, kept_min: float, step: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ra = RankAssignment(rng.integers(1, 50, n_users), rng.integers(1, 50, n_items))
    ns = NestedSizes(ra, d_max, kept_min, seed)
    us, vs = ns(step)
    assert us.shape == (n_users,) and vs.shape == (n_items,)
    for s in (us, vs):
        assert s.min() >= 1 and s.max() <= d_max
    assert ra.follows_rank(us, vs)  # larger sizes to more frequent entities
    u2, v2 = NestedSizes(ra, d_max, kept_min, seed)(step)  # no hidden state: resumable
    assert np.array_equal(us, u2) and np.array_equal(vs, v2)


def test_mf_fast_search_on_small_data_warns_with_what_was_measured_for_mf(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # MF's fast mode has no small-data rule: its quarter sample stays, and the warning gives
    # MF's measured advice, not LightGCN's 50-step probes (which MF never ran)
    ds = load_dataset("gowalla-mini")
    cfg = load_config(overrides=["data.name=gowalla-mini", "model.name=mf"], fast=True)
    with caplog.at_level(logging.WARNING, logger="embudget.search.probe"):
        plan = probe_plan(cfg, ds)
    assert plan.steps == 0
    np.testing.assert_array_equal(plan.users, validation_users(ds, 0.25, 0, "fitness-users"))
    assert "noisy sample" in caplog.text and "--methods su,bet" in caplog.text
    assert "small_data_steps" not in caplog.text

    # a backbone nothing was measured for on small data gets no borrowed claim
    ncf = load_config(overrides=["data.name=gowalla-mini", "model.name=ncf"], fast=True)
    with caplog.at_level(logging.WARNING, logger="embudget.search.probe"):
        caplog.clear()
        probe_plan(ncf, ds)
    assert "not measured for ncf" in caplog.text and "user_fraction=1.0" in caplog.text
    assert "small_data_steps" not in caplog.text and "--methods su,bet" not in caplog.text


def test_small_data_probes_score_every_user_and_run_longer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ds = load_dataset("gowalla-mini")
    every = validation_users(ds, 1.0, 0, "fitness-users")
    quarter = validation_users(ds, 0.25, 0, "fitness-users")
    assert quarter.size < every.size < NOISY_FITNESS_USERS  # small data by any of the rules

    def plan(*settings: str) -> ProbePlan:
        cfg = load_config(
            overrides=["data.name=gowalla-mini", "model.name=lightgcn", *settings], fast=True
        )
        return probe_plan(cfg, ds)

    small = plan()  # fast LightGCN's preset: under 2,000 sampled users, every user, 50 steps
    assert small.steps == 50
    np.testing.assert_array_equal(small.users, every)

    # a threshold the quarter meets, or none: the quarter and the 20-step probe, as on Gowalla
    for setting in (
        f"search.probe.small_data_users={quarter.size}",
        "search.probe.small_data_users=0",
    ):
        with caplog.at_level(logging.WARNING, logger="embudget.search.probe"):
            caplog.clear()
            large = plan(setting)
        assert large.steps == 20
        np.testing.assert_array_equal(large.users, quarter)
        assert "noisy sample" in caplog.text  # still under 2,000 users: the search says so
        assert "search.probe.small_data_steps=50" in caplog.text  # and names the rule

    kept = plan("search.probe.small_data_steps=null")  # every user, the probe length unchanged
    assert kept.steps == 20 and kept.users.size == every.size
    # every user already (the faithful default): the rule has nothing to do
    full = plan("search.probe.user_fraction=1.0", "search.probe.steps=7")
    assert full.steps == 7 and full.users.size == every.size

    with pytest.raises(ConfigError, match="small_data_users"):
        plan("search.probe.small_data_users=-1")
    with pytest.raises(ConfigError, match="small_data_steps"):
        plan("search.probe.small_data_steps=-5")


def test_nested_kept_fractions_cover_the_configured_range() -> None:
    ds = load_dataset("gowalla-mini")
    ra = RankAssignment(ds.user_freq, ds.item_freq)
    ns = NestedSizes(ra, 32, 0.05, seed=3)
    full = 32 * ds.n_entities
    kept, used = [], []
    for t in range(200):
        kept.append(ns.kept_fraction(np_rng(3, "nested", t)))  # the draw step t starts with
        used.append(sum(int(a.sum()) for a in ns(t)) / full)
    k, u = np.array(kept), np.array(used)
    assert k.min() >= 0.05 and k.max() <= 1.0
    # log-uniform on [0.05, 1]: the median kept fraction is about sqrt(0.05) = 0.22
    assert 0.15 < np.median(k) < 0.3
    assert (k < 0.1).mean() > 0.15 and (k > 0.5).mean() > 0.15
    assert np.all(u <= k + 1e-12)  # the sampler never exceeds the step's budget


def test_fit_with_nested_sizes_trains_truncations_and_ends_at_full_size() -> None:
    ds = load_dataset("gowalla-mini")
    ra = RankAssignment(ds.user_freq, ds.item_freq)
    seen: list[int] = []
    ns = NestedSizes(ra, 16, 0.05, seed=0)

    def sizes_at(step: int) -> tuple[np.ndarray, np.ndarray]:
        seen.append(step)
        return ns(step)

    torch.manual_seed(0)
    model = MF(ds.n_users, ds.n_items, 16)
    cfg = TrainConfig(batch_users=500, eval_every_steps=10, patience=1, max_steps=30)
    fr = fit(model, ds, cfg, seed=0, sizes_at=sizes_at)
    assert seen[:10] == list(range(10)) and len(seen) == fr.steps
    assert all(t.is_full for t in model.embedding_tables())  # validated and restored at full


# --------------------------------------------------------------------------------------------
# predictor: batch updates and a linear output
# --------------------------------------------------------------------------------------------
def _synthetic_replay(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Actions over 30 users / 40 items at d_max 8, fitness = share of the budget the top
    third of users gets (a popularity-rewarding fitness, like the real one)."""
    rng = np.random.default_rng(seed)
    hu = np.stack([rng.multinomial(30, rng.dirichlet(np.ones(8))) for _ in range(n)])
    hv = np.stack([rng.multinomial(40, rng.dirichlet(np.ones(8))) for _ in range(n)])
    sizes = np.arange(1, 9)
    r = (hu * sizes).sum(1) / ((hu + hv) * sizes).sum(1)
    return hu, hv, r


def test_batch_updates_fit_the_replay_better_than_single_pair_updates() -> None:
    from scipy.stats import spearmanr

    hu, hv, r = _synthetic_replay(30, 0)
    freqs = (np.arange(30, 0, -1), np.arange(40, 0, -1))
    rhos = {}
    for batch in (False, True):
        gen = torch.Generator().manual_seed(0)
        pred = DeepSetsPredictor.from_freqs(*freqs, d_max=8, generator=gen, linear_output=batch)
        tr = PredictorTrainer(pred, batch=batch)
        rng = np.random.default_rng(0)
        for i in range(30):  # the online regime: one pair added per iteration
            tr.add((hu[i][None], hv[i][None]), float(r[i]))
            logs = tr.update(rng, 20 if batch else 2)
            if batch:
                assert all(lg["index"] == -1 for lg in logs)
        with torch.no_grad():
            rhos[batch] = spearmanr(pred(hu, hv).numpy(), r).statistic
    assert rhos[True] >= 0.8 and rhos[True] > rhos[False]


def test_batch_mode_decays_the_learning_rate_once_per_iteration() -> None:
    hu, hv, r = _synthetic_replay(3, 1)
    pred = DeepSetsPredictor.from_freqs(np.arange(30, 0, -1), np.arange(40, 0, -1), d_max=8)
    tr = PredictorTrainer(pred, lr=0.01, lr_decay=0.5, lr_min=0.001, batch=True)
    tr.add((hu[0][None], hv[0][None]), float(r[0]))
    tr.update(np.random.default_rng(0), 10)
    assert tr.lr == pytest.approx(0.005) and tr.n_updates == 10


def test_linear_output_can_go_below_zero_freely() -> None:
    pred = DeepSetsPredictor.from_freqs(
        np.arange(5, 0, -1), np.arange(5, 0, -1), d_max=4, linear_output=True
    )
    assert isinstance(pred.decoder[-1], torch.nn.Linear)
    leaky = DeepSetsPredictor.from_freqs(np.arange(5, 0, -1), np.arange(5, 0, -1), d_max=4)
    assert isinstance(leaky.decoder[-1], torch.nn.LeakyReLU)


# --------------------------------------------------------------------------------------------
# end to end on gowalla-mini
# --------------------------------------------------------------------------------------------
FAST = [
    *SETTINGS,
    "search.probe.steps=3",
    "search.pretrain.nested_kept_min=0.1",
]


@pytest.mark.slow
def test_fast_search_end_to_end_resumes_and_respects_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(overrides=[*FAST, f"cache_dir={tmp_path / 'cache'}"], fast=True)
    std = load_config(overrides=[*SETTINGS, f"cache_dir={tmp_path / 'cache'}"], fast=False)
    ds = load_dataset("gowalla-mini")
    assert pretrain_key(cfg, ds) != pretrain_key(std, ds)  # own cache entry

    with caplog.at_level(logging.WARNING, logger="embudget.search.probe"):
        ref = loop.run_search(cfg, tmp_path / "ref", progress=False)
    # a quarter of gowalla-mini's validation users is a noisy fitness sample, and it says so,
    # with what was measured for MF on small data
    assert any("--methods su,bet" in r.getMessage() for r in caplog.records)
    B = ref.usage.params_budget
    sizes = load_npz(tmp_path / "ref" / "sizes.npz")
    check_budget(sizes["user_sizes"], sizes["item_sizes"], B, 32)
    hist = [json.loads(x) for x in (tmp_path / "ref" / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 6 and all(len(h["predictor_loss"]) == 20 for h in hist)
    assert 0 < ref.test.means["recall@20"] < 1
    # the nested Θ0 was cached once; retraining warm-started from it
    assert len(list((tmp_path / "cache").glob("pretrain-mf-*.pt"))) == 1

    real_probe = Searcher.probe

    def probe_then_die(self: Searcher, action: object, t: int) -> tuple:
        if t == 4:
            raise KeyboardInterrupt
        return real_probe(self, action, t)  # type: ignore[arg-type]

    monkeypatch.setattr(Searcher, "probe", probe_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.run_search(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(Searcher, "probe", real_probe)
    res = loop.run_search(cfg, tmp_path / "cut", resume=True, progress=False)
    cut = load_npz(tmp_path / "cut" / "sizes.npz")
    assert np.array_equal(cut["user_sizes"], sizes["user_sizes"])
    assert res.test == ref.test


@pytest.mark.slow
def test_warm_started_su_starts_from_the_nested_prefixes(tmp_path: Path) -> None:
    over = [*FAST, f"cache_dir={tmp_path / 'cache'}", "search.method=su", "train.max_steps=20"]
    warm = loop.run_search(load_config(overrides=over, fast=True), tmp_path / "w", progress=False)
    scratch_over = [*over, "search.retrain.init=scratch"]
    cold = loop.run_search(
        load_config(overrides=scratch_over, fast=True), tmp_path / "c", progress=False
    )
    assert warm.usage.params == cold.usage.params
    # 20 steps from nested Θ0's prefixes beat 20 steps from a random init by a clear margin
    # (valid quality 0.0295 against 0.0224 on gowalla-mini)
    assert warm.valid.means["quality"] > 1.2 * cold.valid.means["quality"]


def test_fast_settings_enter_the_hash_only_when_they_differ_from_the_defaults() -> None:
    base = load_config(fast=False).hash()
    assert load_config(overrides=["search.retrain.patience=null"], fast=False).hash() == base
    assert load_config(fast=True).hash() != base
    assert load_config(overrides=["search.retrain.patience=1"], fast=False).hash() != base

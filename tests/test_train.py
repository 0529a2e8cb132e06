"""Training: determinism, early stopping, best-weight restore, exact resume (gowalla-mini)."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.config import TrainConfig, load_config
from embudget.data import load_dataset
from embudget.data.dataset import Dataset
from embudget.errors import ConfigError
from embudget.models import build_model
from embudget.pipeline.build import selection_users
from embudget.pipeline.pretrain import pretrain_key
from embudget.pipeline.run import run_train
from embudget.seeds import torch_generator
from embudget.training import fit as fit_module
from embudget.training.fit import fit, validate, validation_users

CFG = TrainConfig(batch_users=1000, eval_every_steps=40, patience=2, max_steps=200)


@pytest.fixture(scope="module")
def mini() -> Dataset:
    return load_dataset("gowalla-mini")


def _model(ds: Dataset, name: str = "mf") -> torch.nn.Module:
    return build_model(
        name, ds.n_users, ds.n_items, ds.train, d_max=32, generator=torch_generator(0, "init")
    )


def test_fit_is_deterministic_and_restores_best(mini: Dataset) -> None:
    runs = []
    for _ in range(2):
        m = _model(mini)
        fr = fit(m, mini, CFG, seed=7)
        runs.append((fr, validate(m, mini, "valid").means))
    (a, va), (b, vb) = runs
    assert va == vb
    assert [h["valid"] for h in a.history] == [h["valid"] for h in b.history]
    # best weights restored: the final validation equals the best recorded one
    best = max(h["valid"]["quality"] for h in a.history)
    assert va["quality"] == pytest.approx(best, abs=1e-12)
    assert a.best_step == max(a.history, key=lambda h: h["valid"]["quality"])["step"]
    # early stopping: stop after `patience` evaluations without strict improvement
    assert a.stopped_early == (a.steps < CFG.max_steps)
    if a.stopped_early:
        assert not any(h["improved"] for h in a.history[-CFG.patience :])


def test_training_beats_untrained(mini: Dataset) -> None:
    m = _model(mini)
    before = validate(m, mini, "valid").means["recall@20"]
    fit(m, mini, CFG, seed=0)
    after = validate(m, mini, "valid").means["recall@20"]
    assert after > before + 0.03


def test_validate_first_never_returns_worse_than_a_warm_start(mini: Dataset) -> None:
    warm = _model(mini)
    fit(warm, mini, CFG, seed=0)
    start = validate(warm, mini, "valid").means["quality"]
    state = {k: v.clone() for k, v in warm.state_dict().items()}
    harsh = TrainConfig(batch_users=1000, eval_every_steps=20, patience=1, max_steps=60, lr=1.0)
    plain = _model(mini)
    plain.load_state_dict(state)
    fit(plain, mini, harsh, seed=1)
    assert validate(plain, mini, "valid").means["quality"] < start  # lr 1.0 ruins the start
    kept = _model(mini)
    kept.load_state_dict(state)
    fr = fit(kept, mini, harsh, seed=1, validate_first=True)
    assert fr.history[0]["step"] == 0 and fr.history[0]["loss"] is None
    assert fr.best_step == 0 and fr.valid is not None
    assert fr.valid.means["quality"] == pytest.approx(start, abs=1e-12)
    assert validate(kept, mini, "valid").means["quality"] == pytest.approx(start, abs=1e-12)


@pytest.mark.parametrize("name", ["mf", "ngcf"])  # NGCF: dropout stream in the checkpoint
def test_interrupted_fit_resumes_to_the_same_result(
    mini: Dataset, tmp_path: Path, name: str
) -> None:
    ref_model = _model(mini, name)
    ref = fit(ref_model, mini, CFG, seed=3)

    ckpt = tmp_path / "ckpt.pt"
    calls = {"n": 0}

    def stop_after_two(rec: dict) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    m1 = _model(mini, name)
    with pytest.raises(KeyboardInterrupt):
        fit(m1, mini, CFG, seed=3, checkpoint=ckpt, on_eval=stop_after_two)
    assert ckpt.is_file()
    m2 = _model(mini, name)  # a fresh process would rebuild the model the same way
    res = fit(m2, mini, CFG, seed=3, checkpoint=ckpt)
    assert [h["valid"] for h in res.history] == [h["valid"] for h in ref.history]
    assert res.best_step == ref.best_step and res.steps == ref.steps
    for (k, v), (k2, v2) in zip(
        ref_model.state_dict().items(), m2.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2), k


@pytest.mark.parametrize("name", ["mf", "ngcf"])
def test_a_fit_killed_between_validations_resumes_from_its_clock_checkpoint(
    mini: Dataset, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """checkpoint_seconds=0 saves after every step; a kill right after the save at step 57
    (between the validations at 40 and 80) resumes to the uninterrupted run, losses included."""
    ref_model = _model(mini, name)
    ref = fit(ref_model, mini, CFG, seed=3)

    real_save = fit_module.save_torch
    saves = {"n": 0}

    def save_then_die(path: Path, obj: dict) -> None:
        real_save(path, obj)
        saves["n"] += 1
        if saves["n"] == 57:  # steps 1..39 mid-window, 40 validated, 41..57 mid-window
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt.pt"
    monkeypatch.setattr(fit_module, "save_torch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(_model(mini, name), mini, CFG, seed=3, checkpoint=ckpt, checkpoint_seconds=0)
    monkeypatch.setattr(fit_module, "save_torch", real_save)
    state = torch.load(ckpt, weights_only=True)
    assert state["stepper"]["step"] == 57 and state["stepper"]["loss_n"] == 17
    assert [h["step"] for h in state["history"]] == [40]

    m2 = _model(mini, name)
    res = fit(m2, mini, CFG, seed=3, checkpoint=ckpt, checkpoint_seconds=3600)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in ref.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in res.history] == strip
    assert res.best_step == ref.best_step and res.steps == ref.steps
    for (k, v), (k2, v2) in zip(
        ref_model.state_dict().items(), m2.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2), k


def test_a_selection_sample_is_fixed_and_leaves_earlier_cache_keys_alone(mini: Dataset) -> None:
    base = load_config(overrides=["data.name=gowalla-mini"], fast=False)
    half = load_config(
        overrides=["data.name=gowalla-mini", "train.eval_user_fraction=0.5"], fast=False
    )
    # gowalla-mini's Θ0 cache key (format 2), pinned: a change of it retrains every cached Θ0; the
    # selection sample at 1.0 (every user) is the config without it
    assert pretrain_key(base, mini) == "7ef521b26e8c69a69f82"
    same = load_config(
        overrides=["data.name=gowalla-mini", "train.eval_user_fraction=1.0"], fast=False
    )
    assert same.hash() == base.hash()
    assert pretrain_key(half, mini) != pretrain_key(base, mini)  # another Θ0
    assert selection_users(base, mini) is None
    everyone = validation_users(mini, 1.0, 0, "any")
    users = selection_users(half, mini)
    assert users is not None and users.size == round(0.5 * everyone.size)
    assert np.isin(users, everyone).all() and np.all(np.diff(users) > 0)
    assert np.array_equal(users, selection_users(half, mini))  # the same users every run
    with pytest.raises(ConfigError, match="eval_user_fraction"):
        load_config(overrides=["train.eval_user_fraction=0"], fast=False)


def test_training_selects_on_the_sample_and_tests_on_everyone(tmp_path: Path) -> None:
    over = [
        "data.name=gowalla-mini",
        "model.d_max=16",
        "train.batch_users=1000",
        "train.eval_every_steps=20",
        "train.max_steps=40",
        "train.eval_user_fraction=0.25",
    ]
    res = run_train(load_config(overrides=over, fast=False), tmp_path / "run", progress=False)
    ds = load_dataset("gowalla-mini")
    n_valid = validation_users(ds, 1.0, 0, "any").size
    assert res.valid.n_users_evaluated == round(0.25 * n_valid)
    assert res.test.n_users_evaluated == validate(_model(ds), ds, "test").n_users_evaluated


def test_fused_adam_equals_torch_adam_and_shares_its_checkpoints() -> None:
    from embudget.training.adam import FusedAdam

    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(50, 8, generator=gen)) for _ in range(3)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours, ref = FusedAdam(params, lr=0.03), torch.optim.Adam(twins, lr=0.03, fused=True)
    for step in range(6):
        for i, (p, q) in enumerate(zip(params, twins, strict=True)):
            if step == 0 and i == 2:  # a parameter without a gradient is not stepped
                p.grad = q.grad = None
                continue
            g = torch.randn(50, 8, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        ours.lr = 0.03 * 0.9**step
        for group in ref.param_groups:
            group["lr"] = ours.lr
        ours.step()
        ref.step()
        for p, q in zip(params, twins, strict=True):
            assert torch.equal(p, q)
    # each loads the other's state dict and keeps stepping identically
    ref2 = torch.optim.Adam(twins, lr=1.0, fused=True)
    ref2.load_state_dict(ours.state_dict())
    ours2 = FusedAdam(params, lr=1.0)
    ours2.load_state_dict(ref.state_dict())
    assert ours2.lr == pytest.approx(ours.lr)
    for p, q in zip(params, twins, strict=True):
        g = torch.randn(50, 8, generator=gen)
        p.grad, q.grad = g.clone(), g.clone()
    ours2.step()
    ref2.step()
    for p, q in zip(params, twins, strict=True):
        assert torch.equal(p, q)


def test_earliest_stop_is_the_progress_total() -> None:
    from embudget.training.fit import ValidationPlan, earliest_stop

    cfg = TrainConfig(eval_every_steps=100, patience=3, max_steps=1000)
    plan = ValidationPlan(every=100, patience=3)
    assert earliest_stop(cfg, plan, 0, 0, evaluated=False) == 400  # the first always improves
    assert earliest_stop(cfg, plan, 100, 0, evaluated=True) == 400
    assert earliest_stop(cfg, plan, 300, 2, evaluated=True) == 400
    assert earliest_stop(cfg, plan, 900, 0, evaluated=True) == 1000  # capped at max_steps
    assert earliest_stop(cfg, ValidationPlan(30, 10), 0, 0, evaluated=False) == 330


def test_validation_in_epochs_binds_on_small_data_only_and_keeps_the_stop_in_steps() -> None:
    from embudget.training.fit import ValidationPlan, validation_plan

    bet = TrainConfig()
    assert validation_plan(bet, 50_001) == ValidationPlan(2000, 3)  # bet.md's, whatever the data
    cap = TrainConfig(eval_every_epochs=40)
    # training interactions of protocol P: Gowalla, Yelp2018 (2,000 steps = 39 / 26 epochs)
    assert validation_plan(cap, 513_126) == ValidationPlan(2000, 3)
    assert validation_plan(cap, 781_241) == ValidationPlan(2000, 3)
    # ML-100K, Last.fm, gowalla-mini: 40 passes of 10,000-triple steps, and as many
    # validations as cover the 6,000 steps of bet.md's three windows
    assert validation_plan(cap, 50_001) == ValidationPlan(200, 30)
    assert validation_plan(cap, 26_344) == ValidationPlan(105, 58)  # 58 x 105 = 6,090 steps
    assert validation_plan(cap, 8_354) == ValidationPlan(33, 182)
    assert validation_plan(TrainConfig(eval_every_epochs=0.01), 8_354).every == 1  # never 0


def test_fit_validates_every_so_many_epochs(mini: Dataset) -> None:
    """gowalla-mini's 8,354 training interactions are 8.354 epochs of 1,000-triple steps: 2.5
    epochs are 21 steps, so validations fall at 21, 42, ... (not CFG's 40, 80, ...), and a
    patience of 1 (one 40-step window) allows two of them without improvement."""
    cfg = TrainConfig(
        batch_users=1000, eval_every_steps=40, eval_every_epochs=2.5, patience=1, max_steps=2000
    )
    assert mini.train.nnz == 8_354
    fr = fit(_model(mini), mini, cfg, seed=7)
    steps = [h["step"] for h in fr.history]
    assert steps == list(range(21, 21 * len(steps) + 1, 21))
    assert fr.stopped_early and fr.steps < cfg.max_steps
    assert [h["improved"] for h in fr.history[-3:]] == [True, False, False]
    assert fr.best_step == fr.steps - 42


def _scripted_fit(
    mini: Dataset,
    monkeypatch: pytest.MonkeyPatch,
    qualities: list[float],
    min_delta: float,
    **kwargs: Any,
) -> tuple[list[tuple[int, float]], fit_module.FitResult]:
    """A fit (``kwargs`` to :func:`fit`) whose validations report ``qualities`` in turn (then
    0); returns each validation's (step, quality) and the result."""
    real, left = fit_module.validate, iter(qualities)

    def scripted(*args: object, **kwargs: object) -> object:
        res = real(*args, **kwargs)  # type: ignore[arg-type]
        return dataclasses.replace(res, means={**res.means, "quality": next(left, 0.0)})

    monkeypatch.setattr(fit_module, "validate", scripted)
    cfg = TrainConfig(
        batch_users=1000, eval_every_steps=20, patience=2, max_steps=400, min_delta=min_delta
    )
    fr = fit(_model(mini), mini, cfg, seed=0, **kwargs)
    return [(h["step"], h["valid"]["quality"]) for h in fr.history], fr


def test_min_delta_stops_on_gains_at_the_level_of_noise_and_keeps_the_best_weights(
    mini: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    creep = [0.10, 0.1005, 0.1008, 0.1009]
    # bet.md's rule (min_delta 0): every strict gain resets the patience
    seen, fr = _scripted_fit(mini, monkeypatch, creep, 0.0)
    assert [s for s, _ in seen] == [20, 40, 60, 80, 100, 120]
    assert fr.best_step == 80 and fr.stopped_early
    # gains of at most 0.001 over the last reset do not: the stop comes two validations after
    # 0.10, and the weights kept are still those of the best validation
    seen, fr = _scripted_fit(mini, monkeypatch, creep, 0.001)
    assert [s for s, _ in seen] == [20, 40, 60]
    assert fr.best_step == 60 and fr.stopped_early
    assert [h["improved"] for h in fr.history] == [True, True, True]
    # gains add up: 0.1012 is more than 0.001 above the 0.10 that last reset the patience
    adding_up = [0.10, 0.1006, 0.1012, 0.1013, 0.1013]
    seen, fr = _scripted_fit(mini, monkeypatch, adding_up, 0.001)
    assert [s for s, _ in seen] == [20, 40, 60, 80, 100]
    assert fr.best_step == 80
    # the checkpoint keeps the quality that last reset the patience: killed at step 60 before
    # its save, the run resumes at 40 with 0.10 (not the best, 0.1006), so 0.1012 resets again
    ckpt = tmp_path / "ckpt.pt"

    def kill_at_60(rec: dict[str, Any]) -> None:
        if rec["step"] == 60:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _scripted_fit(mini, monkeypatch, adding_up, 0.001, checkpoint=ckpt, on_eval=kill_at_60)
    monkeypatch.undo()
    seen, resumed = _scripted_fit(mini, monkeypatch, adding_up[2:], 0.001, checkpoint=ckpt)
    assert [s for s, _ in seen] == [20, 40, 60, 80, 100] and resumed.best_step == 80


def _stop_index(rule: fit_module.StopRule, qualities: list[float]) -> tuple[int, list[bool]]:
    """The validation at which ``rule`` stops (len: never) and each validation's improved."""
    improved = []
    for i, q in enumerate(qualities):
        imp, counted = rule.observe(q)
        assert imp or not counted  # a counted validation always improves
        improved.append(imp)
        if rule.stop:
            return i, improved
    return len(qualities), improved


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40),
    st.floats(0.0, 0.1),
    st.integers(1, 5),
)
def test_a_minimum_gain_never_stops_later_and_never_changes_the_best(
    qualities: list[float], delta: float, patience: int
) -> None:
    strict, strict_improved = _stop_index(fit_module.StopRule(patience), qualities)
    lenient, improved = _stop_index(fit_module.StopRule(patience, delta), qualities)
    assert lenient <= strict
    # up to its stop, a fit with min_delta keeps the same best weights as bet.md's rule
    assert improved == strict_improved[: len(improved)]


def test_min_delta_is_not_negative() -> None:
    with pytest.raises(ConfigError, match="train.min_delta must be >= 0"):
        load_config(overrides=["train.min_delta=-0.001"])
    assert load_config(overrides=["train.min_delta=0.0005"]).hash() != load_config().hash()
    assert "train.min_delta" not in load_config().changes()  # hashes of earlier runs unchanged


def test_auto_threads_follow_the_step_work(mini: Dataset) -> None:
    from embudget.training.threads import (
        WORK_PER_THREAD,
        apply_run_threads,
        auto_threads,
        step_work,
    )

    golden = step_work("mf", mini.n_users, mini.n_items, mini.train.nnz, 256, 32)
    lastfm = step_work("lightgcn", 1880, 4489, 26344, 10000, 128)
    gowalla = step_work("lightgcn", 29858, 40981, 513126, 10000, 128)
    assert golden < lastfm < WORK_PER_THREAD <= gowalla
    assert auto_threads(golden, cores=16) == auto_threads(lastfm, cores=16) == 1
    assert auto_threads(gowalla, cores=16) == 2
    assert auto_threads(20 * WORK_PER_THREAD, cores=16) == 15  # one core left to the machine
    assert auto_threads(gowalla, cores=2) == auto_threads(gowalla, cores=1) == 1
    before = torch.get_num_threads()
    try:
        cfg = load_config(overrides=["data.name=gowalla-mini", "threads=2"], fast=False)
        assert apply_run_threads(cfg, mini) == 2 == torch.get_num_threads()  # explicit wins
        cfg = load_config(overrides=["data.name=gowalla-mini"], fast=False)
        assert apply_run_threads(cfg, mini) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_validations_hundreds_of_epochs_apart_warn(
    mini: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    from embudget.training.fit import warn_if_coarse_validation

    with caplog.at_level("WARNING", logger="embudget.training.fit"):
        warn_if_coarse_validation(TrainConfig(), mini)  # 2,000 steps: 2,394 epochs here
        warn_if_coarse_validation(TrainConfig(eval_every_epochs=40), mini)
        warn_if_coarse_validation(TrainConfig(eval_every_steps=100), mini)  # 120 epochs
    assert len(caplog.records) == 2
    first, second = (r.getMessage() for r in caplog.records)
    assert "every 2000 steps is 2394 epochs" in first and "train.eval_every_epochs=40" in first
    assert "every 100 steps is 120 epochs" in second

"""The search loop end to end on gowalla-mini with small T/m/h (bet.md §5–7, §12, §14.6)."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from embudget.budget.core import check_budget
from embudget.config import RunConfig, load_config
from embudget.data import load_dataset
from embudget.io import file_lock, load_npz
from embudget.pipeline import run as loop
from embudget.pipeline.pretrain import pretrain, pretrain_key
from embudget.search.actions import Action, RankAssignment
from embudget.search.loop import Searcher

SETTINGS = [
    "data.name=gowalla-mini",
    "model.name=mf",
    "model.d_max=32",
    "train.batch_users=1000",
    "train.eval_every_steps=40",
    "train.patience=2",
    "train.max_steps=120",
    "search.iterations=6",
    "search.sampler.candidates=12",
    "search.probe.epochs=1",
    "search.retrain.top=2",
    "search.probe.user_fraction=0.5",
    "budget.sparsity=0.8",
]


def _cfg(tmp_path: Path, *extra: str) -> RunConfig:
    return load_config(overrides=[*SETTINGS, f"cache_dir={tmp_path / 'cache'}", *extra], fast=False)


def _read_history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_bet_search_interrupted_and_resumed_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path)
    ref = loop.run_search(cfg, tmp_path / "ref", progress=False)

    # budget respected, accounting consistent, history complete
    ds = load_dataset("gowalla-mini")
    sizes = load_npz(tmp_path / "ref" / "sizes.npz")
    B = ref.usage.params_budget
    assert B == (32 * ds.n_entities) // 5  # floor(0.2 * 32 * N), exact
    check_budget(sizes["user_sizes"], sizes["item_sizes"], B, 32)
    assert ref.usage.params == int(sizes["user_sizes"].sum() + sizes["item_sizes"].sum())
    assert ref.usage.params <= B
    hist = _read_history(tmp_path / "ref")
    assert [h["t"] for h in hist] == list(range(6))
    assert [h["strategy"] for h in hist] == [
        "greedy",
        "greedy",
        "greedy",
        "random",
        "nearest",
        "greedy",
    ]
    assert all(h["params_used"] <= B and len(h["predictor_loss"]) == 2 for h in hist)
    assert ref.n_probes == 6 and ref.method == "bet"
    for metrics in (ref.valid, ref.test):
        assert 0 < metrics.means["recall@20"] <= 1
    # the retrained winner is one of the two best probed actions, sized by the rank assignment
    top = sorted(hist, key=lambda h: (-h["fitness"], h["t"]))[:2]
    ra = RankAssignment(ds.user_freq, ds.item_freq)
    winner = ref.chosen.name
    assert winner in {f"retrain-t{h['t']}" for h in top}
    h = next(h for h in top if f"retrain-t{h['t']}" == winner)
    us, vs = ra.sizes(Action(np.array(h["hist_u"]), np.array(h["hist_v"])))
    assert np.array_equal(us, sizes["user_sizes"]) and np.array_equal(vs, sizes["item_sizes"])

    # interrupt at iteration 3, then resume
    real_probe = Searcher.probe

    def probe_then_die(self: Searcher, action: Action, t: int) -> tuple:
        if t == 3:
            raise KeyboardInterrupt
        return real_probe(self, action, t)

    monkeypatch.setattr(Searcher, "probe", probe_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.run_search(cfg, tmp_path / "cut", progress=False)
    assert len(_read_history(tmp_path / "cut")) == 3
    assert not (tmp_path / "cut" / "results.json").exists()
    monkeypatch.setattr(Searcher, "probe", real_probe)
    res = loop.run_search(cfg, tmp_path / "cut", resume=True, progress=False)

    cut = load_npz(tmp_path / "cut" / "sizes.npz")
    assert np.array_equal(cut["user_sizes"], sizes["user_sizes"])
    assert np.array_equal(cut["item_sizes"], sizes["item_sizes"])
    assert _read_history(tmp_path / "cut") == [
        {**h, "seconds": _read_history(tmp_path / "cut")[i]["seconds"]} for i, h in enumerate(hist)
    ]
    assert res.test == ref.test and res.valid == ref.valid


@pytest.mark.slow
def test_baselines_share_the_harness(tmp_path: Path) -> None:
    su = loop.run_search(_cfg(tmp_path, "search.method=su"), tmp_path / "su", progress=False)
    ds = load_dataset("gowalla-mini")
    B = su.usage.params_budget
    s = load_npz(tmp_path / "su" / "sizes.npz")
    assert set(s["user_sizes"].tolist()) == {B // ds.n_entities}
    assert su.usage.params == (B // ds.n_entities) * ds.n_entities <= B
    sr = loop.run_search(_cfg(tmp_path, "search.method=sr"), tmp_path / "sr", progress=False)
    s = load_npz(tmp_path / "sr" / "sizes.npz")
    assert sr.usage.params <= B and len(set(s["item_sizes"].tolist())) > 3
    full = loop.run_search(_cfg(tmp_path, "search.method=full"), tmp_path / "full", progress=False)
    assert full.usage.fraction_of_full == 1.0
    rnd = loop.run_search(
        _cfg(tmp_path, "search.method=bet-random", "search.iterations=3"),
        tmp_path / "rnd",
        progress=False,
    )
    assert [h["strategy"] for h in _read_history(tmp_path / "rnd")] == ["random"] * 3
    assert all(h["predicted"] is None for h in _read_history(tmp_path / "rnd"))
    simple = loop.run_search(
        _cfg(tmp_path, "search.method=bet-simple", "search.iterations=3"),
        tmp_path / "simple",
        progress=False,
    )
    assert all(h["predicted"] is not None for h in _read_history(tmp_path / "simple"))
    for r in (su, sr, full, rnd, simple):
        assert r.usage.params <= r.usage.params_budget or r is full
        assert 0 < r.test.means["recall@20"] < 1


def test_train_and_full_method_give_the_same_model(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "search.method=full", "search.iterations=1")
    trained = loop.run_train(cfg, tmp_path / "train", progress=False)
    full = loop.run_search(cfg, tmp_path / "full", progress=False)
    assert trained.test == full.test and trained.valid == full.valid
    assert full.usage.params == full.usage.params_budget  # whole table


def test_a_second_process_waits_for_the_pretraining_and_loads_it(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "train.max_steps=20")
    ds = load_dataset("gowalla-mini")
    first = pretrain(cfg, ds, torch.device("cpu"))
    assert not first.cached
    path = tmp_path / "cache" / f"pretrain-mf-{pretrain_key(cfg, ds)}.pt"
    blob = path.read_bytes()
    path.unlink()
    holding = threading.Event()

    def another_process_pretraining() -> None:  # holds the lock, then writes Θ0
        with file_lock(path.with_suffix(".lock")):
            holding.set()
            time.sleep(0.5)
            path.write_bytes(blob)

    other = threading.Thread(target=another_process_pretraining)
    other.start()
    holding.wait()
    second = pretrain(cfg, ds, torch.device("cpu"))
    other.join()
    assert second.cached  # waited and loaded, did not train a second copy
    assert all(torch.equal(second.state[k], first.state[k]) for k in first.state)

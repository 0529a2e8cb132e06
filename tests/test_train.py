"""Training: determinism, early stopping, best-weight restore, exact resume (real Last.fm)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from embudget.config import TrainConfig, load_config
from embudget.data import load_dataset
from embudget.data.dataset import Dataset
from embudget.errors import ConfigError
from embudget.models import build_model
from embudget.pipeline.experiment import run_train, selection_users
from embudget.pipeline.run import pretrain_key
from embudget.seeds import torch_generator
from embudget.training.fit import fit, validate, validation_users

CFG = TrainConfig(batch_users=1000, eval_every_steps=40, patience=2, max_steps=200)


@pytest.fixture(scope="module")
def lastfm() -> Dataset:
    return load_dataset("lastfm")


def _model(ds: Dataset, name: str = "mf") -> torch.nn.Module:
    return build_model(
        name, ds.n_users, ds.n_items, ds.train, d_max=32, generator=torch_generator(0, "init")
    )


def test_fit_is_deterministic_and_restores_best(lastfm: Dataset) -> None:
    runs = []
    for _ in range(2):
        m = _model(lastfm)
        fr = fit(m, lastfm, CFG, seed=7)
        runs.append((fr, validate(m, lastfm, "valid").means))
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


def test_training_beats_untrained(lastfm: Dataset) -> None:
    m = _model(lastfm)
    before = validate(m, lastfm, "valid").means["recall@20"]
    fit(m, lastfm, CFG, seed=0)
    after = validate(m, lastfm, "valid").means["recall@20"]
    assert after > before + 0.03


def test_validate_first_never_returns_worse_than_a_warm_start(lastfm: Dataset) -> None:
    warm = _model(lastfm)
    fit(warm, lastfm, CFG, seed=0)
    start = validate(warm, lastfm, "valid").means["quality"]
    state = {k: v.clone() for k, v in warm.state_dict().items()}
    harsh = TrainConfig(batch_users=1000, eval_every_steps=20, patience=1, max_steps=60, lr=1.0)
    plain = _model(lastfm)
    plain.load_state_dict(state)
    fit(plain, lastfm, harsh, seed=1)
    assert validate(plain, lastfm, "valid").means["quality"] < start  # lr 1.0 ruins the start
    kept = _model(lastfm)
    kept.load_state_dict(state)
    fr = fit(kept, lastfm, harsh, seed=1, validate_first=True)
    assert fr.history[0]["step"] == 0 and fr.history[0]["loss"] is None
    assert fr.best_step == 0 and fr.valid is not None
    assert fr.valid.means["quality"] == pytest.approx(start, abs=1e-12)
    assert validate(kept, lastfm, "valid").means["quality"] == pytest.approx(start, abs=1e-12)


@pytest.mark.parametrize("name", ["mf", "ngcf"])  # NGCF: dropout stream in the checkpoint
def test_interrupted_fit_resumes_to_the_same_result(
    lastfm: Dataset, tmp_path: Path, name: str
) -> None:
    ref_model = _model(lastfm, name)
    ref = fit(ref_model, lastfm, CFG, seed=3)

    ckpt = tmp_path / "ckpt.pt"
    calls = {"n": 0}

    def stop_after_two(rec: dict) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    m1 = _model(lastfm, name)
    with pytest.raises(KeyboardInterrupt):
        fit(m1, lastfm, CFG, seed=3, checkpoint=ckpt, on_eval=stop_after_two)
    assert ckpt.is_file()
    m2 = _model(lastfm, name)  # a fresh process would rebuild the model the same way
    res = fit(m2, lastfm, CFG, seed=3, checkpoint=ckpt)
    assert [h["valid"] for h in res.history] == [h["valid"] for h in ref.history]
    assert res.best_step == ref.best_step and res.steps == ref.steps
    for (k, v), (k2, v2) in zip(
        ref_model.state_dict().items(), m2.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2), k


def test_a_selection_sample_is_fixed_and_leaves_earlier_cache_keys_alone(lastfm: Dataset) -> None:
    base = load_config(overrides=["data.name=lastfm"])
    half = load_config(overrides=["data.name=lastfm", "train.eval_user_fraction=0.5"])
    # the Θ0 cache key and config hash from before train.eval_user_fraction existed
    assert pretrain_key(base, lastfm) == "4ea6a9405c763c5aced4"
    assert load_config(overrides=["train.eval_user_fraction=1.0"]).hash() == "85faf8dbab3acc34"
    assert pretrain_key(half, lastfm) != pretrain_key(base, lastfm)  # another Θ0
    assert selection_users(base, lastfm) is None
    everyone = validation_users(lastfm, 1.0, 0, "any")
    users = selection_users(half, lastfm)
    assert users is not None and users.size == round(0.5 * everyone.size)
    assert np.isin(users, everyone).all() and np.all(np.diff(users) > 0)
    assert np.array_equal(users, selection_users(half, lastfm))  # the same users every run
    with pytest.raises(ConfigError, match="eval_user_fraction"):
        load_config(overrides=["train.eval_user_fraction=0"])


def test_training_selects_on_the_sample_and_tests_on_everyone(tmp_path: Path) -> None:
    over = [
        "data.name=lastfm",
        "model.d_max=16",
        "train.batch_users=1000",
        "train.eval_every_steps=20",
        "train.max_steps=40",
        "train.eval_user_fraction=0.25",
    ]
    res = run_train(load_config(overrides=over), tmp_path / "run", progress=False)
    ds = load_dataset("lastfm")
    n_valid = validation_users(ds, 1.0, 0, "any").size
    assert res["valid"]["n_users_evaluated"] == round(0.25 * n_valid)
    assert res["test"]["n_users_evaluated"] == validate(_model(ds), ds, "test").n_users_evaluated

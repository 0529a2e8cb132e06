from pathlib import Path

import pytest

from embudget.config import RunConfig, load_config, parse_override
from embudget.errors import ConfigError


def test_defaults_are_bet_settings() -> None:
    c = RunConfig()
    assert (c.train.batch_users, c.train.lr, c.train.lr_decay) == (10000, 0.03, 0.95)
    assert (c.train.lr_decay_every, c.train.lr_min, c.train.eval_every_steps) == (200, 0.001, 2000)
    assert c.train.patience == 3 and c.model.d_max == 128 and c.eval.ks == (5, 10, 20)


def test_precedence_set_over_file_over_defaults(tmp_path: Path) -> None:
    f1 = tmp_path / "a.yaml"
    f1.write_text("train:\n  lr: 0.5\n  patience: 7\nmodel:\n  name: lightgcn\n")
    f2 = tmp_path / "b.yaml"
    f2.write_text("train:\n  lr: 0.25\n")
    c = load_config([f1, f2], ["train.lr=0.125", "eval.ks=[1, 3]"])
    assert c.train.lr == 0.125 and c.train.patience == 7 and c.model.name == "lightgcn"
    assert c.eval.ks == (1, 3)
    assert c.train.max_steps == RunConfig().train.max_steps


@pytest.mark.parametrize(
    "override",
    [
        "train.lrr=0.1",
        "nosuch=1",
        "train=3",
        "train.lr=abc",
        "train.patience=1.5",
        "model.name=svd",
        "data.protocol=other",
        "train.max_steps=0",
        "justakey",
    ],
)
def test_bad_overrides_raise_config_error(override: str) -> None:
    with pytest.raises(ConfigError):
        load_config(overrides=[override])


def test_unknown_key_suggests_nearest() -> None:
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(overrides=["train.lrr=0.1"])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError):
        load_config([bad])


def test_parse_override_nests_and_types() -> None:
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}
    assert parse_override("x=null") == {"x": None}


def test_int_accepted_for_float_and_optional() -> None:
    c = load_config(overrides=["train.lr=1", "model.reg=0.5", "model.reg=null"])
    assert c.train.lr == 1.0 and isinstance(c.train.lr, float) and c.model.reg is None


def test_hash_and_yaml_roundtrip(tmp_path: Path) -> None:
    c = load_config(overrides=["seed=3", "model.name=ngcf"])
    p = tmp_path / "c.yaml"
    p.write_text(c.to_yaml())
    c2 = load_config([p])
    assert c2 == c and c2.hash() == c.hash()
    assert load_config().hash() != c.hash()


def test_backbone_defaults_sit_between_defaults_and_user_settings(tmp_path: Path) -> None:
    assert load_config(overrides=["model.name=lightgcn"]).train.lr == 0.03
    for name in ("mf", "ncf"):  # both learn poorly at BET's 0.03 (BENCHMARKS.md)
        c = load_config(overrides=[f"model.name={name}"])
        assert c.train.lr == 0.005 and c.search.finetune_lr == 0.005
    f = tmp_path / "a.yaml"
    f.write_text("model:\n  name: mf\ntrain:\n  lr: 0.02\n")
    assert load_config([f]).train.lr == 0.02
    assert load_config([f], ["train.lr=0.01"]).train.lr == 0.01


def test_hash_ignores_where_a_run_executes() -> None:
    base = load_config(overrides=["model.name=lightgcn"])
    elsewhere = load_config(
        overrides=["model.name=lightgcn", "device=auto", "threads=2", "cache_dir=/tmp/x"]
    )
    assert elsewhere.hash() == base.hash()
    assert load_config(overrides=["model.name=lightgcn", "train.lr=0.01"]).hash() != base.hash()

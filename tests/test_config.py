import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from embudget.cli import main
from embudget.config import (
    HASH_FORMAT,
    LEGACY_KEYS,
    BackboneName,
    DataFormat,
    Dtype,
    Layout,
    Method,
    RunConfig,
    SplitProtocol,
    choices,
    fast_preset,
    flatten,
    load_config,
    parse_override,
    preset_layers,
    preset_path,
)
from embudget.config.legacy import upgrade
from embudget.config.presets import PRESET_DIR
from embudget.config.render import DEFAULTS_HEADER, key_types, parse_comments, to_commented_yaml
from embudget.errors import ConfigError


def test_defaults_are_bet_settings() -> None:
    c = RunConfig()
    assert (c.train.batch_users, c.train.lr, c.train.lr_decay) == (10000, 0.03, 0.95)
    assert (c.train.lr_decay_every, c.train.lr_min, c.train.eval_every_steps) == (200, 0.001, 2000)
    assert c.train.patience == 3 and c.model.d_max == 128 and c.eval.ks == (5, 10, 20)
    s = c.search
    assert (s.iterations, s.sampler.candidates, s.retrain.top, s.predictor.updates) == (
        50,
        100,
        5,
        2,
    )
    assert (s.probe.lr, s.probe.lr_decay, s.probe.lr_decay_every, s.probe.lr_min) == (
        0.03,
        0.98,
        200,
        0.001,
    )
    assert s.probe.epochs is None and s.probe.user_fraction == 1.0
    assert (s.pretrain.mode, s.retrain.init, s.predictor.update_mode) == (
        "standard",
        "scratch",
        "single",
    )


def test_precedence_set_over_file_over_defaults(tmp_path: Path) -> None:
    f1 = tmp_path / "a.yaml"
    f1.write_text("train:\n  lr: 0.5\n  patience: 7\nmodel:\n  name: lightgcn\n")
    f2 = tmp_path / "b.yaml"
    f2.write_text("train:\n  lr: 0.25\nsearch:\n  probe:\n    steps: 4\n")
    c = load_config([f1, f2], ["train.lr=0.125", "eval.ks=[1, 3]"], fast=False)
    assert c.train.lr == 0.125 and c.train.patience == 7 and c.model.name == "lightgcn"
    assert c.eval.ks == (1, 3) and c.search.probe.steps == 4
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
        "model.name=1",
        "data.protocol=other",
        "data.format=xml",
        "budget.layout=rows",
        "search.method=greedy",
        "search.probe=3",
        "search.sampler.on_exhausted=retry",
        "train.max_steps=0",
        "search.sampler.size_step=0",
        "search.retrain.top=0",
        "search.retrain.max_steps=0",
        "search.probe.epochs=-1",
        "search.probe.user_fraction=0",
        "train.eval_user_fraction=1.5",
        "eval.ks=[]",
        "eval.batch_users=0",
        "justakey",
    ],
)
def test_bad_overrides_raise_config_error(override: str) -> None:
    with pytest.raises(ConfigError):
        load_config(overrides=[override], fast=False)


def test_unknown_key_suggests_nearest_and_moved_keys_say_where() -> None:
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(overrides=["train.lrr=0.1"], fast=False)
    with pytest.raises(ConfigError, match="did you mean 'search.probe.steps'"):
        load_config(overrides=["search.probe.step=1"], fast=False)
    with pytest.raises(ConfigError, match="it is now 'search.probe.steps'"):
        load_config(overrides=["search.finetune_steps=1"], fast=False)
    with pytest.raises(ConfigError, match="now search.pretrain.mode"):
        load_config(overrides=["search.pretrain=nested"], fast=False)
    with pytest.raises(ConfigError, match="is not one of full, su, sr, bet, "):
        load_config(overrides=["search.method=greedy"], fast=False)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config([tmp_path / "missing.yaml"], fast=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError):
        load_config([bad], fast=False)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("seed: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError):
        load_config([unsafe], fast=False)


def test_parse_override_nests_and_types() -> None:
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}
    assert parse_override("x=null") == {"x": None}


def test_int_accepted_for_float_and_optional() -> None:
    c = load_config(overrides=["train.lr=1", "model.reg=0.5", "model.reg=null"], fast=False)
    assert c.train.lr == 1.0 and isinstance(c.train.lr, float) and c.model.reg is None


def test_hash_and_yaml_roundtrip(tmp_path: Path) -> None:
    c = load_config(overrides=["seed=3", "model.name=ngcf", "search.retrain.top=2"], fast=False)
    p = tmp_path / "c.yaml"
    p.write_text(c.to_yaml())
    c2 = load_config([p], fast=False)
    assert c2 == c and c2.hash() == c.hash()
    assert load_config(fast=False).hash() != c.hash()


def test_backbone_defaults_sit_between_defaults_and_user_settings(tmp_path: Path) -> None:
    assert load_config(overrides=["model.name=lightgcn"], fast=False).train.lr == 0.03
    for name in ("mf", "ncf"):  # both learn poorly at BET's 0.03 (BENCHMARKS.md)
        c = load_config(overrides=[f"model.name={name}"], fast=False)
        assert c.train.lr == 0.005 and c.search.probe.lr == 0.005
    f = tmp_path / "a.yaml"
    f.write_text("model:\n  name: mf\ntrain:\n  lr: 0.02\n")
    assert load_config([f], fast=False).train.lr == 0.02
    assert load_config([f], ["train.lr=0.01"], fast=False).train.lr == 0.01


def test_presets_layer_in_order() -> None:
    assert preset_layers("mf", fast=False) == ["mf"]
    assert preset_layers("lightgcn", fast=False) == []
    assert preset_layers("lightgcn", fast=True) == ["fast", "fast-lightgcn"]
    assert preset_layers("ncf", fast=True) == ["ncf", "fast"]
    lightgcn = flatten(fast_preset("lightgcn"))
    assert lightgcn["search.pretrain.mode"] == "standard" and lightgcn["search.probe.steps"] == 20
    assert lightgcn["search.predictor.update_mode"] == "batch"  # from fast.yaml
    with pytest.raises(ConfigError, match="shipped presets"):
        preset_path("nosuch")


# --------------------------------------------------------------------------------------------
# the hash
# --------------------------------------------------------------------------------------------
def test_hash_ignores_where_a_run_executes() -> None:
    base = load_config(overrides=["model.name=lightgcn"], fast=False)
    elsewhere = load_config(
        overrides=["model.name=lightgcn", "device=auto", "threads=2", "cache_dir=/tmp/x"],
        fast=False,
    )
    assert elsewhere.hash() == base.hash()
    assert (
        load_config(overrides=["model.name=lightgcn", "train.lr=0.01"], fast=False).hash()
        != base.hash()
    )


def test_hash_is_the_format_and_the_changes_from_the_defaults() -> None:
    c = load_config(
        overrides=["model.name=lightgcn", "search.retrain.top=2", "threads=3"], fast=False
    )
    assert c.changes() == {"model.name": "lightgcn", "search.retrain.top": 2}
    assert c.changes(("model",)) == {"model.name": "lightgcn"}
    blob = json.dumps({"format": HASH_FORMAT, "changes": c.changes()}, sort_keys=True)
    assert c.hash() == hashlib.sha256(blob.encode()).hexdigest()[:16]
    # a setting at its default is not a change: new keys with a default keep existing hashes
    same = load_config(
        overrides=["model.name=lightgcn", "search.retrain.top=2", "seed=0"], fast=False
    )
    assert same.hash() == c.hash()
    assert RunConfig().changes() == {}
    assert load_config(overrides=["model.name=lightgcn"], fast=False).hash() == "b72deba9bc2eb631"


def test_the_defaults_are_pinned_to_the_hash_format() -> None:
    # A hash names the changes from the defaults, so changing a default changes what every
    # hash means: bump HASH_FORMAT, then update this pair. Adding a setting (with a default)
    # changes the digest but no hash: update the digest only.
    defaults = json.dumps(RunConfig().procedure(), sort_keys=True).encode()
    assert (HASH_FORMAT, hashlib.sha256(defaults).hexdigest()[:16]) == (2, "40c946a082312ec9")


# --------------------------------------------------------------------------------------------
# the presets as documentation
# --------------------------------------------------------------------------------------------
def test_defaults_yaml_is_the_documented_dataclass_defaults() -> None:
    text = (PRESET_DIR / "defaults.yaml").read_text()
    assert yaml.safe_load(text) == RunConfig().to_dict()
    # the file is exactly what the renderer writes: regenerate it with
    # to_commented_yaml(RunConfig(), DEFAULTS_HEADER) after adding a key and its description
    assert text == to_commented_yaml(RunConfig(), DEFAULTS_HEADER)
    docs = parse_comments(text)
    for key, tp in key_types().items():
        assert docs[key][0] == tp and docs[key][1], f"{key}: no '# ({tp}) description'"


@pytest.mark.parametrize("path", sorted(PRESET_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_loads_strictly_and_documents_each_key(path: Path) -> None:
    load_config([path], fast=False)  # known keys, right types, consistent values
    text = path.read_text()
    types = key_types()
    keys = flatten(yaml.safe_load(text))
    docs = parse_comments(text)
    for key in keys:
        tp, doc = docs[key]
        assert tp == types[key] and doc, f"{path.name}: {key} needs '# ({types[key]}) ...'"
    assert not re.search(r"issue \d|RESULTS \d|session", text, re.IGNORECASE)


def test_choices_are_the_literal_types_everywhere() -> None:
    from embudget.bench.cells import METHODS
    from embudget.budget.storage import DTYPE_BYTES, LAYOUTS
    from embudget.data.load import FORMATS, PROTOCOLS
    from embudget.models.registry import GRAPH_MODELS, MODELS

    assert choices(Method) == get_args(Method) and "bet-random" in choices(Method)
    assert set(MODELS) == set(choices(BackboneName)) and GRAPH_MODELS <= set(MODELS)
    assert FORMATS == choices(DataFormat) and set(PROTOCOLS.values()) == set(choices(SplitProtocol))
    assert set(DTYPE_BYTES) == set(choices(Dtype)) and set(LAYOUTS) == set(choices(Layout))
    assert set(METHODS) == set(choices(Method))
    with pytest.raises(TypeError):
        choices(int)


def test_method_names_are_defined_once() -> None:
    """``Method`` names every method; the grid, the report, the registry of proposers and the
    command line derive theirs from it."""
    from embudget.bench.aggregate import LABELS, ORDER
    from embudget.bench.cells import BASELINES, CHEAP, METHODS, SEARCHES
    from embudget.cli import build_parser
    from embudget.search.proposers import PROPOSERS

    assert METHODS == ORDER == choices(Method) == ("full", *BASELINES, *SEARCHES)
    assert CHEAP == ("full", *BASELINES)
    assert all(m in LABELS for m in choices(Method)), "every method needs a report label"
    assert set(PROPOSERS) == set(choices(Method))
    assert all(PROPOSERS[m].method == m for m in PROPOSERS)
    parser = build_parser()
    for m in choices(Method):
        assert parser.parse_args(["search", "--out", "r", "--method", m]).method == m
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "--out", "r", "--method", "greedy"])


# --------------------------------------------------------------------------------------------
# format 1 (flat search section)
# --------------------------------------------------------------------------------------------
def test_format_1_keys_map_onto_format_2() -> None:
    types = key_types()
    assert all(new in types for new in LEGACY_KEYS.values())
    old = {
        "seed": 1,
        "search": {"method": "su", "finetune_steps": 3, "pretrain": "nested", "retrain_top": 2},
    }
    new = load_config(updates=upgrade(old), fast=False)
    assert new.search.probe.steps == 3 and new.search.pretrain.mode == "nested"
    assert new.search.retrain.top == 2 and new.search.method == "su" and new.seed == 1


def test_format_1_attribute_names_are_gone() -> None:
    cfg = load_config(fast=True)
    assert cfg.search.probe.steps == 0 and cfg.search.pretrain.mode == "nested"
    with pytest.raises(AttributeError):
        _ = cfg.search.finetune_steps  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# embudget config show
# --------------------------------------------------------------------------------------------
def test_config_show_prints_the_resolved_config_with_descriptions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("train:\n  patience: 4\n")
    argv = ["config", "show", "--model", "lightgcn", "--config", str(f)]
    assert main([*argv, "--set", "search.retrain.top=2"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(
        [f], ["search.retrain.top=2"], updates={"model": {"name": "lightgcn"}}, fast=None
    )
    assert yaml.safe_load(out) == cfg.to_dict()
    assert "fast mode" in out.splitlines()[0]
    lines = {ln.split(":")[0].strip(): ln for ln in out.splitlines() if not ln.startswith("#")}
    assert "# (int) the top-k probed actions retrained [bet.md default: 5]" in lines["top"]
    patience = next(ln for ln in out.splitlines() if ln.startswith("  patience: 4 "))
    assert "# (int) validations without" in patience and "[bet.md default: 3]" in patience
    assert "[bet.md default" not in lines["lr_min"]

    assert main(["config", "show", "--faithful"]) == 0  # MF: the faithful procedure, lr 0.005
    faithful = yaml.safe_load(capsys.readouterr().out)
    assert faithful["train"]["lr"] == 0.005 and faithful["search"]["pretrain"]["mode"] == "standard"
    assert main(["config", "show", "--set", "search.finetune_epochs=2"]) == 2
    assert "search.probe.epochs" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# scripts/migrate_results.py
# --------------------------------------------------------------------------------------------
def _migration_script() -> Any:
    path = Path(__file__).resolve().parents[1] / "scripts" / "migrate_results.py"
    spec = importlib.util.spec_from_file_location("migrate_results", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["migrate_results"] = module
    spec.loader.exec_module(module)
    return module


def test_the_frozen_format_1_hash_reproduces_a_recorded_cell() -> None:
    m = _migration_script()
    # results/gowalla-mf-paper: MF BET at 80 %, the paper's search, validation every 250 steps
    cell = m.Cell("gowalla", "mf", "bet", 0.8, 0)
    cfg = m.cell_config(cell, m.Settings(overrides=("train.eval_every_steps=250",)))
    assert m.legacy_hash(cfg, m.LEGACY_OMIT_AT_DEFAULT) == "888e084e4758b8d4"
    assert cfg.hash() == "24a0a12a82662bbc"  # its format-2 hash in results.jsonl


def test_a_format_1_run_folder_is_rewritten_from_its_config(tmp_path: Path) -> None:
    m = _migration_script()
    cfg = load_config(overrides=["search.method=su", "search.retrain.top=2"], fast=True)
    old = m.legacy_hash(cfg, m.LEGACY_OMIT_AT_DEFAULT)
    run = tmp_path / "runs" / f"gowalla-mf-su-s0.8-seed0-{old[:8]}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(m.legacy_document(cfg), sort_keys=False))
    (run / "results.json").write_text(json.dumps({"config_hash": old}))
    report = m.Report()
    m.migrate_run_dir(run, False, report)
    new = run.with_name(f"gowalla-mf-su-s0.8-seed0-{cfg.hash()[:8]}")
    assert report.migrated == 1 and not report.unverified and new.is_dir()
    assert load_config([new / "config.yaml"], fast=False) == cfg
    assert json.loads((new / "results.json").read_text())["config_hash"] == cfg.hash()

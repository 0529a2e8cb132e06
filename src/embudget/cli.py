"""Command-line interface: a thin shell over the library. The only module that reads argv
or prints.

Exit codes: 0 success, 2 usage/config/data errors, 3 infeasible budget, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from embudget import __version__
from embudget.config.choices import BackboneName, Method, SplitProtocol, choices
from embudget.errors import BudgetError, BudgetErrorType, EmbudgetError

if TYPE_CHECKING:
    from embudget.result import Metrics

log = logging.getLogger("embudget")


_BACKBONES = choices(BackboneName)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("--dataset", help="dataset name (gowalla, yelp2018, lastfm, ml-100k) or path")
    p.add_argument("--model", choices=_BACKBONES, help="backbone")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--config", action="append", default=[], help="YAML config file (repeatable)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=0.01 (repeatable)",
    )
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--protocol", choices=choices(SplitProtocol), help="split protocol")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in _names(text)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.8,0.9: {e}") from e


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in _names(text)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2: {e}") from e


FAST_HELP = (
    "fast mode (the default for {fast}): cheap probes on a fixed user sample and a batch-fitted "
    "predictor; for MF and NCF also nested (weight-sharing) pretraining and warm-started "
    "retraining (config.fast_preset; --set wins)"
)
FAITHFUL_HELP = (
    "the paper's procedure (bet.md defaults; the default for {faithful}): standard "
    "pretraining, probes fine-tuned for h epochs, single-pair predictor updates, retraining "
    "from scratch"
)


def _add_mode_options(p: argparse.ArgumentParser) -> None:
    """--fast / --faithful; neither: the backbone's default (config.FAST_BY_DEFAULT)."""
    from embudget.config import FAST_BY_DEFAULT

    fast = ", ".join(b for b in _BACKBONES if b in FAST_BY_DEFAULT)
    faithful = ", ".join(b for b in _BACKBONES if b not in FAST_BY_DEFAULT)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--fast", dest="fast", action="store_const", const=True, help=FAST_HELP.format(fast=fast)
    )
    mode.add_argument(
        "--faithful",
        dest="fast",
        action="store_const",
        const=False,
        help=FAITHFUL_HELP.format(faithful=faithful),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embudget", description="Fit recommender embedding tables into a memory budget."
    )
    parser.add_argument("--version", action="version", version=f"embudget {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="train a full-size backbone to convergence")
    _add_run_options(p_train)

    p_search = sub.add_parser("search", help="BET search (or a baseline) at one budget")
    _add_run_options(p_search)
    p_search.add_argument("--method", choices=choices(Method))
    _add_mode_options(p_search)
    budget = p_search.add_mutually_exclusive_group()
    budget.add_argument("--sparsity", type=float, help="budget as sparsity c (kept 1 - c)")
    budget.add_argument("--params", type=int, help="budget as a parameter count")
    budget.add_argument(
        "--budget-bytes",
        type=int,
        help="budget in bytes of values + index (storage: --set budget.dtype/budget.layout)",
    )

    p_demo = sub.add_parser(
        "demo", help="full model, SU and BET at one budget on the shipped data (minutes, 2 CPUs)"
    )
    p_demo.add_argument("--out", default="runs/demo", help="directory for the three runs")
    p_demo.add_argument("--dataset", default="gowalla", help="dataset name or path")
    p_demo.add_argument("--model", default="mf", choices=_BACKBONES)
    p_demo.add_argument("--sparsity", type=float, default=0.8)
    p_demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_mode_options(p_demo)
    p_demo.add_argument("--no-progress", action="store_true")

    p_bench = sub.add_parser("bench", help="run a grid of cells into one results directory")
    p_bench.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    p_bench.add_argument("--datasets", type=_names, default=["gowalla"], help="e.g. gowalla,lastfm")
    p_bench.add_argument("--models", type=_names, default=["mf"], help="e.g. mf,ncf,lightgcn")
    p_bench.add_argument("--methods", type=_names, default=["full", "su", "sr", "bet"])
    p_bench.add_argument("--sparsities", type=_floats, default=[0.8, 0.9, 0.95])
    p_bench.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="e.g. 0,1,2")
    p_bench.add_argument("--out", required=True, help="results directory (rerun to resume)")
    p_bench.add_argument("--config", action="append", default=[], help="YAML config file")
    p_bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p_bench.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    _add_mode_options(p_bench)
    p_bench.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p_report = sub.add_parser("report", help="Markdown tables (and plots) from a results dir")
    p_report.add_argument("results_dir", help="directory written by embudget bench")
    p_report.add_argument("--out", help="Markdown file (default RESULTS_DIR/report.md)")
    p_report.add_argument("--plot", action="store_true", help="also draw PNGs (needs matplotlib)")

    p_export = sub.add_parser("export", help="write a run's compact tables to one file")
    p_export.add_argument("run_dir", help="run directory written by embudget search/train")
    p_export.add_argument("--out", required=True, help="file to write")
    p_export.add_argument(
        "--format", choices=["safetensors", "npz", "buckets"], default="safetensors"
    )
    p_export.add_argument("--dtype", choices=["fp32", "fp16", "int8"], default="fp32")
    p_export.add_argument("--overwrite", action="store_true", help="replace an existing file")

    p_rec = sub.add_parser("recommend", help="top-k items for users of an exported table")
    p_rec.add_argument("path", help="file written by embudget export")
    who = p_rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", action="append", help="raw user id (repeatable)")
    who.add_argument("--users-file", help="file with one raw user id per line")
    p_rec.add_argument("-k", type=int, default=20, help="recommendations per user")
    p_rec.add_argument("--exclude", choices=["history", "train", "none"], default="history")
    p_rec.add_argument("--json", action="store_true", help="print JSON lines")

    p_data = sub.add_parser("data", help="dataset utilities")
    data_sub = p_data.add_subparsers(dest="data_command", required=True)
    p_stats = data_sub.add_parser("stats", help="users, items, interactions, density")
    p_stats.add_argument("dataset", help="dataset name or path")
    p_stats.add_argument("--protocol", choices=choices(SplitProtocol), default="paper")
    p_stats.add_argument("--split-seed", type=int, default=42)
    p_stats.add_argument("--json", action="store_true", help="print JSON")

    p_config = sub.add_parser("config", help="configuration utilities")
    config_sub = p_config.add_subparsers(dest="config_command", required=True)
    p_show = config_sub.add_parser(
        "show", help="the resolved config as YAML, each key with its type and description"
    )
    p_show.add_argument("--model", choices=_BACKBONES, help="backbone (default: mf)")
    _add_mode_options(p_show)
    p_show.add_argument("--config", action="append", default=[], help="YAML config file")
    p_show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _resolve_config(args: argparse.Namespace) -> Any:
    from embudget.config import load_config

    updates: dict[str, Any] = {}
    if args.dataset:
        updates.setdefault("data", {})["name"] = args.dataset
    if args.protocol:
        updates.setdefault("data", {})["protocol"] = args.protocol
    if args.model:
        updates.setdefault("model", {})["name"] = args.model
    if args.device:
        updates["device"] = args.device
    if args.seed is not None:
        updates["seed"] = args.seed
    if getattr(args, "method", None):
        updates.setdefault("search", {})["method"] = args.method
    if getattr(args, "sparsity", None) is not None:
        updates["budget"] = {"sparsity": args.sparsity, "kept_fraction": None, "params": None}
    if getattr(args, "params", None) is not None:
        updates["budget"] = {"sparsity": None, "kept_fraction": None, "params": args.params}
    if "budget" in updates:
        updates["budget"]["bytes"] = None
    if getattr(args, "budget_bytes", None) is not None:
        updates["budget"] = {"sparsity": None, "kept_fraction": None, "params": None}
        updates["budget"]["bytes"] = args.budget_bytes
    return load_config(args.config, args.set, updates=updates, fast=getattr(args, "fast", False))


#: the metrics `train` prints
HEADLINE = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def _fmt_metrics(metrics: Metrics, keys: Sequence[str]) -> str:
    return "  ".join(f"{k}={metrics.means[k]:.4f}" for k in keys if k in metrics.means)


def cmd_train(args: argparse.Namespace) -> int:
    from embudget.pipeline.run import run_train

    cfg = _resolve_config(args)
    res = run_train(
        cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.no_progress
    )
    print(f"run directory: {args.out}")
    print(f"valid  {_fmt_metrics(res.valid, HEADLINE)}")
    print(f"test   {_fmt_metrics(res.test, HEADLINE)}")
    steps = f"steps {res.training.steps} (best {res.training.best_step}), " if res.training else ""
    print(f"{steps}{res.timing.train:.0f}s")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from embudget.deploy.export import export_run

    meta = export_run(
        args.run_dir, args.out, fmt=args.format, dtype=args.dtype, overwrite=args.overwrite
    )
    b = meta["memory"]["bytes"]
    print(f"wrote {args.out} ({meta['layout']}, {meta['dtype']}, {meta['model']['name']})")
    print(
        f"tables {b['embedding']:,} B (values {b['values']:,}, index {b['index']:,}, "
        f"row meta {b['row_meta']:,}) = {b['fraction_of_dense_table']:.1%} of the dense "
        f"fp32 table; dense backbone {b['dense_backbone']:,} B"
    )
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from embudget.deploy.serve import Recommender, read_user_file

    users = args.user if args.user else read_user_file(args.users_file)
    out = Recommender.load(args.path).recommend(users, k=args.k, exclude=args.exclude)
    for user, rank, item, score in out.rows():
        if args.json:
            print(json.dumps({"user": user, "rank": rank, "item": item, "score": score}))
        else:
            print(f"{user}\t{rank}\t{item}\t{score:.6g}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from embudget.pipeline.run import run_search

    cfg = _resolve_config(args)
    res = run_search(
        cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.no_progress
    )
    u = res.usage
    budget = f"{u.params_budget:,}" if res.budgeted else "unbudgeted"
    print(f"run directory: {args.out}")
    print(f"method {res.method}: params used {u.params:,} / budget {budget}")
    print(f"valid  {_fmt_metrics(res.valid, ('recall@20', 'ndcg@20'))}")
    print(f"test   {_fmt_metrics(res.test, ('recall@5', 'recall@20', 'ndcg@5', 'ndcg@20'))}")
    print(
        f"search {res.timing.search:.0f}s, retrain {res.timing.retrain:.0f}s, {res.n_probes} probes"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from embudget.bench.demo import format_table, run_demo

    rows = run_demo(
        args.out,
        dataset=args.dataset,
        model=args.model,
        sparsity=args.sparsity,
        overrides=args.set,
        fast=args.fast,
        progress=not args.no_progress,
    )
    print(format_table(rows))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from embudget.bench.grid import RESULTS_FILE, Settings, run_grid

    updates = {"device": args.device} if args.device else None
    settings = Settings(tuple(args.config), tuple(args.set), updates, fast=args.fast)
    try:
        summary = run_grid(
            settings,
            args.out,
            datasets=args.datasets,
            models=args.models,
            methods=args.methods,
            sparsities=args.sparsities,
            seeds=args.seeds,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            "interrupted; rerun the same embudget bench command to resume "
            "(finished cells are kept)",
            file=sys.stderr,
        )
        return 130
    print(f"results: {args.out}/{RESULTS_FILE}")
    print(
        f"{len(summary.ran)} cells run, {len(summary.skipped)} already done, "
        f"{len(summary.busy)} left to another process, "
        f"{summary.seconds:.0f}s; next: embudget report {args.out}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from embudget.bench.report import write_report

    rep = write_report(args.results_dir, args.out, plot=args.plot)
    for note in rep.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {rep.path} ({len(rep.tables)} tables, {len(rep.figures)} figure files)")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from embudget.data import load_dataset

    ds = load_dataset(args.dataset, protocol=args.protocol, split_seed=args.split_seed)
    st = ds.stats()
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print(f"dataset       {ds.name} (protocol {ds.protocol}, split seed {ds.split_seed})")
        print(f"users         {st['users']:,}")
        print(f"items         {st['items']:,}")
        print(f"interactions  {st['interactions']:,}")
        print(f"density       {st['density']:.6f}")
        print(f"train/valid/test  {st['train']:,} / {st['valid']:,} / {st['test']:,}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from embudget.config import is_fast, load_config, preset_layers, to_commented_yaml

    updates = {"model": {"name": args.model}} if args.model else None
    cfg = load_config(args.config, args.set, updates=updates, fast=args.fast)
    fast = is_fast(args.fast, cfg.model.name)
    layers = ", ".join(["defaults", *preset_layers(cfg.model.name, fast)])
    header = (
        f"embudget config for {cfg.model.name}, {'fast' if fast else 'faithful'} mode "
        f"(presets: {layers}; then --config, then --set)\n"
        "[bet.md default: X] marks a setting that differs from bet.md's defaults"
    )
    print(to_commented_yaml(cfg, header, mark_changes=True), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO if args.verbose else logging.WARNING)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "search":
            return cmd_search(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "recommend":
            return cmd_recommend(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "data" and args.data_command == "stats":
            return cmd_data_stats(args)
        if args.command == "config" and args.config_command == "show":
            return cmd_config_show(args)
        parser.error(f"unknown command {args.command}")
    except BudgetError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.error_type is BudgetErrorType.VIOLATED:  # an internal bug, not bad input
            return 1
        return 3 if e.error_type is BudgetErrorType.INFEASIBLE else 2
    except EmbudgetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume and the same --out", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
    return 1


if __name__ == "__main__":
    sys.exit(main())

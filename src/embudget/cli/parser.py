"""The ``embudget`` argument parser: every command's options and their help.

Choices come from :mod:`embudget.config.choices`; nothing here imports torch, so
``embudget --help`` works where torch is not installed.
"""

from __future__ import annotations

import argparse

from embudget import __version__
from embudget.config.choices import BackboneName, Method, SplitProtocol, accepted, choices

#: The built-in backbones; ``--model`` also accepts backbones registered by plugins
#: (:func:`embudget.cli.plugins.load_plugins` runs before the parser is built).
_BACKBONES = choices(BackboneName)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("--dataset", help="dataset name (gowalla, yelp2018, lastfm, ml-100k) or path")
    p.add_argument("--model", choices=accepted(BackboneName), help="backbone")
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
    p.add_argument(
        "--protocol",
        choices=choices(SplitProtocol),
        help="split protocol (temporal and leave-last-out need --time-col)",
    )
    _add_data_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


#: --sep spellings of the tab character
_TAB_NAMES = ("tab", "\\t", "TAB")
#: the data flags, each setting the data.* key of its name (--user-col: data.user_col)
DATA_FLAGS = ("user_col", "item_col", "time_col", "sep")


def _sep(text: str) -> str:
    return "\t" if text in _TAB_NAMES else text


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """--user-col, --item-col, --time-col, --sep: the data.* keys of the same names."""
    p.add_argument("--user-col", help="header column of the user ids (data.user_col)")
    p.add_argument("--item-col", help="header column of the item ids (data.item_col)")
    p.add_argument(
        "--time-col",
        help="header column of the timestamps, numbers or ISO dates (data.time_col); "
        "needed by --protocol temporal and leave-last-out",
    )
    p.add_argument(
        "--sep",
        type=_sep,
        help="csv field delimiter, e.g. ',' ';' or tab (data.sep; default: sniffed)",
    )


def data_updates(args: argparse.Namespace) -> dict[str, str]:
    """The data.* settings of the data flags given on a command line."""
    return {key: getattr(args, key) for key in DATA_FLAGS if getattr(args, key, None) is not None}


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
    "retraining (config/presets/fast*.yaml; --set wins)"
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


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a whole number like 2: {e}") from e
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {n}")
    return n


def _add_ray_options(p: argparse.ArgumentParser, what: str) -> None:
    """--workers / --ray-address (search.parallel; needs the ray extra)."""
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help=f"run {what} on N Ray workers (a local Ray with N CPUs; with --ray-address, "
        "N of the cluster's); needs pip install 'embudget[ray]'",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help=f"run {what} on the Ray cluster at ADDR (e.g. auto, host:6379, ray://host:10001)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``embudget`` argument parser: one subcommand per entry of
    :data:`embudget.cli.commands.COMMANDS` (``data stats`` and ``config show`` nested)."""
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
    _add_ray_options(p_search, "the probes (search.probes_per_iteration at once)")

    p_demo = sub.add_parser(
        "demo", help="full model, SU and BET at one budget on the shipped data (minutes, 2 CPUs)"
    )
    p_demo.add_argument("--out", default="runs/demo", help="directory for the three runs")
    p_demo.add_argument("--dataset", default="gowalla", help="dataset name or path")
    p_demo.add_argument("--model", default="mf", choices=accepted(BackboneName))
    p_demo.add_argument("--sparsity", type=float, default=0.95)
    p_demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_data_options(p_demo)
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
    _add_data_options(p_bench)
    _add_mode_options(p_bench)
    p_bench.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_ray_options(p_bench, "the cells as Ray tasks")

    p_report = sub.add_parser("report", help="Markdown tables (and plots) from a results dir")
    p_report.add_argument(
        "results_dir",
        nargs="+",
        help="directory written by embudget bench (--paper: any number of results dirs, "
        "results.jsonl files, folders holding them, or glob patterns)",
    )
    p_report.add_argument(
        "--out", help="Markdown file (default RESULTS_DIR/report.md; --paper: standard output)"
    )
    p_report.add_argument("--plot", action="store_true", help="also draw PNGs (needs matplotlib)")
    p_report.add_argument(
        "--paper",
        action="store_true",
        help="one table of the BET paper's Table 1 cells that were run: ours beside the "
        "paper's figures, ratios, p vs SU and the reductions that apply",
    )

    p_export = sub.add_parser("export", help="write a run's compact tables to one file")
    p_export.add_argument("run_dir", help="run directory written by embudget search/train")
    p_export.add_argument(
        "--out", required=True, help="file to write (a directory with --format torchrec)"
    )
    p_export.add_argument(
        "--format", choices=["safetensors", "npz", "buckets", "torchrec"], default="safetensors"
    )
    p_export.add_argument("--dtype", choices=["fp32", "fp16", "int8"], default="fp32")
    p_export.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p_export.add_argument(
        "--with-history",
        action="store_true",
        help="also store the training graph and every known interaction (needed by lightgcn "
        "and ngcf, and by recommend to exclude seen items); without it the file holds no "
        "interaction data",
    )

    p_rec = sub.add_parser("recommend", help="top-k items for users of an exported table")
    p_rec.add_argument("path", help="file written by embudget export")
    who = p_rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", action="append", help="raw user id (repeatable)")
    who.add_argument("--users-file", help="file with one raw user id per line")
    p_rec.add_argument("-k", type=int, default=20, help="recommendations per user")
    p_rec.add_argument("--exclude", choices=["history", "train", "none"], default="history")
    p_rec.add_argument("--json", action="store_true", help="print JSON lines")

    p_data = sub.add_parser("data", help="dataset utilities")
    data_sub = p_data.add_subparsers(dest="subcommand", required=True)
    p_stats = data_sub.add_parser("stats", help="users, items, interactions, density")
    p_stats.add_argument("dataset", help="dataset name or path")
    p_stats.add_argument("--protocol", choices=choices(SplitProtocol), default="paper")
    p_stats.add_argument("--split-seed", type=int, default=42)
    _add_data_options(p_stats)
    p_stats.add_argument("--min-user-interactions", type=int, default=0, help="k-core: users")
    p_stats.add_argument("--min-item-interactions", type=int, default=0, help="k-core: items")
    p_stats.add_argument("--json", action="store_true", help="print JSON")
    p_fetch = data_sub.add_parser(
        "fetch", help="download a public dataset (sha256-checked) so --dataset NAME finds it"
    )
    p_fetch.add_argument("name", nargs="?", help="ml-1m, yelp2018, amazon-book or lastfm")
    p_fetch.add_argument(
        "--cache-dir",
        help="folder to put NAME/ in (default ./cache/data, where --dataset NAME looks; "
        "elsewhere: set EMBUDGET_DATA to it)",
    )
    p_fetch.add_argument("--force", action="store_true", help="download again, replacing NAME/")
    p_fetch.add_argument("--timeout", type=float, default=60.0, help="seconds per connection")
    p_fetch.add_argument(
        "--list", action="store_true", help="the fetchable datasets, their sources and licences"
    )

    p_config = sub.add_parser("config", help="configuration utilities")
    config_sub = p_config.add_subparsers(dest="subcommand", required=True)
    p_show = config_sub.add_parser(
        "show", help="the resolved config as YAML, each key with its type and description"
    )
    p_show.add_argument("--model", choices=accepted(BackboneName), help="backbone (default: mf)")
    _add_mode_options(p_show)
    p_show.add_argument("--config", action="append", default=[], help="YAML config file")
    p_show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser

"""One function per ``embudget`` command: call the library, print what it returns.

Each command imports what it needs when it runs, so the parser and ``--help`` stay free of torch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embudget.config import RunConfig
    from embudget.result import Metrics, Training


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The :class:`~embudget.config.RunConfig` of a ``train`` or ``search`` command line."""
    from embudget.cli.parser import data_updates
    from embudget.config import load_config
    from embudget.data.load import absolute_dataset_path

    updates: dict[str, Any] = {}
    if data_updates(args):
        updates["data"] = dict(data_updates(args))
    if args.dataset is not None:  # an empty name is refused by the config check
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
    cfg = load_config(args.config, args.set, updates=updates, fast=getattr(args, "fast", False))
    # a dataset given by path is recorded absolute, so the run directory works from anywhere
    name = absolute_dataset_path(cfg.data.name)
    if name != cfg.data.name:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name=name))
    return cfg


#: the metrics `train` prints
HEADLINE = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def _fmt_metrics(metrics: Metrics, keys: Sequence[str]) -> str:
    return "  ".join(f"{k}={metrics.means[k]:.4f}" for k in keys if k in metrics.means)


def _fit_line(name: str, training: Training | None) -> str:
    """How a fit ended, e.g. ``kept model: 12,000 steps, best at 8,000, stopped early``."""
    return "" if training is None else f"{name}: {training.summary()}\n"


def cmd_train(args: argparse.Namespace) -> int:
    from embudget.pipeline.run import run_train

    cfg = resolve_config(args)
    res = run_train(
        cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.no_progress
    )
    print(f"run directory: {args.out}")
    print(f"valid  {_fmt_metrics(res.valid, HEADLINE)}")
    print(f"test   {_fmt_metrics(res.test, HEADLINE)}")
    print(f"{_fit_line('training', res.training)}{res.timing.train:.0f}s")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from embudget.deploy.export import export_run

    meta = export_run(
        args.run_dir,
        args.out,
        fmt=args.format,
        dtype=args.dtype,
        overwrite=args.overwrite,
        with_history=args.with_history,
    )
    hist = "with interaction history" if meta["history"] else "no interaction history"
    if args.format == "torchrec":
        n = sum(len(t) for side in meta["tables"].values() for t in side.values())
        print(f"wrote {args.out} (TorchRec package, {n} tables, {meta['model']['name']}, {hist})")
        print(
            f"tables {meta['memory']['bytes']:,} B fp32; {meta['padding']['zero_values']:,} "
            "zero values pad sizes to multiples of 4"
        )
        return 0
    b = meta["memory"]["bytes"]
    print(f"wrote {args.out} ({meta['layout']}, {meta['dtype']}, {meta['model']['name']}, {hist})")
    print(
        f"tables {b['embedding']:,} B (values {b['values']:,}, index {b['index']:,}, "
        f"row meta {b['row_meta']:,}) = {b['fraction_of_dense_table']:.1%} of the dense "
        f"fp32 table; dense backbone {b['dense_backbone']:,} B"
    )
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from embudget.deploy.serve import Recommender, read_user_file

    users = args.user if args.user else read_user_file(args.users_file)
    rec = Recommender.load(args.path)
    exclude = args.exclude
    if not rec.has_history and exclude != "none":
        print(
            "note: this table carries no interaction history; seen items are not excluded "
            "(export with --with-history)",
            file=sys.stderr,
        )
        exclude = "none"  # the note above replaces the library's warning
    out = rec.recommend(users, k=args.k, exclude=exclude)
    for user, rank, item, score in out.rows():
        if args.json:
            print(json.dumps({"user": user, "rank": rank, "item": item, "score": score}))
        else:
            print(f"{user}\t{rank}\t{item}\t{score:.6g}")
    return 0


def ray_context(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """Ray workers for the command when --workers or --ray-address is given, else nothing."""
    workers, address = getattr(args, "workers", None), getattr(args, "ray_address", None)
    if workers is None and address is None:
        return contextlib.nullcontext()
    from embudget.search.parallel import ray_workers

    return ray_workers(workers, address)


def cmd_search(args: argparse.Namespace) -> int:
    from embudget.pipeline.run import run_search

    cfg = resolve_config(args)
    with ray_context(args):
        res = run_search(
            cfg,
            args.out,
            overwrite=args.overwrite,
            resume=args.resume,
            progress=not args.no_progress,
        )
    u = res.usage
    budget = f"{u.params_budget:,}" if res.budgeted else "unbudgeted"
    print(f"run directory: {args.out}")
    print(f"method {res.method}: params used {u.params:,} / budget {budget}")
    print(f"valid  {_fmt_metrics(res.valid, ('recall@20', 'ndcg@20'))}")
    print(f"test   {_fmt_metrics(res.test, ('recall@5', 'recall@20', 'ndcg@5', 'ndcg@20'))}")
    print(
        f"{_fit_line('Θ0', res.theta0_training)}{_fit_line('kept model', res.training)}"
        f"search {res.timing.search:.0f}s, retrain {res.timing.retrain:.0f}s, {res.n_probes} probes"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from embudget.bench.demo import format_table, run_demo
    from embudget.cli.parser import data_updates
    from embudget.data.load import absolute_dataset_path

    # the data flags as --set overrides (JSON is YAML: any column name or delimiter survives)
    flags = [f"data.{k}={json.dumps(v)}" for k, v in data_updates(args).items()]
    rows = run_demo(
        args.out,
        dataset=absolute_dataset_path(args.dataset),
        model=args.model,
        sparsity=args.sparsity,
        overrides=[*flags, *args.set],
        fast=args.fast,
        progress=not args.no_progress,
    )
    print(format_table(rows, args.out))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from embudget.bench.grid import RESULTS_FILE, Settings, run_grid
    from embudget.cli.parser import data_updates

    updates: dict[str, Any] | None = {"device": args.device} if args.device else None
    if data_updates(args):
        updates = {**(updates or {}), "data": data_updates(args)}
    settings = Settings(tuple(args.config), tuple(args.set), updates, fast=args.fast)
    try:
        with ray_context(args):
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
    from embudget.errors import ConfigError

    if args.paper and args.plot:
        raise ConfigError("--plot draws a results directory's figures; run it without --paper")
    if args.paper:
        from embudget.bench.paper import paper_report
        from embudget.io import write_text

        paper = paper_report(args.results_dir)
        if args.out:
            write_text(args.out, paper.markdown)
            print(f"paper table: {args.out} ({len(paper.rows)} rows)")
        else:
            print(paper.markdown, end="")
        return 0
    from embudget.bench.report import write_report

    if len(args.results_dir) != 1:
        raise ConfigError("give one results directory (several are read with --paper only)")
    rep = write_report(args.results_dir[0], args.out, plot=args.plot)
    for note in rep.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {rep.path} ({len(rep.tables)} tables, {len(rep.figures)} figure files)")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from embudget.data import load_dataset

    ds = load_dataset(
        args.dataset,
        protocol=args.protocol,
        split_seed=args.split_seed,
        user_col=args.user_col,
        item_col=args.item_col,
        time_col=args.time_col,
        sep=args.sep,
        min_user_interactions=args.min_user_interactions,
        min_item_interactions=args.min_item_interactions,
    )
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


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from embudget.data.fetch import REMOTE_DATASETS, fetch_dataset
    from embudget.data.locate import FETCH_DIR, data_search_path, fetch_dir
    from embudget.errors import ConfigError

    if args.list:
        for spec in REMOTE_DATASETS.values():
            urls = " ".join(u for d in spec.downloads for u in d.urls)
            print(f"{spec.name}\n  {spec.origin}\n  licence: {spec.licence}\n  from: {urls}")
        return 0
    if not args.name:
        raise ConfigError(f"name a dataset to fetch: {', '.join(REMOTE_DATASETS)} (or --list)")
    res = fetch_dataset(
        args.name, args.cache_dir or FETCH_DIR, force=args.force, timeout=args.timeout
    )
    if res.downloaded:
        print(f"fetched {res.name} into {res.path} ({res.bytes_downloaded:,} bytes downloaded)")
    else:
        print(
            f"{res.name} is already in {res.path}; its files match SHA256SUMS (--force refetches)"
        )
    print(f"licence: {REMOTE_DATASETS[res.name].licence}")
    looked_in = [p.resolve() for p in [*data_search_path(), fetch_dir()]]
    if res.path.parent.resolve() in looked_in:
        print(f"use it by name: --dataset {res.name}")
    else:
        print(
            f"use it with --dataset {res.path}, or by name after "
            f"export EMBUDGET_DATA={res.path.parent.resolve()}"
        )
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


#: the function of each command (nested commands as ``"data stats"``)
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "search": cmd_search,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "report": cmd_report,
    "export": cmd_export,
    "recommend": cmd_recommend,
    "data stats": cmd_data_stats,
    "data fetch": cmd_data_fetch,
    "config show": cmd_config_show,
}

"""Command-line interface: a thin shell over the library, and the only package that reads argv
or prints. :mod:`~embudget.cli.parser` builds the argument parser, :mod:`~embudget.cli.commands`
runs each command; :func:`main` maps errors to exit codes.

Exit codes: 0 success, 2 usage/config/data errors and files the operating system refuses to
read or write (:func:`~embudget.errors.from_os_error`: the path, the reason and a hint),
3 infeasible budget, 1 anything else (a bug: with its traceback).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from embudget.cli.commands import COMMANDS
from embudget.cli.parser import build_parser
from embudget.cli.plugins import load_plugins
from embudget.errors import BudgetError, BudgetErrorType, EmbudgetError, from_os_error

__all__ = ["COMMANDS", "build_parser", "main"]

log = logging.getLogger("embudget")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        load_plugins()  # before the parser, so --model accepts the backbones they register
    except EmbudgetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = getattr(args, "subcommand", None)
    command = COMMANDS.get(args.command if sub is None else f"{args.command} {sub}")
    if command is None:
        parser.error(f"unknown command {args.command}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO if args.verbose else logging.WARNING)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    code = 1  # anything the handlers below do not catch is a bug
    try:
        code = command(args)
        return code
    except BudgetError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.error_type is BudgetErrorType.VIOLATED:  # an internal bug, not bad input
            return 1
        return 3 if e.error_type is BudgetErrorType.INFEASIBLE else 2
    except EmbudgetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader of stdout went away (e.g. `| head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as e:
        print(f"error: {from_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume and the same --out", file=sys.stderr)
        return 130
    finally:
        _leave_process_group(clean=code == 0)
        log.removeHandler(handler)


def _leave_process_group(*, clean: bool) -> None:
    """Under torchrun, leave the process group before the interpreter exits: gloo's threads,
    torn down during interpreter finalisation instead, can abort a rank whose command had
    succeeded (SIGABRT, a failed exit code for torchrun)."""
    if "torch.distributed" not in sys.modules:  # never joined one: no need to import torch
        return
    from embudget.training.distributed import shutdown

    shutdown(wait=clean)

"""Every code block of README.md works: the ```python blocks run (in a temporary working
directory, on the shipped data), every `embudget` command of the ```bash / ```sh blocks parses
with the real argument parser (and its config settings load), and the quick ones run.

A block preceded by ``<!-- not-tested: reason -->`` is skipped; only a few may be.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from embudget.cli import main
from embudget.cli.commands import resolve_config
from embudget.cli.parser import build_parser
from embudget.config import load_config
from embudget.data.locate import SHIPPED_DATASETS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: The marker that exempts the block right below it, with the reason.
NOT_TESTED = re.compile(r"<!--\s*not-tested:\s*(?P<reason>.*?)\s*-->")
#: Most blocks the README may exempt.
MAX_NOT_TESTED = 2
#: Shell words that end one command and start the next.
SEPARATORS = {"&&", "||", ";", "|", "&"}
#: Python blocks that train (run in full, marked slow: ~1.5 min on two busy cores).
TRAINS = ("run_search(", "run_train(", "run_demo(", "run_grid(")


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # of the opening fence, 1-based
    code: str
    not_tested: str | None  # the reason, when exempted


@dataclass(frozen=True)
class Command:
    line: int
    argv: tuple[str, ...]  # after `embudget`, with `...` expanded

    @property
    def name(self) -> str:
        nested = len(self.argv) > 1 and self.argv[0] in ("data", "config")
        return " ".join(self.argv[:2]) if nested else self.argv[0]


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of ``text``, each with its language and exemption."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    previous = ""  # the last non-blank line before the current one
    while i < len(lines):
        m = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            if lines[i].strip():
                previous = lines[i]
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        skip = NOT_TESTED.search(previous)
        blocks.append(
            Block(lang, start + 1, "\n".join(body) + "\n", skip.group("reason") if skip else None)
        )
        previous = lines[i] if i < len(lines) else ""
        i += 1
    return blocks


def _logical_lines(block: Block) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    pending, first = "", 0
    for k, line in enumerate(block.code.splitlines()):
        if not pending:
            first = block.line + 1 + k
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def shell_commands(blocks: list[Block]) -> list[tuple[int, list[str]]]:
    """Every simple command (its words) of the tested shell blocks, in README order."""
    out: list[tuple[int, list[str]]] = []
    for block in blocks:
        if block.lang not in ("bash", "sh", "shell", "console") or block.not_tested:
            continue
        for line, text in _logical_lines(block):
            words: list[str] = []
            for w in [*shlex.split(text, comments=True), ";"]:
                if w in SEPARATORS:
                    if words:
                        out.append((line, words))
                    words = []
                else:
                    words.append(w)
    return out


def embudget_commands(blocks: list[Block]) -> list[Command]:
    """The `embudget` invocations; ``embudget X ... --flag`` repeats the arguments of the last
    full ``embudget X`` command above it, as the README's shorthand means."""
    last: dict[str, tuple[str, ...]] = {}
    out: list[Command] = []
    for line, words in shell_commands(blocks):
        if not (words[0] == "embudget" or words[0].endswith("/embudget")):
            continue
        argv = tuple(words[1:])
        if "..." in argv:
            head = argv[0]
            assert head in last, (
                f"README.md:{line}: `embudget {head} ...` with no full command above"
            )
            at = argv.index("...")
            argv = argv[:at] + last[head][1:] + argv[at + 1 :]
        elif argv:
            last[argv[0]] = argv
        out.append(Command(line, argv))
    return out


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b.lang in ("python", "py")]
COMMANDS = embudget_commands(BLOCKS)


def _quick(cmd: Command) -> bool:
    """Commands that finish in seconds: dataset statistics of a shipped dataset, config show."""
    if cmd.name == "data stats":
        return len(cmd.argv) > 2 and cmd.argv[2] in SHIPPED_DATASETS
    return cmd.name == "config show"


def _python_params() -> list[Any]:
    params = []
    for b in PYTHON:
        marks = [pytest.mark.slow] if any(t in b.code for t in TRAINS) else []
        if b.not_tested:
            marks.append(pytest.mark.skip(reason=f"README: not-tested: {b.not_tested}"))
        params.append(pytest.param(b, id=f"L{b.line}", marks=marks))
    return params


def _cmd_id(cmd: Command) -> str:
    return f"L{cmd.line}-{cmd.name.replace(' ', '-')}"


# --- the extraction itself ----------------------------------------------------------------


def test_extraction_finds_the_readme_examples() -> None:
    assert len(PYTHON) >= 2
    assert len(COMMANDS) >= 10
    names = {c.name for c in COMMANDS}
    assert {"train", "search", "demo", "bench", "export", "recommend", "report"} <= names
    text = (
        "```bash\n"
        "embudget search --dataset x --out r   # a comment\n"
        "embudget search ... --resume\n"
        "bash scripts/setup.sh && .venv/bin/embudget demo --out d\n"
        "embudget bench --datasets a \\\n"
        "               --seeds 0 --out b &\n"
        "```\n"
        "<!-- not-tested: needs a GPU -->\n\n"
        "```python\nprint(1)\n```\n"
    )
    blocks = readme_blocks(text)
    assert [b.lang for b in blocks] == ["bash", "python"]
    assert blocks[1].not_tested == "needs a GPU" and blocks[0].not_tested is None
    assert [c.argv for c in embudget_commands(blocks)] == [
        ("search", "--dataset", "x", "--out", "r"),
        ("search", "--dataset", "x", "--out", "r", "--resume"),
        ("demo", "--out", "d"),
        ("bench", "--datasets", "a", "--seeds", "0", "--out", "b"),
    ]


def test_few_blocks_are_exempt() -> None:
    exempt = [b for b in BLOCKS if b.not_tested is not None]
    assert len(exempt) <= MAX_NOT_TESTED, [f"README.md:{b.line}" for b in exempt]
    assert all(b.not_tested for b in exempt), "a not-tested marker needs a reason"


def test_scripts_named_in_the_readme_exist() -> None:
    for line, words in shell_commands(BLOCKS):
        if words[0] in ("bash", "sh") and len(words) > 1:
            assert (REPO / words[1]).is_file(), f"README.md:{line}: no {words[1]}"


# --- the blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", _python_params())
def test_python_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = compile(block.code, f"README.md (block at line {block.line})", "exec")
    exec(code, {"__name__": "__readme__"})


@pytest.mark.parametrize("cmd", COMMANDS, ids=_cmd_id)
def test_command_parses(cmd: Command, capsys: Any) -> None:
    try:
        args = build_parser().parse_args(list(cmd.argv))
    except SystemExit as e:
        err = capsys.readouterr().err.strip().splitlines()[-1:]
        pytest.fail(f"README.md:{cmd.line}: embudget {' '.join(cmd.argv)}: exit {e.code}: {err}")
    # the config settings on the line load too (unknown keys, renamed keys, wrong types)
    if cmd.name in ("train", "search"):
        resolve_config(args)
    elif hasattr(args, "set"):
        load_config(getattr(args, "config", []), args.set, fast=getattr(args, "fast", None))


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _quick(c)], ids=_cmd_id)
def test_quick_command_runs(
    cmd: Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(list(cmd.argv))
    assert rc == 0, f"README.md:{cmd.line}: exit {rc}: {capsys.readouterr().err}"
    assert capsys.readouterr().out.strip()

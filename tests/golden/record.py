"""Record ``golden.json`` from the current code: ``python tests/golden/record.py``.

Run it only when a change is meant to alter results, and say so in the commit message.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import cases, extract  # noqa: E402
from runner import run_case  # noqa: E402


def main() -> None:
    golden = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (command, overrides, fast) in cases().items():
            run_case(command, overrides, fast, Path(tmp) / name, Path(tmp) / "cache")
            golden[name] = extract(Path(tmp) / name)
            print(name, golden[name]["test"]["recall@20"], flush=True)
    (HERE / "golden.json").write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

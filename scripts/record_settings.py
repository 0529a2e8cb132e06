"""Write a results folder's ``settings.json`` from its run directories, before committing it.

Run directories (weights, per-user scores) are not committed, so ``embudget report --paper``
reads each run's procedure from ``settings.json``: per run id, the settings that differ from
bet.md's defaults and the backbone's preset, each checked to rebuild the run's recorded config
hash (``embudget.bench.records.record_settings``). Runs added to a committed folder get their
entries from their run directories; the committed runs keep theirs.

    python scripts/record_settings.py results/yelp2018-lightgcn-std20 [FOLDER ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from embudget.bench.records import SETTINGS_FILE, record_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="results folders with their runs/")
    for folder in ap.parse_args().folders:
        runs = record_settings(folder)
        print(f"{folder / SETTINGS_FILE}: {len(runs)} run(s)")


if __name__ == "__main__":
    main()

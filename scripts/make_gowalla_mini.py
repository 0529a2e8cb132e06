"""Cut ``gowalla-mini``, the small real dataset shipped for tests and quick runs, from the
shipped Gowalla files (deterministic: running it again writes the same bytes).

Selection: the 1,000 most popular Gowalla items (train + test interactions, ties to the lower
id); the users with at least 10 interactions among them; a seeded sample of 800 of those users;
all their train/test interactions with those items. Ids are remapped to 0..n-1 in ascending
order of the original ids. The LightGCN train/test split of each kept interaction is kept.

    python scripts/make_gowalla_mini.py   # writes src/embudget/datasets/gowalla-mini/
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1] / "src" / "embudget" / "datasets"
N_ITEMS, MIN_INTERACTIONS, N_USERS, SEED = 1000, 10, 800, 0


def read(path: Path) -> dict[int, list[int]]:
    rows: dict[int, list[int]] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            parts = line.split()
            if parts:
                rows[int(parts[0])] = [int(x) for x in parts[1:]]
    return rows


def main() -> None:
    train = read(ROOT / "gowalla" / "train.txt.gz")
    test = read(ROOT / "gowalla" / "test.txt.gz")
    counts: dict[int, int] = {}
    for rows in (train, test):
        for items in rows.values():
            for i in items:
                counts[i] = counts.get(i, 0) + 1
    ids = np.array(sorted(counts))
    freq = np.array([counts[i] for i in ids])
    top = set(ids[np.argsort(-freq, kind="stable")[:N_ITEMS]].tolist())

    def kept(u: int, rows: dict[int, list[int]]) -> list[int]:
        return [i for i in rows.get(u, []) if i in top]

    eligible = [
        u for u in sorted(train) if len(kept(u, train)) + len(kept(u, test)) >= MIN_INTERACTIONS
    ]
    rng = np.random.default_rng(SEED)
    users = sorted(rng.choice(eligible, N_USERS, replace=False).tolist())
    items = sorted({i for u in users for i in kept(u, train) + kept(u, test)})
    umap = {u: k for k, u in enumerate(users)}
    imap = {i: k for k, i in enumerate(items)}
    out = ROOT / "gowalla-mini"
    out.mkdir(exist_ok=True)
    sums = []
    for name, rows in (("train.txt", train), ("test.txt", test)):
        text = "".join(
            f"{umap[u]} " + " ".join(str(imap[i]) for i in kept(u, rows)) + "\n"
            for u in users
            if kept(u, rows)
        )
        data = text.encode()
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
        # mtime 0 and no file name in the header: the same bytes on every run
        with open(out / f"{name}.gz", "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
                f.write(data)
    (out / "SHA256SUMS").write_text("".join(sums))
    n = sum(len(kept(u, train)) + len(kept(u, test)) for u in users)
    print(f"gowalla-mini: {len(users)} users, {len(items)} items, {n} interactions")


if __name__ == "__main__":
    main()

"""Replay a search's probed (action, fitness) pairs through fresh fitness predictors.

Trains DeepSets predictors online exactly as the search does (one pair added per iteration, two
single-sample Adam updates, lr 0.01 × 0.9 per update, floor 0.002) on the pairs of a finished
run's ``history.jsonl``, for several initialisations, with and without the decoder's final
LeakyReLU, and prints the spread of the final predictions and their Spearman correlation with
the measured fitness (RESULTS.md, "BET does not beat SU here").

    python benchmarks/predictor_replay.py RUN_DIR/history.jsonl
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from scipy.stats import spearmanr

from embudget.data import load_dataset
from embudget.search.predictor import DeepSetsPredictor, PredictorTrainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("history")
    ap.add_argument("--dataset", default="gowalla")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset)
    rows = [json.loads(line) for line in open(args.history)]
    hu = np.array([h["hist_u"] for h in rows])
    hv = np.array([h["hist_v"] for h in rows])
    r = np.array([h["fitness"] for h in rows])
    print(f"{len(r)} probed actions, measured fitness {r.min():.3f}..{r.max():.3f}")
    for linear in (False, True):
        for seed in range(args.seeds):
            gen = torch.Generator().manual_seed(seed)
            pred = DeepSetsPredictor.from_freqs(ds.user_freq, ds.item_freq, hu.shape[1], gen)
            if linear:
                pred.decoder[-1] = torch.nn.Identity()
            trainer = PredictorTrainer(pred)
            rng = np.random.default_rng(seed)
            for t in range(len(r)):
                trainer.add((hu[t], hv[t]), float(r[t]))
                trainer.update(rng, 2)
            with torch.no_grad():
                p = pred(hu, hv).numpy()
            rho = spearmanr(p, r).statistic
            head = "linear output" if linear else "LeakyReLU output"
            print(
                f"{head:17s} seed {seed}: predictions {p.min():.4f}..{p.max():.4f}, "
                f"Spearman vs measured {rho:.3f}"
            )


if __name__ == "__main__":
    main()

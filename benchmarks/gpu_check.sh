#!/usr/bin/env bash
# The checks that need a GPU, as one prepared script for a short GPU machine loan (results in
# BENCHMARKS.md, "One search iteration, split", and RESULTS.md 1c). Runs from the repository
# root with the device's own python3 (torch with CUDA), the source tree on PYTHONPATH and
# Last.fm carried in .devdata/ (Gowalla ships in the package):
#
#   bash benchmarks/gpu_check.sh [SECONDS]      # SECONDS: wall budget of the whole script
#
# 1. smoke: a faithful and a --fast search on Last.fm on cuda (fails fast if the CUDA path breaks)
# 2. one search iteration on Gowalla split into its parts, MF and LightGCN, on cuda
# 3. LightGCN fidelity on Gowalla at the paper's h = 10 (RESULTS.md 1c), in the time left
#
# Before the GPU run, here: mkdir -p .devdata && cp -r ../shared/data/lastfm ../shared/data/SHA256SUMS
# .devdata/ && echo /.devdata/ >> .git/info/exclude; then the device tool's `run` with
# carry [".devdata"]. While the machine is still warm, faithful grid cells fit well (RESULTS.md
# 3c: ~4 min per LightGCN cell), e.g.
#   PYTHONPATH=$PWD/src python3 -m embudget.cli bench --faithful --datasets gowalla --models lightgcn \
#     --methods su,bet --sparsities 0.95 --device cuda --set train.max_steps=3000 --out /tmp/grid
set -uo pipefail
BUDGET=${1:-540}
OUT=${OUT:-/tmp/embudget-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 EMBUDGET_DATA=$PWD/.devdata
PY=${PY:-python3}
DEV=${DEV:-cuda}  # DEV=cpu runs the same script here, to check it before a GPU run
say() { echo "== $(date +%T) [${SECONDS}s] $*"; }

say environment
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
$PY -c "import sys, torch, numpy, scipy, safetensors, yaml, tqdm; \
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')" || exit 1

say "1. smoke: Last.fm LightGCN searches on $DEV"
SMOKE="--dataset lastfm --model lightgcn --sparsity 0.8 --device "$DEV" --no-progress \
  --set cache_dir=/tmp/smoke-cache --set train.max_steps=60 --set train.eval_every_steps=30 \
  --set search.iterations=3 --set search.sampler.candidates=20 --set search.retrain.top=1"
$PY -m embudget.cli search $SMOKE --faithful --out /tmp/smoke-faithful --set search.probe.epochs=1 \
  || { say "smoke (faithful) FAILED"; exit 1; }
$PY -m embudget.cli search $SMOKE --fast --out /tmp/smoke-fast || { say "smoke (fast) FAILED"; exit 1; }
$PY - <<'PY' || exit 1
import json
for m in ("faithful", "fast"):
    r = json.load(open(f"/tmp/smoke-{m}/results.json"))
    b = r["budget"]
    assert b["params_used"] <= b["params_budget"], b
    print(m, "ok: params", b["params_used"], "<=", b["params_budget"],
          "test recall@20", round(r["test"]["recall@20"], 4), "device", r.get("device"))
PY

say "2. one search iteration on Gowalla, $DEV (h = 2 epochs timed, scaled to 10)"
timeout 150 $PY benchmarks/bench_search_iteration.py --models mf lightgcn --repeats 3 --epochs 2 \
  --device "$DEV" 2>&1 | tee "$OUT/iteration.txt"

left=$((BUDGET - SECONDS - 10))
say "3. LightGCN fidelity at h = 10 on Gowalla, ${left}s left"
[ "$left" -gt 60 ] || { say "too little time left for step 3"; exit 0; }
timeout "$left" $PY benchmarks/fast_fidelity.py --sample 20 --faithful-epochs 10 --model lightgcn \
  --steps 0,20,50 --set train.max_steps=3000 --set train.eval_every_steps=500 --set device="$DEV" \
  --threads 8 --cache /tmp/cache --workdir /tmp/fid --out "$OUT/fidelity-lightgcn-h10.json" \
  --retest 2>&1 | grep -v "^INFO" | tee "$OUT/fidelity.txt"
say done

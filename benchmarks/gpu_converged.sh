#!/usr/bin/env bash
# Paper-table cells trained to convergence, as one prepared script for a short GPU machine loan:
# every model (Θ0, SU, SR, every retraining) to early stopping by the default rule (validation
# every 2,000 steps, patience 3, no step cap), BET with the backbone's default search. A CPU
# core needs hours per converged Gowalla model; an H200 needs minutes (5.7 ms per LightGCN step,
# BENCHMARKS.md "GPU").
#
#   bash benchmarks/gpu_converged.sh [SECONDS] [PROCESSES]
#
# SECONDS (default 540) bounds the whole script; PROCESSES (default 6) `embudget bench`
# processes share one grid (file locks: each cell runs once, BET waits for the shared Θ0), so
# Θ0, SU and SR train side by side on the one GPU. Cells finish in the grid's order (full, then
# SU and SR at every sparsity, then BET); whatever is complete when the time is up is kept.
# Environment: DATASETS (gowalla), MODELS (lightgcn), SPARSITIES (0.8,0.9,0.95), SEEDS (0),
# DEV (cuda), PY (python3), EXTRA (more bench options). Checked here with
#   DEV=cpu DATASETS=gowalla-mini SPARSITIES=0.9 EXTRA="--set train.max_steps=200 \
#     --set train.eval_every_steps=100" bash benchmarks/gpu_converged.sh 300 2
#
# Before the GPU run, here (Yelp2018 only; Gowalla ships in the package):
#   mkdir -p .devdata && cp -r ../shared/data/yelp2018 ../shared/data/SHA256SUMS .devdata/
#   echo /.devdata/ >> .git/info/exclude
# then the device tool's `run` with carry [".devdata"] and `bash benchmarks/gpu_converged.sh 540`.
# What comes back under $OUT/<dataset>-<model>-converged: results.jsonl, report.md,
# settings.json and the recorded runs' per-user test scores, the layout of a committed
# results/ folder (run directories with weights stay on the device machine).
set -uo pipefail
BUDGET=${1:-540}
PROCS=${2:-6}
OUT=${OUT:-/tmp/embudget-gpu}
WORK=${WORK:-/tmp/embudget-converged}
DATASETS=${DATASETS:-gowalla}
MODELS=${MODELS:-lightgcn}
SPARSITIES=${SPARSITIES:-0.8,0.9,0.95}
SEEDS=${SEEDS:-0}
DEV=${DEV:-cuda}
PY=${PY:-python3}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
[ -d "$PWD/.devdata" ] && export EMBUDGET_DATA=$PWD/.devdata
say() { echo "== $(date +%T) [${SECONDS}s] $*"; }

say environment
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv
$PY -c "import sys, torch, embudget.cli; print(sys.version.split()[0], 'torch', \
torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1

names=()
for data in ${DATASETS//,/ }; do
  for model in ${MODELS//,/ }; do
    names+=("$data-$model-converged")
  done
done

# keep 40 s for collecting what finished
left=$((BUDGET - SECONDS - 40))
say "grid: $DATASETS x $MODELS x $SPARSITIES x seeds $SEEDS on $DEV, $PROCS processes, ${left}s"
for data in ${DATASETS//,/ }; do
  for model in ${MODELS//,/ }; do
    for i in $(seq "$PROCS"); do
      # one thread each: the host's cores are shared by the processes
      timeout "$left" $PY -m embudget.cli -v bench --datasets "$data" --models "$model" \
        --methods full,su,sr,bet --sparsities "$SPARSITIES" --seeds "$SEEDS" --device "$DEV" \
        --out "$WORK/$data-$model-converged" --set cache_dir="$WORK/cache" --set threads=1 \
        --no-progress $EXTRA > "$OUT/grid-$data-$model-$i.log" 2>&1 &
      sleep 3  # the first process takes the first cell (Θ0) before the next one looks
    done
  done
done
wait
say "collecting"
for name in "${names[@]}"; do
  src=$WORK/$name
  [ -s "$src/results.jsonl" ] || { say "$name: no cell finished"; continue; }
  $PY scripts/record_settings.py "$src" > /dev/null
  $PY -m embudget.cli report "$src" > /dev/null
  mkdir -p "$OUT/$name"
  cp "$src/results.jsonl" "$src/report.md" "$src/settings.json" "$OUT/$name/"
  for f in "$src"/runs/*/per_user_test.npz; do
    [ -f "$f" ] || continue
    run=$(basename "$(dirname "$f")")
    grep -q "$run" "$src/results.jsonl" || continue  # only the recorded runs
    mkdir -p "$OUT/$name/runs/$run"
    cp "$f" "$OUT/$name/runs/$run/"
  done
  runs=$(grep -o '"run_id": "[^"]*"' "$src/results.jsonl" | sort -u | wc -l)  # a line per metric
  say "$name: $runs cells"
  grep '^| ' "$src/report.md" | head -20
done
say done

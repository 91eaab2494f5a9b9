#!/usr/bin/env bash
# CIFAR-10 ResNet-20: training by tensor decomposition against the FP32 baseline, at one total epoch budget,
# plus DeepShift-Q/PS fine-tuned from the baseline. Every arm runs with --resume, one after the other, so this
# script can be killed and started again at any time: finished arms are no-ops, unfinished ones continue.
#
#   ROOT=/work/runs CODE=/work/runs/decompose-code experiments/decompose_cifar10.sh     (defaults shown)
#
# Arms (run folders under $ROOT/models/cifar10/resnet20/):
#   fp32_e30                      baseline, $EPOCHS epochs, milestones $MILESTONES: trained by $ROOT/fp32_baseline.sh
#                                 (same flags, --desc e30); this script waits for it to finish
#   fp32_e30_tucker_e$E           Tucker-2 (VBMF ranks) after $E epochs
#   fp32_e30_cp_e$E               CP (VBMF rank) after $E epochs
#   fp32_e30_tucker_e${E}_r$R     Tucker after $E epochs, recomposed after $R
#   shift_q_all_wb_5_e30_tucker_e$E   FP32 for $E epochs, then Tucker, then DeepShift-Q on the factors
#   shift_q_all_wb_5_ft_fp32      DeepShift-Q fine-tuned from the finished baseline ($FT_EPOCHS epochs)
#   shift_ps_all_wb_5_ft_fp32     DeepShift-PS fine-tuned from the finished baseline (RAdam)
# The first $E epochs of every decomposition arm are the baseline's: its epoch-$E checkpoint (and log rows) are
# copied into the arm's folder by a watcher while the baseline trains. If that moment was missed, the arm
# trains those epochs itself from the same seed (the same computation, only slower).
# Collect the table: python experiments/decompose_results.py --root $ROOT/models [--write RESULTS.md]
set -uo pipefail

ROOT=${ROOT:-/work/runs}
CODE=${CODE:-$ROOT/decompose-code}
DATA=${DATA:-/work/data/cifar10}
EPOCHS=${EPOCHS:-30}
MILESTONES=${MILESTONES:-"15 23 27"}
E=${E:-10}
R=${R:-25}
FT_EPOCHS=${FT_EPOCHS:-10}
FT_MILESTONES=${FT_MILESTONES:-"5 8"}
THREADS=${THREADS:-1}
MODELS=$ROOT/models
RUNS=$MODELS/cifar10/resnet20
BASE=$RUNS/fp32_e30
SEEDS=$ROOT/seeds
mkdir -p "$SEEDS"
cd "$CODE" || { echo "no code copy at $CODE" >&2; exit 2; }
export PYTHONPATH=$PWD

common=(experiments/cifar10.py --data "$DATA" --cache disk -a resnet20 --threads "$THREADS" --no-progress
        --out-dir "$MODELS" --resume)
say() { echo "[$(date -u +%FT%TZ)] $*"; }
epochs_logged() { [ -f "$1/train_log.csv" ] && echo $(( $(wc -l < "$1/train_log.csv") - 1 )) || echo 0; }
ckpt_epoch() { python -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['epoch'])" "$1" 2>/dev/null || echo -1; }
baseline_running() { pgrep -f -- "--desc e30 --resume" > /dev/null; }

# Keep a copy of the baseline's checkpoint (and logs) from the end of epoch $E, once.
watch_baseline() {
  local seed=$SEEDS/fp32_e30_epoch$E
  while [ ! -f "$seed/checkpoint.pth.tar" ]; do
    if [ "$(epochs_logged "$BASE")" -ge "$E" ] && [ -f "$BASE/checkpoint.pth.tar" ]; then
      mkdir -p "$seed.tmp"
      cp "$BASE/checkpoint.pth.tar" "$BASE/train_log.csv" "$BASE/test_log.csv" "$seed.tmp/"
      if [ "$(ckpt_epoch "$seed.tmp/checkpoint.pth.tar")" = "$E" ]; then
        mv "$seed.tmp" "$seed"; say "seeded from the baseline's epoch $E"; return 0
      fi
      rm -rf "$seed.tmp"
      [ "$(epochs_logged "$BASE")" -gt "$E" ] && { say "missed the baseline's epoch $E; arms train it themselves"; return 1; }
    fi
    sleep 20
  done
}

# Start an arm from the baseline's epoch-$E state when it has no checkpoint of its own yet.
seed_arm() {
  local dir=$1 seed=$SEEDS/fp32_e30_epoch$E
  if [ ! -f "$dir/checkpoint.pth.tar" ] && [ -f "$seed/checkpoint.pth.tar" ]; then
    mkdir -p "$dir" && cp "$seed/checkpoint.pth.tar" "$seed/train_log.csv" "$seed/test_log.csv" "$dir/"
    say "$(basename "$dir"): starts from the baseline's epoch $E"
  fi
}

arm() {  # arm RUN_DIR ARGS...: run or continue one arm (a finished one only re-evaluates)
  local dir=$1; shift
  say "=== $(basename "$dir")"
  nice -n 10 python "${common[@]}" "$@" || say "$(basename "$dir") failed (exit $?); continuing with the next arm"
}

say "decompose_cifar10: code $CODE, runs $RUNS, E=$E R=$R EPOCHS=$EPOCHS"
watch_baseline &
WATCHER=$!

# 1. the baseline is trained by its own script ($ROOT/fp32_baseline.sh, resumable); never train it here as well,
#    two processes in one run folder would corrupt it. Wait until it has finished.
sched=(--epochs "$EPOCHS" --lr-milestones $MILESTONES)
waited=0
until [ "$(epochs_logged "$BASE")" -ge "$EPOCHS" ] && [ -f "$BASE/weights.pth" ]; do
  if ! baseline_running && [ $((waited % 60)) -eq 0 ]; then
    say "baseline not running and unfinished ($(epochs_logged "$BASE")/$EPOCHS epochs): restart $ROOT/fp32_baseline.sh"
  fi
  sleep 60; waited=$((waited + 1))
done
wait "$WATCHER" 2>/dev/null

# name rank method [extra flags]: one decomposition arm, seeded from the baseline's epoch-$E checkpoint
decomposition_arm() {
  local desc=$1 rank=$2 method=$3; shift 3
  local dir=$RUNS/$desc
  seed_arm "$dir"
  arm "$dir" "${sched[@]}" --decompose "$method" --decompose-epoch "$E" --rank "$rank" "$@"
}
decomposition_arm "fp32_e30_tucker_e$E" vbmf tucker -s 0 --desc "e30_tucker_e$E"
decomposition_arm "fp32_e30_tucker50_e$E" 0.5 tucker -s 0 --desc "e30_tucker50_e$E"
decomposition_arm "fp32_e30_cp50_e$E" 0.5 cp -s 0 --desc "e30_cp50_e$E"
decomposition_arm "fp32_e30_tucker_e${E}_r$R" vbmf tucker -s 0 --recompose-epoch "$R" --desc "e30_tucker_e${E}_r$R"
decomposition_arm "shift_q_all_wb_5_e30_tucker50_e$E" 0.5 tucker -st Q --desc "e30_tucker50_e$E"

# DeepShift-Q and -PS fine-tuned from the converged baseline
ft=(--weights "$BASE/weights.pth" --epochs "$FT_EPOCHS" --lr-milestones $FT_MILESTONES)
arm "$RUNS/shift_q_all_wb_5_ft_fp32" "${ft[@]}" -st Q --opt sgd --lr 0.01 --desc ft_fp32
arm "$RUNS/shift_ps_all_wb_5_ft_fp32" "${ft[@]}" -st PS --opt radam --lr 0.001 --desc ft_fp32
say "decompose_cifar10: all arms done"

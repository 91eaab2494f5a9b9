#!/usr/bin/env bash
# CIFAR-10 ResNet-20: training by tensor decomposition against the FP32 baseline, all arms at one total epoch
# budget, plus DeepShift-Q/PS fine-tuned from the baseline. Every run uses --resume, so the script can be
# killed and started again at any time: finished runs only re-evaluate, unfinished ones continue.
#
#   experiments/decompose_cifar10.sh A &    # queue A: baseline, the recompose arm, DeepShift-Q on Tucker
#   experiments/decompose_cifar10.sh B &    # queue B: waits for the baseline's epoch E, then Tucker, CP, Q/PS fine-tunes
#
# Two queues of one-thread processes use a 2-core machine better than one two-thread process. Settings
# (environment, defaults shown): ROOT=/work/runs (checkpoints, outside the repository) DATA=/work/data/cifar10
# EPOCHS=6 MILESTONES="4 5" E=2 R=4 RANK=0.5 FT_EPOCHS=1 THREADS=1.
# Run folders under $ROOT/models/cifar10/resnet20/ (B = e$EPOCHS):
#   fp32_$B                          the baseline
#   fp32_${B}_tucker50_e$E           Tucker-2 at RANK x the full ranks after E epochs
#   fp32_${B}_cp50_e$E               CP at rank RANK x max(C, O) after E epochs
#   fp32_${B}_tucker50_e${E}_r$R     Tucker after E, multiplied back into the original layers after R
#   shift_q_all_wb_5_${B}_tucker50_e$E   Tucker after E, then DeepShift-Q (5-bit) on the factors
#   shift_{q,ps}_all_wb_5_ft_fp32_$B     DeepShift-Q / -PS fine-tuned from the finished baseline (FT_EPOCHS)
# The first E epochs of every decomposition arm are the baseline's: its epoch-E checkpoint and log rows are
# copied into the arm's folder (queue B takes that copy when the baseline finishes epoch E). Likewise the
# recompose arm's first R epochs are the Tucker arm's (same seed and flags up to R: resume is bit-identical).
# Collect the table: python experiments/decompose_results.py --root $ROOT/models --epochs $EPOCHS \
#                        --decompose-epoch $E --recompose-epoch $R [--write RESULTS.md]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=${ROOT:-/work/runs}; DATA=${DATA:-/work/data/cifar10}
EPOCHS=${EPOCHS:-6}; MILESTONES=${MILESTONES:-"4 5"}; E=${E:-2}; R=${R:-4}; RANK=${RANK:-0.5}
FT_EPOCHS=${FT_EPOCHS:-1}; THREADS=${THREADS:-1}
MODELS=$ROOT/models; RUNS=$MODELS/cifar10/resnet20; B=e$EPOCHS
BASE=$RUNS/fp32_$B; TUCKER=$RUNS/fp32_${B}_tucker50_e$E
SEED=$ROOT/seeds/e${EPOCHS}_epoch$E; SEED_R=$ROOT/seeds/e${EPOCHS}_tucker50_e${E}_epoch$R
export PYTHONPATH=$PWD OMP_NUM_THREADS=$THREADS
common=(experiments/cifar10.py --data "$DATA" --cache disk -a resnet20 --threads "$THREADS" -j 0 --no-progress
        --out-dir "$MODELS" --resume)
sched=(--epochs "$EPOCHS" --lr-milestones $MILESTONES)
say() { echo "[$(date -u +%FT%TZ)] $*"; }
rows() { [ -f "$1/train_log.csv" ] && echo $(( $(wc -l < "$1/train_log.csv") - 1 )) || echo 0; }
ckpt_epoch() { python -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['epoch'])" "$1" 2>/dev/null || echo -1; }
desc_of() { local prev=""; for a in "$@"; do [ "$prev" = "--desc" ] && echo "$a"; prev=$a; done; }
run() {  # run FOLDER FLAGS...: one run; waits first for a process already training the same run
  local d=$1; shift
  while pgrep -f -- "experiments/cifar10[.]py .*--desc $(desc_of "$@")( |\$)" > /dev/null; do sleep 30; done
  say "=== $(basename "$d")"; python "${common[@]}" "$@" || say "$(basename "$d") failed (exit $?)"
}

take_seed() {  # take_seed RUN EPOCH SEED: copy RUN's state at the end of EPOCH into SEED, once
  local src=$1 epoch=$2 seed=$3
  while [ ! -f "$seed/checkpoint.pth.tar" ]; do
    if [ "$(rows "$src")" -ge "$epoch" ] && [ -f "$src/checkpoint.pth.tar" ]; then
      mkdir -p "$seed.tmp" && cp "$src/checkpoint.pth.tar" "$src/train_log.csv" "$src/test_log.csv" "$seed.tmp/"
      if [ "$(ckpt_epoch "$seed.tmp/checkpoint.pth.tar")" = "$epoch" ]; then
        mv "$seed.tmp" "$seed"; say "took $(basename "$src") at epoch $epoch"
      else
        rm -rf "$seed.tmp"; say "missed $(basename "$src") at epoch $epoch: rerun it to that epoch into $seed"; return 1
      fi
    fi
    sleep 15
  done
}
seeded() {  # seeded FOLDER SEED: start FOLDER from SEED unless it has a checkpoint of its own
  [ -f "$1/checkpoint.pth.tar" ] || { mkdir -p "$1" && cp "$2"/* "$1/" && say "$(basename "$1") starts from $(basename "$2")"; }
}
arm() {  # arm FOLDER METHOD DESC [flags]: a decomposition arm from the baseline's epoch E
  local d=$RUNS/$1 method=$2 desc=$3; shift 3
  seeded "$d" "$SEED"; run "$d" "${sched[@]}" --decompose "$method" --decompose-epoch "$E" --rank "$RANK" --desc "$desc" "$@"
}
wait_baseline() { until [ "$(rows "$BASE")" -ge "$EPOCHS" ] && [ -f "$BASE/weights.pth" ]; do sleep 30; done; }
ft=(--weights "$BASE/weights.pth" --epochs "$FT_EPOCHS")

mkdir -p "$(dirname "$SEED")"
case "${1:-}" in
  A) run "$BASE" "${sched[@]}" -s 0 --desc "$B"
     take_seed "$BASE" "$E" "$SEED" || exit 1
     take_seed "$TUCKER" "$R" "$SEED_R" || exit 1
     seeded "$RUNS/fp32_${B}_tucker50_e${E}_r$R" "$SEED_R"
     arm "fp32_${B}_tucker50_e${E}_r$R" tucker "${B}_tucker50_e${E}_r$R" -s 0 --recompose-epoch "$R"
     arm "shift_q_all_wb_5_${B}_tucker50_e$E" tucker "${B}_tucker50_e$E" -st Q ;;
  B) take_seed "$BASE" "$E" "$SEED" || exit 1
     arm "fp32_${B}_tucker50_e$E" tucker "${B}_tucker50_e$E" -s 0 &
     take_seed "$TUCKER" "$R" "$SEED_R" &
     wait
     arm "fp32_${B}_cp50_e$E" cp "${B}_cp50_e$E" -s 0
     wait_baseline
     run "$RUNS/shift_q_all_wb_5_ft_fp32_$B" "${ft[@]}" -st Q --opt sgd --lr 1e-3 --lr-schedule none --desc "ft_fp32_$B"
     run "$RUNS/shift_ps_all_wb_5_ft_fp32_$B" "${ft[@]}" -st PS --opt radam --lr 1e-3 --lr-schedule none --desc "ft_fp32_$B" ;;
  *) echo "usage: $0 A|B   (run both, in parallel; see the header)" >&2; exit 2 ;;
esac
say "queue $1 done"

#!/usr/bin/env bash
# The GPU check in one command: on a machine with an NVIDIA GPU, install (offline), run the GPU tests,
# tune ResNet-20's shift kernels and their fused glue for a small budget into schedules/cuda-sm_XX/ (the
# convs' CUDA sum-then-shift kernels are hand-scheduled, so their tasks are the per-term ones left: the
# batch-1 classifier), and print the ResNet-20 end-to-end and per-layer table against torch CUDA f32 and
# TVM-float, with the per-term kernels as a fourth column (experiments/bench_gpu.py).
#
#   bash scripts/gpu_check.sh [--wheels DIR]... [--trials N] [--tune-seconds S] [--out DIR] [--dry-run-tune]
#
# Installs nothing from the network. It uses the python3 on PATH (or $PYTHON) and the torch already
# there, whatever its version; the packages that python lacks (apache-tvm, apache-tvm-ffi, xgboost-cpu,
# tornado, for Python 3.12) come as wheels from the --wheels folders (default: .whl and .whl2 when
# present). A wheel too large for one transfer may come split, as NAME.whl.part-00, NAME.whl.part-01, ...
# across those folders: scripts/gpu_wheels.sh prepares them. Our own package is pip-installed
# (--no-deps, editable) into a throwaway venv that sees the system packages, so nothing else changes.
#
# Without a GPU (this is checked first) the CPU-side steps still run: install, the GPU tests (which
# skip) and the benchmark's CUDA builds (nothing timed); tuning is skipped (it measures on the GPU;
# --dry-run-tune generates and builds the design spaces anyway). It then says that no GPU was found.
# Exit: 0 when every step passed (with or without a GPU); 1 when a step failed (the summary names it);
# 2 for bad arguments.
#
# When $OUT is set (the device machine's result folder), the log, gpu.md, gpu.csv and the tuned
# database (schedules-cuda.tar.gz) are copied there.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WHEEL_DIRS=()
TRIALS=4
TUNE_SECONDS=100
DRY_RUN_TUNE=0
RUN_OUT="runs/gpu"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEEL_DIRS+=("${2:?--wheels needs a folder}"); shift 2 ;;
    --trials) TRIALS="${2:?--trials needs a number}"; shift 2 ;;
    --tune-seconds) TUNE_SECONDS="${2:?--tune-seconds needs a number}"; shift 2 ;;
    --out) RUN_OUT="${2:?--out needs a folder}"; shift 2 ;;
    --dry-run-tune) DRY_RUN_TUNE=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ ${#WHEEL_DIRS[@]} -eq 0 ]; then
  for d in .whl .whl2; do [ -d "$d" ] && WHEEL_DIRS+=("$d"); done
fi
PY="${PYTHON:-python3}"
WORK="${TMPDIR:-/tmp}/shiftcomp-gpu-check"
mkdir -p "$WORK" "$RUN_OUT"
LOG="$RUN_OUT/gpu_check.log"
: >"$LOG"
FAILED=()
START=$(date +%s)

say() { echo "== [$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
# step NAME TIMEOUT CMD...: run, log, and remember a failure (never stops the script)
step() {
  local name="$1" limit="$2"; shift 2
  say "$name"
  if declare -F "$1" >/dev/null; then
    "$@" 2>&1 | tee -a "$LOG"                  # a function of this script (its commands are bounded)
  else
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  fi
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    FAILED+=("$name (exit $rc$([ "$rc" -eq 124 ] && echo ', timed out'))")
    say "FAILED: $name (exit $rc)"
  fi
  return 0
}

# ---------------------------------------------------------------- 1. wheels (offline)
install_wheels() {
  local stage="$WORK/wheels"
  rm -rf "$stage" && mkdir -p "$stage"
  local d f
  for d in "${WHEEL_DIRS[@]}"; do
    [ -d "$d" ] || { echo "no such wheel folder: $d"; return 1; }
    for f in "$d"/*.whl; do [ -e "$f" ] && cp "$f" "$stage/"; done
  done
  # reassemble split wheels: NAME.whl.part-00 + NAME.whl.part-01 + ... (parts may sit in different folders)
  local names
  names=$(for d in "${WHEEL_DIRS[@]}"; do ls "$d" 2>/dev/null; done | sed -n 's/\.part-[0-9]*$//p' | sort -u)
  for n in $names; do
    local parts
    parts=$(for d in "${WHEEL_DIRS[@]}"; do ls "$d"/"$n".part-* 2>/dev/null; done | awk -F'.part-' '{print $NF" "$0}' | sort -n | cut -d' ' -f2-)
    cat $parts >"$stage/$n"
    if ! "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).testzip()" "$stage/$n" >/dev/null 2>&1; then
      echo "split wheel $n is incomplete or corrupt (parts found: $(echo $parts | wc -w)); carry every part"
      return 1
    fi
  done
  if ! ls "$stage"/*.whl >/dev/null 2>&1; then
    echo "no wheels in ${WHEEL_DIRS[*]}"
    return 0
  fi
  ls -la "$stage"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$stage"/*.whl
}
if [ ${#WHEEL_DIRS[@]} -gt 0 ]; then
  step "install carried wheels from ${WHEEL_DIRS[*]} into $WORK/site" 300 install_wheels
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
else
  say "no wheel folder given or found (.whl, .whl2): using the packages $PY already has"
fi

# TVM's CUDA runtime needs libcudart.so.13: the CUDA toolkit's, or the one pip's nvidia packages hold
CUDA_LIBS=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null; \
  "$PY" -c "import glob, site, os; [print(d) for p in site.getsitepackages() for d in glob.glob(os.path.join(p, 'nvidia', '*', 'lib')) + glob.glob(os.path.join(p, 'nvidia', 'cu*', 'lib'))]" 2>/dev/null)
for d in $CUDA_LIBS; do LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"

# ---------------------------------------------------------------- 2. our package, --no-deps
install_package() {
  # --without-pip: a venv's own bundled setuptools may predate bdist_wheel; the system's builds it
  rm -rf "$WORK/venv" &&
  "$PY" -m venv --system-site-packages --without-pip "$WORK/venv" &&
  "$PY" -m pip --python "$WORK/venv/bin/python" install -q --no-index --no-deps --no-build-isolation -e "$ROOT"
}
step "pip install --no-deps -e . (venv $WORK/venv over the system packages)" 180 install_package
# a venv made from a venv python does not see that venv's packages (torch): keep the original python then
if [ -x "$WORK/venv/bin/python" ] && "$WORK/venv/bin/python" -c "import torch" 2>/dev/null; then PY="$WORK/venv/bin/python"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# ---------------------------------------------------------------- 3. what is here
env_report() {
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PY" - <<'EOF'
import sys, torch, tvm, shiftcomp
from shiftcomp.compiler import resolve_target
print(f"python {sys.version.split()[0]}  torch {torch.__version__}  tvm {tvm.__version__}  shiftcomp {shiftcomp.__file__}")
print(f"torch.cuda.is_available: {torch.cuda.is_available()}")
try:
    print(f"tvm.cuda(0).exist: {tvm.cuda(0).exist}")
except Exception as e:
    print(f"tvm.cuda(0) failed: {e}")
print(f"cuda target: {resolve_target('cuda')}")
EOF
}
step "environment" 120 env_report
HAS_GPU=0
if "$PY" -c "import torch, tvm, sys; sys.exit(0 if torch.cuda.is_available() and tvm.cuda(0).exist else 1)" 2>/dev/null; then
  HAS_GPU=1
  say "GPU found"
else
  say "NO GPU FOUND (torch or TVM sees no CUDA device): running the CPU-side steps only"
fi
TARGET_KEY=$("$PY" -c "from shiftcomp.tune import resolve_target, target_key; print(target_key(resolve_target('cuda')))" 2>/dev/null || echo cuda-unknown)

# ---------------------------------------------------------------- 4. GPU tests
GPU_TESTS=$(grep -rl --include='test_*.py' 'mark.gpu' tests | sort)
if [ -n "$GPU_TESTS" ]; then
  # shellcheck disable=SC2086
  step "GPU tests: pytest -m gpu $(echo $GPU_TESTS)" 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs $GPU_TESTS
else
  say "no test file has a gpu mark"
fi

# ---------------------------------------------------------------- 5. tune ResNet-20's shift kernels and glue
if [ "$HAS_GPU" -eq 1 ]; then
  DB="schedules/$TARGET_KEY"
else
  DB="$WORK/schedules-dry-run/$TARGET_KEY"   # a dry run writes no record; keep the repository clean
fi
if [ "$HAS_GPU" -eq 1 ] || [ "$DRY_RUN_TUNE" -eq 1 ]; then
  # records are written as they are measured, so a run cut by the hard limit still leaves a database
  step "tune ResNet-20 shift kernels and glue for $TARGET_KEY: $TRIALS trials/task, soft budget ${TUNE_SECONDS}s -> $DB" \
    $(( TUNE_SECONDS + 100 )) "$PY" -m shiftcomp.tune --models resnet20 --batches 1 --sides shift_kernels shift_glue \
    --trials "$TRIALS" --target cuda --max-seconds "$TUNE_SECONDS" --work-dir "$DB"
else
  say "tuning measures on the GPU: skipped (--dry-run-tune generates and builds the CUDA design spaces" \
      "here without measuring; several minutes on 2 cores)"
fi

# ---------------------------------------------------------------- 6. the table
BENCH_DB=()
if [ "$HAS_GPU" -eq 1 ] && [ -s "$DB/database_tuning_record.json" ]; then BENCH_DB=(--db "$DB"); fi
step "ResNet-20 on CUDA: shiftcomp vs TVM-float vs torch f32 (experiments/bench_gpu.py)" 240 \
  "$PY" experiments/bench_gpu.py --out "$RUN_OUT" --batches 1 64 "${BENCH_DB[@]}"

# ---------------------------------------------------------------- summary
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$RUN_OUT"/gpu.md "$RUN_OUT"/gpu.csv "$OUT"/ 2>/dev/null
  [ "$HAS_GPU" -eq 1 ] && [ -d "$DB" ] && tar czf "$OUT/schedules-cuda.tar.gz" "$DB"
fi
say "done in $(( $(date +%s) - START ))s"
if [ "$HAS_GPU" -eq 0 ]; then
  say "NO GPU FOUND: CPU-side steps only (install, GPU tests skipped, tuning skipped, CUDA builds untimed)"
fi
[ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && cp "$LOG" "$OUT"/ 2>/dev/null
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'FAILED steps:\n' ; printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
echo "all steps passed"
exit 0

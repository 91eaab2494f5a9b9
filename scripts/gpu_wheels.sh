#!/usr/bin/env bash
# Prepare, on a machine with pip access, the wheels that scripts/gpu_check.sh installs on an offline GPU
# machine whose python3 is 3.12 and already has torch, numpy, psutil, cloudpickle, rich, tqdm, pytest and
# hypothesis: apache-tvm, apache-tvm-ffi, xgboost-cpu (MetaSchedule's cost model) and tornado.
#
#   bash scripts/gpu_wheels.sh [--python-version 3.12]
#
# apache-tvm's wheel (about 100 MB, nearly all of it libtvm_compiler.so) is larger than what one transfer
# to the GPU machine may carry (64 MiB with the repository), so it is re-compressed (ZIP_LZMA entries,
# which pip installs like any wheel; the RECORD hashes are of the unpacked files and stay valid) and
# split in two parts:
#   .whl/   apache_tvm-...whl.part-00 + the small wheels
#   .whl2/  apache_tvm-...whl.part-01
# Both folders are git-ignored. Carry .whl in one device call and .whl2 in the next, made while the
# machine is still warm (ignored folders carried earlier stay there), then run
#   bash scripts/gpu_check.sh --wheels .whl --wheels .whl2
# which reassembles the parts and checks them before installing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYV=3.12
if [ "${1:-}" = "--python-version" ]; then PYV="${2:?--python-version needs a value}"; fi
DL="$(mktemp -d)"
trap 'rm -rf "$DL"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DL" \
  apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 xgboost-cpu==3.2.0 tornado
rm -rf .whl .whl2
mkdir -p .whl .whl2
TVM_WHL=$(ls "$DL"/apache_tvm-*.whl)
python3 - "$TVM_WHL" "$DL/repacked.whl" <<'EOF'
import sys, zipfile
src, dst = sys.argv[1:]
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_LZMA) as zout:
    for info in zin.infolist():
        zout.writestr(info, zin.read(info.filename), compress_type=zipfile.ZIP_LZMA)
EOF
NAME=$(basename "$TVM_WHL")
split -n 2 -d -a 2 "$DL/repacked.whl" "$DL/$NAME.part-"
mv "$DL/$NAME.part-00" .whl/
mv "$DL/$NAME.part-01" .whl2/
for w in "$DL"/*.whl; do
  case "$(basename "$w")" in apache_tvm-*|repacked.whl) ;; *) mv "$w" .whl/ ;; esac
done
du -sh .whl .whl2
ls -la .whl .whl2

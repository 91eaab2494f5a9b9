#!/usr/bin/env bash
# Installs shiftcomp and everything it needs into the active Python environment.
# torch is pinned to the local CPU wheel (2.13.0) *first*, so nothing pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,bench,tune,decompose]"
python -c "import torch, tvm, shiftcomp; print('torch', torch.__version__, '| tvm', tvm.__version__, '| shiftcomp ready')"

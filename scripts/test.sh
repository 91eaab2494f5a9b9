#!/usr/bin/env bash
# One command on a fresh machine: install, then run the test suite.
set -euo pipefail
source "$(dirname "$0")/env.sh"
python -m pytest -q "$@"

#!/usr/bin/env bash
# Sourced by demo.sh / test.sh: creates ./.venv and installs shiftcomp into it once
# (again whenever pyproject.toml changes). Safe to source repeatedly.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SHIFTCOMP_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
STAMP="$VENV/.shiftcomp-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  bash "$ROOT/scripts/setup.sh"
  touch "$STAMP"
fi

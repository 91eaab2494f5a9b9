"""The package surface: ``from shiftcomp import *`` gives every name of ``__all__``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import shiftcomp

REPO = Path(__file__).resolve().parents[2]


def test_star_import_gives_every_public_name() -> None:
    code = ("from shiftcomp import *\nimport shiftcomp\nnames = set(dir())\n"
            "print(sorted(n for n in shiftcomp.__all__ if n not in names))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_public_api_names() -> None:
    for name in ("compile", "load", "verify", "benchmark", "convert", "ShiftConfig"):
        assert callable(getattr(shiftcomp, name)), name
    assert shiftcomp.__file__.startswith(str(REPO / "shiftcomp"))    # not the tests/shiftcomp folder

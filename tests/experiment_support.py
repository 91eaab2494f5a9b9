"""Helpers for the tests that drive the experiment scripts (``experiments/*.py``) in-process."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def experiment_script(name: str) -> ModuleType:
    """A fresh import of ``experiments/<name>.py`` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"_experiment_{name}", ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def csv_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV log, as dicts keyed by its header."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_artifact_in_fresh_process(path: str | Path, x, tmp_path: Path, env: dict | None = None):
    """Load the artifact ``path`` in a new Python process, run it on ``x`` and return its output tensor
    (the ``subprocess.CompletedProcess`` is raised into an assertion with its stderr on failure)."""
    import os
    import subprocess
    import sys
    import textwrap

    import torch

    torch.save(x, tmp_path / "x.pt")
    code = f"""
        import torch, shiftcomp.artifact as A
        m = A.load({str(path)!r})
        torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)
    assert r.returncode == 0, r.stderr
    return torch.load(tmp_path / "y.pt")

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

"""Suite-wide set-up: the import root and the hypothesis profiles.

* ``ci`` (default): derandomised, so a CI run is reproducible; tests choose their example counts through
  :func:`hypothesis_support.examples`.
* ``fuzz``: random seeds (printed on failure, with the blob to reproduce it) and 10x the examples:
  ``python -m pytest --hypothesis-profile=fuzz -m bitexact``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# The test folders mirror the packages (tests/shiftcomp, tests/passes, tests/schedules) and have no
# __init__.py; with the repository root first on sys.path, `import shiftcomp` is always the real package,
# never a namespace package made of a test folder (e.g. under an editable install's import hook).
_ROOT = str(Path(__file__).resolve().parents[1])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fuzz", derandomize=False, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")

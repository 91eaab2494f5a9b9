"""Suite-wide set-up: hypothesis profiles.

* ``ci`` (default): derandomised, so a CI run is reproducible; tests choose their example counts through
  :func:`hypothesis_support.examples`.
* ``fuzz``: random seeds (printed on failure, with the blob to reproduce it) and 10x the examples:
  ``python -m pytest --hypothesis-profile=fuzz -m bitexact``.
"""
from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fuzz", derandomize=False, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")

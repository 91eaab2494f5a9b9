"""Example counts that follow the active hypothesis profile (see ``conftest.py``).

    @settings(max_examples=examples(200))
    @given(...)

An explicit ``max_examples`` in ``@settings`` overrides a profile, so tests ask this helper instead of
writing the number: ``ci`` gives ``n``, ``fuzz`` gives ``FUZZ_FACTOR * n``.
"""
from __future__ import annotations

from hypothesis import settings

FUZZ_FACTOR = 10


def examples(n: int) -> int:
    """``n`` drawn cases under the ``ci`` profile, ``FUZZ_FACTOR * n`` under ``fuzz``."""
    return n * FUZZ_FACTOR if settings._current_profile == "fuzz" else n  # noqa: SLF001 - no public getter

"""Keep TVM's informational C++ log lines away from users.

TVM's C++ runtime writes some warnings straight to file descriptor 2 (``Scope Saving:`` / ``Scope Loaded:``
when a VM executable is exported or loaded, ``BlockBuilder destroyed with remaining blocks!`` after a
Relax mutator ran). They are not actionable. :func:`quiet_tvm` redirects fd 2 to a temporary file for the
duration of a block and writes back every line that is not one of those, so real errors stay visible.
"""
from __future__ import annotations

import contextlib
import gc
import os
import re
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["quiet_tvm", "NOISE"]

#: C++ log lines that are dropped (the whole line, with TVM's ``[time] file:line: Warning:`` prefix)
NOISE = re.compile(r"Warning: (Scope (Saving|Loaded):|BlockBuilder destroyed with remaining blocks!)")

_depth = 0


@contextlib.contextmanager
def quiet_tvm() -> Iterator[None]:
    """Within the block, TVM's noise lines (:data:`NOISE`) on fd 2 are dropped; everything else is kept."""
    global _depth
    if _depth:  # nested: the outer block filters
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to filter
        yield
        return
    _depth += 1
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            gc.collect()  # Relax builders left in reference cycles log their warning when destroyed: do it here
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            _depth -= 1
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not NOISE.search(ln)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()

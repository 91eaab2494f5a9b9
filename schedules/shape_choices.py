"""Tuned shapes of the sum-then-shift kernels: per layer shape, the vector lanes, pixel-block vectors and
input-channel tiles that measured fastest on one CPU.

The sum-then-shift kernels have no MetaSchedule tuning key (their plan arrays, not a schedule, carry the
weights), but three shape decisions of :func:`schedules.sum_then_shift.build` are free -- every choice gives
the same bits -- and their best values depend on the CPU (vector width, L1d size, load ports):

* ``lanes``: lanes per vector (the target's width, or narrower for small images);
* ``block_vectors``: at most this many vectors per pixel block (registers vs loads in flight);
* ``k_tiles``: input-channel tiles (the activations of one tile for a pixel block must stay in L1);
* ``taps``: the conv's packed layout, aligned tap copies first or the halo layout first (split cache-line
  loads vs a 3x larger footprint). Entries written before it existed have no ``taps`` and were measured
  with the halo layout first, so they read as ``taps: false``.

``shiftcomp.tune`` measures a few candidates per distinct layer shape and writes the winners next to the
MetaSchedule database, ``schedules/<target_key>/`` + :data:`CHOICES_FILE`::

    {"version": 1, "target": "llvm-rocketlake",
     "choices": {"conv2d n1 c256 h8 w8 o256 k3x3 s1x1 p1x1 d1x1 g1 int32 int16":
                 {"lanes": 32, "block_vectors": 4, "k_tiles": 3, "taps": true, "ms": 0.61,
                  "default_ms": 0.66}, ...}}

``shiftcomp.compile`` reads them (:func:`resolve_choices`, the same folder rules as the database) and
:mod:`passes.sum_then_shift_family` builds each kernel with its shape's choice.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from .database import CHOICES_FILE, default_db_dir
from .specs import Conv2dSpec, DenseSpec
from .target import TargetLike, target_key

__all__ = ["CHOICES_FILE", "ShapeChoice", "ShapeChoices", "choice_key", "load_choices", "save_choices",
           "resolve_choices"]

_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ShapeChoice:
    """The build arguments of one layer shape (``schedules.sum_then_shift.build`` keywords)."""

    lanes: int
    block_vectors: int
    k_tiles: int
    taps: bool = False

    def build_kwargs(self) -> dict[str, Any]:
        return {"lanes": int(self.lanes), "block_vectors": int(self.block_vectors), "k_tiles": int(self.k_tiles),
                "taps": bool(self.taps)}


def choice_key(kind: str, spec: Any, lane_dtype: str) -> str:
    """The shape a choice is for: everything about the layer but its weights, ``s0`` and bias (which do not
    change which shape is fastest), so equal layers of a model share one entry."""
    if isinstance(spec, DenseSpec):
        return f"dense m{spec.batch} k{spec.in_features} n{spec.out_features} {spec.acc_dtype} {lane_dtype}"
    if not isinstance(spec, Conv2dSpec):
        raise TypeError(f"no shape key for {type(spec).__name__}")
    s = spec
    return (f"{kind} n{s.batch} c{s.in_channels} h{s.height} w{s.width} o{s.out_channels} "
            f"k{s.kernel_h}x{s.kernel_w} s{s.stride[0]}x{s.stride[1]} p{s.padding[0]}x{s.padding[1]}"
            f"x{s.padding[2]}x{s.padding[3]} d{s.dilation[0]}x{s.dilation[1]} g{s.groups} {s.acc_dtype} {lane_dtype}")


class ShapeChoices:
    """The tuned shapes of one target, looked up by :func:`choice_key`.

    Attributes:
        where: the file they came from (``None``: none).
        hits: the keys :meth:`get` served (in lowering order), for ``compiled.tuned_kernels``.
    """

    def __init__(self, choices: Optional[Mapping[str, ShapeChoice]] = None, where: Optional[str] = None) -> None:
        self._choices = dict(choices or {})
        self.where = where
        self.hits: list[str] = []

    def __len__(self) -> int:
        return len(self._choices)

    def __contains__(self, key: str) -> bool:
        return key in self._choices

    def get(self, key: str) -> Optional[ShapeChoice]:
        """The choice for ``key`` (recorded in :attr:`hits`), or None."""
        c = self._choices.get(key)
        if c is not None:
            self.hits.append(key)
        return c

    def items(self) -> Iterable[tuple[str, ShapeChoice]]:
        return self._choices.items()


def load_choices(path: str | os.PathLike) -> ShapeChoices:
    """Read a choices file (or a folder holding :data:`CHOICES_FILE`).

    Raises:
        ValueError: not a choices file of a known version, or an entry without integer fields.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CHOICES_FILE
    with open(p) as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("choices"), dict):
        raise ValueError(f"{p}: not a sum-then-shift choices file (version {_VERSION})")
    out = {}
    for key, v in data["choices"].items():
        try:
            taps = v.get("taps", False)
            if not isinstance(taps, bool):
                raise TypeError
            out[key] = ShapeChoice(int(v["lanes"]), int(v["block_vectors"]), int(v["k_tiles"]), taps)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"{p}: entry {key!r} needs integer lanes, block_vectors and k_tiles (and a boolean "
                             "taps, if any)") from None
    return ShapeChoices(out, str(p))


def save_choices(folder: str | os.PathLike, target: TargetLike,
                 measured: Mapping[str, tuple[ShapeChoice, Mapping[str, float]]]) -> Path:
    """Write ``{key: (choice, {"ms": ..., "default_ms": ...})}`` into ``folder/``:data:`CHOICES_FILE` (merged
    with the entries already there; a key measured again is replaced). Returns the file."""
    p = Path(folder) / CHOICES_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    if p.is_file():
        try:
            with open(p) as f:
                old = json.load(f)
            if old.get("version") == _VERSION and isinstance(old.get("choices"), dict):
                entries.update(old["choices"])
        except (OSError, ValueError, AttributeError):
            pass
    for key, (choice, times) in measured.items():
        entries[key] = {**dataclasses.asdict(choice), **{k: round(float(v), 5) for k, v in times.items()}}
    tmp = p.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump({"version": _VERSION, "target": target_key(target), "choices": dict(sorted(entries.items()))}, f,
                  indent=1)
    os.replace(tmp, p)
    return p


def resolve_choices(tuned: Any, target: TargetLike) -> ShapeChoices:
    """The tuned shapes ``compile(tuned=...)`` applies, by the database's folder rules: ``"auto"`` ->
    ``schedules/<target_key>/``; a folder -> that folder or its ``<target_key>/`` sub-folder; ``None`` or a
    MetaSchedule database object -> none. A folder without the file gives none (the default shapes)."""
    if tuned is None or (isinstance(tuned, str) and tuned.lower() == "none"):
        return ShapeChoices()
    if isinstance(tuned, str) and tuned == "auto":
        cands = [default_db_dir(target)]
    elif isinstance(tuned, (str, os.PathLike)):
        cands = [Path(tuned), Path(tuned) / target_key(target)]
    else:
        return ShapeChoices()
    for folder in cands:
        if (folder / CHOICES_FILE).is_file():
            return load_choices(folder / CHOICES_FILE)
    return ShapeChoices()

"""A test kernel family: today's kernels, but reading their codes as a *derived* input.

The derivation rebuilds the kernel-layout codes from the layer's logical codes, which exercises the whole
derived-input path (lowering, lifting, artifact export and load) without a new kernel.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from passes.derived_inputs import Derivation, register_derivation
from passes.kernels import KernelBuild, KernelRequest, WeightInput, default_kernel
from schedules.compute import conv2d_weight_codes, dense_weight_codes

CODES_FROM_LOGICAL = "tests.codes_from_logical"


@register_derivation(CODES_FROM_LOGICAL)
def codes_from_logical(codes: np.ndarray, *, kind: str, groups: int) -> np.ndarray:
    """Kernel-layout codes from logical codes ``sign * (shift - s0 + 1)`` (so ``shift - s0 = |c| - 1``)."""
    sign = np.sign(codes).astype(np.int8)
    shift = np.where(codes != 0, np.abs(codes.astype(np.int64)) - 1, 0).astype(np.int8)
    if kind.startswith("dense"):
        return dense_weight_codes(shift, sign, 0)
    return conv2d_weight_codes(shift, sign, 0, groups)


def derived_codes_family(req: KernelRequest) -> KernelBuild:
    build = default_kernel(req)
    how = Derivation(CODES_FROM_LOGICAL, {"kind": req.kind, "groups": req.info.groups})
    return dataclasses.replace(build, weights=(WeightInput("derived_codes", how.apply(req.logical_codes), how),))

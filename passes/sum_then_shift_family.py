"""The sum-then-shift kernel family: ``schedules.sum_then_shift`` kernels behind the kernel-provider interface.

``sum_then_shift_kernel(request)`` returns a :class:`~passes.kernel_build.KernelBuild` with

* ``prologue_float`` = the kernel's quantising pack (``pack_float``: float32 ``x`` -> ``clamp(round(x *
  2**F))`` in the layer's format, rounding and clamp, written straight into the zero-padded, copied layout
  of the lane dtype); the lowering runs it on the float input of the frontend's quantise chain, in place of
  the ``shiftcomp_quantize`` kernel (audited as the layer's prologue: one ``x * 2**F`` per copied element);
* ``prologue`` = the kernel's ``pack`` (int32 ``x_q`` -> the same layout), for an ``x_q`` that no quantise
  chain produced (then after whatever produced it);
* ``main`` = the sum-then-shift kernel, reading the packed activations and the plan arrays;
  ``with_epilogue`` rebuilds a conv / depthwise kernel with the elementwise ops that follow the layer fused
  into its store (:mod:`passes.fuse_epilogue`; not dense: see the comment in the code), and
  ``with_packed_store`` a conv kernel that stores them quantised into the next sum-then-shift kernel's
  ``packed_input`` (:mod:`schedules.packed_store`: the integer handoff, no float tensor and no pack between);
* ``weights`` = the plan arrays (segment pointers, levels, term offsets ...), each with a
  :class:`~passes.derived_inputs.Derivation` so that ``shiftcomp.load`` rebuilds it from the bit-packed codes
  (the artifact stores the codes, never the plan lists). The derivation is registered by the numpy-only
  :mod:`passes.sum_then_shift_plan` (re-exported here), so a runtime-only TVM can load the artifact.

It applies to fixed-point ``conv2d`` (any stride / padding / dilation / groups; depthwise gets its own kernel)
and ``dense`` with more than one row on LLVM targets. On CUDA targets the same layers get
:mod:`schedules.sum_then_shift_cuda` (one thread per output pixel, the block's segment loops shared by its
threads; it reads the int32 ``x_q`` itself, so no prologue, and fuses no epilogue); its plan is the derived
input ``derive_cuda_conv2d_inputs``. Everything else -- batch-1 dense (one pixel: the column-block GEMV
kernel is faster; on x86 :mod:`passes.table_gemv_family` is asked first and falls back here), float
activations, other targets, or a layer whose bound the kernel refuses -- gets
:func:`~passes.kernel_build.default_kernel`.
"""
from __future__ import annotations

import logging
from typing import Any

from tvm import s_tir, tirx

from schedules import sum_then_shift as stst
from schedules import sum_then_shift_cuda as stst_cuda
from schedules.compute import DenseSpec
from schedules.shape_choices import ShapeChoices, choice_key
from schedules.specs import spec_to_json

from .derived_inputs import Derivation
from .kernel_build import KernelBuild, KernelRequest, WeightInput, default_kernel
from .sum_then_shift_plan import PLAN_INPUT, PLAN_INPUT_NAMES, plan_input

__all__ = ["sum_then_shift_kernel", "applies", "plan_input", "PLAN_INPUT", "PLAN_INPUT_NAMES"]

log = logging.getLogger("shiftcomp.kernels")


def applies(req: KernelRequest) -> bool:
    """Whether the layer gets a sum-then-shift kernel (before its bound is checked)."""
    if req.target.kind.name == "cuda":
        return not stst_cuda.applicable(req.kind, req.spec, req.info.act_bits, req.target)
    if req.target.kind.name != "llvm" or req.info.act_bits is None:
        return False
    if req.kind == "conv2d":
        return True
    return req.kind == "dense" and int(req.spec.batch) > 1


def sum_then_shift_kernel(req: KernelRequest, choices: ShapeChoices | None = None) -> KernelBuild:
    """The sum-then-shift build of a fixed-point conv2d / batched dense layer, else the default kernel.
    ``choices``: tuned shapes (:mod:`schedules.shape_choices`); a layer whose shape has one is built with it."""
    if not applies(req):
        return default_kernel(req)
    if req.target.kind.name == "cuda":
        return _cuda_kernel(req)
    shape = {}
    if choices is not None and len(choices):
        choice = choices.get(choice_key(req.kind, req.spec, stst.segment_lane_dtype(tuple(req.info.act_bits))))
        shape = choice.build_kwargs() if choice is not None else {}
    try:
        k = stst.build(req.kind, req.spec, req.logical_codes, req.target, act_bits=tuple(req.info.act_bits), **shape)
    except ValueError as e:   # e.g. a bound only the per-term int64 kernel meets
        log.info("layer %s: no sum-then-shift kernel (%s); using the per-term kernel", req.info.layer, e)
        return default_kernel(req)
    weights = _plan_weights(req, k)
    info = req.info
    return KernelBuild(main=_with_root_block(k.main), weights=weights, prologue=_with_root_block(k.pack),
                       prologue_out=(tuple(k.packed_shape), k.lane_dtype),
                       prologue_float=_with_root_block(k.pack_float(info.rounding, info.act_qmax)),
                       # conv kernels only: after a small dense layer TVM's own glue kernel keeps the BatchNorm1d
                       # product on the stack, where LLVM fuses it into an FMA in some rows, so no fused
                       # epilogue gives the unfused bits there; dense keeps its glue kernels
                       with_epilogue=(None if k.kind == "dense"
                                      else lambda epilogue: _with_root_block(k.main_with(epilogue))),
                       packed_input=k.packed_input(info.rounding, info.act_qmax),
                       with_packed_store=lambda epilogue, packed: (
                           _with_root_block(k.main_with(epilogue, packed)) if k.can_store_into(packed) else None),
                       task_name=f"sum_then_shift_{k.kind}_{_shape_name(req.spec)}_{k.lane_dtype}")


def _cuda_kernel(req: KernelRequest) -> KernelBuild:
    """The CUDA sum-then-shift build (:mod:`schedules.sum_then_shift_cuda`), else the default kernel."""
    try:
        k = stst_cuda.build(req.kind, req.spec, req.logical_codes, req.target, act_bits=tuple(req.info.act_bits))
    except ValueError as e:   # a bound only the per-term int64 kernel meets, a kernel too large for a term
        log.info("layer %s: no CUDA sum-then-shift kernel (%s); using the per-term kernel", req.info.layer, e)
        return default_kernel(req)
    return KernelBuild(main=_with_root_block(k.main), weights=_plan_weights(req, k),
                       task_name=f"sum_then_shift_cuda_{k.kind}_{_shape_name(req.spec)}_{k.lane_dtype}")


def _plan_weights(req: KernelRequest, k: Any) -> tuple[WeightInput, ...]:
    """A kernel's plan arrays (``k.weight_inputs``) as weight inputs, each rebuilt at load time by ``k.derive``
    (a ``functools.partial`` of a ``schedules.sum_then_shift_layout.derive_*`` function) from the codes."""
    derive = k.derive
    fn = derive.func.__name__
    params = {"derive": fn, "spec": spec_to_json(req.spec),
              "keywords": {kw: int(v) for kw, v in derive.keywords.items()}}
    return tuple(WeightInput(name, arr, Derivation(PLAN_INPUT, {**params, "index": i}))
                 for i, (name, arr) in enumerate(zip(PLAN_INPUT_NAMES[fn], k.weight_inputs)))


def _with_root_block(prim: tirx.PrimFunc) -> tirx.PrimFunc:
    """``prim`` with its body inside a root block (Relax's op-pattern analysis expects one); the hand-written
    loops stay as they are."""
    if isinstance(prim.body, s_tir.SBlockRealize):
        return prim
    root = s_tir.SBlock([], [], [], "root", prim.body)
    body = s_tir.SBlockRealize([], True, root)
    return prim.with_body(body)


def _shape_name(spec: Any) -> str:
    if isinstance(spec, DenseSpec):
        return f"{spec.batch}x{spec.in_features}to{spec.out_features}"
    s = spec
    return (f"n{s.batch}c{s.in_channels}h{s.height}w{s.width}o{s.out_channels}k{s.kernel_h}x{s.kernel_w}"
            f"s{s.stride[0]}g{s.groups}")

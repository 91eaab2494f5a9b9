"""shiftcomp's compiler passes (Relax and TIR level). Import the modules you need; this package file stays
free of imports so that ``passes.packing`` (numpy only) can be used by the artifact loader with a
runtime-only TVM, as can the numpy-only derivation modules ``derived_inputs``, ``sum_then_shift_plan``,
``table_gemv_inputs`` and ``adder_weights`` (they rebuild kernel inputs from the packed codes at load time).

* ``lower_shift``    LowerShiftOps: shift composites -> call_tir of the scheduled shift kernels (pattern table)
* ``accumulator``    accumulator width (int32 / int64 / refuse) from the constant weights
* ``quantize_kernel`` the activation-quantise prologue as one TIR kernel
* ``lift_weights``   the kernels' int8 weight codes -> parameters of ``main`` (for the packed artifact)
* ``packing``        bit-packing of weight codes (exact round trip)
* ``audit``          multiplication audit of the lowered IR (per-inference op counts by role)
* ``pipeline``       the pass lists: ``shift_pipeline(target)``
"""

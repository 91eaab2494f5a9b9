"""The quantise prologue kernel vs ``shiftcomp.quant.to_fixed``."""
from __future__ import annotations

import numpy as np
import torch
import tvm
from lowering_support import TARGET

from passes.quantize_kernel import quantize_primfunc
from shiftcomp.quant import to_fixed


def test_quantize_kernel_matches_to_fixed_on_ties_and_edges() -> None:
    for (i_bits, f_bits) in [(3, 5), (16, 16), (1, 0)]:
        for rounding in ("nearest", "floor"):
            q = 2.0 ** -f_bits
            qmax = 2 ** (i_bits + f_bits - 1) - 1
            x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, qmax, qmax + 1, -qmax - 1, -qmax - 2, 1e30, -1e30],
                             dtype=torch.float64) * q
            x = torch.cat([x.float(), torch.randn(20) * 4])
            prim = quantize_primfunc(tuple(x.shape), i_bits, f_bits, rounding).with_attr("global_symbol", "main")
            ex = tvm.compile(tvm.IRModule({"main": prim}), target=TARGET)
            out = tvm.runtime.tensor(np.zeros(x.shape, np.int32))
            ex["main"](tvm.runtime.tensor(x.numpy()), out)
            np.testing.assert_array_equal(out.numpy(), to_fixed(x, i_bits, f_bits, rounding).numpy())

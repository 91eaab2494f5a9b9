"""CUDA checks without a GPU, shared by the CUDA kernel tests: the data-multiply check of generated CUDA C,
nvcc's PTX and a taint pass over it, and an emulator that compiles the CUDA C with g++ (thread shims, UBSan)
and runs it over its launch grid on the CPU."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import tvm
from tvm import s_tir, tirx

from schedules.target import resolve_target

CUDA = resolve_target({"kind": "cuda", "arch": "sm_80"})
HAS_NVCC = shutil.which("nvcc") is not None
HAS_GXX = shutil.which("g++") is not None


def data_statements_with_star(src: str) -> list:
    """Data assignments of the kernels that still contain ``*`` once index math, pointer-cast
    dereferences (``*(int *)(&(v))``: reinterpret), declarations and the float scale are removed."""
    body = src[src.index('extern "C" __global__'):]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)                   # comments
    while re.search(r"\[[^\[\]]+\]", body):                                # index arithmetic, innermost first
        body = re.sub(r"\[[^\[\]]+\]", "\x00", body)                     # (indices read from memory nest)
    body = body.replace("\x00", "[]")
    body = re.sub(r"\(\*\(\w[\w ]*\*\)\(&", "(DEREF(", body)            # reinterpret via pointer cast
    body = re.sub(r"\w+\*\s*__restrict__", "", body)                   # parameter declarations
    body = re.sub(r"\*\s*0x1p[-+]?\d+f", " SCALE", body)               # the per-output scale (hex float)
    out = []
    for stmt in re.split(r"[;{}]", body):
        is_assign = re.search(r"[^<>=!]=[^=]", stmt) is not None
        is_data = re.search(r"_ptr\[\]|condval|v_\w*", stmt) is not None
        if is_assign and is_data and "*" in stmt:
            out.append(stmt.strip())
    return out


def nvcc_ptx(src: str) -> str:
    from tvm.support import nvcc

    with CUDA:  # nvcc.compile_cuda looks the arch up in the current target
        return nvcc.compile_cuda(src, target_format="ptx", arch="sm_80", compiler="nvcc").decode()


_REG = re.compile(r"%[a-z]+\d*")


def ptx_data_multiplies(ptx: str, data_params: tuple[int, ...] | None = None) -> tuple:
    """(integer mul/mad, float mul/fma) PTX instructions with an operand computed from loaded data.

    Taint = the destination of every ``ld.*`` except ``ld.param`` (activations, codes, bias, spilled
    accumulators), propagated through every instruction to its destination(s) until a fixed point;
    address operands ``[...]`` do not taint a load. Index math never reads loaded data in the per-term
    kernels. ``data_params``: only loads through these kernel parameters (their index in the signature) are
    data -- for kernels whose indices come from memory (a plan's offsets), whose arithmetic is index math.
    """
    int_muls: list = []
    float_muls: list = []
    for entry in re.split(r"\.entry\s", re.sub(r"//[^\n]*", "", ptx))[1:]:   # registers are per function
        i, f = _entry_data_multiplies(entry, data_params)
        int_muls += i
        float_muls += f
    return int_muls, float_muls


def _entry_data_multiplies(ptx: str, data_params: tuple[int, ...] | None = None) -> tuple:
    insts = []
    for raw in ptx.split(";"):
        text = raw.strip().splitlines()[-1].strip() if raw.strip() else ""
        text = re.sub(r"^\$?[\w$]+:\s*", "", text)                      # label
        text = re.sub(r"^@!?%\w+\s+", "", text)                        # predicate guard (control, not data)
        text = re.sub(r"^\)\s*", "", text)
        if not text or text.startswith((".", "{", "}")):
            continue
        op, _, rest = text.partition(" ")
        operands = [o.strip() for o in re.split(r",(?![^\[]*\])", rest)] if rest else []
        insts.append((op, operands))
    data_addr = _param_derived(insts, data_params) if data_params is not None else None

    def loaded(op: str, ops: list) -> set | None:
        # a load's value is data (unless only some parameters are: then it must read through one of them)
        if not op.startswith("ld.") or op.startswith("ld.param"):
            return None
        addr = {r for o in ops[1:] for r in _REG.findall(o)}
        return set(_REG.findall(ops[0])) if data_addr is None or addr & data_addr else set()

    tainted = _forward(insts, loaded, through_addresses=False)
    int_muls, float_muls = [], []
    for op, ops in insts:
        if not re.match(r"(mul|mad|fma)(24)?\.", op):
            continue
        srcs = {r for o in ops[1:] for r in _REG.findall(o)}
        if not srcs & tainted:
            continue
        (float_muls if re.search(r"\.f(16|32|64)", op) else int_muls).append((op, ops))
    return int_muls, float_muls


def _param_derived(insts: list, params: tuple[int, ...]) -> set:
    """Registers computed from the pointers of the kernel parameters ``params`` (``ld.param`` of
    ``*_param_<i>``), through any arithmetic (the addresses of those buffers)."""
    def pointer(op: str, ops: list) -> set | None:
        if op.startswith("ld.param"):
            m = re.search(r"_param_(\d+)", " ".join(ops[1:]))
            return set(_REG.findall(ops[0])) if m and int(m.group(1)) in params else set()
        return set() if op.startswith("ld.") else None

    return _forward(insts, pointer, through_addresses=True)


def _forward(insts: list, source, through_addresses: bool) -> set:
    """Forward data flow over PTX ``(op, operands)`` to a fixed point: ``source(op, operands)`` gives the
    registers an instruction starts (``None``: not a source, its destinations join when an operand is in the
    set); ``through_addresses``: registers inside ``[...]`` operands count as operands too."""
    found: set = set()
    changed = True
    while changed:
        changed = False
        for op, ops in insts:
            if not ops or op.startswith(("st.", "bra", "ret", "bar", "call")):
                continue
            new = source(op, ops)
            if new is None:
                srcs = {r for o in ops[1:]
                        for r in _REG.findall(o if through_addresses else re.sub(r"\[.*?\]", "", o))}
                new = set(_REG.findall(ops[0])) if srcs & found else set()
            if new - found:
                found |= new
                changed = True
    return found


_PRELUDE = r"""
#include <cstdint>
#include <cstdio>
#include <cstdlib>
struct tvm_dim3 { unsigned x, y, z; };
static tvm_dim3 threadIdx, blockIdx;
#define __global__
#define __launch_bounds__(n)
#define __restrict__ __restrict
#define uint unsigned int
#define uchar unsigned char
#define ushort unsigned short
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
template <class A, class B> static inline auto max(A a, B b) -> decltype(a + b) { return a > b ? a : b; }
template <class A, class B> static inline auto min(A a, B b) -> decltype(a + b) { return a < b ? a : b; }
"""


def _launches(prim) -> list:
    """(blocks, threads) of each kernel, in order, from the thread-bound loops of the scheduled PrimFunc."""
    launches: list = []

    def walk(s, cur):
        if s is None:
            return
        if isinstance(s, tirx.SeqStmt):
            for c in s.seq:
                walk(c, cur)
        elif isinstance(s, tirx.For):
            tag = str(s.thread_binding.thread_tag) if s.thread_binding is not None else ""
            if tag == "blockIdx.x":
                cur = {"blockIdx.x": int(s.extent)}
                launches.append(cur)
            elif tag == "threadIdx.x":
                cur["threadIdx.x"] = int(s.extent)
            walk(s.body, cur)
        elif isinstance(s, s_tir.SBlockRealize):
            walk(s.block.body, cur)
        else:
            walk(getattr(s, "body", None), cur)

    walk(prim.body, None)
    return [(d["blockIdx.x"], d["threadIdx.x"]) for d in launches]


def emulate_cuda(src: str, prim, buffers: dict, prelude: str = "") -> dict:
    """Run the kernels of ``src`` on the CPU over their launch grids; ``buffers``: TVM buffer name -> array
    (parameters; intermediates are allocated from the PrimFunc); ``prelude``: C++ shims of CUDA intrinsics the
    source calls (after the thread shims). Returns all buffers after the run."""
    bufs = {k: np.ascontiguousarray(v) for k, v in buffers.items()}
    for b in prim.body.block.alloc_buffers:                  # global intermediates (acc, pad)
        bufs.setdefault(str(b.name), np.zeros([int(d) for d in b.shape], str(b.dtype)))
    names = sorted(bufs)
    body = src[src.index('extern "C" __global__'):]
    sigs = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(([^)]*)\)\s*\{', body)
    launches = _launches(prim)
    assert len(sigs) == len(launches), (sigs, launches)
    main = ["int main(int argc, char** argv) {", f"  void* b[{len(names)}];", "  size_t sz[] = {" +
            ", ".join(str(bufs[n].nbytes) for n in names) + "};",
            f"  for (int i = 0; i < {len(names)}; ++i) {{ b[i] = calloc(sz[i] + 64, 1);"
            " FILE* f = fopen(argv[1 + i], \"rb\"); if (fread(b[i], 1, sz[i], f) != sz[i]) return 3; fclose(f); }"]
    for (kname, params), (nb, nt) in zip(sigs, launches):
        args = []
        for p in params.split(","):
            m = re.search(r"(\w[\w\s]*?)\*\s*__restrict__\s*(\w+)_ptr", p.strip())
            args.append(f"({m.group(1).strip()}*)b[{names.index(m.group(2))}]")
        main.append(f"  for (unsigned bx = 0; bx < {nb}u; ++bx) for (unsigned tx = 0; tx < {nt}u; ++tx) "
                    f"{{ blockIdx.x = bx; threadIdx.x = tx; {kname}({', '.join(args)}); }}")
    main += [f"  for (int i = 0; i < {len(names)}; ++i) {{ FILE* f = fopen(argv[1 + i], \"wb\");"
             " fwrite(b[i], 1, sz[i], f); fclose(f); }", "  return 0;", "}"]
    with tempfile.TemporaryDirectory() as d:
        cpp, exe = os.path.join(d, "k.cpp"), os.path.join(d, "k")
        with open(cpp, "w") as f:
            f.write(_PRELUDE + prelude + body + "\n" + "\n".join(main))
        r = subprocess.run(["g++", "-std=c++20", "-O1", "-w", "-fsanitize=undefined",
                            "-fno-sanitize-recover=all", cpp, "-o", exe], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        paths = [os.path.join(d, f"buf{i}.bin") for i in range(len(names))]
        for n, p in zip(names, paths):
            bufs[n].tofile(p)
        r = subprocess.run([exe] + paths, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, "kernel failed / undefined behaviour:\n" + r.stderr[-3000:]
        return {n: np.fromfile(p, bufs[n].dtype).reshape(bufs[n].shape) for n, p in zip(names, paths)}


def has_gpu() -> bool:
    try:
        return bool(tvm.cuda(0).exist)
    except Exception:
        return False

"""The deployable artifact: one file holding the compiled library, the bit-packed weights and a manifest.

File format, version 1 (all integers little-endian)::

    offset  size  content
    0       8     magic  b"\\x89SHFTCMP"
    8       4     u32    format version (1)
    12      8     u64    H = manifest length in bytes
    20      H     manifest, UTF-8 JSON (below)
    20+H    ...   payload: sections at the offsets the manifest gives (relative to the payload start)
    end-32  32    SHA-256 of every byte before it

Manifest keys: ``format`` ("shiftcomp-artifact"), ``version``, ``file_size`` (bytes, whole file),
``tvm_version``, ``target`` (TVM target JSON), ``device`` ("cpu" | "cuda"), ``inputs`` / ``outputs``
(``[{"shape": [...], "dtype": "float32"}]``), ``output_tuple`` (bool), ``num_input``,
``lib`` (``{"offset", "size"}``: the ``export_library`` shared object of the Relax VM executable; it holds
the kernels, the VM bytecode and the float constants (biases, BatchNorm, float layers), but no shift
weights and no adder weights of ``weight_bits <= 8``), ``weights`` (entries in the order ``main`` takes them
after the inputs: ``{"name", "layer", "offset", "shape", "bits", "codebook", "nbytes", "count", "layout"}``:
a shift layer's codes ``sign * (shift - s0 + 1)`` or an adder layer's fixed-point weights ``w_q``
(:mod:`passes.adder_weights`), in PyTorch weight layout, bit-packed as in :mod:`passes.packing`, and the
numpy steps ``layout = [["transpose", axes] | ["pad", widths] | ["reshape", shape], ...]`` that turn them
into the kernel's (padded) layout). An entry with ``"main_param": false`` only stores a layer's codes (its
kernel does not read them directly). A *derived* entry ``{"name", "layer", "derive": {"fn", "params",
"module"}, "from", "shape", "dtype"}`` holds no data: at load time the registered derivation
(:mod:`passes.derived_inputs`) rebuilds it from the logical codes of entry ``from``. ``layers`` (informational: accumulator dtype and bound per layer),
``stats`` (``packed_weight_bytes``, ``float32_weight_bytes``: shift and packed adder layers;
``lib_bytes``; ``library_weight_layers``: the adder layers whose weights stay library constants, float
mode or ``weight_bits > 8``), ``tuning`` (the database the build used, if any, and the kernels it scheduled).

**Load only files you trust**: the library is native code that runs when it is opened (like unpickling).
Loading checks, in order, each failure an :class:`ArtifactError` naming the file: the whole file's
SHA-256 against ``expected_sha256`` when given, the magic (a foreign file), the lengths (a truncated
file), the embedded checksum (a corrupted file), the format/version -- all before the library is opened.
Then the library is written to a private temporary file, loaded with ``tvm.runtime.load_module`` (the file is
removed right after; the mapping stays), the weight codes are unpacked with numpy and kept on the
device, and ``main(*inputs, *weight_codes)`` is called per inference. Only ``tvm.runtime``, numpy and
torch are needed: the derivations that rebuild kernel inputs are numpy only (sum-then-shift plans,
table GEMV codes, adder weights), so ``TVM_USE_RUNTIME_LIB=1`` (libtvm_runtime only) works when nothing else
imports ``tvm.relax``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from passes.derived_inputs import Derivation
from passes.packing import PackedCodes, pack_codes, unpack_codes
from schedules.compute import weight_codes
from shiftcomp.errors import ArtifactError, SignatureError
from shiftcomp.native_log import quiet_tvm

__all__ = ["MAGIC", "VERSION", "ArtifactInfo", "LoadedModel", "ModelRunner", "export", "load", "read_manifest",
           "file_sha256"]

MAGIC = b"\x89SHFTCMP"
VERSION = 1
_PREFIX = struct.Struct("<8sIQ")  # magic, version, manifest length
_DIGEST = 32


# ---------------------------------------------------------------------------------------------- running
class ModelRunner:
    """Calls a Relax VM ``main(*inputs, *weights)`` with torch tensors (shared by compiled and loaded models).

    Attributes:
        input_info: ``[(shape, dtype), ...]`` of the model inputs (static).
        output_info: ``[(shape, dtype), ...]`` of the outputs.
        output_tuple: whether ``main`` returns a tuple (else one tensor).
        device_type: ``"cpu"`` or ``"cuda"``.
    """

    input_info: list[tuple[tuple[int, ...], str]]
    output_info: list[tuple[tuple[int, ...], str]]
    output_tuple: bool
    device_type: str

    def _init_runner(self, lib: Any, weights: Sequence[np.ndarray], device_type: str) -> None:
        """Remember what to run; the VM is created on first use (so cross-compiled builds need no device)."""
        self.device_type = device_type
        self._lib = lib
        self._weight_arrays = [np.ascontiguousarray(w) for w in weights]
        self._vm_state: tuple[Any, Any, list[Any]] | None = None

    def _runtime(self) -> tuple[Any, Any, list[Any]]:
        """(device, main function, weight tensors on the device), created once."""
        if self._vm_state is None:
            import tvm
            from tvm.runtime.vm import VirtualMachine

            dev = tvm.cuda(0) if self.device_type == "cuda" else tvm.cpu(0)
            if not dev.exist:
                raise RuntimeError(f"this model was compiled for {self.device_type}, and no such device is present")
            with quiet_tvm():
                vm = VirtualMachine(self._lib, dev)
            weights = [tvm.runtime.tensor(w, dev) for w in self._weight_arrays]
            self._vm_state = (dev, vm["main"], weights)
        return self._vm_state

    def _check_inputs(self, xs: Sequence[Any]) -> list[np.ndarray]:
        if len(xs) != len(self.input_info):
            raise SignatureError(f"expected {len(self.input_info)} input(s) "
                                 f"{[list(s) for s, _ in self.input_info]}, got {len(xs)}")
        arrays = []
        for i, (x, (shape, dtype)) in enumerate(zip(xs, self.input_info)):
            if isinstance(x, torch.Tensor):
                t = x.detach()
                got_dtype = str(t.dtype).replace("torch.", "")
                if tuple(t.shape) != tuple(shape) or got_dtype != dtype:
                    raise SignatureError(f"input {i}: expected shape {list(shape)} dtype {dtype}, got shape "
                                         f"{list(t.shape)} dtype {got_dtype} (the model was compiled for "
                                         f"static shapes; compile again for other shapes)")
                a = np.ascontiguousarray(t.cpu().numpy())
                # checked in numpy: a torch op would start torch's OpenMP workers, which then spin on the
                # cores that the TVM thread pool is about to use
                if t.is_floating_point() and not np.isfinite(a).all():
                    raise ValueError(f"input {i} contains NaN or inf; the compiled model needs finite inputs")
                arrays.append(a)
            elif isinstance(x, np.ndarray):
                if tuple(x.shape) != tuple(shape) or str(x.dtype) != dtype:
                    raise SignatureError(f"input {i}: expected shape {list(shape)} dtype {dtype}, got shape "
                                         f"{list(x.shape)} dtype {x.dtype}")
                if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
                    raise ValueError(f"input {i} contains NaN or inf; the compiled model needs finite inputs")
                arrays.append(np.ascontiguousarray(x))
            else:
                raise SignatureError(f"input {i}: expected a torch.Tensor, got {type(x).__name__}")
        return arrays

    def run_tvm(self, *tvm_inputs: Any) -> Any:
        """Run ``main`` on TVM tensors already on the device (no checks, no copies): the raw VM result."""
        _, main, weights = self._runtime()
        return main(*tvm_inputs, *weights)

    def vm_runner(self, *inputs: torch.Tensor):
        """A zero-argument callable running one inference on pre-converted inputs (for timing)."""
        import tvm

        dev, main, weights = self._runtime()
        args = [tvm.runtime.tensor(a, dev) for a in self._check_inputs(inputs)] + weights
        return lambda: main(*args)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run one inference: torch tensors in (checked against the compiled signature), torch tensors out.

        Raises:
            SignatureError (a ValueError): wrong number, shape or dtype of inputs.
            ValueError: an input contains NaN or inf.
        """
        import tvm

        dev, main, weights = self._runtime()
        args = [tvm.runtime.tensor(a, dev) for a in self._check_inputs(inputs)]
        out = main(*args, *weights)
        if self.output_tuple:
            return tuple(torch.from_numpy(o.numpy().copy()) for o in out)
        return torch.from_numpy(out.numpy().copy())


# ---------------------------------------------------------------------------------------------- export
@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """What :func:`export` wrote.

    Attributes:
        path: the file.
        file_bytes: its size.
        lib_bytes: size of the embedded shared library.
        packed_weight_bytes: shift and adder weights as stored (bit streams + codebooks).
        float32_weight_bytes: the same weights as float32 (4 bytes each).
        bits: bits per weight, by layer.
        library_weight_layers: adder layers whose weights stay constants of the library (float mode or
            ``weight_bits > 8``; not in the packed section nor in the byte counts).
    """

    path: Path
    file_bytes: int
    lib_bytes: int
    packed_weight_bytes: int
    float32_weight_bytes: int
    bits: dict[str, int]
    library_weight_layers: tuple[str, ...] = ()

    @property
    def weight_ratio(self) -> float:
        """``packed_weight_bytes / float32_weight_bytes`` (0 when there are no packed weights)."""
        return self.packed_weight_bytes / self.float32_weight_bytes if self.float32_weight_bytes else 0.0


def apply_layout(codes: np.ndarray, steps: Sequence[Sequence[Any]]) -> np.ndarray:
    """Logical codes -> the kernel's code array by numpy steps ``[["transpose", axes] | ["pad", widths] |
    ["reshape", shape], ...]`` (zero padding)."""
    out = codes
    for op, arg in steps:
        if op == "transpose":
            out = np.transpose(out, arg)
        elif op == "pad":
            out = np.pad(out, [tuple(p) for p in arg])
        elif op == "reshape":
            out = out.reshape(arg)
        else:
            raise ArtifactError(f"unknown weight layout step {op!r}")
    return np.ascontiguousarray(out, dtype=np.int8)


def _layout_steps(kind: str, logical_shape: tuple[int, ...], kernel_shape: tuple[int, ...],
                  groups: int) -> list[list[Any]]:
    """The steps from PyTorch-layout codes to the kernel layout of ``schedules.compute`` (ARCHITECTURE.md, Kernels):
    dense ``(N, K) -> (NBLK, K, NB)`` column blocks, conv2d ``(O, Cg, KH, KW) -> (G, KH, KW, Cg, Og_pad)``."""
    if kind == "dense":
        n, k = logical_shape
        nblk, _, nb = kernel_shape
        return [["transpose", [1, 0]], ["pad", [[0, 0], [0, nblk * nb - n]]], ["reshape", [k, nblk, nb]],
                ["transpose", [1, 0, 2]]]
    o, cg, kh, kw = logical_shape
    g = groups
    return [["reshape", [g, o // g, cg, kh, kw]], ["transpose", [0, 3, 4, 2, 1]],
            ["pad", [[0, 0]] * 4 + [[0, int(kernel_shape[-1]) - o // g]]]]


def _layer_codes(compiled: Any, layer: str) -> np.ndarray:
    """A layer's logical int8 codes, PyTorch weight layout (``LoweredLayer.logical_codes``)."""
    low = compiled.layers.get(layer)
    if low is not None and low.logical_codes is not None:
        return low.logical_codes
    data = compiled.imported.layers[layer]
    return weight_codes(data.shift, data.sign, data.info.s0)


def _logical_codes(compiled: Any, layer: str, kernel_codes: np.ndarray) -> tuple[np.ndarray, list[list[Any]]]:
    """The layer's codes in PyTorch weight layout (what gets packed) and the steps back to ``kernel_codes``.

    The kernels pad output channels with zero codes; packing the padded array would cost extra bytes and
    (with a new zero symbol) possibly an extra bit. If the steps do not reproduce ``kernel_codes`` exactly
    (a kernel layout this module does not know), the kernel layout itself is packed (no steps).
    """
    info = compiled.layers[layer].info if layer in compiled.layers else compiled.imported.layers[layer].info
    logical = _layer_codes(compiled, layer)
    try:
        steps = _layout_steps(info.kind, logical.shape, kernel_codes.shape, info.groups)
        ok = np.array_equal(apply_layout(logical, steps), kernel_codes)
    except Exception:  # noqa: BLE001 - a layout the steps cannot express
        ok = False
    if not ok:
        return kernel_codes, []
    return logical, steps


def export(compiled: Any, path: str | os.PathLike) -> ArtifactInfo:
    """Write ``compiled`` (a :class:`shiftcomp.compiler.CompiledModel`) to one artifact file (format above)."""
    import tvm

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="shiftcomp_export_") as tmp:
        so = os.path.join(tmp, "lib.so")
        with quiet_tvm():
            compiled.executable.export_library(so)
        lib = Path(so).read_bytes()
    sections = [lib]
    offset = len(lib)
    weights_meta: list[dict[str, Any]] = []
    packed_total = 0
    bits: dict[str, int] = {}
    logical_entry: dict[str, int] = {}       # layer -> entry whose packed data are its logical codes
    derived: list[tuple[dict[str, Any], str, np.ndarray, Derivation]] = []

    def add_codes(name: str, layer: str, codes: np.ndarray, steps: list[list[Any]], main_param: bool) -> None:
        nonlocal offset, packed_total
        packed = pack_codes(codes)
        meta = packed.meta()
        meta.update({"name": name, "layer": layer, "offset": offset, "count": packed.count, "layout": steps,
                     "main_param": main_param})
        if steps or not main_param:
            logical_entry.setdefault(layer, len(weights_meta))
        weights_meta.append(meta)
        sections.append(packed.data)
        offset += len(packed.data)
        packed_total += packed.nbytes
        bits[layer] = packed.bits

    derive = compiled.weights.derive or [None] * len(compiled.weights.arrays)
    for name, layer, array, how in zip(compiled.weights.names, compiled.weights.layers, compiled.weights.arrays,
                                       derive):
        if how is None:
            codes, steps = _logical_codes(compiled, layer, np.asarray(array, dtype=np.int8))
            add_codes(name, layer, codes, steps, True)
        else:
            meta = {"name": name, "layer": layer, "derive": how.to_json(), "shape": list(array.shape),
                    "dtype": str(array.dtype), "main_param": True}
            weights_meta.append(meta)
            derived.append((meta, layer, np.asarray(array), how))
    for meta, layer, array, how in derived:
        logical = _layer_codes(compiled, layer)
        if layer not in logical_entry:
            add_codes("codes_" + layer, layer, logical, [], False)
        rebuilt = how.apply(logical)
        if rebuilt.shape != array.shape or rebuilt.dtype != array.dtype or not np.array_equal(rebuilt, array):
            raise ArtifactError(f"layer {layer!r}: derivation {how.fn!r} does not reproduce the kernel input "
                                f"{meta['name']!r} from the layer's codes; it cannot be rebuilt at load time")
        meta["from"] = logical_entry[layer]
    float_total = sum(4 * compiled.layer_weight_count(layer) for layer in dict.fromkeys(compiled.weights.layers))
    lifted = set(compiled.weights.layers)
    library_layers = tuple(layer for layer in compiled.layers if layer not in lifted)
    manifest: dict[str, Any] = {
        "format": "shiftcomp-artifact", "version": VERSION, "tvm_version": tvm.__version__,
        "target": _target_json(compiled.target), "device": compiled.device_type,
        "inputs": [{"shape": list(s), "dtype": d} for s, d in compiled.input_info],
        "outputs": [{"shape": list(s), "dtype": d} for s, d in compiled.output_info],
        "output_tuple": bool(compiled.output_tuple), "num_input": len(compiled.input_info),
        "lib": {"offset": 0, "size": len(lib)}, "weights": weights_meta,
        "layers": compiled.layer_summary(),
        "tuning": {"database": compiled.settings.database, "tuned_kernels": list(compiled.tuned_kernels)},
        "stats": {"packed_weight_bytes": packed_total, "float32_weight_bytes": float_total, "lib_bytes": len(lib),
                  "library_weight_layers": list(library_layers)},
    }
    payload = b"".join(sections)
    # file_size depends on the manifest length, which depends on file_size: iterate to a fixed point
    size = 0
    for _ in range(4):
        manifest["file_size"] = size
        head = json.dumps(manifest, sort_keys=True).encode("utf-8")
        new = _PREFIX.size + len(head) + len(payload) + _DIGEST
        if new == size:
            break
        size = new
    body = _PREFIX.pack(MAGIC, VERSION, len(head)) + head + payload
    data = body + hashlib.sha256(body).digest()
    assert len(data) == size, (len(data), size)
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_bytes(data)
    os.replace(tmp_path, path)
    return ArtifactInfo(path=path, file_bytes=len(data), lib_bytes=len(lib), packed_weight_bytes=packed_total,
                        float32_weight_bytes=float_total, bits=bits, library_weight_layers=library_layers)


def _target_json(target: Any) -> Any:
    try:
        return json.loads(json.dumps(dict(target.export()), default=str))
    except Exception:  # noqa: BLE001
        return str(target)


# ---------------------------------------------------------------------------------------------- load
def _parse(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    """Validate a whole artifact's bytes; return (manifest, payload)."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise ArtifactError(f"{where} is not a shiftcomp artifact (bad magic header; expected a file written by "
                            f"CompiledModel.export)")
    if len(data) < _PREFIX.size + _DIGEST:
        raise ArtifactError(f"{where} is truncated: {len(data)} bytes, too short to hold the header")
    _, version, head_len = _PREFIX.unpack_from(data, 0)
    if version != VERSION:
        raise ArtifactError(f"{where} has artifact format version {version}; this shiftcomp reads version {VERSION}")
    if _PREFIX.size + head_len + _DIGEST > len(data):
        raise ArtifactError(f"{where} is truncated: the manifest alone needs {_PREFIX.size + head_len + _DIGEST} "
                            f"bytes, the file has {len(data)}")
    try:
        manifest = json.loads(data[_PREFIX.size:_PREFIX.size + head_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{where} is corrupted: unreadable manifest ({e})") from None
    expected = int(manifest.get("file_size", -1))
    if expected != len(data):
        kind = "truncated" if len(data) < expected else "corrupted (extra bytes)"
        raise ArtifactError(f"{where} is {kind}: {len(data)} bytes, the manifest says {expected}")
    if hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise ArtifactError(f"{where} is corrupted: SHA-256 checksum mismatch")
    if manifest.get("format") != "shiftcomp-artifact":
        raise ArtifactError(f"{where}: unknown format {manifest.get('format')!r}")
    return manifest, data[_PREFIX.size + head_len:-_DIGEST]


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The validated manifest of an artifact (see the module docstring). Opens no library."""
    p = Path(path)
    return _parse(_read(p), str(p))[0]


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a whole artifact file: what ``load(..., expected_sha256=...)`` compares."""
    return hashlib.sha256(_read(Path(path))).hexdigest()


def _read(p: Path, expected_sha256: str | None = None) -> bytes:
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{p}: no such artifact file") from None
    if expected_sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != expected_sha256.strip().lower():
            raise ArtifactError(f"{p}: SHA-256 {got} is not the expected {expected_sha256}; refusing to load it")
    return data


class LoadedModel(ModelRunner):
    """A model loaded from an artifact: call it with torch tensors (see :class:`ModelRunner`).

    Attributes:
        path: the artifact file.
        manifest: its manifest.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], lib: Any, weights: list[np.ndarray]) -> None:
        self.path = path
        self.manifest = manifest
        self.input_info = [(tuple(i["shape"]), i["dtype"]) for i in manifest["inputs"]]
        self.output_info = [(tuple(o["shape"]), o["dtype"]) for o in manifest["outputs"]]
        self.output_tuple = bool(manifest["output_tuple"])
        self._init_runner(lib, weights, manifest.get("device", "cpu"))

    def __repr__(self) -> str:
        layers = {w["layer"] for w in self.manifest["weights"]}
        return (f"LoadedModel({str(self.path)!r}, inputs={[list(s) for s, _ in self.input_info]}, "
                f"{len(layers)} layers with packed weights)")


def load(path: str | os.PathLike, *, expected_sha256: str | None = None) -> LoadedModel:
    """Load an artifact written by ``CompiledModel.export`` (no model Python code needed).

    **Load only files you trust.** An artifact holds a native shared library that runs when it is opened,
    like unpickling a file. Every check below happens before the library is opened.

    Args:
        path: the artifact file.
        expected_sha256: the hex SHA-256 of the whole file (:func:`file_sha256` of the file you exported);
            any other file is refused.

    Raises:
        ArtifactError: not an artifact, truncated, corrupted, unsupported version, or not the expected
            SHA-256.
    """
    import tvm

    p = Path(path)
    manifest, payload = _parse(_read(p, expected_sha256), str(p))
    lib_meta = manifest["lib"]
    lib_bytes = payload[lib_meta["offset"]:lib_meta["offset"] + lib_meta["size"]]
    arrays: list[np.ndarray | None] = [None] * len(manifest["weights"])
    unpacked: dict[int, np.ndarray] = {}
    for i, w in enumerate(manifest["weights"]):
        if "derive" in w:
            continue
        off, n = int(w["offset"]), int(w["nbytes"])
        unpacked[i] = unpack_codes(PackedCodes.from_meta(w, payload[off:off + n]))
        arrays[i] = apply_layout(unpacked[i], w.get("layout") or [])
    for i, w in enumerate(manifest["weights"]):
        if "derive" in w:
            arr = Derivation.from_json(w["derive"]).apply(unpacked[int(w["from"])])
            if list(arr.shape) != list(w["shape"]) or str(arr.dtype) != w["dtype"]:
                raise ArtifactError(f"{p}: derived input {w['name']!r} rebuilt as {arr.dtype}{list(arr.shape)}, "
                                    f"the manifest says {w['dtype']}{w['shape']}")
            arrays[i] = arr
    weights = [a for a, w in zip(arrays, manifest["weights"]) if w.get("main_param", True)]
    tmp = tempfile.mkdtemp(prefix="shiftcomp_load_")
    so = os.path.join(tmp, "lib.so")
    try:
        with open(so, "wb") as f:
            f.write(lib_bytes)
        with quiet_tvm():
            lib = tvm.runtime.load_module(so)
    finally:
        try:
            os.remove(so)
            os.rmdir(tmp)
        except OSError:
            pass
    return LoadedModel(p, manifest, lib, weights)

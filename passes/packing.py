"""Bit-packing of shift-weight codes for the artifact (numpy only, exact round trip).

A shift layer's weights reach the kernels as one ``int8`` *code* per weight (docs/numerics.md, Weights):
``code = sign * (shift - s0 + 1)``: 0 is a zero weight, ``|code| - 1`` the shift above the layer's
smallest shift ``s0``, ``sign(code)`` the sign.

Format (one layer):

* ``codebook``: the sorted distinct codes the layer actually uses (at most 255 int8 values).
* ``bits = ceil(log2(len(codebook)))`` (0 when the layer uses a single code).
* ``data``: every weight's *symbol* (its index in ``codebook``), written as a little-endian bit stream
  of ``bits`` bits per weight in C order (weight ``i`` occupies stream bits ``[i*bits, (i+1)*bits)``,
  LSB first; byte ``j`` holds stream bits ``[8j, 8j+8)``, LSB first), padded with zero bits to a whole
  byte. No word alignment: a layer of ``n`` weights takes exactly ``ceil(n*bits/8)`` bytes.

How many bits? With ``weight_bits = b``:

* PS mode, range ``[-(2**(b-1)-2), 0]``: ``2**(b-1)-1`` magnitudes x 2 signs + zero = ``2**b - 1``
  symbols -> at most ``b`` bits.
* Q mode, range ``[-(2**(b-1)-1), 0]``: ``2**(b-1)`` magnitudes x 2 signs = ``2**b`` symbols -> ``b``
  bits; a layer that *also* has an exact 0.0 weight has ``2**b + 1`` symbols -> ``b + 1`` bits.
* A layer that uses fewer codes than its format allows gets fewer bits (e.g. 5-bit weights that only
  use 8 distinct values take 3 bits).

So at ``weight_bits = 5`` a layer costs 5 bits per weight (6 in the Q-with-zeros case) plus a
codebook of at most 33 bytes: 5/32 = 0.156 of float32.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["PackedCodes", "pack_codes", "unpack_codes", "bits_needed"]


@dataclasses.dataclass(frozen=True)
class PackedCodes:
    """One layer's weight codes, bit-packed.

    Attributes:
        shape: shape of the int8 code array (the kernel's weight layout).
        bits: bits per weight, 0..8.
        codebook: the distinct codes used, ascending; symbol ``i`` stands for ``codebook[i]``.
        data: the bit stream, ``ceil(prod(shape) * bits / 8)`` bytes.
    """

    shape: tuple[int, ...]
    bits: int
    codebook: tuple[int, ...]
    data: bytes

    @property
    def count(self) -> int:
        """Number of weights."""
        return int(math.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes this layer's weights take in the artifact (bit stream + codebook)."""
        return len(self.data) + len(self.codebook)

    def meta(self) -> dict[str, Any]:
        """JSON-serialisable description (everything but ``data``)."""
        return {"shape": list(self.shape), "bits": self.bits, "codebook": list(self.codebook),
                "nbytes": len(self.data)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], data: bytes) -> "PackedCodes":
        """Inverse of :meth:`meta` (``data`` = the stored bit stream)."""
        if len(data) != int(meta["nbytes"]):
            raise ValueError(f"packed weight stream has {len(data)} bytes, expected {meta['nbytes']}")
        return cls(tuple(int(d) for d in meta["shape"]), int(meta["bits"]),
                   tuple(int(c) for c in meta["codebook"]), bytes(data))


def bits_needed(num_symbols: int) -> int:
    """Bits to index ``num_symbols`` distinct symbols (0 for a single symbol)."""
    if num_symbols < 1:
        raise ValueError("need at least one symbol")
    return (num_symbols - 1).bit_length()


def pack_codes(codes: np.ndarray) -> PackedCodes:
    """Pack an int8 code array (any shape) into a :class:`PackedCodes` (exact, see module doc)."""
    codes = np.asarray(codes)
    if codes.dtype != np.int8:
        raise TypeError(f"weight codes must be int8, got {codes.dtype}")
    flat = codes.reshape(-1)
    if flat.size == 0:
        return PackedCodes(tuple(codes.shape), 0, (0,), b"")
    codebook, symbols = np.unique(flat, return_inverse=True)
    bits = bits_needed(len(codebook))
    if bits == 0:
        data = b""
    else:
        sym = symbols.astype(np.uint16).reshape(-1, 1)
        bitplanes = ((sym >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8)  # (n, bits)
        data = np.packbits(bitplanes.reshape(-1), bitorder="little").tobytes()
    return PackedCodes(tuple(int(d) for d in codes.shape), bits,
                       tuple(int(c) for c in codebook), data)


def unpack_codes(packed: PackedCodes) -> np.ndarray:
    """Inverse of :func:`pack_codes`: the int8 code array of shape ``packed.shape``."""
    n = packed.count
    book = np.asarray(packed.codebook, dtype=np.int8)
    if packed.bits == 0:
        if len(book) != 1 and n:
            raise ValueError("0-bit packing needs a one-entry codebook")
        return np.full(packed.shape, book[0] if n else 0, dtype=np.int8)
    need = (n * packed.bits + 7) // 8
    if len(packed.data) < need:
        raise ValueError(f"packed weight stream too short: {len(packed.data)} < {need} bytes")
    raw = np.frombuffer(packed.data, dtype=np.uint8)
    planes = np.unpackbits(raw, count=n * packed.bits, bitorder="little").reshape(n, packed.bits)
    sym = (planes.astype(np.uint16) << np.arange(packed.bits, dtype=np.uint16)).sum(axis=1)
    if sym.size and int(sym.max()) >= len(book):
        raise ValueError("packed weight stream refers past the end of its codebook")
    return book[sym].reshape(packed.shape)

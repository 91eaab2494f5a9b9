"""Low-rank decomposition of a trained model's conv and linear layers, and the way back (torchao-style, in place).

Training by decomposition: train the original network for a few epochs, replace each layer by a chain of
smaller layers built from a low-rank factorisation of its trained weight, continue training the thinner
network (cheaper epochs), and optionally multiply the factors back into the original layers for the last
epochs. ``decompose(model, DecomposeConfig(...))`` does the replacement and returns a per-layer report;
``recompose(model)`` undoes it.

Factorisations (each factor is an ordinary ``nn.Conv2d``/``nn.Linear``, so ``shiftcomp.convert`` later turns
them into shift layers like any other):

* ``"tucker"`` (conv k×k, Tucker-2 over the output/input channel modes, TensorLy ``partial_tucker``):
  ``1×1 (C→r1) → k×k (r1→r2, original stride/padding/dilation) → 1×1 (r2→O, original bias)``.
* ``"cp"`` (conv k×k, CP of rank R, TensorLy ``parafac``):
  ``1×1 (C→R) → k×1 depthwise → 1×k depthwise → 1×1 (R→O, original bias)``; the stride, padding and
  dilation are split between the two depthwise convs by axis.
* ``"svd"`` (conv k×k, truncated SVD of the ``O × (C·k·k)`` matrix): ``k×k (C→r) → 1×1 (r→O)``.
* every ``nn.Linear``, whatever the method: truncated SVD ``K→r→N``.

Rank: an ``int`` (clamped to the full rank), a ``float`` in ``(0, 1]`` (a fraction of the full rank), or
``"vbmf"``: empirical variational Bayesian matrix factorisation (EVBMF, Nakajima et al., JMLR 2013) of the
weight's unfoldings, which keeps the singular values that stand above the estimated noise level. Tucker
uses the output-mode unfolding for r2 and the input-mode one for r1; CP takes the larger of the two; SVD
uses the matrix itself. "Full rank" is ``min`` of the matrix sides for SVD, ``(C, O)`` for Tucker and
``max(C, O)`` for CP (a CP fraction scales that; an int CP rank may exceed it).

Left alone (and reported): grouped/depthwise convs, layers smaller than 2×2 channels, and layers whose
factorisation would not have fewer parameters than the original at the chosen rank. Needs the optional
``tensorly`` package (``pip install shiftcomp[decompose]``).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from shiftcomp.layer_selection import set_submodule

__all__ = ["DecomposeConfig", "DecomposedConv2d", "DecomposedLinear", "LayerReport", "DecomposeReport",
           "decompose", "recompose", "evbmf_rank", "decomposition_plan", "apply_plan", "METHODS"]

METHODS = ("tucker", "cp", "svd")


@dataclass
class DecomposeConfig:
    """How :func:`decompose` factorises layers.

    Attributes:
        method: conv factorisation, ``"tucker"``, ``"cp"`` or ``"svd"`` (linear layers always use SVD).
        rank: ``int`` >= 1, ``float`` fraction in ``(0, 1]`` of the full rank, or ``"vbmf"``.
        filter_fn: ``filter_fn(module, fqn) -> bool``; ``False`` leaves that layer alone (reported as skipped).
        cp_iters: ALS iterations for CP (TensorLy ``parafac`` ``n_iter_max``).
        seed: random state for the CP initialisation (deterministic by default).
        require_gain: leave a layer alone when its factorisation would not have fewer parameters (default
            True; False forces it, e.g. a full-rank factorisation that reproduces the layer exactly).
    """

    method: str = "tucker"
    rank: int | float | str = "vbmf"
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    cp_iters: int = 100
    seed: int = 0
    require_gain: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"DecomposeConfig.method must be one of {METHODS}, got {self.method!r}")
        r = self.rank
        if isinstance(r, str):
            if r != "vbmf":
                raise ValueError(f"DecomposeConfig.rank: the only named rank is 'vbmf', got {r!r}")
        elif isinstance(r, bool) or not isinstance(r, (int, float)):
            raise ValueError(f"DecomposeConfig.rank must be an int, a float fraction or 'vbmf', got {r!r}")
        elif isinstance(r, int) and r < 1:
            raise ValueError(f"DecomposeConfig.rank must be >= 1, got {r}")
        elif isinstance(r, float) and not 0.0 < r <= 1.0:
            raise ValueError(f"DecomposeConfig.rank as a fraction must lie in (0, 1], got {r}")
        if self.cp_iters < 1:
            raise ValueError(f"DecomposeConfig.cp_iters must be >= 1, got {self.cp_iters}")

    def to_dict(self) -> dict:
        """JSON-able form (``filter_fn`` is not serialisable and is dropped)."""
        return {"method": self.method, "rank": self.rank, "cp_iters": self.cp_iters, "seed": self.seed,
                "require_gain": self.require_gain}

    @classmethod
    def from_dict(cls, d: dict) -> "DecomposeConfig":
        return cls(method=d["method"], rank=d["rank"], cp_iters=d.get("cp_iters", 100), seed=d.get("seed", 0),
                   require_gain=d.get("require_gain", True))


# ------------------------------------------------------------------------------------------------ containers


class DecomposedConv2d(nn.Sequential):
    """A conv layer replaced by a chain of convs (its children); remembers the original layer's geometry.

    ``method`` is ``"tucker"``, ``"cp"`` or ``"svd"``; ``rank`` the rank(s) used. ``geometry`` holds the
    original ``nn.Conv2d`` constructor arguments, so :meth:`recompose` can rebuild it.
    """

    def __init__(self, layers: Sequence[nn.Module], method: str, rank: tuple[int, ...], geometry: dict) -> None:
        super().__init__(*layers)
        self.method = method
        self.rank = tuple(int(r) for r in rank)
        self.geometry = dict(geometry)

    def effective_weight(self) -> torch.Tensor:
        """The ``(O, C, kh, kw)`` weight the chain computes (the product of its factors)."""
        ws = [_float_weight(m) for m in self]
        if self.method == "tucker":
            first, core, last = ws
            return torch.einsum("ob,bahw,ac->ochw", last[:, :, 0, 0], core, first[:, :, 0, 0])
        if self.method == "cp":
            first, vert, horiz, last = ws
            return torch.einsum("or,rh,rw,rc->ochw", last[:, :, 0, 0], vert[:, 0, :, 0], horiz[:, 0, 0, :],
                                first[:, :, 0, 0])
        first, last = ws
        return torch.einsum("or,rchw->ochw", last[:, :, 0, 0], first)

    def recompose(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` equal to this chain (up to float rounding)."""
        g = self.geometry
        last = self[-1]
        w = self.effective_weight()
        conv = nn.Conv2d(g["in_channels"], g["out_channels"], g["kernel_size"], stride=g["stride"],
                         padding=g["padding"], dilation=g["dilation"], bias=last.bias is not None,
                         padding_mode=g["padding_mode"], device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            if last.bias is not None:
                conv.bias.copy_(last.bias)
        conv.train(self.training)
        return conv

    def extra_repr(self) -> str:
        return f"method={self.method!r}, rank={self.rank}"


class DecomposedLinear(nn.Sequential):
    """A linear layer replaced by ``Linear(K→r, no bias) → Linear(r→N, original bias)`` (truncated SVD)."""

    def __init__(self, layers: Sequence[nn.Module], rank: tuple[int, ...], geometry: dict) -> None:
        super().__init__(*layers)
        self.method = "svd"
        self.rank = tuple(int(r) for r in rank)
        self.geometry = dict(geometry)

    def effective_weight(self) -> torch.Tensor:
        first, last = (_float_weight(m) for m in self)
        return last @ first

    def recompose(self) -> nn.Linear:
        """A plain ``nn.Linear`` equal to this chain (up to float rounding)."""
        g = self.geometry
        last = self[-1]
        w = self.effective_weight()
        lin = nn.Linear(g["in_features"], g["out_features"], bias=last.bias is not None, device=w.device,
                        dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            if last.bias is not None:
                lin.bias.copy_(last.bias)
        lin.train(self.training)
        return lin

    def extra_repr(self) -> str:
        return f"method='svd', rank={self.rank}"


def _float_weight(m: nn.Module) -> torch.Tensor:
    if type(m) not in (nn.Conv2d, nn.Linear):
        raise TypeError(f"recompose needs float nn.Conv2d/nn.Linear factors, found {type(m).__name__}: "
                        f"recompose before shiftcomp.convert, not after")
    return m.weight.detach()


# ---------------------------------------------------------------------------------------------------- report


@dataclass
class LayerReport:
    """What :func:`decompose` did to one layer.

    ``macs_*`` are multiply-accumulates per output position (a strided conv's leading 1×1 runs on
    ``stride_h·stride_w`` input positions per output position). ``rel_error`` is
    ``‖W − Ŵ‖_F / ‖W‖_F`` of the factorised weight. Skipped layers carry ``reason`` and no rank.
    """

    name: str
    kind: str                      # "conv" | "linear"
    method: str | None
    rank: tuple[int, ...] | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    rel_error: float | None
    reason: str | None = None

    @property
    def decomposed(self) -> bool:
        return self.reason is None

    @property
    def param_reduction(self) -> float:
        """``params_before / params_after`` (1.0 for a skipped layer)."""
        return self.params_before / self.params_after if self.params_after else math.inf

    @property
    def mac_reduction(self) -> float:
        return self.macs_before / self.macs_after if self.macs_after else math.inf


@dataclass
class DecomposeReport:
    """Per-layer :class:`LayerReport` list, with totals over the conv/linear layers considered."""

    layers: list[LayerReport] = field(default_factory=list)

    @property
    def decomposed(self) -> list[LayerReport]:
        return [r for r in self.layers if r.decomposed]

    @property
    def skipped(self) -> list[LayerReport]:
        return [r for r in self.layers if not r.decomposed]

    @property
    def params_before(self) -> int:
        return sum(r.params_before for r in self.layers)

    @property
    def params_after(self) -> int:
        return sum(r.params_after for r in self.layers)

    @property
    def param_reduction(self) -> float:
        return self.params_before / self.params_after if self.params_after else math.inf

    def to_rows(self) -> list[dict]:
        """One dict per layer (for CSV/JSON)."""
        return [{"layer": r.name, "kind": r.kind, "method": r.method or "",
                 "rank": "x".join(map(str, r.rank)) if r.rank else "", "params_before": r.params_before,
                 "params_after": r.params_after, "param_reduction": round(r.param_reduction, 4),
                 "mac_reduction": round(r.mac_reduction, 4),
                 "rel_error": "" if r.rel_error is None else round(r.rel_error, 6), "skipped": r.reason or ""}
                for r in self.layers]

    def __str__(self) -> str:
        head = f"{'layer':<28} {'method':<6} {'rank':<9} {'params':>17} {'x params':>8} {'x MACs':>7} {'rel err':>8}"
        lines = [head]
        for r in self.layers:
            if r.decomposed:
                lines.append(f"{r.name:<28} {r.method:<6} {'x'.join(map(str, r.rank)):<9} "
                             f"{r.params_before:>8}->{r.params_after:<8} {r.param_reduction:>8.2f} "
                             f"{r.mac_reduction:>7.2f} {r.rel_error:>8.4f}")
            else:
                lines.append(f"{r.name:<28} skipped: {r.reason}")
        lines.append(f"total: {len(self.decomposed)} decomposed, {len(self.skipped)} left alone; parameters "
                     f"{self.params_before} -> {self.params_after} ({self.param_reduction:.2f}x fewer)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ VBMF


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    return 0.5 * (x - (1 + alpha) + np.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))


def evbmf_rank(matrix: torch.Tensor | np.ndarray) -> int:
    """Rank kept by empirical VBMF (noise variance estimated too) for a 2-D ``matrix``.

    With ``L <= M`` the sides, ``alpha = L/M`` and singular values ``s_h``, EVBMF keeps the components with
    ``s_h > sqrt(M·σ²·(1+τ̄)(1+α/τ̄))``, ``τ̄ ≈ 2.5129·sqrt(α)``; ``σ²`` minimises the free energy
    ``Σ_{x_h ≤ x̄}(x_h − log x_h) + Σ_{x_h > x̄}(x_h − τ_h + log((τ_h+1)/x_h) + α log(τ_h/α + 1))
    + (L−H) log σ²`` over ``x_h = s_h²/(M σ²)``, bounded as in the paper.
    """
    from scipy.optimize import minimize_scalar

    y = np.asarray(matrix.detach().cpu().double() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"evbmf_rank needs a matrix, got shape {y.shape}")
    if y.shape[0] > y.shape[1]:
        y = y.T
    L, M = y.shape
    s = np.linalg.svd(y, compute_uv=False)
    if not np.any(s > 0):
        return 0
    H = L
    alpha = L / M
    tau_bar = 2.5129 * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    eh_ub = int(min(math.ceil(L / (1 + alpha)) - 1, H)) - 1
    upper = float(np.sum(s ** 2)) / (L * M)
    lower = max(s[eh_ub + 1] ** 2 / (M * x_bar), float(np.mean(s[eh_ub + 1:] ** 2)) / M)
    lower = max(lower, upper * 1e-12)

    def free_energy(sigma2: float) -> float:
        x = s ** 2 / (M * sigma2)
        big, small = x[x > x_bar], x[x <= x_bar]
        t = _tau(big, alpha)
        return float(np.sum(small - np.log(small)) + np.sum(big - t) + np.sum(np.log((t + 1) / big))
                     + alpha * np.sum(np.log(t / alpha + 1)) + (L - H) * math.log(sigma2))

    sigma2 = minimize_scalar(free_energy, bounds=(lower, upper), method="bounded").x if upper > lower else upper
    threshold = math.sqrt(M * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return int(np.sum(s > threshold))


# ------------------------------------------------------------------------------------------------- decompose


def _resolve(rank: int | float | str, full: int, vbmf: Callable[[], int], clamp: bool = True) -> int:
    """An int rank >= 1 from the spec; ``full`` scales fractions and (``clamp``) bounds the result."""
    if rank == "vbmf":
        r = vbmf()
    elif isinstance(rank, float):
        r = round(rank * full)
    else:
        r = rank
    return int(min(max(r, 1), full) if clamp else max(r, 1))


def _conv_geometry(m: nn.Conv2d) -> dict:
    return {"in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": tuple(m.kernel_size),
            "stride": tuple(m.stride), "padding": m.padding if isinstance(m.padding, str) else tuple(m.padding),
            "dilation": tuple(m.dilation), "padding_mode": m.padding_mode}


def _conv(cin: int, cout: int, k: tuple[int, int], like: nn.Conv2d, *, stride=(1, 1), padding=(0, 0),
          dilation=(1, 1), groups: int = 1, bias: bool = False, weight: torch.Tensor | None) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias,
                     padding_mode=like.padding_mode if padding != (0, 0) else "zeros",
                     device=like.weight.device, dtype=like.weight.dtype)
    if weight is not None:
        with torch.no_grad():
            conv.weight.copy_(weight.reshape(conv.weight.shape))
    return conv


def _with_bias(conv: nn.Module, src: nn.Module) -> nn.Module:
    if src.bias is not None:
        with torch.no_grad():
            conv.bias.copy_(src.bias.detach())
    return conv


def _conv_rank(method: str, w: np.ndarray, rank) -> tuple[int, ...]:
    """The resolved rank of a conv factorisation: ``(r_in, r_out)`` for Tucker, ``(r,)`` otherwise."""
    O, C = w.shape[:2]
    out_unfolding = lambda: evbmf_rank(w.reshape(O, -1))  # noqa: E731
    in_unfolding = lambda: evbmf_rank(np.moveaxis(w, 1, 0).reshape(C, -1))  # noqa: E731
    if method == "tucker":
        return _resolve(rank, C, in_unfolding), _resolve(rank, O, out_unfolding)
    if method == "cp":
        # a CP rank may exceed the channel counts (the ints are not clamped)
        return (_resolve(rank, max(O, C), lambda: max(out_unfolding(), in_unfolding()), clamp=False),)
    return (_resolve(rank, min(O, w[0].size), out_unfolding),)


def _factors_tucker(w: np.ndarray, rank: tuple[int, ...], _cfg) -> list[np.ndarray]:
    from tensorly.decomposition import partial_tucker

    r_in, r_out = rank
    (core, (u_out, u_in)), _ = partial_tucker(w, rank=[r_out, r_in], modes=[0, 1], init="svd")
    return [u_in.T, core, u_out]


def _factors_cp(w: np.ndarray, rank: tuple[int, ...], cfg: DecomposeConfig) -> list[np.ndarray]:
    from tensorly.decomposition import parafac

    with warnings.catch_warnings():  # rank above a mode size: TensorLy pads the SVD init randomly (seeded)
        warnings.simplefilter("ignore", UserWarning)
        cp = parafac(w, rank=rank[0], init="svd", n_iter_max=cfg.cp_iters, random_state=cfg.seed)
    # ALS leaves each rank-one term's scale spread unevenly over its four vectors (and the weights); give every
    # vector the same norm, the 4th root of the term's magnitude, or SGD on the factors diverges
    factors = [np.asarray(f, dtype=np.float64) for f in cp.factors]
    norms = np.stack([np.linalg.norm(f, axis=0) for f in factors])           # (4, rank)
    magnitude = np.abs(np.asarray(cp.weights, dtype=np.float64)) * np.prod(norms, axis=0)
    target = magnitude ** 0.25
    sign = np.sign(np.asarray(cp.weights, dtype=np.float64))
    safe = np.where(norms > 0, norms, 1.0)
    f_out, f_in, f_v, f_h = (f / safe[i][None, :] * target[None, :] for i, f in enumerate(factors))
    return [f_in.T, f_v.T, f_h.T, f_out * sign[None, :]]


def _svd_factors(mat: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` with ``A @ B`` the best rank-``r`` approximation of ``mat`` (singular values split evenly)."""
    u, s, vt = np.linalg.svd(mat, full_matrices=False)
    root = np.sqrt(s[:r])
    return u[:, :r] * root[None, :], root[:, None] * vt[:r]


def _factors_svd(w: np.ndarray, rank: tuple[int, ...], _cfg) -> list[np.ndarray]:
    a, b = _svd_factors(w.reshape(w.shape[0], -1), rank[0])
    return [b, a]


_FACTORS = {"tucker": _factors_tucker, "cp": _factors_cp, "svd": _factors_svd}


def _conv_chain(m: nn.Conv2d, method: str, rank: tuple[int, ...],
                weights: Sequence[torch.Tensor] | None) -> list[nn.Conv2d]:
    """The factor convs of ``method`` for a conv shaped like ``m`` (stride/padding/dilation/bias from ``m``),
    holding ``weights`` (reshaped to each conv's weight shape), or freshly initialised ones when None."""
    if weights is None:
        weights = [None] * 4
    O, C = m.out_channels, m.in_channels
    kh, kw = m.kernel_size
    bias = m.bias is not None
    if method == "tucker":
        r_in, r_out = rank
        return [_conv(C, r_in, (1, 1), m, weight=weights[0]),
                _conv(r_in, r_out, (kh, kw), m, stride=m.stride, padding=m.padding, dilation=m.dilation,
                      weight=weights[1]),
                _conv(r_out, O, (1, 1), m, bias=bias, weight=weights[2])]
    if method == "cp":
        (r,) = rank
        (sh, sw), (dh, dw) = m.stride, m.dilation
        if isinstance(m.padding, str):
            pad_v = pad_h = m.padding
        else:
            pad_v, pad_h = (m.padding[0], 0), (0, m.padding[1])
        return [_conv(C, r, (1, 1), m, weight=weights[0]),
                _conv(r, r, (kh, 1), m, stride=(sh, 1), padding=pad_v, dilation=(dh, 1), groups=r, weight=weights[1]),
                _conv(r, r, (1, kw), m, stride=(1, sw), padding=pad_h, dilation=(1, dw), groups=r, weight=weights[2]),
                _conv(r, O, (1, 1), m, bias=bias, weight=weights[3])]
    (r,) = rank
    return [_conv(C, r, (kh, kw), m, stride=m.stride, padding=m.padding, dilation=m.dilation, weight=weights[0]),
            _conv(r, O, (1, 1), m, bias=bias, weight=weights[1])]


def _conv_cost(O: int, C: int, kh: int, kw: int, stride: tuple[int, int], method: str,
               rank: tuple[int, ...]) -> tuple[int, int]:
    """``(weight params, MACs per output position)`` of a factorised conv (biases are counted by the caller)."""
    s = stride[0] * stride[1]
    if method == "tucker":
        r_in, r_out = rank
        return C * r_in + r_in * r_out * kh * kw + r_out * O, C * r_in * s + r_in * r_out * kh * kw + r_out * O
    if method == "cp":
        (r,) = rank
        # the vertical depthwise conv runs on stride_w input columns per output position
        return C * r + r * (kh + kw) + r * O, C * r * s + r * kh * stride[1] + r * kw + r * O
    (r,) = rank
    return C * kh * kw * r + r * O, C * kh * kw * r + r * O


def _rel_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    w, w_hat = w.detach().double(), w_hat.detach().double()
    norm = float(torch.linalg.vector_norm(w))
    return float(torch.linalg.vector_norm(w - w_hat)) / norm if norm else 0.0


def _decompose_conv(name: str, m: nn.Conv2d, cfg: DecomposeConfig) -> tuple[nn.Module | None, LayerReport]:
    O, C, kh, kw = m.weight.shape
    bias = O if m.bias is not None else 0
    p0, macs0 = O * C * kh * kw + bias, O * C * kh * kw
    skip = lambda why: (None, LayerReport(name, "conv", None, None, p0, p0, macs0, macs0, None, why))  # noqa: E731
    if m.groups != 1:
        return skip(f"grouped conv (groups={m.groups})")
    if min(O, C) < 2:
        return skip(f"too small to gain ({C}->{O} channels)")
    method = cfg.method
    if method == "cp" and kh == 1 and kw == 1:
        method = "tucker"  # a 1x1 conv is a matrix: CP's depthwise stages would be size-1 scalings
    w = m.weight.detach().double().cpu().numpy()
    rank = _conv_rank(method, w, cfg.rank)
    p1, macs1 = _conv_cost(O, C, kh, kw, tuple(m.stride), method, rank)
    if cfg.require_gain and p1 + bias >= p0:
        return skip(f"no gain at rank {'x'.join(map(str, rank))} ({p1 + bias} >= {p0} parameters)")
    weights = [torch.from_numpy(np.ascontiguousarray(f)) for f in _FACTORS[method](w, rank, cfg)]
    new = DecomposedConv2d(_conv_chain(m, method, rank, weights), method, rank, _conv_geometry(m))
    _with_bias(new[-1], m)
    new.train(m.training)
    report = LayerReport(name, "conv", method, rank, p0, p1 + bias, macs0, macs1,
                         _rel_error(m.weight, new.effective_weight()))
    return new, report


def _decompose_linear(name: str, m: nn.Linear, cfg: DecomposeConfig) -> tuple[nn.Module | None, LayerReport]:
    N, K = m.weight.shape
    bias = N if m.bias is not None else 0
    p0 = N * K + bias
    skip = lambda why: (None, LayerReport(name, "linear", None, None, p0, p0, N * K, N * K, None, why))  # noqa: E731
    if min(N, K) < 2:
        return skip(f"too small to gain ({K}->{N} features)")
    w = m.weight.detach().double().cpu().numpy()
    r = _resolve(cfg.rank, min(N, K), lambda: evbmf_rank(w))
    if cfg.require_gain and r * (N + K) >= N * K:
        return skip(f"no gain at rank {r} ({r * (N + K) + bias} >= {p0} parameters)")
    a, b = _svd_factors(w, r)
    dev, dt = m.weight.device, m.weight.dtype
    first = nn.Linear(K, r, bias=False, device=dev, dtype=dt)
    last = nn.Linear(r, N, bias=m.bias is not None, device=dev, dtype=dt)
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(b))
        last.weight.copy_(torch.from_numpy(a))
    _with_bias(last, m)
    new = DecomposedLinear([first, last], (r,), {"in_features": K, "out_features": N})
    new.train(m.training)
    report = LayerReport(name, "linear", "svd", (r,), p0, r * (N + K) + bias, N * K, r * (N + K),
                         _rel_error(m.weight, new.effective_weight()))
    return new, report


def decompose(model: nn.Module, config: DecomposeConfig | None = None) -> DecomposeReport:
    """Replace the ``nn.Conv2d``/``nn.Linear`` layers of ``model`` by low-rank factor chains, in place.

    Args:
        model: a module *containing* the layers (a bare layer cannot be replaced in place: wrap it).
        config: :class:`DecomposeConfig` (default: Tucker, VBMF rank).

    Returns:
        a :class:`DecomposeReport` with one row per exact ``nn.Conv2d``/``nn.Linear`` considered (those already
        inside a decomposed chain are not considered again). The factors start from the trained weights; a
        layer registered under several names is replaced under all of them by one shared chain.

    Raises:
        ModuleNotFoundError: tensorly is not installed (``pip install shiftcomp[decompose]``).
        TypeError: ``model`` is itself a conv/linear layer, or ``config`` is not a DecomposeConfig.
    """
    if config is None:
        config = DecomposeConfig()
    if not isinstance(config, DecomposeConfig):
        raise TypeError(f"decompose: config must be a DecomposeConfig, got {type(config).__name__}")
    if type(model) in (nn.Conv2d, nn.Linear):
        raise TypeError("decompose works in place on a model that contains the layers; wrap the bare "
                        f"{type(model).__name__} (e.g. in nn.Sequential)")
    try:
        import tensorly  # noqa: F401
    except ImportError as e:
        raise ModuleNotFoundError("shiftcomp.decompose needs tensorly: pip install 'shiftcomp[decompose]'") from e

    with _blas_threads(torch.get_num_threads()):
        return _decompose(model, config)


@contextlib.contextmanager
def _blas_threads(n: int):
    """Cap NumPy's BLAS at ``n`` threads (torch's setting) while factorising: an unbounded OpenBLAS pool on a
    busy machine makes TensorLy's ALS many times slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def _decompose(model: nn.Module, config: DecomposeConfig) -> DecomposeReport:
    inside = {id(c) for m in model.modules() if isinstance(m, (DecomposedConv2d, DecomposedLinear))
              for c in m.modules()}
    report = DecomposeReport()
    replacement: dict[int, nn.Module] = {}
    for fqn, m in model.named_modules():
        if type(m) not in (nn.Conv2d, nn.Linear) or id(m) in inside:
            continue
        if config.filter_fn is not None and not config.filter_fn(m, fqn):
            w = m.weight.numel()
            n = w + (m.bias.numel() if m.bias is not None else 0)
            report.layers.append(LayerReport(fqn, "conv" if isinstance(m, nn.Conv2d) else "linear", None, None,
                                             n, n, w, w, None, "excluded by filter_fn"))
            continue
        fn = _decompose_conv if isinstance(m, nn.Conv2d) else _decompose_linear
        new, row = fn(fqn, m, config)
        report.layers.append(row)
        if new is not None:
            replacement[id(m)] = new
    for fqn, m in list(model.named_modules(remove_duplicate=False)):
        if fqn and id(m) in replacement:
            set_submodule(model, fqn, replacement[id(m)])
    return report


def recompose(model: nn.Module) -> nn.Module:
    """Multiply every decomposed chain in ``model`` back into one ``nn.Conv2d``/``nn.Linear``, in place.

    The rebuilt layer has the original type and geometry and the product of the (trained) factors as its
    weight, so its output equals the chain's up to float rounding. Returns ``model``.

    Raises:
        TypeError: a chain's factors are no longer float layers (recompose before ``shiftcomp.convert``).
    """
    if isinstance(model, (DecomposedConv2d, DecomposedLinear)):
        raise TypeError("recompose works in place on a model that contains decomposed layers; this is one: "
                        "call its .recompose() instead")
    chains = [(fqn, m) for fqn, m in model.named_modules(remove_duplicate=False)
              if fqn and isinstance(m, (DecomposedConv2d, DecomposedLinear))]
    done: dict[int, nn.Module] = {}
    for fqn, m in chains:
        if id(m) not in done:
            done[id(m)] = m.recompose()
        set_submodule(model, fqn, done[id(m)])
    return model


def decomposition_plan(model: nn.Module) -> dict[str, dict]:
    """``{fqn: {"method", "rank", "geometry"}}`` of the chains in ``model``: enough to rebuild the module tree
    (:func:`apply_plan`) before loading a decomposed model's ``state_dict``."""
    return {fqn: {"method": m.method, "rank": list(m.rank), "geometry": m.geometry}
            for fqn, m in model.named_modules() if isinstance(m, (DecomposedConv2d, DecomposedLinear))}


def apply_plan(model: nn.Module, plan: dict[str, dict]) -> nn.Module:
    """Replace the layers named in ``plan`` (from :func:`decomposition_plan`) by chains of the recorded shapes,
    with fresh weights (load the checkpoint's ``state_dict`` afterwards). Returns ``model``."""
    for fqn, p in plan.items():
        old = model.get_submodule(fqn)
        set_submodule(model, fqn, _empty_chain(old, p))
    return model


def _empty_chain(old: nn.Module, p: dict) -> nn.Module:
    method, rank, g = p["method"], tuple(p["rank"]), dict(p["geometry"])
    bias = old.bias is not None
    if isinstance(old, nn.Linear):
        (r,) = rank
        return DecomposedLinear([nn.Linear(g["in_features"], r, bias=False),
                                 nn.Linear(r, g["out_features"], bias=bias)], rank, g)
    if not isinstance(old, nn.Conv2d):
        raise ValueError(f"decomposition plan names a {type(old).__name__}, expected nn.Conv2d/nn.Linear")
    g["kernel_size"], g["stride"], g["dilation"] = (tuple(g[k]) for k in ("kernel_size", "stride", "dilation"))
    if not isinstance(g["padding"], str):
        g["padding"] = tuple(g["padding"])
    template = nn.Conv2d(g["in_channels"], g["out_channels"], g["kernel_size"], stride=g["stride"],
                         padding=g["padding"], dilation=g["dilation"], bias=bias, padding_mode=g["padding_mode"])
    return DecomposedConv2d(_conv_chain(template, method, rank, None), method, rank, g)

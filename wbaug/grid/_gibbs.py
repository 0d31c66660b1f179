"""Separable Gibbs-kernel convolutions on regular 2-D grids, in the log domain.

The entropic kernel of the squared Euclidean cost on a grid factorises over the axes,
``K((i, j), (k, l)) = K_H[i, k] * K_W[j, l]`` with ``K_n[i, k] = exp(-(t_i - t_k)^2 / reg)``, so applying it
to an ``(H, W)`` image costs two small matrix products, ``O(H W (H + W))``, instead of ``O((H W)^2)``
(Solomon et al. 2015, "Convolutional Wasserstein distances").

Three evaluation strategies are provided:

* ``"scaling"`` -- no logarithms at all: the Bregman iterations run on the scalings ``u = e^f``,
  ``v = e^g`` and :class:`SeparableConvolution` applies ``K`` itself as two matrix products (what POT's
  ``method="sinkhorn"`` does, minus its ``+1e-30``). Sums of non-negative terms are accurate to a few ulps
  as long as every kernel entry and every result ``K x`` is a normal number; the solver checks the latter
  on every iteration and, if a value ever leaves the safe range, resumes in the log domain from the last
  verified iterate (see :mod:`wbaug.grid.convolutional`). It is the fastest path by far: no
  ``exp``/``log`` per product, only ``O(K)`` elementwise passes per iteration.

and two for ``log(K exp(X))`` in the log domain:

* ``"kernel"`` -- *max-shifted matrix products*: along each axis ``log(K @ exp(X - m)) + m`` with ``m``
  the per-column maximum of ``X``. All summands are non-negative, so the result is accurate to a few
  ulps as long as the smallest kernel entry ``exp(-max_d2 / reg)`` and the shifted terms stay in the
  normal range of the compute dtype. The compute dtype is float32 when ``max_d2 / reg <= 60`` and
  float64 when ``max_d2 / reg <= 680`` (see :func:`select_method`).
* ``"log"`` -- exact for any ``reg``; used automatically when ``reg`` is too small for the shifted
  products. The kernel is cut into blocks within which it spreads by at most 600 e-folds (60 in float32),
  each applied by a shifted matrix product and combined with per-block shifts
  (:mod:`wbaug.grid._blocked`, two variants, the cheaper one per axis): ``O(n nb)`` instead of ``n^2``
  exponentials per column. Where no block of two fits (tiny ``reg``), a plain chunked ``logsumexp``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from wbaug.grid._blocked import BLOCK_RANGE, BlockedLogKernel, SplitBlockedLogKernel, exact_log_kernel

Units = Literal["normalized", "pixel"]
Method = Literal["auto", "scaling", "kernel", "log"]

#: Largest ``max_d2 / reg`` (the most negative log-kernel entry, negated) handled by the shifted
#: matrix products in float32 / float64. ``exp(-60)`` and ``exp(-680)`` stay ~20 e-folds above the
#: normal-number floor of each dtype, so summands dropped by underflow are < 1e-6 relative.
FLOAT32_LIMIT = 60.0
FLOAT64_LIMIT = 680.0
#: ``method="auto"`` tries the scaling domain first when ``max_d2 / reg`` is at most this (per compute
#: dtype): about half the dtype's exponent range, so the scalings (which span roughly ``e^{+-max_d2/reg}``)
#: usually fit and the range guard rarely has to fall back.
SCALING_AUTO_LIMIT = {torch.float32: 40.0, torch.float64: 350.0}
_CHUNK_ELEMENTS = 1 << 24


def axis_coordinates(n: int, units: Units, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Coordinates of ``n`` grid points: ``linspace(0, 1, n)`` (POT's convention) or ``0 .. n - 1``."""
    if units == "normalized":
        return torch.linspace(0.0, 1.0, n, dtype=dtype, device=device)
    return torch.arange(n, dtype=dtype, device=device)


def log_kernel_1d(n: int, reg: float, units: Units, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(n, n)`` log Gibbs kernel ``-(t_i - t_k)^2 / reg`` on one axis."""
    t = axis_coordinates(n, units, dtype=torch.float64, device=device)
    return (-((t[:, None] - t[None, :]) ** 2) / reg).to(dtype)


def max_exponent(size: tuple[int, int], reg: float, units: Units) -> float:
    """``max_d2 / reg``: the most negative log-kernel entry (negated) over both axes."""
    spans = [(1.0 if n > 1 else 0.0) if units == "normalized" else float(n - 1) for n in size]
    return max(spans) ** 2 / reg


def select_method(
    size: tuple[int, int], reg: float, units: Units, dtype: torch.dtype, device: torch.device, method: Method
) -> tuple[str, torch.dtype]:
    """Choose the convolution strategy and the compute dtype (the documented ``auto`` switch).

    ``auto`` picks ``kernel`` (max-shifted matrix products) in float32 when ``max_d2 / reg <= 60``
    and the input is at most float32, in float64 when ``max_d2 / reg <= 680`` (not on MPS, which has no
    float64), and the exact ``log`` path otherwise, in float64 where the device has it (its blocks are
    ~10x larger in float64, hence far faster, and it is more accurate). ``kernel`` forces the shifted
    products (float64 whenever float32 is not safe); ``log`` forces the exact path in the input's
    (float32 or wider) dtype.
    ``scaling`` resolves like ``auto`` here: this is the log-domain method a scaling-domain solve falls
    back to (see :func:`try_scaling_first`).
    """
    if method not in ("auto", "scaling", "kernel", "log"):
        raise ValueError(f"method must be 'auto', 'scaling', 'kernel' or 'log', got {method!r}")
    base = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    if method == "log":
        return "log", base
    e = max_exponent(size, reg, units)
    if base == torch.float32 and e <= FLOAT32_LIMIT:
        return "kernel", torch.float32
    has_f64 = device.type != "mps"
    if has_f64 and (e <= FLOAT64_LIMIT or method == "kernel"):
        return "kernel", torch.float64
    return "log", (torch.float64 if has_f64 else base)


def try_scaling_first(
    size: tuple[int, int], reg: float, units: Units, cdtype: torch.dtype, method: Method
) -> bool:
    """Whether a solver should start in the scaling domain (in ``cdtype``, see :func:`select_method`).

    ``method="scaling"`` asks for it whenever the kernel is representable (every entry a normal number
    of ``cdtype``, i.e. ``max_d2 / reg`` within :data:`FLOAT32_LIMIT` / :data:`FLOAT64_LIMIT`: the range
    guard's accuracy argument needs that); ``auto`` only up to :data:`SCALING_AUTO_LIMIT`.
    """
    if method not in ("auto", "scaling") or cdtype not in SCALING_AUTO_LIMIT:
        return False
    e = max_exponent(size, reg, units)
    limit = FLOAT32_LIMIT if cdtype == torch.float32 else FLOAT64_LIMIT
    return e <= (limit if method == "scaling" else SCALING_AUTO_LIMIT[cdtype])


class SeparableConvolution:
    """``K x = K_H @ x @ K_W`` for the separable Gibbs kernel of one grid (no logarithms).

    Both factors are symmetric, so ``(K x)^T = K_W @ (K_H @ x)^T``: two *left* products whose second
    operand is a transposed view, which BLAS reads without a copy. The scaling-domain solvers therefore
    keep some iterates transposed: :meth:`to_transposed` maps ``x`` to ``(K x)^T`` and
    :meth:`from_transposed` maps ``x^T`` to ``K x``, both returning contiguous tensors (measured ~10 %
    faster per application at 512² than ``K_H @ x @ K_W``, whose right product is the slow one).
    """

    def __init__(
        self, size: tuple[int, int], reg: float, units: Units, *, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.size = size
        self.kernels = [log_kernel_1d(n, reg, units, dtype=dtype, device=device).exp() for n in size]

    def to_transposed(self, x: Tensor) -> Tensor:
        """``(..., H, W) -> (..., W, H)``: ``(K x)^T``."""
        return torch.matmul(self.kernels[1], torch.matmul(self.kernels[0], x).transpose(-1, -2))

    def from_transposed(self, x_t: Tensor) -> Tensor:
        """``(..., W, H) -> (..., H, W)``: ``K x`` from ``x^T``."""
        return torch.matmul(self.kernels[0], torch.matmul(self.kernels[1], x_t).transpose(-1, -2))


def safe_range(dtype: torch.dtype) -> tuple[float, float]:
    """``(lo, hi)``: results of ``K x`` inside this range are accurate to a few ulps in ``dtype``.

    ``lo = tiny / eps``: a term that underflowed (subnormal or zero) carries an absolute error of at most
    ``tiny * eps``, i.e. ``eps^2`` relative to any result ``>= lo``, even summed over a whole grid.
    ``hi = max * eps`` leaves room for the solver's divisions and geometric means without overflow.
    """
    info = torch.finfo(dtype)
    return info.tiny / info.eps, info.max * info.eps


def guard_interval(device: torch.device, check_every: int) -> int:
    """Iterations between guard verdicts: a host sync is free on the CPU, so every iteration there (a
    hand-over then redoes nothing); on accelerators only with the stopping test."""
    return 1 if device.type == "cpu" else check_every


class RangeGuard:
    """Running extremes of the values a scaling-domain solve must keep in :func:`safe_range`.

    :meth:`watch` only launches device ops (no host sync); :meth:`ok` reads the verdict (one sync). NaN
    fails both comparisons, so it also ends the scaling domain. One guard per solve call.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.lo, self.hi = safe_range(dtype)
        self.seen_lo = torch.full((), float("inf"), dtype=dtype, device=device)
        self.seen_hi = torch.zeros((), dtype=dtype, device=device)

    def watch(self, *tensors: Tensor) -> None:
        for x in tensors:
            x_lo, x_hi = torch.aminmax(x)
            self.seen_lo = torch.minimum(self.seen_lo, x_lo)
            self.seen_hi = torch.maximum(self.seen_hi, x_hi)

    def ok(self) -> bool:
        return bool((self.seen_lo >= self.lo) & (self.seen_hi <= self.hi))


class SeparableLogConvolution:
    """Callable ``X (..., H, W) -> log(K exp(X))`` for the separable Gibbs kernel of one grid.

    Args:
        size: ``(H, W)``.
        reg: entropic regularisation ``> 0`` in the chosen ``units``.
        units: ``"normalized"`` (each axis spans ``[0, 1]``, POT's convention) or ``"pixel"``.
        method: ``"kernel"`` or ``"log"`` (already resolved, see :func:`select_method`).
        dtype, device: compute dtype and device.
    """

    def __init__(
        self,
        size: tuple[int, int],
        reg: float,
        units: Units,
        method: str,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.size = size
        self.method = method
        self.dtype = dtype
        self.log_kernels = [log_kernel_1d(n, reg, units, dtype=dtype, device=device) for n in size]
        self.kernels = [lk.exp() for lk in self.log_kernels] if method == "kernel" else None
        # "log": blocks of the kernel applied by matrix products (wbaug.grid._blocked) where that is
        # cheaper than the plain chunked logsumexp.
        self.blocked: list[BlockedLogKernel | SplitBlockedLogKernel | None] = [None, None]
        if method == "log" and dtype in BLOCK_RANGE:
            for axis, (n, lk) in enumerate(zip(size, self.log_kernels)):
                coords = axis_coordinates(n, units, dtype=dtype, device=device)
                self.blocked[axis] = exact_log_kernel(lk, coords, reg, BLOCK_RANGE[dtype])

    def _axis_kernel(self, x: Tensor, axis: int) -> Tensor:
        # log(K @ exp(x)) along dim -2, with a per-column shift so the exponentials stay in range.
        m = x.amax(dim=-2, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        s = torch.matmul(self.kernels[axis], torch.exp(x - m))
        return torch.log(s) + m

    def _axis_log(self, x: Tensor, axis: int) -> Tensor:
        # Exact logsumexp_k (LK[i, k] + x[..., k, l]) along dim -2, chunked over the last dim.
        blocked = self.blocked[axis]
        if blocked is not None:
            return blocked(x)
        lk = self.log_kernels[axis]
        n = lk.shape[0]
        lead = x.shape[:-2]
        cols = x.shape[-1]
        flat = x.reshape(-1, n, cols)
        per_col = n * n * max(1, flat.shape[0])
        step = max(1, _CHUNK_ELEMENTS // per_col)
        out = torch.empty_like(flat)
        for start in range(0, cols, step):
            block = flat[:, None, :, start : start + step] + lk[None, :, :, None]
            out[..., start : start + step] = torch.logsumexp(block, dim=2)
        return out.reshape(*lead, n, cols)

    def __call__(self, x: Tensor) -> Tensor:
        axis_fn = self._axis_kernel if self.method == "kernel" else self._axis_log
        y = axis_fn(x, 0)
        y = axis_fn(y.transpose(-1, -2), 1).transpose(-1, -2)
        return y


def safe_log(x: Tensor) -> Tensor:
    """``log(x)`` with exact ``-inf`` at zeros (no warnings, no NaN)."""
    return torch.where(x > 0, torch.log(x.clamp_min(torch.finfo(x.dtype).tiny)), -math.inf)

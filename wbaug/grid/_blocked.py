r"""Exact ``log(K exp(x))`` along one grid axis for *any* ``reg``, by blocks of the log kernel.

The plain log-sum-exp costs one ``exp`` per kernel entry and column (``n^2`` per column). When ``reg`` is
too small for the max-shifted matrix products of :mod:`wbaug.grid._gibbs` (kernel entries below the
dtype's range), the kernel can still be applied with matrix products *block by block*: split the axis
into ``nb`` blocks of ``s`` indices. For the block pair ``(I, J)`` let ``c_IJ`` be its largest log-kernel
entry and, per column ``l``, ``m_J(l) = max_{k in J} x[k, l]``. Then

.. math::
    \sum_k e^{LK_{ik} + x_{kl}} = \sum_J e^{c_{IJ} + m_J(l)} \sum_{k \in J} E_{IJ}[i, k]\, X_J[k, l],
    \qquad E_{IJ}[i, k] = e^{LK_{ik} - c_{IJ}}, \quad X_J[k, l] = e^{x_{kl} - m_J(l)},

with the inner sums ``Y_IJ = E_IJ @ X_J`` as a batched matrix product and the outer one a weighted sum
over ``J`` shifted by ``M_I(l) = max_J (c_IJ + m_J(l))``.

**Why it is exact.** Blocks are chosen so that the log kernel varies by at most ``R`` within every
block pair (``R = 600`` in float64, ``60`` in float32). Then ``E`` lies in ``[e^{-R}, 1]`` (normal
numbers), and the row's true largest term is at least ``e^{M_I - R}``: the maximiser ``k*`` of
``m_J`` has ``LK_{ik*} >= c_IJ - R``. A product ``E X`` or a block weight ``e^{c + m - M_I}`` that
underflows (below ``e^{-708}``, resp. ``e^{-87}``) is therefore at most ``e^{-108}`` (resp. ``e^{-27}``)
of the row's largest term: below the dtype's rounding. ``exp`` is evaluated ``nb^2`` times per column
instead of ``n^2``.

The farthest block pair spreads the most, so :class:`BlockedLogKernel`'s blocks shrink as the grid
grows; :class:`SplitBlockedLogKernel` moves the distance-dependent (linear) part of the exponent into
the shifts and keeps blocks as large as the blur allows on any grid. :func:`exact_log_kernel` picks the
cheaper of the two (or the plain log-sum-exp) per axis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Largest spread ``R`` of the log kernel inside one block pair, per dtype (see the module docstring).
BLOCK_RANGE = {torch.float32: 60.0, torch.float64: 600.0}
_CHUNK_ELEMENTS = 1 << 24


def block_spread(log_kernel: Tensor, s: int) -> float:
    """Largest ``max - min`` of the ``(n, n)`` log kernel over the ``s x s`` block pairs."""
    blocks = _blocks(log_kernel, s)
    finite = torch.isfinite(blocks)
    hi = torch.where(finite, blocks, -math.inf).amax(dim=(-1, -2))
    lo = torch.where(finite, blocks, math.inf).amin(dim=(-1, -2))
    return float((hi - lo).max())


def choose_block(log_kernel: Tensor, limit: float) -> int:
    """The largest block size whose spread is at most ``limit`` (binary search; ``s = 1`` always fits).

    The spread grows with ``s`` (the farthest block pair of a Gaussian log kernel spreads by about
    ``4 (s - 1)(n - s) h^2 / reg``); the size returned is always verified by :func:`block_spread`.
    """
    lo, hi = 1, log_kernel.shape[0]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if block_spread(log_kernel, mid) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _blocks(log_kernel: Tensor, s: int) -> Tensor:
    """``(nb, nb, s, s)`` view-copy of the log kernel padded with ``-inf`` to ``nb * s``."""
    n = log_kernel.shape[0]
    nb = -(-n // s)
    pad = nb * s - n
    padded = torch.nn.functional.pad(log_kernel, (0, pad, 0, pad), value=-math.inf)
    return padded.reshape(nb, s, nb, s).permute(0, 2, 1, 3)


class BlockedLogKernel:
    """``x (..., n, cols) -> log(K exp(x))`` along dim -2, exact for any ``reg`` (module docstring).

    Args:
        log_kernel: ``(n, n)`` log Gibbs kernel of one axis, in the compute dtype.
        block: block size ``s`` (see :func:`choose_block`).
    """

    def __init__(self, log_kernel: Tensor, block: int) -> None:
        self.n = log_kernel.shape[0]
        self.s = block
        self.nb = -(-self.n // block)
        blocks = _blocks(log_kernel, block)
        self.shift = blocks.amax(dim=(-1, -2))  # c_IJ, (nb, nb); every block holds a finite entry
        self.factors = torch.exp(blocks - self.shift[..., None, None])  # E_IJ, (nb, nb, s, s)

    def __call__(self, x: Tensor) -> Tensor:
        return _by_column_chunks(x, self.s, self.nb, 1, self._apply)

    def _apply(self, xb: Tensor) -> Tensor:
        # xb: (L, nb_J, s, c) -> (L, nb_I, s, c)
        m = xb.amax(dim=-2)  # m_J(l): (L, nb_J, c)
        inner = torch.exp(xb - _finite_or_zero(m)[:, :, None])  # X_J, zeros where x = -inf
        y = torch.matmul(self.factors, inner[:, None])  # (L, nb_I, nb_J, s, c)
        a = self.shift[None, :, :, None, None] + m[:, None, :, None]  # c_IJ + m_J(l): (L, I, J, 1, c)
        return _combine(a, y)


class SplitBlockedLogKernel:
    r"""Exact ``log(K exp(x))`` along dim -2 whose block size does not depend on the grid size.

    On a uniform axis ``t_i = t_0 + i h`` split the index into blocks of ``s`` with starts ``p_I``,
    offsets ``\delta_\alpha = \alpha h`` and block distance ``d = p_I - p_J``. Then

    .. math::
        -\frac{(t_i - t_k)^2}{\varepsilon} = \underbrace{-\frac{d^2}{\varepsilon}}_{C_{IJ}}
        \underbrace{- \frac{2 d \delta_\alpha}{\varepsilon}}_{r_{IJ}(\alpha)}
        + \underbrace{\frac{2 d \delta_\beta}{\varepsilon}}_{q_{IJ}(\beta)}
        \underbrace{- \frac{(\delta_\alpha - \delta_\beta)^2}{\varepsilon}}_{Q(\alpha, \beta)}.

    Only ``Q`` couples row and column, and it is the same for every block pair, with spread
    ``((s - 1) h)^2 / reg``: the linear terms go into the column shift
    ``m_IJ(l) = max_beta (q_IJ(beta) + x[p_J + beta, l])`` and the row weights, so ``s`` is set by the
    blur alone (``1 + sqrt(R reg) / h``) instead of by the farthest block pair as in
    :class:`BlockedLogKernel`. The exactness argument is the same (the row's largest term is at least
    ``e^{-R}`` of the shift); the price is ``2 n nb`` instead of ``nb^2`` exponentials per column, which
    pays off on large grids with small ``reg``.

    Args:
        coords: ``(n,)`` uniformly spaced axis coordinates (compute dtype).
        reg: entropic regularisation in the coordinates' units.
        block: block size ``s`` (see :func:`split_block`).
    """

    def __init__(self, coords: Tensor, reg: float, block: int) -> None:
        self.n = coords.shape[0]
        self.s = block
        self.nb = -(-self.n // block)
        h = float(coords[1] - coords[0]) if self.n > 1 else 1.0
        f64 = {"dtype": torch.float64, "device": coords.device}  # built in float64, then cast
        offsets = torch.arange(block, **f64) * h  # delta, (s,)
        starts = torch.arange(self.nb, **f64) * (block * h)
        d = starts[:, None] - starts[None, :]  # block distances (nb_I, nb_J); t_0 cancels
        self.const = (-(d**2) / reg).to(coords.dtype)  # C_IJ
        self.row = (-2.0 * d[..., None] * offsets / reg).to(coords.dtype)  # r_IJ(alpha), (nb, nb, s)
        self.col = (2.0 * d[..., None] * offsets / reg).to(coords.dtype)  # q_IJ(beta), (nb, nb, s)
        q = torch.exp(-((offsets[:, None] - offsets[None, :]) ** 2) / reg)
        self.factors = q.to(coords.dtype)  # exp(Q), (s, s)

    def __call__(self, x: Tensor) -> Tensor:
        # z and the products hold about twice the pair blocks' elements per column
        return _by_column_chunks(x, self.s, self.nb, 2, self._apply)

    def _apply(self, xb: Tensor) -> Tensor:
        # xb: (L, nb_J, s, c) -> (L, nb_I, s, c)
        z = self.col[None, :, :, :, None] + xb[:, None]  # q_IJ(beta) + x: (L, I, J, s_beta, c)
        m = z.amax(dim=3)  # (L, I, J, c)
        y = torch.matmul(self.factors, torch.exp(z - _finite_or_zero(m)[:, :, :, None]))  # (L, I, J, s, c)
        a = (self.const[..., None] + self.row)[None, ..., None] + m[:, :, :, None]  # (L, I, J, s, c)
        return _combine(a, y)


def _finite_or_zero(t: Tensor) -> Tensor:
    """Shifts that are ``-inf`` (all-``-inf`` input) become 0, so ``x - shift`` stays ``-inf``, not NaN."""
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


def _combine(a: Tensor, y: Tensor) -> Tensor:
    """``log sum_J exp(a_IJ) y_IJ`` over dim 2, shifted by ``max_J a``.

    ``a``: ``(L, I, J, s or 1, c)``, ``y``: ``(L, I, J, s, c)`` -> ``(L, I, s, c)``.
    """
    top = _finite_or_zero(a.amax(dim=2, keepdim=True))
    total = (torch.exp(a - top) * y).sum(dim=2)
    return torch.log(total) + top[:, :, 0]


def _by_column_chunks(x: Tensor, s: int, nb: int, factor: int, apply) -> Tensor:
    """Pad ``x (..., n, cols)`` to ``nb * s`` rows with ``-inf``, view it as ``(L, nb, s, cols)``, run
    ``apply`` on column chunks of at most ``_CHUNK_ELEMENTS / (factor L nb^2 s)`` columns, crop back."""
    n, cols = x.shape[-2], x.shape[-1]
    flat = x.reshape(-1, n, cols)
    padded = torch.nn.functional.pad(flat, (0, 0, 0, nb * s - n), value=-math.inf)
    xb = padded.reshape(flat.shape[0], nb, s, cols)
    out = torch.empty_like(xb)
    step = max(1, _CHUNK_ELEMENTS // max(1, factor * flat.shape[0] * nb * nb * s))
    for start in range(0, cols, step):
        out[..., start : start + step] = apply(xb[..., start : start + step])
    return out.reshape(flat.shape[0], nb * s, cols)[:, :n].reshape(x.shape)


def split_block(n: int, h: float, reg: float, limit: float) -> int:
    """Largest ``s <= n`` with ``((s - 1) h)^2 / reg <= limit`` (the spread of ``Q``)."""
    if h <= 0:
        return n
    return max(1, min(n, 1 + int(math.floor(math.sqrt(limit * reg) / h + 1e-9))))


def exact_log_kernel(
    log_kernel: Tensor, coords: Tensor, reg: float, limit: float
) -> BlockedLogKernel | SplitBlockedLogKernel | None:
    """The cheapest exact evaluator for one axis, or ``None`` for the plain log-sum-exp.

    Estimated work per column, counting an ``exp`` as 10 elementwise operations: plain
    ``10 n^2``; :class:`BlockedLogKernel` ``10 (n + nb^2) + 3 nb^2 s``; :class:`SplitBlockedLogKernel`
    ``25 n nb`` (its blocks hold ``n nb`` entries, two ``exp`` and a few operations each).
    """
    n = log_kernel.shape[0]
    h = float(coords[1] - coords[0]) if n > 1 else 0.0
    candidates: list[tuple[float, int, BlockedLogKernel | SplitBlockedLogKernel | None]] = [
        (10.0 * n * n, 0, None)
    ]
    s = choose_block(log_kernel, limit)
    if s >= 2:
        nb = -(-n // s)
        candidates.append((10.0 * (n + nb * nb) + 3.0 * nb * nb * s, 1, None))
    s_split = split_block(n, h, reg, limit)
    if s_split >= 2:
        candidates.append((25.0 * n * -(-n // s_split), 2, None))
    _, kind, _ = min(candidates, key=lambda c: (c[0], c[1]))
    if kind == 1:
        return BlockedLogKernel(log_kernel, s)
    if kind == 2:
        return SplitBlockedLogKernel(coords, reg, s_split)
    return None

r"""Exact Wasserstein distances and optimal couplings between point clouds.

For discrete measures :math:`\mu = \sum_i a_i \delta_{x_i}` and :math:`\nu = \sum_j b_j \delta_{y_j}`,

.. math::
    W_p(\mu, \nu) = \Big(\min_{T \in \Pi(a, b)} \sum_{ij} T_{ij} \lVert x_i - y_j \rVert^p\Big)^{1/p},
    \qquad \Pi(a, b) = \{T \ge 0 : T\mathbf 1 = a,\ T^\top \mathbf 1 = b\}.

With uniform weights and ``N == M`` the optimum is attained at a permutation (Birkhoff--von Neumann),
so the problem is a linear assignment, solved exactly; other cases use POT's exact network simplex.
The value is differentiable in the positions: the optimal coupling is computed without autograd and the
cost :math:`\sum T^\star_{ij} C_{ij}(x, y)` is evaluated with torch, which gives the envelope-theorem
gradient (Danskin).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from wbaug.ot._validation import as_points, as_simplex, check_p, check_positive_int
from wbaug.ot.assignment import (
    batched_emd,
    exact_cost_matrix,
    ground_cost_unchecked,
    matched_assignment,
    run_chunked,
)

__all__ = ["WassersteinDistance", "pairwise_wasserstein", "transport_plan", "wasserstein_distance"]


def _safe_root(value: Tensor, p: float) -> Tensor:
    """``value ** (1 / p)`` with a zero (sub)gradient where ``value == 0`` instead of inf/NaN."""
    if p == 1.0:
        return value
    tiny = torch.finfo(value.dtype).tiny
    return torch.where(value > 0, value.clamp_min(tiny).pow(1.0 / p), torch.zeros_like(value))


def _prepare(x: object, y: object, a: object, b: object, p: object):
    p = check_p(p)
    x = as_points(x, "x")
    y = as_points(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x and y must have the same point dimension D, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
    try:
        batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    except RuntimeError as err:
        raise ValueError(
            f"batch shapes of x {tuple(x.shape[:-2])} and y {tuple(y.shape[:-2])} do not broadcast"
        ) from err
    dtype = torch.promote_types(x.dtype, y.dtype)
    n, m, d = x.shape[-2], y.shape[-2], x.shape[-1]
    x = x.to(dtype).expand(*batch, n, d)
    y = y.to(dtype).expand(*batch, m, d)
    weights = []
    for name, w, size in (("a", a, n), ("b", b, m)):
        if w is None:
            weights.append(None)
            continue
        w = as_simplex(w, name, None, like=x)
        if w.ndim == 0 or w.shape[-1] != size:
            raise ValueError(
                f"{name} must have shape (..., {size}) matching the points, got {tuple(w.shape)}"
            )
        try:
            w = w.expand(*batch, size)
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(w.shape)} does not broadcast to {(*batch, size)}"
            ) from err
        weights.append(w)
    return x, y, weights[0], weights[1], p, batch


def _uniform_weights(size: int, num: int, like: Tensor) -> Tensor:
    return torch.full((num, size), 1.0 / size, dtype=like.dtype, device=like.device)


def _optimal_coupling(x: Tensor, y: Tensor, a: Tensor | None, b: Tensor | None, p: float):
    """Flattened inputs ``(P, N, D)``, ``(P, M, D)``: return ``("perm", sigma (P, N))`` or ``("plan", T)``."""
    num, n, m = x.shape[0], x.shape[1], y.shape[1]
    if a is None and b is None and n == m:
        x64 = np.ascontiguousarray(x.detach().to(torch.float64).cpu().numpy())
        y64 = np.ascontiguousarray(y.detach().to(torch.float64).cpu().numpy())
        sigma = matched_assignment(x64, y64, p=p)
        return "perm", torch.from_numpy(sigma).to(x.device)
    cost = exact_cost_matrix(x, y, p)
    a_np = (a if a is not None else _uniform_weights(n, num, x)).detach().to(torch.float64).cpu().numpy()
    b_np = (b if b is not None else _uniform_weights(m, num, y)).detach().to(torch.float64).cpu().numpy()
    plan = batched_emd(a_np, b_np, cost)
    return "plan", torch.from_numpy(plan).to(device=x.device, dtype=x.dtype)


def wasserstein_distance(
    x: Tensor, y: Tensor, *, a: Tensor | None = None, b: Tensor | None = None, p: float = 2
) -> Tensor:
    r"""Exact Wasserstein distance :math:`W_p` between batches of point clouds.

    .. math::
        W_p(\mu, \nu) = \Big(\min_{T \in \Pi(a, b)} \sum_{ij} T_{ij} \lVert x_i - y_j \rVert_2^p\Big)^{1/p}

    Uniform weights on clouds of equal size are solved as an assignment problem (exact); other weights or
    sizes use POT's exact network simplex. The result is differentiable in ``x`` and ``y`` (the coupling is
    held fixed, which is the exact gradient wherever the optimal coupling is unique; at ``W = 0`` the
    gradient is taken as zero).

    Args:
        x: ``(..., N, D)`` points of the first clouds (``D = 2`` or ``3``, any ``D >= 1`` works).
        y: ``(..., M, D)`` points; batch shape broadcastable with ``x``.
        a: optional ``(..., N)`` non-negative weights of ``x`` summing to one (default uniform).
        b: optional ``(..., M)`` weights of ``y`` (default uniform).
        p: ground-cost exponent ``>= 1``.

    Returns:
        ``(...)`` distances :math:`W_p` (not their ``p``-th power), in the promoted dtype of ``x``, ``y``.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> y = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
        >>> wasserstein_distance(x, y)
        tensor(1.)

    Reference: Peyré & Cuturi, "Computational Optimal Transport" (2019), ch. 2-3; used as the metric of
    the landmark space in Bespalov et al., "Data augmentation with manifold barycenters", sec. 3.1.
    """
    x, y, a, b, p, batch = _prepare(x, y, a, b, p)
    n, m, d = x.shape[-2], y.shape[-2], x.shape[-1]
    xf, yf = x.reshape(-1, n, d), y.reshape(-1, m, d)
    if xf.shape[0] == 0:
        return x.new_zeros(batch)
    af = a.reshape(-1, n) if a is not None else None
    bf = b.reshape(-1, m) if b is not None else None
    kind, coupling = _optimal_coupling(xf, yf, af, bf, p)
    if kind == "perm":
        matched = yf.gather(1, coupling.unsqueeze(-1).expand(-1, -1, d))
        value = ground_cost_unchecked(xf.unsqueeze(-2), matched.unsqueeze(-2), p)[..., 0, 0].mean(-1)
    else:
        value = (coupling * ground_cost_unchecked(xf, yf, p)).sum((-2, -1))
    return _safe_root(value, p).reshape(batch)


def transport_plan(
    x: Tensor, y: Tensor, *, a: Tensor | None = None, b: Tensor | None = None, p: float = 2
) -> Tensor:
    r"""Exact optimal coupling :math:`T^\star \in \Pi(a, b)` between batches of point clouds.

    .. math::
        T^\star = \arg\min_{T \ge 0,\ T\mathbf 1 = a,\ T^\top\mathbf 1 = b}
        \sum_{ij} T_{ij}\lVert x_i - y_j\rVert^p

    With uniform weights and ``N == M`` it is a permutation matrix divided by ``N``.

    Args:
        x: ``(..., N, D)`` points.
        y: ``(..., M, D)`` points (batch shape broadcastable with ``x``).
        a: optional ``(..., N)`` weights of ``x`` (default uniform ``1/N``).
        b: optional ``(..., M)`` weights of ``y`` (default uniform ``1/M``).
        p: ground-cost exponent ``>= 1``.

    Returns:
        ``(..., N, M)`` coupling whose rows sum to ``a`` and columns to ``b``. It is piecewise constant in
        the positions and carries no gradient.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> transport_plan(x, x.flip(0))
        tensor([[0.0000, 0.5000],
                [0.5000, 0.0000]])

    Reference: Peyré & Cuturi, "Computational Optimal Transport" (2019), sec. 3.
    """
    x, y, a, b, p, batch = _prepare(x, y, a, b, p)
    n, m, d = x.shape[-2], y.shape[-2], x.shape[-1]
    xf, yf = x.reshape(-1, n, d), y.reshape(-1, m, d)
    if xf.shape[0] == 0:
        return x.new_zeros((*batch, n, m))
    af = a.reshape(-1, n) if a is not None else None
    bf = b.reshape(-1, m) if b is not None else None
    kind, coupling = _optimal_coupling(xf, yf, af, bf, p)
    if kind == "perm":
        plan = xf.new_zeros((xf.shape[0], n, m))
        plan.scatter_(2, coupling.unsqueeze(-1), 1.0 / n)
    else:
        plan = coupling
    return plan.detach().reshape(*batch, n, m)


def _pair_chunks(num: int, chunk_size: int):
    """Yield ``(i, j)`` index arrays covering the pairs ``i < j`` row by row, about ``chunk_size`` at a time,
    without materialising all ``num (num - 1) / 2`` pairs."""
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    count = 0
    for i in range(num - 1):
        j = np.arange(i + 1, num)
        while j.size:
            take = j[: chunk_size - count]
            rows.append(np.full(take.size, i))
            cols.append(take)
            count += take.size
            j = j[take.size :]
            if count == chunk_size:
                yield np.concatenate(rows), np.concatenate(cols)
                rows, cols, count = [], [], 0
    if count:
        yield np.concatenate(rows), np.concatenate(cols)


def _pairwise_equal(clouds: np.ndarray, p: float, chunk_size: int, out: np.ndarray, bar) -> None:
    for i, j in _pair_chunks(clouds.shape[0], chunk_size):
        x, y = clouds[i], clouds[j]
        sigma = matched_assignment(x, y, p=p)
        matched = np.take_along_axis(y, sigma[:, :, None], axis=1)
        sq = ((x - matched) ** 2).sum(-1)
        value = (sq if p == 2.0 else sq ** (p / 2.0)).mean(-1)
        out[i, j] = value
        out[j, i] = value
        if bar is not None:
            bar.update(i.size)


def _pairwise_ragged(
    clouds: list[np.ndarray], weights: list[np.ndarray], p: float, chunk_size: int, out: np.ndarray, bar
) -> None:
    import ot  # imported where used: keeps `import wbaug` light

    for i, j in _pair_chunks(len(clouds), chunk_size):
        value = np.empty(i.size)

        def solve(lo: int, hi: int, i=i, j=j, value=value) -> None:
            for k in range(lo, hi):
                x, y = clouds[i[k]], clouds[j[k]]
                cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
                if p != 2.0:
                    cost = cost ** (p / 2.0)
                value[k] = ot.emd2(weights[i[k]], weights[j[k]], cost, numItermax=1_000_000)

        run_chunked(solve, i.size)
        out[i, j] = value
        out[j, i] = value
        if bar is not None:
            bar.update(i.size)


def pairwise_wasserstein(
    clouds: Tensor | Sequence[Tensor],
    *,
    p: float = 2,
    weights: Sequence[Tensor] | Tensor | None = None,
    chunk_size: int = 16384,
    progress: bool = False,
) -> Tensor:
    r"""Matrix of exact Wasserstein distances :math:`W_p(\mu_i, \mu_j)` between ``M`` point clouds.

    Only the ``M (M - 1) / 2`` pairs ``i < j`` are solved, ``chunk_size`` at a time: besides the ``(M, M)``
    result, peak memory is ``O(chunk_size N D)`` plus small per-thread blocks of cost matrices, so
    ``M = 10 000`` clouds of 68 points need about the 400 MB of a float32 result. The matrix is symmetric
    with an exact zero diagonal. Clouds of equal size with uniform weights are assignment problems; ragged
    clouds (a list) or explicit ``weights`` use POT's network simplex.

    Args:
        clouds: ``(M, N, D)`` tensor, or a list of ``M`` tensors ``(N_i, D)`` with a common ``D``.
        p: ground-cost exponent ``>= 1``.
        weights: optional point weights, ``(M, N)`` or a list of ``(N_i,)`` simplex vectors (default uniform).
        chunk_size: number of pairs solved per batch.
        progress: show a ``tqdm`` progress bar over pairs.

    Returns:
        ``(M, M)`` tensor of distances in the dtype and on the device of the clouds (no autograd; use
        :func:`wasserstein_distance` for gradients).

    Example:
        >>> clouds = torch.randn(10, 68, 2, generator=torch.Generator().manual_seed(0))
        >>> pairwise_wasserstein(clouds).shape
        torch.Size([10, 10])

    Reference: Bespalov et al., "Data augmentation with manifold barycenters", Algorithm 2 (the
    neighbourhood graph is built on these distances).
    """
    p = check_p(p)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if isinstance(clouds, np.ndarray):
        clouds = torch.from_numpy(clouds)
    if isinstance(clouds, Tensor):
        clouds = as_points(clouds, "clouds", min_rank=3)
        if clouds.ndim != 3:
            raise ValueError(f"clouds must have shape (M, N, D), got {tuple(clouds.shape)}")
        cloud_list = None
    elif isinstance(clouds, (list, tuple)):
        if len(clouds) == 0:
            raise ValueError("clouds must contain at least one cloud")
        cloud_list = [as_points(c, f"clouds[{k}]") for k, c in enumerate(clouds)]
        for k, c in enumerate(cloud_list):
            if c.ndim != 2:
                raise ValueError(f"clouds[{k}] must have shape (N_i, D), got {tuple(c.shape)}")
            if c.shape[-1] != cloud_list[0].shape[-1]:
                raise ValueError(
                    f"clouds[{k}] has dimension {c.shape[-1]}, clouds[0] has {cloud_list[0].shape[-1]}"
                )
            if c.device != cloud_list[0].device:
                raise ValueError(f"clouds[{k}] is on {c.device}, clouds[0] on {cloud_list[0].device}")
        dtype = cloud_list[0].dtype
        for c in cloud_list[1:]:
            dtype = torch.promote_types(dtype, c.dtype)
        cloud_list = [c.to(dtype) for c in cloud_list]
        if weights is None and len({c.shape[0] for c in cloud_list}) == 1:
            clouds, cloud_list = torch.stack(cloud_list), None
    else:
        raise TypeError(
            f"clouds must be a tensor (M, N, D) or a list of (N_i, D) tensors, got {type(clouds).__name__}"
        )

    if cloud_list is None and weights is not None:
        cloud_list = list(clouds.unbind(0))
    like = clouds if cloud_list is None else cloud_list[0]
    num = clouds.shape[0] if cloud_list is None else len(cloud_list)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num * (num - 1) // 2, desc="pairwise W", unit="pair")
    # the result is written in place in its final dtype (CPU), never as an extra float64 copy
    out = torch.zeros((num, num), dtype=like.dtype)
    out_np = out.numpy()
    try:
        with torch.no_grad():
            if cloud_list is None:
                c_np = np.ascontiguousarray(clouds.detach().to(torch.float64).cpu().numpy())
                _pairwise_equal(c_np, p, chunk_size, out_np, bar)
            else:
                if weights is None:
                    weights = [None] * num
                elif isinstance(weights, (Tensor, np.ndarray)):
                    weights = list(torch.as_tensor(weights).unbind(0))
                if len(weights) != num:
                    raise ValueError(f"weights must hold one vector per cloud ({num}), got {len(weights)}")
                w_np = []
                for k, (c, w) in enumerate(zip(cloud_list, weights)):
                    if w is None:
                        w_np.append(np.full(c.shape[0], 1.0 / c.shape[0]))
                    else:
                        w = as_simplex(w, f"weights[{k}]", (c.shape[0],), like=c.to(torch.float64))
                        w_np.append(w.cpu().numpy() / w.sum().item())
                c_np = [c.detach().to(torch.float64).cpu().numpy() for c in cloud_list]
                _pairwise_ragged(c_np, w_np, p, chunk_size, out_np, bar)
    finally:
        if bar is not None:
            bar.close()
    out.clamp_(min=0.0)
    if p != 1.0:
        out.pow_(1.0 / p)
    out.fill_diagonal_(0.0)
    return out.to(like.device)


class WassersteinDistance(nn.Module):
    r"""Module form of :func:`wasserstein_distance`: ``forward(x, y, a=None, b=None) -> (...)``.

    Args:
        p: ground-cost exponent ``>= 1``.
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` over the batch.

    Example:
        >>> crit = WassersteinDistance(reduction="mean")
        >>> crit(torch.zeros(4, 5, 2), torch.ones(4, 5, 2))
        tensor(1.4142)
    """

    def __init__(self, p: float = 2, reduction: str = "none") -> None:
        super().__init__()
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
        self.p = check_p(p)
        self.reduction = reduction

    def forward(self, x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None) -> Tensor:
        value = wasserstein_distance(x, y, a=a, b=b, p=self.p)
        if self.reduction == "mean":
            return value.mean()
        if self.reduction == "sum":
            return value.sum()
        return value

    def extra_repr(self) -> str:
        return f"p={self.p:g}, reduction={self.reduction!r}"

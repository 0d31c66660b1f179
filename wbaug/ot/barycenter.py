r"""Free-support Wasserstein barycenters of point clouds, batched, with exact OT inside.

The barycenter of clouds :math:`\nu_k = \sum_j a_{kj}\delta_{y_{kj}}` with weights :math:`w` on the simplex
minimises, over the support :math:`X` of a measure :math:`\mu = \sum_i b_i \delta_{x_i}`,

.. math::
    F(X) = \sum_k w_k\, W_2^2(\mu_X, \nu_k).

The fixed-point iteration of Cuturi & Doucet (2014, Alg. 2 with :math:`\theta = 1`), also POT's
``ot.lp.free_support_barycenter``, alternates exact couplings :math:`T_k` of :math:`X` to every cloud and the
update :math:`X \leftarrow \mathrm{diag}(1/b) \sum_k w_k T_k Y_k`; each step never increases :math:`F`.
For uniform clouds of the barycenter's size ``N`` the couplings are permutations :math:`\sigma_k`, the update
is :math:`x_i \leftarrow \sum_k w_k\, y_{k\sigma_k(i)}`, and the iteration has reached an exact fixed point
as soon as no assignment changes (then :math:`X_{t+1} = X_t` bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from wbaug.ot._validation import as_points, as_simplex, check_positive_int
from wbaug.ot.assignment import batched_emd, matched_assignment, uniform_barycenter_matchings
from wbaug.ot.distance import wasserstein_distance

__all__ = ["FreeSupportBarycenter", "barycenter_objective", "free_support_barycenter"]


def _np64(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float64).cpu().numpy())


def _check_mask(mask: object, shape: tuple[int, int], device: torch.device) -> Tensor:
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool tensor of shape {shape}, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool, got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask must have shape {shape} (B, K), got {tuple(mask.shape)}")
    mask = mask.to(device)
    if not bool(mask.any(1).all()):
        raise ValueError("mask must select at least one cloud in every batch item")
    return mask


def _advance(
    x: np.ndarray,
    x_new: np.ndarray,
    rows: np.ndarray,
    running: np.ndarray,
    changed: np.ndarray,
    it: int,
    tol: float,
) -> bool:
    """Move the running items ``rows`` of ``x`` to ``x_new``; stop those whose squared displacement is
    ``<= tol`` or (after the first update) whose couplings did not change. True when none runs any more."""
    shift = ((x_new - x[rows]) ** 2).sum((1, 2))
    x[rows] = x_new
    done = shift <= tol
    if it > 0:
        done |= ~changed[rows]
    running[rows[done]] = False
    return not running.any()


def _uniform_fixed_point(
    y: np.ndarray, w: np.ndarray, x0: np.ndarray, active_clouds: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, int]:
    """Batched fixed point for uniform equal-size clouds.

    Args:
        y: ``(B, K, N, D)`` float64 clouds (masked ones zeroed).
        w: ``(B, K)`` float64 weights (zero for masked clouds).
        x0: ``(B, N, D)`` initial support.
        active_clouds: ``(B, K)`` bool, clouds that take part (mask and positive weight).

    Returns:
        ``sigma (B, K, N)`` (identity for clouds that do not take part) and the number of iterations run.
    """
    _, sigma, iterations = uniform_barycenter_matchings(y, w, x0, active_clouds, max_iter, tol)
    return sigma, iterations


def _general_fixed_point(
    y: np.ndarray,
    a: np.ndarray,
    w: np.ndarray,
    x0: np.ndarray,
    b: np.ndarray,
    active_clouds: np.ndarray,
    max_iter: int,
    tol: float,
) -> np.ndarray:
    """Batched fixed point with arbitrary point weights ``a (B, K, N)`` and barycenter weights ``b (B, Nb)``.

    Returns the couplings ``T (B, K, Nb, N)`` of the last update (zero for clouds that do not take part).
    """
    bsz, ncl, n, d = y.shape
    nb = x0.shape[1]
    plans = np.zeros((bsz, ncl, nb, n))
    x = x0.copy()
    running = np.ones(bsz, dtype=bool)
    inv_b = np.where(b > 0, 1.0 / np.where(b > 0, b, 1.0), 0.0)
    for it in range(max_iter):
        pair_b, pair_k = np.nonzero(active_clouds & running[:, None])
        diff = x[pair_b][:, :, None, :] - y[pair_b, pair_k][:, None, :, :]
        cost = (diff * diff).sum(-1)
        new = batched_emd(b[pair_b], a[pair_b, pair_k], cost)
        changed = np.zeros(bsz, dtype=bool)
        np.logical_or.at(changed, pair_b, (new != plans[pair_b, pair_k]).any((1, 2)))
        plans[pair_b, pair_k] = new
        rows = np.nonzero(running)[0]
        moved = np.einsum("bk,bkij,bkjd->bid", w[rows], plans[rows], y[rows]) * inv_b[rows][:, :, None]
        if _advance(x, np.where(b[rows][:, :, None] > 0, moved, x[rows]), rows, running, changed, it, tol):
            break
    return plans


def free_support_barycenter(
    clouds: Tensor | Sequence[Tensor],
    weights: Tensor,
    *,
    mask: Tensor | None = None,
    init: Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
    return_assignment: bool = False,
    point_weights: Tensor | Sequence[Tensor] | None = None,
    init_weights: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Weighted free-support Wasserstein barycenters, batched over ``B`` cliques of clouds.

    Minimises :math:`F(X) = \sum_k w_k W_2^2(\mu_X, \nu_k)` by the fixed-point iteration of Cuturi & Doucet
    (POT's ``ot.lp.free_support_barycenter``) with exact OT inside:

    .. math::
        X \leftarrow \mathrm{diag}(1/b) \sum_k w_k T_k^\star Y_k,
        \qquad\text{(uniform, equal sizes: } x_i \leftarrow \textstyle\sum_k w_k\, y_{k\sigma_k(i)}).

    It stops when the squared displacement :math:`\lVert X_{t+1} - X_t\rVert_F^2 \le` ``tol`` (POT's rule) or
    when no coupling changed (an exact fixed point), or after ``max_iter`` updates. Every returned point
    is then :math:`x_i = \sum_k w_k y_{k\sigma_k(i)}`: a ``w``-convex combination of one point per cloud.
    The output is differentiable in ``clouds`` and ``weights`` (couplings held fixed).

    Args:
        clouds: ``(B, K, N, D)`` clouds, or a list of ``K`` tensors ``(N_k, D)`` for one barycenter of
            clouds of different sizes (then ``weights`` is ``(K,)`` and the result ``(N_b, D)``).
        weights: ``(B, K)`` barycentric weights, non-negative, summing to one over the selected clouds.
        mask: optional ``(B, K)`` bool, ``False`` marks padding clouds (cliques of different sizes K);
            their entries in ``clouds``/``weights`` are ignored.
        init: optional ``(B, N_b, D)`` initial support (default: the cloud of largest weight).
        max_iter: maximum number of updates (``>= 1``).
        tol: threshold on the squared displacement per barycenter.
        return_assignment: also return ``(B, K, N)`` int64 indices ``sigma`` with cloud ``k``'s point
            ``sigma[b, k, i]`` matched to barycenter point ``i`` (``-1`` for masked clouds); only for
            uniform clouds of equal size.
        point_weights: optional ``(B, K, N)`` weights of each cloud's points (zero = padding point), or a
            list of ``(N_k,)`` with list ``clouds``; switches to the general (network simplex) solver.
        init_weights: optional ``(B, N_b)`` masses :math:`b` of the barycenter points (default uniform, or
            the initial cloud's point weights when ``init`` is not given).

    Returns:
        ``(B, N_b, D)`` barycenters (``(N_b, D)`` for list input), plus ``sigma`` when requested.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> clouds = torch.randn(8, 3, 68, 2, generator=g)
        >>> w = torch.rand(8, 3, generator=g)
        >>> w = w / w.sum(1, keepdim=True)
        >>> free_support_barycenter(clouds, w).shape
        torch.Size([8, 68, 2])

    Reference: Cuturi & Doucet, "Fast computation of Wasserstein barycenters", ICML 2014, Alg. 2;
    Bespalov et al., "Data augmentation with manifold barycenters", sec. 3.1 and Algorithm 2.
    """
    max_iter = check_positive_int(max_iter, "max_iter")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if isinstance(clouds, (list, tuple)):
        return _from_list(
            clouds,
            weights,
            init=init,
            max_iter=max_iter,
            tol=tol,
            return_assignment=return_assignment,
            point_weights=point_weights,
            init_weights=init_weights,
        )
    if isinstance(clouds, np.ndarray):
        clouds = torch.from_numpy(clouds)
    if isinstance(clouds, Tensor) and clouds.ndim != 4:
        raise ValueError(f"clouds must have shape (B, K, N, D), got {tuple(clouds.shape)}")
    if not isinstance(clouds, Tensor):
        raise TypeError(
            f"clouds must be a tensor (B, K, N, D) or a list of (N_k, D) tensors, got {type(clouds).__name__}"
        )
    bsz, ncl, n, d = clouds.shape
    if bsz == 0 or ncl == 0:
        raise ValueError(f"clouds must hold at least one batch item and one cloud, got {tuple(clouds.shape)}")
    if mask is None:
        mask = torch.ones((bsz, ncl), dtype=torch.bool, device=clouds.device)
    else:
        mask = _check_mask(mask, (bsz, ncl), clouds.device)
    zero = torch.zeros((), dtype=clouds.dtype, device=clouds.device)
    if not clouds.is_floating_point():
        raise TypeError(f"clouds must have a floating dtype (float32 or float64), got {clouds.dtype}")
    clouds = torch.where(mask[:, :, None, None], clouds, zero)
    clouds = as_points(clouds, "clouds", min_rank=4)
    weights = as_simplex(weights, "weights", (bsz, ncl), like=clouds, mask=mask)
    general = point_weights is not None or init_weights is not None
    if point_weights is not None:
        point_weights = as_simplex(
            point_weights,
            "point_weights",
            (bsz, ncl, n),
            like=clouds,
            mask=mask[:, :, None].expand(-1, -1, n),
        )
        # masked clouds carry no mass: give them any valid simplex vector
        point_weights = torch.where(mask[:, :, None], point_weights, torch.full_like(point_weights, 1.0 / n))
    top = torch.where(mask, weights, torch.full_like(weights, -1.0)).argmax(1)
    batch_idx = torch.arange(bsz, device=clouds.device)
    if init is None:
        init_t = clouds[batch_idx, top]
        if init_weights is None and point_weights is not None:
            init_weights = point_weights[batch_idx, top]
    else:
        init_t = as_points(init, "init", min_rank=3)
        if init_t.ndim != 3 or init_t.shape[0] != bsz or init_t.shape[2] != d:
            raise ValueError(f"init must have shape ({bsz}, N_b, {d}), got {tuple(init_t.shape)}")
        if init_t.device != clouds.device:
            raise ValueError(f"init must be on the device of clouds ({clouds.device}), got {init_t.device}")
        init_t = init_t.to(clouds.dtype)
        general = general or init_t.shape[1] != n
    nb = init_t.shape[1]
    if init_weights is not None:
        init_weights = as_simplex(init_weights, "init_weights", (bsz, nb), like=clouds)

    participating = mask & (weights > 0)
    y_np, w_np, x0_np = _np64(clouds), _np64(weights), _np64(init_t)
    if not general:
        sigma_np, _ = _uniform_fixed_point(y_np, w_np, x0_np, _np64(participating) > 0, max_iter, tol)
        sigma = torch.from_numpy(sigma_np).to(clouds.device)
        matched = clouds.gather(2, sigma[..., None].expand(-1, -1, -1, d))
        bary = (weights[:, :, None, None] * matched).sum(1)
        if not return_assignment:
            return bary
        # ``sigma`` shares memory with ``sigma_np`` and is saved by ``gather`` for backward: report a copy
        sigma_np = sigma_np.copy()
        idle = (mask & ~participating).cpu().numpy()
        if idle.any():  # zero-weight clouds: report their optimal matching to the final barycenter
            ib, ik = np.nonzero(idle)
            sigma_np[ib, ik] = matched_assignment(_np64(bary)[ib], y_np[ib, ik])
        sigma_np[~mask.cpu().numpy()] = -1
        return bary, torch.from_numpy(sigma_np).to(clouds.device)

    if return_assignment:
        raise ValueError(
            "return_assignment needs uniform clouds of the barycenter's size (no point_weights/init_weights)"
        )
    if point_weights is None:
        point_weights = torch.full((bsz, ncl, n), 1.0 / n, dtype=clouds.dtype, device=clouds.device)
    if init_weights is None:
        init_weights = torch.full((bsz, nb), 1.0 / nb, dtype=clouds.dtype, device=clouds.device)
    plans_np = _general_fixed_point(
        y_np, _np64(point_weights), w_np, x0_np, _np64(init_weights), _np64(participating) > 0, max_iter, tol
    )
    plans = torch.from_numpy(plans_np).to(device=clouds.device, dtype=clouds.dtype)
    moved = torch.einsum("bk,bkij,bkjd->bid", weights, plans, clouds)
    has_mass = init_weights > 0
    safe_b = torch.where(has_mass, init_weights, torch.ones_like(init_weights))
    return torch.where(has_mass[:, :, None], moved / safe_b[:, :, None], init_t)


def _from_list(clouds, weights, *, init, max_iter, tol, return_assignment, point_weights, init_weights):
    if len(clouds) == 0:
        raise ValueError("clouds must contain at least one cloud")
    pts = [as_points(c, f"clouds[{k}]") for k, c in enumerate(clouds)]
    for k, c in enumerate(pts):
        if c.ndim != 2:
            raise ValueError(f"clouds[{k}] must have shape (N_k, D), got {tuple(c.shape)}")
        if c.shape[1] != pts[0].shape[1]:
            raise ValueError(f"clouds[{k}] has dimension {c.shape[1]}, clouds[0] has {pts[0].shape[1]}")
        if c.device != pts[0].device:
            raise ValueError(f"clouds[{k}] is on {c.device}, clouds[0] on {pts[0].device}")
    dtype = pts[0].dtype
    for c in pts[1:]:
        dtype = torch.promote_types(dtype, c.dtype)
    pts = [c.to(dtype) for c in pts]
    ncl, d = len(pts), pts[0].shape[1]
    weights = as_simplex(weights, "weights", (ncl,), like=pts[0])
    sizes = [c.shape[0] for c in pts]
    if (
        point_weights is None
        and init_weights is None
        and len(set(sizes)) == 1
        and (init is None or init.shape[-2] == sizes[0])
    ):
        out = free_support_barycenter(
            torch.stack(pts)[None],
            weights[None],
            init=None if init is None else init[None],
            max_iter=max_iter,
            tol=tol,
            return_assignment=return_assignment,
        )
        return (out[0][0], out[1][0]) if return_assignment else out[0]
    if point_weights is None:
        point_weights = [torch.full((s,), 1.0 / s, dtype=dtype, device=pts[0].device) for s in sizes]
    if len(point_weights) != ncl:
        raise ValueError(f"point_weights must hold one vector per cloud ({ncl}), got {len(point_weights)}")
    pw = [as_simplex(w, f"point_weights[{k}]", (sizes[k],), like=pts[k]) for k, w in enumerate(point_weights)]
    nmax = max(sizes)
    padded = torch.zeros((1, ncl, nmax, d), dtype=dtype, device=pts[0].device)
    padded_w = torch.zeros((1, ncl, nmax), dtype=dtype, device=pts[0].device)
    for k in range(ncl):
        padded[0, k, : sizes[k]] = pts[k]
        padded_w[0, k, : sizes[k]] = pw[k]
    if init is None:
        top = int(weights.argmax())
        init = pts[top]
        if init_weights is None:
            init_weights = pw[top]
    init = as_points(init, "init")
    if init.ndim != 2:
        raise ValueError(f"init must have shape (N_b, D) for list clouds, got {tuple(init.shape)}")
    out = free_support_barycenter(
        padded,
        weights[None],
        init=init[None],
        max_iter=max_iter,
        tol=tol,
        return_assignment=return_assignment,
        point_weights=padded_w,
        init_weights=None if init_weights is None else torch.as_tensor(init_weights)[None],
    )
    return out[0]


def barycenter_objective(
    barycenter: Tensor, clouds: Tensor, weights: Tensor, *, mask: Tensor | None = None
) -> Tensor:
    r"""Barycenter objective :math:`F(X) = \sum_k w_k W_2^2(X, Y_k)` for uniform equal-size clouds.

    Args:
        barycenter: ``(B, N, D)`` supports.
        clouds: ``(B, K, N, D)`` clouds.
        weights: ``(B, K)`` simplex weights.
        mask: optional ``(B, K)`` bool, ``False`` = padding cloud (ignored).

    Returns:
        ``(B,)`` objective values (exact OT, differentiable in the positions).

    Example:
        >>> clouds = torch.randn(2, 3, 5, 2, generator=torch.Generator().manual_seed(0))
        >>> w = torch.full((2, 3), 1 / 3)
        >>> barycenter_objective(clouds[:, 0], clouds, w).shape
        torch.Size([2])
    """
    barycenter = as_points(barycenter, "barycenter", min_rank=3)
    if not isinstance(clouds, Tensor) or clouds.ndim != 4:
        raise ValueError("clouds must be a tensor of shape (B, K, N, D)")
    bsz, ncl = clouds.shape[:2]
    if mask is None:
        mask = torch.ones((bsz, ncl), dtype=torch.bool, device=clouds.device)
    else:
        mask = _check_mask(mask, (bsz, ncl), clouds.device)
    clouds = torch.where(
        mask[:, :, None, None], clouds, torch.zeros((), dtype=clouds.dtype, device=clouds.device)
    )
    weights = as_simplex(weights, "weights", (bsz, ncl), like=clouds, mask=mask)
    dist = wasserstein_distance(barycenter[:, None], clouds)
    return (weights * dist.square()).sum(1)


class FreeSupportBarycenter(nn.Module):
    r"""Module form of :func:`free_support_barycenter`: ``forward(clouds, weights, mask=None) -> (B, N, D)``.

    Args:
        max_iter: maximum number of fixed-point updates.
        tol: squared-displacement stopping threshold.

    Example:
        >>> layer = FreeSupportBarycenter()
        >>> clouds = torch.randn(2, 3, 10, 2, generator=torch.Generator().manual_seed(0))
        >>> layer(clouds, torch.full((2, 3), 1 / 3)).shape
        torch.Size([2, 10, 2])
    """

    def __init__(self, max_iter: int = 100, tol: float = 1e-7) -> None:
        super().__init__()
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = float(tol)

    def forward(self, clouds: Tensor, weights: Tensor, mask: Tensor | None = None) -> Tensor:
        return free_support_barycenter(clouds, weights, mask=mask, max_iter=self.max_iter, tol=self.tol)

    def extra_repr(self) -> str:
        return f"max_iter={self.max_iter}, tol={self.tol:g}"

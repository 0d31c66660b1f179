r"""Batched barycenters of padded cliques, in the two correspondence modes of the sampler.

* ``"index"``: :math:`\bar X = \sum_s \lambda_s X_s` point by point (landmark ``n`` of the result is the
  λ-average of landmark ``n`` of every vertex). This is the W2 barycenter when the coupling between clouds
  is fixed to the identity, and it is what ordered layouts need: landmark 36 stays the outer left eye
  corner. The free-support barycenter instead re-matches points by optimal transport, so for faces only
  about a third of its points keep their semantic index (see ``docs/sampler.md``).
* ``"ot"``: the free-support W2 barycenter (Cuturi & Doucet 2014, the paper's choice for unordered point
  clouds), computed for a whole batch by :func:`wbaug.ot.free_support_barycenter` with a clique mask.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "clique_barycenters",
    "index_barycenters",
    "masked_index_barycenters",
    "ot_barycenters",
    "ragged_ot_barycenters",
]


def index_barycenters(vertices: Tensor, weights: Tensor) -> Tensor:
    """``(B, N, D)`` = ``sum_s weights[b, s] * vertices[b, s]`` for ``vertices (B, S, N, D)`` and
    ``weights (B, S)`` (padding entries carry weight 0)."""
    b, s, n, d = vertices.shape
    # one batched matrix product: the same sums as einsum("bs,bsnd->bnd"), without its ~50 us of
    # per-call planning (this runs once per pipeline sample)
    return torch.bmm(weights.to(vertices.dtype)[:, None, :], vertices.reshape(b, s, n * d)).reshape(b, n, d)


def masked_index_barycenters(vertices: Tensor, weights: Tensor, visibility: Tensor) -> tuple[Tensor, Tensor]:
    r"""``"index"`` barycenters over visible points only: point ``n`` minimises
    :math:`\sum_s \lambda_s v_{s,n} \lVert y_n - x_{s,n}\rVert^2`, so
    :math:`y_n = \sum_s \lambda_s v_{s,n} x_{s,n} / \sum_s \lambda_s v_{s,n}`.

    Args:
        vertices: ``(B, S, N, D)`` (values at invisible points are ignored, even NaN).
        weights: ``(B, S)`` (0 on padding).
        visibility: ``(B, S, N)`` bool.

    Returns:
        ``(B, N, D)`` barycenters (NaN where no vertex of weight > 0 sees the point) and their ``(B, N)``
        visibility.
    """
    pw = weights.to(vertices.dtype)[..., None] * visibility.to(vertices.dtype)
    total = pw.sum(1)
    seen = visibility[..., None].to(vertices.device)
    num = torch.einsum("bsn,bsnd->bnd", pw, torch.where(seen, vertices, torch.zeros_like(vertices)))
    visible = total > 0
    out = torch.where(
        visible[..., None],
        num / total.clamp_min(torch.finfo(total.dtype).tiny)[..., None],
        torch.full_like(num, float("nan")),
    )
    return out, visible


def ot_barycenters(
    vertices: Tensor,
    weights: Tensor,
    mask: Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-7,
    init: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Free-support barycenters ``(B, N, D)`` and the matching ``sigma (B, S, N)`` (``-1`` on padding):
    barycenter point ``i`` is ``sum_s weights[b, s] * vertices[b, s, sigma[b, s, i]]``."""
    from wbaug.ot import free_support_barycenter

    w = torch.where(
        mask, weights.to(vertices.dtype), torch.zeros((), dtype=vertices.dtype, device=vertices.device)
    )
    return free_support_barycenter(
        vertices, w, mask=mask, init=init, max_iter=max_iter, tol=tol, return_assignment=True
    )


def ragged_ot_barycenters(
    clouds: list[Tensor],
    vertex_index: Tensor,
    weights: Tensor,
    mask: Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-7,
) -> list[Tensor]:
    """Free-support barycenters of cliques of clouds with different sizes.

    Clouds are zero-padded to the largest size with zero point weights (the general exact-OT solver).
    The barycenter has the support size of its largest-weight vertex, which also initialises it.
    Returns a list of ``B`` tensors ``(N_b, D)``.
    """
    from wbaug.ot import free_support_barycenter

    bsz, s = vertex_index.shape
    sizes = torch.tensor([c.shape[0] for c in clouds])
    nmax = int(sizes[vertex_index[mask]].max())
    ref = clouds[0]
    d = ref.shape[1]
    padded = torch.zeros(bsz, s, nmax, d, dtype=ref.dtype, device=ref.device)
    # padding clouds (mask False) get any valid simplex vector; the solver ignores them
    pw = torch.full((bsz, s, nmax), 1.0 / nmax, dtype=ref.dtype, device=ref.device)
    for b in range(bsz):
        for k in range(s):
            if not bool(mask[b, k]):
                continue
            pw[b, k] = 0.0
            c = clouds[int(vertex_index[b, k])]
            padded[b, k, : c.shape[0]] = c
            pw[b, k, : c.shape[0]] = 1.0 / c.shape[0]
    w = torch.where(mask, weights.to(ref.dtype), torch.zeros((), dtype=ref.dtype, device=ref.device))
    w = w.to(ref.device)
    top = torch.where(mask, w.cpu(), torch.full_like(w.cpu(), -1.0)).argmax(1)
    init = padded[torch.arange(bsz), top.to(ref.device)]
    init_w = pw[torch.arange(bsz), top.to(ref.device)]
    bary = free_support_barycenter(
        padded,
        w,
        mask=mask.to(ref.device),
        init=init,
        init_weights=init_w,
        point_weights=pw,
        max_iter=max_iter,
        tol=tol,
    )
    out_sizes = sizes[vertex_index[torch.arange(bsz), top]]
    return [bary[b, : int(out_sizes[b])] for b in range(bsz)]


def clique_barycenters(
    clouds: Tensor | list[Tensor],
    vertex_index: Tensor,
    weights: Tensor,
    mask: Tensor,
    *,
    correspondence: Literal["ot", "index"],
    max_iter: int = 100,
    tol: float = 1e-7,
    init: Tensor | None = None,
) -> tuple[Tensor | list[Tensor], Tensor | None]:
    """Barycenters of the cliques ``vertex_index (B, S)`` (padded, ``mask``) with weights ``(B, S)``.

    Returns the barycenters (``(B, N, D)`` or a list for ragged clouds) and, in ``"ot"`` mode on equal-size
    clouds, the matching ``sigma (B, S, N)`` (``None`` otherwise). ``init``: optional ``(B, N, D)`` start of
    the ``"ot"`` fixed point (default: the largest-weight vertex).
    """
    if isinstance(clouds, Tensor):
        idx = vertex_index.to(clouds.device)
        vertices = clouds[idx]
        if correspondence == "index":
            return index_barycenters(vertices, weights.to(clouds.device)), None
        return ot_barycenters(
            vertices, weights.to(clouds.device), mask.to(clouds.device), max_iter=max_iter, tol=tol, init=init
        )
    # ragged clouds: group cliques by size so no clique needs padding clouds
    out: list = [None] * vertex_index.shape[0]
    sizes = mask.sum(1)
    for size in torch.unique(sizes).tolist():
        sel = torch.nonzero(sizes == size).flatten()
        part = ragged_ot_barycenters(
            clouds,
            vertex_index[sel, :size],
            weights[sel, :size],
            mask[sel, :size],
            max_iter=max_iter,
            tol=tol,
        )
        for b, value in zip(sel.tolist(), part):
            out[b] = value
    return out, None

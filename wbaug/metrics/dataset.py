r"""Dataset-level comparisons of landmark collections (manifold-barycenters paper, §6.1 and Fig. 4).

- :func:`dataset_ot_distance`: optimal transport between two *datasets* (uniform measures over their
  landmark sets) with ground metric :math:`W_2` between landmark sets — the criterion the paper
  minimises to select the sampler's hyperparameters.
- :func:`landmark_density` / :func:`landmark_density_kl`: the density of all landmark positions pooled
  over a dataset (a smoothed 2-D histogram, the maps of Fig. 4) and the KL divergence between two such
  densities, which Fig. 4 plots against the dataset size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wbaug.landmarks._checks import check_points
from wbaug.ot import wasserstein_distance

__all__ = ["landmark_cost_matrix", "dataset_ot_distance", "landmark_density", "landmark_density_kl"]


def _as_collection(x: Tensor | Sequence[Tensor], name: str) -> Tensor | list[Tensor]:
    if isinstance(x, Tensor):
        check_points(x, name, finite=True)
        if x.ndim != 3 or x.shape[0] == 0:
            raise ValueError(f"{name} must have shape (M, N, D) with M >= 1, got {tuple(x.shape)}")
        return x
    if not isinstance(x, Sequence) or len(x) == 0:
        raise TypeError(f"{name} must be a (M, N, D) tensor or a non-empty list of (N_i, D) tensors")
    for i, t in enumerate(x):
        check_points(t, f"{name}[{i}]", finite=True)
    return list(x)


def landmark_cost_matrix(
    a: Tensor | Sequence[Tensor], b: Tensor | Sequence[Tensor], *, p: float = 2, chunk_size: int = 256
) -> Tensor:
    r"""``(M_a, M_b)`` matrix :math:`C_{kl} = W_p(a_k, b_l)` between every pair of landmark sets (exact OT).

    Example:
        >>> landmark_cost_matrix(torch.rand(3, 10, 2), torch.rand(4, 10, 2)).shape
        torch.Size([3, 4])
    """
    xa = _as_collection(a, "a")
    xb = _as_collection(b, "b")
    if isinstance(xa, Tensor) and isinstance(xb, Tensor):
        if xa.shape[-1] != xb.shape[-1]:
            raise ValueError("a and b must have the same point dimension D")
        rows = []
        with torch.no_grad():
            for start in range(0, xa.shape[0], chunk_size):
                blk = xa[start : start + chunk_size]
                rows.append(wasserstein_distance(blk[:, None], xb[None], p=p))
        return torch.cat(rows)
    with torch.no_grad():
        return torch.stack([torch.stack([wasserstein_distance(u, v, p=p) for v in xb]) for u in xa])


def dataset_ot_distance(
    a: Tensor | Sequence[Tensor],
    b: Tensor | Sequence[Tensor],
    *,
    p: float = 2,
    outer_p: float = 1,
    chunk_size: int = 256,
    return_plan: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Optimal transport distance between two landmark datasets, ground metric :math:`W_p` between sets.

    .. math::
        \mathcal W(\mathcal A, \mathcal B) = \Big(\min_{\Gamma \in \Pi(\frac1{M_a}, \frac1{M_b})}
        \sum_{kl} \Gamma_{kl}\, W_p(a_k, b_l)^{q}\Big)^{1/q}, \qquad q = \texttt{outer\_p}

    The set-level costs come from :func:`landmark_cost_matrix` (exact OT per pair, :mod:`wbaug.ot`), the
    dataset-level problem is solved exactly with POT's ``ot.emd2``. Not differentiable (a metric).

    Args:
        a, b: ``(M, N, D)`` tensors or lists of ``(N_i, D)`` landmark sets.
        p: exponent of the inner :math:`W_p` (2 in the paper).
        outer_p: exponent ``q`` of the dataset-level problem (1: earth mover's distance over sets).
        return_plan: also return the ``(M_a, M_b)`` optimal coupling.

    Example:
        >>> x = torch.rand(5, 68, 2)
        >>> dataset_ot_distance(x, x[torch.randperm(5)])
        tensor(0.)

    Reference: Bespalov et al., *Data augmentation with manifold barycenters*, §6.1 (hyperparameters).
    """
    if not outer_p >= 1:
        raise ValueError(f"outer_p must be >= 1, got {outer_p}")
    cost = landmark_cost_matrix(a, b, p=p, chunk_size=chunk_size)
    c = cost.detach().to(torch.float64).cpu().numpy() ** outer_p
    ma, mb = c.shape
    import ot  # imported where used: keeps `import wbaug` light

    plan = ot.emd(np.full(ma, 1.0 / ma), np.full(mb, 1.0 / mb), c)
    value = float((plan * c).sum()) ** (1.0 / outer_p)
    out = torch.tensor(value, dtype=cost.dtype, device=cost.device)
    if return_plan:
        return out, torch.from_numpy(plan).to(dtype=cost.dtype, device=cost.device)
    return out


def _gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def landmark_density(
    landmarks: Tensor | Sequence[Tensor],
    *,
    bins: int | tuple[int, int] = 64,
    range: tuple[tuple[float, float], tuple[float, float]] | None = None,
    smoothing: float = 1.0,
) -> tuple[Tensor, tuple[tuple[float, float], tuple[float, float]]]:
    r"""Density of all landmark positions pooled over a dataset: a normalised ``(bins_y, bins_x)`` histogram.

    Points are binned on the rectangle ``range = ((x_min, x_max), (y_min, y_max))`` (default: their
    bounding box), then smoothed with a Gaussian of ``smoothing`` bins (0 disables), and normalised to sum
    to one. Returns the density and the range used (pass it to the other dataset to share the grid).

    Example:
        >>> dens, rng = landmark_density(torch.rand(100, 68, 2), bins=32)
        >>> dens.shape, round(float(dens.sum()), 4)
        (torch.Size([32, 32]), 1.0)
    """
    coll = _as_collection(landmarks, "landmarks")
    pts = coll.reshape(-1, coll.shape[-1]) if isinstance(coll, Tensor) else torch.cat(list(coll))
    if pts.shape[-1] != 2:
        raise ValueError("landmark_density needs 2-D landmarks (D = 2)")
    pts = pts.detach()
    by, bx = (bins, bins) if isinstance(bins, int) else bins
    if by < 1 or bx < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    if range is None:
        lo, hi = pts.amin(0), pts.amax(0)
        pad = (hi - lo).clamp_min(1e-6) * 1e-6
        range = (
            (float(lo[0] - pad[0]), float(hi[0] + pad[0])),
            (float(lo[1] - pad[1]), float(hi[1] + pad[1])),
        )
    (x0, x1), (y0, y1) = range
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"range must be ((x_min, x_max), (y_min, y_max)) with max > min, got {range}")
    ix = ((pts[:, 0] - x0) / (x1 - x0) * bx).floor().long()
    iy = ((pts[:, 1] - y0) / (y1 - y0) * by).floor().long()
    keep = (ix >= 0) & (ix < bx) & (iy >= 0) & (iy < by)
    dtype = pts.dtype if pts.is_floating_point() else torch.float32
    hist = torch.zeros(by * bx, dtype=dtype, device=pts.device)
    hist.index_add_(0, iy[keep] * bx + ix[keep], torch.ones(int(keep.sum()), dtype=dtype, device=pts.device))
    hist = hist.view(1, 1, by, bx)
    if smoothing > 0:
        k = _gaussian_kernel1d(smoothing, dtype, pts.device)
        r = k.numel() // 2
        hist = F.conv2d(F.pad(hist, (r, r, 0, 0)), k.view(1, 1, 1, -1))
        hist = F.conv2d(F.pad(hist, (0, 0, r, r)), k.view(1, 1, -1, 1))
    hist = hist[0, 0]
    total = hist.sum()
    if total <= 0:
        raise ValueError("no landmark falls inside range")
    return hist / total, range


def landmark_density_kl(
    p_landmarks: Tensor | Sequence[Tensor],
    q_landmarks: Tensor | Sequence[Tensor],
    *,
    bins: int | tuple[int, int] = 64,
    range: tuple[tuple[float, float], tuple[float, float]] | None = None,
    smoothing: float = 1.0,
    eps: float = 1e-10,
) -> Tensor:
    r"""KL divergence :math:`KL(P \| Q) = \sum_{ij} P_{ij} \log (P_{ij} / Q_{ij})` between landmark densities.

    Both densities use one grid (``range`` defaults to the joint bounding box) and are floored at ``eps``
    and renormalised so that the divergence stays finite. In Fig. 4 of the manifold-barycenters paper,
    ``P`` is the original dataset and ``Q`` the dataset enriched with barycentric samples.

    Example:
        >>> x = torch.rand(200, 68, 2)
        >>> float(landmark_density_kl(x, x))
        0.0
    """
    cp = _as_collection(p_landmarks, "p_landmarks")
    cq = _as_collection(q_landmarks, "q_landmarks")
    if range is None:
        pts = [c.reshape(-1, c.shape[-1]) if isinstance(c, Tensor) else torch.cat(list(c)) for c in (cp, cq)]
        allp = torch.cat([t.detach().to(torch.float64) for t in pts])
        lo, hi = allp.amin(0), allp.amax(0)
        pad = (hi - lo).clamp_min(1e-6) * 1e-6
        range = (
            (float(lo[0] - pad[0]), float(hi[0] + pad[0])),
            (float(lo[1] - pad[1]), float(hi[1] + pad[1])),
        )
    dp, _ = landmark_density(cp, bins=bins, range=range, smoothing=smoothing)
    dq, _ = landmark_density(cq, bins=bins, range=range, smoothing=smoothing)
    dq = dq.to(dp.dtype)
    dp = dp.clamp_min(eps)
    dp = dp / dp.sum()
    dq = dq.clamp_min(eps)
    dq = dq / dq.sum()
    return (dp * (dp / dq).log()).sum()

r"""Cheap bounds on the 2-Wasserstein distance between uniform point clouds, for kNN pruning.

Every function returns an ``(M, M)`` float64 matrix for ``M`` clouds ``\mu_i = \frac1{N_i}\sum_n
\delta_{x_{i,n}}``. The lower bounds are *valid for every pair* (proofs below), so a pair whose lower
bound exceeds the current k-th neighbour distance can be skipped without changing the exact kNN graph.

Lower bounds
------------
* **Centroid**: :math:`W_2(\mu,\nu) \ge \lVert m_\mu - m_\nu \rVert`. For any coupling :math:`\pi`,
  Jensen gives :math:`\int\lVert x-y\rVert^2 d\pi \ge \lVert\int (x-y)\,d\pi\rVert^2 = \lVert
  m_\mu-m_\nu\rVert^2`.
* **Gelbrich / Bures** (Gelbrich 1990, *Math. Nachr.* 147; Cuesta-Albertos, Matrán-Bea & Tuero-Díaz 1996):
  :math:`W_2^2(\mu,\nu) \ge \lVert m_\mu-m_\nu\rVert^2 + \operatorname{tr}\Sigma_\mu +
  \operatorname{tr}\Sigma_\nu
  - 2\operatorname{tr}(\Sigma_\mu^{1/2}\Sigma_\nu\Sigma_\mu^{1/2})^{1/2}`, i.e. the W2 distance between the
  moment-matched Gaussians. Proof sketch: for a coupling :math:`\pi` let :math:`C` be the cross-covariance
  of :math:`(X, Y) \sim \pi`; then :math:`E\lVert X-Y\rVert^2 = \lVert m_\mu-m_\nu\rVert^2 + \operatorname{tr}
  \Sigma_\mu + \operatorname{tr}\Sigma_\nu - 2\operatorname{tr} C`, and over all :math:`C` making the joint
  covariance PSD, :math:`\max\operatorname{tr} C =
  \operatorname{tr}(\Sigma_\mu^{1/2}\Sigma_\nu\Sigma_\mu^{1/2})^{1/2}`.
  It holds for any measures (discrete included) with these first two moments; it dominates the centroid bound.
* **Orthonormal projections**: for an orthonormal basis :math:`q_1..q_D`,
  :math:`W_2^2(\mu,\nu) \ge \sum_d W_2^2(q_d\#\mu, q_d\#\nu)`: the cost of any coupling splits as
  :math:`\sum_d \int (q_d\cdot x - q_d\cdot y)^2 d\pi`, and the image of :math:`\pi` under
  :math:`(q_d\cdot x, q_d\cdot y)` couples the two 1-D projections. For equal-size uniform clouds the 1-D
  optimum is the sorted matching, so the bound is :math:`\frac1N\lVert \mathrm{sort}(X_i q_d) -
  \mathrm{sort}(X_j q_d)\rVert^2` summed over ``d``: one matrix product per basis. We take the maximum over a
  few rotated bases.

Upper bound
-----------
* **Identity coupling** (equal-size ordered clouds): the permutation coupling :math:`x_{i,n}\mapsto x_{j,n}`
  is feasible, so :math:`W_2^2 \le \frac1N\sum_n\lVert x_{i,n}-x_{j,n}\rVert^2`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "SAFETY_MARGIN",
    "BoundFeatures",
    "bound_features",
    "lower_bound_embedding",
    "pair_lower_bound",
    "centroid_lower_bound",
    "gelbrich_from_moments",
    "gelbrich_lower_bound",
    "identity_upper_bound",
    "moments",
    "projection_from_sorted",
    "projection_lower_bound",
    "sorted_projections",
    "w2_lower_bound",
]

# Bounds are computed in float64 and then shrunk by this relative margin so that round-off in the bound
# (or in a float32 exact distance) can never prune a true neighbour.
SAFETY_MARGIN = 1e-6


def moments(clouds: Tensor | list[Tensor]) -> tuple[Tensor, Tensor]:
    """Means ``(M, D)`` and biased covariances ``(M, D, D)`` (uniform weights 1/N), float64."""
    if isinstance(clouds, Tensor):
        x = clouds.detach().to(torch.float64)
        mean = x.mean(1)
        xc = x - mean[:, None]
        cov = xc.transpose(1, 2) @ xc / x.shape[1]
        return mean, cov
    means, covs = [], []
    for c in clouds:
        x = c.detach().to(torch.float64)
        m = x.mean(0)
        xc = x - m
        means.append(m)
        covs.append(xc.T @ xc / x.shape[0])
    return torch.stack(means), torch.stack(covs)


_EPS64 = float(torch.finfo(torch.float64).eps)


def _sq_cdist(a: Tensor, b: Tensor, *, safe: bool = False) -> Tensor:
    """Squared Euclidean distances between rows of ``a (M, F)`` and ``b (M', F)`` (float64, >= 0).

    ``safe=True`` subtracts a bound on the round-off of the ``|a|^2 + |b|^2 - 2 a.b`` expansion
    (``4 F eps (|a|^2 + |b|^2)``) so the result never exceeds the true value: used for lower bounds.
    """
    na = (a * a).sum(1)[:, None]
    nb = (b * b).sum(1)[None, :]
    sq = na + nb - 2.0 * (a @ b.T)
    if safe:
        sq -= 4.0 * a.shape[1] * _EPS64 * (na + nb)
    return sq.clamp_min_(0.0)


def centroid_lower_bound(clouds: Tensor | list[Tensor]) -> Tensor:
    """``(M, M)`` centroid distances, a lower bound of W2 (Jensen)."""
    mean, _ = moments(clouds)
    return _sq_cdist(mean, mean).sqrt_()


def _det2(cov: Tensor) -> Tensor:
    """Determinants of PSD ``2x2`` matrices (closed form, clamped at 0)."""
    return (cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] * cov[:, 1, 0]).clamp_min(0.0)


def _psd_sqrt(cov: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(cov)
    return (evecs * evals.clamp_min(0.0).sqrt()[..., None, :]) @ evecs.transpose(-1, -2)


def gelbrich_from_moments(
    mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor, *, chunk_size: int = 256
) -> Tensor:
    """``(A, B)`` Gelbrich bound from float64 means ``(A, D)``/``(B, D)`` and covariances ``(., D, D)``."""
    a, d = mean_a.shape
    mean_sq = _sq_cdist(mean_a, mean_b, safe=True)
    tr_a = torch.diagonal(cov_a, dim1=1, dim2=2).sum(-1)
    tr_b = torch.diagonal(cov_b, dim1=1, dim2=2).sum(-1)
    if d == 1:
        fidelity = cov_a[:, 0, 0].clamp_min(0).sqrt()[:, None] * cov_b[:, 0, 0].clamp_min(0).sqrt()[None, :]
    elif d == 2:
        tr_prod = cov_a.reshape(a, 4) @ cov_b.reshape(-1, 4).T  # tr(Σ_i Σ_j) for symmetric matrices
        det_a = _det2(cov_a)
        det_b = _det2(cov_b)
        fidelity = (tr_prod + 2.0 * (det_a[:, None] * det_b[None, :]).sqrt()).clamp_min(0.0).sqrt()
    else:
        root = _psd_sqrt(cov_a)
        fidelity = torch.empty(a, mean_b.shape[0], dtype=torch.float64, device=mean_a.device)
        for start in range(0, a, chunk_size):
            r = root[start : start + chunk_size]
            s = r[:, None] @ cov_b[None, :] @ r[:, None]
            fidelity[start : start + chunk_size] = torch.linalg.eigvalsh(s).clamp_min(0.0).sqrt().sum(-1)
    slack = 16.0 * d * _EPS64 * (tr_a[:, None] + tr_b[None, :])  # round-off of the trace/fidelity terms
    sq = (mean_sq + tr_a[:, None] + tr_b[None, :] - 2.0 * fidelity - slack).clamp_min(0.0)
    return sq.sqrt_()


def gelbrich_lower_bound(clouds: Tensor | list[Tensor], *, chunk_size: int = 256) -> Tensor:
    """``(M, M)`` Gelbrich (Bures-Wasserstein between moment-matched Gaussians) lower bound of W2.

    For ``D = 2`` the fidelity term has a closed form: for PSD ``2x2`` ``S``,
    ``tr S^{1/2} = sqrt(tr S + 2 sqrt(det S))`` with ``tr S = tr(Σ_i Σ_j)`` and ``det S = det Σ_i det Σ_j``.
    Other ``D`` use batched eigenvalues of ``Σ_i^{1/2} Σ_j Σ_i^{1/2}`` in row chunks.
    """
    mean, cov = moments(clouds)
    return gelbrich_from_moments(mean, cov, mean, cov, chunk_size=chunk_size).fill_diagonal_(0.0)


def _bases(d: int, n_bases: int, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """Deterministic orthonormal bases: rotations by evenly spread angles (D=2) or fixed random ones."""
    key = (d, n_bases, dtype, str(device))
    if key not in _BASES_CACHE:
        _BASES_CACHE[key] = _make_bases(d, n_bases, dtype, device)
    return _BASES_CACHE[key]


_BASES_CACHE: dict = {}


def _make_bases(d: int, n_bases: int, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    eye = torch.eye(d, dtype=dtype, device=device)
    bases = [eye]
    if d == 2:
        for b in range(1, n_bases):
            t = 0.5 * math.pi * b / n_bases  # bases repeat with period pi/2
            c, s = math.cos(t), math.sin(t)
            bases.append(torch.tensor([[c, -s], [s, c]], dtype=dtype, device=device))
    elif d > 2:
        gen = torch.Generator().manual_seed(0)  # local generator: fixed, reproducible bases
        for _ in range(1, n_bases):
            q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
            bases.append(q.to(dtype=dtype, device=device))
    return bases


def sorted_projections(clouds: Tensor, *, n_bases: int = 4) -> tuple[Tensor, Tensor]:
    """Means ``(M, D)`` and ``(n_bases, M, N * D)`` float64 projections of the *centred* clouds onto each
    basis, sorted along the points. (Centring reduces round-off; the means are added back exactly, since
    ``sum_d W2^2(q_d#mu, q_d#nu) = |m_mu - m_nu|^2 + sum_d W2^2`` of the centred projections.)"""
    x = clouds.detach().to(torch.float64)
    m, n, d = x.shape
    mean = x.mean(1)
    xc = x - mean[:, None]
    return mean, torch.stack(
        [torch.sort(xc @ q, dim=1).values.reshape(m, n * d) for q in _bases(d, n_bases, x.dtype, x.device)]
    )


def projection_from_sorted(
    sorted_a: tuple[Tensor, Tensor], sorted_b: tuple[Tensor, Tensor], n_points: int
) -> Tensor:
    """``(A, B)`` sorted-projection bound from :func:`sorted_projections` of two sets."""
    (mean_a, pa_all), (mean_b, pb_all) = sorted_a, sorted_b
    best = _sq_cdist(pa_all[0], pb_all[0], safe=True)
    for pa, pb in zip(pa_all[1:], pb_all[1:]):
        torch.maximum(best, _sq_cdist(pa, pb, safe=True), out=best)
    best.div_(n_points).add_(_sq_cdist(mean_a, mean_b, safe=True))
    return best.sqrt_()


def projection_lower_bound(clouds: Tensor, *, n_bases: int = 4) -> Tensor:
    """``(M, M)`` sorted-projection lower bound of W2 for equal-size uniform clouds ``(M, N, D)``.

    Maximum over ``n_bases`` orthonormal bases of ``sqrt(sum_d W2^2(q_d # mu_i, q_d # mu_j))``.
    """
    s = sorted_projections(clouds, n_bases=n_bases)
    return projection_from_sorted(s, s, clouds.shape[1]).fill_diagonal_(0.0)


def identity_upper_bound(clouds: Tensor) -> Tensor:
    """``(M, M)`` cost of the identity coupling of equal-size ordered clouds, an upper bound of W2."""
    x = clouds.detach().to(torch.float64)
    m, n, d = x.shape
    flat = x.reshape(m, n * d)
    return (_sq_cdist(flat, flat) / n).sqrt_().fill_diagonal_(0.0)


def w2_lower_bound(clouds: Tensor | list[Tensor], *, n_bases: int = 4) -> Tensor:
    """``(M, M)`` best available lower bound (Gelbrich, and sorted projections for equal sizes), shrunk by a
    tiny relative safety margin against round-off."""
    lb = gelbrich_lower_bound(clouds)
    if isinstance(clouds, Tensor):
        torch.maximum(lb, projection_lower_bound(clouds, n_bases=n_bases), out=lb)
    lb.mul_(1.0 - SAFETY_MARGIN)
    lb.fill_diagonal_(0.0)
    return lb


# ---------------------------------------------------------------------------------------------------------
# Per-pair bounds and a lower-bounding embedding (the fit's candidate search: no (M, M) array)


class BoundFeatures(NamedTuple):
    """Per-cloud quantities from which every pair's lower bound is computed (float64, CPU).

    Attributes:
        mean: ``(M, D)`` means.
        cov: ``(M, D, D)`` biased covariances.
        root: ``(M, D, D)`` PSD square roots of ``cov`` (used for ``D > 2``).
        projections: ``(n_bases, M, N * D)`` centred projections sorted along the points (equal-size
            clouds), or ``None`` for ragged lists.
        n_points: ``N`` for equal-size clouds, else ``None``.
    """

    mean: Tensor
    cov: Tensor
    root: Tensor
    projections: Tensor | None
    n_points: int | None


def bound_features(clouds: Tensor | list[Tensor], *, n_bases: int = 4) -> BoundFeatures:
    """:class:`BoundFeatures` of ``(M, N, D)`` clouds or a list of ``(N_i, D)`` clouds (``O(M N D)``
    memory)."""
    mean, cov = moments(clouds)
    mean, cov = mean.cpu(), cov.cpu()
    root = _psd_sqrt(cov) if cov.shape[-1] > 2 else cov.new_zeros(cov.shape[0], 0, 0)
    if isinstance(clouds, Tensor):
        _, proj = sorted_projections(clouds, n_bases=n_bases)
        return BoundFeatures(mean, cov, root, proj.cpu().contiguous(), int(clouds.shape[1]))
    return BoundFeatures(mean, cov, root, None, None)


def pair_lower_bound(
    features: BoundFeatures,
    rows: Tensor,
    cols: Tensor,
    *,
    cutoff: Tensor | None = None,
    chunk_size: int = 32768,
) -> Tensor:
    """``(E,)`` float64 lower bound of W2 between clouds ``rows[e]`` and ``cols[e]``: the larger of the
    Gelbrich bound and (equal-size clouds) the sorted-projection bounds, shrunk by :data:`SAFETY_MARGIN`.

    Same value as :func:`w2_lower_bound` up to round-off, for listed pairs only (differences are taken
    directly, so no cancellation slack is needed for the mean and projection terms). With ``cutoff``
    ``(E,)``, a pair is dropped from the remaining terms as soon as one term exceeds its cutoff and is
    returned as ``inf`` (its bound is then known to exceed the cutoff).
    """
    out = torch.empty(rows.numel(), dtype=torch.float64)
    for s in range(0, rows.numel(), chunk_size):
        a, b = rows[s : s + chunk_size], cols[s : s + chunk_size]
        sq = _pair_gelbrich_sq(features, a, b)
        live = torch.arange(a.numel())
        if cutoff is not None:  # compare squares, widened so that the final shrink cannot flip a pair
            limit = (cutoff[s : s + chunk_size].to(torch.float64) * (1.0 + 4.0 * SAFETY_MARGIN)) ** 2
            sq[sq > limit] = float("inf")
            live = live[sq <= limit]
        if features.projections is not None:
            dm = features.mean[a] - features.mean[b]
            mean_sq = (dm * dm).sum(1)
            n = features.n_points
            for proj in features.projections:
                diff = proj[a[live]] - proj[b[live]]
                term = (diff * diff).sum(1) / n + mean_sq[live]
                sq[live] = torch.maximum(sq[live], term)
                if cutoff is not None:
                    over = sq[live] > limit[live]
                    sq[live[over]] = float("inf")
                    live = live[~over]
        out[s : s + chunk_size] = sq.sqrt_().mul_(1.0 - SAFETY_MARGIN)
    return out


def _pair_gelbrich_sq(features: BoundFeatures, a: Tensor, b: Tensor) -> Tensor:
    """Squared Gelbrich bound of the listed pairs (clamped at 0, with a round-off slack)."""
    dm = features.mean[a] - features.mean[b]
    ca, cb = features.cov[a], features.cov[b]
    d = ca.shape[-1]
    tr_a = torch.diagonal(ca, dim1=1, dim2=2).sum(-1)
    tr_b = torch.diagonal(cb, dim1=1, dim2=2).sum(-1)
    if d == 1:
        fidelity = ca[:, 0, 0].clamp_min(0).sqrt() * cb[:, 0, 0].clamp_min(0).sqrt()
    elif d == 2:
        tr_prod = (ca * cb).sum((1, 2))  # tr(Σ_a Σ_b) for symmetric matrices
        fidelity = (tr_prod + 2.0 * (_det2(ca) * _det2(cb)).sqrt()).clamp_min(0.0).sqrt()
    else:
        r = features.root[a]
        fidelity = torch.linalg.eigvalsh(r @ cb @ r).clamp_min(0.0).sqrt().sum(-1)
    slack = 16.0 * d * _EPS64 * (tr_a + tr_b)
    return ((dm * dm).sum(1) + tr_a + tr_b - 2.0 * fidelity - slack).clamp_min(0.0)


def lower_bound_embedding(features: BoundFeatures) -> Tensor:
    r"""``(M, F)`` float64 vectors whose Euclidean distances lower-bound W2: :math:`\lVert e_i - e_j\rVert
    \le W_2(\mu_i, \mu_j)` (before round-off; callers add a relative margin).

    * Equal-size clouds: :math:`e_i = [m_i, P_{i,1}, \dots, P_{i,B}]` with the centred sorted
      projections :math:`P_{i,b}` scaled by :math:`1/\sqrt{N B}`. Then :math:`\lVert e_i-e_j\rVert^2 =
      \lVert m_i-m_j\rVert^2 + \frac1B\sum_b \frac1N\lVert P_{i,b}-P_{j,b}\rVert^2`, the *mean* over bases
      of the projection bounds, which is at most their maximum, hence at most :math:`W_2^2`.
    * Ragged clouds: :math:`e_i = [m_i, \sqrt{\lambda(\Sigma_i)}]` (eigenvalues in ascending order). By von
      Neumann's trace inequality :math:`\operatorname{tr}|\Sigma_i^{1/2}\Sigma_j^{1/2}| \le \sum_d
      \sqrt{\lambda_d(\Sigma_i)\lambda_d(\Sigma_j)}`, so the Bures term of the Gelbrich bound is at least
      :math:`\lVert\sqrt{\lambda(\Sigma_i)} - \sqrt{\lambda(\Sigma_j)}\rVert^2`.

    Any orthogonal projection of these vectors (e.g. onto principal axes) is still a lower bound.
    """
    if features.projections is not None:
        proj = features.projections
        scale = 1.0 / math.sqrt(features.n_points * proj.shape[0])
        return torch.cat([features.mean, *(p * scale for p in proj)], 1)
    evals = torch.linalg.eigvalsh(features.cov).clamp_min(0.0).sqrt()
    return torch.cat([features.mean, evals], 1)

r"""Exact W2 nearest fitted landmark set of new query clouds, pruned by the bounds of
:mod:`wbaug.sampling.bounds` (best-first search: candidates in increasing lower-bound order, stopping when
the next lower bound exceeds the best exact distance found)."""

from __future__ import annotations

import torch
from torch import Tensor

from wbaug.sampling._validation import Clouds
from wbaug.sampling.bounds import (
    SAFETY_MARGIN,
    gelbrich_from_moments,
    moments,
    projection_from_sorted,
    sorted_projections,
)

__all__ = ["W2NearestNeighbor"]


class W2NearestNeighbor:
    """Index of fitted clouds answering exact nearest-neighbour queries under W2.

    Two-level pruning keeps a query cheap when ``M`` is large: the Gelbrich bound (a few flops per fitted
    cloud, from cached moments) orders the candidates and one exact W2 gives an initial radius; the sharper
    sorted-projection bound is then computed only for candidates inside that radius, and exact W2 is
    evaluated best-first until the next lower bound exceeds the best distance found.

    Args:
        clouds: fitted ``(M, N, D)`` clouds or list of ``(N_i, D)``.
        n_bases: orthonormal bases used by the sorted-projection bound.

    Example:
        >>> nn = W2NearestNeighbor(torch.randn(100, 10, 2))  # doctest: +SKIP
        >>> index, distance = nn.query(torch.randn(3, 10, 2))  # doctest: +SKIP
    """

    def __init__(self, clouds: Clouds, *, n_bases: int = 4) -> None:
        self.clouds = clouds
        self.n_bases = n_bases
        mean, cov = moments(clouds)
        self.mean, self.cov = mean.cpu(), cov.cpu()
        # cached terms of the Gelbrich bound (D = 2 fast path)
        self._mean_norm = (self.mean * self.mean).sum(-1)
        self._trace = torch.diagonal(self.cov, dim1=1, dim2=2).sum(-1)
        if self.cov.shape[-1] == 2:
            self._flat_cov = self.cov.reshape(-1, 4)
            c = self.cov
            self._det = (c[:, 0, 0] * c[:, 1, 1] - c[:, 0, 1] * c[:, 1, 0]).clamp_min(0.0)
        if isinstance(clouds, Tensor):
            means, proj = sorted_projections(clouds, n_bases=n_bases)
            self.sorted = (means.cpu(), proj.cpu().contiguous())
            self.sorted_norms = (self.sorted[1] ** 2).sum(-1)  # (n_bases, M)
        else:
            self.sorted = None

    def lower_bounds(self, queries: Clouds) -> Tensor:
        """``(Q, M)`` float64 lower bounds of W2 between queries and all fitted clouds (both bounds)."""
        mq, cq = moments(queries)
        lb = gelbrich_from_moments(mq.cpu(), cq.cpu(), self.mean, self.cov)
        if self._projection_ok(queries):
            sq = sorted_projections(queries, n_bases=self.n_bases)
            sq = (sq[0].cpu(), sq[1].cpu())
            torch.maximum(lb, projection_from_sorted(sq, self.sorted, queries.shape[1]), out=lb)
        return lb.mul_(1.0 - SAFETY_MARGIN)

    def _projection_ok(self, queries: Clouds) -> bool:
        return (
            self.sorted is not None
            and isinstance(queries, Tensor)
            and queries.shape[1] == self.clouds.shape[1]
        )

    def _exact(self, queries: Clouds, q: Tensor, j: Tensor) -> Tensor:
        from wbaug.ot import wasserstein_distance

        if isinstance(queries, Tensor) and isinstance(self.clouds, Tensor):
            from wbaug.sampling.graph import uniform_pair_w2

            return uniform_pair_w2(queries[q.to(queries.device)], self.clouds[j.to(self.clouds.device)])[0]
        out = torch.empty(q.numel(), dtype=torch.float64)
        for e, (a, b) in enumerate(zip(q.tolist(), j.tolist())):
            y = self.clouds[b]
            out[e] = float(wasserstein_distance(queries[a].to(device=y.device, dtype=y.dtype), y))
        return out

    def query(self, queries: Clouds, *, batch: int = 4) -> tuple[Tensor, Tensor]:
        """Exact nearest fitted cloud of each query: indices ``(Q,)`` and W2 distances ``(Q,)`` (float64).

        Ties go to the smaller index.
        """
        mq, cq = moments(queries)
        gel = self._gelbrich(mq.cpu(), cq.cpu()).mul_(1.0 - SAFETY_MARGIN)
        qn, m = gel.shape
        use_proj = self._projection_ok(queries)
        projections = None
        idx_out = torch.empty(qn, dtype=torch.long)
        dist_out = torch.empty(qn, dtype=torch.float64)
        for a in range(qn):
            row = gel[a]
            first = int(torch.argmin(row))
            if self._identical(queries, a, first):  # a fitted set itself (the usual dataset case): W2 = 0
                best = 0.0
            else:
                best = float(self._exact(queries, torch.tensor([a]), torch.tensor([first]))[0])
            best_idx = first
            row = row.clone()
            row[first] = float("inf")  # already evaluated
            cand = torch.nonzero(row <= best).flatten()
            lb = row[cand]
            if use_proj and cand.numel() > 1:
                if projections is None:
                    sq_means, sq_proj = sorted_projections(queries, n_bases=self.n_bases)
                    projections = (sq_means.cpu(), sq_proj.cpu())
                lb = torch.maximum(lb, self._projection_bound(projections[0][a], projections[1][:, a], cand))
            order = torch.argsort(lb, stable=True)
            cand, lb = cand[order], lb[order]
            pos = 0
            while pos < cand.numel() and float(lb[pos]) <= best:
                stop = pos
                while stop < cand.numel() and stop - pos < batch and float(lb[stop]) <= best:
                    stop += 1
                js = cand[pos:stop]
                d = self._exact(queries, torch.full((js.numel(),), a), js)
                for j, v in zip(js.tolist(), d.tolist()):
                    if v < best or (v == best and j < best_idx):
                        best, best_idx = v, j
                pos = stop
            idx_out[a] = best_idx
            dist_out[a] = best
        return idx_out, dist_out

    def _identical(self, queries: Clouds, a: int, j: int) -> bool:
        if not (isinstance(queries, Tensor) and isinstance(self.clouds, Tensor)):
            return False
        y = self.clouds[j]
        return queries.shape[1:] == y.shape and torch.equal(queries[a].to(device=y.device, dtype=y.dtype), y)

    def _gelbrich(self, mq: Tensor, cq: Tensor) -> Tensor:
        """``(Q, M)`` Gelbrich bound from cached fitted moments (closed form for D = 2)."""
        if cq.shape[-1] != 2:
            return gelbrich_from_moments(mq, cq, self.mean, self.cov)
        eps = float(torch.finfo(torch.float64).eps)
        qn = (mq * mq).sum(-1)[:, None]
        mean_sq = (qn + self._mean_norm - 2.0 * mq @ self.mean.T) - 8.0 * eps * (qn + self._mean_norm)
        tr_q = torch.diagonal(cq, dim1=1, dim2=2).sum(-1)[:, None]
        det_q = (cq[:, 0, 0] * cq[:, 1, 1] - cq[:, 0, 1] * cq[:, 1, 0]).clamp_min(0.0)[:, None]
        fidelity = (
            (cq.reshape(-1, 4) @ self._flat_cov.T + 2.0 * (det_q * self._det).sqrt()).clamp_min(0.0).sqrt()
        )
        slack = 32.0 * eps * (tr_q + self._trace)
        return (mean_sq.clamp_min(0.0) + tr_q + self._trace - 2.0 * fidelity - slack).clamp_min(0.0).sqrt()

    def _projection_bound(self, q_mean: Tensor, q_proj: Tensor, cand: Tensor) -> Tensor:
        """Sorted-projection bound between one query and fitted clouds ``cand`` (safe against round-off)."""
        means, proj = self.sorted
        n = self.clouds.shape[1]
        eps = float(torch.finfo(torch.float64).eps)
        qn = (q_proj**2).sum(-1)  # (n_bases,)
        fn = self.sorted_norms[:, cand]  # (n_bases, C)
        dots = torch.einsum("bf,bcf->bc", q_proj, proj[:, cand])
        f = q_proj.shape[-1]
        sq = (qn[:, None] + fn - 2.0 * dots - 4.0 * f * eps * (qn[:, None] + fn)).clamp_min(0.0)
        best = sq.max(0).values / n
        dm = means[cand] - q_mean
        best += ((dm * dm).sum(-1) * (1.0 - 4.0 * eps)).clamp_min(0.0)
        return best.sqrt().mul_(1.0 - SAFETY_MARGIN)

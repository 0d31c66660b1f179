"""Parts of :class:`~wbaug.sampling.WassersteinBarycentricSampler` beyond Algorithm 2's core: sampling
around a given landmark set (for the transforms), grid-mode heatmap barycenters, and the warm start of
free-support barycenters from the fit's cached edge matchings."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from wbaug.sampling._validation import as_clouds, check_generator
from wbaug.sampling.dirichlet import sample_dirichlet

__all__ = ["LocalSamplingMixin"]


class LocalSamplingMixin:
    """Mixin of :class:`~wbaug.sampling.WassersteinBarycentricSampler` (uses its fitted attributes)."""

    def _cache_edge_matchings(self, rows: Tensor, cols: Tensor, perms: Tensor) -> None:
        """Keep the optimal matchings of the graph's edges (computed during the fit) to warm-start the
        free-support barycenters: from the largest-weight vertex, the first fixed-point update is then
        free."""
        if perms.shape[0] != rows.numel() or self.graph_.number_of_edges() == 0:
            return
        m = self.n_landmark_sets_
        keys = rows * m + cols
        order = torch.argsort(keys)
        edges = torch.tensor([(min(a, b), max(a, b)) for a, b in self.graph_.edges()], dtype=torch.long)
        edge_keys, _ = torch.sort(edges[:, 0] * m + edges[:, 1])
        pos = torch.searchsorted(keys[order], edge_keys).clamp(max=keys.numel() - 1)
        found = order[pos]
        if not bool((keys[found] == edge_keys).all()):
            return
        self._edge_keys = edge_keys
        self._edge_perms = perms[found]

    def _warm_start(self, table: Tensor, mask: Tensor, lam: Tensor) -> Tensor | None:
        """``(B, N, D)`` first fixed-point update from the largest-weight vertex, from cached edge matchings
        (``None`` when unavailable): ``X1 = sum_s lam_s Y_s[sigma_{t->s}]``."""
        keys = getattr(self, "_edge_keys", None)
        if keys is None or self.correspondence != "ot" or not isinstance(self.landmarks_, Tensor):
            return None
        bsz, _ = table.shape
        m, n = self.n_landmark_sets_, self.n_points_
        top = torch.where(mask, lam, torch.full_like(lam, -1.0)).argmax(1)
        t = table[torch.arange(bsz), top][:, None].expand_as(table)
        other = mask & (table != t)
        key = torch.minimum(t, table) * m + torch.maximum(t, table)
        pos = torch.searchsorted(keys, key).clamp(max=keys.numel() - 1)
        if not bool((keys[pos] == key)[other].all()):
            return None
        perm = self._edge_perms[pos].long()  # stored for (min, max): x_min[i] <-> y_max[perm[i]]
        ident = torch.arange(n).expand_as(perm)
        inverse = torch.empty_like(perm).scatter_(2, perm, ident)
        sigma = torch.where((t < table)[..., None], perm, inverse)
        sigma = torch.where(other[..., None], sigma, ident)
        clouds = self.landmarks_
        vertices = clouds[table.to(clouds.device)]
        matched = vertices.gather(2, sigma.to(clouds.device)[..., None].expand_as(vertices))
        weights = (lam * mask).to(device=clouds.device, dtype=clouds.dtype)
        return torch.einsum("bs,bsnd->bnd", weights, matched)

    def sample_heatmaps(
        self,
        n: int,
        *,
        size: int | tuple[int, int],
        sigma: float,
        reg: float,
        generator: torch.Generator | None = None,
        return_info: bool = False,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        r"""Grid mode: ``n`` barycenters of the cliques' summed-heatmap densities ``(n, H, W)``.

        Same clique and :math:`\lambda` draws as :meth:`sample` (same generator state ⇒ same draws), but the
        barycenter is the entropic (convolutional) W2 barycenter of the landmark heatmap densities on the
        pixel grid, :func:`wbaug.grid.heatmap_barycenter` (padding vertices carry weight 0). Needs
        equal-size 2-D landmark sets.

        Args:
            n: number of samples.
            size, sigma, reg: heatmap size ``(H, W)``, Gaussian ``sigma`` and entropic ``reg`` in pixels.
            generator: source of randomness.
            return_info: also return ``{"cliques", "vertices", "weights"}`` as in :meth:`sample`.
            **kwargs: passed to :func:`wbaug.grid.heatmap_barycenter` (``debiased``, ``max_iter``, ...).
        """
        try:
            from wbaug.grid import heatmap_barycenter
        except ImportError:  # the grid package without its __init__ re-export
            from wbaug.grid.heatmaps import heatmap_barycenter

        cl, lam = self.draw(n, generator=generator)
        clouds = self.landmarks_
        if not isinstance(clouds, Tensor) or clouds.shape[-1] != 2:
            raise ValueError(
                "landmarks: sample_heatmaps needs a sampler fitted on equal-size 2-D landmark sets"
            )
        table, mask = self.clique_table_[cl], self.clique_mask_[cl]
        weights = lam.to(device=clouds.device, dtype=clouds.dtype)
        outs = []
        for s in range(0, n, self.batch_size):
            sl = slice(s, s + self.batch_size)
            outs.append(
                heatmap_barycenter(
                    clouds[table[sl].to(clouds.device)],
                    weights[sl],
                    size=size,
                    sigma=sigma,
                    reg=reg,
                    **kwargs,
                )
            )
        if outs:
            result = torch.cat(outs)
        else:
            h, w = (size, size) if isinstance(size, int) else size
            result = clouds.new_zeros(0, h, w)
        if not return_info:
            return result
        info = {
            "cliques": cl,
            "vertices": torch.where(mask, table, torch.full_like(table, -1)),
            "weights": weights,
        }
        return result, info

    # ------------------------------------------------------------------ around a given sample
    def nearest(self, landmarks: Tensor) -> tuple[Tensor, Tensor]:
        """Exact W2-nearest fitted landmark set of each ``(B, N, D)`` query: indices ``(B,)``, distances
        ``(B,)``."""
        self._check_fitted()
        from wbaug.sampling.nearest import W2NearestNeighbor

        if self._nn is None:
            self._nn = W2NearestNeighbor(self.landmarks_)
        return self._nn.query(landmarks)

    def sample_around(
        self,
        landmarks: Tensor,
        *,
        generator: torch.Generator | None = None,
        nearest: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        r"""Replace each query ``(B, N, D)`` by a random barycenter of a clique around it.

        The query's exact W2-nearest fitted set ``v`` is found (or given as ``nearest (B,)``, e.g. the
        dataset index), a clique containing ``v`` is drawn uniformly, :math:`\lambda \sim
        \mathrm{Dir}(\alpha)`
        and the barycenter is computed with the query in place of ``v``. In ``"ot"`` mode the result is
        reordered through the query's optimal matching, so output point ``j`` is where query point ``j``
        moved (the correspondence the paired TPS warp uses). A query whose ``v`` is isolated is returned
        unchanged. Needs equal-size fitted clouds.

        Returns:
            ``(B, N, D)`` new landmarks and info ``{"nearest", "cliques", "vertices", "weights"}``.
        """
        self._check_fitted()
        check_generator(generator)
        if not isinstance(self.landmarks_, Tensor):
            raise ValueError("landmarks: sample_around needs a sampler fitted on equal-size landmark sets")
        x = as_clouds(landmarks, "landmarks", min_count=0)
        if x.shape[1:] != self.landmarks_.shape[1:]:
            raise ValueError(
                f"landmarks must have shape (B, {self.n_points_}, {self.n_dims_}) like the fitted sets, "
                f"got {tuple(x.shape)}"
            )
        bsz = x.shape[0]
        if nearest is None:
            v, _ = self.nearest(x)
        else:
            v = torch.as_tensor(nearest, dtype=torch.long).reshape(-1).cpu()
            if v.numel() != bsz or bool((v < 0).any()) or bool((v >= self.n_landmark_sets_).any()):
                raise ValueError(f"nearest must hold {bsz} indices in [0, {self.n_landmark_sets_})")
        dev = generator.device if generator is not None else torch.device("cpu")
        counts = (self._vc_ptr[v + 1] - self._vc_ptr[v]).clamp_min(1)
        u = torch.rand(bsz, generator=generator, dtype=torch.float64, device=dev).cpu()
        pick = torch.minimum((u * counts).long(), counts - 1)
        has = self._vc_ptr[v + 1] > self._vc_ptr[v]  # isolated='drop' may leave a vertex without clique
        cl = self._vc_index[(self._vc_ptr[v] + pick).clamp(max=self._vc_index.numel() - 1)]
        table, mask = self.clique_table_[cl].clone(), self.clique_mask_[cl].clone()
        table[~has] = v[~has, None]
        mask[~has] = False
        mask[~has, 0] = True
        lam = sample_dirichlet(self.concentration, mask.to(dev), generator=generator).cpu()
        vertices = self.landmarks_[table.to(self.landmarks_.device)].clone()
        slot = (table == v[:, None]) & mask
        xv = x.to(device=vertices.device, dtype=vertices.dtype)
        vertices[slot.to(vertices.device)] = xv
        lam_d = lam.to(device=vertices.device, dtype=vertices.dtype)
        if self.correspondence == "index":
            from wbaug.sampling.barycenters import index_barycenters

            out = index_barycenters(vertices, lam_d)
        else:
            from wbaug.sampling.barycenters import ot_barycenters

            bary, sigma = ot_barycenters(
                vertices, lam_d, mask.to(vertices.device), max_iter=self.max_iter, tol=self.tol
            )
            s_idx = slot.float().argmax(1).to(sigma.device)
            perm = sigma[torch.arange(bsz, device=sigma.device), s_idx]  # (B, N): query point matched to i
            out = torch.empty_like(bary)
            out.scatter_(1, perm[..., None].expand_as(bary), bary)
        info = {
            "nearest": v,
            "cliques": cl,
            "vertices": torch.where(mask, table, torch.full_like(table, -1)),
            "weights": lam.to(vertices.dtype),
        }
        return out.to(device=landmarks.device, dtype=x.dtype), info

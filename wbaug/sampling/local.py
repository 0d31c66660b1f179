"""Parts of :class:`~wbaug.sampling.WassersteinBarycentricSampler` beyond Algorithm 2's core: sampling
around a given landmark set (for the transforms), grid-mode heatmap barycenters, and the warm start of
free-support barycenters from the fit's cached edge matchings."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from wbaug._random import generator_device
from wbaug.landmarks.geometry import estimate_similarity
from wbaug.sampling._validation import Clouds, as_clouds, check_generator
from wbaug.sampling.barycenters import index_barycenters, masked_index_barycenters, ot_barycenters
from wbaug.sampling.dirichlet import log_gamma_variates

__all__ = ["LocalSamplingMixin"]


def _similarity_apply(points: Tensor, matrix: Tensor) -> Tensor:
    """``(B, N, D)`` points (float64) through ``(B, D+1, D+1)`` homogeneous maps.

    The per-sample hot path of the transform: :func:`wbaug.landmarks.geometry.apply_transform` validates
    its arguments (~0.27 ms a call, measured), which these internally built matrices do not need."""
    d = points.shape[-1]
    m = matrix.to(device=points.device, dtype=torch.float64)
    return points.to(torch.float64) @ m[:, :d, :d].transpose(1, 2) + m[:, None, :d, d]


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
    def _visible_clouds(self) -> Clouds:
        """The fitted clouds as the W2 graph saw them (visible points only after a masked fit)."""
        vis = getattr(self, "visibility_", None)
        if vis is None or not isinstance(self.landmarks_, Tensor):
            return self.landmarks_
        return [x[v] for x, v in zip(self.landmarks_, vis.to(self.landmarks_.device))]

    def nearest(self, landmarks: Clouds) -> tuple[Tensor, Tensor]:
        """Exact W2-nearest fitted landmark set of each query ``(B, N, D)`` (or list of ``(N_b, D)``):
        indices ``(B,)``, distances ``(B,)``."""
        self._check_fitted()
        from wbaug.sampling.nearest import W2NearestNeighbor

        if self._nn is None:
            self._nn = W2NearestNeighbor(self._visible_clouds())
        return self._nn.query(landmarks)

    def draw_variates(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        r"""The randomness of :meth:`sample_around` for ``n`` queries, drawn before the queries are seen (as
        kornia's ``generate_parameters`` must): ``u (n,)`` uniform picks a clique among those containing the
        query's nearest fitted set, ``log_gamma (n, S_max)`` are log-Gamma(α) variates whose masked softmax
        over the clique is :math:`\lambda \sim \mathrm{Dir}(\alpha)`. Float64, on the CPU."""
        self._check_fitted()
        check_generator(generator)
        dev = generator_device(generator)
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=dev).cpu()
        log_gamma = log_gamma_variates(
            self.concentration, (n, self.clique_table_.shape[1]), generator=generator, device=dev
        ).cpu()
        return {"u": u, "log_gamma": log_gamma}

    def _fitted_index_of(self, x: Tensor) -> np.ndarray:
        """``(B,)`` index of the fitted set each query equals exactly (-1: none), by hashing (the table is
        built on first use: one hash per fitted set). NumPy, not torch: this runs once per pipeline sample,
        where a handful of small torch ops would cost more than the sampling itself."""
        table = getattr(self, "_hash_table", None)
        if table is None:
            rows = self.landmarks_.detach().cpu().numpy()
            table = {}
            for i, row in enumerate(rows):
                table.setdefault(hash(row.tobytes()), i)
            self._hash_table = table
            self._hash_rows = rows
        queries = x.detach().to("cpu", self.landmarks_.dtype).numpy()
        found = np.full(len(queries), -1, dtype=np.int64)
        for b, row in enumerate(queries):
            i = table.get(hash(row.tobytes()))
            if i is not None and np.array_equal(self._hash_rows[i], row):  # a hash is not a proof
                found[b] = i
        return found

    def _frame(self, x: Tensor, vis: Tensor | None, target: Tensor) -> Tensor:
        """``(B, D+1, D+1)`` least-squares similarity moving the queries onto ``target`` (visible points)."""
        x64 = x.to(torch.float64)
        w = torch.ones(x.shape[:2], dtype=torch.float64) if vis is None else vis.to(torch.float64)
        w = w.to(x.device)
        x64 = torch.where(w[..., None] > 0, x64, 0.0)
        mean = (w[..., None] * x64).sum(1, keepdim=True) / w.sum(1).clamp_min(1)[:, None, None]
        spread = (w * ((x64 - mean) ** 2).sum(-1)).sum(1)
        if bool((spread <= 0).any()):
            raise ValueError(
                "landmarks: a key-point set is degenerate (fewer than two distinct visible points), "
                "so no similarity aligns it to the fitted frame"
            )
        return estimate_similarity(x64, target.to(torch.float64), weights=w)

    def sample_around(
        self,
        landmarks: Tensor,
        *,
        generator: torch.Generator | None = None,
        nearest: Tensor | None = None,
        visibility: Tensor | None = None,
        variates: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        r"""Replace each query ``(B, N, D)`` by a random barycenter of a clique around it.

        With ``frame="similarity"`` (default) the query may be in any frame (after a resize, crop or
        affine of the pipeline): it is moved onto the fitted frame by the least-squares similarity
        :math:`T` to the fitted mean shape, its exact W2-nearest fitted set ``v`` is found (or given as
        ``nearest (B,)``, e.g. the dataset index), :math:`T` is refined onto ``X_v``, the barycenter is
        computed there and mapped back by :math:`T^{-1}`; so the result is similarity-equivariant and
        always in the query's frame. ``frame="fitted"`` skips the alignment (queries must already be in
        the fitted frame). A clique containing ``v`` is drawn uniformly, :math:`\lambda \sim
        \mathrm{Dir}(\alpha)`, and the barycenter is computed with the query in place of ``v``. In
        ``"ot"`` mode the result is reordered through the query's optimal matching, so output point ``j``
        is where query point ``j`` moved. A query whose ``v`` is isolated is returned unchanged.

        Args:
            landmarks: ``(B, N, D)`` queries (equal-size fitted sets needed).
            generator: source of randomness (``None``: torch's global RNG).
            nearest: optional ``(B,)`` fitted indices standing for the queries.
            visibility: optional ``(B, N)`` bool: invisible query points (any value, even NaN) take no part
                (``"index"`` mode); point ``n`` of the result is invisible where no vertex sees it.
            variates: pre-drawn randomness from :meth:`draw_variates` (replaces ``generator``).

        Returns:
            ``(B, N, D)`` new landmarks and info ``{"nearest", "cliques", "vertices", "weights"}`` (plus
            ``"visibility" (B, N)`` when visibility is involved).
        """
        self._check_fitted()
        check_generator(generator)
        if not isinstance(self.landmarks_, Tensor):
            raise ValueError("landmarks: sample_around needs a sampler fitted on equal-size landmark sets")
        fitted_vis = getattr(self, "visibility_", None)
        vis = None
        if visibility is not None:
            vis = torch.as_tensor(visibility).to("cpu", torch.bool)
            if vis.shape != tuple(landmarks.shape[:-1]):
                raise ValueError(
                    f"visibility must have shape {tuple(landmarks.shape[:-1])} like the landmarks' points, "
                    f"got {tuple(vis.shape)}"
                )
            if bool(vis.all()):
                vis = None
        if vis is not None and self.correspondence != "index":
            raise ValueError(
                "visibility: sampling around partly visible key-points needs correspondence='index'"
            )
        query = landmarks if vis is None else torch.where(vis[..., None].to(landmarks.device), landmarks, 0.0)
        x = as_clouds(query, "landmarks", min_count=0)
        if x.shape[1:] != self.landmarks_.shape[1:]:
            raise ValueError(
                f"landmarks must have shape (B, {self.n_points_}, {self.n_dims_}) like the fitted sets, "
                f"got {tuple(x.shape)}"
            )
        bsz = x.shape[0]
        fitted = self.landmarks_
        xd = x.to(device=fitted.device, dtype=fitted.dtype)
        # the usual dataset case: the query is one of the fitted sets, in the fitted frame (W2 = 0,
        # the aligning similarity is the identity); found by hashing, no search, no alignment. The index
        # bookkeeping below is NumPy on the CPU: per pipeline sample, small torch ops (boolean-mask writes
        # above all) cost more than the barycenter itself.
        same = self._fitted_index_of(xd) if vis is None else np.full(bsz, -1, dtype=np.int64)
        if nearest is None:
            v = same.copy()
            search = np.flatnonzero(v < 0)
            if search.size > 0:
                search_t = torch.from_numpy(search)
                sub = xd[search_t.to(xd.device)]
                sub_vis = None if vis is None else vis[search_t]
                if self.frame == "similarity":
                    frame0 = self._frame(sub, sub_vis, self._mean_shape().expand_as(sub))
                    aligned = _similarity_apply(sub, frame0).to(fitted.dtype)
                else:
                    aligned = sub
                if sub_vis is None:
                    v[search] = self.nearest(aligned)[0].numpy()
                else:
                    clouds = [a[m] for a, m in zip(aligned, sub_vis.to(aligned.device))]
                    v[search] = self.nearest(clouds)[0].numpy()
        else:
            v = torch.as_tensor(nearest, dtype=torch.long).reshape(-1).cpu().numpy().copy()
            if v.size != bsz or bool((v < 0).any()) or bool((v >= self.n_landmark_sets_).any()):
                raise ValueError(f"nearest must hold {bsz} indices in [0, {self.n_landmark_sets_})")
        # rows that must be moved onto their nearest set's frame (none with frame="fitted")
        moved_idx = np.flatnonzero(same != v) if self.frame == "similarity" else np.empty(0, dtype=np.int64)
        xa = xd
        frame = None
        if moved_idx.size > 0:
            rows, v_moved = torch.from_numpy(moved_idx), torch.from_numpy(v[moved_idx])
            pair_vis = None if vis is None else vis[rows]
            if fitted_vis is not None:
                fv = fitted_vis[v_moved]
                pair_vis = fv if pair_vis is None else pair_vis & fv
            frame = self._frame(xd[rows.to(xd.device)], pair_vis, fitted[v_moved.to(fitted.device)])
            xa = xd.clone()
            xa[rows.to(xa.device)] = _similarity_apply(xd[rows.to(xd.device)], frame).to(xa.dtype)
        if variates is None:
            variates = self.draw_variates(bsz, generator=generator)
        u, log_gamma = variates["u"].reshape(-1).cpu(), variates["log_gamma"].cpu()
        if u.numel() != bsz or log_gamma.shape != (bsz, self.clique_table_.shape[1]):
            raise ValueError(
                f"variates must hold u ({bsz},) and log_gamma ({bsz}, {self.clique_table_.shape[1]}), got "
                f"{tuple(u.shape)} and {tuple(log_gamma.shape)}"
            )
        ptr, owners = self._vc_ptr.numpy(), self._vc_index.numpy()
        first, stop = ptr[v], ptr[v + 1]
        counts = np.maximum(stop - first, 1)
        pick = np.minimum((u.numpy() * counts).astype(np.int64), counts - 1)
        cl = owners[np.minimum(first + pick, owners.size - 1)]
        table, mask = self.clique_table_.numpy()[cl], self.clique_mask_.numpy()[cl]  # copies
        lonely = stop <= first  # isolated='drop' may leave a vertex without clique: return it unchanged
        if lonely.any():
            table[lonely] = v[lonely, None]
            mask[lonely] = False
            mask[lonely, 0] = True
        slot_of = ((table == v[:, None]) & mask).argmax(1)  # the query's slot: v is in its clique once
        batch = torch.arange(bsz)
        slot_t = torch.from_numpy(slot_of)
        table_t, mask_t = torch.from_numpy(table), torch.from_numpy(mask)
        lam = torch.softmax(log_gamma.masked_fill(~mask_t, float("-inf")), dim=1)
        vertices = fitted[table_t.to(fitted.device)]
        vertices[batch.to(vertices.device), slot_t.to(vertices.device)] = xa
        lam_d = lam.to(device=vertices.device, dtype=vertices.dtype)
        out_vis = None
        if self.correspondence == "index" and (vis is not None or fitted_vis is not None):
            point_vis = (
                fitted_vis[table_t]
                if fitted_vis is not None
                else torch.ones(table.shape + (x.shape[1],), dtype=torch.bool)
            )
            point_vis = point_vis & mask_t[..., None]
            if vis is not None:
                point_vis[batch, slot_t] = vis
            out, out_vis = masked_index_barycenters(vertices, lam_d, point_vis.to(vertices.device))
        elif self.correspondence == "index":
            out = index_barycenters(vertices, lam_d)
        else:
            bary, sigma = ot_barycenters(
                vertices, lam_d, mask_t.to(vertices.device), max_iter=self.max_iter, tol=self.tol
            )
            perm = sigma[batch.to(sigma.device), slot_t.to(sigma.device)]  # (B, N): query point matched to i
            out = torch.empty_like(bary)
            out.scatter_(1, perm[..., None].expand_as(bary), bary)
        if frame is not None:  # back to the query's frame
            rows = torch.from_numpy(moved_idx).to(out.device)
            out = out.clone()
            out[rows] = _similarity_apply(out[rows], torch.linalg.inv(frame)).to(out.dtype)
        out = out.to(x.dtype)
        info = {
            "nearest": torch.from_numpy(v),
            "cliques": torch.from_numpy(cl),
            "vertices": torch.from_numpy(np.where(mask, table, -1)),
            "weights": lam.to(vertices.dtype),
        }
        if out_vis is not None:
            info["visibility"] = out_vis.cpu()
            out = torch.where(out_vis[..., None].to(out.device), out, float("nan"))
        return out.to(device=landmarks.device), info

    def _mean_shape(self) -> Tensor:
        """``(N, D)`` mean fitted landmark set (over visible points), the first alignment target."""
        cached = getattr(self, "_mean_shape_cache", None)
        if cached is None:
            x = self.landmarks_
            vis = getattr(self, "visibility_", None)
            if vis is None:
                cached = x.mean(0)
            else:
                w = vis.to(device=x.device, dtype=x.dtype)[..., None]
                cached = (x * w).sum(0) / w.sum(0).clamp_min(1)
            self._mean_shape_cache = cached
        return cached

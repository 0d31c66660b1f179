r"""``WassersteinBarycentricSampler``: Algorithm 2 of Bespalov et al., "Data augmentation with manifold
barycenters" (§3.1), as a fitted estimator."""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm

from wbaug.sampling._validation import (
    Clouds,
    as_clouds,
    check_generator,
    check_nonnegative_int,
    check_positive_float,
    cloud_count,
)
from wbaug.sampling.barycenters import clique_barycenters, masked_index_barycenters
from wbaug.sampling.cliques import clique_probabilities, maximal_cliques, pad_cliques
from wbaug.sampling.dirichlet import sample_dirichlet
from wbaug.sampling.graph import (
    build_neighborhood_graph,
    exact_knn,
    knn_from_pairs,
    neighborhood_edges,
    pair_distance_matrix,
)
from wbaug.sampling.grid_search import grid_search
from wbaug.sampling.local import LocalSamplingMixin
from wbaug.sampling.persistence import CONFIG_KEYS, load_state, save_state
from wbaug.transforms.barycentric import apply_barycentric, draw_barycentric_params
from wbaug.transforms.flip import Visibility

__all__ = ["WassersteinBarycentricSampler", "available_memory"]


def available_memory() -> int | None:
    """Bytes of physical memory available now (``None`` where the platform does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _agreed_seconds(seconds: float) -> float:
    """The fit time every rank records under :mod:`torch.distributed` (the slowest rank's), so that all
    ranks hold, and save, the same state; ``seconds`` unchanged in a single process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t)


class WassersteinBarycentricSampler(LocalSamplingMixin, v2.Transform):
    r"""Sample new landmark sets as random Wasserstein barycenters of neighbouring ones (Algorithm 2).

    ``fit`` builds the neighbourhood graph :math:`G_\theta`, :math:`\theta = (\varepsilon, k)`: edge
    :math:`\{i,j\}` iff :math:`W_2(X_i, X_j) < \varepsilon` and ``j`` is among the ``k`` nearest neighbours
    of ``i`` or ``i`` among those of ``j`` (``symmetrize="union"``; ``"mutual"`` for AND). It finds the
    maximal cliques :math:`K(G)`, weights vertices by :math:`p_i = 1/|\{\sigma\in K(G): i\in\sigma\}|` and
    cliques by :math:`P(\sigma) \propto \sum_{i\in\sigma} p_i`. ``sample(n)`` draws ``n`` cliques with
    replacement, barycentric coordinates :math:`\lambda \sim \mathrm{Dir}(\alpha\mathbf 1)` and returns the
    weighted barycenters :math:`\bar\mu(\lambda) = \arg\min_\mu \sum_i \lambda_i W_2^2(\mu_i, \mu)`.

    ``correspondence`` selects the barycenter:

    * ``"index"`` (default; ordered layouts such as iBUG-68 faces or pose joints): exactly
      :math:`\sum_s \lambda_s X_s`, the W2 barycenter with the coupling fixed to the identity, so landmark
      ``n`` stays landmark ``n``. The graph still uses true W2.
    * ``"ot"`` (the paper's choice for unordered contours): free-support W2 barycenter of the clouds as
      unordered uniform measures. Each output point is :math:`\sum_s\lambda_s x_{s,\sigma_s(i)}` for
      optimal matchings :math:`\sigma_s`; point indices carry no meaning (on faces only ~1/3 of the points
      keep their index, and a paired warp then relabels ~16 % of the landmarks of ~half the samples).
      Lists of clouds of different sizes need this mode.

    Isolated vertices (no neighbour) are 1-cliques (``isolated="keep"``, paper): drawing one returns an
    exact copy of that landmark set. ``isolated="drop"`` never samples them.

    **As a torchvision v2 transform** a fitted sampler augments samples ``(image, KeyPoints, ...)``, dicts
    or any nested structure: with probability ``p`` it replaces the key-points by a random barycenter of a
    clique around them (:meth:`sample_around`) and, with ``paired=True``, warps images, videos, masks
    and boxes with a thin-plate spline so they follow the new landmarks (the functional core:
    :func:`wbaug.transforms.draw_barycentric_params` / :func:`wbaug.transforms.apply_barycentric`).
    ``KeyPoints`` ``(N, D)`` or a batch ``(B, N, D)`` (one draw and warp per set; images ``(B, C, H, W)``);
    an optional :class:`~wbaug.transforms.Visibility` ``(N,)`` / ``(B, N)`` of the sample marks missing
    points. It works wherever it sits in a pipeline (``frame="similarity"``): key-points after a resize,
    crop or affine are aligned to the fitted frame, sampled there and mapped back.

    Args:
        k_neighbors: ``k`` of the kNN graph (``1 <= k < M``; paper: 6).
        epsilon: distance threshold :math:`\varepsilon` in the units of the landmarks (``None``: none;
            paper: 0.1 on [0, 1]-normalised coordinates).
        concentration: Dirichlet :math:`\alpha > 0` (1: uniform on each simplex, paper default).
        correspondence: ``"index"`` or ``"ot"`` (see above).
        max_clique_size: split larger cliques into all subsets of this size (seed code: 3); ``None``: keep.
        isolated: ``"keep"`` or ``"drop"`` 1-cliques.
        symmetrize: ``"union"`` or ``"mutual"`` kNN symmetrisation.
        knn_method: ``"pruned"`` (exact kNN, exact W2 only on candidate pairs) or ``"brute"`` (all pairs).
        max_iter, tol: free-support barycenter iterations (``"ot"`` mode).
        batch_size: barycenters computed per batch in :meth:`sample`.
        progress: show progress bars (``None``: only on a terminal).
        p: transform: probability of augmenting a sample (each landmark set of a batch separately).
        paired: transform: also warp images/videos/masks/boxes (``False``: key-points only, the unpaired
            "landmarks domain").
        frame: transform and :meth:`sample_around`: ``"similarity"`` aligns queries to the fitted frame
            (any position, scale, rotation); ``"fitted"`` takes them as they are and checks the
            ``KeyPoints.canvas_size`` against ``fit(..., canvas_size=)``.
        grid_stride, tps_regularization, padding_mode: the paired warp (see
            :func:`~wbaug.transforms.tps_warp_image`).
        generator: the transform's source of randomness (``None``: torch's global RNG, so
            ``torch.manual_seed`` and DataLoader worker seeding apply).

    Fitted attributes: ``landmarks_``, ``distances_`` (sparse COO ``(M, M)``, symmetric, coalesced: the
    exact W2 of every evaluated pair, pairs the pruning skipped are absent; all off-diagonal pairs with
    ``knn_method="brute"``), ``n_exact_solves_`` / ``communication_bytes_`` (exact OT problems this fit
    solved and bytes this process sent to other ranks; not saved), ``knn_indices_``/``knn_distances_``
    ``(M, k)``, ``n_pairs_evaluated_``, ``graph_`` (``networkx.Graph``), ``cliques_`` (list of sorted
    tuples), ``clique_table_``/``clique_mask_`` ``(C, S_max)``, ``vertex_weights_`` ``(M,)``,
    ``clique_probs_`` ``(C,)``, ``visibility_`` ``(M, N)`` (or ``None``), ``canvas_size_``, ``fit_time_``.

    Example:
        >>> from wbaug.datasets import synthetic_faces
        >>> faces = synthetic_faces(200, generator=torch.Generator().manual_seed(0))
        >>> sampler = WassersteinBarycentricSampler(k_neighbors=6, p=1.0, paired=True).fit(faces)
        >>> sampler.sample(10, generator=torch.Generator().manual_seed(1)).shape
        torch.Size([10, 68, 2])
        >>> pipeline = v2.Compose([v2.ToImage(), sampler, v2.ToDtype(torch.float32, scale=True)])
        >>> image = torch.zeros(3, 256, 256, dtype=torch.uint8)
        >>> out, kp = pipeline(image, tv_tensors.KeyPoints(faces[0], canvas_size=(256, 256)))
        >>> out.shape, kp.shape
        (torch.Size([3, 256, 256]), torch.Size([68, 2]))
    """

    _transformed_types = (Tensor, PIL.Image.Image)

    def __init__(
        self,
        k_neighbors: int = 6,
        epsilon: float | None = None,
        *,
        concentration: float = 1.0,
        correspondence: Literal["index", "ot"] = "index",
        max_clique_size: int | None = None,
        isolated: Literal["keep", "drop"] = "keep",
        symmetrize: Literal["union", "mutual"] = "union",
        knn_method: Literal["pruned", "brute"] = "pruned",
        max_iter: int = 100,
        tol: float = 1e-7,
        batch_size: int = 1024,
        progress: bool | None = None,
        p: float = 0.5,
        paired: bool = False,
        frame: Literal["similarity", "fitted"] = "similarity",
        grid_stride: int = 1,
        tps_regularization: float = 0.0,
        padding_mode: Literal["zeros", "border", "reflection"] = "border",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.k_neighbors = check_nonnegative_int(k_neighbors, "k_neighbors", minimum=1)
        self.epsilon = check_positive_float(epsilon, "epsilon", allow_none=True)
        self.concentration = check_positive_float(concentration, "concentration")
        if correspondence not in ("ot", "index"):
            raise ValueError(f"correspondence must be 'ot' or 'index', got {correspondence!r}")
        self.correspondence = correspondence
        if max_clique_size is not None:
            max_clique_size = check_nonnegative_int(max_clique_size, "max_clique_size", minimum=1)
        self.max_clique_size = max_clique_size
        if isolated not in ("keep", "drop"):
            raise ValueError(f"isolated must be 'keep' or 'drop', got {isolated!r}")
        self.isolated = isolated
        if symmetrize not in ("union", "mutual"):
            raise ValueError(f"symmetrize must be 'union' or 'mutual', got {symmetrize!r}")
        self.symmetrize = symmetrize
        if knn_method not in ("pruned", "brute"):
            raise ValueError(f"knn_method must be 'pruned' or 'brute', got {knn_method!r}")
        self.knn_method = knn_method
        self.max_iter = check_nonnegative_int(max_iter, "max_iter", minimum=1)
        self.tol = check_positive_float(tol, "tol", allow_zero=True)
        self.batch_size = check_nonnegative_int(batch_size, "batch_size", minimum=1)
        self.progress = progress
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        if not isinstance(paired, bool):
            raise TypeError(f"paired must be a bool, got {type(paired).__name__}")
        self.paired = paired
        if frame not in ("similarity", "fitted"):
            raise ValueError(f"frame must be 'similarity' or 'fitted', got {frame!r}")
        self.frame = frame
        self.grid_stride = check_nonnegative_int(grid_stride, "grid_stride", minimum=1)
        self.tps_regularization = check_positive_float(
            tps_regularization, "tps_regularization", allow_zero=True
        )
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.generator = check_generator(generator)
        self._nn = None

    # ------------------------------------------------------------------ configuration
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able)."""
        return {key: getattr(self, key) for key in CONFIG_KEYS}

    def __repr__(self) -> str:
        # scikit-learn style: the arguments that differ from their defaults, then the fitted state
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v)
        state = "not fitted"
        if self.is_fitted:
            n = "ragged" if self.n_points_ is None else self.n_points_
            state = (
                f"fitted: M={self.n_landmark_sets_} sets, N={n} points, D={self.n_dims_}, "
                f"{self._n_edges} edges, {len(self.cliques_)} cliques"
            )
        return f"{type(self).__name__}({args}) [{state}]"

    @property
    def graph_(self) -> Any:
        """The fitted ε + kNN graph as a ``networkx.Graph`` (edge attribute ``weight`` = W2); after
        :meth:`load` it is built on first access."""
        if not self.is_fitted:
            raise AttributeError("graph_ exists once the sampler is fitted")
        if self._graph is None:
            self._graph = build_neighborhood_graph(
                self.knn_indices_,
                self.knn_distances_,
                symmetrize=self.symmetrize,
                num_nodes=self.n_landmark_sets_,
            )
        return self._graph

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "clique_probs_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(landmarks) first")

    def _bar(self, progress: bool | None) -> bool | None:
        flag = self.progress if progress is None else progress
        return None if flag is None else not flag

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        landmarks: Tensor | np.ndarray | Sequence[Tensor],
        *,
        visibility: Tensor | np.ndarray | None = None,
        canvas_size: tuple[int, int] | None = None,
        distances: Tensor | np.ndarray | None = None,
        progress: bool | None = None,
    ) -> WassersteinBarycentricSampler:
        """Build the graph, cliques and probabilities from ``(M, N, D)`` landmarks (or a list of ``(N_i,
        D)``). The sampler keeps its own copy: editing ``landmarks`` afterwards changes nothing.

        Args:
            landmarks: the training landmark sets.
            visibility: optional ``(M, N)`` bool flags for missing or occluded points (their coordinates
                are ignored, NaN allowed). Distances are W2 between the uniform measures on the visible
                points, so the graph is the one of an unmasked fit on the visible-only clouds; ``"ot"``
                barycenters are those of the visible-only clouds (:meth:`sample` returns a list),
                ``"index"`` barycenters average each landmark over the clique members that see it.
            canvas_size: optional ``(H, W)`` of the frame the landmarks are in (checked by the transform
                with ``frame="fitted"``).
            distances: optional precomputed ``(M, M)`` symmetric W2 matrix (then no OT is solved here).
            progress: override the constructor's ``progress``.

        Returns:
            ``self``.
        """
        vis = None
        if visibility is not None:
            if isinstance(landmarks, (list, tuple)):
                raise ValueError("visibility needs landmarks as one (M, N, D) array, not a list of clouds")
            vis = torch.as_tensor(
                np.asarray(visibility) if not isinstance(visibility, Tensor) else visibility
            )
            if vis.dtype != torch.bool:
                raise TypeError(f"visibility must be a bool array, got dtype {vis.dtype}")
            lm = landmarks if isinstance(landmarks, Tensor) else torch.from_numpy(np.asarray(landmarks))
            if lm.ndim != 3 or tuple(vis.shape) != tuple(lm.shape[:2]):
                raise ValueError(
                    f"visibility must have shape (M, N) = {tuple(lm.shape[:2])} like landmarks, got "
                    f"{tuple(vis.shape)}"
                )
            vis = vis.cpu().clone()
            if bool((vis.sum(1) == 0).any()):
                raise ValueError("visibility: every landmark set needs at least one visible point")
            landmarks = torch.where(vis[..., None].to(lm.device), lm, torch.zeros((), dtype=lm.dtype))
            if bool(vis.all()):
                vis = None
        clouds = as_clouds(landmarks, "landmarks")
        # own the data: later edits of the caller's array must not change the fitted sampler
        clouds = clouds.clone() if isinstance(clouds, Tensor) else [c.clone() for c in clouds]
        m = cloud_count(clouds)
        if self.correspondence == "index" and not isinstance(clouds, Tensor):
            raise ValueError(
                "landmarks: landmark sets of different sizes need correspondence='ot' (or pass equal-size "
                "sets with a visibility mask)"
            )
        if self.k_neighbors >= m:
            raise ValueError(
                f"k_neighbors must be < the number of landmark sets M={m}, got {self.k_neighbors}"
            )
        if canvas_size is not None:
            if len(canvas_size) != 2 or min(int(c) for c in canvas_size) < 1:
                raise ValueError(f"canvas_size must be (H, W) with positive ints, got {canvas_size!r}")
            canvas_size = (int(canvas_size[0]), int(canvas_size[1]))
        graph_clouds = clouds if vis is None else [x[v] for x, v in zip(clouds, vis.to(clouds.device))]
        if vis is not None and self.correspondence == "ot":
            clouds = graph_clouds  # "ot" on a mask is exactly "ot" on the visible-only clouds
            vis = None
        start = time.perf_counter()
        k = self.k_neighbors
        matchings = None
        self.n_exact_solves_, self.communication_bytes_ = 0, 0
        if distances is not None:
            dist = distances if isinstance(distances, Tensor) else torch.from_numpy(np.asarray(distances))
            if dist.shape != (m, m):
                raise ValueError(f"distances must have shape ({m}, {m}), got {tuple(dist.shape)}")
            dist = dist.detach().to("cpu", torch.float64)
            if not bool(torch.isfinite(dist).all()) or bool((dist < 0).any()):
                raise ValueError("distances must be finite and non-negative")
            iu = torch.triu_indices(m, m, offset=1)
            rows, cols, vals = iu[0], iu[1], dist[iu[0], iu[1]]
            knn_idx, knn_dist = knn_from_pairs(rows, cols, vals, m, k, epsilon=self.epsilon)
        else:
            found = exact_knn(
                graph_clouds,
                k,
                epsilon=self.epsilon,
                method=self.knn_method,
                progress=self.progress if progress is None else progress,
                return_matchings=isinstance(graph_clouds, Tensor),
            )
            knn_idx, knn_dist, matchings = found.indices, found.distances, found.matchings
            self.n_exact_solves_, self.communication_bytes_ = found.n_solves, found.communication_bytes
            rows, cols, vals = found.pair_rows, found.pair_cols, found.pair_values
        ref = clouds if isinstance(clouds, Tensor) else clouds[0]
        pairs = pair_distance_matrix(rows, cols, vals, m, dtype=ref.dtype)
        self._set_fitted(clouds, knn_idx, knn_dist, pairs, int(rows.numel()), visibility=vis)
        self.canvas_size_ = canvas_size
        if matchings is not None:
            self._cache_edge_matchings(matchings.rows, matchings.cols, matchings.perms)
        self.fit_time_ = _agreed_seconds(time.perf_counter() - start)
        return self

    def _set_fitted(
        self,
        clouds: Clouds,
        knn_idx: Tensor,
        knn_dist: Tensor,
        distances: Tensor,
        n_pairs: int,
        *,
        visibility: Tensor | None = None,
        cliques: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        """Set the fitted state; ``cliques`` (a validated ``(table, mask)`` from a file) skips their
        enumeration, and the ``networkx`` graph is then built only when ``graph_`` is first read."""
        m = cloud_count(clouds)
        self.landmarks_ = clouds
        self.visibility_ = visibility
        self.canvas_size_: tuple[int, int] | None = None
        self.n_landmark_sets_ = m
        self.n_points_ = clouds.shape[1] if isinstance(clouds, Tensor) else None
        self.n_dims_ = clouds.shape[-1] if isinstance(clouds, Tensor) else clouds[0].shape[-1]
        self.knn_indices_ = knn_idx
        self.knn_distances_ = knn_dist
        self.distances_ = distances
        self.n_pairs_evaluated_ = n_pairs
        self._n_edges = int(neighborhood_edges(knn_idx, knn_dist, symmetrize=self.symmetrize)[0].numel())
        if cliques is None:
            self._graph = build_neighborhood_graph(knn_idx, knn_dist, symmetrize=self.symmetrize, num_nodes=m)
            self.cliques_ = maximal_cliques(
                self._graph, max_clique_size=self.max_clique_size, isolated=self.isolated
            )
            cliques = pad_cliques(self.cliques_)
        else:
            self._graph = None
            table, mask = cliques
            self.cliques_ = [tuple(row[:n]) for row, n in zip(table.tolist(), mask.sum(1).tolist())]
        self._set_cliques(self.cliques_, *cliques, m)
        self._edge_keys = None
        self._edge_perms = None
        self._mean_shape_cache = None
        self._hash_table = None

    def _set_cliques(self, cliques: list[tuple[int, ...]], table: Tensor, mask: Tensor, m: int) -> None:
        """``cliques`` and their padded ``(table, mask)`` (:func:`pad_cliques`) on ``m`` vertices."""
        self.vertex_weights_, self.clique_probs_ = clique_probabilities(cliques, m)
        self.clique_table_, self.clique_mask_ = table, mask
        self.clique_sizes_ = self.clique_mask_.sum(1)
        # CSR map vertex -> cliques containing it (for sample_around)
        members = self.clique_table_[self.clique_mask_]
        owner = torch.arange(len(cliques))[:, None].expand_as(self.clique_table_)[self.clique_mask_]
        order = torch.argsort(members * len(cliques) + owner)
        self._vc_index = owner[order]
        counts = torch.bincount(members, minlength=m)
        self._vc_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
        self._nn = None

    # ------------------------------------------------------------------ sampling
    def draw(self, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` clique indices ``(n,)`` (``∝ clique_probs_``) and weights ``(n, S_max)`` (Dirichlet on
        each clique, 0 on padding) without computing barycenters."""
        self._check_fitted()
        n = check_nonnegative_int(n, "n")
        check_generator(generator)
        if n == 0:
            return torch.zeros(0, dtype=torch.long), torch.zeros(
                0, self.clique_table_.shape[1], dtype=torch.float64
            )
        dev = generator.device if generator is not None else torch.device("cpu")
        cl = torch.multinomial(self.clique_probs_.to(dev), n, replacement=True, generator=generator).cpu()
        lam = sample_dirichlet(self.concentration, self.clique_mask_[cl].to(dev), generator=generator).cpu()
        return cl, lam

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        return_info: bool = False,
        progress: bool | None = None,
    ) -> Tensor | list[Tensor] | tuple[Tensor | list[Tensor], dict[str, Tensor]]:
        r"""Sample ``n`` new landmark sets (Algorithm 2, all barycenters computed in batches).

        Args:
            n: number of samples (``>= 0``).
            generator: source of randomness (same generator state ⇒ same samples).
            return_info: also return ``{"cliques": (n,), "vertices": (n, S_max) (-1 = padding),
                "weights": (n, S_max)}`` and, in ``"ot"`` mode on equal-size clouds, ``"assignment"``
                ``(n, S_max, N)``: vertex ``s``'s point matched to barycenter point ``i``.
            progress: override the constructor's ``progress``.

        Returns:
            ``(n, N, D)`` in the landmarks' dtype/device (a list of ``(N_b, D)`` for ragged clouds). After a
            masked ``"index"`` fit a point no clique member sees is NaN, and ``return_info`` adds
            ``"visibility" (n, N)``.
        """
        self._check_fitted()
        self._check_output_fits(check_nonnegative_int(n, "n"))
        cl, lam = self.draw(n, generator=generator)
        table, mask = self.clique_table_[cl], self.clique_mask_[cl]
        outs: list = []
        sigmas: list[Tensor] = []
        seen: list[Tensor] = []
        clouds = self.landmarks_
        with tqdm(
            total=n, desc="barycenters", unit="sample", disable=self._bar(progress), leave=False
        ) as bar:
            for s in range(0, n, self.batch_size):
                sl = slice(s, s + self.batch_size)
                if self.visibility_ is not None:  # masked fit, "index" mode
                    point_vis = self.visibility_[table[sl]] & mask[sl][..., None]
                    bary, vis = masked_index_barycenters(
                        clouds[table[sl].to(clouds.device)], lam[sl], point_vis.to(clouds.device)
                    )
                    outs.append(bary)
                    seen.append(vis.cpu())
                    bar.update(min(self.batch_size, n - s))
                    continue
                bary, sigma = clique_barycenters(
                    clouds,
                    table[sl],
                    lam[sl],
                    mask[sl],
                    correspondence=self.correspondence,
                    max_iter=self.max_iter,
                    tol=self.tol,
                    init=self._warm_start(table[sl], mask[sl], lam[sl]),
                )
                outs.append(bary)
                if sigma is not None:
                    sigmas.append(sigma)
                bar.update(min(self.batch_size, n - s))
        if isinstance(clouds, Tensor):
            result = torch.cat(outs) if outs else clouds.new_zeros(0, clouds.shape[1], clouds.shape[2])
        else:
            result = [b for part in outs for b in part]
        if not return_info:
            return result
        ref = clouds if isinstance(clouds, Tensor) else clouds[0]
        info = {
            "cliques": cl,
            "vertices": torch.where(mask, table, torch.full_like(table, -1)),
            "weights": lam.to(ref.dtype),
        }
        if sigmas:
            info["assignment"] = torch.cat(sigmas)
        if self.visibility_ is not None:
            info["visibility"] = torch.cat(seen) if seen else torch.zeros(0, self.n_points_, dtype=torch.bool)
        return result, info

    def _check_output_fits(self, n: int) -> None:
        """Refuse a :meth:`sample` whose result would not fit in half the available memory (one clear
        error instead of an allocation failure minutes later)."""
        ref = self.landmarks_ if isinstance(self.landmarks_, Tensor) else self.landmarks_[0]
        points = self.n_points_ or max(c.shape[0] for c in self.landmarks_)
        need = n * points * self.n_dims_ * ref.element_size()
        available = available_memory()
        if available is not None and need > available // 2:
            raise ValueError(
                f"n={n} samples need about {need / 2**30:.1f} GiB but only {available / 2**30:.1f} GiB of "
                "memory is available: sample in chunks, or stream with "
                "wbaug.sampling.BarycentricLandmarksIterableDataset"
            )

    def fit_resample(
        self,
        landmarks: Tensor | np.ndarray | Sequence[Tensor],
        n: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor | list[Tensor]:
        """Fit, then return the originals followed by ``n`` synthetic sets (imbalanced-learn style):
        ``(M + n, N, D)`` (or a list for ragged clouds)."""
        n = check_nonnegative_int(n, "n")
        self.fit(landmarks)
        new = self.sample(n, generator=generator)
        if isinstance(self.landmarks_, Tensor):
            return torch.cat([self.landmarks_, new])
        return list(self.landmarks_) + list(new)

    # ------------------------------------------------------------------ torchvision v2 transform
    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw one augmentation for the sample's ``KeyPoints`` (torchvision v2 protocol)."""
        self._check_fitted()
        keypoints = [x for x in flat_inputs if isinstance(x, tv_tensors.KeyPoints)]
        if len(keypoints) != 1:
            raise ValueError(
                f"{type(self).__name__} as a transform needs exactly one tv_tensors.KeyPoints per sample, "
                f"found {len(keypoints)}"
            )
        kp = keypoints[0]
        flags = [x for x in flat_inputs if isinstance(x, Visibility)]
        if len(flags) > 1:
            raise ValueError(f"at most one Visibility per sample, found {len(flags)}")
        canvas = tuple(int(c) for c in kp.canvas_size)
        if self.frame == "fitted" and getattr(self, "canvas_size_", None) != canvas:
            raise ValueError(
                f"frame='fitted': key-points on a {canvas} canvas but the sampler was fitted on "
                f"canvas_size={getattr(self, 'canvas_size_', None)} (fit(..., canvas_size=(H, W)) in the "
                "same frame, or frame='similarity' to align any frame)"
            )
        n, d = self.n_points_, self.n_dims_
        if kp.ndim not in (2, 3) or tuple(kp.shape[-2:]) != (n, d):
            raise ValueError(
                f"KeyPoints must have shape ({n}, {d}) or (B, {n}, {d}) like the fitted landmark sets, got "
                f"{tuple(kp.shape)}"
            )
        draw = draw_barycentric_params(
            self,
            kp,
            p=self.p,
            paired=self.paired,
            canvas_size=canvas,
            visibility=flags[0] if flags else None,
            generator=self.generator,
            grid_stride=self.grid_stride,
            tps_regularization=self.tps_regularization,
        )
        return {"draw": draw}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Apply the draw to one input (v2 protocol; :func:`wbaug.transforms.apply_barycentric`)."""
        return apply_barycentric(inpt, params["draw"], padding_mode=self.padding_mode)

    # ------------------------------------------------------------------ hyper-parameters and persistence
    def select_hyperparameters(
        self, landmarks: Any, epsilons: Sequence[float | None], ks: Sequence[int], **kwargs
    ):
        """§6.1 grid search with this sampler's other settings; see
        :func:`wbaug.sampling.select_hyperparameters`."""
        params = self.get_params()
        params.pop("k_neighbors")
        params.pop("epsilon")
        params.pop("progress")

        def make_sampler(eps: float | None, k: int) -> WassersteinBarycentricSampler:
            return type(self)(k_neighbors=k, epsilon=eps, progress=False, **params)

        return grid_search(landmarks, epsilons, ks, make_sampler, **kwargs)

    def save(self, path: str | Path) -> None:
        """Save the configuration and fitted state (plain tensors + a JSON string) with ``torch.save``."""
        self._check_fitted()
        save_state(self, path, json.dumps(self.get_params()))

    @classmethod
    def load(
        cls, path: str | Path, *, map_location: str | torch.device | None = None
    ) -> WassersteinBarycentricSampler:
        """Load a sampler saved by :meth:`save` (``torch.load(..., weights_only=True)``; no refit)."""
        config, state = load_state(path, map_location=map_location)
        sampler = cls(**config)
        sampler._set_fitted(
            state["landmarks"],
            state["knn_indices"],
            state["knn_distances"],
            state["distances"],
            state["n_pairs_evaluated"],
            visibility=state["visibility"],
            cliques=(state["clique_table"], state["clique_mask"]),
        )
        sampler.canvas_size_ = state["canvas_size"]
        sampler.fit_time_ = state["fit_time"]
        return sampler

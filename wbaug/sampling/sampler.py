r"""``WassersteinBarycentricSampler``: Algorithm 2 of Bespalov et al., "Data augmentation with manifold
barycenters" (§3.1), as a fitted estimator."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from wbaug.sampling._validation import (
    Clouds,
    as_clouds,
    check_generator,
    check_nonnegative_int,
    check_positive_float,
    cloud_count,
)
from wbaug.sampling.barycenters import clique_barycenters
from wbaug.sampling.cliques import clique_probabilities, maximal_cliques, pad_cliques
from wbaug.sampling.dirichlet import sample_dirichlet
from wbaug.sampling.graph import _knn_within, build_neighborhood_graph, exact_knn
from wbaug.sampling.local import LocalSamplingMixin
from wbaug.sampling.persistence import load_state, save_state

__all__ = ["WassersteinBarycentricSampler"]

_CONFIG_KEYS = (
    "k_neighbors",
    "epsilon",
    "concentration",
    "correspondence",
    "max_clique_size",
    "isolated",
    "symmetrize",
    "knn_method",
    "max_iter",
    "tol",
    "batch_size",
    "progress",
)


class WassersteinBarycentricSampler(LocalSamplingMixin):
    r"""Sample new landmark sets as random Wasserstein barycenters of neighbouring ones (Algorithm 2).

    ``fit`` builds the neighbourhood graph :math:`G_\theta`, :math:`\theta = (\varepsilon, k)`: edge
    :math:`\{i,j\}` iff :math:`W_2(X_i, X_j) < \varepsilon` and ``j`` is among the ``k`` nearest neighbours
    of ``i`` or ``i`` among those of ``j`` (``symmetrize="union"``; ``"mutual"`` for AND). It finds the
    maximal cliques :math:`K(G)`, weights vertices by :math:`p_i = 1/|\{\sigma\in K(G): i\in\sigma\}|` and
    cliques by :math:`P(\sigma) \propto \sum_{i\in\sigma} p_i`. ``sample(n)`` draws ``n`` cliques with
    replacement, barycentric coordinates :math:`\lambda \sim \mathrm{Dir}(\alpha\mathbf 1)` and returns the
    weighted barycenters :math:`\bar\mu(\lambda) = \arg\min_\mu \sum_i \lambda_i W_2^2(\mu_i, \mu)`.

    ``correspondence`` selects the barycenter:

    * ``"ot"`` (paper): free-support W2 barycenter of the clouds as unordered uniform measures. Each output
      point is :math:`\sum_s\lambda_s x_{s,\sigma_s(i)}` for optimal matchings :math:`\sigma_s`; point
      indices carry no meaning. Lists of clouds of different sizes are allowed.
    * ``"index"`` (ordered layouts, e.g. iBUG-68 faces): exactly :math:`\sum_s \lambda_s X_s`. The
      free-support barycenter re-matches points by OT and permutes landmarks (on faces only ~1/3 keep
      their index), which destroys the semantic identity a landmark detector is trained on; fixing the
      coupling to the identity keeps landmark ``n`` = landmark ``n``. The graph still uses true W2.

    Isolated vertices (no neighbour) are 1-cliques (``isolated="keep"``, paper): drawing one returns an
    exact copy of that landmark set. ``isolated="drop"`` never samples them.

    Args:
        k_neighbors: ``k`` of the kNN graph (``1 <= k < M``; paper: 6).
        epsilon: distance threshold :math:`\varepsilon` in the units of the landmarks (``None``: none;
            paper: 0.1 on [0, 1]-normalised coordinates).
        concentration: Dirichlet :math:`\alpha > 0` (1: uniform on each simplex, paper default).
        correspondence: ``"ot"`` or ``"index"`` (see above).
        max_clique_size: split larger cliques into all subsets of this size (seed code: 3); ``None``: keep.
        isolated: ``"keep"`` or ``"drop"`` 1-cliques.
        symmetrize: ``"union"`` or ``"mutual"`` kNN symmetrisation.
        knn_method: ``"pruned"`` (exact kNN, exact W2 only on candidate pairs) or ``"brute"`` (all pairs).
        max_iter, tol: free-support barycenter iterations (``"ot"`` mode).
        batch_size: barycenters computed per batch in :meth:`sample`.
        progress: show progress bars (``None``: only on a terminal).

    Fitted attributes: ``landmarks_``, ``distances_`` ``(M, M)`` (exact W2 of every evaluated pair, NaN for
    pairs the pruning skipped; all finite with ``knn_method="brute"``), ``knn_indices_``/``knn_distances_``
    ``(M, k)``, ``n_pairs_evaluated_``, ``graph_`` (``networkx.Graph``), ``cliques_`` (list of sorted
    tuples), ``clique_table_``/``clique_mask_`` ``(C, S_max)``, ``vertex_weights_`` ``(M,)``,
    ``clique_probs_`` ``(C,)``, ``fit_time_``.

    Example:
        >>> from wbaug.datasets import synthetic_faces
        >>> faces = synthetic_faces(200, generator=torch.Generator().manual_seed(0))
        >>> sampler = WassersteinBarycentricSampler(k_neighbors=6, correspondence="index").fit(faces)
        >>> sampler.sample(10, generator=torch.Generator().manual_seed(1)).shape
        torch.Size([10, 68, 2])
    """

    def __init__(
        self,
        k_neighbors: int = 6,
        epsilon: float | None = None,
        *,
        concentration: float = 1.0,
        correspondence: Literal["ot", "index"] = "ot",
        max_clique_size: int | None = None,
        isolated: Literal["keep", "drop"] = "keep",
        symmetrize: Literal["union", "mutual"] = "union",
        knn_method: Literal["pruned", "brute"] = "pruned",
        max_iter: int = 100,
        tol: float = 1e-7,
        batch_size: int = 1024,
        progress: bool | None = None,
    ) -> None:
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
        self._nn = None

    # ------------------------------------------------------------------ configuration
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able)."""
        return {key: getattr(self, key) for key in _CONFIG_KEYS}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

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
        distances: Tensor | np.ndarray | None = None,
        progress: bool | None = None,
    ) -> WassersteinBarycentricSampler:
        """Build the graph, cliques and probabilities from ``(M, N, D)`` landmarks (or a list of ``(N_i,
        D)``).

        Args:
            landmarks: the training landmark sets.
            distances: optional precomputed ``(M, M)`` symmetric W2 matrix (then no OT is solved here).
            progress: override the constructor's ``progress``.

        Returns:
            ``self``.
        """
        clouds = as_clouds(landmarks, "landmarks")
        m = cloud_count(clouds)
        if self.correspondence == "index" and not isinstance(clouds, Tensor):
            raise ValueError("landmarks: correspondence='index' needs every landmark set to have the same N")
        if self.k_neighbors >= m:
            raise ValueError(
                f"k_neighbors must be < the number of landmark sets M={m}, got {self.k_neighbors}"
            )
        start = time.perf_counter()
        k = self.k_neighbors
        if distances is not None:
            dist = distances if isinstance(distances, Tensor) else torch.from_numpy(np.asarray(distances))
            if dist.shape != (m, m):
                raise ValueError(f"distances must have shape ({m}, {m}), got {tuple(dist.shape)}")
            dist = dist.detach().to("cpu", torch.float64)
            if not bool(torch.isfinite(dist).all()) or bool((dist < 0).any()):
                raise ValueError("distances must be finite and non-negative")
            iu = torch.triu_indices(m, m, offset=1)
            rows, cols, vals = iu[0], iu[1], dist[iu[0], iu[1]]
            radius = float("inf") if self.epsilon is None else self.epsilon
            knn_idx, knn_dist = _knn_within(rows, cols, vals, m, k, radius)
        else:
            perms: list[Tensor] | None = [] if isinstance(clouds, Tensor) else None
            knn_idx, knn_dist, rows, cols, vals = exact_knn(
                clouds,
                k,
                epsilon=self.epsilon,
                method=self.knn_method,
                progress=self.progress if progress is None else progress,
                perm_out=perms,
            )
        ref = clouds if isinstance(clouds, Tensor) else clouds[0]
        full = torch.full((m, m), float("nan"), dtype=ref.dtype)
        full.fill_diagonal_(0.0)
        full[rows, cols] = vals.to(ref.dtype)
        full[cols, rows] = vals.to(ref.dtype)
        self._set_fitted(clouds, knn_idx, knn_dist, full, int(rows.numel()))
        if distances is None and perms:
            self._cache_edge_matchings(rows, cols, torch.cat(perms))
        self.fit_time_ = time.perf_counter() - start
        return self

    def _set_fitted(
        self, clouds: Clouds, knn_idx: Tensor, knn_dist: Tensor, full: Tensor, n_pairs: int
    ) -> None:
        m = cloud_count(clouds)
        self.landmarks_ = clouds
        self.n_landmark_sets_ = m
        self.n_points_ = clouds.shape[1] if isinstance(clouds, Tensor) else None
        self.n_dims_ = clouds.shape[-1] if isinstance(clouds, Tensor) else clouds[0].shape[-1]
        self.knn_indices_ = knn_idx
        self.knn_distances_ = knn_dist
        self.distances_ = full
        self.n_pairs_evaluated_ = n_pairs
        self.graph_ = build_neighborhood_graph(knn_idx, knn_dist, symmetrize=self.symmetrize, num_nodes=m)
        self.cliques_ = maximal_cliques(
            self.graph_, max_clique_size=self.max_clique_size, isolated=self.isolated
        )
        self._set_cliques(self.cliques_, m)
        self._edge_keys = None
        self._edge_perms = None

    def _set_cliques(self, cliques: list[tuple[int, ...]], m: int) -> None:
        self.vertex_weights_, self.clique_probs_ = clique_probabilities(cliques, m)
        self.clique_table_, self.clique_mask_ = pad_cliques(cliques)
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
            ``(n, N, D)`` in the landmarks' dtype/device (a list of ``(N_b, D)`` for ragged clouds).
        """
        cl, lam = self.draw(n, generator=generator)
        table, mask = self.clique_table_[cl], self.clique_mask_[cl]
        outs: list = []
        sigmas: list[Tensor] = []
        clouds = self.landmarks_
        with tqdm(
            total=n, desc="barycenters", unit="sample", disable=self._bar(progress), leave=False
        ) as bar:
            for s in range(0, n, self.batch_size):
                sl = slice(s, s + self.batch_size)
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
        return result, info

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

    # ------------------------------------------------------------------ hyper-parameters and persistence
    def select_hyperparameters(
        self, landmarks: Any, epsilons: Sequence[float | None], ks: Sequence[int], **kwargs
    ):
        """§6.1 grid search with this sampler's other settings; see
        :func:`wbaug.sampling.select_hyperparameters`."""
        from wbaug.sampling.hyperparameters import select_hyperparameters

        params = self.get_params()
        params.pop("k_neighbors")
        params.pop("epsilon")
        return select_hyperparameters(landmarks, epsilons, ks, sampler_params=params, **kwargs)

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
        )
        sampler.fit_time_ = state["fit_time"]
        return sampler

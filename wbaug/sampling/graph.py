r"""The neighbourhood graph of Algorithm 2: :math:`W_2 < \varepsilon` intersected with a kNN graph.

Symmetrisation (documented choice): the kNN relation is not symmetric, so the undirected graph has the
edge :math:`\{i, j\}` when ``j`` is among the ``k`` nearest neighbours of ``i`` **or** ``i`` among those of
``j`` (``symmetrize="union"``, the default; it is what ``networkx.Graph(directed_knn_adjacency)`` gives,
the usual way a kNN adjacency is turned into an undirected graph), intersected with :math:`W_2 < \varepsilon`.
``symmetrize="mutual"`` keeps only mutual neighbours (AND). Because the k nearest neighbours *inside* the
:math:`\varepsilon`-ball are exactly the kNN neighbours whose distance is below :math:`\varepsilon`, the
order "threshold then kNN" of Algorithm 2 and "kNN then threshold" give the same graph.

Exact kNN with pruning (``method="pruned"``), in blocks of rows and ``O(M k + block x candidates)``
memory (no ``(M, M)`` array):

1. **Embedding.** Every cloud gets a vector :math:`e_i` whose Euclidean distances lower-bound :math:`W_2`
   (:func:`wbaug.sampling.bounds.lower_bound_embedding`: means and sorted projections). Its orthogonal
   projection :math:`g_i` onto the top principal axes (``index_dims``) is still a lower bound
   (a projection shortens every vector); a k-d tree (:class:`scipy.spatial.cKDTree`) indexes the
   :math:`g_i`.
2. **Seeds.** Row ``i`` takes its ``4k`` nearest clouds in :math:`g`-space, keeps the ``k`` with the
   smallest identity-coupling upper bound (smallest lower bound for ragged lists) and solves them
   exactly: the ``k``-th distance is a radius :math:`\tau_i \ge d_k(i)`.
3. **Certificate.** The tree returns every ``j`` with :math:`\lVert g_i - g_j\rVert \le \min(\tau_i,
   \varepsilon)` (radius widened by a relative ``1e-6`` against round-off). Any other ``j`` has
   :math:`W_2 \ge \lVert g_i-g_j\rVert > \tau_i \ge d_k(i)` (or :math:`\ge \varepsilon`) and cannot be a
   neighbour.
4. **Best-first.** The candidates get the sharp per-pair bound (Gelbrich and sorted projections,
   :func:`wbaug.sampling.bounds.pair_lower_bound`) and are solved in increasing bound order, ``step`` per
   row and round, until the next bound exceeds the running :math:`\min(\tau_i, \varepsilon)`. A skipped pair
   has :math:`W_2 \ge LB > \tau_i \ge d_k(i)`, so the table equals brute force, ties included (both break
   ties by the smaller index: a tied pair has :math:`LB \le d_k(i) \le \tau_i` and is always solved).

Within a block, a solved pair updates both of its rows when both are in the block. Blocks depend on ``M``
and ``block_size`` only, so the set of solved pairs, and every output, is the same whichever process
handles which block: under :mod:`torch.distributed` the blocks are dealt round-robin to the ranks and the
results are all-gathered (:func:`exact_knn`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from wbaug.ot.assignment import solver_threads
from wbaug.sampling._validation import Clouds, check_nonnegative_int, cloud_count
from wbaug.sampling.bounds import (
    BoundFeatures,
    bound_features,
    lower_bound_embedding,
    pair_lower_bound,
)

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "KnnResult",
    "PairMatchings",
    "build_neighborhood_graph",
    "exact_knn",
    "knn_from_distances",
    "knn_from_pairs",
    "neighborhood_edges",
    "pair_distance_matrix",
    "pair_distances",
    "uniform_pair_w2",
]

# relative widening of search radii against round-off in the embedding and its projection
_RADIUS_MARGIN = 1e-6


class PairMatchings(NamedTuple):
    """Optimal matchings of unordered pairs ``rows[e] < cols[e]`` (sorted by ``(row, col)``):
    ``clouds[rows[e]][n]`` is matched to ``clouds[cols[e]][perms[e, n]]``; ``perms`` is ``(E, N)`` int16
    (int32 for ``N >= 32768``)."""

    rows: Tensor
    cols: Tensor
    perms: Tensor


class KnnResult(NamedTuple):
    """Result of :func:`exact_knn`.

    Attributes:
        indices: ``(M, k)`` int64 neighbours, nearest first, ties by smaller index; ``-1`` where fewer than
            ``k`` clouds lie within ``epsilon``.
        distances: ``(M, k)`` float64 exact W2 (``inf`` at ``-1`` entries).
        pair_rows, pair_cols: ``(E,)`` int64 evaluated unordered pairs, ``rows < cols``, sorted by
            ``(row, col)``.
        pair_values: ``(E,)`` float64 exact W2 of those pairs.
        matchings: optimal matchings of the kNN pairs (equal-size clouds with ``return_matchings=True``),
            else ``None``.
        n_solves: exact OT problems solved (a pair solved in two blocks counts twice).
        communication_bytes: bytes this process sent through :mod:`torch.distributed` collectives (0 in a
            single process).
    """

    indices: Tensor
    distances: Tensor
    pair_rows: Tensor
    pair_cols: Tensor
    pair_values: Tensor
    matchings: PairMatchings | None
    n_solves: int
    communication_bytes: int


def _matching_dtype(n: int) -> torch.dtype:
    return torch.int16 if n < 32768 else torch.int32


def uniform_pair_w2(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Exact W2 of equal-size uniform clouds ``x, y (E, N, D)``: distances ``(E,)`` float64 and optimal
    matchings ``(E, N)`` int64 (``x[e, n] <-> y[e, perm[e, n]]``).

    The matchings come from :func:`wbaug.ot.assignment.matched_assignment` (centred/whitened costs,
    nearest-neighbour certificate, thread pool); the distance is evaluated exactly from the matched points.
    """
    from wbaug.ot.assignment import matched_assignment

    x64 = x.detach().to("cpu", torch.float64)
    y64 = y.detach().to("cpu", torch.float64)
    perm = torch.from_numpy(matched_assignment(x64.numpy(), y64.numpy()))
    matched = torch.gather(y64, 1, perm[..., None].expand_as(y64))
    return ((x64 - matched) ** 2).sum(-1).mean(-1).sqrt(), perm


def _solve_pairs(
    clouds: Clouds, rows: Tensor, cols: Tensor, *, chunk_size: int, keep_matchings: bool
) -> tuple[Tensor, Tensor | None]:
    """Exact W2 ``(E,)`` float64 of the listed pairs and, for equal-size clouds with ``keep_matchings``,
    their optimal matchings ``(E, N)``."""
    from wbaug.ot import wasserstein_distance

    out = torch.empty(rows.numel(), dtype=torch.float64)
    if isinstance(clouds, Tensor):
        perms = (
            torch.empty(rows.numel(), clouds.shape[1], dtype=_matching_dtype(clouds.shape[1]))
            if keep_matchings
            else None
        )
        r_dev = rows.to(clouds.device)
        c_dev = cols.to(clouds.device)
        for s in range(0, rows.numel(), chunk_size):
            d, p = uniform_pair_w2(clouds[r_dev[s : s + chunk_size]], clouds[c_dev[s : s + chunk_size]])
            out[s : s + chunk_size] = d
            if perms is not None:
                perms[s : s + chunk_size] = p.to(perms.dtype)
        return out, perms
    if rows.numel() == 0:
        return out, None
    sizes = torch.tensor([c.shape[0] for c in clouds])
    key = sizes[rows] * (int(sizes.max()) + 1) + sizes[cols]
    for value in torch.unique(key):
        sel = torch.nonzero(key == value).flatten()
        for s in range(0, sel.numel(), chunk_size):
            part = sel[s : s + chunk_size]
            x = torch.stack([clouds[i] for i in rows[part].tolist()])
            y = torch.stack([clouds[j] for j in cols[part].tolist()])
            out[part] = wasserstein_distance(x, y).detach().to(device="cpu", dtype=torch.float64)
    return out, None


def pair_distances(clouds: Clouds, rows: Tensor, cols: Tensor, *, chunk_size: int = 4096) -> Tensor:
    """Exact W2 between ``clouds[rows[e]]`` and ``clouds[cols[e]]`` for every ``e``, float64 ``(E,)``.

    Equal-size uniform clouds are solved as assignment problems (:func:`uniform_pair_w2`); ragged lists
    use :func:`wbaug.ot.wasserstein_distance` (exact network simplex), grouped by cloud sizes.
    """
    return _solve_pairs(clouds, rows, cols, chunk_size=chunk_size, keep_matchings=False)[0]


def _select_knn(rows: Tensor, cols: Tensor, vals: Tensor, m: int, k: int) -> tuple[Tensor, Tensor]:
    """k smallest ``vals`` per row of directed entries (ties -> smaller column), as ``(m, k)``
    indices/distances; rows with fewer than ``k`` entries are padded with index ``-1`` and ``inf``."""
    order = torch.sort(cols, stable=True).indices
    order = order[torch.sort(vals[order], stable=True).indices]
    order = order[torch.sort(rows[order], stable=True).indices]
    r, c, v = rows[order], cols[order], vals[order]
    counts = torch.bincount(r, minlength=m)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(r.numel()) - starts[r]
    keep = rank < k
    idx = torch.full((m, k), -1, dtype=torch.long)
    dist_ = torch.full((m, k), float("inf"), dtype=torch.float64)
    idx[r[keep], rank[keep]] = c[keep]
    dist_[r[keep], rank[keep]] = v[keep].to(torch.float64)
    return idx, dist_


def knn_from_pairs(
    rows: Tensor, cols: Tensor, values: Tensor, m: int, k: int, *, epsilon: float | None = None
) -> tuple[Tensor, Tensor]:
    """kNN table ``(m, k)`` indices and float64 distances from unordered pairs ``(rows[e], cols[e])`` with
    distances ``values[e]`` (each pair counts for both of its clouds; only ``values < epsilon`` count;
    ties -> smaller index; ``-1`` / ``inf`` padding)."""
    keep = values < epsilon if epsilon is not None else torch.ones_like(values, dtype=torch.bool)
    r, c, v = rows[keep], cols[keep], values[keep]
    return _select_knn(torch.cat([r, c]), torch.cat([c, r]), torch.cat([v, v]), m, k)


def knn_from_distances(distances: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Brute-force kNN from a full ``(M, M)`` distance matrix (self excluded, ties -> smaller index).

    Args:
        distances: ``(M, M)`` finite, non-negative distances (tensor or NumPy array).
        k: neighbours per row, ``1 <= k < M``.

    Returns:
        ``(M, k)`` int64 indices and ``(M, k)`` float64 distances.

    Raises:
        TypeError / ValueError: naming ``distances`` or ``k``.
    """
    if isinstance(distances, np.ndarray):
        distances = torch.from_numpy(distances)
    if not isinstance(distances, Tensor):
        raise TypeError(f"distances must be a torch.Tensor or numpy.ndarray, got {type(distances).__name__}")
    if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must have shape (M, M), got {tuple(distances.shape)}")
    if distances.is_complex() or distances.dtype == torch.bool:
        raise TypeError(f"distances must hold real numbers, got dtype {distances.dtype}")
    m = distances.shape[0]
    k = check_nonnegative_int(k, "k", minimum=1)
    if k >= m:
        raise ValueError(f"k must be < M={m} (the number of sets), got {k}")
    d = distances.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(d).all()) or bool((d < 0).any()):
        raise ValueError("distances must be finite and non-negative")
    rows, cols = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    off = rows != cols
    return _select_knn(rows[off], cols[off], d[off], m, k)


def pair_distance_matrix(
    rows: Tensor, cols: Tensor, values: Tensor, m: int, *, dtype: torch.dtype | None = None
) -> Tensor:
    """Symmetric sparse COO ``(m, m)`` matrix (coalesced) holding ``values[e]`` at ``(rows[e], cols[e])``
    and ``(cols[e], rows[e])``; pairs not listed (and the diagonal) are absent. Zero distances are
    stored explicitly."""
    idx = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    vals = torch.cat([values, values]).to(dtype or values.dtype)
    return torch.sparse_coo_tensor(idx, vals, (m, m), check_invariants=True).coalesce()


# ------------------------------------------------------------------------------------------- pruned search
def _principal_axes(scatter: Tensor, dims: int, *, rounds: int = 12) -> Tensor:
    """``(F, dims)`` orthonormal columns spanning (approximately) the top principal axes of ``scatter``:
    subspace iteration from a fixed start, so the result is deterministic. Any orthonormal columns keep
    the projected distances below the embedded ones; accuracy only affects how many candidates pass."""
    f = scatter.shape[0]
    dims = min(dims, f)
    scale = scatter.diagonal().clamp_min(0).sqrt()
    # start from the coordinate axes of largest spread (fixed, data-dependent only)
    start = torch.zeros(f, dims, dtype=scatter.dtype)
    start[torch.argsort(scale, descending=True, stable=True)[:dims], torch.arange(dims)] = 1.0
    q = start
    for _ in range(rounds):
        q, _ = torch.linalg.qr(scatter @ q)
    return q


class _CandidateIndex:
    """k-d tree over the principal-axis projection of the lower-bounding embedding (see module docs)."""

    def __init__(self, clouds: Clouds, features: BoundFeatures, dims: int) -> None:
        self.clouds = clouds
        self.features = features
        emb = lower_bound_embedding(features)
        centred = emb - emb.mean(0)
        self.points = (centred @ _principal_axes(centred.T @ centred, dims)).numpy()
        del emb, centred
        from scipy.spatial import cKDTree  # imported where used: keeps `import wbaug` light

        self.tree = cKDTree(self.points, leafsize=16, balanced_tree=False, compact_nodes=False)
        # absolute slack: round-off of the projection scales with the size of the coordinates
        self.slack = 1e-9 * float(abs(self.points).max(initial=0.0)) + 1e-300

    def seeds(self, rows: Tensor, k: int) -> Tensor:
        """``(B, k)`` promising partners of each row (never the row itself)."""
        m = cloud_count(self.clouds)
        q = min(max(4 * k, 16) + 1, m)
        _, near = self.tree.query(self.points[rows.numpy()], k=q)
        near = torch.from_numpy(near).long().reshape(rows.numel(), q)
        is_self = near == rows[:, None]
        # drop the row itself (or, when duplicates hid it, the farthest entry) and keep order
        drop = torch.where(is_self.any(1), is_self.int().argmax(1), torch.full_like(rows, q - 1))
        keep = torch.ones_like(near, dtype=torch.bool)
        keep[torch.arange(rows.numel()), drop] = False
        near = near[keep].reshape(rows.numel(), q - 1)
        r = rows[:, None].expand_as(near).reshape(-1)
        if isinstance(self.clouds, Tensor):
            flat = self.clouds.detach().cpu().flatten(1)
            diff = flat[r].to(torch.float64) - flat[near.reshape(-1)].to(torch.float64)
            score = (diff * diff).sum(1)  # identity-coupling upper bound
        else:
            score = pair_lower_bound(self.features, r, near.reshape(-1))
        order = torch.sort(score.reshape(near.shape), dim=1, stable=True).indices[:, :k]
        return torch.gather(near, 1, order)

    def within(self, rows: Tensor, radius: Tensor) -> tuple[Tensor, Tensor]:
        """All pairs ``(i, j)``, ``i`` in ``rows``, ``j != i``, with ``||g_i - g_j|| <= radius_i``
        (radius widened against round-off)."""
        r = (radius.numpy() * (1.0 + _RADIUS_MARGIN) + self.slack).clip(min=0.0)
        finite = r < float("inf")
        r[~finite] = float(abs(self.points).max(initial=0.0)) * 4.0 + 1.0  # everything
        lists = self.tree.query_ball_point(self.points[rows.numpy()], r=r, return_sorted=False)
        counts = torch.tensor([len(c) for c in lists], dtype=torch.long)
        cols = torch.tensor([j for c in lists for j in c], dtype=torch.long)
        out_rows = rows.repeat_interleave(counts)
        other = cols != out_rows
        return out_rows[other], cols[other]


class _SolvedPairs:
    """Memo of the pairs this process has solved (sorted keys ``min * m + max``, values, matchings).

    Pure memoisation: a block asks for exactly the pairs its search needs, and a pair found here has the
    value (and matching) a new solve would give, so the result never depends on what the memo holds; only
    the number of solves does (a pair needed by two blocks of the same process is solved once).
    """

    def __init__(self) -> None:
        self.keys = torch.zeros(0, dtype=torch.long)
        self.values = torch.zeros(0, dtype=torch.float64)
        self.perms: Tensor | None = None

    def lookup(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """``found (K,)`` bool and positions of sorted ``keys`` in the memo."""
        if self.keys.numel() == 0:
            return torch.zeros(keys.numel(), dtype=torch.bool), torch.zeros(keys.numel(), dtype=torch.long)
        pos = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
        return self.keys[pos] == keys, pos

    def add(self, keys: Tensor, values: Tensor, perms: Tensor | None) -> None:
        """Add sorted unique ``keys`` (some possibly present already)."""
        found, _ = self.lookup(keys)
        keys, values = keys[~found], values[~found]
        merged = torch.cat([self.keys, keys])
        order = torch.argsort(merged)
        self.keys = merged[order]
        self.values = torch.cat([self.values, values])[order]
        if perms is not None:
            perms = perms[~found]
            self.perms = (perms if self.perms is None else torch.cat([self.perms, perms]))[order]


class _BlockState:
    """Solved pairs of one block of rows ``[start, stop)`` and the rows' running ``k`` smallest."""

    def __init__(
        self, clouds: Clouds, m: int, k: int, start: int, stop: int, keep_matchings: bool, memo: _SolvedPairs
    ) -> None:
        self.clouds, self.m, self.start, self.stop = clouds, m, start, stop
        self.keep_matchings = keep_matchings
        self.memo = memo
        self.keys = torch.zeros(0, dtype=torch.long)  # sorted min * m + max
        self.values = torch.zeros(0, dtype=torch.float64)
        self.perms: Tensor | None = None
        self.knn_d = torch.full((stop - start, k), float("inf"), dtype=torch.float64)
        self.n_solves = 0

    def solve(self, rows: Tensor, cols: Tensor, chunk_size: int) -> int:
        """Evaluate the pairs among ``(rows[e], cols[e])`` not yet known to the block (from the memo or by
        solving them); returns how many were new to the block."""
        m = self.m
        keys = torch.unique(torch.minimum(rows, cols) * m + torch.maximum(rows, cols))
        if self.keys.numel():
            pos = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
            keys = keys[self.keys[pos] != keys]
        if keys.numel() == 0:
            return 0
        a, b = keys // m, keys % m
        vals = torch.empty(keys.numel(), dtype=torch.float64)
        perms = None
        if self.keep_matchings:
            perms = torch.empty(
                keys.numel(), self.clouds.shape[1], dtype=_matching_dtype(self.clouds.shape[1])
            )
        found, pos = self.memo.lookup(keys)
        vals[found] = self.memo.values[pos[found]]
        if perms is not None and bool(found.any()):
            perms[found] = self.memo.perms[pos[found]]
        miss = ~found
        if bool(miss.any()):
            new_vals, new_perms = _solve_pairs(
                self.clouds, a[miss], b[miss], chunk_size=chunk_size, keep_matchings=self.keep_matchings
            )
            vals[miss] = new_vals
            if perms is not None:
                perms[miss] = new_perms
            self.n_solves += int(miss.sum())
        merged = torch.cat([self.keys, keys])
        order = torch.argsort(merged)
        self.keys = merged[order]
        self.values = torch.cat([self.values, vals])[order]
        if perms is not None:
            self.perms = perms if self.perms is None else torch.cat([self.perms, perms])
            self.perms = self.perms[order]
        self._merge(a, b, vals)
        return int(keys.numel())

    def _merge(self, a: Tensor, b: Tensor, vals: Tensor) -> None:
        """Fold new distances into the running ``k`` smallest of every endpoint inside the block."""
        rr = torch.cat([a, b]) - self.start
        vv = torch.cat([vals, vals])
        inside = (rr >= 0) & (rr < self.stop - self.start)
        rr, vv = rr[inside], vv[inside]
        if rr.numel() == 0:
            return
        nb = self.stop - self.start
        counts = torch.bincount(rr, minlength=nb)
        order = torch.argsort(rr, stable=True)
        rr, vv = rr[order], vv[order]
        rank = torch.arange(rr.numel()) - (torch.cumsum(counts, 0) - counts)[rr]
        pad = torch.full((nb, int(counts.max())), float("inf"), dtype=torch.float64)
        pad[rr, rank] = vv
        k = self.knn_d.shape[1]
        self.knn_d = torch.topk(torch.cat([self.knn_d, pad], 1), k, dim=1, largest=False).values

    def radius(self, epsilon: float | None) -> Tensor:
        tau = self.knn_d[:, -1]
        return tau if epsilon is None else tau.clamp(max=epsilon)


class _BlockResult(NamedTuple):
    keys: Tensor  # (E_b,) sorted unique pair keys min * m + max
    values: Tensor  # (E_b,) float64
    indices: Tensor  # (B, k)
    distances: Tensor  # (B, k)
    matching_keys: Tensor | None  # sorted unique keys of the block rows' kNN pairs
    matchings: Tensor | None  # (P, N)
    n_solves: int


def _candidates(
    index: _CandidateIndex, state: _BlockState, rows: Tensor, epsilon: float | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The block's candidate pairs that can still matter, in CSR form sorted by ``(row, bound, col)``:
    ``(cols, bounds, counts per row, starts per row)``."""
    radius = state.radius(epsilon)
    cand_rows, cand_cols = index.within(rows, radius)
    local = cand_rows - state.start
    lb = pair_lower_bound(index.features, cand_rows, cand_cols, cutoff=radius[local])
    keep = lb <= radius[local]
    if epsilon is not None:
        keep &= lb < epsilon  # W2 < eps strictly: lb == eps cannot qualify
    local, cand_cols, lb = local[keep], cand_cols[keep], lb[keep]
    order = torch.sort(cand_cols, stable=True).indices
    order = order[torch.sort(lb[order], stable=True).indices]
    order = order[torch.sort(local[order], stable=True).indices]
    local, cand_cols, lb = local[order], cand_cols[order], lb[order]
    counts = torch.bincount(local, minlength=rows.numel())
    return cand_cols, lb, counts, torch.cumsum(counts, 0) - counts


def _best_first(
    state: _BlockState,
    rows: Tensor,
    cand: tuple[Tensor, Tensor, Tensor, Tensor],
    epsilon: float | None,
    step: int,
    chunk_size: int,
) -> None:
    """Solve candidates in increasing bound order, ``step`` per row and round, while the next bound is
    within the row's running radius."""
    cols, lb, counts, starts = cand
    if cols.numel() == 0:
        return
    ptr = torch.zeros(rows.numel(), dtype=torch.long)
    ar = torch.arange(step)
    while True:
        tau = state.radius(epsilon)
        offset = ptr[:, None] + ar[None, :]
        pos = (starts[:, None] + offset).clamp(max=cols.numel() - 1)
        inside = (offset < counts[:, None]) & (lb[pos] <= tau[:, None])
        if not bool(inside.any()):
            return
        state.solve(rows[:, None].expand_as(pos)[inside], cols[pos][inside], chunk_size)
        # bounds are sorted per row, so the inside entries are a prefix of each window
        ptr += inside.sum(1)


def _search_block(
    index: _CandidateIndex,
    start: int,
    stop: int,
    k: int,
    epsilon: float | None,
    step: int,
    chunk_size: int,
    keep_matchings: bool,
    memo: _SolvedPairs,
) -> _BlockResult:
    """Exact kNN of rows ``[start, stop)`` (seeds, certified candidates, best-first; see module docs)."""
    m = cloud_count(index.clouds)
    rows = torch.arange(start, stop)
    state = _BlockState(index.clouds, m, k, start, stop, keep_matchings, memo)
    seeds = index.seeds(rows, k)
    state.solve(rows.repeat_interleave(k), seeds.reshape(-1), chunk_size)
    _best_first(state, rows, _candidates(index, state, rows, epsilon), epsilon, step, chunk_size)
    a, b = state.keys // m, state.keys % m
    mine_a = (a >= start) & (a < stop)
    mine_b = (b >= start) & (b < stop)
    r = torch.cat([a[mine_a], b[mine_b]]) - start
    c = torch.cat([b[mine_a], a[mine_b]])
    v = torch.cat([state.values[mine_a], state.values[mine_b]])
    keep = v < epsilon if epsilon is not None else torch.ones_like(v, dtype=torch.bool)
    idx, dist_ = _select_knn(r[keep], c[keep], v[keep], stop - start, k)
    match_keys = matchings = None
    if state.perms is not None:
        ok = idx >= 0
        owner = rows[:, None].expand_as(idx)[ok]
        match_keys = torch.unique(torch.minimum(owner, idx[ok]) * m + torch.maximum(owner, idx[ok]))
        matchings = state.perms[torch.searchsorted(state.keys, match_keys)]
    memo.add(state.keys, state.values, state.perms)
    return _BlockResult(state.keys, state.values, idx, dist_, match_keys, matchings, state.n_solves)


# --------------------------------------------------------------------------------------- torch.distributed
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather_rows(t: Tensor, sent: list[int]) -> list[Tensor]:
    """Every rank's ``t`` (same trailing shape and dtype, any length), in rank order (all_gather of the
    lengths, then of zero-padded tensors)."""
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = max(int(s) for s in sizes)
    padded = t.new_zeros((longest, *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    sent[0] += n.numel() * n.element_size() + padded.numel() * padded.element_size()
    return [o[: int(s)] for o, s in zip(out, sizes)]


def _gather_blocks(parts: list[tuple[int, _BlockResult]], sent: list[int]) -> list[_BlockResult]:
    """All blocks' results on every rank, in block order (a rank holds the blocks it searched)."""

    def cat(tensors: list[Tensor], empty: Tensor) -> Tensor:
        return torch.cat(tensors) if tensors else empty

    ids = torch.tensor([b for b, _ in parts], dtype=torch.long)
    res = [p for _, p in parts]
    k = 0 if not res else res[0].indices.shape[1]
    fields = {
        "keys": cat([p.keys for p in res], torch.zeros(0, dtype=torch.long)),
        "n_keys": torch.tensor([p.keys.numel() for p in res], dtype=torch.long),
        "values": cat([p.values for p in res], torch.zeros(0, dtype=torch.float64)),
        "indices": cat([p.indices for p in res], torch.zeros(0, k, dtype=torch.long)),
        "distances": cat([p.distances for p in res], torch.zeros(0, k, dtype=torch.float64)),
        "n_rows": torch.tensor([p.indices.shape[0] for p in res], dtype=torch.long),
        "n_solves": torch.tensor([p.n_solves for p in res], dtype=torch.long),
    }
    has_match = bool(res) and res[0].matchings is not None
    if has_match:
        fields["match_keys"] = torch.cat([p.matching_keys for p in res])
        fields["n_match"] = torch.tensor([p.matching_keys.numel() for p in res], dtype=torch.long)
        fields["matchings"] = torch.cat([p.matchings for p in res]).to(torch.int32)  # Gloo: no int16
    gathered = {name: _all_gather_rows(t, sent) for name, t in fields.items()}
    all_ids = _all_gather_rows(ids, sent)
    blocks: dict[int, _BlockResult] = {}
    for rank, block_ids in enumerate(all_ids):

        def split(name: str, count: str, rank: int = rank) -> list[Tensor]:
            return list(torch.split(gathered[name][rank], gathered[count][rank].tolist()))

        keys, values = split("keys", "n_keys"), split("values", "n_keys")
        indices, distances = split("indices", "n_rows"), split("distances", "n_rows")
        mk = split("match_keys", "n_match") if has_match else [None] * len(keys)
        mp = split("matchings", "n_match") if has_match else [None] * len(keys)
        for j, b in enumerate(block_ids.tolist()):
            perms = None if mp[j] is None else mp[j].to(res[0].matchings.dtype)
            blocks[b] = _BlockResult(
                keys[j], values[j], indices[j], distances[j], mk[j], perms, int(gathered["n_solves"][rank][j])
            )
    return [blocks[b] for b in sorted(blocks)]


def _first_of_each(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique ``keys`` and the position of each one's first occurrence."""
    uniq, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((uniq.numel(),), keys.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(keys.numel()), reduce="amin")
    return uniq, first


# ------------------------------------------------------------------------------------------------ exact kNN
def exact_knn(
    clouds: Clouds,
    k: int,
    *,
    epsilon: float | None = None,
    method: Literal["pruned", "brute"] = "pruned",
    block_size: int | None = None,
    batch_per_row: int | None = None,
    index_dims: int = 16,
    return_matchings: bool = False,
    progress: bool | None = False,
    chunk_size: int = 4096,
) -> KnnResult:
    r"""Exact k nearest neighbours of every cloud under W2 (restricted to :math:`W_2 < \varepsilon`).

    Args:
        clouds: ``(M, N, D)`` tensor or list of ``(N_i, D)`` clouds.
        k: neighbours per cloud, ``1 <= k < M``.
        epsilon: only neighbours with ``W2 < epsilon`` count (``None``: no threshold).
        method: ``"pruned"`` (certified candidates, exact W2 only where a bound cannot exclude the pair;
            ``O(M k)`` memory, see the module docs) or ``"brute"`` (all ``M (M - 1) / 2`` pairs; a
            reference for small ``M``).
        block_size: rows searched together (memory ``O(block_size x candidates per row)``); default
            ``min(2048, max(128, ceil(M / 32)))``. It depends on ``M`` only, never on the number of
            processes, so a distributed fit solves exactly the pairs a single process would.
        batch_per_row: candidates solved per row and round (default ``max(k, 8)``).
        index_dims: principal axes of the lower-bounding embedding kept in the k-d tree.
        return_matchings: equal-size clouds, pruned: also return the optimal matchings of the kNN pairs.
        progress: show a tqdm bar over rows (``None``: only on a terminal).
        chunk_size: pairs per exact-solver call.

    Returns:
        :class:`KnnResult`. Under :mod:`torch.distributed` (initialised, world size > 1) the blocks are
        shared out between the ranks and every rank returns the same result as one process would.

    Example:
        >>> x = torch.randn(50, 10, 2, dtype=torch.float64)
        >>> res = exact_knn(x, 3)  # doctest: +SKIP
        >>> res.indices.shape  # doctest: +SKIP
        torch.Size([50, 3])
    """
    m = cloud_count(clouds)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < m:
        raise ValueError(f"k must be an int with 1 <= k < M={m}, got {k!r}")
    if epsilon is not None and not float(epsilon) > 0:
        raise ValueError(f"epsilon must be positive or None, got {epsilon!r}")
    if block_size is None:
        block_size = min(2048, max(128, -(-m // 32)))
    for name, value in (("block_size", block_size), ("index_dims", index_dims), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    epsilon = None if epsilon is None else float(epsilon)
    hide = None if progress is None else not progress
    if method == "brute":
        iu = torch.triu_indices(m, m, offset=1)
        vals = torch.empty(iu.shape[1], dtype=torch.float64)
        with tqdm(
            total=iu.shape[1], desc="exact W2 (all pairs)", unit="pair", disable=hide, leave=False
        ) as bar:
            for s in range(0, iu.shape[1], 65536):
                vals[s : s + 65536] = pair_distances(clouds, iu[0, s : s + 65536], iu[1, s : s + 65536])
                bar.update(min(65536, iu.shape[1] - s))
        idx, dist_ = knn_from_pairs(iu[0], iu[1], vals, m, k, epsilon=epsilon)
        return KnnResult(idx, dist_, iu[0], iu[1], vals, None, int(vals.numel()), 0)
    if method != "pruned":
        raise ValueError(f"method must be 'pruned' or 'brute', got {method!r}")

    keep_matchings = return_matchings and isinstance(clouds, Tensor)
    # the search's torch ops are many small ones: one intra-op thread each (measured 3x faster on 2 shared
    # cores than 2 threads), while the compiled OT solvers keep the process's thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with solver_threads(threads):
            return _pruned_knn(
                clouds, k, epsilon, block_size, batch_per_row, index_dims, keep_matchings, hide, chunk_size
            )
    finally:
        torch.set_num_threads(threads)


def _pruned_knn(
    clouds: Clouds,
    k: int,
    epsilon: float | None,
    block_size: int,
    batch_per_row: int | None,
    index_dims: int,
    keep_matchings: bool,
    hide: bool | None,
    chunk_size: int,
) -> KnnResult:
    """The pruned search of :func:`exact_knn` (arguments checked there)."""
    m = cloud_count(clouds)
    index = _CandidateIndex(clouds, bound_features(clouds), index_dims)
    step = batch_per_row or max(k, 8)
    blocks = [(s, min(s + block_size, m)) for s in range(0, m, block_size)]
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    mine = list(range(rank, len(blocks), world))
    memo = _SolvedPairs()
    parts: list[tuple[int, _BlockResult]] = []
    with tqdm(total=m, desc="exact W2 kNN (pruned)", unit="row", disable=hide, leave=False) as bar:
        for b in mine:
            start, stop = blocks[b]
            parts.append(
                (b, _search_block(index, start, stop, k, epsilon, step, chunk_size, keep_matchings, memo))
            )
            bar.update(stop - start)
    sent = [0]
    results = _gather_blocks(parts, sent) if world > 1 else [p for _, p in parts]

    keys, first = _first_of_each(torch.cat([r.keys for r in results]))
    values = torch.cat([r.values for r in results])[first]
    matchings = None
    if keep_matchings:
        mkeys, mfirst = _first_of_each(torch.cat([r.matching_keys for r in results]))
        perms = torch.cat([r.matchings for r in results])[mfirst]
        matchings = PairMatchings(mkeys // m, mkeys % m, perms)
    return KnnResult(
        torch.cat([r.indices for r in results]),
        torch.cat([r.distances for r in results]),
        keys // m,
        keys % m,
        values,
        matchings,
        sum(r.n_solves for r in results),
        sent[0],
    )


def neighborhood_edges(
    knn_index: Tensor,
    knn_distance: Tensor,
    *,
    symmetrize: Literal["union", "mutual"] = "union",
) -> tuple[Tensor, Tensor, Tensor]:
    """Undirected edges of the kNN graph, sorted by ``(a, b)`` with ``a < b``: ``(E,)`` ``a``, ``b`` and
    their W2 weights.

    ``symmetrize="union"``: edge if ``j in kNN(i)`` or ``i in kNN(j)``; ``"mutual"``: both. Entries ``-1``
    (no neighbour within epsilon) are ignored.
    """
    if symmetrize not in ("union", "mutual"):
        raise ValueError(f"symmetrize must be 'union' or 'mutual', got {symmetrize!r}")
    m = knn_index.shape[0]
    rows = torch.arange(m)[:, None].expand_as(knn_index)
    ok = knn_index >= 0
    i, j, w = rows[ok], knn_index[ok], knn_distance[ok]
    keys = torch.minimum(i, j) * m + torch.maximum(i, j)
    uniq, first = _first_of_each(keys)
    weight = w[first]  # the first listing's (both directions hold the pair's one exact W2)
    if symmetrize == "mutual":  # a row lists a neighbour once, so a pair counts twice iff mutual
        keep = torch.bincount(torch.searchsorted(uniq, keys), minlength=uniq.numel()) == 2
        uniq, weight = uniq[keep], weight[keep]
    return uniq // m, uniq % m, weight


def build_neighborhood_graph(
    knn_index: Tensor,
    knn_distance: Tensor,
    *,
    symmetrize: Literal["union", "mutual"] = "union",
    num_nodes: int | None = None,
) -> nx.Graph:
    """Undirected weighted ``networkx`` graph (edge attribute ``weight`` = W2) of
    :func:`neighborhood_edges`; every cloud is a node, isolated ones included."""
    a, b, w = neighborhood_edges(knn_index, knn_distance, symmetrize=symmetrize)
    import networkx as nx  # imported where used: keeps `import wbaug` light

    graph = nx.Graph()
    graph.add_nodes_from(range(knn_index.shape[0] if num_nodes is None else num_nodes))
    graph.add_weighted_edges_from(zip(a.tolist(), b.tolist(), w.tolist()))
    return graph

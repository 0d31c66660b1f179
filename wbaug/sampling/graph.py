r"""The neighbourhood graph of Algorithm 2: :math:`W_2 < \varepsilon` intersected with a kNN graph.

Symmetrisation (documented choice): the kNN relation is not symmetric, so the undirected graph has the
edge :math:`\{i, j\}` when ``j`` is among the ``k`` nearest neighbours of ``i`` **or** ``i`` among those of
``j`` (``symmetrize="union"``, the default; it is what ``networkx.Graph(directed_knn_adjacency)`` gives,
the usual way a kNN adjacency is turned into an undirected graph), intersected with :math:`W_2 < \varepsilon`.
``symmetrize="mutual"`` keeps only mutual neighbours (AND). Because the k nearest neighbours *inside* the
:math:`\varepsilon`-ball are exactly the kNN neighbours whose distance is below :math:`\varepsilon`, the
order "threshold then kNN" of Algorithm 2 and "kNN then threshold" give the same graph.

Exact kNN with pruning (``knn_method="pruned"``): lower bounds of :math:`W_2` (see
:mod:`wbaug.sampling.bounds`) for all pairs cost a few matrix products; each cloud keeps a running k-th
neighbour radius :math:`\tau_i` (seeded by the exact distances to the ``k`` clouds with the smallest
identity-coupling upper bound, or smallest lower bound for ragged clouds), and candidates are evaluated
best-first in order of increasing lower bound until the next lower bound exceeds :math:`\min(\tau_i,
\varepsilon)`. A skipped pair has :math:`W_2 \ge LB > \tau_i \ge d_k(i)`, so the graph equals the brute-force
graph, ties included (ties are broken by the smaller index in both paths).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from wbaug.sampling._validation import Clouds, check_nonnegative_int, cloud_count
from wbaug.sampling.bounds import identity_upper_bound, w2_lower_bound

__all__ = ["build_neighborhood_graph", "exact_knn", "knn_from_distances", "pair_distances"]

PairFn = Callable[[Clouds, Tensor, Tensor], Tensor]


def _uniform_pair_w2(x: Tensor, y: Tensor, perm_out: list | None = None) -> Tensor:
    """Exact W2 of equal-size uniform clouds ``(E, N, D)``: optimal matchings from
    :func:`wbaug.ot.assignment.matched_assignment` (centred/whitened costs, nearest-neighbour certificate,
    thread pool), then the distance evaluated exactly from the matched points."""
    from wbaug.ot.assignment import matched_assignment

    x64 = x.detach().to("cpu", torch.float64)
    y64 = y.detach().to("cpu", torch.float64)
    perm = torch.from_numpy(matched_assignment(x64.numpy(), y64.numpy()))
    if perm_out is not None:  # optimal matchings x[i] <-> y[perm[i]], kept for warm starts
        perm_out.append(perm.to(torch.int16 if x.shape[1] < 32768 else torch.int32))
    matched = torch.gather(y64, 1, perm[..., None].expand_as(y64))
    return ((x64 - matched) ** 2).sum(-1).mean(-1).sqrt()


def pair_distances(
    clouds: Clouds, rows: Tensor, cols: Tensor, *, chunk_size: int = 4096, perm_out: list | None = None
) -> Tensor:
    """Exact W2 between ``clouds[rows[e]]`` and ``clouds[cols[e]]`` for every ``e``, float64 ``(E,)``.

    Equal-size uniform clouds are solved as assignment problems (:func:`_uniform_pair_w2`); ragged lists
    use :func:`wbaug.ot.wasserstein_distance` (exact network simplex), grouped by cloud sizes. With
    ``perm_out`` (a list) and equal-size clouds, the optimal matchings ``(E, N)`` are appended to it in order.
    """
    from wbaug.ot import wasserstein_distance

    out = torch.empty(rows.numel(), dtype=torch.float64)
    if rows.numel() == 0:
        return out
    if isinstance(clouds, Tensor):
        r_dev = rows.to(clouds.device)
        c_dev = cols.to(clouds.device)
        for s in range(0, rows.numel(), chunk_size):
            out[s : s + chunk_size] = _uniform_pair_w2(
                clouds[r_dev[s : s + chunk_size]], clouds[c_dev[s : s + chunk_size]], perm_out
            )
        return out
    sizes = torch.tensor([c.shape[0] for c in clouds])
    key = sizes[rows] * (int(sizes.max()) + 1) + sizes[cols]
    for value in torch.unique(key):
        sel = torch.nonzero(key == value).flatten()
        for s in range(0, sel.numel(), chunk_size):
            part = sel[s : s + chunk_size]
            x = torch.stack([clouds[i] for i in rows[part].tolist()])
            y = torch.stack([clouds[j] for j in cols[part].tolist()])
            out[part] = wasserstein_distance(x, y).detach().to(device="cpu", dtype=torch.float64)
    return out


def _select_knn(rows: Tensor, cols: Tensor, vals: Tensor, m: int, k: int) -> tuple[Tensor, Tensor]:
    """k smallest ``vals`` per row (ties -> smaller column), as ``(M, k)`` indices/distances.

    Rows with fewer than ``k`` entries are padded with index ``-1`` and distance ``inf``.
    """
    order = torch.sort(cols, stable=True).indices
    order = order[torch.sort(vals[order], stable=True).indices]
    order = order[torch.sort(rows[order], stable=True).indices]
    r, c, v = rows[order], cols[order], vals[order]
    counts = torch.bincount(r, minlength=m)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(r.numel()) - starts[r]
    keep = rank < k
    idx = torch.full((m, k), -1, dtype=torch.long)
    dist = torch.full((m, k), float("inf"), dtype=torch.float64)
    idx[r[keep], rank[keep]] = c[keep]
    dist[r[keep], rank[keep]] = v[keep]
    return idx, dist


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


def exact_knn(
    clouds: Clouds,
    k: int,
    *,
    epsilon: float | None = None,
    method: Literal["pruned", "brute"] = "pruned",
    pair_fn: PairFn | None = None,
    batch_per_row: int | None = None,
    progress: bool | None = False,
    perm_out: list | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""Exact k nearest neighbours of every cloud under W2 (restricted to :math:`W_2 < \varepsilon`).

    Args:
        clouds: ``(M, N, D)`` tensor or list of ``(N_i, D)`` clouds.
        k: neighbours per cloud, ``1 <= k < M``.
        epsilon: only neighbours with ``W2 < epsilon`` count (``None``: no threshold).
        method: ``"pruned"`` (lower/upper bounds, exact W2 only on candidates) or ``"brute"`` (all pairs).
        pair_fn: ``pair_fn(clouds, rows, cols) -> (E,)`` exact distances (default :func:`pair_distances`).
        batch_per_row: candidates evaluated per row and round in the pruned search (default ``max(k, 8)``).
        progress: show a tqdm bar over evaluated pairs (``None``: only on a terminal).
        perm_out: pruned search with the default ``pair_fn`` on equal-size clouds only: a list that receives
            the optimal matchings of the evaluated pairs, ``(E, N)`` chunks in the order of the returned
            pairs.

    Returns:
        ``knn_index (M, k)`` (``-1`` where fewer than ``k`` neighbours lie within ``epsilon``),
        ``knn_distance (M, k)`` float64 (``inf`` there), and the evaluated unordered pairs
        ``rows (E,)``, ``cols (E,)`` (``rows < cols``) with their exact distances ``(E,)``.

    Example:
        >>> x = torch.randn(50, 10, 2, dtype=torch.float64)
        >>> idx, dist, *_ = exact_knn(x, 3)  # doctest: +SKIP
    """
    if pair_fn is None:
        pair_fn = pair_distances
        if perm_out is not None and method == "pruned" and isinstance(clouds, Tensor):

            def pair_fn(c: Clouds, r: Tensor, q: Tensor) -> Tensor:
                return pair_distances(c, r, q, perm_out=perm_out)

    m = cloud_count(clouds)
    radius_cap = float("inf") if epsilon is None else float(epsilon)
    if method == "brute":
        iu = torch.triu_indices(m, m, offset=1)
        rows, cols = iu[0], iu[1]
        vals = _evaluate(pair_fn, clouds, rows, cols, progress, m * (m - 1) // 2)
        idx, dist = _knn_within(rows, cols, vals, m, k, radius_cap)
        return idx, dist, rows, cols, vals
    if method != "pruned":
        raise ValueError(f"knn_method must be 'pruned' or 'brute', got {method!r}")

    # bounds are matrix products (fast on any device); the best-first search itself runs on the CPU
    lb = w2_lower_bound(clouds).cpu()
    lb.fill_diagonal_(float("inf"))
    evaluated = torch.zeros(m, m, dtype=torch.bool)
    evaluated.fill_diagonal_(True)
    all_rows: list[Tensor] = []
    all_cols: list[Tensor] = []
    all_vals: list[Tensor] = []
    knn_d = torch.full((m, k), float("inf"), dtype=torch.float64)
    hide = None if progress is None else not progress
    bar = tqdm(total=None, desc="exact W2 (pruned kNN)", unit="pair", disable=hide, leave=False)

    def run(r: Tensor, c: Tensor) -> None:
        nonlocal knn_d
        a, b = torch.minimum(r, c), torch.maximum(r, c)
        key = torch.unique(a * m + b)
        a, b = key // m, key % m
        new = ~evaluated[a, b]
        a, b = a[new], b[new]
        if a.numel() == 0:
            return
        v = pair_fn(clouds, a, b).to(torch.float64)
        evaluated[a, b] = True
        evaluated[b, a] = True
        all_rows.append(a)
        all_cols.append(b)
        all_vals.append(v)
        bar.update(a.numel())
        # merge the new distances into every row's running k smallest
        rr = torch.cat([a, b])
        vv = torch.cat([v, v])
        counts = torch.bincount(rr, minlength=m)
        width = int(counts.max())
        order = torch.argsort(rr, stable=True)
        rr, vv = rr[order], vv[order]
        rank = torch.arange(rr.numel()) - (torch.cumsum(counts, 0) - counts)[rr]
        pad = torch.full((m, width), float("inf"), dtype=torch.float64)
        pad[rr, rank] = vv
        knn_d = torch.topk(torch.cat([knn_d, pad], 1), k, dim=1, largest=False).values

    # seeds: the k most promising partners of every row
    seed_score = identity_upper_bound(clouds).cpu() if isinstance(clouds, Tensor) else lb.clone()
    seed_score.fill_diagonal_(float("inf"))
    seeds = torch.topk(seed_score, k, dim=1, largest=False).indices
    del seed_score
    run(torch.arange(m).repeat_interleave(k), seeds.reshape(-1))

    order = torch.argsort(lb, dim=1)
    lb_sorted = torch.gather(lb, 1, order)
    del lb
    ptr = torch.zeros(m, dtype=torch.long)
    step = batch_per_row or max(k, 8)
    ar = torch.arange(step)
    while True:
        tau = torch.clamp(knn_d[:, -1], max=radius_cap)
        # advance pointers past already-evaluated entries is implicit: they are filtered below
        pos = ptr[:, None] + ar[None, :]
        valid = pos < m - 1  # the diagonal (inf) is always last
        pos_c = pos.clamp(max=m - 1)
        cand_lb = torch.gather(lb_sorted, 1, pos_c)
        inside = valid & (cand_lb <= tau[:, None])
        # epsilon: strict inequality W2 < eps, lb == eps cannot qualify
        if epsilon is not None:
            inside &= cand_lb < radius_cap
        if not bool(inside.any()):
            break
        cand = torch.gather(order, 1, pos_c)
        r = torch.arange(m)[:, None].expand_as(cand)[inside]
        c = cand[inside]
        run(r, c)
        # rows whose whole window was inside move on; others are finished (sorted lb exceeded tau)
        ptr = ptr + inside.sum(1)
    bar.close()
    rows = torch.cat(all_rows)
    cols = torch.cat(all_cols)
    vals = torch.cat(all_vals)
    idx, dist = _knn_within(rows, cols, vals, m, k, radius_cap)
    return idx, dist, rows, cols, vals


def _evaluate(
    pair_fn: PairFn, clouds: Clouds, rows: Tensor, cols: Tensor, progress: bool, total: int
) -> Tensor:
    out = torch.empty(rows.numel(), dtype=torch.float64)
    chunk = 65536
    with tqdm(
        total=total,
        desc="exact W2 (all pairs)",
        unit="pair",
        disable=None if progress is None else not progress,
        leave=False,
    ) as bar:
        for s in range(0, rows.numel(), chunk):
            out[s : s + chunk] = pair_fn(clouds, rows[s : s + chunk], cols[s : s + chunk]).to(torch.float64)
            bar.update(min(chunk, rows.numel() - s))
    return out


def _knn_within(
    rows: Tensor, cols: Tensor, vals: Tensor, m: int, k: int, radius: float
) -> tuple[Tensor, Tensor]:
    keep = vals < radius if radius != float("inf") else torch.ones_like(vals, dtype=torch.bool)
    r = torch.cat([rows[keep], cols[keep]])
    c = torch.cat([cols[keep], rows[keep]])
    v = torch.cat([vals[keep], vals[keep]])
    return _select_knn(r, c, v, m, k)


def build_neighborhood_graph(
    knn_index: Tensor,
    knn_distance: Tensor,
    *,
    symmetrize: Literal["union", "mutual"] = "union",
    num_nodes: int | None = None,
) -> nx.Graph:
    """Undirected weighted graph (edge attribute ``weight`` = W2) from a kNN table.

    ``symmetrize="union"``: edge if ``j in kNN(i)`` or ``i in kNN(j)``; ``"mutual"``: both. Entries ``-1``
    (no neighbour within epsilon) are ignored. Every cloud is a node, isolated ones included.
    """
    m = knn_index.shape[0] if num_nodes is None else num_nodes
    rows = torch.arange(knn_index.shape[0])[:, None].expand_as(knn_index)
    ok = knn_index >= 0
    i, j, w = rows[ok], knn_index[ok], knn_distance[ok]
    directed = {(int(a), int(b)): float(d) for a, b, d in zip(i, j, w)}
    graph = nx.Graph()
    graph.add_nodes_from(range(m))
    for (a, b), d in directed.items():
        if symmetrize == "mutual" and (b, a) not in directed:
            continue
        graph.add_edge(a, b, weight=d)
    if symmetrize not in ("union", "mutual"):
        raise ValueError(f"symmetrize must be 'union' or 'mutual', got {symmetrize!r}")
    return graph

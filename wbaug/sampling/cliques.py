r"""Maximal cliques of the neighbourhood graph and the clique-sampling probabilities of Algorithm 2.

* Cliques: :func:`networkx.find_cliques` (Bron–Kerbosch with pivoting), returned as sorted index tuples in
  lexicographic order so a fit is reproducible whatever networkx's traversal order.
* ``max_clique_size``: the seed code split big cliques into 3-subsets. A clique larger than
  ``max_clique_size`` is replaced by **all** its ``max_clique_size``-subsets (every face of that dimension
  of its simplex, duplicates removed): samples then lie on the ``(max_clique_size - 1)``-skeleton of the
  clique complex, which keeps every vertex and edge but not the interior of bigger simplices.
* Isolated vertices: a vertex without edges is a maximal clique of size 1 (networkx reports it so).
  ``isolated="keep"`` (the paper's Algorithm 2, default) keeps it; the barycenter of one measure is the
  measure itself, so drawing it returns an exact copy of that landmark set. ``isolated="drop"`` removes
  1-cliques (isolated vertices are then never sampled); if every clique is a 1-clique this is an error.
* Probabilities: :math:`p_i = 1 / |\{\sigma \in K(G) : i \in \sigma\}|` and
  :math:`P(\sigma) \propto \sum_{i\in\sigma} p_i`. With :math:`c_i` the number of cliques containing ``i``
  and ``M`` the number of covered vertices this is exactly "draw a vertex ``i`` uniformly, then one of its
  :math:`c_i` cliques uniformly": :math:`P(\sigma) = \sum_{i\in\sigma} \frac{1}{M c_i}`, what the paper means
  by "corresponds to uniform selection of graph vertices" (§3.1).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["clique_probabilities", "maximal_cliques", "pad_cliques"]


def maximal_cliques(
    graph: nx.Graph,
    *,
    max_clique_size: int | None = None,
    isolated: Literal["keep", "drop"] = "keep",
) -> list[tuple[int, ...]]:
    """Maximal cliques of ``graph`` as sorted tuples, optionally split to ``max_clique_size``-subsets.

    Example:
        >>> import networkx as nx
        >>> maximal_cliques(nx.complete_graph(4), max_clique_size=3)
        [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    """
    if isolated not in ("keep", "drop"):
        raise ValueError(f"isolated must be 'keep' or 'drop', got {isolated!r}")
    if max_clique_size is not None and (isinstance(max_clique_size, bool) or max_clique_size < 1):
        raise ValueError(f"max_clique_size must be an int >= 1 or None, got {max_clique_size!r}")
    found: set[tuple[int, ...]] = set()
    import networkx as nx  # imported where used: keeps `import wbaug` light

    for clique in nx.find_cliques(graph):
        c = tuple(sorted(int(v) for v in clique))
        if max_clique_size is not None and len(c) > max_clique_size:
            found.update(itertools.combinations(c, max_clique_size))
        else:
            found.add(c)
    if isolated == "drop":
        found = {c for c in found if len(c) > 1}
        if not found:
            raise ValueError(
                "isolated='drop' removed every clique: the graph has no edges (raise epsilon or k)"
            )
    return sorted(found)


def clique_probabilities(cliques: list[tuple[int, ...]], num_nodes: int) -> tuple[Tensor, Tensor]:
    r"""Vertex weights :math:`p_i = 1/\#\{\sigma \ni i\}` ``(M,)`` (0 for uncovered vertices) and clique
    probabilities :math:`P(\sigma) = \sum_{i\in\sigma}p_i / \sum_{\sigma'}\sum_{i\in\sigma'}p_i` ``(C,)``,
    both float64."""
    if not cliques:
        raise ValueError("cliques must not be empty")
    members = torch.tensor([v for c in cliques for v in c], dtype=torch.long)
    owner = torch.repeat_interleave(torch.arange(len(cliques)), torch.tensor([len(c) for c in cliques]))
    counts = torch.bincount(members, minlength=num_nodes).to(torch.float64)
    weights = torch.where(counts > 0, 1.0 / counts.clamp_min(1.0), torch.zeros_like(counts))
    score = torch.zeros(len(cliques), dtype=torch.float64).index_add_(0, owner, weights[members])
    return weights, score / score.sum()


def pad_cliques(cliques: list[tuple[int, ...]]) -> tuple[Tensor, Tensor]:
    """Padded ``(C, S_max)`` long index table (padding repeats the first vertex) and its ``(C, S_max)``
    boolean mask."""
    sizes = np.fromiter((len(c) for c in cliques), dtype=np.int64, count=len(cliques))
    flat = np.fromiter((v for c in cliques for v in c), dtype=np.int64, count=int(sizes.sum()))
    # one vectorised fill (a Python loop of per-row tensor writes took seconds at 10^5 cliques)
    mask = np.arange(int(sizes.max()))[None, :] < sizes[:, None]
    first = flat[np.concatenate([[0], np.cumsum(sizes)[:-1]])]
    table = np.repeat(first[:, None], mask.shape[1], axis=1)
    table[mask] = flat  # row-major: each row's vertices in order
    return torch.from_numpy(table), torch.from_numpy(mask)

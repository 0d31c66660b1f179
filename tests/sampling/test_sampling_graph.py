"""Neighbourhood graph of Algorithm 2: W2 bounds, exact pruned kNN vs brute force, symmetrisation, cliques
and clique probabilities (references: POT's exact ``ot.emd2``, scipy ``sqrtm``, networkx, NumPy
re-derivations)."""

import itertools

import networkx as nx
import numpy as np
import ot
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.sampling import (
    build_neighborhood_graph,
    clique_probabilities,
    exact_knn,
    gelbrich_lower_bound,
    identity_upper_bound,
    knn_from_distances,
    maximal_cliques,
    projection_lower_bound,
    w2_lower_bound,
)
from wbaug.sampling.bounds import centroid_lower_bound


def _clouds(seed: int, m: int, n: int, d: int = 2, clusters: int = 3) -> torch.Tensor:
    """Clustered random clouds (so kNN structure is non-trivial), float64."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(clusters, n, d, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(clusters, (m,), generator=g)
    return centers[labels] + torch.randn(m, n, d, generator=g, dtype=torch.float64) * 0.7


def _emd_w2(x: torch.Tensor, y: torch.Tensor) -> float:
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    return float(np.sqrt(ot.emd2(a, b, ot.dist(x.numpy(), y.numpy()))))


@given(seed=st.integers(0, 10_000), n=st.integers(2, 9), d=st.sampled_from([1, 2, 3]))
def test_bounds_bracket_exact_w2(seed, n, d):
    """Centroid <= Gelbrich, projection bounds <= exact W2 (POT emd2) <= identity-coupling bound."""
    x = _clouds(seed, 5, n, d)
    exact = torch.tensor([[_emd_w2(x[i], x[j]) for j in range(5)] for i in range(5)], dtype=torch.float64)
    tol = 1e-9  # POT's ot.dist itself has ~1e-15 round-off, i.e. ~3e-8 after the square root
    exact = torch.where(exact < 1e-6, torch.zeros_like(exact), exact)
    assert bool((centroid_lower_bound(x) <= gelbrich_lower_bound(x) + tol).all())
    assert bool((gelbrich_lower_bound(x) <= exact + tol).all())
    assert bool((projection_lower_bound(x) <= exact + tol).all())
    assert bool((w2_lower_bound(x) <= exact + tol).all())
    assert bool((exact**2 <= identity_upper_bound(x) ** 2 + tol).all())


@given(seed=st.integers(0, 10_000))
def test_gelbrich_bound_ragged_clouds(seed):
    """Gelbrich bound of clouds of different sizes stays below the exact (network simplex) W2."""
    g = torch.Generator().manual_seed(seed)
    clouds = [
        torch.randn(int(s), 2, generator=g, dtype=torch.float64) * (1 + i)
        for i, s in enumerate(torch.randint(2, 9, (4,), generator=g))
    ]
    lb = gelbrich_lower_bound(clouds)
    for i, j in itertools.product(range(4), repeat=2):
        assert float(lb[i, j]) <= _emd_w2(clouds[i], clouds[j]) + 1e-9


@pytest.mark.parametrize("d", [2, 3])
def test_gelbrich_matches_scipy_sqrtm(d):
    """The D=2 closed form and the D>2 eigen path equal the Bures formula evaluated with
    scipy.linalg.sqrtm."""
    x = _clouds(3, 6, 7, d)
    lb = gelbrich_lower_bound(x)
    for i, j in [(0, 1), (2, 5), (3, 4)]:
        mi, mj = x[i].mean(0).numpy(), x[j].mean(0).numpy()
        ci = np.cov(x[i].numpy().T, bias=True)
        cj = np.cov(x[j].numpy().T, bias=True)
        ri = scipy.linalg.sqrtm(ci).real
        fid = np.trace(scipy.linalg.sqrtm(ri @ cj @ ri).real)
        ref = np.sqrt(max(np.sum((mi - mj) ** 2) + np.trace(ci) + np.trace(cj) - 2 * fid, 0.0))
        torch.testing.assert_close(lb[i, j], torch.tensor(ref, dtype=torch.float64), rtol=1e-6, atol=1e-8)


@given(
    seed=st.integers(0, 10_000),
    m=st.integers(5, 30),
    k=st.integers(1, 4),
    eps=st.sampled_from([None, 2.0, 4.0, 8.0]),
    d=st.sampled_from([2, 3]),
)
def test_pruned_knn_equals_brute_force(seed, m, k, eps, d):
    """Exact kNN with bound pruning returns exactly the brute-force kNN table (ties included) and graph."""
    k = min(k, m - 1)
    x = _clouds(seed, m, 6, d)
    pi, pd, *_ = exact_knn(x, k, epsilon=eps, method="pruned")
    bi, bd, *_ = exact_knn(x, k, epsilon=eps, method="brute")
    torch.testing.assert_close(pi, bi)
    torch.testing.assert_close(pd, bd)
    gp = build_neighborhood_graph(pi, pd)
    gb = build_neighborhood_graph(bi, bd)
    assert set(gp.edges()) == set(gb.edges())


def test_pruned_knn_with_duplicates_and_ties():
    """Identical clouds (distance 0 ties) give the same table as brute force, ties broken by smaller index."""
    x = _clouds(0, 12, 5)
    x = torch.cat([x, x[:4]])  # exact duplicates
    pi, pd, *_ = exact_knn(x, 3, method="pruned")
    bi, bd, *_ = exact_knn(x, 3, method="brute")
    torch.testing.assert_close(pi, bi)
    assert int(pi[12, 0]) == 0 and float(pd[12, 0]) == 0.0


def test_pruned_knn_ragged_equals_brute():
    """Lists of clouds of different sizes: pruned (Gelbrich bound only) == brute force."""
    g = torch.Generator().manual_seed(1)
    clouds = [
        torch.randn(int(s), 2, generator=g, dtype=torch.float64) + i % 3
        for i, s in enumerate(torch.randint(3, 7, (14,), generator=g))
    ]
    pi, pd, *_ = exact_knn(clouds, 3, method="pruned")
    bi, bd, *_ = exact_knn(clouds, 3, method="brute")
    torch.testing.assert_close(pi, bi)
    torch.testing.assert_close(pd, bd)


def test_pruning_evaluates_few_pairs_and_exact_values():
    """On clustered data the pruned search evaluates far fewer than all pairs; evaluated values equal POT."""
    x = _clouds(5, 80, 8, clusters=8)
    _, _, rows, cols, vals = exact_knn(x, 3, method="pruned")
    assert rows.numel() < 80 * 79 // 2 // 2
    for e in range(0, rows.numel(), max(1, rows.numel() // 10)):
        ref = _emd_w2(x[rows[e]], x[cols[e]])
        torch.testing.assert_close(vals[e], torch.tensor(ref, dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_knn_and_symmetrisation_on_precomputed_matrix():
    """Hand-made distances: kNN rows, union (OR) vs mutual (AND) symmetrisation and the epsilon cut."""
    d = torch.tensor(
        [
            [0, 1, 2, 9, 9],
            [1, 0, 5, 9, 9],
            [2, 5, 0, 3, 9],
            [9, 9, 3, 0, 4],
            [9, 9, 9, 4, 0],
        ],
        dtype=torch.float64,
    )
    idx, dist = knn_from_distances(d, 1)
    assert idx[:, 0].tolist() == [1, 0, 0, 2, 3]
    union = build_neighborhood_graph(idx, dist, symmetrize="union")
    mutual = build_neighborhood_graph(idx, dist, symmetrize="mutual")
    assert {tuple(sorted(e)) for e in union.edges()} == {(0, 1), (0, 2), (2, 3), (3, 4)}
    assert {tuple(sorted(e)) for e in mutual.edges()} == {(0, 1)}
    # epsilon: W2 < 3 strictly -> (2, 3) at distance 3 and (3, 4) at 4 are cut; vertex 4 becomes isolated
    from wbaug.sampling.graph import _knn_within

    iu = torch.triu_indices(5, 5, offset=1)
    idx_e, dist_e = _knn_within(iu[0], iu[1], d[iu[0], iu[1]], 5, 1, 3.0)
    g = build_neighborhood_graph(idx_e, dist_e)
    assert {tuple(sorted(e)) for e in g.edges()} == {(0, 1), (0, 2)}
    assert g.degree(4) == 0 and g.number_of_nodes() == 5


@given(seed=st.integers(0, 10_000), m=st.integers(3, 12), p=st.floats(0.1, 0.9))
def test_cliques_match_networkx_and_probabilities(seed, m, p):
    """Cliques are networkx's maximal cliques; p_i = 1/#cliques containing i; P(sigma) ∝ sum p_i, which equals
    'uniform vertex, then uniform clique among its cliques' (NumPy re-derivation)."""
    graph = nx.gnp_random_graph(m, p, seed=seed)
    cliques = maximal_cliques(graph)
    assert set(cliques) == {tuple(sorted(c)) for c in nx.find_cliques(graph)}
    weights, probs = clique_probabilities(cliques, m)
    counts = np.zeros(m)
    for c in cliques:
        counts[list(c)] += 1
    np.testing.assert_allclose(weights.numpy(), 1.0 / counts)
    ref = np.array([sum(1.0 / counts[i] for i in c) for c in cliques])
    torch.testing.assert_close(probs, torch.tensor(ref / ref.sum(), dtype=torch.float64))
    two_stage = np.array([sum(1.0 / (m * counts[i]) for i in c) for c in cliques])
    torch.testing.assert_close(probs, torch.tensor(two_stage, dtype=torch.float64))


def test_max_clique_size_splits_into_all_subsets():
    """A 5-clique with max_clique_size=3 becomes its 10 triangles; smaller cliques are kept."""
    graph = nx.complete_graph(5)
    graph.add_edge(4, 5)
    cliques = maximal_cliques(graph, max_clique_size=3)
    assert set(cliques) == set(itertools.combinations(range(5), 3)) | {(4, 5)}
    for c in cliques:
        assert all(graph.has_edge(a, b) for a, b in itertools.combinations(c, 2))


def test_isolated_vertices_keep_and_drop():
    """An isolated vertex is its own 1-clique with keep, and is removed with drop; all-isolated + drop
    errors."""
    graph = nx.Graph()
    graph.add_nodes_from(range(4))
    graph.add_edge(0, 1)
    assert maximal_cliques(graph) == [(0, 1), (2,), (3,)]
    assert maximal_cliques(graph, isolated="drop") == [(0, 1)]
    empty = nx.empty_graph(3)
    with pytest.raises(ValueError, match="isolated"):
        maximal_cliques(empty, isolated="drop")
    with pytest.raises(ValueError, match="max_clique_size"):
        maximal_cliques(graph, max_clique_size=0)

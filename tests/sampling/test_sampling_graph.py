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
from wbaug.sampling.graph import pair_distances


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
    res = exact_knn(x, 3, method="pruned")
    rows, cols, vals = res.pair_rows, res.pair_cols, res.pair_values
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
    from wbaug.sampling.graph import knn_from_pairs

    iu = torch.triu_indices(5, 5, offset=1)
    idx_e, dist_e = knn_from_pairs(iu[0], iu[1], d[iu[0], iu[1]], 5, 1, epsilon=3.0)
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


# ----------------------------------------------------------------------------- blocked / certified kNN search
def _face_like(seed: int, m: int, duplicates: int) -> torch.Tensor:
    """Small synthetic_faces sets (68 points) with some exact duplicates appended (distance-0 ties)."""
    from wbaug.datasets import synthetic_faces

    x = synthetic_faces(m, generator=torch.Generator().manual_seed(seed)).double()
    return torch.cat([x, x[:duplicates]]) if duplicates else x


def _assert_same_as_brute(x, k, eps, **kwargs):
    res = exact_knn(x, k, epsilon=eps, method="pruned", **kwargs)
    ref = exact_knn(x, k, epsilon=eps, method="brute")
    torch.testing.assert_close(res.indices, ref.indices, rtol=0, atol=0)
    torch.testing.assert_close(res.distances, ref.distances)
    gp = build_neighborhood_graph(res.indices, res.distances)
    gb = build_neighborhood_graph(ref.indices, ref.distances)
    assert set(gp.edges()) == set(gb.edges())
    # evaluated pairs: unique, rows < cols, sorted, values equal to the brute-force values of those pairs
    m = ref.indices.shape[0]
    keys = res.pair_rows * m + res.pair_cols
    assert bool((res.pair_rows < res.pair_cols).all()) and bool((keys[1:] > keys[:-1]).all())
    brute = torch.full((m, m), float("nan"), dtype=torch.float64)
    brute[ref.pair_rows, ref.pair_cols] = ref.pair_values
    torch.testing.assert_close(res.pair_values, brute[res.pair_rows, res.pair_cols])
    return res, ref


@given(
    seed=st.integers(0, 10_000),
    m=st.integers(8, 40),
    k=st.integers(1, 5),
    eps=st.sampled_from([None, 0.5, 2.0, 4.0]),
    duplicates=st.integers(0, 4),
    block=st.integers(1, 16),
    d=st.sampled_from([1, 2, 3]),
)
def test_blocked_search_equals_brute_force_random(seed, m, k, eps, duplicates, block, d):
    """Row blocks of any size (1 = every row alone), duplicates (distance-0 ties) and small epsilon
    (isolated vertices, -1 entries): the table, graph and evaluated values equal brute force."""
    x = _clouds(seed, m, 5, d)
    x = torch.cat([x, x[:duplicates]])
    k = min(k, x.shape[0] - 1)
    res, ref = _assert_same_as_brute(x, k, eps, block_size=block)
    if eps == 0.5:
        assert bool((ref.indices == -1).any())  # the case of isolated / short rows is exercised


@given(
    seed=st.integers(0, 10_000),
    m=st.integers(10, 30),
    k=st.integers(1, 6),
    eps_scale=st.sampled_from([None, 0.3, 1.0]),
    duplicates=st.integers(0, 3),
    block=st.sampled_from([3, 8, 64]),
)
def test_blocked_search_equals_brute_force_faces(seed, m, k, eps_scale, duplicates, block):
    """Face-like 68-point sets (synthetic_faces), with duplicates and an epsilon around the typical
    neighbour distance (some vertices isolated): identical to brute force."""
    x = _face_like(seed, m, duplicates)
    k = min(k, x.shape[0] - 1)
    eps = None
    if eps_scale is not None:
        iu = torch.triu_indices(x.shape[0], x.shape[0], 1)
        eps = float(pair_distances(x, iu[0], iu[1]).median()) * eps_scale
    _assert_same_as_brute(x, k, eps, block_size=block)


def test_duplicate_rows_tie_to_smaller_index_across_blocks():
    """A cloud repeated 4 times, each copy in a different block: every copy's neighbours are the other copies
    in increasing index order (ties -> smaller index), as brute force."""
    x = _clouds(2, 20, 5)
    x = torch.cat([x[:1], x[1:], x[:1], x[:1], x[:1]])  # copies at 0, 20, 21, 22
    res, _ = _assert_same_as_brute(x, 3, None, block_size=5)
    assert res.indices[0].tolist() == [20, 21, 22]
    assert res.indices[21].tolist() == [0, 20, 22]
    assert res.distances[21].tolist() == [0.0, 0.0, 0.0]


def test_result_does_not_depend_on_block_size():
    """The whole result (table, evaluated pairs, values) is a function of the data and block layout only;
    different layouts may evaluate different pairs but always give the same table."""
    x = _face_like(1, 60, 2)
    a = exact_knn(x, 4, block_size=7)
    b = exact_knn(x, 4, block_size=7)
    c = exact_knn(x, 4, block_size=1000)
    for name in ("indices", "distances", "pair_rows", "pair_cols", "pair_values"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert torch.equal(a.indices, c.indices) and torch.equal(a.distances, c.distances)
    assert a.n_solves >= a.pair_rows.numel()


def test_ragged_blocked_search_equals_brute():
    """Ragged lists (Gelbrich bound, eigenvalue embedding) in several blocks: identical to brute force."""
    g = torch.Generator().manual_seed(4)
    clouds = [
        torch.randn(int(s), 2, generator=g, dtype=torch.float64) * (1 + i % 2) + i % 3
        for i, s in enumerate(torch.randint(3, 7, (25,), generator=g))
    ]
    clouds.append(clouds[3].clone())
    _assert_same_as_brute(clouds, 3, None, block_size=4)
    _assert_same_as_brute(clouds, 2, 1.5, block_size=6)


def test_matchings_are_optimal_for_knn_pairs():
    """return_matchings: one optimal matching per kNN pair (its cost is the exact W2^2)."""
    x = _face_like(3, 30, 0)
    res = exact_knn(x, 3, return_matchings=True, block_size=8)
    mt = res.matchings
    pairs = {(min(i, int(j)), max(i, int(j))) for i in range(30) for j in res.indices[i]}
    assert set(zip(mt.rows.tolist(), mt.cols.tolist())) == pairs
    w2 = pair_distances(x, mt.rows, mt.cols)
    matched = torch.gather(x[mt.cols], 1, mt.perms.long()[..., None].expand(-1, -1, 2))
    cost = ((x[mt.rows] - matched) ** 2).sum(-1).mean(-1)
    torch.testing.assert_close(cost, w2**2)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 8), d=st.sampled_from([1, 2, 3]), ragged=st.booleans())
def test_embedding_and_pair_bounds_below_exact_w2(seed, n, d, ragged):
    """Euclidean distances of the lower-bound embedding and the per-pair bound stay below the exact W2
    (POT); the per-pair bound equals the dense w2_lower_bound."""
    from wbaug.sampling.bounds import bound_features, lower_bound_embedding, pair_lower_bound

    g = torch.Generator().manual_seed(seed)
    if ragged:
        sizes = torch.randint(2, 8, (6,), generator=g).tolist()
        x = [torch.randn(s, d, generator=g, dtype=torch.float64) * (1 + i) for i, s in enumerate(sizes)]
    else:
        x = _clouds(seed, 6, n, d)
    f = bound_features(x)
    emb = lower_bound_embedding(f)
    iu = torch.triu_indices(6, 6, 1)
    lb = pair_lower_bound(f, iu[0], iu[1])
    cut = pair_lower_bound(f, iu[0], iu[1], cutoff=lb * 0.999)  # all above their cutoff
    assert bool(torch.isinf(cut[lb > 1e-9]).all())
    for e, (i, j) in enumerate(iu.T.tolist()):
        exact = _emd_w2(x[i], x[j])
        assert float(torch.linalg.vector_norm(emb[i] - emb[j])) <= exact * (1 + 1e-9) + 1e-9
        assert float(lb[e]) <= exact + 1e-9
    torch.testing.assert_close(lb, w2_lower_bound(x)[iu[0], iu[1]], rtol=1e-6, atol=1e-9)


def test_exact_knn_rejects_bad_arguments():
    x = _clouds(0, 10, 4)
    with pytest.raises(ValueError, match="k must be"):
        exact_knn(x, 10)
    with pytest.raises(ValueError, match="epsilon"):
        exact_knn(x, 2, epsilon=-1.0)
    with pytest.raises(ValueError, match="block_size"):
        exact_knn(x, 2, block_size=0)
    with pytest.raises(ValueError, match="method"):
        exact_knn(x, 2, method="fast")

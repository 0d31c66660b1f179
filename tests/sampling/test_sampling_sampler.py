"""WassersteinBarycentricSampler: sampled cliques/weights/barycenters against their definitions (networkx
graph,
NumPy re-derivations, POT), reproducibility, Dirichlet law (scipy), nearest neighbour, save/load, §6.1
search."""

import itertools

import numpy as np
import ot
import pytest
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.sampling import WassersteinBarycentricSampler, sample_dirichlet, select_hyperparameters


def _faces(m: int, seed: int = 0, n: int = 10, dtype=torch.float64) -> torch.Tensor:
    """Small face-like clustered ordered landmark sets."""
    g = torch.Generator().manual_seed(seed)
    template = torch.rand(n, 2, generator=g, dtype=dtype) * 50
    scale = 1 + 0.2 * torch.rand(m, 1, 1, generator=g, dtype=dtype)
    return template * scale + torch.randn(m, n, 2, generator=g, dtype=dtype) * 2


_FITTED: dict = {}


def _fitted(correspondence: str, k: int = 4, m: int = 30) -> WassersteinBarycentricSampler:
    key = (correspondence, k, m)
    if key not in _FITTED:
        _FITTED[key] = WassersteinBarycentricSampler(k, correspondence=correspondence).fit(_faces(m))
    return _FITTED[key]


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 40), corr=st.sampled_from(["index", "ot"]))
def test_samples_lie_in_simplex_of_a_graph_clique(seed, n, corr):
    """Every drawn clique is a clique of graph_, weights lie on the simplex (zero on padding); index mode
    gives
    exactly sum_s lambda_s X_s; ot mode gives per point a lambda-combination of one point per vertex cloud."""
    sampler = _fitted(corr)
    out, info = sampler.sample(n, generator=torch.Generator().manual_seed(seed), return_info=True)
    assert out.shape == (n, 10, 2)
    x = sampler.landmarks_
    for b in range(n):
        verts = [int(v) for v in info["vertices"][b] if v >= 0]
        assert tuple(verts) == sampler.cliques_[int(info["cliques"][b])]
        assert all(sampler.graph_.has_edge(u, v) for u, v in itertools.combinations(verts, 2))
        lam = info["weights"][b]
        assert bool((lam >= 0).all())
        torch.testing.assert_close(lam.sum(), torch.tensor(1.0, dtype=lam.dtype))
        assert bool((lam[len(verts) :] == 0).all())
        if corr == "index":
            ref = sum(lam[s] * x[v] for s, v in enumerate(verts))
        else:
            sigma = info["assignment"][b]
            ref = sum(lam[s] * x[v][sigma[s]] for s, v in enumerate(verts))
            # each sigma row is a permutation: the barycenter uses every point of every vertex once
            for s in range(len(verts)):
                assert sorted(sigma[s].tolist()) == list(range(10))
        torch.testing.assert_close(out[b], ref)


def test_ot_mode_barycenter_is_stationary_for_pot_objective():
    """The ot-mode sample is a fixed point of the free-support iteration: re-matching each vertex to it with
    POT's exact emd and averaging returns the same points (Cuturi & Doucet's optimality condition)."""
    sampler = _fitted("ot")
    out, info = sampler.sample(5, generator=torch.Generator().manual_seed(0), return_info=True)
    for b in range(5):
        verts = [int(v) for v in info["vertices"][b] if v >= 0]
        lam = info["weights"][b].numpy()
        bary = out[b].numpy()
        acc = np.zeros_like(bary)
        for s, v in enumerate(verts):
            y = sampler.landmarks_[v].numpy()
            plan = ot.emd(np.full(10, 0.1), np.full(10, 0.1), ot.dist(bary, y))
            acc += lam[s] * (plan @ y) * 10
        torch.testing.assert_close(torch.from_numpy(acc), out[b], atol=1e-6, rtol=1e-6)


def test_same_generator_same_samples_and_info():
    """Same generator seed => identical samples and info; a different seed => different samples."""
    s = _fitted("index")
    a, ia = s.sample(50, generator=torch.Generator().manual_seed(7), return_info=True)
    b, ib = s.sample(50, generator=torch.Generator().manual_seed(7), return_info=True)
    c = s.sample(50, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ia["weights"], ib["weights"])
    assert not torch.equal(a, c)


def test_clique_frequencies_follow_clique_probs():
    """Empirical clique frequencies of 20000 draws match clique_probs_ (chi-square test, scipy)."""
    s = _fitted("index")
    cl, _ = s.draw(20000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(cl, minlength=len(s.cliques_)).numpy()
    expected = s.clique_probs_.numpy() * 20000
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-4


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.5])
def test_dirichlet_marginals_match_beta(alpha):
    """lambda_1 of Dir(alpha * 1_3) is Beta(alpha, 2 alpha): Kolmogorov-Smirnov test against scipy."""
    mask = torch.ones(4000, 3, dtype=torch.bool)
    lam = sample_dirichlet(alpha, mask, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(lam.sum(1), torch.ones(4000, dtype=torch.float64))
    assert scipy.stats.kstest(lam[:, 0].numpy(), scipy.stats.beta(alpha, 2 * alpha).cdf).pvalue > 1e-3


def test_dirichlet_tiny_concentration_stays_finite():
    """alpha = 0.01 concentrates mass on a vertex but never produces NaN (log-space normalisation)."""
    mask = torch.tensor([[True, True, True, False]] * 500)
    lam = sample_dirichlet(0.01, mask, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(lam).all()) and bool((lam[:, 3] == 0).all())
    assert float(lam.max(1).values.median()) > 0.99


def test_isolated_vertex_sampling_returns_the_original():
    """A far-away set beyond epsilon is isolated: keep -> it is a 1-clique whose samples are exact copies;
    drop -> it is never sampled."""
    x = _faces(12)
    x[11] += 1000.0
    keep = WassersteinBarycentricSampler(3, epsilon=100.0, correspondence="index").fit(x)
    assert (11,) in keep.cliques_ and keep.graph_.degree(11) == 0
    out, info = keep.sample(400, generator=torch.Generator().manual_seed(0), return_info=True)
    hits = info["cliques"] == keep.cliques_.index((11,))
    assert bool(hits.any())
    torch.testing.assert_close(out[hits], x[11].expand(int(hits.sum()), -1, -1))
    drop = WassersteinBarycentricSampler(3, epsilon=100.0, correspondence="index", isolated="drop").fit(x)
    _, info = drop.sample(400, generator=torch.Generator().manual_seed(0), return_info=True)
    assert not bool((info["vertices"] == 11).any())


def test_max_clique_size_bounds_sampled_cliques():
    """max_clique_size=2 samples only edges (pairs)."""
    s = WassersteinBarycentricSampler(6, correspondence="index", max_clique_size=2).fit(_faces(20))
    _, info = s.sample(100, generator=torch.Generator().manual_seed(0), return_info=True)
    assert int((info["vertices"] >= 0).sum(1).max()) <= 2


def test_fit_resample_and_ragged_ot_mode():
    """fit_resample returns originals then n samples; ragged lists (different N_i) sample in ot mode."""
    x = _faces(15)
    out = WassersteinBarycentricSampler(3, correspondence="index").fit_resample(x, 7)
    assert out.shape == (22, 10, 2)
    torch.testing.assert_close(out[:15], x)
    g = torch.Generator().manual_seed(0)
    clouds = [
        torch.randn(int(n), 2, generator=g, dtype=torch.float64)
        for n in torch.randint(4, 8, (12,), generator=g)
    ]
    s = WassersteinBarycentricSampler(3, correspondence="ot").fit(clouds)
    samples = s.sample(6, generator=torch.Generator().manual_seed(0))
    assert isinstance(samples, list) and len(samples) == 6
    sizes = {c.shape[0] for c in clouds}
    assert all(b.shape[0] in sizes and b.shape[1] == 2 and bool(torch.isfinite(b).all()) for b in samples)


def test_distances_match_pot_where_evaluated_and_brute_force_graph():
    """distances_ (sparse, symmetric) holds POT's exact W2 on evaluated pairs and nothing else; pruned fit ==
    brute fit."""
    x = _faces(40, seed=3)
    pruned = WassersteinBarycentricSampler(4).fit(x)
    brute = WassersteinBarycentricSampler(4, knn_method="brute").fit(x)
    assert set(pruned.graph_.edges()) == set(brute.graph_.edges())
    assert pruned.cliques_ == brute.cliques_
    assert pruned.distances_.is_sparse and pruned.distances_.shape == (40, 40)
    assert brute.distances_.values().numel() == 40 * 39  # every off-diagonal pair, both orientations
    rows, cols = pruned.distances_.indices()
    values = pruned.distances_.values()
    assert bool((rows != cols).all())
    assert rows.numel() == 2 * pruned.n_pairs_evaluated_ < 40 * 39
    dense = pruned.distances_.to_dense()
    torch.testing.assert_close(dense, dense.T)
    for e in range(0, rows.numel(), max(1, rows.numel() // 15)):
        i, j = int(rows[e]), int(cols[e])
        ref = np.sqrt(ot.emd2(np.full(10, 0.1), np.full(10, 0.1), ot.dist(x[i].numpy(), x[j].numpy())))
        torch.testing.assert_close(values[e], torch.tensor(ref, dtype=values.dtype))


def test_nearest_is_exact_and_sample_around_contains_query():
    """nearest() equals the brute-force W2 argmin (POT); sample_around of a fitted set is a barycenter of a
    clique
    containing it (index mode, frame="fitted": exactly sum lambda X with the query in its slot)."""
    s = WassersteinBarycentricSampler(4, correspondence="index", frame="fitted").fit(_faces(30))
    x = s.landmarks_
    q = x[:4] + 0.3
    idx, dist = s.nearest(q)
    for b in range(4):
        ref = [
            np.sqrt(ot.emd2(np.full(10, 0.1), np.full(10, 0.1), ot.dist(q[b].numpy(), x[j].numpy())))
            for j in range(len(x))
        ]
        assert int(idx[b]) == int(np.argmin(ref))
        torch.testing.assert_close(dist[b], torch.tensor(min(ref), dtype=torch.float64))
    out, info = s.sample_around(q, generator=torch.Generator().manual_seed(0))
    for b in range(4):
        verts = [int(v) for v in info["vertices"][b] if v >= 0]
        assert int(info["nearest"][b]) in verts
        ref = sum(
            info["weights"][b][k] * (q[b] if v == int(info["nearest"][b]) else x[v])
            for k, v in enumerate(verts)
        )
        torch.testing.assert_close(out[b], ref)


def test_sample_around_ot_mode_keeps_query_order():
    """In ot mode the output is reordered through the query's matching: with weight concentrated on the query
    (alpha tiny) the output is close to the query point by point."""
    s = WassersteinBarycentricSampler(4, concentration=0.001).fit(_faces(30))
    q = s.landmarks_[:3]
    out, info = s.sample_around(q, generator=torch.Generator().manual_seed(2))
    for b in range(3):
        lam = info["weights"][b]
        slot = [int(v) for v in info["vertices"][b]].index(int(info["nearest"][b]))
        if float(lam[slot]) > 0.999:
            torch.testing.assert_close(out[b], q[b], atol=0.1, rtol=0)


def test_save_load_roundtrip(tmp_path):
    """save/load (weights_only) restores config, graph, cliques, probabilities and the sampling stream."""
    s = _fitted("ot")
    path = tmp_path / "s.pt"
    s.save(path)
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict)
    t = WassersteinBarycentricSampler.load(path)
    assert t.get_params() == s.get_params()
    assert t.cliques_ == s.cliques_
    torch.testing.assert_close(t.clique_probs_, s.clique_probs_)
    torch.testing.assert_close(t.distances_.to_dense(), s.distances_.to_dense())
    assert torch.equal(t.distances_.indices(), s.distances_.indices())
    torch.testing.assert_close(
        t.sample(5, generator=torch.Generator().manual_seed(1)),
        s.sample(5, generator=torch.Generator().manual_seed(1)),
    )


def test_select_hyperparameters_table():
    """§6.1 search: one row per grid point, best = argmin score, scores reproduce dataset_wasserstein (POT
    emd2)."""
    x = _faces(24, seed=4)
    res = select_hyperparameters(
        x, [None, 5.0], [2, 4], n_samples=8, generator=torch.Generator().manual_seed(0)
    )
    assert [(r["epsilon"], r["k"]) for r in res.table] == [(None, 2), (None, 4), (5.0, 2), (5.0, 4)]
    assert res.best == min(res.table, key=lambda r: r["score"])
    assert all(np.isfinite(r["score"]) and r["score"] >= 0 for r in res.table)
    assert np.isfinite(res.baseline) and "baseline" in res.to_markdown()
    res2 = _fitted("index").select_hyperparameters(
        x, [None], [3], n_samples=8, generator=torch.Generator().manual_seed(0)
    )
    assert len(res2.table) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k_neighbors": 0}, "k_neighbors"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"concentration": -2.0}, "concentration"),
        ({"concentration": 0.0}, "concentration"),
        ({"correspondence": "foo"}, "correspondence"),
        ({"isolated": "x"}, "isolated"),
        ({"knn_method": "x"}, "knn_method"),
        ({"max_clique_size": 0}, "max_clique_size"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WassersteinBarycentricSampler(**kwargs)


def test_bad_fit_and_sample_inputs():
    """NaN/inf, wrong rank, M < 2, k >= M, ragged in index mode, n < 0, unfitted use, bad generator."""
    x = _faces(10)
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    s = WassersteinBarycentricSampler(3, correspondence="index")
    with pytest.raises(RuntimeError, match="not fitted"):
        s.sample(3)
    with pytest.raises(ValueError, match="landmarks.*NaN"):
        s.fit(bad)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="landmarks"):
        s.fit(bad)
    with pytest.raises(ValueError, match="landmarks must have shape"):
        s.fit(x[0])
    with pytest.raises(ValueError, match="at least 2"):
        s.fit(x[:1])
    with pytest.raises(ValueError, match="k_neighbors"):
        WassersteinBarycentricSampler(10).fit(x)
    with pytest.raises(ValueError, match="different sizes need correspondence='ot'"):
        s.fit([x[0], x[1], x[2][:5], x[3]])
    with pytest.raises(TypeError, match="landmarks"):
        s.fit("faces.npy")
    s.fit(x)
    with pytest.raises(ValueError, match="n must be >= 0"):
        s.sample(-1)
    with pytest.raises(TypeError, match="generator"):
        s.sample(2, generator=0)
    with pytest.raises(ValueError, match="landmarks must have shape"):
        s.sample_around(x[:, :5])
    assert s.sample(0).shape == (0, 10, 2)


def test_ot_warm_start_from_cached_edge_matchings_is_exact():
    """The cached fit-time matchings give the first fixed-point update from the largest-weight vertex; samples
    equal those of the cold start (same generator) and the cached matchings are optimal (POT emd)."""
    s = WassersteinBarycentricSampler(4).fit(_faces(30, seed=6))
    assert s._edge_perms is not None and s._edge_perms.shape == (s.graph_.number_of_edges(), 10)
    warm = s.sample(40, generator=torch.Generator().manual_seed(3))
    keys, perms = s._edge_keys, s._edge_perms
    s._edge_keys = None
    cold = s.sample(40, generator=torch.Generator().manual_seed(3))
    s._edge_keys = keys
    torch.testing.assert_close(warm, cold)
    a, b = int(keys[0]) // 30, int(keys[0]) % 30
    xa, xb = s.landmarks_[a], s.landmarks_[b]
    matched = ((xa - xb[perms[0].long()]) ** 2).sum(-1).mean()
    ref = ot.emd2(np.full(10, 0.1), np.full(10, 0.1), ot.dist(xa.numpy(), xb.numpy()))
    torch.testing.assert_close(matched, torch.tensor(ref, dtype=torch.float64))


def test_sample_heatmaps_grid_mode():
    """Grid mode: unit-mass (n, H, W) densities from the same clique/lambda draws as sample(); each equals the
    entropic heatmap barycenter of its clique alone (so padding vertices with weight 0 change nothing)."""
    from wbaug.grid.heatmaps import heatmap_barycenter

    x = _faces(14, seed=2, dtype=torch.float32) * 0.3 + 4
    s = WassersteinBarycentricSampler(4, correspondence="index").fit(x)
    kwargs = {"size": 24, "sigma": 1.5, "reg": 4.0, "max_iter": 30}
    h, info = s.sample_heatmaps(6, generator=torch.Generator().manual_seed(0), return_info=True, **kwargs)
    _, ref_info = s.sample(6, generator=torch.Generator().manual_seed(0), return_info=True)
    torch.testing.assert_close(info["cliques"], ref_info["cliques"])
    torch.testing.assert_close(info["weights"], ref_info["weights"])
    assert h.shape == (6, 24, 24)
    torch.testing.assert_close(h.sum((1, 2)), torch.ones(6), atol=1e-4, rtol=0)
    assert int((info["vertices"] >= 0).sum(1).min()) < int(
        (info["vertices"] >= 0).sum(1).max()
    )  # padding used
    for b in range(6):
        verts = [int(v) for v in info["vertices"][b] if v >= 0]
        alone = heatmap_barycenter(x[verts][None], info["weights"][b, : len(verts)][None], **kwargs)[0]
        torch.testing.assert_close(h[b], alone, atol=1e-5, rtol=1e-4)

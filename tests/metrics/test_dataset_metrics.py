"""Dataset-level metrics: OT distance between landmark datasets against a brute-force POT computation
(set-level W2 by ot.emd2, dataset level by ot.emd2), invariances; KL between pooled landmark densities
against a NumPy histogram2d re-derivation."""

import numpy as np
import ot
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.metrics import dataset_ot_distance, landmark_cost_matrix, landmark_density, landmark_density_kl


def _pot_w2(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(ot.emd2(np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y)), ot.dist(x, y))))


@given(
    seed=st.integers(0, 10_000), ma=st.integers(1, 6), mb=st.integers(1, 6), outer_p=st.sampled_from([1, 2])
)
def test_dataset_ot_distance_matches_bruteforce_pot(seed, ma, mb, outer_p):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(ma, 8, 2, generator=g, dtype=torch.float64)
    b = torch.rand(mb, 8, 2, generator=g, dtype=torch.float64) + 0.2
    cost = np.array([[_pot_w2(x.numpy(), y.numpy()) for y in b] for x in a])
    torch.testing.assert_close(landmark_cost_matrix(a, b), torch.from_numpy(cost))
    ref = ot.emd2(np.full(ma, 1 / ma), np.full(mb, 1 / mb), cost**outer_p) ** (1 / outer_p)
    got, plan = dataset_ot_distance(a, b, outer_p=outer_p, return_plan=True)
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64))
    torch.testing.assert_close(plan.sum(1), torch.full((ma,), 1 / ma, dtype=torch.float64))
    # invariant to the order of sets in a dataset and of points within a set
    perm_sets = torch.randperm(ma, generator=g)
    perm_pts = torch.randperm(8, generator=g)
    torch.testing.assert_close(dataset_ot_distance(a[perm_sets][:, perm_pts], b, outer_p=outer_p), got)


def test_dataset_ot_distance_zero_and_lists():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 10, 2, generator=g, dtype=torch.float64)
    assert float(dataset_ot_distance(a, a[torch.randperm(5, generator=g)])) == pytest.approx(0.0, abs=1e-12)
    ragged = [torch.rand(n, 2, generator=g, dtype=torch.float64) for n in (4, 7, 5)]
    cost = np.array([[_pot_w2(x.numpy(), y.numpy()) for y in ragged] for x in ragged])
    torch.testing.assert_close(landmark_cost_matrix(ragged, ragged), torch.from_numpy(cost))
    assert float(dataset_ot_distance(ragged, ragged)) == pytest.approx(0.0, abs=1e-12)


def test_density_and_kl_match_numpy_histogram():
    """With smoothing=0 the density is numpy's histogram2d normalised; KL against the direct formula."""
    g = torch.Generator().manual_seed(1)
    p = torch.rand(50, 20, 2, generator=g, dtype=torch.float64)
    q = torch.rand(60, 20, 2, generator=g, dtype=torch.float64) ** 1.5
    rng = ((0.0, 1.0), (0.0, 1.0))
    dens, _ = landmark_density(p, bins=(8, 10), range=rng, smoothing=0)
    pts = p.reshape(-1, 2).numpy()
    h, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=(8, 10), range=((0, 1), (0, 1)))
    torch.testing.assert_close(dens, torch.from_numpy(h / h.sum()))
    hq, _, _ = np.histogram2d(*q.reshape(-1, 2).numpy()[:, ::-1].T, bins=(8, 10), range=((0, 1), (0, 1)))
    eps = 1e-10
    pp = np.maximum(h / h.sum(), eps)
    pp /= pp.sum()
    qq = np.maximum(hq / hq.sum(), eps)
    qq /= qq.sum()
    ref = (pp * np.log(pp / qq)).sum()
    got = landmark_density_kl(p, q, bins=(8, 10), range=rng, smoothing=0)
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64))
    assert float(landmark_density_kl(p, p)) == pytest.approx(0.0, abs=1e-12)
    assert float(landmark_density_kl(p, q)) > 0.0
    smoothed, _ = landmark_density(p, bins=16, smoothing=1.5)
    torch.testing.assert_close(smoothed.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_bad_input():
    with pytest.raises(ValueError, match="a must have shape"):
        dataset_ot_distance(torch.rand(10, 2), torch.rand(3, 10, 2))
    with pytest.raises(ValueError, match="outer_p"):
        dataset_ot_distance(torch.rand(2, 10, 2), torch.rand(3, 10, 2), outer_p=0.5)
    with pytest.raises(ValueError, match="D = 2"):
        landmark_density(torch.rand(3, 10, 3))
    with pytest.raises(ValueError, match="range"):
        landmark_density(torch.rand(3, 10, 2), range=((1.0, 0.0), (0.0, 1.0)))

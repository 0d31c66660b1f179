"""The compiled Jonker--Volgenant kernels of wbaug.ot._jv against scipy.optimize.linear_sum_assignment.

Every returned assignment must be a permutation whose total cost equals scipy's optimum (to 1e-12
relative; exactly for integer costs). Cases: random and face-like clouds, close (barycenter-like)
clouds, duplicate points and exact ties, identical clouds, a single repeated point, collinear clouds,
integer costs with many ties, rank-one and near-tied costs (where augmenting row reduction can cycle),
N from 1 to 200, 3-D clouds, the in-kernel centring/whitening, non-finite input. W2 and barycenters
built on the kernels agree with scipy-solved references (numba is a hard dependency: there is no
fallback solver to compare with).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from wbaug.ot import free_support_barycenter, pairwise_wasserstein
from wbaug.ot.assignment import _normalise_pair, batched_linear_sum_assignment, matched_assignment


def _cross_cost_np(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared-distance costs without their row constant, ``||y_j||^2 - 2 x_i . y_j`` (same optima)."""
    return (y * y).sum(-1)[:, None, :] - 2.0 * np.matmul(x, y.transpose(0, 2, 1))


def _check(cost: np.ndarray, sigma: np.ndarray, rtol: float = 1e-12) -> None:
    num, n = sigma.shape
    assert sigma.dtype == np.int64
    assert (np.sort(sigma, 1) == np.arange(n)).all(), "not a permutation"
    rows = np.arange(n)
    for p in range(num):
        terms = cost[p][rows, linear_sum_assignment(cost[p])[1]]
        ours = cost[p][rows, sigma[p]].sum()
        assert abs(ours - terms.sum()) <= rtol * np.abs(terms).sum(), f"problem {p}: {ours} vs {terms.sum()}"


def _sq_cost(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x[:, :, None] - y[:, None]) ** 2).sum(-1)


def _faces(num: int, rng: np.random.Generator) -> np.ndarray:
    """Noisy similarity transforms of one 68-point template (the hard, close-to-tied case of faces)."""
    template = rng.random((68, 2)) * 100
    angle = rng.uniform(-0.2, 0.2, num)
    rot = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], -1).reshape(num, 2, 2)
    scale = rng.uniform(0.9, 1.1, (num, 1, 1))
    return scale * template @ rot + rng.normal(0, 10, (num, 1, 2)) + rng.normal(0, 2, (num, 68, 2))


def test_clouds_match_scipy_with_and_without_the_certificate():
    rng = np.random.default_rng(0)
    f = _faces(800, rng)
    r = rng.random((800, 68, 2))
    for x, y in ((f[:400], f[400:]), (r[:400], r[400:]), (0.5 * f[:400] + 0.5 * f[400:], f[:400])):
        xn, yn = _normalise_pair(x, y)
        cost = _cross_cost_np(xn, yn)
        _check(cost, batched_linear_sum_assignment(cost))
        _check(_sq_cost(x, y), matched_assignment(x, y))  # fused kernel, whitening inside


def test_duplicates_ties_and_degenerate_clouds():
    rng = np.random.default_rng(1)
    grid = rng.integers(0, 4, (600, 68, 2)).astype(np.float64)  # many duplicate points, tied costs
    _check(_sq_cost(grid[:300], grid[300:]), batched_linear_sum_assignment(_sq_cost(grid[:300], grid[300:])))
    same = rng.random((100, 68, 2))
    _check(_sq_cost(same, same), batched_linear_sum_assignment(_sq_cost(same, same)))
    line = rng.random((200, 68, 1)) * np.array([1.0, 2.0]) + rng.random((200, 1, 2))  # collinear
    point = np.repeat(rng.random((200, 1, 2)), 68, 1)
    for x, y in ((line, grid[:200]), (point, grid[200:400]), (grid[:200], grid[200:400])):
        _check(_sq_cost(x, y), matched_assignment(x, y))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 68, 200])
def test_integer_rank_one_and_near_tied_costs(n):
    rng = np.random.default_rng(10 + n)
    num = 40 if n == 200 else 300
    for high in (2, 5, 1000):
        cost = rng.integers(0, high, (num, n, n)).astype(np.float64)
        _check(cost, batched_linear_sum_assignment(cost), rtol=0.0)
    rank_one = rng.random((num, n, 1)) * rng.random((num, 1, n))
    _check(rank_one, batched_linear_sum_assignment(rank_one))
    near = 1e6 + 1e-9 * rng.integers(0, 3, (num, n, n))
    _check(near, batched_linear_sum_assignment(near))


def test_three_d_and_general_p():
    rng = np.random.default_rng(2)
    x, y = rng.random((200, 17, 3)), rng.random((200, 17, 3))
    _check(_sq_cost(x, y), matched_assignment(x, y))
    _check(np.sqrt(_sq_cost(x, y)), matched_assignment(x, y, p=1.0))


def test_nonfinite_and_empty():
    cost = np.random.default_rng(3).random((40, 5, 5))
    cost[7, 2, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        batched_linear_sum_assignment(cost)
    assert batched_linear_sum_assignment(np.zeros((0, 4, 4))).shape == (0, 4)
    assert batched_linear_sum_assignment(np.zeros((3, 0, 0))).shape == (3, 0)
    x = np.random.default_rng(4).random((100, 6, 2))
    x[50, 1, 0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        matched_assignment(x, x[::-1].copy())
    assert matched_assignment(np.zeros((0, 5, 2)), np.zeros((0, 5, 2))).shape == (0, 5)


def test_w2_and_barycenters_match_scipy_references():
    """W2 from the kernels equals the scipy-solved W2; a kernel barycenter is a fixed point of the update
    with scipy's optimal matchings (faces have no ties)."""
    rng = np.random.default_rng(5)
    clouds = torch.from_numpy(_faces(40, rng))
    weights = torch.from_numpy(rng.dirichlet(np.ones(3), 10))
    groups = clouds[:30].reshape(10, 3, 68, 2)
    d = pairwise_wasserstein(clouds)
    x = clouds.numpy()
    for i, j in [(0, 1), (3, 17), (20, 39), (5, 5)]:
        cost = _sq_cost(x[i : i + 1], x[j : j + 1])[0]
        ref = np.sqrt(cost[np.arange(68), linear_sum_assignment(cost)[1]].mean())
        assert abs(float(d[i, j]) - ref) <= 1e-12 * max(ref, 1.0)
    bary = free_support_barycenter(groups, weights, max_iter=200, tol=0.0).numpy()
    for b in range(10):
        update = np.zeros_like(bary[b])
        for s_ in range(3):
            y = groups[b, s_].numpy()
            cost = _sq_cost(bary[b : b + 1], y[None])[0]
            update += float(weights[b, s_]) * y[linear_sum_assignment(cost)[1]]
        np.testing.assert_allclose(update, bary[b], rtol=0, atol=1e-9)


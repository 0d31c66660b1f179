"""The batched assignment solvers against scipy's linear_sum_assignment (optimal cost), covering the
certified fast path (row-wise nearest neighbours form a permutation), the equivalent-problem
normalisation of matched_assignment, and the general path."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from wbaug.ot import batched_linear_sum_assignment
from wbaug.ot.assignment import matched_assignment


def _opt_cost(cost):
    r, c = linear_sum_assignment(cost)
    return cost[r, c].sum()


def _check(cost, sigma):
    """sigma is a permutation per problem and reaches scipy's optimal cost."""
    n = cost.shape[1]
    assert (np.sort(sigma, 1) == np.arange(n)).all()
    got = np.take_along_axis(cost, sigma[:, :, None], 2)[..., 0].sum(1)
    ref = np.array([_opt_cost(c) for c in cost])
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(ref), rtol=1e-12, atol=1e-12)


@given(
    st.integers(0, 10_000), st.integers(1, 30), st.sampled_from(["random", "near", "rownn", "colnn", "ties"])
)
def test_batched_lsa_matches_scipy(seed, n, kind):
    """Random, nearly matched, row-NN-certified, column-shifted and tied problems are all optimal."""
    rng = np.random.default_rng(seed)
    num = 40
    x = rng.normal(size=(num, n, 2))
    if kind == "random":
        y = rng.normal(size=(num, n, 2))
    elif kind == "near":
        y = x + 0.3 * rng.normal(size=(num, n, 2))
    elif kind in ("rownn", "colnn"):
        y = x[:, rng.permutation(n)] + 1e-3 * rng.normal(size=(num, n, 2))
    else:
        x = rng.integers(0, 3, size=(num, n, 2)).astype(float)
        y = rng.integers(0, 3, size=(num, n, 2)).astype(float)
    cost = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    if kind == "colnn":
        # add column constants: row-wise nearest columns change, column-wise ones stay a permutation
        cost = cost + rng.uniform(0, 50, size=(num, 1, n))
    _check(cost, batched_linear_sum_assignment(cost))
    if kind != "colnn":
        _check(cost, matched_assignment(x, y, block=7))


def test_fast_path_is_exercised():
    """Sanity of the test data: the 'rownn' construction hits the certificate, 'colnn' does not, and
    both are solved optimally."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 20, 2))
    y = x[:, rng.permutation(20)] + 1e-4 * rng.normal(size=x.shape)
    cost = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    assert (np.sort(cost.argmin(2), 1) == np.arange(20)).all()
    _check(cost, batched_linear_sum_assignment(cost))
    shifted = cost + rng.uniform(0, 50, size=(5, 1, 20))
    assert not (np.sort(shifted.argmin(2), 1) == np.arange(20)).all()
    _check(shifted, batched_linear_sum_assignment(shifted))


def test_bad_shape():
    """Non-square cost matrices are rejected."""
    with pytest.raises(ValueError, match="cost"):
        batched_linear_sum_assignment(np.zeros((2, 3, 4)))


def _child_solve(queue):
    cost = np.random.default_rng(1).normal(size=(200, 12, 12))
    queue.put(batched_linear_sum_assignment(cost).shape)


def test_thread_pool_survives_fork():
    """After the parent used the thread pool, a forked child (DataLoader-style worker) still solves."""
    import multiprocessing as mp

    torch.set_num_threads(2)
    batched_linear_sum_assignment(np.random.default_rng(0).normal(size=(200, 12, 12)))  # parent pool exists
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_solve, args=(queue,))
    proc.start()
    proc.join(timeout=60)
    if proc.is_alive():
        proc.kill()
        pytest.fail("solver hung in a forked child")
    assert queue.get(timeout=5) == (200, 12)


def test_dedupe_gives_the_same_assignments():
    """Repeated problems are solved once and scattered back: identical output to solving each one."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 15, 2))
    y = rng.normal(size=(6, 15, 2))
    idx = rng.integers(0, 6, size=50)
    xs, ys = x[idx], y[idx]
    ys[::7] = rng.normal(size=ys[::7].shape)  # some unique problems among the repeats
    got = matched_assignment(xs, ys, dedupe=True)
    assert np.array_equal(got, matched_assignment(xs, ys))
    cost = ((xs[:, :, None] - ys[:, None]) ** 2).sum(-1)
    _check(cost, got)

"""wasserstein_distance / transport_plan against POT's exact network simplex (``ot.emd2``/``ot.emd``),
plus hypothesis properties of the metric (symmetry, identity, triangle inequality), gradients
(gradcheck against finite differences in float64) and dtype/dimension coverage."""

import numpy as np
import ot
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.ot import WassersteinDistance, transport_plan, wasserstein_distance


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _simplex(shape, g, dtype=torch.float64):
    w = torch.rand(shape, generator=g, dtype=dtype) + 0.05
    return w / w.sum(-1, keepdim=True)


def _pot_w(x, y, a=None, b=None, p=2):
    """Reference W_p from POT on one pair of clouds (float64)."""
    x, y = x.double().numpy(), y.double().numpy()
    a = np.full(len(x), 1 / len(x)) if a is None else a.double().numpy()
    b = np.full(len(y), 1 / len(y)) if b is None else b.double().numpy()
    cost = ot.dist(x, y, metric="euclidean") ** p if p != 2 else ot.dist(x, y)
    return ot.emd2(a, b, cost) ** (1 / p)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_equal_uniform_matches_pot(d, p):
    """Equal-size uniform clouds (assignment path) give sqrt(emd2) to 1e-6 relative in float64."""
    g = _gen(d * 10 + p)
    x = torch.randn(6, 40, d, generator=g, dtype=torch.float64)
    y = torch.randn(6, 40, d, generator=g, dtype=torch.float64) * 2 + 1
    got = wasserstein_distance(x, y, p=p)
    ref = torch.tensor([_pot_w(x[i], y[i], p=p) for i in range(6)], dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("d", [2, 3])
def test_unequal_sizes_and_weights_match_pot(d):
    """Unequal sizes and non-uniform weights (network-simplex path) equal sqrt(emd2) to 1e-6 relative."""
    g = _gen(100 + d)
    x = torch.randn(5, 13, d, generator=g, dtype=torch.float64)
    y = torch.randn(5, 21, d, generator=g, dtype=torch.float64) + 0.5
    a, b = _simplex((5, 13), g), _simplex((5, 21), g)
    for kwargs in ({}, {"a": a}, {"b": b}, {"a": a, "b": b}):
        got = wasserstein_distance(x, y, **kwargs)
        ref = torch.tensor(
            [
                _pot_w(x[i], y[i], kwargs.get("a", [None] * 5)[i], kwargs.get("b", [None] * 5)[i])
                for i in range(5)
            ],
            dtype=torch.float64,
        )
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


def test_equal_size_nonuniform_weights_match_pot():
    """Same size but non-uniform weights must not use the assignment shortcut."""
    g = _gen(7)
    x, y = (
        torch.randn(3, 10, 2, generator=g, dtype=torch.float64),
        torch.randn(3, 10, 2, generator=g, dtype=torch.float64),
    )
    a = _simplex((3, 10), g)
    got = wasserstein_distance(x, y, a=a)
    ref = torch.tensor([_pot_w(x[i], y[i], a[i]) for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


def test_float32_close_to_float64():
    """float32 input returns float32 and agrees with the float64 value to float32 precision."""
    g = _gen(3)
    x, y = torch.randn(4, 68, 2, generator=g) * 50, torch.randn(4, 68, 2, generator=g) * 50
    got = wasserstein_distance(x, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), wasserstein_distance(x.double(), y.double()), rtol=1e-5, atol=1e-5
    )


def test_batch_broadcasting_and_shapes():
    """Leading batch dimensions broadcast; unbatched (N, D) inputs give a 0-d result."""
    g = _gen(4)
    x = torch.randn(3, 1, 8, 2, generator=g, dtype=torch.float64)
    y = torch.randn(5, 8, 2, generator=g, dtype=torch.float64)
    got = wasserstein_distance(x, y)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got[2, 4], wasserstein_distance(x[2, 0], y[4]))
    assert wasserstein_distance(x[0, 0], y[0]).shape == ()
    assert wasserstein_distance(torch.zeros(0, 4, 2), torch.zeros(0, 4, 2)).shape == (0,)


def test_transport_plan_is_optimal_coupling():
    """The plan has marginals a, b and its cost equals emd2 (an optimal coupling).

    In the uniform equal-size case it is a permutation matrix divided by N."""
    g = _gen(5)
    x = torch.randn(4, 9, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 12, 3, generator=g, dtype=torch.float64)
    a, b = _simplex((4, 9), g), _simplex((4, 12), g)
    plan = transport_plan(x, y, a=a, b=b)
    assert plan.shape == (4, 9, 12)
    torch.testing.assert_close(plan.sum(-1), a)
    torch.testing.assert_close(plan.sum(-2), b)
    cost = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    ref = torch.tensor([_pot_w(x[i], y[i], a[i], b[i]) ** 2 for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close((plan * cost).sum((-1, -2)), ref, rtol=1e-9, atol=1e-12)

    square = transport_plan(x[:, :9], y[:, :9])
    assert ((square == 0) | (square == 1 / 9)).all()
    torch.testing.assert_close(square.sum(-1), torch.full((4, 9), 1 / 9, dtype=torch.float64))
    torch.testing.assert_close(square.sum(-2), torch.full((4, 9), 1 / 9, dtype=torch.float64))


def test_transport_plan_example():
    """Swapped points are matched crosswise."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(transport_plan(x, x.flip(0)), torch.tensor([[0.0, 0.5], [0.5, 0.0]]))


@pytest.mark.parametrize("weighted", [False, True])
def test_gradcheck_positions(weighted):
    """Gradient in the positions (coupling held fixed, envelope theorem) matches finite differences."""
    g = _gen(11)
    x = torch.randn(2, 6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 6 if not weighted else 7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    kwargs = {"a": _simplex((2, 6), g)} if weighted else {}
    assert torch.autograd.gradcheck(lambda u, v: wasserstein_distance(u, v, **kwargs), (x, y))
    assert torch.autograd.gradcheck(lambda u, v: wasserstein_distance(u, v, p=1, **kwargs), (x, y))


def test_gradient_at_zero_distance_is_finite():
    """At identical clouds the (sub)gradient is zero, not NaN."""
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    wasserstein_distance(x, x.detach().clone()).backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()


def test_module_reductions():
    """WassersteinDistance applies the reduction to the functional result."""
    x, y = torch.zeros(4, 5, 2), torch.ones(4, 5, 2)
    torch.testing.assert_close(WassersteinDistance()(x, y), torch.full((4,), 2**0.5))
    torch.testing.assert_close(WassersteinDistance(reduction="sum")(x, y), torch.tensor(4 * 2**0.5))
    with pytest.raises(ValueError, match="reduction"):
        WassersteinDistance(reduction="max")


clouds_args = st.tuples(st.integers(0, 10_000), st.integers(1, 12), st.sampled_from([2, 3]))


@given(clouds_args, st.booleans())
def test_metric_properties(args, ragged):
    """W2 is symmetric, zero on identical inputs and satisfies the triangle inequality (exact OT)."""
    seed, n, d = args
    g = _gen(seed)
    m = n + 3 if ragged else n
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * 1.5
    z = torch.randn(n, d, generator=g, dtype=torch.float64) + 1
    wxy, wyx = wasserstein_distance(x, y), wasserstein_distance(y, x)
    torch.testing.assert_close(wxy, wyx, rtol=1e-10, atol=1e-12)
    assert wasserstein_distance(x, x) == 0
    assert wasserstein_distance(x, x[torch.randperm(n, generator=g)]) == 0
    assert wasserstein_distance(x, z) <= wasserstein_distance(x, y) + wasserstein_distance(y, z) + 1e-10


@given(clouds_args)
def test_rigid_motion_invariance(args):
    """W2 is invariant under a common rotation and translation of both clouds."""
    seed, n, d = args
    g = _gen(seed)
    x, y = (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g, dtype=torch.float64),
    )
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    t = torch.randn(d, generator=g, dtype=torch.float64) * 10
    torch.testing.assert_close(wasserstein_distance(x @ q.T + t, y @ q.T + t), wasserstein_distance(x, y))

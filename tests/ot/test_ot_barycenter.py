"""free_support_barycenter against POT's ``ot.lp.free_support_barycenter`` from the same initialisation
(objective never worse, 1e-6 relative), and hypothesis properties of the barycenter: convex combination of
one point per cloud (inside the convex hull), vertices reproduced exactly, objective below every vertex,
rigid-motion equivariance, invariance to point order, masks, dtypes, gradients."""

import numpy as np
import ot
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial import Delaunay

from wbaug.ot import (
    FreeSupportBarycenter,
    barycenter_objective,
    free_support_barycenter,
    wasserstein_distance,
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _dirichlet(shape, g, dtype=torch.float64):
    e = -torch.rand(shape, generator=g, dtype=dtype).clamp_min(1e-12).log()
    return e / e.sum(-1, keepdim=True)


def _faces(b, k, n, d, g, dtype=torch.float64):
    """Similar shapes: a mean shape plus per-cloud similarity transform and noise (landmark-like)."""
    mean = torch.rand(n, d, generator=g, dtype=dtype) * 100
    scale = 1 + 0.1 * torch.randn(b, k, 1, 1, generator=g, dtype=dtype)
    shift = 5 * torch.randn(b, k, 1, d, generator=g, dtype=dtype)
    return mean * scale + shift + 2 * torch.randn(b, k, n, d, generator=g, dtype=dtype)


def _pot_objective(x, clouds, w, a=None, b=None):
    """sum_k w_k W2^2(x, cloud_k) with POT's exact emd2 (float64 NumPy)."""
    x = np.asarray(x, dtype=np.float64)
    b = np.full(len(x), 1 / len(x)) if b is None else b
    total = 0.0
    for k, (c, wk) in enumerate(zip(clouds, w)):
        ak = np.full(len(c), 1 / len(c)) if a is None else a[k]
        total += wk * ot.emd2(b, ak, ot.dist(x, np.asarray(c, dtype=np.float64)))
    return total


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("kind", ["random", "faces"])
def test_objective_not_worse_than_pot_same_init(d, kind):
    """From POT's own init (the largest-weight cloud, our default) the objective is <= POT's (1e-6 rel)."""
    g = _gen(d + (0 if kind == "random" else 50))
    b, k, n = 6, 4, 25
    clouds = (
        torch.randn(b, k, n, d, generator=g, dtype=torch.float64)
        if kind == "random"
        else _faces(b, k, n, d, g)
    )
    w = _dirichlet((b, k), g)
    bary = free_support_barycenter(clouds, w)
    for i in range(b):
        init = clouds[i, w[i].argmax()].numpy()
        ref = ot.lp.free_support_barycenter(
            list(clouds[i].numpy()), [np.full(n, 1 / n)] * k, init, weights=w[i].numpy()
        )
        ours = _pot_objective(bary[i].numpy(), clouds[i].numpy(), w[i].numpy())
        theirs = _pot_objective(ref, clouds[i].numpy(), w[i].numpy())
        assert ours <= theirs * (1 + 1e-6)


def test_objective_not_worse_than_pot_explicit_init():
    """Also with a user-given init (a random point set) passed to both implementations."""
    g = _gen(21)
    clouds = torch.randn(4, 3, 15, 2, generator=g, dtype=torch.float64)
    w = _dirichlet((4, 3), g)
    init = torch.randn(4, 15, 2, generator=g, dtype=torch.float64)
    bary = free_support_barycenter(clouds, w, init=init)
    for i in range(4):
        ref = ot.lp.free_support_barycenter(
            list(clouds[i].numpy()), [np.full(15, 1 / 15)] * 3, init[i].numpy(), weights=w[i].numpy()
        )
        ours = _pot_objective(bary[i].numpy(), clouds[i].numpy(), w[i].numpy())
        assert ours <= _pot_objective(ref, clouds[i].numpy(), w[i].numpy()) * (1 + 1e-6)


def test_general_weights_and_sizes_not_worse_than_pot():
    """Clouds of different sizes with non-uniform point weights (list input, network simplex path)."""
    g = _gen(33)
    sizes = [7, 12, 9]
    clouds = [torch.randn(s, 2, generator=g, dtype=torch.float64) + k for k, s in enumerate(sizes)]
    a = [_dirichlet((s,), g) for s in sizes]
    w = _dirichlet((3,), g)
    init = torch.randn(10, 2, generator=g, dtype=torch.float64)
    bary = free_support_barycenter(clouds, w, point_weights=a, init=init)
    assert bary.shape == (10, 2)
    cl_np, a_np = [c.numpy() for c in clouds], [x.numpy() for x in a]
    ref = ot.lp.free_support_barycenter(cl_np, a_np, init.numpy(), weights=w.numpy())
    ours = _pot_objective(bary.numpy(), cl_np, w.numpy(), a=a_np)
    assert ours <= _pot_objective(ref, cl_np, w.numpy(), a=a_np) * (1 + 1e-6)
    # same algorithm, same init: same iterates
    torch.testing.assert_close(bary, torch.from_numpy(ref), rtol=1e-9, atol=1e-9)

    # default init: the largest-weight cloud with its own point weights as barycenter masses
    top = int(w.argmax())
    default = free_support_barycenter(clouds, w, point_weights=a)
    ref = ot.lp.free_support_barycenter(cl_np, a_np, cl_np[top], b=a_np[top], weights=w.numpy())
    torch.testing.assert_close(default, torch.from_numpy(ref), rtol=1e-9, atol=1e-9)


def test_general_path_equals_uniform_path_on_uniform_input():
    """Explicit uniform point weights (network simplex) reproduce the assignment path."""
    g = _gen(8)
    clouds = torch.randn(3, 4, 11, 2, generator=g, dtype=torch.float64)
    w = _dirichlet((3, 4), g)
    pw = torch.full((3, 4, 11), 1 / 11, dtype=torch.float64)
    torch.testing.assert_close(
        free_support_barycenter(clouds, w, point_weights=pw),
        free_support_barycenter(clouds, w),
        rtol=1e-9,
        atol=1e-9,
    )


def test_point_weights_with_mask_ignore_padded_clouds():
    """Regression: point weights of padded (masked-out) clouds are ignored, not rejected, and a padded
    batch item gives the barycenter of its real clouds alone."""
    g = _gen(21)
    clouds = torch.randn(2, 3, 9, 2, generator=g, dtype=torch.float64)
    w = _dirichlet((2, 3), g)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    w[1] = torch.cat([_dirichlet((2,), g), torch.zeros(1, dtype=torch.float64)])
    pw = _dirichlet((2, 3, 9), g)
    pw[1, 2] = 0.0  # padding: an all-zero row that sums to 0, not 1
    bary = free_support_barycenter(clouds, w, mask=mask, point_weights=pw)
    alone = free_support_barycenter(clouds[1:, :2], w[1:, :2], point_weights=pw[1:, :2])
    torch.testing.assert_close(bary[1:], alone, rtol=1e-9, atol=1e-9)


bary_args = st.tuples(st.integers(0, 10_000), st.integers(1, 5), st.integers(1, 15), st.sampled_from([2, 3]))


@given(bary_args)
def test_points_are_convex_combinations_inside_hull(args):
    """Every barycenter point equals sum_k w_k y_k[sigma_k(i)] (one point per cloud), so lies in the hull."""
    seed, k, n, d = args
    g = _gen(seed)
    clouds = torch.randn(3, k, n, d, generator=g, dtype=torch.float64)
    w = _dirichlet((3, k), g)
    bary, sigma = free_support_barycenter(clouds, w, return_assignment=True)
    assert sigma.shape == (3, k, n) and sigma.dtype == torch.int64
    for b in range(3):
        for j in range(k):  # each sigma_k is a permutation
            assert torch.equal(sigma[b, j].sort().values, torch.arange(n))
    picked = clouds.gather(2, sigma[..., None].expand(-1, -1, -1, d))
    torch.testing.assert_close(bary, (w[:, :, None, None] * picked).sum(1), rtol=0, atol=1e-12)
    union = clouds.reshape(3, k * n, d)
    for b in range(3):
        pts = union[b].numpy()
        if k * n > d + 1 and np.linalg.matrix_rank(pts - pts.mean(0)) == d:
            assert (Delaunay(pts).find_simplex(bary[b].numpy(), tol=1e-9) >= 0).all()


@given(bary_args)
def test_vertex_weights_return_the_cloud(args):
    """Weights e_k return cloud k exactly (W2 = 0), whatever the other clouds."""
    seed, k, n, d = args
    g = _gen(seed)
    clouds = torch.randn(2, k, n, d, generator=g, dtype=torch.float64)
    j = seed % k
    w = torch.zeros(2, k, dtype=torch.float64)
    w[:, j] = 1
    bary, sigma = free_support_barycenter(clouds, w, return_assignment=True)
    torch.testing.assert_close(bary, clouds[:, j], rtol=0, atol=0)
    assert (wasserstein_distance(bary, clouds[:, j]) == 0).all()
    assert torch.equal(sigma[:, j], torch.arange(n).expand(2, n))


@given(bary_args)
def test_objective_below_every_vertex(args):
    """F(barycenter) <= F(cloud_k) for every vertex cloud k (the barycenter minimises F)."""
    seed, k, n, d = args
    g = _gen(seed)
    clouds = torch.randn(2, k, n, d, generator=g, dtype=torch.float64)
    w = _dirichlet((2, k), g)
    f_bary = barycenter_objective(free_support_barycenter(clouds, w), clouds, w)
    for j in range(k):
        assert (f_bary <= barycenter_objective(clouds[:, j], clouds, w) + 1e-10).all()


@given(bary_args)
def test_rigid_motion_equivariance(args):
    """Barycenter(R Y + t) = R Barycenter(Y) + t (rotation/reflection and translation)."""
    seed, k, n, d = args
    g = _gen(seed)
    clouds = torch.randn(2, k, n, d, generator=g, dtype=torch.float64)
    w = _dirichlet((2, k), g)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    t = 10 * torch.randn(d, generator=g, dtype=torch.float64)
    moved = free_support_barycenter(clouds @ q.T + t, w)
    torch.testing.assert_close(moved, free_support_barycenter(clouds, w) @ q.T + t, rtol=1e-9, atol=1e-9)


@given(bary_args)
def test_invariant_to_point_order(args):
    """Shuffling the points inside each cloud gives the same barycenter as a measure (W2 = 0 between them)."""
    seed, k, n, d = args
    g = _gen(seed)
    clouds = torch.randn(2, k, n, d, generator=g, dtype=torch.float64)
    w = _dirichlet((2, k), g)
    perm = torch.argsort(torch.rand(2, k, n, generator=g), dim=-1)
    shuffled = clouds.gather(2, perm[..., None].expand(-1, -1, -1, d))
    a, b = free_support_barycenter(clouds, w), free_support_barycenter(shuffled, w)
    torch.testing.assert_close(
        wasserstein_distance(a, b), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-9
    )


def test_mask_equals_dropping_clouds():
    """Masked-out clouds (holding NaN padding) are ignored: same as calling on the subset."""
    g = _gen(9)
    clouds = torch.randn(2, 5, 10, 2, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, True, True]])
    w = _dirichlet((2, 5), g) * mask
    w = w / w.sum(1, keepdim=True)
    padded = clouds.clone()
    padded[~mask] = float("nan")
    got, sigma = free_support_barycenter(padded, w, mask=mask, return_assignment=True)
    assert (sigma[~mask] == -1).all()
    for b in range(2):
        sub = free_support_barycenter(clouds[b : b + 1, mask[b]], w[b : b + 1, mask[b]])
        torch.testing.assert_close(got[b : b + 1], sub, rtol=0, atol=1e-12)


def test_zero_weight_clouds_still_get_an_assignment():
    """A cloud with weight 0 does not move the barycenter but its optimal matching is reported."""
    g = _gen(10)
    clouds = torch.randn(1, 3, 8, 2, generator=g, dtype=torch.float64)
    w = torch.tensor([[0.6, 0.4, 0.0]], dtype=torch.float64)
    bary, sigma = free_support_barycenter(clouds, w, return_assignment=True)
    torch.testing.assert_close(bary, free_support_barycenter(clouds[:, :2], w[:, :2]))
    matched = clouds[0, 2, sigma[0, 2]]
    torch.testing.assert_close(
        wasserstein_distance(bary[0], clouds[0, 2]) ** 2, ((bary[0] - matched) ** 2).sum(-1).mean()
    )


@pytest.mark.parametrize("d", [2, 3])
def test_float32_matches_float64(d):
    """float32 input gives a float32 barycenter equal to the float64 one up to float32 rounding."""
    g = _gen(12 + d)
    clouds = _faces(5, 4, 68, d, g, dtype=torch.float32)
    w = _dirichlet((5, 4), g, dtype=torch.float32)
    got = free_support_barycenter(clouds, w)
    assert got.dtype == torch.float32 and got.shape == (5, 68, d)
    torch.testing.assert_close(
        got.double(), free_support_barycenter(clouds.double(), w.double()), rtol=1e-5, atol=1e-3
    )


def test_differentiable_in_clouds_and_weights():
    """The output x_i = sum_k w_k y_k[sigma_k(i)] has the piecewise-linear gradient (gradcheck)."""
    g = _gen(13)
    clouds = torch.randn(2, 3, 6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    w = _dirichlet((2, 3), g).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: free_support_barycenter(c, w.detach()), (clouds,))
    free_support_barycenter(clouds.detach(), w).sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_backward_with_mask_and_assignment():
    """Masked clouds + return_assignment: backward used to crash ("index -1 is out of bounds": the
    assignment saved for backward was overwritten with -1 in place). gradcheck passes, the gradient is
    w_k at the matched points (zero on the masked cloud), and the returned sigma is -1 only there."""
    g = _gen(31)
    clouds = torch.randn(2, 3, 6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    w = torch.tensor([[0.3, 0.7, 0.0], [0.2, 0.0, 0.8]], dtype=torch.float64)

    def bary(c):
        return free_support_barycenter(c, w, mask=mask, return_assignment=True)[0]

    assert torch.autograd.gradcheck(bary, (clouds,))
    out, sigma = free_support_barycenter(clouds, w, mask=mask, return_assignment=True)
    out.sum().backward()
    assert (sigma[0, 2] == -1).all() and (sigma[mask] >= 0).all()
    expect = torch.zeros_like(clouds)
    for b, k in zip(*torch.nonzero(mask, as_tuple=True)):
        expect[b, k, sigma[b, k]] = w[b, k]
    torch.testing.assert_close(clouds.grad, expect)


def test_backward_through_clique_ot_barycenters():
    """The sampler's correspondence="ot" path (padded cliques) is differentiable in the vertices."""
    from wbaug.sampling.barycenters import ot_barycenters

    g = _gen(32)
    vertices = torch.randn(3, 4, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False], [True] * 4])
    w = torch.where(mask, _dirichlet((3, 4), g), torch.zeros(()))
    w = w / w.sum(1, keepdim=True)
    bary, sigma = ot_barycenters(vertices, w, mask)
    bary.square().sum().backward()
    assert torch.isfinite(vertices.grad).all() and (vertices.grad[~mask] == 0).all()
    assert (sigma[~mask] == -1).all()


def test_max_iter_and_module():
    """max_iter=1 returns one update from the init; the module matches the function."""
    g = _gen(14)
    clouds = torch.randn(3, 3, 9, 2, generator=g, dtype=torch.float64)
    w = _dirichlet((3, 3), g)
    one, sigma = free_support_barycenter(clouds, w, max_iter=1, return_assignment=True)
    for b in range(3):
        ref = ot.lp.free_support_barycenter(
            list(clouds[b].numpy()),
            [np.full(9, 1 / 9)] * 3,
            clouds[b, w[b].argmax()].numpy(),
            weights=w[b].numpy(),
            numItermax=1,
        )
        torch.testing.assert_close(one[b], torch.from_numpy(ref), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(FreeSupportBarycenter()(clouds, w), free_support_barycenter(clouds, w))


def test_list_input_equal_sizes_uses_assignment():
    """A list of equal-size clouds is one barycenter (N, D), same as the batched call."""
    g = _gen(15)
    clouds = torch.randn(4, 7, 2, generator=g, dtype=torch.float64)
    w = _dirichlet((4,), g)
    got, sigma = free_support_barycenter(list(clouds), w, return_assignment=True)
    assert got.shape == (7, 2) and sigma.shape == (4, 7)
    torch.testing.assert_close(got, free_support_barycenter(clouds[None], w[None])[0])

"""BRULÉ R_b and R_g: R_b against a NumPy/POT re-derivation of the paper's three terms and closed-form A,
zero at the barycenter, invariance to the order of points, exact values for a translation and a scaling;
R_g against a direct evaluation; gradcheck; module == function; bad input."""

import numpy as np
import ot
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.landmarks import apply_transform, gaussian_heatmaps
from wbaug.losses import (
    BarycenterRegularizer,
    GeometricRegularizer,
    barycenter_regularizer,
    geometric_regularizer,
)
from wbaug.ot import free_support_barycenter


def _pot_reference(x: np.ndarray, xb: np.ndarray, c=(1.0, 1.0, 1.0)) -> float:
    """R_b straight from BRULÉ §4 with POT: T by centres of mass, P = ot.emd(T[X], X_b),
    A = (Y^T diag(P1) Y)^-1 Y^T P Z (Y, Z centred on the barycenter's centre), W2^2 by ot.emd2."""
    n, m = len(x), len(xb)
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    cb = xb.mean(0)
    tx = x - x.mean(0) + cb
    w2 = lambda u, v: ot.emd2(np.full(len(u), 1 / len(u)), np.full(len(v), 1 / len(v)), ot.dist(u, v))  # noqa: E731
    p = ot.emd(a, b, ot.dist(tx, xb))
    y, z = tx - cb, xb - cb
    amat = np.linalg.solve(y.T @ np.diag(p.sum(1)) @ y, y.T @ p @ z)
    atx = y @ amat + cb
    return c[0] * w2(x, tx) + c[1] * w2(tx, atx) + c[2] * w2(atx, xb)


def test_matches_pot_rederivation_including_different_sizes():
    g = torch.Generator().manual_seed(0)
    xb = torch.rand(12, 2, generator=g, dtype=torch.float64)
    x = (
        xb[None] * torch.tensor([1.3, 0.7], dtype=torch.float64)
        + 0.2 * torch.randn(3, 12, 2, generator=g).double()
    )
    got = barycenter_regularizer(x, xb, coefficients=(1.0, 2.0, 0.5), eps=0.0, reduction="none")
    ref = [_pot_reference(xi.numpy(), xb.numpy(), (1.0, 2.0, 0.5)) for xi in x]
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64))
    xs = torch.rand(2, 9, 2, generator=g, dtype=torch.float64)  # fewer points than the barycenter
    got = barycenter_regularizer(xs, xb, eps=0.0, reduction="none")
    torch.testing.assert_close(
        got, torch.tensor([_pot_reference(v.numpy(), xb.numpy()) for v in xs]).double()
    )


@given(seed=st.integers(0, 10_000), n=st.integers(4, 30), dim=st.sampled_from([2, 3]))
def test_zero_at_barycenter_and_order_invariant(seed, n, dim):
    g = torch.Generator().manual_seed(seed)
    xb = torch.rand(n, dim, generator=g, dtype=torch.float64) * 10
    zero = barycenter_regularizer(xb[None].repeat(2, 1, 1), xb, reduction="none")
    torch.testing.assert_close(zero, torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    x = xb + torch.randn(2, n, dim, generator=g, dtype=torch.float64)
    perm = torch.randperm(n, generator=g)
    torch.testing.assert_close(
        barycenter_regularizer(x[:, perm], xb, reduction="none"),
        barycenter_regularizer(x, xb, reduction="none"),
    )
    torch.testing.assert_close(
        barycenter_regularizer(x, xb[torch.randperm(n, generator=g)], reduction="none"),
        barycenter_regularizer(x, xb, reduction="none"),
    )


def test_translation_and_scaling_terms_are_exact():
    """X = X_b + t: only the translation term, ||t||^2. X = c + s (X_b - c): translation and warp terms
    vanish (A = I / s), the linear term is (s - 1)^2 mean ||X_b - c||^2."""
    g = torch.Generator().manual_seed(1)
    xb = torch.rand(20, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.3, -0.4], dtype=torch.float64)
    _, terms = barycenter_regularizer((xb + t)[None], xb, eps=0.0, return_terms=True)
    torch.testing.assert_close(
        terms[0], torch.tensor([0.25, 0.0, 0.0], dtype=torch.float64), atol=1e-12, rtol=0
    )
    c = xb.mean(0)
    s = 1.5
    _, terms = barycenter_regularizer((c + s * (xb - c))[None], xb, eps=0.0, return_terms=True)
    expected = (s - 1) ** 2 * (xb - c).square().sum(-1).mean()
    torch.testing.assert_close(
        terms[0], torch.stack([expected * 0, expected, expected * 0]), atol=1e-12, rtol=1e-9
    )


def test_gradcheck_and_module():
    g = torch.Generator().manual_seed(2)
    xb = torch.rand(6, 2, generator=g, dtype=torch.float64)
    x = (xb + 0.1 * torch.randn(2, 6, 2, generator=g, dtype=torch.float64)).requires_grad_()
    torch.autograd.gradcheck(lambda v: barycenter_regularizer(v, xb, coefficients=(1.0, 0.5, 2.0)), (x,))
    reg = BarycenterRegularizer(xb, coefficients=(1.0, 0.5, 2.0), reduction="sum")
    torch.testing.assert_close(
        reg(x), barycenter_regularizer(x, xb, coefficients=(1.0, 0.5, 2.0), reduction="sum")
    )


def test_from_landmarks_uses_ot_barycenter():
    g = torch.Generator().manual_seed(3)
    data = torch.rand(10, 15, 2, generator=g, dtype=torch.float64)
    reg = BarycenterRegularizer.from_landmarks(data, max_iter=50)
    ref = free_support_barycenter(data[None], torch.full((1, 10), 0.1, dtype=torch.float64), max_iter=50)[0]
    torch.testing.assert_close(reg.barycenter, ref)
    assert float(reg(ref[None])) < 1e-9


def test_geometric_regularizer_against_direct_evaluation():
    """R_g = CE(gL, softmax(L(gI))) + mean_k ||softargmax(L(gI)_k) - g X_k||_1, re-derived in NumPy."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 12, 14, generator=g, dtype=torch.float64)
    x = torch.rand(2, 3, 2, generator=g, dtype=torch.float64) * 10 + 1
    m = torch.tensor([[1.0, 0.1, 0.5], [-0.1, 1.0, 0.3], [0.0, 0.0, 1.0]], dtype=torch.float64)
    got = geometric_regularizer(logits, x, m, sigma=1.2, ce_weight=0.7, l1_weight=0.3, reduction="none")
    lg = logits.numpy().reshape(2, 3, -1)
    logp = lg - lg.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    prob = np.exp(logp).reshape(2, 3, 12, 14)
    gx = x.numpy() @ m.numpy()[:2, :2].T + m.numpy()[:2, 2]
    ii, jj = np.meshgrid(np.arange(12), np.arange(14), indexing="ij")
    tgt = np.exp(-((jj - gx[..., 0, None, None]) ** 2 + (ii - gx[..., 1, None, None]) ** 2) / (2 * 1.2**2))
    tgt = tgt / tgt.sum((-2, -1), keepdims=True)
    ce = -(tgt.reshape(2, 3, -1) * logp).sum(-1).mean(-1)
    pred = np.stack([(prob * jj).sum((-2, -1)), (prob * ii).sum((-2, -1))], -1)
    l1 = np.abs(pred - gx).sum(-1).mean(-1)
    torch.testing.assert_close(got, torch.from_numpy(0.7 * ce + 0.3 * l1))


def test_geometric_regularizer_equivariant_prediction_minimises_l1():
    """If L(gI) is exactly the log of the target maps, the L1 part is ~0 and R_g equals the target entropy."""
    x = torch.tensor([[[10.0, 9.0], [12.5, 11.25]]], dtype=torch.float64)
    m = torch.tensor([[0.9, -0.2, 1.0], [0.2, 0.9, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    tgt = gaussian_heatmaps(apply_transform(x, m), (24, 24), 1.5, normalize="sum")
    val = geometric_regularizer(tgt.log(), x, m, sigma=1.5, ce_weight=0.0)
    assert float(val) < 1e-6
    entropy = -(tgt * tgt.log()).sum((-2, -1)).mean()
    torch.testing.assert_close(geometric_regularizer(tgt.log(), x, m, sigma=1.5, l1_weight=0.0), entropy)


def test_geometric_gradcheck_and_module():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    x = (torch.rand(1, 2, 2, generator=g, dtype=torch.float64) * 4 + 1).requires_grad_()
    m = torch.eye(3, dtype=torch.float64)
    torch.autograd.gradcheck(lambda a, b: geometric_regularizer(a, b, m, sigma=1.0), (logits, x))
    mod = GeometricRegularizer(sigma=1.0, image_size=(24, 28), reduction="none")
    torch.testing.assert_close(
        mod(logits, x * 4, m),
        geometric_regularizer(logits, x * 4, m, sigma=1.0, image_size=(24, 28), reduction="none"),
    )


def test_bad_input():
    xb = torch.rand(10, 2)
    with pytest.raises(ValueError, match="landmarks"):
        barycenter_regularizer(torch.rand(10, 2), xb)
    with pytest.raises(ValueError, match="point dimension"):
        barycenter_regularizer(torch.rand(2, 10, 3), xb)
    with pytest.raises(ValueError, match="coefficients"):
        barycenter_regularizer(torch.rand(2, 10, 2), xb, coefficients=(1.0, 1.0))
    with pytest.raises(ValueError, match="reduction"):
        BarycenterRegularizer(xb, reduction="avg")
    with pytest.raises(ValueError, match="heatmaps_g"):
        geometric_regularizer(torch.rand(2, 5, 8), torch.rand(2, 5, 2), torch.eye(3), sigma=1.0)
    with pytest.raises(ValueError, match="landmarks must have shape"):
        geometric_regularizer(torch.rand(2, 5, 8, 8), torch.rand(2, 4, 2), torch.eye(3), sigma=1.0)
    with pytest.raises(ValueError, match="matrix"):
        geometric_regularizer(torch.rand(2, 5, 8, 8), torch.rand(2, 5, 2), torch.eye(2), sigma=1.0)

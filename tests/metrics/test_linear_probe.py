"""``linear_probe_nme`` against a NumPy least-squares re-derivation (the augmented system
``[X 1; sqrt(λ s) I 0] w = [Y; 0]`` solved by ``np.linalg.lstsq``), exact recovery of linear relations,
invariance properties (hypothesis) and argument errors that name the argument."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wbaug.metrics import fit_linear_probe, linear_probe_nme, nme


def _numpy_probe(x_train, y_train, x_test, ridge, bias):
    """Independent re-derivation: ridge as extra rows of the least-squares system, intercept as a column."""
    x = x_train.reshape(len(x_train), -1)
    y = y_train.reshape(len(y_train), -1)
    xc = x - x.mean(0) if bias else x
    scale = np.mean(np.sum(xc**2, axis=0))  # mean diagonal of the (centred) Gram matrix
    d = x.shape[1]
    a = np.hstack([x, np.ones((len(x), 1))]) if bias else x
    pen = np.sqrt(ridge * scale) * np.eye(d)
    if bias:
        pen = np.hstack([pen, np.zeros((d, 1))])  # the intercept is not penalised
    coef, *_ = np.linalg.lstsq(np.vstack([a, pen]), np.vstack([y, np.zeros((d, y.shape[1]))]), rcond=None)
    xt = x_test.reshape(len(x_test), -1)
    at = np.hstack([xt, np.ones((len(xt), 1))]) if bias else xt
    return (at @ coef).reshape(len(xt), -1, 2)


def _numpy_iod_nme(pred, gt, eyes):
    d = np.linalg.norm(gt[:, eyes[0]] - gt[:, eyes[1]], axis=-1)
    return float(np.mean(np.linalg.norm(pred - gt, axis=-1).mean(-1) / d))


@settings(deadline=None, max_examples=30)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 12),
    m=st.integers(3, 40),
    ridge=st.sampled_from([0.0, 1e-3, 0.1, 2.0]),
    bias=st.booleans(),
)
def test_matches_numpy_least_squares(seed, k, m, ridge, bias):
    rng = np.random.default_rng(seed)
    n = 68
    x_train, x_test = rng.normal(size=(m, k, 2)) * 10, rng.normal(size=(9, k, 2)) * 10
    y_train, y_test = rng.normal(size=(m, n, 2)) * 20 + 32, rng.normal(size=(9, n, 2)) * 20 + 32
    if ridge == 0.0 and m <= 2 * k + int(bias):
        ridge = 1e-3  # an under-determined unregularised fit has no unique solution
    expected = _numpy_probe(x_train, y_train, x_test, ridge, bias)
    t = torch.from_numpy
    value, regressed = linear_probe_nme(
        t(x_train), t(y_train), t(x_test), t(y_test), ridge=ridge, bias=bias, return_prediction=True
    )
    np.testing.assert_allclose(regressed.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert float(value) == pytest.approx(_numpy_iod_nme(expected, y_test, (36, 45)), rel=1e-6)


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 10_000), perm_seed=st.integers(0, 100))
def test_recovers_any_linear_relation_and_ignores_landmark_order(seed, perm_seed):
    """If the ground truth is an exact affine function of the discovered points, the probe is exact, and
    permuting the discovered points (their order is arbitrary) does not change the result."""
    g = torch.Generator().manual_seed(seed)
    found = torch.rand(60, 10, 2, generator=g, dtype=torch.float64) * 64
    mix = torch.randn(20, 136, generator=g, dtype=torch.float64)
    gt = (found.flatten(1) @ mix).view(60, 68, 2) + 5.0
    err = linear_probe_nme(found[:40], gt[:40], found[40:], gt[40:], ridge=0.0)
    assert float(err) < 1e-8
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(perm_seed))
    err_p = linear_probe_nme(found[:40, perm], gt[:40], found[40:, perm], gt[40:], ridge=0.0)
    assert float(err_p) < 1e-8


def test_constant_prediction_gives_the_mean_shape():
    """A constant predictor (e.g. the barycenter for every image) regresses to the mean training shape."""
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(30, 68, 2, generator=g, dtype=torch.float64) * 64
    const = torch.rand(1, 17, 2, generator=g, dtype=torch.float64).expand(30, -1, -1)
    value, regressed = linear_probe_nme(const[:20], gt[:20], const[20:], gt[20:], return_prediction=True)
    mean_shape = gt[:20].mean(0).expand(10, -1, -1)
    torch.testing.assert_close(regressed, mean_shape)
    torch.testing.assert_close(value, nme(mean_shape, gt[20:]))


def test_reduction_none_and_fit_shapes():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 5, 2, generator=g)
    y = torch.rand(12, 68, 2, generator=g) * 50
    per = linear_probe_nme(x[:8], y[:8], x[8:], y[8:], reduction="none")
    assert per.shape == (4,)
    w, c = fit_linear_probe(x, y)
    assert w.shape == (10, 136) and c.shape == (136,) and w.dtype == torch.float64


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.rand(5, 3), torch.rand(5, 68, 2), torch.rand(2, 3, 2), torch.rand(2, 68, 2)), "pred_train"),
        ((torch.rand(5, 3, 2), torch.rand(4, 68, 2), torch.rand(2, 3, 2), torch.rand(2, 68, 2)), "gt_train"),
        ((torch.rand(5, 3, 2), torch.rand(5, 68, 2), torch.rand(2, 4, 2), torch.rand(2, 68, 2)), "pred_test"),
        ((torch.rand(5, 3, 2), torch.rand(5, 68, 2), torch.rand(2, 3, 2), torch.rand(2, 60, 2)), "gt_test"),
        ((torch.rand(5, 3, 2), torch.rand(5, 68, 2), torch.rand(2, 3, 2), torch.rand(3, 68, 2)), "gt_test"),
    ],
)
def test_bad_shapes_name_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        linear_probe_nme(*args)


def test_bad_ridge_and_non_finite():
    x, y = torch.rand(5, 3, 2), torch.rand(5, 68, 2)
    with pytest.raises(ValueError, match="ridge"):
        linear_probe_nme(x, y, x, y, ridge=-1.0)
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="pred_train"):
        linear_probe_nme(bad, y, x, y)

"""Wasserstein landmark losses (W1, W2) against POT's exact emd2, order invariance, ragged lists,
normalisation, gradcheck, module == function; heatmap cross-entropy against NumPy; bad input."""

import numpy as np
import ot
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.losses import (
    HeatmapCrossEntropy,
    WassersteinLandmarkLoss,
    heatmap_cross_entropy,
    wasserstein_landmark_loss,
)


def _pot_w(x: np.ndarray, y: np.ndarray, p: int) -> float:
    cost = ot.dist(x, y, metric="euclidean") ** p
    return ot.emd2(np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y)), cost) ** (1 / p)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 20), m=st.integers(2, 20), p=st.sampled_from([1, 2]))
def test_matches_pot_and_is_order_invariant(seed, n, m, p):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, n, 2, generator=g, dtype=torch.float64)
    y = torch.rand(2, m, 2, generator=g, dtype=torch.float64)
    got = wasserstein_landmark_loss(x, y, p=p, reduction="none")
    ref = torch.tensor([_pot_w(x[i].numpy(), y[i].numpy(), p) for i in range(2)], dtype=torch.float64)
    torch.testing.assert_close(got, ref)
    perm = torch.randperm(n, generator=g)
    torch.testing.assert_close(wasserstein_landmark_loss(x[:, perm], y, p=p, reduction="none"), got)
    sq = wasserstein_landmark_loss(x, y, p=p, squared=True, reduction="sum")
    torch.testing.assert_close(sq, (ref**p).sum())


def test_lists_normalizer_and_weights():
    g = torch.Generator().manual_seed(0)
    xs = [
        torch.rand(5, 2, generator=g, dtype=torch.float64),
        torch.rand(8, 2, generator=g, dtype=torch.float64),
    ]
    ys = [
        torch.rand(7, 2, generator=g, dtype=torch.float64),
        torch.rand(3, 2, generator=g, dtype=torch.float64),
    ]
    got = wasserstein_landmark_loss(xs, ys, p=1, normalizer=torch.tensor([2.0, 4.0]), reduction="none")
    ref = torch.tensor(
        [_pot_w(xs[0].numpy(), ys[0].numpy(), 1) / 2, _pot_w(xs[1].numpy(), ys[1].numpy(), 1) / 4]
    )
    torch.testing.assert_close(got, ref.double())
    x = torch.rand(1, 4, 2, generator=g, dtype=torch.float64)
    y = torch.rand(1, 4, 2, generator=g, dtype=torch.float64)
    a = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    cost = ot.dist(x[0].numpy(), y[0].numpy(), metric="euclidean")
    ref_w = ot.emd2(a[0].numpy(), np.full(4, 0.25), cost)
    torch.testing.assert_close(
        wasserstein_landmark_loss(x, y, pred_weights=a), torch.tensor(ref_w, dtype=torch.float64)
    )


def test_gradcheck_and_module():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    for p, squared in [(1, False), (2, True), (2, False)]:
        torch.autograd.gradcheck(
            lambda a, b, p=p, squared=squared: wasserstein_landmark_loss(a, b, p=p, squared=squared), (x, y)
        )
        mod = WassersteinLandmarkLoss(p=p, squared=squared, reduction="none")
        torch.testing.assert_close(
            mod(x, y), wasserstein_landmark_loss(x, y, p=p, squared=squared, reduction="none")
        )


def test_heatmap_cross_entropy_against_numpy_and_gradcheck():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    lg = logits.detach().numpy().reshape(2, 3, -1) / 0.5
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    t = target.numpy().reshape(2, 3, -1)
    t = t / t.sum(-1, keepdims=True)
    ref = -(t * logp).sum(-1).mean(-1)
    got = heatmap_cross_entropy(logits, target, temperature=0.5, reduction="none")
    torch.testing.assert_close(got, torch.from_numpy(ref))
    torch.autograd.gradcheck(lambda a: heatmap_cross_entropy(a, target), (logits,))
    mod = HeatmapCrossEntropy(temperature=0.5, reduction="sum")
    torch.testing.assert_close(mod(logits, target), torch.from_numpy(ref).sum())


def test_bad_input():
    with pytest.raises(ValueError, match="same batch size"):
        wasserstein_landmark_loss(torch.rand(2, 5, 2), torch.rand(3, 5, 2))
    with pytest.raises(ValueError, match="point dimension"):
        wasserstein_landmark_loss(torch.rand(2, 5, 2), torch.rand(2, 5, 3))
    with pytest.raises(ValueError, match="normalizer"):
        wasserstein_landmark_loss(torch.rand(2, 5, 2), torch.rand(2, 5, 2), normalizer=torch.zeros(2))
    with pytest.raises(ValueError, match="pred"):
        wasserstein_landmark_loss(torch.rand(5, 2), torch.rand(5, 2))
    with pytest.raises(ValueError, match=r"pred\[0\]"):
        wasserstein_landmark_loss([torch.rand(0, 2)], [torch.rand(3, 2)])
    with pytest.raises(ValueError, match="same shape"):
        heatmap_cross_entropy(torch.rand(1, 2, 4, 4), torch.rand(1, 3, 4, 4))

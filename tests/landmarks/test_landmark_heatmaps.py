"""Heatmaps (eq. 1), soft-argmax and sub-pixel argmax: values against a NumPy re-derivation, the
coords -> heatmap -> coords round trip (< 0.05 px), gradients, and bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.landmarks import (
    GaussianHeatmaps,
    SoftArgmax,
    gaussian_heatmaps,
    heatmap_argmax,
    soft_argmax,
    summed_heatmaps,
)


def _numpy_heatmap(x: float, y: float, h: int, w: int, sigma: float) -> np.ndarray:
    """Direct evaluation of eq. (1) on the integer pixel-centre grid (rows = y, columns = x)."""
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.exp(-((jj - x) ** 2 + (ii - y) ** 2) / (2 * sigma**2))


def test_gaussian_heatmaps_match_numpy_and_normalisations():
    """Peak, sum and pdf normalisations against a NumPy evaluation of eq. (1)."""
    pts = torch.tensor([[[10.3, 20.7], [30.5, 5.25]], [[0.0, 0.0], [47.0, 31.0]]], dtype=torch.float64)
    hm = gaussian_heatmaps(pts, (32, 48), 2.5)
    for b in range(2):
        for k in range(2):
            ref = _numpy_heatmap(*pts[b, k].tolist(), 32, 48, 2.5)
            torch.testing.assert_close(hm[b, k], torch.from_numpy(ref))
    s = gaussian_heatmaps(pts, (32, 48), 2.5, normalize="sum")
    torch.testing.assert_close(s.sum((-2, -1)), torch.ones(2, 2, dtype=torch.float64))
    torch.testing.assert_close(s, hm / hm.sum((-2, -1), keepdim=True))
    p = gaussian_heatmaps(pts, (32, 48), 2.5, normalize="pdf")
    torch.testing.assert_close(p, hm / (2 * math.pi * 2.5**2))
    assert float(gaussian_heatmaps(torch.tensor([[[3.0, 4.0]]]), (8, 8), 1.0)[0, 0, 4, 3]) == 1.0


def test_per_landmark_sigma_and_visibility():
    pts = torch.tensor([[[5.0, 5.0], [9.0, 3.0]]])
    sig = torch.tensor([1.0, 3.0])
    hm = gaussian_heatmaps(pts, 16, sig, visibility=torch.tensor([[True, False]]))
    torch.testing.assert_close(hm[0, 0], gaussian_heatmaps(pts[:, :1], 16, 1.0)[0, 0])
    assert float(hm[0, 1].abs().max()) == 0.0


def test_summed_heatmaps_list_and_mask_agree():
    """A ragged list and the padded tensor + mask give the same summed map (sum over channels)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(7, 2, generator=g) * 30, torch.rand(4, 2, generator=g) * 30
    from_list = summed_heatmaps([a, b], (32, 32), 1.5)
    padded = torch.zeros(2, 7, 2)
    padded[0], padded[1, :4] = a, b
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0], mask[1, :4] = True, True
    from_mask = summed_heatmaps(padded, (32, 32), 1.5, mask=mask)
    torch.testing.assert_close(from_list, from_mask)
    torch.testing.assert_close(from_list[1, 0], gaussian_heatmaps(b[None], (32, 32), 1.5)[0].sum(0))
    probs = summed_heatmaps([a, b], (32, 32), 1.5, normalize="sum")
    torch.testing.assert_close(probs.sum((-2, -1)), torch.ones(2, 1))
    assert from_list.shape == (2, 1, 32, 32)


@given(
    x=st.floats(8.0, 55.0),
    y=st.floats(8.0, 39.0),
    sigma=st.floats(1.0, 2.5),
)
def test_round_trip_below_005_px(x, y, sigma):
    """coords -> heatmap -> coords: soft-argmax (sum), soft-argmax (softmax of the log-map) and the
    log-parabola argmax all recover the landmark within 0.05 px when the Gaussian fits the canvas."""
    pts = torch.tensor([[[x, y]]], dtype=torch.float64)
    hm = gaussian_heatmaps(pts, (48, 64), sigma)
    assert (soft_argmax(hm, normalize="sum") - pts).abs().max() < 0.05
    logits = torch.log(gaussian_heatmaps(pts, (48, 64), sigma, normalize="sum"))
    assert (soft_argmax(logits, normalize="softmax") - pts).abs().max() < 0.05
    assert (heatmap_argmax(hm) - pts).abs().max() < 0.05
    assert (heatmap_argmax(hm.float()) - pts.float()).abs().max() < 0.05


def test_argmax_refinements():
    hm = gaussian_heatmaps(torch.tensor([[[5.3, 9.6]]]), (16, 16), 1.5)
    torch.testing.assert_close(heatmap_argmax(hm, refine=None), torch.tensor([[[5.0, 10.0]]]))
    torch.testing.assert_close(heatmap_argmax(hm, refine="quarter"), torch.tensor([[[5.25, 9.75]]]))
    par = heatmap_argmax(hm, refine="parabola")
    assert (par - torch.tensor([[[5.3, 9.6]]])).abs().max() < 0.15
    coords, vals = heatmap_argmax(hm, return_values=True)
    assert vals.shape == (1, 1) and float(vals) == pytest.approx(float(hm.max()))


def test_soft_argmax_gradcheck_and_modules():
    pts = torch.tensor([[[12.3, 7.8], [4.0, 3.5]]], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(
        lambda p: soft_argmax(gaussian_heatmaps(p, (16, 20), 2.0), normalize="sum"), (pts,)
    )
    logits = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda h: soft_argmax(h, temperature=0.5), (logits,))
    torch.testing.assert_close(SoftArgmax(temperature=0.5)(logits), soft_argmax(logits, temperature=0.5))
    torch.testing.assert_close(GaussianHeatmaps((16, 20), 2.0)(pts), gaussian_heatmaps(pts, (16, 20), 2.0))


def test_bad_input():
    with pytest.raises(ValueError, match="coords"):
        gaussian_heatmaps(torch.zeros(2, 5, 3), (8, 8), 1.0)
    with pytest.raises(TypeError, match="coords"):
        gaussian_heatmaps(torch.zeros(2, 5, 2, dtype=torch.long), (8, 8), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(torch.zeros(1, 5, 2), (8, 8), 0.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(torch.zeros(1, 5, 2), (8, 8), torch.ones(4))
    with pytest.raises(ValueError, match="size"):
        gaussian_heatmaps(torch.zeros(1, 5, 2), (0, 8), 1.0)
    with pytest.raises(ValueError, match="normalize"):
        gaussian_heatmaps(torch.zeros(1, 5, 2), (8, 8), 1.0, normalize="max")
    with pytest.raises(ValueError, match="visibility"):
        gaussian_heatmaps(torch.zeros(1, 5, 2), (8, 8), 1.0, visibility=torch.ones(1, 4))
    with pytest.raises(ValueError, match="heatmaps"):
        soft_argmax(torch.zeros(5, 5))
    with pytest.raises(ValueError, match="temperature"):
        soft_argmax(torch.zeros(1, 1, 5, 5), temperature=0)
    with pytest.raises(ValueError, match="refine"):
        heatmap_argmax(torch.zeros(1, 1, 5, 5), refine="cubic")
    with pytest.raises(ValueError, match="mask"):
        summed_heatmaps(torch.zeros(2, 3, 2), 8, 1.0, mask=torch.ones(2, 4, dtype=torch.bool))

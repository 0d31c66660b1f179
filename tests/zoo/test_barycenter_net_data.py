"""zoo/barycenter_net/data.py (the CSG contour generator of "Learning to Generate Wasserstein
Barycenters", Sec. 3.2): shapes are non-empty masks, contours are unit-mass densities sitting on the
mask boundary (a NumPy re-derivation of the boundary), everything replays under a generator, and built
pair sets carry simplex weights and unit-mass solver targets."""

import numpy as np
import pytest
import torch

from zoo.barycenter_net.data import (
    PairDataset,
    build_kway_set,
    random_contours,
    random_shape,
    sample_depth,
    sobel_contour,
)


def test_depth_mixture_range_and_determinism():
    depths = [sample_depth(torch.Generator().manual_seed(s)) for s in range(200)]
    assert min(depths) >= 0 and max(depths) <= 50
    # the mixture puts mass near both ends (the N(0, 2.5) and N(50, 2.5) components)
    assert sum(d <= 5 for d in depths) > 30 and sum(d >= 45 for d in depths) > 30
    assert depths == [sample_depth(torch.Generator().manual_seed(s)) for s in range(200)]


def test_contours_lie_on_mask_boundary_and_have_unit_mass():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        mask = random_shape(32, generator=g)
        assert mask.dtype == torch.bool and int(mask.sum()) >= 4
        contour = sobel_contour(mask)
        torch.testing.assert_close(contour.sum(), torch.tensor(1.0))
        # boundary re-derived with NumPy: a pixel whose 3x3 neighbourhood (edge-replicated) is mixed
        m = np.pad(mask.numpy(), 1, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(m, (3, 3))
        boundary = windows.min(axis=(-1, -2)) != windows.max(axis=(-1, -2))
        assert np.all(contour.numpy()[~boundary] == 0)


def test_random_contours_and_kway_set_are_reproducible():
    bank = random_contours(6, 16, generator=torch.Generator().manual_seed(1), max_depth=4)
    assert bank.shape == (6, 16, 16)
    torch.testing.assert_close(bank.sum(dim=(-1, -2)), torch.ones(6))
    data = build_kway_set(bank, 3, 2, generator=torch.Generator().manual_seed(2), reg=2e-2)
    again = build_kway_set(bank, 3, 2, generator=torch.Generator().manual_seed(2), reg=2e-2)
    for key in ("inputs", "weights", "target"):
        torch.testing.assert_close(data[key], again[key])
    torch.testing.assert_close(data["weights"].sum(-1), torch.ones(3))
    assert bool((data["weights"] >= 0).all())
    torch.testing.assert_close(data["target"].sum(dim=(-1, -2)), torch.ones(3))
    x, w, t = PairDataset(data)[1]
    assert x.shape == (2, 16, 16) and w.shape == (2,) and t.shape == (16, 16)


def test_bad_size_is_rejected():
    with pytest.raises(ValueError, match="size"):
        random_shape(4)

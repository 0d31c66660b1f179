"""Bad arguments that used to give NaN, nonsense or internal errors (issue 17) now raise TypeError/ValueError
whose message names the argument the caller passed (not an internal 'x'/'y'), and leave inputs unchanged."""

import math

import pytest
import torch

from wbaug.grid.linearized import bilinear_splat
from wbaug.landmarks import gaussian_heatmaps, heatmap_argmax
from wbaug.losses import barycenter_regularizer, heatmap_cross_entropy, wasserstein_landmark_loss
from wbaug.metrics import dataset_ot_distance, landmark_cost_matrix, ot_nme
from wbaug.ot import ground_cost
from wbaug.sampling.dirichlet import sample_dirichlet
from wbaug.sampling.graph import knn_from_distances
from wbaug.transforms.tps import tps_fit

NAN = float("nan")


def _nan_points(b=2, n=5):
    x = torch.rand(b, n, 2)
    x[0, 1, 0] = NAN
    return x


CASES = {
    "gaussian_heatmaps NaN coords": (
        lambda: gaussian_heatmaps(_nan_points(), (8, 8), 1.0),
        ValueError,
        "coords",
    ),
    "gaussian_heatmaps inf sigma": (
        lambda: gaussian_heatmaps(torch.rand(1, 3, 2), (8, 8), math.inf),
        ValueError,
        "sigma",
    ),
    "gaussian_heatmaps tensor sigma NaN": (
        lambda: gaussian_heatmaps(torch.rand(1, 3, 2), (8, 8), torch.tensor([1.0, NAN, 1.0])),
        ValueError,
        "sigma",
    ),
    "ground_cost p=nan": (
        lambda: ground_cost(torch.rand(3, 2), torch.rand(4, 2), p=NAN),
        ValueError,
        "p must",
    ),
    "ground_cost p=-1": (lambda: ground_cost(torch.rand(3, 2), torch.rand(4, 2), p=-1), ValueError, "p must"),
    "ground_cost NaN y": (
        lambda: ground_cost(torch.rand(3, 2), _nan_points(1, 4)[0]),
        ValueError,
        "y contains",
    ),
    "sample_dirichlet all-False row": (
        lambda: sample_dirichlet(1.0, torch.tensor([[True, False], [False, False]])),
        ValueError,
        "row 1 is all False",
    ),
    "sample_dirichlet negative": (
        lambda: sample_dirichlet(-1.0, torch.ones(2, 3, dtype=torch.bool)),
        ValueError,
        "concentration",
    ),
    "sample_dirichlet nan": (
        lambda: sample_dirichlet(NAN, torch.ones(2, 3, dtype=torch.bool)),
        ValueError,
        "concentration",
    ),
    "sample_dirichlet float mask": (lambda: sample_dirichlet(1.0, torch.ones(2, 3)), TypeError, "mask"),
    "knn_from_distances NaN": (
        lambda: knn_from_distances(torch.tensor([[0.0, NAN, 1], [NAN, 0, 2], [1, 2, 0]]), 1),
        ValueError,
        "distances",
    ),
    "knn_from_distances negative": (
        lambda: knn_from_distances(-torch.ones(3, 3), 1),
        ValueError,
        "distances",
    ),
    "knn_from_distances k too large": (
        lambda: knn_from_distances(torch.zeros(3, 3), 3),
        ValueError,
        "k must",
    ),
    "knn_from_distances k=0": (lambda: knn_from_distances(torch.zeros(3, 3), 0), ValueError, "k must"),
    "knn_from_distances not square": (lambda: knn_from_distances(torch.zeros(3, 4), 1), ValueError, "(M, M)"),
    "heatmap_cross_entropy negative target": (
        lambda: heatmap_cross_entropy(torch.randn(1, 2, 4, 4), -torch.rand(1, 2, 4, 4)),
        ValueError,
        "target",
    ),
    "heatmap_cross_entropy temperature": (
        lambda: heatmap_cross_entropy(torch.randn(1, 2, 4, 4), torch.rand(1, 2, 4, 4), temperature=0.0),
        ValueError,
        "temperature",
    ),
    "heatmap_argmax all NaN": (
        lambda: heatmap_argmax(torch.full((1, 2, 4, 4), NAN)),
        ValueError,
        "heatmaps contains NaN",
    ),
    "bilinear_splat NaN": (
        lambda: bilinear_splat(_nan_points(), torch.ones(2, 5), (8, 8)),
        ValueError,
        "points",
    ),
    "bilinear_splat negative mass": (
        lambda: bilinear_splat(torch.rand(2, 5, 2), -torch.ones(2, 5), (8, 8)),
        ValueError,
        "masses",
    ),
    "tps_fit collinear": (
        lambda: tps_fit(torch.tensor([[[0.0, 0], [1, 1], [2, 2], [3, 3]]]), torch.rand(1, 4, 2)),
        ValueError,
        "collinear",
    ),
    "tps_fit coincident": (
        lambda: tps_fit(torch.ones(1, 4, 2), torch.rand(1, 4, 2)),
        ValueError,
        "collinear",
    ),
    "tps_fit regularization nan": (
        lambda: tps_fit(torch.rand(1, 4, 2), torch.rand(1, 4, 2), regularization=NAN),
        ValueError,
        "regularization",
    ),
    "ot_nme NaN pred": (lambda: ot_nme(_nan_points(), torch.rand(2, 5, 2)), ValueError, "pred contains"),
    "ot_nme list NaN target": (
        lambda: ot_nme([torch.rand(4, 2)], [_nan_points(1, 4)[0]]),
        ValueError,
        "target[0] contains",
    ),
    "wasserstein_landmark_loss NaN target": (
        lambda: wasserstein_landmark_loss(torch.rand(2, 5, 2), _nan_points()),
        ValueError,
        "target contains",
    ),
    "dataset_ot_distance NaN a": (
        lambda: dataset_ot_distance(_nan_points(), torch.rand(2, 5, 2)),
        ValueError,
        "a contains",
    ),
    "landmark_cost_matrix NaN b": (
        lambda: landmark_cost_matrix(torch.rand(2, 5, 2), _nan_points()),
        ValueError,
        "b contains",
    ),
    "barycenter_regularizer NaN landmarks": (
        lambda: barycenter_regularizer(_nan_points(), torch.rand(5, 2)),
        ValueError,
        "landmarks contains",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_argument_raises_naming_it(case):
    call, error, words = CASES[case]
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value), str(info.value)


def test_valid_calls_still_work():
    """The new checks do not reject valid input (the same functions on good values)."""
    g = torch.Generator().manual_seed(0)
    lam = sample_dirichlet(0.5, torch.tensor([[True, True, False]]), generator=g)
    assert lam[0, 2] == 0 and torch.isclose(lam.sum(), torch.tensor(1.0, dtype=lam.dtype))
    idx, dist = knn_from_distances(torch.tensor([[0.0, 1, 2], [1, 0, 3], [2, 3, 0]]), 1)
    assert idx.tolist() == [[1], [0], [0]] and dist.tolist() == [[1.0], [1.0], [2.0]]
    assert ground_cost(torch.zeros(1, 2), torch.ones(1, 2), p=1).item() == pytest.approx(math.sqrt(2))
    splat = bilinear_splat(torch.tensor([[[1.5, 2.0]]]), torch.ones(1, 1), (4, 4))
    assert splat.sum().item() == pytest.approx(1.0) and splat[0, 2, 1].item() == pytest.approx(0.5)
    params = tps_fit(torch.tensor([[[0.0, 0], [1, 0], [0, 1], [1, 1]]]), torch.rand(1, 4, 2, generator=g))
    assert all(torch.isfinite(t).all() for t in params)
    h = gaussian_heatmaps(torch.tensor([[[3.0, 2.0]]]), (8, 8), 1.0)
    assert heatmap_argmax(h).tolist() == [[[3.0, 2.0]]]

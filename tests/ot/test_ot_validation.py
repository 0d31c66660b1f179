"""Bad input to every wbaug.ot entry point raises ValueError/TypeError whose message names the argument;
inputs are never modified in place."""

import numpy as np
import pytest
import torch

from wbaug.ot import free_support_barycenter, transport_plan, wasserstein_distance

X = torch.randn(4, 5, 2)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"x": torch.full((5, 2), float("nan"))}, ValueError, "x"),
        ({"y": torch.full((5, 2), float("inf"))}, ValueError, "y"),
        ({"x": torch.zeros(5)}, ValueError, "x"),
        ({"y": torch.zeros(5, 3)}, ValueError, "D"),
        ({"x": torch.zeros(0, 2)}, ValueError, "x"),
        ({"y": torch.zeros(5, 2, dtype=torch.int64)}, TypeError, "y"),
        ({"x": [[0.0, 1.0]]}, TypeError, "x"),
        ({"a": torch.full((5,), 0.3)}, ValueError, "a"),
        ({"a": torch.tensor([1.2, -0.2, 0.0, 0.0, 0.0])}, ValueError, "a"),
        ({"b": torch.full((4,), 0.25)}, ValueError, "b"),
        ({"b": torch.full((5,), float("nan"))}, ValueError, "b"),
        ({"p": 0.5}, ValueError, "p"),
        ({"p": "2"}, TypeError, "p"),
        ({"y": torch.zeros(3, 5, 2)}, ValueError, "batch"),
    ],
)
@pytest.mark.parametrize("fn", [wasserstein_distance, transport_plan])
def test_distance_bad_inputs(fn, kwargs, exc, name):
    """Each malformed argument is rejected with its name in the message."""
    args = {"x": torch.zeros(5, 2), "y": torch.ones(5, 2)}
    if "y" in kwargs and kwargs["y"].ndim == 3:
        args["x"] = torch.zeros(4, 5, 2)
    args.update(kwargs)
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises(exc, match=name):
        fn(x, y, **args)


def test_numpy_inputs_accepted():
    """NumPy arrays are accepted and give the same value as tensors."""
    x, y = np.random.default_rng(0).normal(size=(2, 6, 2))
    torch.testing.assert_close(
        wasserstein_distance(x, y), wasserstein_distance(torch.from_numpy(x), torch.from_numpy(y))
    )


CLOUDS = torch.randn(2, 3, 6, 2)
W = torch.full((2, 3), 1 / 3)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"clouds": torch.randn(3, 6, 2)}, ValueError, "clouds"),
        (
            {"clouds": CLOUDS.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan")))},
            ValueError,
            "clouds",
        ),
        ({"clouds": torch.zeros(2, 3, 0, 2)}, ValueError, "clouds"),
        ({"clouds": torch.zeros(2, 3, 6, 2, dtype=torch.int32)}, TypeError, "clouds"),
        ({"clouds": "abc"}, TypeError, "clouds"),
        ({"clouds": []}, ValueError, "clouds"),
        ({"weights": torch.full((2, 3), 0.5)}, ValueError, "weights"),
        ({"weights": torch.tensor([[1.5, -0.5, 0.0], [1.0, 0.0, 0.0]])}, ValueError, "weights"),
        ({"weights": torch.full((2, 4), 0.25)}, ValueError, "weights"),
        ({"weights": torch.full((2, 3), float("nan"))}, ValueError, "weights"),
        ({"mask": torch.ones(2, 3)}, TypeError, "mask"),
        ({"mask": torch.ones(2, 4, dtype=torch.bool)}, ValueError, "mask"),
        ({"mask": torch.tensor([[True, True, True], [False, False, False]])}, ValueError, "mask"),
        ({"init": torch.zeros(2, 6, 3)}, ValueError, "init"),
        ({"init": torch.full((2, 6, 2), float("inf"))}, ValueError, "init"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"max_iter": 2.5}, TypeError, "max_iter"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"point_weights": torch.full((2, 3, 6), 0.5)}, ValueError, "point_weights"),
        (
            {"point_weights": torch.full((2, 3, 6), 1 / 6), "return_assignment": True},
            ValueError,
            "return_assignment",
        ),
        ({"init_weights": torch.full((2, 5), 0.2)}, ValueError, "init_weights"),
    ],
)
def test_barycenter_bad_inputs(kwargs, exc, name):
    """Each malformed argument of free_support_barycenter is rejected with its name in the message."""
    args = {"clouds": CLOUDS, "weights": W}
    args.update(kwargs)
    clouds, weights = args.pop("clouds"), args.pop("weights")
    with pytest.raises(exc, match=name):
        free_support_barycenter(clouds, weights, **args)


def test_masked_weights_must_sum_to_one_over_selected_clouds():
    """With a mask the weights are checked on the selected clouds only."""
    mask = torch.tensor([[True, True, False], [True, True, True]])
    w = torch.tensor([[0.5, 0.5, 7.0], [0.2, 0.3, 0.5]])
    assert free_support_barycenter(CLOUDS, w, mask=mask).shape == (2, 6, 2)
    with pytest.raises(ValueError, match="weights"):
        free_support_barycenter(CLOUDS, torch.tensor([[0.3, 0.3, 0.4], [0.2, 0.3, 0.5]]), mask=mask)


def test_inputs_not_modified():
    """No function writes into its inputs."""
    clouds, w = CLOUDS.clone(), W.clone()
    free_support_barycenter(clouds, w, return_assignment=True)
    wasserstein_distance(clouds[0, 0], clouds[0, 1])
    assert torch.equal(clouds, CLOUDS) and torch.equal(w, W)

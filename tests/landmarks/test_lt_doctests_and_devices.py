"""The docstring examples of the landmark toolkit, losses, metrics, flip and multi-view modules run and
give the documented output; on CUDA, the losses and heatmaps keep device and dtype (skipped on CPU-only
machines)."""

import doctest
import importlib

import pytest
import torch

MODULES = [
    "wbaug.landmarks.heatmaps",
    "wbaug.landmarks.layouts",
    "wbaug.landmarks.geometry",
    "wbaug.landmarks.tracking",
    "wbaug.losses.equivariant",
    "wbaug.losses.brule",
    "wbaug.losses.wasserstein",
    "wbaug.metrics.nme",
    "wbaug.metrics.dataset",
    "wbaug.transforms.flip",
    "wbaug.transforms.multiview",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_and_dtype_are_kept():
    from wbaug.landmarks import gaussian_heatmaps, heatmap_argmax, soft_argmax
    from wbaug.losses import barycenter_regularizer, equivariant_landmark_loss, wasserstein_landmark_loss
    from wbaug.metrics import nme

    dev = torch.device("cuda")
    x = (torch.rand(3, 68, 2, device=dev, dtype=torch.float64) * 60 + 2).requires_grad_()
    hm = gaussian_heatmaps(x, (64, 64), 2.0, normalize="sum")
    assert hm.device.type == "cuda" and hm.dtype == torch.float64
    assert soft_argmax(hm, normalize="sum").device.type == "cuda"
    assert heatmap_argmax(hm).device.type == "cuda"
    m = torch.eye(3, device=dev, dtype=torch.float64)
    for val in (
        equivariant_landmark_loss(x, x.detach() + 1, m, m),
        equivariant_landmark_loss(hm, hm.detach(), m, m, heatmap_normalize="sum"),
        barycenter_regularizer(x, x[0].detach()),
        wasserstein_landmark_loss(x, x.detach().flip(1)),
    ):
        assert val.device.type == "cuda"
        val.backward(retain_graph=True)
    assert x.grad is not None and x.grad.device.type == "cuda"
    assert nme(x.detach(), x.detach() + 1).device.type == "cuda"

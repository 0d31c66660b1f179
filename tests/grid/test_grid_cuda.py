"""CUDA inputs give the CPU answers for every grid solver path (scaling domain with its range guard and
hand-over, shifted log-domain products, exact logsumexp) and for the transport maps. On accelerators
the guard is read only with the stopping test, so these also check that a hand-over resumes from the
right iterate there."""

import pytest
import torch
from torch.testing import assert_close

from wbaug.grid import convolutional_barycenter, debiased_barycenter, transport_maps_from_uniform

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def corner_boxes(n: int) -> torch.Tensor:
    a = torch.zeros(2, n, n, dtype=torch.float64)
    a[0, 1:4, 1:3] = 1
    a[1, n - 4 : n - 1, n - 5 : n - 1] = 1
    return a / a.sum(dim=(-1, -2), keepdim=True)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(
    ("reg", "method"), [(1e-2, "auto"), (5e-3, "scaling"), (2e-3, "scaling"), (1e-2, "log")]
)
def test_barycenter_cuda_matches_cpu(reg, method, debiased):
    a = corner_boxes(32)[None]
    w = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    fn = debiased_barycenter if debiased else convolutional_barycenter
    kwargs = {"reg": reg, "method": method, "max_iter": 60, "tol": 0.0, "return_info": True}
    cpu, info_cpu = fn(a, w, **kwargs)
    gpu, info_gpu = fn(a.cuda(), w.cuda(), **kwargs)
    assert gpu.device.type == "cuda" and info_gpu["method"] == info_cpu["method"]
    assert_close(gpu.cpu(), cpu, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_maps_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(0)
    dens = (torch.rand(3, 24, 24, generator=g, dtype=torch.float64) ** 4).to(dtype)
    reg = 4e-3 * 23**2
    cpu = transport_maps_from_uniform(dens, reg=reg, max_iter=100)
    gpu = transport_maps_from_uniform(dens.cuda(), reg=reg, max_iter=100)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert_close(gpu.cpu(), cpu, atol=tol, rtol=0)

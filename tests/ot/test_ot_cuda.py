"""CUDA inputs give the same answers as CPU inputs (same couplings bit for bit, values to rounding):
the solvers build float64 cost matrices from the inputs in the same way on both devices."""

import pytest
import torch

from wbaug.ot import free_support_barycenter, pairwise_wasserstein, transport_plan, wasserstein_distance

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    """Distances, plans, pairwise matrices and barycenters (with assignments) agree across devices."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 30, 2, generator=g, dtype=dtype) * 40
    y = torch.randn(5, 30, 2, generator=g, dtype=dtype) * 40
    a = torch.rand(5, 30, generator=g, dtype=dtype) + 0.1
    a = a / a.sum(-1, keepdim=True)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-10}
    cu = torch.device("cuda")
    d_cpu, d_gpu = wasserstein_distance(x, y), wasserstein_distance(x.to(cu), y.to(cu))
    assert d_gpu.device.type == "cuda"
    torch.testing.assert_close(d_gpu.cpu(), d_cpu, **tol)
    torch.testing.assert_close(
        wasserstein_distance(x.to(cu), y.to(cu), a=a.to(cu)).cpu(), wasserstein_distance(x, y, a=a), **tol
    )
    assert torch.equal(transport_plan(x.to(cu), y.to(cu)).cpu(), transport_plan(x, y))
    assert torch.equal(pairwise_wasserstein(x.to(cu)).cpu(), pairwise_wasserstein(x))

    clouds = torch.randn(6, 4, 30, 2, generator=g, dtype=dtype) * 40
    w = torch.rand(6, 4, generator=g, dtype=dtype) + 0.1
    w = w / w.sum(-1, keepdim=True)
    b_cpu, s_cpu = free_support_barycenter(clouds, w, return_assignment=True)
    b_gpu, s_gpu = free_support_barycenter(clouds.to(cu), w.to(cu), return_assignment=True)
    assert b_gpu.device.type == "cuda" and torch.equal(s_gpu.cpu(), s_cpu)
    torch.testing.assert_close(b_gpu.cpu(), b_cpu, **tol)

"""Convolutional / debiased grid barycenters against POT and against closed-form fixed points.

Regularisation mapping (checked below): with ``units="normalized"`` (the default) each grid axis has
coordinates ``linspace(0, 1, n)`` and the Gibbs kernel is ``exp(-(t_i - t_k)^2 / reg)``, which is exactly
POT's ``ot.bregman.convolutional_barycenter2d(A, reg)``; so ``reg`` is passed to POT unchanged. With
``units="pixel"`` coordinates are pixel indices and ``reg_pixel = reg_normalized * (n - 1)^2``.

POT's default ``method="sinkhorn"`` works in the kernel domain with ``log(KU + 1e-30)``; for small ``reg``
(here 4e-3 on 32x32, where ``KU`` underflows below 1e-30 far from the mass) this bias makes it disagree
with its own ``method="sinkhorn_log"`` by ~0.47 in L1, so small-``reg`` agreement is checked against
``sinkhorn_log`` and moderate-``reg`` agreement against both.
"""

import numpy as np
import ot
import pytest
import torch
from torch.testing import assert_close

from wbaug.grid import convolutional_barycenter, debiased_barycenter
from wbaug.grid._gibbs import RangeGuard, log_kernel_1d

N = 32


def two_boxes(dtype=torch.float64) -> torch.Tensor:
    a = torch.zeros(2, N, N, dtype=dtype)
    a[0, 4:10, 5:12] = 1
    a[1, 20:28, 18:25] = 2
    return a / a.sum(dim=(-1, -2), keepdim=True)


def pot(
    a: torch.Tensor,
    w: list[float],
    reg: float,
    *,
    debiased: bool = False,
    log: bool = False,
    iters: int = 2000,
) -> torch.Tensor:
    fn = ot.bregman.convolutional_barycenter2d_debiased if debiased else ot.bregman.convolutional_barycenter2d
    res = fn(
        a.numpy(),
        reg,
        weights=np.asarray(w),
        numItermax=iters,
        stopThr=0.0,
        warn=False,
        method="sinkhorn_log" if log else "sinkhorn",
    )
    return torch.from_numpy(res)


@pytest.mark.parametrize("method", ["kernel", "log"])
def test_matches_pot_moderate_reg(method):
    """reg=3e-2 (normalised): same barycenter as POT's kernel-domain and log-domain solvers to 1e-10."""
    a = two_boxes()
    w = [0.3, 0.7]
    ours = convolutional_barycenter(
        a[None], torch.tensor([w], dtype=torch.float64), reg=3e-2, method=method, tol=1e-13
    )[0]
    assert_close(ours, pot(a, w, 3e-2), atol=1e-10, rtol=0)
    assert_close(ours, pot(a, w, 3e-2, log=True), atol=1e-10, rtol=0)


def test_matches_pot_log_small_reg():
    """reg=4e-3: agreement with POT's ``sinkhorn_log`` (the kernel-domain POT solver is biased, see top)."""
    a = two_boxes()
    w = [0.5, 0.5]
    ours, info = convolutional_barycenter(
        a[None], torch.tensor([w], dtype=torch.float64), reg=4e-3, max_iter=200, tol=0.0, return_info=True
    )
    assert_close(ours[0], pot(a, w, 4e-3, log=True, iters=200), atol=1e-9, rtol=0)
    assert info["error"].item() < 1e-12


def test_pixel_units_mapping():
    """``units="pixel"`` with ``reg * (n - 1)^2`` gives the normalised-units answer."""
    a = two_boxes()
    w = torch.tensor([[0.4, 0.6]], dtype=torch.float64)
    norm = convolutional_barycenter(a[None], w, reg=1e-2, tol=1e-13)
    pix = convolutional_barycenter(a[None], w, reg=1e-2 * (N - 1) ** 2, units="pixel", tol=1e-13)
    assert_close(pix, norm, atol=1e-12, rtol=0)


@pytest.mark.parametrize("reg", [1e-2, 3e-2])
def test_debiased_matches_pot(reg):
    """Debiased barycenter == POT's ``convolutional_barycenter2d_debiased(method="sinkhorn_log")``."""
    a = two_boxes()
    w = [0.3, 0.7]
    ours = debiased_barycenter(
        a[None], torch.tensor([w], dtype=torch.float64), reg=reg, max_iter=60, tol=0.0
    )[0]
    # same iteration count on both sides (the debiased iteration converges slowly; equality is per step)
    assert_close(ours, pot(a, w, reg, debiased=True, log=True, iters=60), atol=1e-7, rtol=0)


def test_vertex_weight_returns_blurred_input():
    """Weights e_k: the fixed point is ``u_k = a_k / K 1``, ``bar = K (a_k / K 1)`` (a_k blurred once by the
    kernel, renormalised at the border). Checked against that closed form built from NumPy kernels,
    and the blur is quantified: centre of mass preserved to 0.05 px, L1 distance to a_k < 0.65."""
    a = two_boxes()
    reg = 4e-3
    k = np.exp(log_kernel_1d(N, reg, "normalized", dtype=torch.float64, device=torch.device("cpu")).numpy())
    for j in range(2):
        w = torch.zeros(1, 2, dtype=torch.float64)
        w[0, j] = 1.0
        bar = convolutional_barycenter(a[None], w, reg=reg, tol=1e-13)[0]
        k1 = k @ np.ones((N, N)) @ k.T
        ref = torch.from_numpy(k @ (a[j].numpy() / k1) @ k.T)
        assert_close(bar, ref, atol=1e-12, rtol=0)
        ys, xs = torch.meshgrid(torch.arange(N.__index__()), torch.arange(N), indexing="ij")
        for coord in (xs, ys):
            assert abs(float((bar * coord).sum() - (a[j] * coord).sum())) < 0.05
        assert float((bar - a[j]).abs().sum()) < 0.65


def test_debiased_vertex_weight_is_sharp():
    """Debiased with weights e_0: returns a_0 much more closely than the (blurred) entropic barycenter."""
    a = two_boxes()
    w = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    deb = debiased_barycenter(a[None], w, reg=4e-3, max_iter=100, tol=0.0)[0]
    ent = convolutional_barycenter(a[None], w, reg=4e-3)[0]
    err_deb = float((deb - a[0]).abs().sum())
    assert err_deb < 0.2
    assert err_deb < 0.35 * float((ent - a[0]).abs().sum())


def test_small_reg_log_domain_stable():
    """reg=2e-4 on 32x32: exp(-1/reg) underflows even in float64, so ``auto`` picks the logsumexp path;
    the result is finite, has unit mass, and matches POT's log-domain solver; the forced kernel path on
    the same problem is what underflows."""
    a = two_boxes()
    w = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    bar, info = convolutional_barycenter(a[None], w, reg=2e-4, max_iter=300, tol=0.0, return_info=True)
    assert info["method"] == "log"
    assert torch.isfinite(bar).all()
    assert_close(bar.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-6, rtol=0)
    ref = torch.from_numpy(
        ot.bregman.convolutional_barycenter2d(
            a.numpy(), 2e-4, numItermax=300, stopThr=0.0, warn=False, method="sinkhorn_log"
        )
    )
    assert_close(bar[0], ref, atol=1e-6, rtol=0)
    assert np.exp(-1 / 2e-4) == 0.0  # the kernel domain really underflows here


def test_float32_matches_float64():
    """float32 input: result in float32, equal to the float64 result to 1e-5 relative to the peak."""
    a = two_boxes()
    w = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    b64 = convolutional_barycenter(a[None], w, reg=1e-2)
    b32 = convolutional_barycenter(a[None].float(), w.float(), reg=1e-2)
    assert b32.dtype == torch.float32
    assert_close(b32.double(), b64, atol=1e-5 * float(b64.max()), rtol=0)


def test_batched_equals_looped():
    """A batch of B problems gives the same barycenters as B separate calls."""
    g = torch.Generator().manual_seed(0)
    dens = torch.rand(4, 3, 16, 20, generator=g, dtype=torch.float64) ** 4
    w = torch.rand(4, 3, generator=g, dtype=torch.float64)
    for fn in (convolutional_barycenter, debiased_barycenter):
        batched = fn(dens, w, reg=2e-2, tol=0.0, max_iter=50)
        looped = torch.cat(
            [fn(dens[i : i + 1], w[i : i + 1], reg=2e-2, tol=0.0, max_iter=50) for i in range(4)]
        )
        assert_close(batched, looped, atol=1e-10, rtol=0)


def corner_boxes(n: int) -> torch.Tensor:
    """Two small boxes in opposite corners, exact zeros elsewhere: the scalings span a huge range."""
    a = torch.zeros(2, n, n, dtype=torch.float64)
    a[0, 1:4, 1:3] = 1
    a[1, n - 4 : n - 1, n - 5 : n - 1] = 1
    return a / a.sum(dim=(-1, -2), keepdim=True)


def worst_relative_error(bar: torch.Tensor, ref: torch.Tensor, floor: float = 1e-280) -> float:
    """Largest |bar - ref| / ref over the entries of ``ref`` above ``floor`` (tails included)."""
    keep = ref > floor
    return float(((bar - ref).abs() / ref)[keep].max())


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("reg", [3e-2, 1e-2, 4e-3])
def test_scaling_domain_equals_log_domain(reg, debiased):
    """The scaling-domain solver (``auto`` picks it here) computes the log-domain iterates: same
    barycenter to 1e-12 in L1 and 1e-10 relative on every entry above 1e-280 (the far tails too)."""
    a = two_boxes()
    w = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    fn = debiased_barycenter if debiased else convolutional_barycenter
    bar, info = fn(a[None], w, reg=reg, max_iter=80, tol=0.0, return_info=True)
    ref, ref_info = fn(a[None], w, reg=reg, max_iter=80, tol=0.0, method="log", return_info=True)
    assert info["scaling_iters"] > 0 and ref_info["scaling_iters"] == 0
    if not debiased:  # the debiased boxes problem leaves the safe range (tested below)
        assert info["method"] == "scaling" and info["scaling_iters"] == 80
    assert_close(bar, ref, atol=1e-12, rtol=0)
    assert worst_relative_error(bar, ref) < 1e-10
    assert_close(info["error"], ref_info["error"], atol=1e-12, rtol=0)


@pytest.mark.parametrize(("n", "reg"), [(16, 1e-2), (16, 5e-3), (32, 1e-2)])
def test_scaling_range_guard_hands_over_to_log_domain(n, reg):
    """Debiased barycenter of two corner boxes: the barycenter's far tail drops below the safe range
    after a few iterations. The guard notices, the solve resumes in the log domain from the last
    verified iterate (``scaling_iters`` in 1..99), and every entry above 1e-280 matches a pure
    log-domain solve to 1e-10 relative."""
    a = corner_boxes(n)
    w = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    kwargs = {"reg": reg, "max_iter": 100, "tol": 0.0, "return_info": True}
    ref, _ = debiased_barycenter(a[None], w, method="log", **kwargs)
    bar, info = debiased_barycenter(a[None], w, method="scaling", **kwargs)
    assert 0 < info["scaling_iters"] < 100 and info["method"] == "kernel" and info["n_iter"] == 100
    assert worst_relative_error(bar, ref) < 1e-10
    assert_close(bar, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("debiased", [False, True])
def test_scaling_falls_back_on_overflow(debiased, monkeypatch):
    """``method="scaling"`` at ``max_d2 / reg = 500`` (kernel entries still normal numbers): the
    scalings overflow within a few iterations, the guard hands over to the log domain, and the answer is
    the log-domain one. With the guard's verdict forced to "in range" the same solve returns NaN: the
    guard is what keeps the fast path safe."""
    a = corner_boxes(32)
    w = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    fn = debiased_barycenter if debiased else convolutional_barycenter
    kwargs = {"reg": 2e-3, "max_iter": 50, "tol": 0.0}
    bar, info = fn(a[None], w, method="scaling", return_info=True, **kwargs)
    ref = fn(a[None], w, method="log", **kwargs)
    assert info["method"] == "kernel" and info["scaling_iters"] < 50
    assert torch.isfinite(bar).all()
    assert_close(bar, ref, atol=1e-12, rtol=0)
    assert worst_relative_error(bar, ref) < 1e-10

    monkeypatch.setattr(RangeGuard, "ok", lambda self: True)
    unguarded, info = fn(a[None], w, method="scaling", return_info=True, **kwargs)
    assert info["method"] == "scaling"
    assert not torch.isfinite(unguarded).all()


@pytest.mark.parametrize("debiased", [False, True])
def test_scaling_domain_non_square_grid(debiased):
    """17 x 29 grid (the transposed-layout products swap the axis kernels): scaling = log domain."""
    g = torch.Generator().manual_seed(5)
    dens = torch.rand(2, 3, 17, 29, generator=g, dtype=torch.float64) ** 3
    w = torch.rand(2, 3, generator=g, dtype=torch.float64)
    fn = debiased_barycenter if debiased else convolutional_barycenter
    bar, info = fn(dens, w, reg=1e-2, max_iter=40, tol=0.0, return_info=True)
    ref = fn(dens, w, reg=1e-2, max_iter=40, tol=0.0, method="log")
    assert info["method"] == "scaling"
    assert_close(bar, ref, atol=1e-12, rtol=0)
    assert worst_relative_error(bar, ref) < 1e-10

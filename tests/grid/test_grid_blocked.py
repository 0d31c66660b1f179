"""The blocked exact log-kernels (``wbaug.grid._blocked``: per-pair blocks and the quadratic/linear
split), used by ``method="log"`` for small ``reg``, against a direct ``torch.logsumexp`` over the full
kernel (the definition), -inf entries included."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

import wbaug.grid._gibbs as gibbs
from wbaug.grid import convolutional_barycenter, heatmap_barycenter
from wbaug.grid._blocked import (
    BLOCK_RANGE,
    BlockedLogKernel,
    SplitBlockedLogKernel,
    block_spread,
    choose_block,
    exact_log_kernel,
    split_block,
)
from wbaug.grid._gibbs import axis_coordinates, log_kernel_1d

CPU = torch.device("cpu")


def reference(log_kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log sum_k exp(LK[i, k] + x[..., k, l]) by definition, in float64."""
    lk, x = log_kernel.double(), x.double()
    return torch.logsumexp(lk[:, :, None] + x[..., None, :, :], dim=-2)


def random_potentials(seed: int, lead: int, n: int, cols: int, scale: float, holes: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(lead, n, cols, generator=g, dtype=torch.float64) * scale
    x = x + torch.linspace(0, scale, n, dtype=torch.float64)[:, None]  # a trend across the axis
    return x.masked_fill(torch.rand(x.shape, generator=g, dtype=torch.float64) < holes, -math.inf)


def make_kernel(kind: str, n: int, reg: float, dtype: torch.dtype, units: str = "pixel"):
    lk = log_kernel_1d(n, reg, units, dtype=dtype, device=CPU)
    if kind == "pairs":
        return BlockedLogKernel(lk, choose_block(lk, BLOCK_RANGE[dtype]))
    coords = axis_coordinates(n, units, dtype=dtype, device=CPU)
    h = float(coords[1] - coords[0]) if n > 1 else 0.0
    return SplitBlockedLogKernel(coords, reg, split_block(n, h, reg, BLOCK_RANGE[dtype]))


@pytest.mark.parametrize("kind", ["pairs", "split"])
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 70),
    cols=st.integers(1, 9),
    reg=st.floats(0.2, 60.0),
    scale=st.floats(0.0, 400.0),
    holes=st.sampled_from([0.0, 0.5, 0.95, 1.0]),
)
@settings(max_examples=60, deadline=None)
def test_blocked_equals_logsumexp_float64(kind, seed, n, cols, reg, scale, holes):
    """Same -inf pattern and the same finite values to 1e-10 (log values up to ~1e4 in magnitude)."""
    lk = log_kernel_1d(n, reg, "pixel", dtype=torch.float64, device=CPU)
    x = random_potentials(seed, 2, n, cols, scale, holes)
    out, ref = make_kernel(kind, n, reg, torch.float64)(x), reference(lk, x)
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(out), finite)
    assert_close(out[finite], ref[finite], atol=1e-10, rtol=1e-13)


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 60), reg=st.floats(1e-4, 1e-1))
@settings(max_examples=30, deadline=None)
def test_split_blocks_normalized_units(seed, n, reg):
    """The split kernel in POT's normalised units (spacing 1 / (n - 1)) against the definition."""
    lk = log_kernel_1d(n, reg, "normalized", dtype=torch.float64, device=CPU)
    x = random_potentials(seed, 1, n, 4, 100.0, 0.3)
    out = make_kernel("split", n, reg, torch.float64, units="normalized")(x)
    ref = reference(lk, x)
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(out), finite)
    assert_close(out[finite], ref[finite], atol=1e-9, rtol=1e-13)


@pytest.mark.parametrize("kind", ["pairs", "split"])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 50), reg=st.floats(0.5, 30.0))
@settings(max_examples=30, deadline=None)
def test_blocked_float32(kind, seed, n, reg):
    """float32 blocks (spread <= 60): float32 accuracy against the float64 definition."""
    lk64 = log_kernel_1d(n, reg, "pixel", dtype=torch.float64, device=CPU)
    x = random_potentials(seed, 2, n, 5, 30.0, 0.3)
    out = make_kernel(kind, n, reg, torch.float32)(x.float())
    ref = reference(lk64, x)
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(out), finite)
    assert_close(out[finite].double(), ref[finite], atol=2e-3, rtol=2e-6)


@given(n=st.integers(1, 200), reg=st.floats(0.05, 1e4), limit=st.sampled_from([60.0, 600.0]))
@settings(max_examples=40, deadline=None)
def test_choose_block_is_the_largest_safe_block(n, reg, limit):
    lk = log_kernel_1d(n, reg, "pixel", dtype=torch.float64, device=CPU)
    s = choose_block(lk, limit)
    assert 1 <= s <= n and block_spread(lk, s) <= limit
    if s < n:
        assert block_spread(lk, s + 1) > limit


@given(n=st.integers(2, 300), reg=st.floats(0.05, 100.0), limit=st.sampled_from([60.0, 600.0]))
@settings(max_examples=40, deadline=None)
def test_split_block_is_the_largest_safe_block(n, reg, limit):
    """``Q``'s spread ``((s - 1) h)^2 / reg`` is within the limit, and one more row would exceed it."""
    s = split_block(n, 1.0, reg, limit)
    assert 1 <= s <= n and (s - 1) ** 2 / reg <= limit
    if s < n:
        assert s**2 / reg > limit


def test_spread_limit_is_what_makes_it_exact():
    """One finite potential at the far end of a 64-pixel axis, reg = 1 px: the true values are finite
    (down to -3969). With the chosen blocks both kernels are exact; with one block for the whole axis
    (spread 3969 > 600) the kernel factors underflow and rows come out -inf."""
    lk = log_kernel_1d(64, 1.0, "pixel", dtype=torch.float64, device=CPU)
    x = torch.full((1, 64, 1), -math.inf, dtype=torch.float64)
    x[0, 63, 0] = 0.0
    ref = reference(lk, x)
    assert torch.isfinite(ref).all() and float(ref.min()) < -3900
    for kind in ("pairs", "split"):
        assert_close(make_kernel(kind, 64, 1.0, torch.float64)(x), ref, atol=1e-10, rtol=0)
    assert not torch.isfinite(BlockedLogKernel(lk, 64)(x)).all()
    coords = axis_coordinates(64, "pixel", dtype=torch.float64, device=CPU)
    assert not torch.isfinite(SplitBlockedLogKernel(coords, 1.0, 64)(x)).all()


@pytest.mark.parametrize(
    ("n", "reg", "expected"),
    [(64, 4.0, BlockedLogKernel), (512, 4.0, SplitBlockedLogKernel), (64, 1.0, SplitBlockedLogKernel)],
)
def test_exact_log_kernel_picks_the_cheaper(n, reg, expected):
    """The cost model's picks where the measured times differ most (``bench_grid.py --exact-only``)."""
    lk = log_kernel_1d(n, reg, "pixel", dtype=torch.float64, device=CPU)
    coords = axis_coordinates(n, "pixel", dtype=torch.float64, device=CPU)
    assert isinstance(exact_log_kernel(lk, coords, reg, 600.0), expected)
    tiny = log_kernel_1d(n, 1e-3, "pixel", dtype=torch.float64, device=CPU)
    assert exact_log_kernel(tiny, coords, 1e-3, 600.0) is None  # no block of two fits: plain logsumexp


@pytest.mark.parametrize("reg", [1.0, 4.0])
def test_small_reg_barycenter_blocked_equals_plain(reg, monkeypatch):
    """End to end at reg = 1 and 4 px on 40x40 (forced log path): the blocked evaluation gives the
    plain-logsumexp barycenter to 1e-12."""
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(1, 2, 12, 2, generator=g, dtype=torch.float64) * 39
    kwargs = {"size": 40, "sigma": 1.0, "reg": reg, "method": "log", "max_iter": 40, "tol": 0.0}
    blocked = heatmap_barycenter(pts, **kwargs)
    monkeypatch.setattr(gibbs, "exact_log_kernel", lambda *args: None)
    plain = heatmap_barycenter(pts, **kwargs)
    assert_close(blocked, plain, atol=1e-12, rtol=0)


def test_auto_small_reg_computes_in_float64():
    """float32 input below the shifted products' range: the exact path runs in float64 (larger blocks)
    and returns float32."""
    a = torch.rand(1, 2, 24, 24, generator=torch.Generator().manual_seed(0))
    bar, info = convolutional_barycenter(a, reg=0.5, units="pixel", max_iter=5, return_info=True)
    assert info["method"] == "log" and info["compute_dtype"] == torch.float64 and bar.dtype == torch.float32

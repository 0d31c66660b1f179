"""Thin-plate-spline warp: the dense map equals scipy's RBFInterpolator(thin_plate_spline, degree=1) (the
standard
TPS), reproduces affine maps like kornia's warp_image_tps and F.affine_grid, interpolates the control points,
moves image content from src to dst, and validates its inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from kornia.geometry.transform import get_tps_transform, warp_image_tps
from scipy.interpolate import RBFInterpolator

from wbaug.transforms.tps import TPSWarp, tps_fit, tps_grid, tps_transform_points, tps_warp_image


def _grid_to_pixels(grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (grid.double() + 1) * torch.tensor([w / 2, h / 2], dtype=torch.float64) - 0.5


def _points(seed: int, n: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(1, n, 2, generator=g, dtype=dtype) * 40 + 12
    dst = src + torch.randn(1, n, 2, generator=g, dtype=dtype) * 2
    return src, dst


@given(seed=st.integers(0, 10_000), n=st.integers(3, 20))
def test_dense_map_matches_scipy_tps(seed, n):
    """Backward map f (f(dst_i) = src_i) at every pixel centre equals scipy's thin-plate RBF with linear
    term."""
    src, dst = _points(seed, n)
    h, w = 24, 30
    pix = _grid_to_pixels(tps_grid(src, dst, (h, w), dtype=torch.float64), h, w)[0].reshape(-1, 2)
    ys, xs = np.mgrid[0:h, 0:w]
    query = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    ref = RBFInterpolator(dst[0].numpy(), src[0].numpy(), kernel="thin_plate_spline", degree=1)(query)
    torch.testing.assert_close(pix, torch.from_numpy(ref), atol=1e-6, rtol=1e-6)


def test_float32_grid_close_to_float64():
    """The float32 fast path stays within 0.05 px of the float64 map for 68 face-like points on 256x256."""
    src, dst = _points(1, 68)
    src, dst = src * 4, dst * 4
    g64 = _grid_to_pixels(tps_grid(src, dst, (256, 256), dtype=torch.float64), 256, 256)
    g32 = _grid_to_pixels(tps_grid(src.float(), dst.float(), (256, 256)), 256, 256)
    # float32 far-field evaluation: sum_i w_i U_i cancels (sum w_i = 0) at ~1e-4 relative precision
    torch.testing.assert_close(g32, g64, atol=0.05, rtol=0)


@given(seed=st.integers(0, 10_000))
def test_control_points_interpolated(seed):
    """tps_transform_points maps every control point to its target exactly (lambda = 0)."""
    src, dst = _points(seed, 9)
    params = tps_fit(dst, src)
    torch.testing.assert_close(tps_transform_points(dst, dst, *params), src, atol=1e-8, rtol=1e-8)


def test_affine_deformation_matches_kornia_and_affine_grid():
    """For an affine src -> dst relation the TPS is that affine map: same image as kornia's warp_image_tps
    and as
    F.affine_grid + grid_sample."""
    g = torch.Generator().manual_seed(0)
    h = w = 32
    img = torch.rand(1, 3, h, w, generator=g)
    a = torch.tensor([[1.05, 0.1], [-0.08, 0.95]])
    t = torch.tensor([1.5, -2.0])
    dst = torch.rand(1, 10, 2, generator=g) * 25 + 3
    src = dst @ a.T + t  # f(p) = A p + t maps output to input
    ours = tps_warp_image(img, src, dst)

    def norm(p):
        return (2 * p + 1) / w - 1

    kw, aw = get_tps_transform(norm(dst), norm(src))
    theirs = warp_image_tps(img, norm(src), kw, aw, align_corners=False)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    # the same affine map in grid_sample's normalised frame u = (2p + 1)/w - 1 (square image):
    # u' = A u + (A 1)(1 - 1/w) + (2t + 1)/w - 1
    ones = torch.ones(2)
    shift = (a @ ones) * (1 - 1 / w) + (2 * t + 1) / w - 1
    theta = torch.cat([a, shift.reshape(2, 1)], 1)
    grid = F.affine_grid(theta[None], [1, 3, h, w], align_corners=False)
    torch.testing.assert_close(ours, F.grid_sample(img, grid, align_corners=False), atol=1e-4, rtol=0)


def test_image_content_moves_from_src_to_dst():
    """A bright dot at src (pixel centre) appears at dst after the warp (integer-preserving shift)."""
    img = torch.zeros(1, 1, 40, 40)
    img[0, 0, 10, 12] = 1.0  # (x=12, y=10)
    src = torch.tensor([[[12.0, 10.0], [30.0, 8.0], [8.0, 30.0], [30.0, 30.0], [20.0, 20.0]]])
    dst = src + torch.tensor([3.0, 5.0])
    out = tps_warp_image(img, src, dst)
    y, x = divmod(int(out[0, 0].argmax()), 40)
    assert (x, y) == (15, 15)
    torch.testing.assert_close(out[0, 0, 15, 15], torch.tensor(1.0), atol=1e-5, rtol=0)


def test_grid_stride_is_close_and_exact_on_lattice():
    """grid_stride=4 equals the exact map on its lattice nodes and stays close elsewhere for mild
    deformations."""
    src, dst = _points(2, 30)
    exact = tps_grid(src, dst, (65, 65), dtype=torch.float64)
    coarse = tps_grid(src, dst, (65, 65), grid_stride=4, dtype=torch.float64)
    torch.testing.assert_close(coarse[:, ::4, ::4], exact[:, ::4, ::4], atol=1e-9, rtol=0)
    err = (_grid_to_pixels(coarse, 65, 65) - _grid_to_pixels(exact, 65, 65)).abs()
    assert float(err.median()) < 0.05


def test_integer_and_unbatched_images_and_module():
    """uint8 (C, H, W) images keep dtype and shape; TPSWarp calls the function."""
    img = (torch.rand(3, 20, 20) * 255).to(torch.uint8)
    src, dst = _points(0, 6, torch.float32)
    src, dst = src[0] * 0.4, dst[0] * 0.4
    out = tps_warp_image(img, src, dst)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    torch.testing.assert_close(
        TPSWarp()(img.float()[None], src[None], dst[None]),
        tps_warp_image(img.float()[None], src[None], dst[None]),
    )
    same = tps_warp_image(img, src, src)
    torch.testing.assert_close(same, img)


def test_tps_bad_inputs():
    img = torch.rand(1, 3, 8, 8)
    pts = torch.rand(1, 4, 2) * 7
    with pytest.raises(ValueError, match="src"):
        tps_warp_image(img, pts[..., :1], pts)
    with pytest.raises(ValueError, match="dst"):
        tps_warp_image(img, pts, torch.full_like(pts, float("nan")))
    with pytest.raises(ValueError, match="image"):
        tps_warp_image(img[0, 0], pts, pts)
    with pytest.raises(ValueError, match="at least 3"):
        tps_fit(pts[:, :2], pts[:, :2])
    with pytest.raises(ValueError, match="grid_stride"):
        tps_grid(pts, pts, (8, 8), grid_stride=0)
    with pytest.raises(TypeError, match="image"):
        tps_warp_image(np.zeros((3, 8, 8)), pts, pts)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_control_points_on_pixel_centres_are_interpolated_without_nan(dtype):
    """A control point exactly on a pixel centre (r = 0 there) gives a finite map that sends the pixel
    ``dst_i`` to ``src_i`` (the spline interpolates its control points)."""
    g = torch.Generator().manual_seed(3)
    dst = torch.randint(4, 28, (2, 9, 2), generator=g).to(dtype)
    src = dst + torch.randn(2, 9, 2, generator=g, dtype=dtype)
    grid = tps_grid(src, dst, (32, 32))
    assert bool(torch.isfinite(grid).all())
    pix = _grid_to_pixels(grid, 32, 32)
    b = torch.arange(2)[:, None]
    at_dst = pix[b, dst[..., 1].long(), dst[..., 0].long()]
    tol = 1e-3 if dtype == torch.float32 else 1e-8
    torch.testing.assert_close(at_dst, src.double(), atol=tol, rtol=0)

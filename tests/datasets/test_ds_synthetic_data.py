"""Rendered synthetic faces (fill_polygons, render_faces, SyntheticFaces) and synthetic_contours.

References: matplotlib's ``Path.contains_points`` for polygon filling; the landmarks themselves for
"landmarks sit on visible structure"; direct indexing for DataLoader/worker determinism.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.path import Path as MplPath
from torchvision import tv_tensors
from torchvision.transforms import v2

from wbaug.datasets import SyntheticFaces, fill_polygons, render_faces, synthetic_contours, synthetic_faces


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(3, 12))
def test_fill_polygons_matches_matplotlib(seed, k):
    """Star-shaped random polygons: the even-odd scan-line fill equals matplotlib's point-in-polygon."""
    rng = np.random.default_rng(seed)
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(2.0, 9.0, k)
    poly = np.stack([10.3 + rad * np.cos(ang), 9.7 + rad * np.sin(ang)], 1)
    mask = fill_polygons(torch.from_numpy(poly), 20, 22)
    yy, xx = np.mgrid[0:20, 0:22]
    ref = MplPath(poly).contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(20, 22)
    assert torch.equal(mask, torch.from_numpy(ref))


def test_fill_polygons_batched_and_padded():
    sq = torch.tensor([[1.0, 1.0], [4.0, 1.0], [4.0, 4.0], [1.0, 4.0]])
    padded = torch.cat([sq, sq[-1:].expand(3, 2)])  # repeated last vertex = same polygon
    masks = fill_polygons(torch.stack([padded, padded + 2.0]), 8, 8)
    assert masks.shape == (2, 8, 8)
    assert masks[0].sum() == 9 and masks[0, 1:4, 1:4].all()
    assert torch.equal(masks[1], masks[0].roll((2, 2), (0, 1)))
    with pytest.raises(ValueError, match="polygons"):
        fill_polygons(torch.zeros(2, 2), 4, 4)


def test_render_faces_deterministic_and_landmarks_on_structure():
    """Same generator -> same image; the image changes strongly around the landmarks (they sit on edges or
    inside drawn parts), much more than in random background pixels."""
    lm = synthetic_faces(6, generator=_gen(0), image_size=128)
    a = render_faces(lm, 128, generator=_gen(1), noise=0.0)
    b = render_faces(lm, 128, generator=_gen(1), noise=0.0)
    assert a.shape == (6, 3, 128, 128) and a.dtype == torch.uint8 and torch.equal(a, b)
    img = a.float().mean(1)  # (B, H, W)
    gy, gx = torch.gradient(img, dim=(1, 2))
    grad = torch.hypot(gx, gy)
    # local max gradient in a 5x5 window around every landmark vs in random pixels far from the face
    pooled = torch.nn.functional.max_pool2d(grad.unsqueeze(1), 5, stride=1, padding=2).squeeze(1)
    ij = lm.round().long()
    at_lm = pooled[torch.arange(6).unsqueeze(1), ij[..., 1], ij[..., 0]]  # (B, 68)
    assert (at_lm > 8.0).float().mean() > 0.95
    corners = pooled[:, :6, :6].amax((1, 2))  # background corner: flat up to the light gradient
    assert (corners < 3.0).all()
    # the eye centre (iris) differs clearly from the skin of the cheek (midpoint of landmarks 2 and 31)
    rgb = a.float()
    b_idx = torch.arange(6)
    eye_c = lm[:, 36:42].mean(1).round().long()
    cheek = ((lm[:, 2] + lm[:, 31]) / 2).round().long()
    eye_rgb = rgb[b_idx, :, eye_c[:, 1], eye_c[:, 0]]
    cheek_rgb = rgb[b_idx, :, cheek[:, 1], cheek[:, 0]]
    assert ((eye_rgb - cheek_rgb).abs().amax(1) > 30).all()


def test_render_faces_unbatched_and_errors():
    lm = synthetic_faces(1, generator=_gen(0), image_size=64)[0]
    out = render_faces(lm, (64, 80), generator=_gen(0))
    assert out.shape == (3, 64, 80)
    with pytest.raises(ValueError, match="landmarks"):
        render_faces(torch.zeros(5, 2))
    with pytest.raises(TypeError):
        render_faces(np.zeros((68, 2)))
    with pytest.raises(ValueError, match="finite"):
        render_faces(torch.full((68, 2), float("nan")))


def test_synthetic_faces_dataset_sample_and_fast_path():
    ds = SyntheticFaces(5, image_size=64, seed=3)
    s = ds[2]
    assert isinstance(s["image"], tv_tensors.Image) and s["image"].shape == (3, 64, 64)
    assert s["image"].dtype == torch.uint8
    assert isinstance(s["landmarks"], tv_tensors.KeyPoints) and s["landmarks"].canvas_size == (64, 64)
    assert s["visibility"].shape == (68,) and s["visibility"].dtype == torch.bool
    assert isinstance(s["box"], tv_tensors.BoundingBoxes) and s["box"].shape == (1, 4)
    assert s["meta"]["index"] == 2 and s["meta"]["seed"] == 3
    lms = ds.landmarks()
    assert lms.shape == (5, 68, 2)
    torch.testing.assert_close(s["landmarks"].as_subclass(torch.Tensor), lms[2])
    torch.testing.assert_close(
        s["box"][0].as_subclass(torch.Tensor), torch.cat([lms[2].amin(0), lms[2].amax(0)])
    )
    fast = SyntheticFaces(5, image_size=64, seed=3, load_images=False)[2]
    assert "image" not in fast and fast["landmarks"].canvas_size == (64, 64)
    img, kp = SyntheticFaces(5, image_size=64, seed=3, output="tuple")[2]
    assert torch.equal(img, s["image"]) and torch.equal(kp, s["landmarks"])
    assert ds[-1]["meta"]["index"] == 4
    with pytest.raises(IndexError):
        ds[5]


def test_synthetic_faces_dataset_determinism_across_instances_and_order():
    a = SyntheticFaces(6, image_size=48, seed=11)
    b = SyntheticFaces(6, image_size=48, seed=11)
    order = [5, 0, 3]
    for i in order:
        assert torch.equal(a[i]["image"], b[i]["image"])
    assert not torch.equal(a[0]["image"], SyntheticFaces(6, image_size=48, seed=12)[0]["image"])
    g1, g2 = _gen(0), _gen(0)
    torch.testing.assert_close(
        SyntheticFaces(4, image_size=48, generator=g1).landmarks(),
        SyntheticFaces(4, image_size=48, generator=g2).landmarks(),
    )


def test_synthetic_faces_dataloader_workers_agree():
    """DataLoader(num_workers=2) yields exactly the samples of direct indexing."""
    ds = SyntheticFaces(6, image_size=32, seed=5)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    images = torch.cat([batch["image"] for batch in loader])
    ref = torch.stack([ds[i]["image"] for i in range(6)])
    assert torch.equal(images, ref)


def test_synthetic_faces_in_v2_compose():
    """v2 transforms move image, key-points and box together and keep their types."""
    tf = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.RandomAffine(degrees=15, translate=(0.1, 0.1))])
    ds = SyntheticFaces(3, image_size=64, seed=0, transforms=tf)
    raw = SyntheticFaces(3, image_size=64, seed=0)
    s, r = ds[1], raw[1]
    assert isinstance(s["image"], tv_tensors.Image) and isinstance(s["landmarks"], tv_tensors.KeyPoints)
    assert isinstance(s["box"], tv_tensors.BoundingBoxes)
    assert not torch.equal(s["landmarks"], r["landmarks"])
    flip = v2.RandomHorizontalFlip(p=1.0)
    f = SyntheticFaces(3, image_size=64, seed=0, transforms=flip)[1]
    torch.testing.assert_close(
        f["landmarks"][:, 0].as_subclass(torch.Tensor), 63.0 - r["landmarks"][:, 0].as_subclass(torch.Tensor)
    )


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"n": -1}, ValueError),
        ({"seed": 1.5}, TypeError),
        ({"output": "list"}, ValueError),
        ({"transforms": 3}, TypeError),
        ({"generator": 0}, TypeError),
        ({"noise": -1.0}, ValueError),
        ({"output": "tuple", "load_images": False}, ValueError),
    ],
)
def test_synthetic_faces_dataset_bad_input(kwargs, err):
    kwargs.setdefault("n", 2)
    n = kwargs.pop("n")
    with pytest.raises(err):
        SyntheticFaces(n, image_size=32, **kwargs)


@given(
    seed=st.integers(0, 2**31 - 1),
    lo=st.integers(3, 60),
    extra=st.integers(0, 40),
    size=st.sampled_from([64, 256]),
)
def test_contours_counts_range_determinism(seed, lo, extra, size):
    cs = synthetic_contours(8, generator=_gen(seed), num_points=(lo, lo + extra), image_size=size)
    again = synthetic_contours(8, generator=_gen(seed), num_points=(lo, lo + extra), image_size=size)
    assert len(cs) == 8
    for c, d in zip(cs, again):
        assert c.dtype == torch.float32 and c.ndim == 2 and c.shape[1] == 2
        assert lo <= c.shape[0] <= lo + extra
        torch.testing.assert_close(c, d, rtol=0, atol=0)
        assert c.min() >= 0.0 and c.max() <= size - 1


@given(seed=st.integers(0, 2**31 - 1))
def test_contours_are_closed_simple_curves_and_shuffle_is_a_permutation(seed):
    """Ordered points: a closed star-shaped curve (angles around the centroid increase monotonically, gaps
    nearly uniform in arc length); shuffled output holds the same points in another order."""
    ordered = synthetic_contours(5, generator=_gen(seed), shuffle=False, num_points=(40, 80))
    shuffled = synthetic_contours(5, generator=_gen(seed), shuffle=True, num_points=(40, 80))
    for o, s in zip(ordered, shuffled):
        key = lambda t: t[torch.argsort(t[:, 0] * 10000 + t[:, 1])]  # noqa: E731
        torch.testing.assert_close(key(o), key(s))
        gaps = (o.roll(-1, 0) - o).norm(dim=1)
        assert gaps.max() < 2.5 * gaps.mean()
        centred = (o - o.mean(0)).double()
        ang = torch.atan2(centred[:, 1], centred[:, 0])
        turn = torch.remainder(ang.roll(-1) - ang, 2 * math.pi)
        torch.testing.assert_close(
            turn.sum(), torch.tensor(2 * math.pi, dtype=torch.float64), atol=1e-6, rtol=0
        )


def test_contours_bad_input():
    with pytest.raises(ValueError, match="num_points"):
        synthetic_contours(2, num_points=(10, 5))
    with pytest.raises(ValueError, match="num_points"):
        synthetic_contours(2, num_points=2)
    with pytest.raises(ValueError, match="n must"):
        synthetic_contours(-1)
    with pytest.raises(TypeError, match="generator"):
        synthetic_contours(2, generator=1)
    assert synthetic_contours(0) == []
    assert [c.shape[0] for c in synthetic_contours(3, num_points=17)] == [17, 17, 17]

"""Multi-view loading (ELT thesis §3.3.1): shared steps once, per-view steps independently, matrices from
original pixels to each view that agree with the actual image warps (pixel centres at integers), flips
with index permutation, the thesis' k-step scheme, reproducibility, DataLoader collation, and the
equivariant loss being zero on ground-truth views."""

import kornia.augmentation as K
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

from wbaug.landmarks import apply_transform, gaussian_heatmaps, get_layout, soft_argmax
from wbaug.landmarks.tracking import track_transform
from wbaug.losses import equivariant_landmark_loss
from wbaug.transforms import (
    LandmarkHorizontalFlip,
    MultiViewDataset,
    MultiViewTransform,
    flatten_views,
    multiview_collate,
)

BILINEAR = v2.InterpolationMode.BILINEAR
FLIP = get_layout("ibug68").flip_indices


def _blob_image(pt, size=(64, 80), sigma=2.0):
    return gaussian_heatmaps(pt[None].double(), size, sigma)[0].float()


@pytest.mark.parametrize(
    "shared, per_view",
    [
        (
            v2.RandomHorizontalFlip(1.0),
            v2.Compose(
                [
                    v2.RandomAffine(25, translate=(0.1, 0.1), scale=(0.8, 1.1), interpolation=BILINEAR),
                    v2.Resize((48, 60)),
                ]
            ),
        ),
        (
            K.RandomHorizontalFlip(p=1.0),
            K.AugmentationSequential(K.RandomAffine(25, scale=(0.8, 1.1), p=1.0), K.Resize((48, 60))),
        ),
        (None, v2.RandomResizedCrop((50, 50), scale=(0.5, 0.9), ratio=(0.8, 1.2))),
        (v2.RandomRotation(30, interpolation=BILINEAR), K.RandomAffine(10, translate=(0.1, 0.1), p=1.0)),
    ],
)
def test_landmarks_follow_the_image_warp(shared, per_view):
    """A Gaussian blob drawn at the landmark (σ = 2 px) is warped by the real image kernels; its centroid in
    every view equals the landmark mapped by the view's matrix (pixel-centre convention) within 0.05 px."""
    pt = torch.tensor([[38.3, 29.6]])
    mv = MultiViewTransform(shared, per_view, num_views=3, generator=torch.Generator().manual_seed(0))
    out = mv(_blob_image(pt), pt)
    centroid = soft_argmax(out["image"].double(), normalize="sum")[:, 0]
    torch.testing.assert_close(centroid, out["landmarks"][:, 0].double(), atol=0.05, rtol=0)
    torch.testing.assert_close(out["landmarks"], apply_transform(pt.expand(3, 1, 2), out["matrix"]))


@pytest.mark.parametrize("antialias, atol", [(False, 2e-3)])
def test_coordinate_tracking_is_exact_against_a_ramp_image(antialias, atol):
    """Warp images whose pixel values are their own x / y coordinates with torchvision's own image kernels:
    at every interior output pixel the value equals inverse(matrix) applied to that pixel. (An antialiased
    downscale is not a pure resampling: its filter shifts values by ~0.015 px, so antialias is off here.)"""
    h, w = 40, 56
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    ramp = torch.stack([xs, ys]).float()
    t = v2.Compose(
        [
            v2.RandomAffine(20, scale=(0.9, 1.2), shear=5, interpolation=BILINEAR),
            v2.Resize((30, 42), antialias=antialias),
        ]
    )
    with torch.random.fork_rng():
        torch.manual_seed(3)  # the torchvision draw; track_transform itself consumes no randomness
        out, m = track_transform(t, ramp)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        ref_out = t(tv_tensors.Image(ramp))
    torch.testing.assert_close(out, ref_out.as_subclass(torch.Tensor))
    vv, uu = torch.meshgrid(
        torch.arange(30, dtype=torch.float64), torch.arange(42, dtype=torch.float64), indexing="ij"
    )
    grid = torch.stack([uu, vv], -1).reshape(1, -1, 2)
    src = apply_transform(grid, torch.linalg.inv(m)[None])[0].reshape(30, 42, 2)
    inside = (src[..., 0] > 4) & (src[..., 0] < w - 5) & (src[..., 1] > 4) & (src[..., 1] < h - 5)
    assert int(inside.sum()) > 200
    torch.testing.assert_close(out[0].double()[inside], src[..., 0][inside], atol=atol, rtol=0)
    torch.testing.assert_close(out[1].double()[inside], src[..., 1][inside], atol=atol, rtol=0)


def test_shared_step_once_per_view_steps_independent():
    img = torch.rand(3, 32, 32)
    # shared random photometric step, identity per view: every view is the same jittered image
    mv = MultiViewTransform(
        v2.ColorJitter(brightness=0.8, hue=0.2), None, num_views=3, generator=torch.Generator().manual_seed(1)
    )
    out = mv(img)
    assert not torch.allclose(out["image"][0], img)
    assert torch.equal(out["image"][0], out["image"][1]) and torch.equal(out["image"][1], out["image"][2])
    # independent per-view geometric step: different matrices
    mv = MultiViewTransform(
        None, v2.RandomRotation(40), num_views=3, generator=torch.Generator().manual_seed(1)
    )
    mats = mv(img)["matrix"]
    assert not torch.allclose(mats[0], mats[1]) and not torch.allclose(mats[1], mats[2])


def test_thesis_three_step_scheme():
    """S1 (lighting) once; S2 (rotation) on I1 and its copy I2; S3 (translation) on I1, I2 and the copy I3 of
    I2: I2 and I3 share their rotation, all three differ in translation (thesis Fig. 3.4)."""
    steps = [
        v2.ColorJitter(0.5),
        K.RandomRotation(45.0, p=1.0),
        K.RandomAffine(0.0, translate=(0.2, 0.2), p=1.0),
    ]
    mv = MultiViewTransform.from_steps(steps, generator=torch.Generator().manual_seed(5))
    m = mv(torch.rand(3, 40, 40), torch.rand(5, 2) * 39)["matrix"]
    lin = m[:, :2, :2]
    torch.testing.assert_close(lin[1], lin[2])
    assert not torch.allclose(lin[0], lin[1], atol=1e-3)
    assert not torch.allclose(m[1, :2, 2], m[2, :2, 2], atol=1e-3)


def test_flips_permute_indices_and_loss_is_zero_on_ground_truth():
    """With LandmarkHorizontalFlip (or a plain flip) in the per-view step and flip_indices given, the views'
    ground-truth landmarks are semantically labelled; L_elt between views with GT as predictions is 0."""
    g = torch.Generator().manual_seed(2)
    lm = torch.rand(68, 2, generator=g) * 50 + 7
    per_view = v2.Compose(
        [LandmarkHorizontalFlip("ibug68", p=0.5), v2.RandomAffine(15, interpolation=BILINEAR)]
    )
    mv = MultiViewTransform(None, per_view, num_views=2, flip_indices="ibug68", generator=g)
    seen_flip = set()
    for _ in range(12):
        out = mv(torch.rand(1, 64, 64), lm)
        seen_flip.update(out["flipped"].tolist())
        for v in range(2):
            expected = apply_transform(lm[None], out["matrix"][v : v + 1])[0]
            if out["flipped"][v]:
                expected = expected[list(FLIP)]
            torch.testing.assert_close(out["landmarks"][v], expected)
        loss = equivariant_landmark_loss(
            out["landmarks"][:1],
            out["landmarks"][1:],
            out["matrix"][:1],
            out["matrix"][1:],
            flip_indices=FLIP,
        )
        assert float(loss) < 1e-8
    assert seen_flip == {True, False}


def test_visibility_outside_canvas_and_given():
    lm = torch.tensor([[5.0, 5.0], [30.0, 30.0], [60.0, 2.0]])
    vis = torch.tensor([True, False, True])
    out = MultiViewTransform(None, v2.CenterCrop(40), num_views=2)(torch.rand(3, 64, 64), lm, vis)
    # centre crop 64 -> 40 shifts by -12: (5, 5) -> (-7, -7) outside; (60, 2) -> (48, -10) outside
    assert out["visibility"].tolist() == [[False, False, False]] * 2
    torch.testing.assert_close(out["landmarks"][0], lm - 12)


def test_reproducible_and_global_rng_untouched():
    img, lm = torch.rand(3, 32, 32), torch.rand(10, 2) * 31
    state = torch.get_rng_state()
    outs = [
        MultiViewTransform(
            v2.ColorJitter(0.3),
            K.RandomAffine(30.0, p=1.0),
            num_views=2,
            generator=torch.Generator().manual_seed(11),
        )(img, lm)
        for _ in range(2)
    ]
    assert torch.equal(torch.get_rng_state(), state)
    for k in outs[0]:
        assert torch.equal(outs[0][k], outs[1][k])
    other = MultiViewTransform(
        v2.ColorJitter(0.3),
        K.RandomAffine(30.0, p=1.0),
        num_views=2,
        generator=torch.Generator().manual_seed(12),
    )(img, lm)
    assert not torch.equal(other["matrix"], outs[0]["matrix"])


def test_dataset_and_collate():
    base = [(torch.rand(3, 32, 32), torch.rand(5, 2) * 31) for _ in range(6)]
    ds = MultiViewDataset(
        base,
        MultiViewTransform(
            None, v2.RandomRotation(15), num_views=2, generator=torch.Generator().manual_seed(0)
        ),
    )
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=multiview_collate)))
    assert batch["image"].shape == (4, 2, 3, 32, 32)
    assert batch["landmarks"].shape == (4, 2, 5, 2) and batch["visibility"].shape == (4, 2, 5)
    assert batch["matrix"].shape == (4, 2, 3, 3) and batch["flipped"].shape == (4, 2)
    flat = flatten_views(batch)
    assert flat["image"].shape == (8, 3, 32, 32)
    torch.testing.assert_close(flat["matrix"][:4], batch["matrix"][:, 0])
    unlabelled = MultiViewDataset([torch.rand(3, 16, 16)] * 3, MultiViewTransform(None, None, num_views=2))
    b2 = multiview_collate([unlabelled[i] for i in range(3)])
    assert set(b2) == {"image", "matrix", "flipped"} and b2["image"].shape == (3, 2, 3, 16, 16)
    dict_ds = MultiViewDataset(
        [{"image": torch.rand(3, 16, 16), "landmarks": torch.rand(4, 2), "id": 7}],
        MultiViewTransform(None, None),
    )
    assert dict_ds[0]["id"] == 7


def test_keypoint_probe_tracking_mode():
    pt = torch.tensor([[20.0, 24.0]])
    out = MultiViewTransform(
        None,
        v2.RandomRotation(30, interpolation=BILINEAR),
        num_views=2,
        track="keypoints",
        generator=torch.Generator().manual_seed(0),
    )(_blob_image(pt), pt)
    centroid = soft_argmax(out["image"].double(), normalize="sum")[:, 0]
    torch.testing.assert_close(centroid, out["landmarks"][:, 0].double(), atol=0.5, rtol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="num_views"):
        MultiViewTransform(None, None, num_views=0)
    with pytest.raises(ValueError, match="track"):
        MultiViewTransform(None, None, track="matrix")
    with pytest.raises(ValueError, match="views"):
        MultiViewTransform.from_steps([None, None], views=[2, 1])
    with pytest.raises(ValueError, match="transform_matrix"):
        MultiViewTransform(None, K.RandomThinPlateSpline(p=1.0))(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="different image shapes"):
        MultiViewTransform(
            None, v2.RandomRotation(30, expand=True), num_views=4, generator=torch.Generator().manual_seed(0)
        )(torch.rand(3, 20, 30))
    with pytest.raises(ValueError, match="flip_indices has length"):
        MultiViewTransform(None, None, flip_indices="ibug68")(torch.rand(3, 8, 8), torch.rand(5, 2))
    with pytest.raises(ValueError, match="landmarks"):
        MultiViewTransform()(torch.rand(3, 8, 8), torch.rand(5, 3))
    with pytest.raises(ValueError, match="visibility"):
        MultiViewTransform()(torch.rand(3, 8, 8), torch.rand(5, 2), torch.ones(4))
    with pytest.raises(ValueError, match="image"):
        MultiViewTransform()(torch.rand(8, 8))


def test_with_synthetic_faces_dataset_and_workers():
    """wbaug.datasets.SyntheticFaces dict samples (uint8 images, KeyPoints, Visibility, box, meta) go through
    a shared landmark-aware flip + per-view kornia affine; 2 DataLoader workers get distinct streams and
    the ground-truth views give zero equivariant loss."""
    from wbaug.datasets import SyntheticFaces

    ds = SyntheticFaces(8, image_size=64, seed=0)
    mv = MultiViewTransform(
        LandmarkHorizontalFlip("ibug68"),
        K.AugmentationSequential(K.RandomAffine(20.0, translate=(0.05, 0.05), p=1.0)),
        num_views=2,
        flip_indices="ibug68",
        generator=torch.Generator().manual_seed(0),
    )
    loader = DataLoader(MultiViewDataset(ds, mv), batch_size=4, collate_fn=multiview_collate, num_workers=2)
    batches = list(loader)
    b = batches[0]
    assert b["image"].shape == (4, 2, 3, 64, 64) and b["image"].dtype == torch.float32
    assert isinstance(b["meta"], dict) and b["landmarks"].shape == (4, 2, 68, 2)
    assert not torch.allclose(batches[0]["matrix"], batches[1]["matrix"])
    loss = equivariant_landmark_loss(
        b["landmarks"][:, 0], b["landmarks"][:, 1], b["matrix"][:, 0], b["matrix"][:, 1], flip_indices=FLIP
    )
    assert float(loss) < 1e-6


def test_custom_kernel_transform_inside_compose_is_tracked_exactly():
    """wbaug's FaceCrop warps images with its own kernel (the coordinate map passes through it): the
    tracker falls back to probe key-points for that child and keeps the coordinate map for the others,
    so the landmarks still follow the warped blob to ~0.01 px."""
    from wbaug.transforms import FaceCrop

    pt = torch.tensor([[100.3, 90.6], [140.0, 150.0], [80.0, 160.0]])
    img = gaussian_heatmaps(pt[None].double(), (256, 256), 2.0)[0].sum(0, keepdim=True).float()
    per_view = v2.Compose(
        [
            v2.RandomRotation(20, interpolation=BILINEAR),
            FaceCrop(192, translate=0.05),
            v2.RandomAffine(10, interpolation=BILINEAR),
        ]
    )
    out = MultiViewTransform(None, per_view, num_views=2, generator=torch.Generator().manual_seed(0))(img, pt)
    assert out["image"].shape == (2, 1, 192, 192)
    for v in range(2):
        lm = out["landmarks"][v, 0].double()
        x0, y0 = lm.round().long().tolist()
        r = 25
        win = out["image"][v, 0, y0 - r : y0 + r + 1, x0 - r : x0 + r + 1].double()
        ys, xs = torch.meshgrid(
            torch.arange(y0 - r, y0 + r + 1.0, dtype=torch.float64),
            torch.arange(x0 - r, x0 + r + 1.0, dtype=torch.float64),
            indexing="ij",
        )
        centroid = torch.stack([(win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()])
        torch.testing.assert_close(centroid, lm, atol=0.02, rtol=0)

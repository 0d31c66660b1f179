"""EquivariantLandmarkLoss: zero for perfectly equivariant predictors (any affine matrices, mirrored views
with the layout permutation), value against a NumPy re-derivation, gradcheck, module == function,
visibility handling and bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.landmarks import (
    apply_transform,
    flip_landmarks,
    gaussian_heatmaps,
    get_layout,
    horizontal_flip_matrix,
)
from wbaug.losses import EquivariantLandmarkLoss, equivariant_landmark_loss

FLIP = get_layout("ibug68").flip_indices


def _affine(angle, scale, shear, tx, ty):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor(
        [[scale * c, -scale * s + shear, tx], [scale * s, scale * c, ty], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )


affine_params = st.tuples(
    st.floats(-math.pi, math.pi),
    st.floats(0.5, 2.0),
    st.floats(-0.3, 0.3),
    st.floats(-40, 40),
    st.floats(-40, 40),
)


def _true_landmarks(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 68, 2, generator=g, dtype=torch.float64) * 100


@given(pa=affine_params, pb=affine_params, loss=st.sampled_from(["l2", "l1", "smooth_l1", "euclidean"]))
def test_perfectly_equivariant_predictor_gives_zero(pa, pb, loss):
    """pred_v = M_v(true landmarks) for arbitrary affine M_a, M_b -> L_elt = 0 (both directions)."""
    x = _true_landmarks()
    ma, mb = _affine(*pa), _affine(*pb)
    pred_a, pred_b = apply_transform(x, ma), apply_transform(x, mb)
    for symmetric in (False, True):
        val = equivariant_landmark_loss(pred_a, pred_b, ma, mb, loss=loss, symmetric=symmetric)
        assert float(val) < 1e-12 if loss != "euclidean" else float(val) < 1e-6


@given(pa=affine_params, pb=affine_params, width=st.integers(16, 256))
def test_flipped_view_with_right_permutation_gives_zero(pa, pb, width):
    """View b is mirrored (x -> W-1-x) with left/right labels swapped: zero loss with the iBUG-68
    permutation, a clearly positive loss with the identity permutation."""
    x = _true_landmarks()
    ma = _affine(*pa)
    mb = horizontal_flip_matrix(width, dtype=torch.float64) @ _affine(*pb)
    pred_a = apply_transform(x, ma)
    pred_b = flip_landmarks(apply_transform(x, _affine(*pb)), width, FLIP)
    val = equivariant_landmark_loss(pred_a, pred_b, ma, mb, flip_indices=FLIP, symmetric=True)
    assert float(val) < 1e-12
    wrong = equivariant_landmark_loss(pred_a, pred_b, ma, mb, flip_indices=list(range(68)))
    assert float(wrong) > 1.0


def test_value_matches_numpy_rederivation():
    """L2 / L1 / smooth-L1 values with visibility against a direct NumPy computation."""
    g = torch.Generator().manual_seed(3)
    pa = torch.rand(4, 10, 2, generator=g, dtype=torch.float64) * 50
    pb = torch.rand(4, 10, 2, generator=g, dtype=torch.float64) * 50
    ma = torch.stack([_affine(0.1 * i, 1.0 + 0.1 * i, 0.0, i, -i) for i in range(4)])
    mb = torch.stack([_affine(-0.2 * i, 0.9, 0.1, 2.0, 3.0) for i in range(4)])
    vis = torch.rand(4, 10, generator=g) > 0.3
    vis[0] = False
    rel = mb.numpy() @ np.linalg.inv(ma.numpy())
    mapped = np.einsum("bij,bnj->bni", rel[:, :2, :2], pa.numpy()) + rel[:, None, :2, 2]
    d = mapped - pb.numpy()
    v = vis.numpy().astype(float)
    for loss, per in [
        ("l2", (d**2).sum(-1)),
        ("l1", np.abs(d).sum(-1)),
        ("smooth_l1", np.where(np.abs(d) < 2.0, 0.5 * d**2 / 2.0, np.abs(d) - 1.0).sum(-1)),
    ]:
        ref = (per * v).sum(-1) / np.maximum(v.sum(-1), 1e-300)
        got = equivariant_landmark_loss(pa, pb, ma, mb, visibility=vis, loss=loss, beta=2.0, reduction="none")
        torch.testing.assert_close(got, torch.from_numpy(ref))
        mean = equivariant_landmark_loss(pa, pb, ma, mb, visibility=vis, loss=loss, beta=2.0)
        torch.testing.assert_close(
            mean, torch.tensor(ref[1:].mean(), dtype=torch.float64)
        )  # sample 0 left out
        total = equivariant_landmark_loss(
            pa, pb, ma, mb, visibility=vis, loss=loss, beta=2.0, reduction="sum"
        )
        torch.testing.assert_close(total, torch.tensor(ref.sum(), dtype=torch.float64))


@pytest.mark.parametrize("loss", ["l2", "l1", "smooth_l1", "euclidean"])
def test_gradcheck_coordinates(loss):
    g = torch.Generator().manual_seed(5)
    pa = (torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 10).requires_grad_()
    pb = (torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 10).requires_grad_()
    ma = torch.stack([_affine(0.3, 1.1, 0.0, 1.0, 2.0), _affine(-0.5, 0.8, 0.1, 0.0, 1.0)]).requires_grad_()
    mb = _affine(0.2, 1.0, 0.0, -1.0, 0.5).requires_grad_()
    torch.autograd.gradcheck(
        lambda a, b, m1, m2: equivariant_landmark_loss(
            a, b, m1, m2, loss=loss, detach_target=False, symmetric=True, beta=0.5
        ),
        (pa, pb, ma, mb),
    )


def test_gradcheck_heatmaps_and_image_size():
    """Heatmap inputs go through soft-argmax; gradcheck in float64; image_size rescales heatmap pixels."""
    g = torch.Generator().manual_seed(6)
    ha = torch.randn(1, 3, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    hb = torch.randn(1, 3, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    ma = _affine(0.1, 1.0, 0.0, 0.5, 0.0)
    torch.autograd.gradcheck(
        lambda a, b: equivariant_landmark_loss(
            a, b, ma, torch.eye(3, dtype=torch.float64), detach_target=False
        ),
        (ha, hb),
    )
    # heatmaps rendered at 1/4 resolution of 64x64 images: equivariant maps -> ~zero loss with image_size
    x = torch.tensor([[[20.0, 30.0], [40.0, 28.0]]], dtype=torch.float64)
    m = _affine(0.3, 1.0, 0.0, 3.0, -2.0)
    xb = apply_transform(x, m)
    to_hm = lambda p: (p + 0.5) / 4 - 0.5  # noqa: E731
    hm_a = gaussian_heatmaps(to_hm(x), (16, 16), 1.0, normalize="sum")
    hm_b = gaussian_heatmaps(to_hm(xb), (16, 16), 1.0, normalize="sum")
    val = equivariant_landmark_loss(
        hm_a, hm_b, torch.eye(3, dtype=torch.float64), m, image_size=(64, 64), heatmap_normalize="sum"
    )
    assert float(val) < 1e-4


def test_detach_target_and_module_matches_function():
    x = _true_landmarks(2)
    pa = x.clone().requires_grad_()
    pb = (x + 1).requires_grad_()
    equivariant_landmark_loss(pa, pb, torch.eye(3), torch.eye(3)).backward()
    assert pb.grad is None and pa.grad is not None
    pa.grad = None
    equivariant_landmark_loss(pa, pb, torch.eye(3), torch.eye(3), detach_target=False).backward()
    assert pb.grad is not None and float(pb.grad.abs().sum()) > 0
    ma, mb = _affine(0.4, 1.2, 0.0, 3, 4), horizontal_flip_matrix(100, dtype=torch.float64)
    for kwargs in [{}, {"loss": "l1", "symmetric": True}, {"reduction": "none"}, {"reduction": "sum"}]:
        module = EquivariantLandmarkLoss(flip_indices=FLIP, **kwargs)
        torch.testing.assert_close(
            module(pa, pb, ma, mb), equivariant_landmark_loss(pa, pb, ma, mb, flip_indices=FLIP, **kwargs)
        )


def test_layout_name_as_flip_indices():
    x = _true_landmarks(2)
    m = horizontal_flip_matrix(120, dtype=torch.float64)
    mirrored = flip_landmarks(x, 120, FLIP)
    assert float(EquivariantLandmarkLoss(flip_indices="ibug68")(x, mirrored, torch.eye(3), m)) < 1e-20
    assert (
        float(equivariant_landmark_loss(x, mirrored, torch.eye(3), m, flip_indices=get_layout("300w")))
        < 1e-20
    )


def test_explicit_flipped_overrides_detection():
    """An explicit ``flipped`` mask decides where the permutation is applied."""
    x = _true_landmarks(2)
    permuted = x[:, list(FLIP)]
    val = equivariant_landmark_loss(
        x, permuted, torch.eye(3), torch.eye(3), flip_indices=FLIP, flipped=torch.tensor([True, True])
    )
    assert float(val) < 1e-20


def test_bad_input():
    x = torch.rand(2, 68, 2)
    eye = torch.eye(3)
    with pytest.raises(ValueError, match="pred_a and pred_b"):
        equivariant_landmark_loss(x, torch.rand(2, 67, 2), eye, eye)
    with pytest.raises(ValueError, match="matrix_a is singular"):
        equivariant_landmark_loss(x, x, torch.zeros(2, 3, 3), eye)
    with pytest.raises(ValueError, match="matrix_b"):
        equivariant_landmark_loss(x, x, eye, torch.eye(4))
    with pytest.raises(ValueError, match="matrix_a has batch size"):
        equivariant_landmark_loss(x, x, torch.eye(3).expand(3, 3, 3), eye)
    with pytest.raises(ValueError, match="flip_indices has length"):
        equivariant_landmark_loss(x, x, eye, eye, flip_indices=list(range(67)))
    with pytest.raises(ValueError, match="empty visibility"):
        equivariant_landmark_loss(x, x, eye, eye, visibility=torch.zeros(2, 68, dtype=torch.bool))
    with pytest.raises(ValueError, match="visibility must have shape"):
        equivariant_landmark_loss(x, x, eye, eye, visibility=torch.ones(2, 5))
    with pytest.raises(ValueError, match="flip_indices"):
        equivariant_landmark_loss(x, x, eye, horizontal_flip_matrix(64))
    with pytest.raises(ValueError, match="reduction"):
        equivariant_landmark_loss(x, x, eye, eye, reduction="avg")
    with pytest.raises(ValueError, match="loss must be"):
        equivariant_landmark_loss(x, x, eye, eye, loss="l3")
    with pytest.raises(ValueError, match="pred_a must be"):
        equivariant_landmark_loss(torch.rand(2, 68), x, eye, eye)
    with pytest.raises(TypeError, match="pred_b"):
        equivariant_landmark_loss(x, x.long(), eye, eye)

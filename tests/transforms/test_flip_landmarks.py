"""LandmarkHorizontalFlip / horizontal_flip_landmarks: mirrored coordinates follow the flipped image pixels
(pixel centres at integers), indices are swapped with the layout permutation, visibility follows,
draws come from the generator, works inside v2.Compose, bad input errors."""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from wbaug.landmarks import get_layout
from wbaug.transforms import LandmarkHorizontalFlip, Visibility, horizontal_flip_landmarks

FLIP = torch.tensor(get_layout("ibug68").flip_indices)


def _sample(seed=0, h=40, w=50):
    g = torch.Generator().manual_seed(seed)
    pts = torch.stack([torch.randint(0, w, (68,), generator=g), torch.randint(0, h, (68,), generator=g)], -1)
    return tv_tensors.Image(torch.rand(3, h, w, generator=g)), tv_tensors.KeyPoints(
        pts.float(), canvas_size=(h, w)
    )


def test_keypoints_follow_flipped_image_pixels():
    """A bright pixel drawn at landmark 36 ends up exactly at the flipped landmark 45 (its partner)."""
    img, kp = _sample()
    marker = torch.zeros(1, 40, 50)
    x, y = kp[36].long().tolist()
    marker[0, y, x] = 1.0
    out_img, out_kp = LandmarkHorizontalFlip("ibug68", p=1.0)(tv_tensors.Image(marker), kp)
    yy, xx = torch.nonzero(out_img[0]).tolist()[0]
    assert (xx, yy) == tuple(out_kp[45].long().tolist())
    torch.testing.assert_close(
        out_kp.as_subclass(torch.Tensor), torch.stack([49 - kp[FLIP, 0], kp[FLIP, 1]], -1)
    )
    assert isinstance(out_kp, tv_tensors.KeyPoints) and out_kp.canvas_size == (40, 50)


def test_visibility_permuted_and_double_flip_identity():
    img, kp = _sample(1)
    vis = Visibility(torch.arange(68) < 17)
    t = LandmarkHorizontalFlip(get_layout("ibug68"), p=1.0)
    out = t(img, kp, vis)
    assert isinstance(out[2], Visibility)
    assert torch.equal(out[2].as_subclass(torch.Tensor), vis.as_subclass(torch.Tensor)[FLIP])
    back = t(*out)
    for a, b in zip(back, (img, kp, vis)):
        assert torch.equal(a.as_subclass(torch.Tensor), b.as_subclass(torch.Tensor))


def test_probability_generator_and_compose():
    img, kp = _sample(2)
    same = LandmarkHorizontalFlip("ibug68", p=0.0)(img, kp)
    assert torch.equal(same[1], kp)
    draws = [
        not torch.equal(
            LandmarkHorizontalFlip("68", p=0.5, generator=torch.Generator().manual_seed(s))(img, kp)[1], kp
        )
        for s in range(20)
    ]
    assert 0 < sum(draws) < 20
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    t1, t2 = LandmarkHorizontalFlip("ibug68", generator=g1), LandmarkHorizontalFlip("ibug68", generator=g2)
    for _ in range(10):
        assert torch.equal(t1(img, kp)[1], t2(img, kp)[1])
    pipe = v2.Compose([LandmarkHorizontalFlip("ibug68", p=1.0), v2.ColorJitter(0.1)])
    out = pipe({"image": img, "landmarks": kp, "label": 3})
    assert out["label"] == 3 and torch.equal(
        out["landmarks"], horizontal_flip_landmarks(img, kp, "ibug68")[1]
    )


def test_functional_on_plain_tensors_and_batches():
    pts = torch.rand(4, 5, 2) * 31
    img = torch.rand(4, 3, 24, 32)
    out_img, out_pts, vis = horizontal_flip_landmarks(img, pts, "celeba5", visibility=torch.ones(4, 5))
    torch.testing.assert_close(out_img, img.flip(-1))
    torch.testing.assert_close(out_pts[:, 0], torch.stack([31 - pts[:, 1, 0], pts[:, 1, 1]], -1))
    _, only_pts = horizontal_flip_landmarks(None, pts, [1, 0, 2, 4, 3], width=32)
    torch.testing.assert_close(only_pts, out_pts)


def test_bad_input():
    img, kp = _sample()
    with pytest.raises(ValueError, match="flip_indices has length"):
        LandmarkHorizontalFlip(list(range(5)), p=1.0)(img, kp)
    with pytest.raises(ValueError, match="involution"):
        LandmarkHorizontalFlip([1, 2, 0])
    with pytest.raises(ValueError, match="p must be"):
        LandmarkHorizontalFlip("ibug68", p=1.5)
    with pytest.raises(ValueError, match="unknown layout"):
        LandmarkHorizontalFlip("ibug69")
    with pytest.raises(ValueError, match="width"):
        horizontal_flip_landmarks(None, torch.rand(68, 2), "ibug68")
    with pytest.raises(TypeError, match="generator"):
        LandmarkHorizontalFlip("ibug68", generator=0)

"""Synthetic face clips (wbaug.datasets.synthetic_face_tracks / synthetic_face_videos): shapes, identity
constant along a clip, small frame-to-frame steps with the drift towards the frontal pose, generator
reproducibility, argument errors."""

from __future__ import annotations

import pytest
import torch

from wbaug.datasets import synthetic_face_tracks, synthetic_face_videos
from wbaug.transforms import ssim_score


def test_tracks_identity_constant_pose_drifts():
    g = torch.Generator().manual_seed(0)
    lm, p = synthetic_face_tracks(6, 40, generator=g, pose_step=2.0, reversion=0.1)
    assert lm.shape == (6, 40, 68, 2) and p["yaw"].shape == (6, 40)
    for name in ("face_w", "chin", "mouth_w", "scale"):
        assert torch.equal(p[name], p[name][:, :1].expand(6, 40)), name
    steps = p["yaw"].diff(dim=1).rad2deg()
    assert 0.5 < float(steps.std()) < 4.0  # ~2° steps
    # the drift: |yaw| shrinks on average when the walk's noise is off
    _, quiet = synthetic_face_tracks(
        6, 20, generator=torch.Generator().manual_seed(1), pose_step=0.0, reversion=0.1
    )
    assert torch.all(quiet["yaw"][:, -1].abs() <= quiet["yaw"][:, 0].abs() + 1e-7)


def test_videos_shapes_reproducible_and_close_frames():
    a, pa = synthetic_face_videos(2, 5, image_size=32, generator=torch.Generator().manual_seed(3))
    b, _ = synthetic_face_videos(2, 5, image_size=32, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 5, 3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert pa["landmarks"].shape == (2, 5, 68, 2) and pa["gain"].shape == (2, 5)
    x = a.float() / 255
    near = ssim_score(x[:, :-1].flatten(0, 1), x[:, 1:].flatten(0, 1), window=5)
    other = ssim_score(x[0], x[1], window=5)  # different identities
    assert float(near.mean()) > float(other.mean())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_tracks": -1}, "num_tracks"),
        ({"num_frames": 0}, "num_frames"),
        ({"pose_step": -1.0}, "pose_step"),
        ({"reversion": 2.0}, "reversion"),
        ({"generator": 1}, "generator"),
    ],
)
def test_track_arguments(kwargs, match):
    args = {"num_tracks": 1, "num_frames": 2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        synthetic_face_tracks(args.pop("num_tracks"), args.pop("num_frames"), **args)


def test_video_arguments():
    with pytest.raises(ValueError, match="zoom"):
        synthetic_face_videos(1, 2, zoom=0.0)
    with pytest.raises(ValueError, match="light_step"):
        synthetic_face_videos(1, 2, light_step=-1.0)
    with pytest.raises(ValueError, match="image_size"):
        synthetic_face_videos(1, 2, image_size=8)

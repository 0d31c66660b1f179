"""Short synthetic face "videos": tracked-face clips rendered from :func:`synthetic_face_tracks`.

One identity per clip (face shape, colours, hair, background), pose and expression drifting by small
random-walk steps from frame to frame, and a slowly changing light (global gain and a horizontal light
gradient). Consecutive frames are therefore close but not identical: the pairs of nearby frames that
Chrysos et al., *Visual Data Augmentation through Learning* (2018, §3.2, §4.1) take from 300VW, with no
files needed.
"""

from __future__ import annotations

import torch

from wbaug._checks import check_generator
from wbaug.datasets.render import render_faces
from wbaug.datasets.synthetic_faces import synthetic_face_tracks

__all__ = ["synthetic_face_videos"]


def synthetic_face_videos(
    num_videos: int,
    num_frames: int,
    *,
    image_size: int = 64,
    generator: torch.Generator | None = None,
    pose_step: float = 2.0,
    expression_step: float = 1.0,
    reversion: float = 0.05,
    light_step: float = 0.02,
    noise: float = 2.0,
    zoom: float = 1.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Render ``V`` clips of ``T`` frames of one synthetic face each.

    Args:
        num_videos: clips ``V`` (``>= 0``).
        num_frames: frames per clip ``T`` (``>= 1``).
        image_size: frame side ``S`` in pixels (``>= 16``).
        generator: source of all randomness (same state, same clips).
        pose_step: per-frame yaw step standard deviation in degrees (see :func:`synthetic_face_tracks`).
        expression_step: multiplier of the per-frame expression steps.
        reversion: per-frame drift towards the frontal pose and resting expression (and of the light
            towards neutral), in ``[0, 1]``.
        light_step: per-frame standard deviation of the light's gain and horizontal gradient (``>= 0``).
        noise: sensor noise standard deviation on the 0-255 scale, independent per frame (``>= 0``).
        zoom: magnification about the canvas centre (a tighter, tracker-like crop; ``> 0``); the
            returned landmarks are those of the rendered frames.

    Returns:
        ``(frames, params)``: ``(V, T, 3, S, S)`` uint8 frames and a dict of ``(V, T)`` float32 parameters
        (those of :func:`synthetic_face_tracks` plus ``gain`` and ``light_x``); ``params["landmarks"]`` is
        ``(V, T, 68, 2)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> frames, params = synthetic_face_videos(2, 4, image_size=32, generator=g)
        >>> frames.shape, frames.dtype, params["yaw"].shape
        (torch.Size([2, 4, 3, 32, 32]), torch.uint8, torch.Size([2, 4]))
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    if not light_step >= 0:
        raise ValueError(f"light_step must be >= 0, got {light_step}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if not zoom > 0:
        raise ValueError(f"zoom must be > 0, got {zoom}")
    check_generator(generator)
    g = generator
    landmarks, params = synthetic_face_tracks(
        num_videos,
        num_frames,
        generator=g,
        image_size=image_size,
        pose_step=pose_step,
        expression_step=expression_step,
        reversion=reversion,
    )
    centre = (image_size - 1) / 2
    landmarks = centre + zoom * (landmarks - centre)
    v, t = num_videos, num_frames
    seeds = torch.randint(0, 2**62, (v,), generator=g)
    walk = light_step * torch.randn(v, t - 1, 2, generator=g)
    light = [torch.zeros(v, 2)]
    for j in range(t - 1):  # (gain - 1, gradient): the same drifting walk as the pose
        light.append(light[-1] * (1 - reversion) + walk[:, j])
    light = torch.stack(light, 1)  # (V, T, 2)
    gain = (1.0 + light[..., 0]).clamp(0.7, 1.3)
    light_x = light[..., 1].clamp(-0.3, 0.3)
    xx = torch.linspace(-1.0, 1.0, image_size).view(1, 1, image_size)
    frames = torch.empty(v, t, 3, image_size, image_size, dtype=torch.uint8)
    for i in range(v):
        for j in range(t):
            # the same seed for every frame of a clip: the same colours, hair and background
            clip = torch.Generator().manual_seed(int(seeds[i]))
            img = render_faces(landmarks[i, j : j + 1], image_size, generator=clip, noise=0.0).float()
            img = img * (gain[i, j] + light_x[i, j] * xx)
            if noise > 0:
                img = img + noise * torch.randn(img.shape, generator=g)
            frames[i, j] = img[0].round().clamp(0, 255).to(torch.uint8)
    out = dict(params)
    out.update(gain=gain, light_x=light_x, landmarks=landmarks)
    return frames, out

"""Face-like 68-point landmark sets (iBUG / 300-W layout) from a small 3D parametric face model.

The model is written from the anatomy of the iBUG-68 markup (jaw 0-16, brows 17-26, nose 27-35,
eyes 36-47, mouth 48-67) and has three groups of parameters, all drawn from a ``torch.Generator``:

* **identity** — face width/height, jaw squareness, chin length, eye spacing/size, brow height and
  arch, nose length/width, mouth width, lip thickness, plus a small per-point jitter;
* **expression** — mouth opening (lower lip and chin drop), smile (mouth corners up and out),
  brow raise, eye opening (down to a blink);
* **head pose** — yaw ``ψ``, pitch ``φ``, roll ``ρ`` of the 3D shape, weak-perspective projection
  with scale ``s`` and translation ``t``.

With the 3D template ``X ∈ R^{68×3}`` (face units: jaw half-width ≈ 1, ``y`` down, ``z`` towards the
camera) the landmarks in pixels are

.. math::

    x_i = s\\,[R_z(ρ) R_x(φ) R_y(ψ) X_i]_{1:2} + t,

so yaw gives foreshortening and left/right asymmetry, and pitch moves the nose relative to the eyes
and mouth. Everything is vectorised over the batch: 10 000 sets take a few milliseconds.

This is the embedded default data of wbaug (``wbaug demo``, tests, zoo smoke runs); it stands in for
300-W (Sagonas et al., 2013) used in Bespalov et al., "Data augmentation with manifold barycenters".
"""

from __future__ import annotations

import math

import torch

from wbaug._checks import check_generator

__all__ = ["NUM_FACE_LANDMARKS", "synthetic_face_tracks", "synthetic_faces"]

NUM_FACE_LANDMARKS = 68


def _normal(n: int, mean: float, std: float, g: torch.Generator | None, lo: float, hi: float):
    return (mean + std * torch.randn(n, 1, generator=g, dtype=torch.float64)).clamp(lo, hi)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None):
    return lo + (hi - lo) * torch.rand(n, 1, generator=g, dtype=torch.float64)


def _template(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Batched 3D template ``(n, 68, 3)`` in face units from identity/expression parameters (n, 1)."""
    n = p["face_w"].shape[0]
    dt = torch.float64
    # --- jaw 0-16: a superellipse from the right ear (image left) over the chin to the left ear ---
    theta = torch.linspace(0.0, math.pi, 17, dtype=dt).unsqueeze(0)  # (1, 17)
    c, s_ = torch.cos(theta), torch.sin(theta)
    e = 2.0 / p["jaw_sq"]
    jaw_x = -torch.sign(c) * c.abs().pow(e)
    jaw_drop = 0.4 * p["mouth_open"]  # opening the mouth lowers the chin
    jaw_y = -0.28 + (p["chin"] + jaw_drop * s_.pow(4)) * s_.abs().pow(e)
    jaw_z = _JAW_Z0 - _JAW_K * jaw_x.square()  # horizontal jaw profile: a parabola (see _project)
    jaw = torch.stack([jaw_x, jaw_y, jaw_z], -1)

    # --- brows 17-21 (image left, outer -> inner), 22-26 mirrored (inner -> outer) ---
    t = torch.linspace(0.0, 1.0, 5, dtype=dt).unsqueeze(0)
    brow_inner = p["eye_sep"] - p["eye_w"] - 0.02
    brow_outer = p["eye_sep"] + p["eye_w"] + 0.1 * p["brow_len"]
    bx = -(brow_outer + (brow_inner - brow_outer) * t)
    arch = p["brow_arch"] * torch.sin(math.pi * (0.15 + 0.75 * t))
    by = p["eye_y"] - p["brow_gap"] - arch - 0.07 * p["brow_raise"] + 0.02 * t
    brow_r = torch.stack([bx, by, 0.32 - 0.6 * bx.square()], -1)
    brow_l = brow_r.flip(1) * torch.tensor([-1.0, 1.0, 1.0], dtype=dt)
    # --- nose: bridge 27-30 (top -> tip), nostrils 31-35 (image left -> right) ---
    tip_y = p["nose_len"]
    tb = torch.linspace(0.0, 1.0, 4, dtype=dt).unsqueeze(0)
    bridge_y = p["eye_y"] - 0.02 + (tip_y - p["eye_y"] + 0.02) * tb
    bridge = torch.stack([torch.zeros_like(bridge_y), bridge_y, 0.3 + 0.38 * tb.expand(n, 4)], -1)
    nx = p["nose_w"] * torch.tensor([[-1.0, -0.5, 0.0, 0.5, 1.0]], dtype=dt)
    ny = tip_y + 0.1 + torch.tensor([[-0.03, 0.0, 0.02, 0.0, -0.03]], dtype=dt)
    nz = 0.3 + torch.tensor([[0.1, 0.18, 0.25, 0.18, 0.1]], dtype=dt).expand(n, 5)
    nostrils = torch.stack([nx, ny.expand(n, 5), nz], -1)
    # --- eyes: 36 outer corner, 37/38 upper lid, 39 inner corner, 40/41 lower lid (image left eye) ---
    ang = torch.tensor([math.pi, 2 * math.pi / 3, math.pi / 3, 0.0, -math.pi / 3, -2 * math.pi / 3], dtype=dt)
    h = p["eye_h"] * p["eye_open"]
    ex = -p["eye_sep"] + p["eye_w"] * torch.cos(ang).unsqueeze(0)
    ey = p["eye_y"] - h * torch.sin(ang).unsqueeze(0) + 0.015 * (ex + p["eye_sep"]) / p["eye_w"]
    eye_r = torch.stack([ex, ey, 0.22 - 0.45 * ex.square()], -1)
    # mirrored eye: 42 inner <- 39, 43 <- 38, 44 <- 37, 45 outer <- 36, 46 <- 41, 47 <- 40
    eye_l = eye_r[:, [3, 2, 1, 0, 5, 4]] * torch.tensor([-1.0, 1.0, 1.0], dtype=dt)
    # --- mouth: outer 48-59 (48 left corner, upper lip to 54, lower lip back), inner 60-67 ---
    mw = p["mouth_w"] * (1.0 + 0.12 * p["smile"])
    my = p["mouth_y"]
    corner_up = 0.07 * p["smile"]
    gap = 0.35 * p["mouth_open"]
    up, lo = p["lip_up"], p["lip_lo"]
    ox = torch.tensor([[-1.0, -0.62, -0.25, 0.0, 0.25, 0.62, 1.0, 0.6, 0.28, 0.0, -0.28, -0.6]], dtype=dt)
    upper_prof = torch.tensor([[0.0, 0.75, 1.0, 0.85, 1.0, 0.75, 0.0]], dtype=dt)
    lower_prof = torch.tensor([[0.8, 1.0, 1.05, 1.0, 0.8]], dtype=dt)
    outer_x = mw * ox
    upper_y = my - gap / 2 - up * upper_prof - corner_up * (ox[:, :7].abs() ** 2)
    upper_y = torch.cat([upper_y[:, :1] + gap / 2, upper_y[:, 1:6], upper_y[:, 6:] + gap / 2], 1)
    lower_y = my + gap / 2 + lo * lower_prof - corner_up * (ox[:, 7:].abs() ** 2)
    outer_y = torch.cat([upper_y, lower_y], 1)
    ix = torch.tensor([[-0.8, -0.4, 0.0, 0.4, 0.8, 0.4, 0.0, -0.4]], dtype=dt)
    inner_x = mw * ix
    iy_sign = torch.tensor([[0.0, -1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0]], dtype=dt)
    inner_y = my + iy_sign * (gap / 2 + 0.012) - corner_up * 0.8 * ix.abs() ** 2
    mouth_x = torch.cat([outer_x, inner_x], 1)
    mouth_y = torch.cat([outer_y, inner_y], 1)
    mouth = torch.stack([mouth_x, mouth_y, 0.36 - 0.5 * mouth_x.square()], -1)

    pts = torch.cat([jaw, brow_r, brow_l, bridge, nostrils, eye_r, eye_l, mouth], 1)
    scale = torch.stack([p["face_w"], p["face_h"], p["face_w"]], -1)  # (n, 1, 3)
    return pts * scale


def _head_normals(pts: torch.Tensor) -> torch.Tensor:
    """Outward normals of a head ellipsoid through the template points (for self-occlusion)."""
    centre = torch.tensor([0.0, 0.15, -1.0], dtype=pts.dtype)
    radii = torch.tensor([1.0, 1.4, 1.0], dtype=pts.dtype)
    nrm = (pts - centre) / radii.square()
    return nrm / nrm.norm(dim=-1, keepdim=True)


def _rotation(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """``R_z(roll) R_x(pitch) R_y(yaw)`` as ``(n, 3, 3)``; angles ``(n,)`` in radians."""
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).view(-1, 3, 3)
    rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], -1).view(-1, 3, 3)
    return rz @ rx @ ry


def synthetic_faces(
    n: int,
    *,
    generator: torch.Generator | None = None,
    image_size: int = 256,
    max_yaw: float = 50.0,
    pose_std: tuple[float, float, float] = (18.0, 8.0, 8.0),
    expression: float = 1.0,
    return_params: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Draw ``n`` face-like 68-point landmark sets in the iBUG-68 layout.

    Args:
        n: number of landmark sets (``n >= 0``).
        generator: source of randomness; the same generator state gives the same faces.
        image_size: side ``S`` of the square canvas; landmarks are pixel coordinates with pixel centres
            at integers, all inside ``[2, S - 3]``.
        max_yaw: largest absolute yaw in degrees (yaw ~ N(0, pose_std[0]) clipped to this).
        pose_std: standard deviations in degrees of yaw, pitch and roll (pitch clipped to ±25°, roll
            to ±35°). ``(0, 0, 0)`` gives frontal upright faces.
        expression: multiplier of expression strength in ``[0, 1]``; 0 gives neutral faces.
        return_params: also return a dict of the drawn parameters (``(n,)`` tensors: ``yaw``,
            ``pitch``, ``roll`` in radians, ``scale`` in pixels per face unit, ``tx``, ``ty`` in pixels,
            identity and expression entries) and ``visibility`` ``(n, 68)`` bool, False for far-side jaw
            points hidden behind the cheek at large yaw (|yaw| > ~45°); like 300-W annotations, those are
            placed on the occluding contour of the face rather than behind it.

    Returns:
        ``(n, 68, 2)`` float32 landmarks ``(x, y)``; with ``return_params`` a tuple ``(landmarks, params)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> synthetic_faces(4, generator=g).shape
        torch.Size([4, 68, 2])

    Landmark order (the 300-W convention, "left" = image left = the subject's right): jaw 0-16 from
    image left to right, brows 17-21 and 22-26, nose bridge 27-30 downwards, nostrils 31-35,
    eyes 36-41 and 42-47 (each from its image-left corner, upper lid first), outer lips 48-59 and
    inner lips 60-67 clockwise from the image-left mouth corner.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    if not 0.0 <= max_yaw <= 80.0:
        raise ValueError(f"max_yaw must be in [0, 80] degrees, got {max_yaw}")
    if len(pose_std) != 3 or any(float(v) < 0 for v in pose_std):
        raise ValueError(f"pose_std must be three non-negative degrees (yaw, pitch, roll), got {pose_std}")
    if not 0.0 <= expression <= 1.0:
        raise ValueError(f"expression must be in [0, 1], got {expression}")
    check_generator(generator)
    g = generator
    p = _draw_parameters(n, g, expression, max_yaw, pose_std, float(image_size))
    jitter = 0.012 * torch.randn(n, NUM_FACE_LANDMARKS, 3, generator=g, dtype=torch.float64)
    target = (image_size - 1) / 2 + 0.05 * image_size * torch.randn(n, 2, generator=g, dtype=torch.float64)
    # geometry in chunks: small temporaries are much faster than a few large ones on a CPU
    landmarks = torch.empty(n, NUM_FACE_LANDMARKS, 2, dtype=torch.float32)
    visibility = torch.empty(n, NUM_FACE_LANDMARKS, dtype=torch.bool)
    shifts = torch.empty(n, 2, dtype=torch.float64)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        lm, vis, shift = _project({k: v[sl] for k, v in p.items()}, jitter[sl], target[sl], float(image_size))
        landmarks[sl], visibility[sl], shifts[sl] = lm, vis, shift
    if not return_params:
        return landmarks
    params = {k: v.reshape(n).to(torch.float32) for k, v in p.items()}
    params.update(tx=shifts[:, 0].float(), ty=shifts[:, 1].float(), visibility=visibility)
    return landmarks, params


_CHUNK = 1024
_JAW_MASK = torch.arange(68) < 17


def _draw_parameters(
    n: int, g: torch.Generator | None, expression: float, max_yaw: float, pose_std, size: float
) -> dict[str, torch.Tensor]:
    """All random parameters as ``(n, 1)`` float64 tensors (drawn before any geometry is computed)."""
    p: dict[str, torch.Tensor] = {
        "face_w": _normal(n, 1.0, 0.06, g, 0.82, 1.18),
        "face_h": _normal(n, 1.0, 0.06, g, 0.82, 1.18),
        "jaw_sq": _uniform(n, 2.0, 3.2, g),
        "chin": _normal(n, 1.75, 0.1, g, 1.45, 2.05),
        "eye_sep": _normal(n, 0.44, 0.03, g, 0.36, 0.52),
        "eye_w": _normal(n, 0.18, 0.015, g, 0.14, 0.22),
        "eye_h": _normal(n, 0.07, 0.01, g, 0.045, 0.095),
        "eye_y": _normal(n, -0.3, 0.03, g, -0.4, -0.2),
        "brow_gap": _normal(n, 0.2, 0.03, g, 0.12, 0.28),
        "brow_arch": _normal(n, 0.07, 0.02, g, 0.01, 0.12),
        "brow_len": _normal(n, 0.5, 0.3, g, -0.3, 1.0),
        "nose_len": _normal(n, 0.25, 0.04, g, 0.15, 0.35),
        "nose_w": _normal(n, 0.18, 0.02, g, 0.13, 0.24),
        "mouth_y": _normal(n, 0.82, 0.05, g, 0.7, 0.95),
        "mouth_w": _normal(n, 0.34, 0.035, g, 0.25, 0.44),
        "lip_up": _normal(n, 0.08, 0.012, g, 0.05, 0.11),
        "lip_lo": _normal(n, 0.1, 0.015, g, 0.065, 0.14),
    }
    # expression: about half the faces keep the mouth closed
    closed = torch.rand(n, 1, generator=g, dtype=torch.float64) < 0.5
    p["mouth_open"] = torch.where(closed, 0.0, _uniform(n, 0.0, 1.0, g).square()) * expression
    p["smile"] = _uniform(n, -0.4, 1.0, g) * expression
    p["brow_raise"] = _normal(n, 0.0, 0.5, g, -1.0, 1.0) * expression
    blink = (torch.rand(n, 1, generator=g, dtype=torch.float64) < 0.05) & (expression > 0)
    p["eye_open"] = torch.where(blink, 0.15, 1.0 + expression * _normal(n, 0.0, 0.15, g, -0.4, 0.35))
    sy, sp, sr = (math.radians(float(v)) for v in pose_std)
    my = math.radians(max_yaw)
    p["yaw"] = (sy * torch.randn(n, 1, generator=g, dtype=torch.float64)).clamp(-my, my)
    p["pitch"] = (sp * torch.randn(n, 1, generator=g, dtype=torch.float64)).clamp(-_MAX_PITCH, _MAX_PITCH)
    p["roll"] = (sr * torch.randn(n, 1, generator=g, dtype=torch.float64)).clamp(-_MAX_ROLL, _MAX_ROLL)
    p["scale"] = size * (0.17 + 0.07 * torch.rand(n, 1, generator=g, dtype=torch.float64))
    return p


_MAX_PITCH = math.radians(25.0)
_JAW_Z0 = 0.3
_JAW_K = 0.5
_MAX_ROLL = math.radians(35.0)


def _project(p: dict[str, torch.Tensor], jitter: torch.Tensor, target: torch.Tensor, size: float):
    """Template, rotation, weak-perspective projection and placement on the canvas for one chunk."""
    m = jitter.shape[0]
    pts3 = _template(p) + jitter
    yaw = p["yaw"].view(m, 1)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    x, y, z = pts3.unbind(-1)
    xr, zr = x * cy + z * sy, -x * sy + z * cy  # R_y(yaw)
    # Jaw contour at large yaw: the jaw's horizontal profile z = z0 - k x^2 (k = K / face_w,
    # z0 = Z0 face_w) projects to x' = x cos ψ + z sin ψ, which folds back beyond x* = cos ψ / (2 k sin ψ).
    # Points past the fold are hidden; like the 300-W annotators we put them on the occluding contour.
    fw = p["face_w"].view(m, 1)
    k, z0 = _JAW_K / fw, _JAW_Z0 * fw
    safe_sy = torch.where(sy.abs() < 1e-9, torch.full_like(sy, 1e-9), sy)
    x_star = cy / (2 * k * safe_sy)  # signed: on the far side
    folded = (x * safe_sy > cy / (2 * k)) & _JAW_MASK.to(x.device)
    z_star = z0 - k * x_star.square()
    xr = torch.where(folded, x_star * cy + z_star * sy, xr)
    zr = torch.where(folded, -x_star * sy + z_star * cy, zr)
    rot2 = _rotation(torch.zeros_like(yaw.view(m)), p["pitch"].view(m), p["roll"].view(m))
    # R_z R_x applied as a broadcast sum: batched 3x3 matmuls are slow on CPU for tiny matrices
    rotated = (torch.stack([xr, y, zr], -1).unsqueeze(-2) * rot2.unsqueeze(1)).sum(-1)
    rot = _rotation(yaw.view(m), p["pitch"].view(m), p["roll"].view(m))
    # jaw points: hidden exactly when past the fold; inner points: facing away on a head ellipsoid
    facing = (_head_normals(pts3) * rot[:, 2].unsqueeze(1)).sum(-1) > 0.0
    visibility = torch.where(_JAW_MASK.to(x.device), ~folded, facing)
    xy = rotated[..., :2] * p["scale"].view(m, 1, 1)
    lo, hi = xy.amin(1), xy.amax(1)  # (m, 2)
    margin = 2.0
    # centre the landmark box on the jittered target, keeping every point inside [margin, S-1-margin]
    shift = target - (lo + hi) / 2
    shift_min = margin - lo
    shift_max = (size - 1 - margin) - hi
    shift = torch.maximum(torch.minimum(shift, shift_max), shift_min)
    # a face larger than the canvas (impossible with the scale range above) would still be centred
    shift = torch.where(shift_min > shift_max, (shift_min + shift_max) / 2, shift)
    return (xy + shift.unsqueeze(1)).to(torch.float32), visibility, shift


# pose angles that drift along a track: (name, step std relative to pose_step)
_TRACK_POSE = (("yaw", 1.0), ("pitch", 0.5), ("roll", 0.5))
# expression parameters that drift along a track: (name, step std per frame, rest value, lower, upper bound)
_TRACK_EXPRESSION = (
    ("mouth_open", 0.06, 0.2, 0.0, 1.0),
    ("smile", 0.06, 0.3, -0.4, 1.0),
    ("brow_raise", 0.08, 0.0, -1.0, 1.0),
    ("eye_open", 0.04, 1.0, 0.15, 1.35),
)


def synthetic_face_tracks(
    num_tracks: int,
    num_frames: int,
    *,
    generator: torch.Generator | None = None,
    image_size: int = 256,
    pose_step: float = 2.0,
    expression_step: float = 1.0,
    max_yaw: float = 40.0,
    pose_std: tuple[float, float, float] = (15.0, 6.0, 6.0),
    reversion: float = 0.05,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Short landmark "videos": one identity per track, pose and expression drifting frame to frame.

    Each track draws the identity (face shape, per-point jitter) and a starting pose/expression as
    :func:`synthetic_faces` does, then takes ``num_frames - 1`` small steps of an Ornstein-Uhlenbeck walk
    ``x ← x + reversion·(μ − x) + ε``: yaw, pitch and roll drift towards the frontal pose with
    ``ε ~ N(0, pose_step)`` degrees (half of it for pitch and roll), the expression parameters (mouth
    opening, smile, brow raise, eye opening) towards a resting expression with small Gaussian steps
    scaled by ``expression_step``; everything is clamped to its range. The drift makes the expected next
    frame a (nearly linear) function of the current one, which a local transformation can learn. Every
    frame is re-centred on the canvas like a face tracker's crop. This is the embedded stand-in for the
    tracked face videos (300VW) used to learn local transformations (Chrysos et al., *Visual Data
    Augmentation through Learning*, 2018, §4.1).

    Args:
        num_tracks: number of tracks ``V`` (``>= 0``).
        num_frames: frames per track ``T`` (``>= 1``).
        generator: source of randomness (same state, same tracks).
        image_size: canvas side ``S`` in pixels.
        pose_step: standard deviation of the per-frame yaw step in degrees (``>= 0``).
        expression_step: multiplier of the per-frame expression steps (``>= 0``).
        max_yaw: largest absolute yaw in degrees along the track.
        pose_std: standard deviations in degrees of the starting yaw, pitch and roll.
        reversion: drift rate towards the frontal pose / resting expression per frame, in ``[0, 1]``.

    Returns:
        ``(landmarks, params)``: ``(V, T, 68, 2)`` float32 pixel coordinates, and a dict of ``(V, T)``
        float32 parameters (``yaw``, ``pitch``, ``roll`` in radians, ``scale``, identity and expression
        entries as in :func:`synthetic_faces`).

    Example:
        >>> lm, params = synthetic_face_tracks(2, 5, generator=torch.Generator().manual_seed(0))
        >>> lm.shape, params["yaw"].shape
        (torch.Size([2, 5, 68, 2]), torch.Size([2, 5]))
    """
    for name, value, low in (("num_tracks", num_tracks, 0), ("num_frames", num_frames, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    if not pose_step >= 0:
        raise ValueError(f"pose_step must be >= 0 degrees, got {pose_step}")
    if not expression_step >= 0:
        raise ValueError(f"expression_step must be >= 0, got {expression_step}")
    if not 0.0 <= max_yaw <= 80.0:
        raise ValueError(f"max_yaw must be in [0, 80] degrees, got {max_yaw}")
    if len(pose_std) != 3 or any(float(v) < 0 for v in pose_std):
        raise ValueError(f"pose_std must be three non-negative degrees (yaw, pitch, roll), got {pose_std}")
    if not 0.0 <= reversion <= 1.0:
        raise ValueError(f"reversion must be in [0, 1], got {reversion}")
    check_generator(generator)
    g = generator
    v, t = num_tracks, num_frames
    p = _draw_parameters(v, g, 1.0, max_yaw, pose_std, float(image_size))
    jitter = 0.012 * torch.randn(v, NUM_FACE_LANDMARKS, 3, generator=g, dtype=torch.float64)
    target = (image_size - 1) / 2 + 0.03 * image_size * torch.randn(v, 2, generator=g, dtype=torch.float64)
    p["eye_open"] = p["eye_open"].clamp_min(0.6)  # tracks start with open eyes
    frames = {k: val.expand(v, t).clone() for k, val in p.items()}  # identity: constant along the track
    step = math.radians(pose_step)
    limits = {"yaw": math.radians(max_yaw), "pitch": _MAX_PITCH, "roll": _MAX_ROLL}
    walks = [(name, scale * step, 0.0, -limits[name], limits[name]) for name, scale in _TRACK_POSE]
    walks += [(name, expression_step * std, mu, lo, hi) for name, std, mu, lo, hi in _TRACK_EXPRESSION]
    for name, std, mu, lo, hi in walks:
        noise = std * torch.randn(v, t - 1, generator=g, dtype=torch.float64)
        path = [p[name].view(v)]
        for j in range(t - 1):  # Ornstein-Uhlenbeck: drift towards mu, Gaussian step
            path.append((path[-1] + reversion * (mu - path[-1]) + noise[:, j]).clamp(lo, hi))
        frames[name] = torch.stack(path, 1)
    flat = {k: val.reshape(v * t, 1) for k, val in frames.items()}
    jit = jitter.repeat_interleave(t, 0)
    tgt = target.repeat_interleave(t, 0)
    landmarks = torch.empty(v * t, NUM_FACE_LANDMARKS, 2, dtype=torch.float32)
    for start in range(0, v * t, _CHUNK):
        sl = slice(start, min(v * t, start + _CHUNK))
        chunk = {k: val[sl] for k, val in flat.items()}
        landmarks[sl] = _project(chunk, jit[sl], tgt[sl], float(image_size))[0]
    params = {k: val.to(torch.float32) for k, val in frames.items()}
    return landmarks.view(v, t, NUM_FACE_LANDMARKS, 2), params

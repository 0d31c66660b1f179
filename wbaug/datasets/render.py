"""Vectorised drawing of simple face images from 68-point landmarks (iBUG layout).

The renderer fills polygons built from the landmarks, so that every landmark lies on visible image
structure: the skin region is bounded by the jaw (0-16) and a forehead arc above the brows, the brows
(17-26) are thick strokes, the nose bridge (27-30) and nostril line (31-35) are darker strokes, the eyes
(36-47) are white almond shapes with an iris, and the lips (48-59) surround the mouth opening
(60-67). Everything is batched torch code (no Python loop over pixels or faces): polygons are filled
with an even-odd scan-line rule — for each pixel row ``y`` the crossings of the polygon edges are
sorted and a pixel ``(x, y)`` is inside when an odd number of crossings lie left of ``x``.
Pixel centres are at integer coordinates, as for the landmarks.
"""

from __future__ import annotations

import torch

__all__ = ["fill_polygons", "render_faces"]


def fill_polygons(polygons: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rasterise closed polygons with the even-odd rule.

    Args:
        polygons: ``(..., K, 2)`` vertices ``(x, y)`` in pixel coordinates (pixel centres at integers).
            Polygons with fewer vertices can be padded by repeating their last vertex.
        height: output height ``H``.
        width: output width ``W``.

    Returns:
        ``(..., H, W)`` bool masks; pixel ``(x, y)`` is inside when the horizontal ray from it to
        ``-∞`` crosses the boundary an odd number of times (edges are half-open in ``y``).

    Example:
        >>> square = torch.tensor([[1.0, 1.0], [4.0, 1.0], [4.0, 4.0], [1.0, 4.0]])
        >>> fill_polygons(square, 6, 6).sum().item()  # rows 1..3 and columns 1..3
        9
    """
    if polygons.ndim < 2 or polygons.shape[-1] != 2 or polygons.shape[-2] < 3:
        raise ValueError(f"polygons must have shape (..., K >= 3, 2), got {tuple(polygons.shape)}")
    batch = polygons.shape[:-2]
    poly = polygons.reshape(-1, polygons.shape[-2], 2).float()
    a = poly
    b = poly.roll(-1, dims=1)
    ys = torch.arange(height, dtype=poly.dtype, device=poly.device).view(1, height, 1)
    ay, by_ = a[..., 1].unsqueeze(1), b[..., 1].unsqueeze(1)  # (P, 1, K)
    ax, bx = a[..., 0].unsqueeze(1), b[..., 0].unsqueeze(1)
    crosses = (ay <= ys) != (by_ <= ys)  # (P, H, K)
    dy = torch.where(by_ == ay, torch.ones_like(ay), by_ - ay)
    xs = ax + (ys - ay) * (bx - ax) / dy
    xs = torch.where(crosses, xs, torch.full_like(xs, float("inf"))).sort(dim=-1).values
    px = torch.arange(width, dtype=poly.dtype, device=poly.device)
    px = px.expand(xs.shape[0], height, width).contiguous()
    count = torch.searchsorted(xs.contiguous(), px, right=True)
    return (count % 2 == 1).reshape(*batch, height, width)


def _strip(line: torch.Tensor, half_width: torch.Tensor) -> torch.Tensor:
    """Closed polygon ``(B, 2L, 2)`` around a polyline ``(B, L, 2)`` with per-point half widths ``(B, L)``."""
    d = torch.cat([line[:, 1:2] - line[:, 0:1], line[:, 2:] - line[:, :-2], line[:, -1:] - line[:, -2:-1]], 1)
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    normal = torch.stack([-d[..., 1], d[..., 0]], -1) * half_width.unsqueeze(-1)
    return torch.cat([line + normal, (line - normal).flip(1)], 1)


def _pad(polys: list[torch.Tensor], k: int) -> torch.Tensor:
    out = []
    for p in polys:
        if p.shape[1] < k:
            p = torch.cat([p, p[:, -1:].expand(-1, k - p.shape[1], -1)], 1)
        out.append(p)
    return torch.stack(out, 1)  # (B, P, K, 2)


def _rand(b: int, lo: float, hi: float, g: torch.Generator | None, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(b, *shape, generator=g)


def render_faces(
    landmarks: torch.Tensor,
    image_size: int | tuple[int, int] = 256,
    *,
    generator: torch.Generator | None = None,
    noise: float = 3.0,
) -> torch.Tensor:
    """Draw simple face images whose structures pass through the given 68 landmarks.

    Args:
        landmarks: ``(B, 68, 2)`` or ``(68, 2)`` iBUG-68 landmarks in pixel coordinates.
        image_size: ``S`` or ``(H, W)``.
        generator: draws the colours (background, skin, hair, lips, iris), the light gradient and the
            pixel noise; the same generator state gives the same image.
        noise: standard deviation of the additive Gaussian pixel noise (0-255 scale).

    Returns:
        ``(B, 3, H, W)`` (or ``(3, H, W)`` for unbatched input) uint8 images.

    Example:
        >>> from wbaug.datasets import synthetic_faces
        >>> g = torch.Generator().manual_seed(0)
        >>> render_faces(synthetic_faces(2, generator=g, image_size=128), 128, generator=g).shape
        torch.Size([2, 3, 128, 128])
    """
    if not isinstance(landmarks, torch.Tensor):
        raise TypeError(f"landmarks must be a torch.Tensor, got {type(landmarks).__name__}")
    unbatched = landmarks.ndim == 2
    lm = landmarks.unsqueeze(0) if unbatched else landmarks
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must have shape (B, 68, 2) or (68, 2), got {tuple(landmarks.shape)}")
    if not torch.isfinite(lm).all():
        raise ValueError("landmarks must be finite")
    if isinstance(image_size, int):
        height = width = image_size
    else:
        height, width = (int(v) for v in image_size)
    if height < 8 or width < 8:
        raise ValueError(f"image_size must be at least 8 pixels per side, got {image_size}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    g = generator
    lm = lm.detach().float().cpu()
    b = lm.shape[0]

    # geometry from the landmarks: face width and the face's "up" direction
    brows = lm[:, 17:27]
    chin = lm[:, 8]
    up = brows.mean(1) - chin
    face_h = up.norm(dim=-1, keepdim=True).clamp_min(1.0)  # (B, 1)
    up = up / face_h
    face_w = (lm[:, 16] - lm[:, 0]).norm(dim=-1, keepdim=True).clamp_min(1.0)
    dome = 1.0 - torch.linspace(-1.0, 1.0, 10).square()  # (10,)
    forehead = brows.flip(1) + up.unsqueeze(1) * face_h.unsqueeze(-1) * (0.22 + 0.2 * dome).view(1, 10, 1)
    top_r = lm[:, 16:17] + up.unsqueeze(1) * face_h.unsqueeze(-1) * 0.12
    top_l = lm[:, 0:1] + up.unsqueeze(1) * face_h.unsqueeze(-1) * 0.12
    arc = torch.cat([top_r, forehead, top_l], 1)  # right -> left over the forehead
    head = torch.cat([lm[:, 0:17], arc], 1)
    hair_arc = arc + up.unsqueeze(1) * face_h.unsqueeze(-1) * _rand(b, 0.12, 0.3, g, 1, 1)
    hair = torch.cat([arc.flip(1), hair_arc], 1)

    stroke = face_w * 0.022  # (B, 1)
    brow_w = stroke * _rand(b, 1.2, 2.0, g, 1) * torch.tensor([0.6, 1.0, 1.0, 0.9, 0.7])
    brow_r = _strip(lm[:, 17:22], brow_w)
    brow_l = _strip(lm[:, 22:27], brow_w.flip(1))
    bridge = _strip(lm[:, 27:31], stroke.expand(b, 4) * 0.7)
    nostrils = _strip(lm[:, 31:36], stroke.expand(b, 5) * 0.8)
    nose_shade = lm[:, [27, 31, 32, 33, 34, 35]]
    eye_r, eye_l = lm[:, 36:42], lm[:, 42:48]
    angles = torch.linspace(0.0, 2 * torch.pi, 13)[:-1]
    circle = torch.stack([angles.cos(), angles.sin()], -1)  # (12, 2)
    iris_r_rad = 0.28 * (lm[:, 39] - lm[:, 36]).norm(dim=-1).view(b, 1, 1)
    iris_l_rad = 0.28 * (lm[:, 45] - lm[:, 42]).norm(dim=-1).view(b, 1, 1)
    iris_r = eye_r.mean(1, keepdim=True) + iris_r_rad * circle
    iris_l = eye_l.mean(1, keepdim=True) + iris_l_rad * circle
    lips = lm[:, 48:60]
    mouth = lm[:, 60:68]
    polys = [
        head,
        hair,
        nose_shade,
        bridge,
        nostrils,
        eye_r,
        eye_l,
        iris_r,
        iris_l,
        brow_r,
        brow_l,
        lips,
        mouth,
    ]
    k = max(p.shape[1] for p in polys)
    masks = fill_polygons(_pad(polys, k), height, width)  # (B, P, H, W)
    masks[:, 7] &= masks[:, 5]  # irises inside the eye openings
    masks[:, 8] &= masks[:, 6]
    masks[:, 1] &= torch.rand(b, 1, 1, generator=g) < 0.8  # some faces are bald

    # colours (0-255): background, skin, hair, lips, iris, eye white, mouth cavity; the background and the
    # brows/hair keep a clear contrast to the skin so the jaw and brow landmarks lie on visible edges
    skin = torch.tensor([224.0, 172.0, 140.0]) * _rand(b, 0.45, 1.1, g, 1) + _rand(b, -12.0, 12.0, g, 3)
    skin_lum = skin.mean(1, keepdim=True)
    bg_raw = _rand(b, 0.2, 1.0, g, 3)
    sign = torch.where(torch.rand(b, 1, generator=g) < 0.5, -1.0, 1.0)
    target = skin_lum + sign * _rand(b, 55.0, 110.0, g, 1)
    target = torch.where((target < 15.0) | (target > 240.0), skin_lum - sign * (target - skin_lum), target)
    bg = (bg_raw / bg_raw.mean(1, keepdim=True) * target.clamp(15.0, 240.0)).clamp(0.0, 255.0)
    hair_c = skin * _rand(b, 0.15, 0.5, g, 1) * (1.0 + _rand(b, -0.2, 0.2, g, 3))
    lips_c = skin * torch.tensor([0.85, 0.55, 0.55]) + _rand(b, -10.0, 10.0, g, 3)
    iris_c = _rand(b, 20.0, 140.0, g, 3)
    white = torch.full((b, 3), 235.0)
    cavity = torch.full((b, 3), 40.0)
    colours = torch.stack(
        [
            skin,
            hair_c,
            skin * 0.85,
            skin * 0.6,
            skin * 0.55,
            white,
            white,
            iris_c,
            iris_c,
            hair_c,
            hair_c,
            lips_c,
            cavity,
        ],
        1,
    )  # (B, P, 3)
    img = bg.view(b, 3, 1, 1).expand(b, 3, height, width).clone()
    for j in range(masks.shape[1]):
        img = torch.where(masks[:, j].unsqueeze(1), colours[:, j].view(b, 3, 1, 1), img)
    # soft light gradient, one smoothing pass (anti-aliasing) and sensor noise
    yy = torch.linspace(-1.0, 1.0, height).view(1, height, 1)
    xx = torch.linspace(-1.0, 1.0, width).view(1, 1, width)
    grad = _rand(b, -0.15, 0.15, g, 2)
    light = 1.0 + grad[:, 0].view(b, 1, 1) * xx + grad[:, 1].view(b, 1, 1) * yy
    img = img * light.unsqueeze(1)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    kernel = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
    img = torch.nn.functional.conv2d(
        torch.nn.functional.pad(img, (1, 1, 1, 1), mode="replicate"), kernel, groups=3
    )
    if noise > 0:
        img = img + noise * torch.randn(img.shape, generator=g)
    out = img.round().clamp(0, 255).to(torch.uint8)
    return out[0] if unbatched else out

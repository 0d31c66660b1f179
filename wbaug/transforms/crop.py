"""Face crop around a bounding box (Bernal, equivariant-landmark-loss thesis, §3.3.1, eqs. 3.3-3.6).

Given a face box with top-left corner ``(x, y)`` and size ``w × h``, a target distance ``t_d`` (1.6 in
the thesis) and an output size ``w' × h'``, the crop is the axis-aligned similarity

.. math::

    s = t_d \\max(w, h), \\qquad (x_0, y_0) = (x + w/2,\\; y + h/2), \\qquad μ_x = w'/s,\\; μ_y = h'/s,

    C = \\begin{pmatrix} μ_x & 0 & x'_0 - μ_x x_0 \\\\ 0 & μ_y & y'_0 - μ_y y_0 \\\\ 0 & 0 & 1 \\end{pmatrix},

mapping original pixel coordinates to crop pixel coordinates. wbaug uses pixel centres at integers,
so the crop centre is ``(x'_0, y'_0) = ((w' - 1)/2, (h' - 1)/2)``: the window ``[x_0 - s/2, x_0 + s/2]``
maps exactly onto the output extent ``[-0.5, w' - 0.5]``. (The thesis's eq. 3.3 reads
``y_0 = x + h/2``, a typo for ``y + h/2``.) Its "Translation" augmentor (eq. 3.1) moves the box centre by
``Δ ~ U(-r·w, r·w) × U(-r·h, r·h)`` before cropping; ``translate=r`` does the same, with ``w, h`` the box
size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from wbaug._checks import check_generator

__all__ = ["FaceCrop", "face_crop", "face_crop_matrix", "warp_affine_crop"]


def _size2(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in size):
        raise ValueError(f"{name} must be an int >= 2 or a pair (height, width) of ints >= 2, got {size!r}")
    return int(size[0]), int(size[1])


def face_crop_matrix(
    boxes: Tensor,
    size: int | Sequence[int],
    *,
    scale: float = 1.6,
    offset: Tensor | None = None,
) -> Tensor:
    """The crop matrices ``C`` (thesis eq. 3.6) for XYXY boxes.

    Args:
        boxes: ``(B, 4)`` or ``(4,)`` boxes ``(x_min, y_min, x_max, y_max)`` in pixel coordinates.
        size: output ``(h', w')`` (or one int for a square crop).
        scale: target distance ``t_d``: the crop side is ``t_d · max(w, h)``.
        offset: optional ``(B, 2)`` shift of the box centre in pixels (the translation augmentor).

    Returns:
        ``(B, 3, 3)`` (or ``(3, 3)``) homogeneous maps from original to crop pixel coordinates,
        in the dtype/device of ``boxes`` (floating).

    Example:
        >>> face_crop_matrix(torch.tensor([10.0, 20.0, 60.0, 60.0]), 128, scale=1.0)[0]
        tensor([  2.5600,   0.0000, -26.1000])
    """
    if not isinstance(boxes, Tensor):
        raise TypeError(f"boxes must be a torch.Tensor, got {type(boxes).__name__}")
    unbatched = boxes.ndim == 1
    b = boxes.unsqueeze(0) if unbatched else boxes
    if b.ndim != 2 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (B, 4) or (4,), got {tuple(boxes.shape)}")
    if not b.is_floating_point():
        b = b.float()
    if not torch.isfinite(b).all():
        raise ValueError("boxes must be finite")
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    if (w <= 0).any() or (h <= 0).any():
        raise ValueError("boxes must have x_max > x_min and y_max > y_min")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    oh, ow = _size2(size)
    side = scale * torch.maximum(w, h)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    if offset is not None:
        off = torch.as_tensor(offset, dtype=b.dtype, device=b.device).reshape(-1, 2)
        cx, cy = cx + off[:, 0], cy + off[:, 1]
    mx, my = ow / side, oh / side
    mat = torch.zeros(b.shape[0], 3, 3, dtype=b.dtype, device=b.device)
    mat[:, 0, 0] = mx
    mat[:, 1, 1] = my
    mat[:, 0, 2] = (ow - 1) / 2 - mx * cx
    mat[:, 1, 2] = (oh - 1) / 2 - my * cy
    mat[:, 2, 2] = 1.0
    return mat[0] if unbatched else mat


def warp_affine_crop(
    image: Tensor, matrix: Tensor, size: int | Sequence[int], *, fill: float = 0.0
) -> Tensor:
    """Warp ``(B, C, H, W)`` / ``(C, H, W)`` images with ``(B, 3, 3)`` / ``(3, 3)`` affine maps (bilinear).

    Output pixel ``u`` samples the input at ``C^{-1} u`` (pixel centres at integers); outside pixels get
    ``fill``. Integer images are rounded back to their dtype.
    """
    oh, ow = _size2(size)
    unbatched = image.ndim == 3
    img = image.unsqueeze(0) if unbatched else image
    mat = matrix.unsqueeze(0) if matrix.ndim == 2 else matrix
    if img.ndim != 4 or mat.shape[-2:] != (3, 3) or mat.shape[0] not in (1, img.shape[0]):
        raise ValueError(
            "image (B, C, H, W) and matrix (B, 3, 3) expected, "
            f"got {tuple(image.shape)}, {tuple(matrix.shape)}"
        )
    dtype = img.dtype
    work = img.float() if not img.is_floating_point() else img
    inv = torch.linalg.inv(mat.to(torch.float64)).to(work.dtype)
    vs, us = torch.meshgrid(
        torch.arange(oh, dtype=work.dtype, device=img.device),
        torch.arange(ow, dtype=work.dtype, device=img.device),
        indexing="ij",
    )
    pts = torch.stack([us, vs, torch.ones_like(us)], -1).view(1, oh * ow, 3)
    src = pts @ inv.transpose(1, 2)  # (B, P, 3)
    h, w = img.shape[-2:]
    gx = 2 * src[..., 0] / max(w - 1, 1) - 1
    gy = 2 * src[..., 1] / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], -1).view(-1, oh, ow, 2).expand(img.shape[0], oh, ow, 2)
    if fill == 0.0:
        out = F.grid_sample(work, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    else:
        ones = torch.ones_like(work[:, :1])
        out = F.grid_sample(
            torch.cat([work, ones], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        out, cover = out[:, :-1], out[:, -1:]
        out = out + (1 - cover) * fill
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        out = out.round().clamp(info.min, info.max).to(dtype)
    return out[0] if unbatched else out


def face_crop(
    image: Tensor,
    landmarks: Tensor | None,
    boxes: Tensor,
    size: int | Sequence[int] = 128,
    *,
    scale: float = 1.6,
    offset: Tensor | None = None,
    fill: float = 0.0,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Crop and resize around face boxes; move the landmarks with the image.

    Args:
        image: ``(B, C, H, W)`` or ``(C, H, W)``.
        landmarks: ``(B, N, 2)`` / ``(N, 2)`` pixel coordinates, or None.
        boxes: ``(B, 4)`` / ``(4,)`` XYXY face boxes.
        size: output ``(h', w')`` or an int.
        scale: target distance ``t_d`` (crop side = ``t_d · max(w, h)``; 1.6 in the thesis).
        offset: optional ``(B, 2)`` box-centre shift in pixels.
        fill: value outside the original image.

    Returns:
        ``(crops, landmarks', C)`` with ``C`` the ``(B, 3, 3)`` (or ``(3, 3)``) matrices.

    Example:
        >>> img = torch.zeros(3, 200, 100); lm = torch.tensor([[50.0, 100.0]])
        >>> crop, lm2, C = face_crop(img, lm, torch.tensor([30.0, 80.0, 70.0, 120.0]), 64)
        >>> crop.shape, lm2  # the box centre lands on the crop centre
        (torch.Size([3, 64, 64]), tensor([[31.5000, 31.5000]]))
    """
    mat = face_crop_matrix(boxes.to(torch.float64), size, scale=scale, offset=offset)
    out = warp_affine_crop(image, mat, size, fill=fill)
    new_lm = None
    if landmarks is not None:
        lm = landmarks.unsqueeze(0) if landmarks.ndim == 2 else landmarks
        m = (mat.unsqueeze(0) if mat.ndim == 2 else mat).to(
            lm.dtype if lm.is_floating_point() else torch.float32
        )
        new_lm = lm @ m[:, :2, :2].transpose(1, 2) + m[:, :2, 2].unsqueeze(1)
        new_lm = new_lm[0] if landmarks.ndim == 2 else new_lm
    return out, new_lm, mat.to(boxes.dtype if boxes.is_floating_point() else torch.float32)


class FaceCrop(v2.Transform):
    """torchvision-v2 face crop (thesis §3.3.1): square crop of side ``scale · max(w, h)`` around the face
    box, resized to ``size``, with optional random box translation.

    The box comes from the sample's ``tv_tensors.BoundingBoxes`` (the first row; wbaug datasets put the
    face box under ``"box"``) or, if there is none, from the extent of its ``tv_tensors.KeyPoints``.
    Images (bilinear), key-points, boxes and masks (nearest) are moved together; canvas sizes are updated;
    other entries pass through. The matrix ``C`` of a draw is :func:`face_crop_matrix` of the box.

    Args:
        size: output ``(h', w')`` or an int (128 in the thesis).
        scale: target distance ``t_d`` (1.6 in the thesis).
        translate: ``r``: the box centre moves by ``U(-r·w, r·w)``, ``U(-r·h, r·h)`` (0.05 in the thesis).
        fill: value outside the original image.
        generator: random source of the translation.

    Example:
        >>> from wbaug.datasets import SyntheticFaces
        >>> ds = SyntheticFaces(2, image_size=256, transforms=FaceCrop(128))
        >>> sample = ds[0]
        >>> sample["image"].shape, sample["landmarks"].canvas_size
        (torch.Size([3, 128, 128]), (128, 128))
    """

    def __init__(
        self,
        size: int | Sequence[int] = 128,
        scale: float = 1.6,
        translate: float = 0.0,
        *,
        fill: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.size = _size2(size)
        if not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        if not isinstance(translate, (int, float)) or translate < 0:
            raise ValueError(f"translate must be a non-negative number, got {translate!r}")
        check_generator(generator)
        self.scale = float(scale)
        self.translate = float(translate)
        self.fill = float(fill)
        self.generator = generator

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        box = None
        for inpt in flat_inputs:
            if isinstance(inpt, tv_tensors.BoundingBoxes):
                fmt = inpt.format
                xyxy = v2.functional.convert_bounding_box_format(
                    inpt.as_subclass(Tensor), old_format=fmt, new_format=tv_tensors.BoundingBoxFormat.XYXY
                )
                box = xyxy.reshape(-1, 4)[0].to(torch.float64)
                break
        if box is None:
            for inpt in flat_inputs:
                if isinstance(inpt, tv_tensors.KeyPoints):
                    pts = inpt.as_subclass(Tensor).reshape(-1, 2).to(torch.float64)
                    box = torch.cat([pts.amin(0), pts.amax(0)])
                    break
        if box is None:
            raise ValueError(
                "FaceCrop needs a tv_tensors.BoundingBoxes or tv_tensors.KeyPoints in the sample"
            )
        offset = None
        if self.translate > 0:
            wh = box[2:] - box[:2]
            u = torch.rand(2, generator=self.generator, dtype=torch.float64) * 2 - 1
            offset = (u * self.translate * wh).view(1, 2)
        matrix = face_crop_matrix(box.cpu(), self.size, scale=self.scale, offset=offset)
        return {"matrix": matrix}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        mat: Tensor = params["matrix"]
        oh, ow = self.size
        if isinstance(inpt, tv_tensors.KeyPoints):
            data = inpt.as_subclass(Tensor)
            m = mat.to(device=data.device, dtype=data.dtype if data.is_floating_point() else torch.float32)
            out = data @ m[:2, :2].T + m[:2, 2]
            return tv_tensors.KeyPoints(out, canvas_size=(oh, ow))
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            fmt = inpt.format
            xyxy = v2.functional.convert_bounding_box_format(
                inpt.as_subclass(Tensor), old_format=fmt, new_format=tv_tensors.BoundingBoxFormat.XYXY
            )
            m = mat.to(device=xyxy.device, dtype=xyxy.dtype if xyxy.is_floating_point() else torch.float32)
            lo = xyxy[..., :2] * m.diagonal()[:2] + m[:2, 2]
            hi = xyxy[..., 2:] * m.diagonal()[:2] + m[:2, 2]
            out = torch.cat([lo, hi], -1).to(xyxy.dtype)
            out = v2.functional.convert_bounding_box_format(
                out, old_format=tv_tensors.BoundingBoxFormat.XYXY, new_format=fmt
            )
            return tv_tensors.BoundingBoxes(out, format=fmt, canvas_size=(oh, ow))
        if isinstance(inpt, tv_tensors.Mask):
            data = inpt.as_subclass(Tensor)
            flat = data.reshape(-1, 1, *data.shape[-2:]).float()
            warped = _warp_nearest(flat, mat.to(data.device), (oh, ow))
            return tv_tensors.Mask(warped.reshape(*data.shape[:-2], oh, ow).to(data.dtype))
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Video)) or (
            isinstance(inpt, Tensor) and not isinstance(inpt, tv_tensors.TVTensor)
        ):
            data = inpt.as_subclass(Tensor)
            flat = data.reshape(-1, *data.shape[-3:])
            out = warp_affine_crop(
                flat, mat.to(data.device).expand(flat.shape[0], 3, 3), (oh, ow), fill=self.fill
            )
            out = out.reshape(*data.shape[:-2], oh, ow)
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out
        return inpt

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, translate={self.translate}"


def _warp_nearest(img: Tensor, matrix: Tensor, size: tuple[int, int]) -> Tensor:
    oh, ow = size
    inv = torch.linalg.inv(matrix.to(torch.float64)).to(img.dtype)
    vs, us = torch.meshgrid(
        torch.arange(oh, dtype=img.dtype, device=img.device),
        torch.arange(ow, dtype=img.dtype, device=img.device),
        indexing="ij",
    )
    src = torch.stack([us, vs, torch.ones_like(us)], -1) @ inv.T
    h, w = img.shape[-2:]
    grid = torch.stack([2 * src[..., 0] / max(w - 1, 1) - 1, 2 * src[..., 1] / max(h - 1, 1) - 1], -1)
    grid = grid.unsqueeze(0).expand(img.shape[0], oh, ow, 2)
    return F.grid_sample(img, grid, mode="nearest", padding_mode="zeros", align_corners=True)

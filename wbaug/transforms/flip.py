"""Landmark-aware horizontal flip for torchvision v2 pipelines (and as a functional).

torchvision's ``RandomHorizontalFlip`` mirrors key-point coordinates (``x -> W - 1 - x``, the pixel-centre
convention used throughout wbaug) but keeps their indices, so after a flip "left eye" holds the right
eye. :class:`LandmarkHorizontalFlip` also permutes the points with a layout's ``flip_indices``
(``out[i] = mirror(in[flip_indices[i]])``), and permutes per-landmark :class:`Visibility` flags the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from wbaug._checks import check_generator
from wbaug.landmarks._checks import check_flip_indices
from wbaug.landmarks.geometry import flip_landmarks
from wbaug.landmarks.layouts import LandmarkLayout, get_layout
from wbaug.landmarks.tracking import ProbeKeyPoints

__all__ = ["Visibility", "LandmarkHorizontalFlip", "horizontal_flip_landmarks", "resolve_flip_indices"]


class Visibility(tv_tensors.TVTensor):
    """Per-landmark visibility flags ``(..., N)`` (bool or float) as a torchvision ``TVTensor``.

    Other v2 transforms pass it through untouched; :class:`LandmarkHorizontalFlip` permutes it with the
    landmarks, and :class:`wbaug.transforms.MultiViewTransform` updates it per view.

    Example:
        >>> Visibility(torch.ones(68, dtype=torch.bool)).shape
        torch.Size([68])
    """

    @classmethod
    def _wrap(cls, tensor: Tensor) -> Visibility:
        return tensor.as_subclass(cls)

    def __new__(
        cls,
        data: Any,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | int | None = None,
        requires_grad: bool | None = None,
    ) -> Visibility:
        tensor = cls._to_tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        return cls._wrap(tensor)


def resolve_flip_indices(flip_indices: str | LandmarkLayout | Sequence[int] | Tensor) -> Tensor:
    """A layout name / :class:`LandmarkLayout` / explicit permutation -> validated long tensor ``(N,)``."""
    if isinstance(flip_indices, (str, LandmarkLayout)):
        return get_layout(flip_indices).flip_tensor()
    if isinstance(flip_indices, Tensor):
        return check_flip_indices(flip_indices, flip_indices.numel())
    if isinstance(flip_indices, Sequence):
        return check_flip_indices(flip_indices, len(flip_indices))
    raise TypeError(
        "flip_indices must be a layout name, a LandmarkLayout or a sequence of ints, "
        f"got {type(flip_indices).__name__}"
    )


def _permute_points(points: Tensor, idx: Tensor, name: str) -> Tensor:
    if points.ndim < 2 or points.shape[-2] != idx.numel():
        raise ValueError(
            f"{name} has {points.shape[-2] if points.ndim >= 2 else 'no'} landmarks along dim -2 but "
            f"flip_indices has length {idx.numel()}"
        )
    return points[..., idx.to(points.device), :]


def _permute_visibility(vis: Tensor, idx: Tensor) -> Tensor:
    if vis.ndim < 1 or vis.shape[-1] != idx.numel():
        raise ValueError(f"visibility has {vis.shape[-1]} entries but flip_indices has length {idx.numel()}")
    return vis[..., idx.to(vis.device)]


def horizontal_flip_landmarks(
    image: Tensor | None,
    landmarks: Tensor,
    flip_indices: str | LandmarkLayout | Sequence[int] | Tensor,
    *,
    width: int | None = None,
    visibility: Tensor | None = None,
) -> tuple[Tensor | None, Tensor] | tuple[Tensor | None, Tensor, Tensor]:
    """Functional landmark-aware mirror: flip ``image`` and map ``landmarks[..., i, :]`` to
    ``mirror(landmarks[..., flip_indices[i], :])`` with ``mirror(x, y) = (W - 1 - x, y)``.

    Args:
        image: ``(..., C, H, W)`` tensor (or ``tv_tensors.Image``), or ``None`` when only points flip.
        landmarks: ``(..., N, 2)`` tensor or ``tv_tensors.KeyPoints``.
        flip_indices: layout name (``"ibug68"``, ``"wflw98"``, ``"celeba5"``), layout, or permutation.
        width: image width; required when ``image`` is ``None`` and ``landmarks`` are not ``KeyPoints``.
        visibility: optional ``(..., N)`` flags, permuted the same way.

    Returns:
        ``(image, landmarks)`` or ``(image, landmarks, visibility)``; tv_tensor types are kept.

    Example:
        >>> img = torch.rand(3, 64, 64)
        >>> pts = torch.rand(68, 2) * 63
        >>> img2, pts2 = horizontal_flip_landmarks(img, pts, "ibug68")
        >>> torch.allclose(pts2[45], torch.stack([63 - pts[36, 0], pts[36, 1]]))
        True
    """
    idx = resolve_flip_indices(flip_indices)
    if isinstance(landmarks, tv_tensors.KeyPoints):
        w = landmarks.canvas_size[1]
    elif image is not None:
        w = image.shape[-1]
    elif width is not None:
        w = width
    else:
        raise ValueError("width is required when image is None and landmarks are not tv_tensors.KeyPoints")
    out_img = None if image is None else F.horizontal_flip(image)
    out = flip_landmarks(landmarks.as_subclass(Tensor), w)
    out = _permute_points(out, idx, "landmarks")
    if isinstance(landmarks, tv_tensors.KeyPoints):
        out = tv_tensors.wrap(out, like=landmarks)
    if visibility is None:
        return out_img, out
    vis = _permute_visibility(visibility.as_subclass(Tensor), idx)
    if isinstance(visibility, Visibility):
        vis = Visibility(vis)
    return out_img, out, vis


class LandmarkHorizontalFlip(v2.Transform):
    """Random horizontal flip that swaps left/right landmark indices (torchvision v2 transform).

    Images, videos, masks and boxes are flipped like ``v2.RandomHorizontalFlip``; ``tv_tensors.KeyPoints``
    ``(..., N, 2)`` are mirrored and permuted along the point dimension ``-2``; :class:`Visibility`
    ``(..., N)`` is permuted. The coin is drawn in :meth:`make_params` from ``generator`` (the global
    RNG when ``None``), so one draw applies to every input of a sample.

    Args:
        flip_indices: layout name, :class:`~wbaug.landmarks.LandmarkLayout` or involutive permutation.
        p: flip probability.
        generator: optional ``torch.Generator`` for the coin.

    Example:
        >>> from torchvision import tv_tensors
        >>> t = LandmarkHorizontalFlip("ibug68", p=1.0)
        >>> img = tv_tensors.Image(torch.rand(3, 64, 64))
        >>> kp = tv_tensors.KeyPoints(torch.rand(68, 2) * 63, canvas_size=(64, 64))
        >>> img2, kp2 = t(img, kp)
        >>> torch.allclose(kp2[36, 0], 63 - kp[45, 0])
        True

    Reference: multi-step augmentation of the ELT thesis, §3.3.1 ("Flip").
    """

    def __init__(
        self,
        flip_indices: str | LandmarkLayout | Sequence[int] | Tensor,
        p: float = 0.5,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        check_generator(generator)
        self.flip_indices = resolve_flip_indices(flip_indices)
        self.p = float(p)
        self.generator = generator

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        flip = bool(torch.rand((), generator=self.generator) < self.p)
        return {"flip": flip}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["flip"]:
            return inpt
        if isinstance(inpt, ProbeKeyPoints):  # matrix probes of wbaug.landmarks.tracking: mirror only
            return F.horizontal_flip(inpt)
        if isinstance(inpt, tv_tensors.KeyPoints):
            flipped = F.horizontal_flip(inpt).as_subclass(Tensor)
            return tv_tensors.wrap(_permute_points(flipped, self.flip_indices, "KeyPoints"), like=inpt)
        if isinstance(inpt, Visibility):
            return Visibility(_permute_visibility(inpt.as_subclass(Tensor), self.flip_indices))
        return self._call_kernel(F.horizontal_flip, inpt)

    def extra_repr(self) -> str:
        return f"num_points={self.flip_indices.numel()}, p={self.p}"

"""Key-points at the end of a pipeline: :class:`SanitizeLandmarks` (off-canvas points become invisible or
are removed, as torchvision's sanitising transforms and albumentations' ``remove_invisible`` do) and
:func:`landmark_collate` (a DataLoader ``collate_fn`` that keeps ``KeyPoints`` with their canvas size
and :class:`~wbaug.transforms.Visibility` flags instead of dropping the types)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

from wbaug.transforms.flip import Visibility

__all__ = ["SanitizeLandmarks", "landmark_collate", "on_canvas"]


def on_canvas(points: Tensor, canvas_size: tuple[int, int]) -> Tensor:
    """``(..., N)`` bool: finite points inside the image ``x in [-0.5, W - 0.5]``, ``y in [-0.5, H - 0.5]``
    (pixel centres at integers) of ``points (..., N, 2)``.

    Example:
        >>> on_canvas(torch.tensor([[0.0, 0.0], [-1.0, 3.0], [9.4, 4.0]]), (5, 10))
        tensor([ True, False,  True])
    """
    h, w = int(canvas_size[0]), int(canvas_size[1])
    x, y = points[..., 0], points[..., 1]
    return torch.isfinite(points).all(-1) & (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)


class SanitizeLandmarks(v2.Transform):
    """Deal with key-points that left the canvas (after a crop, affine or barycentric warp).

    Args:
        mode: ``"invisible"`` (ordered layouts: keep every landmark, set its ``Visibility`` flag to
            ``False``; the sample must carry a :class:`~wbaug.transforms.Visibility` ``(N,)`` or
            ``(B, N)``) or ``"remove"`` (unordered key-points ``(N, 2)``: drop the points and their flags).

    Example:
        >>> kp = tv_tensors.KeyPoints(torch.tensor([[1.0, 1.0], [20.0, 1.0]]), canvas_size=(8, 8))
        >>> vis = Visibility(torch.ones(2, dtype=torch.bool))
        >>> SanitizeLandmarks("invisible")(kp, vis)[1]
        Visibility([ True, False])
    """

    def __init__(self, mode: Literal["invisible", "remove"] = "invisible") -> None:
        super().__init__()
        if mode not in ("invisible", "remove"):
            raise ValueError(f"mode must be 'invisible' or 'remove', got {mode!r}")
        self.mode = mode

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        keypoints = [x for x in flat_inputs if isinstance(x, tv_tensors.KeyPoints)]
        flags = [x for x in flat_inputs if isinstance(x, Visibility)]
        if len(keypoints) != 1 or len(flags) > 1:
            raise ValueError(
                "SanitizeLandmarks needs exactly one KeyPoints and at most one Visibility per sample, found "
                f"{len(keypoints)} and {len(flags)}"
            )
        kp = keypoints[0]
        inside = on_canvas(kp.as_subclass(Tensor), kp.canvas_size)
        if flags and tuple(flags[0].shape) != tuple(inside.shape):
            raise ValueError(
                f"Visibility of shape {tuple(flags[0].shape)} does not match KeyPoints {tuple(kp.shape)}"
            )
        if self.mode == "invisible" and not flags:
            raise ValueError(
                "SanitizeLandmarks('invisible') needs a Visibility entry in the sample, e.g. "
                "Visibility(torch.ones(N, dtype=torch.bool)); use mode='remove' to drop points instead"
            )
        if self.mode == "remove" and kp.ndim != 2:
            raise ValueError(
                f"SanitizeLandmarks('remove') takes KeyPoints (N, 2), got {tuple(kp.shape)} "
                "(torchvision's v2.SanitizeKeyPoints removes whole groups)"
            )
        return {"inside": inside}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        inside = params["inside"]
        if isinstance(inpt, Visibility):
            if self.mode == "remove":
                return Visibility(inpt.as_subclass(Tensor)[inside.to(inpt.device)])
            flags = inpt.as_subclass(Tensor)
            return Visibility(
                flags & inside.to(flags.device)
                if flags.dtype == torch.bool
                else flags * inside.to(device=flags.device, dtype=flags.dtype)
            )
        if isinstance(inpt, tv_tensors.KeyPoints) and self.mode == "remove":
            return tv_tensors.wrap(inpt.as_subclass(Tensor)[inside.to(inpt.device)], like=inpt)
        return inpt


def landmark_collate(batch: Sequence[Any]) -> Any:
    """``collate_fn`` for landmark samples: like ``default_collate`` (tuples, dicts, nesting), but
    ``KeyPoints`` are stacked into ``KeyPoints (B, N, 2)`` with their common ``canvas_size``,
    ``Visibility`` into ``Visibility (B, N)``, other ``TVTensor`` types (``Image``, ``Mask``) keep their type,
    and ``BoundingBoxes`` (one count per image) become a list.

    Example:
        >>> sample = (tv_tensors.Image(torch.zeros(3, 8, 8)),
        ...           tv_tensors.KeyPoints(torch.zeros(5, 2), canvas_size=(8, 8)))
        >>> images, keypoints = landmark_collate([sample, sample])
        >>> type(keypoints).__name__, tuple(keypoints.shape), keypoints.canvas_size
        ('KeyPoints', (2, 5, 2), (8, 8))
    """
    if len(batch) == 0:
        raise ValueError("batch must not be empty")
    first = batch[0]
    if isinstance(first, tv_tensors.TVTensor):
        kinds = {type(x) for x in batch}
        if len(kinds) != 1:
            raise TypeError(f"cannot collate a mix of {sorted(k.__name__ for k in kinds)}")
        if isinstance(first, tv_tensors.BoundingBoxes):
            return list(batch)
        if isinstance(first, tv_tensors.KeyPoints):
            canvases = {tuple(x.canvas_size) for x in batch}
            if len(canvases) != 1:
                raise ValueError(
                    f"KeyPoints of one batch must share their canvas_size, got {sorted(canvases)}"
                )
        shapes = {tuple(x.shape) for x in batch}
        if len(shapes) != 1:
            raise ValueError(f"cannot stack {type(first).__name__} of different shapes {sorted(shapes)}")
        return tv_tensors.wrap(torch.stack([x.as_subclass(Tensor) for x in batch]), like=first)
    if isinstance(first, Mapping):
        return {key: landmark_collate([b[key] for b in batch]) for key in first}
    if isinstance(first, tuple) and hasattr(first, "_fields"):  # namedtuple
        return type(first)(*(landmark_collate(list(s)) for s in zip(*batch)))
    if isinstance(first, (tuple, list)) and not isinstance(first, str):
        return (
            [landmark_collate(list(s)) for s in zip(*batch)]
            if isinstance(first, list)
            else tuple(landmark_collate(list(s)) for s in zip(*batch))
        )
    return default_collate(list(batch))

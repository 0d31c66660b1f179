"""Shared sample construction for every wbaug landmark dataset.

A sample is a dict that ``torchvision.transforms.v2`` understands without any adapter::

    {
        "image": tv_tensors.Image,           # uint8 (C, H, W); absent when load_images=False
        "landmarks": tv_tensors.KeyPoints,   # float32 (N, 2), canvas_size=(H, W), pixel centres at integers
        "visibility": Visibility,            # bool (N,) (wbaug.transforms.Visibility TVTensor)
        "box": tv_tensors.BoundingBoxes,     # float32 (1, 4) XYXY face/object box (when the dataset has one)
        "meta": dict,                        # index, path and dataset-specific fields
    }

Geometric v2 transforms move ``image``, ``landmarks`` and ``box`` together; ``visibility`` (a
:class:`wbaug.transforms.Visibility` tensor, permuted by :class:`wbaug.transforms.LandmarkHorizontalFlip`)
and ``meta`` pass through other transforms untouched. The keys match
:class:`wbaug.transforms.MultiViewDataset`. With ``output="tuple"`` a sample is ``(image, landmarks)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors

from wbaug.transforms.flip import Visibility

__all__ = ["LandmarkDataset", "RecordDataset", "landmark_box", "make_sample"]

_OUTPUTS = ("dict", "tuple")


def make_sample(
    keypoints: torch.Tensor,
    canvas_size: tuple[int, int],
    *,
    image: torch.Tensor | None = None,
    visibility: torch.Tensor | None = None,
    box: torch.Tensor | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a sample dict (see the module docstring) from plain tensors.

    Args:
        keypoints: ``(N, 2)`` landmarks in pixel coordinates.
        canvas_size: ``(H, W)`` of the image the landmarks live on.
        image: optional ``(C, H, W)`` image tensor.
        visibility: optional ``(N,)`` bool tensor (all True when omitted).
        box: optional ``(4,)`` XYXY box.
        meta: optional metadata dict.
    """
    h, w = int(canvas_size[0]), int(canvas_size[1])
    kp = torch.as_tensor(keypoints, dtype=torch.float32)
    sample: dict[str, Any] = {}
    if image is not None:
        sample["image"] = tv_tensors.Image(image)
    sample["landmarks"] = tv_tensors.KeyPoints(kp, canvas_size=(h, w))
    if visibility is None:
        visibility = torch.ones(kp.shape[0], dtype=torch.bool)
    sample["visibility"] = Visibility(torch.as_tensor(visibility, dtype=torch.bool))
    if box is not None:
        sample["box"] = tv_tensors.BoundingBoxes(
            torch.as_tensor(box, dtype=torch.float32).reshape(1, 4), format="XYXY", canvas_size=(h, w)
        )
    sample["meta"] = dict(meta or {})
    return sample


def landmark_box(points: torch.Tensor, visibility: torch.Tensor | None = None) -> torch.Tensor:
    """Tight XYXY box ``(4,)`` of the (visible) landmarks ``(N, 2)``."""
    pts = points if visibility is None or not bool(visibility.any()) else points[visibility]
    return torch.cat([pts.amin(0), pts.amax(0)])


class LandmarkDataset(torch.utils.data.Dataset):
    """Base class: subclasses implement ``__len__``, ``_record(index)`` and ``_read_image(index)``.

    ``_record`` returns a dict with ``landmarks`` ``(N, 2)``, ``visibility`` ``(N,)``, optional ``box``
    ``(4,)``, ``canvas_size`` ``(H, W)`` or None (then the image header is read) and ``meta``.

    Args:
        transforms: callable applied to each sample (e.g. a ``v2.Compose``).
        load_images: False skips image decoding (the sample then has no ``"image"``); use
            :meth:`landmarks` to get all landmark sets at once.
        output: ``"dict"`` (default) or ``"tuple"`` for ``(image, keypoints)`` pairs.
    """

    def __init__(
        self,
        *,
        transforms: Callable[[Any], Any] | None = None,
        load_images: bool = True,
        output: str = "dict",
    ) -> None:
        if transforms is not None and not callable(transforms):
            raise TypeError(f"transforms must be callable or None, got {type(transforms).__name__}")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        if output == "tuple" and not load_images:
            raise ValueError("output='tuple' needs load_images=True (the tuple is (image, keypoints))")
        self.transforms = transforms
        self.load_images = bool(load_images)
        self.output = output

    # --- subclass hooks -------------------------------------------------------------------------
    def _record(self, index: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement _record")

    def _read_image(self, index: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement _read_image")

    def _image_size(self, index: int) -> tuple[int, int]:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement _image_size")

    def landmarks(self) -> torch.Tensor | list[torch.Tensor]:
        """All landmark sets without decoding any image: ``(M, N, 2)`` float32 (or a list if N varies)."""
        sets = [self._record(i)["landmarks"] for i in range(len(self))]
        if sets and all(s.shape == sets[0].shape for s in sets):
            return torch.stack(sets).float()
        return [s.float() for s in sets]

    # --- sample assembly -----------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        n = len(self)
        if isinstance(index, torch.Tensor):
            index = int(index)
        if not isinstance(index, int):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return index

    def __getitem__(self, index: int) -> Any:
        index = self._check_index(index)
        rec = self._record(index)
        image = self._read_image(index) if self.load_images else None
        if image is not None:
            canvas = (int(image.shape[-2]), int(image.shape[-1]))
        elif rec.get("canvas_size") is not None:
            canvas = rec["canvas_size"]
        else:
            canvas = self._image_size(index)
        sample = make_sample(
            rec["landmarks"],
            canvas,
            image=image,
            visibility=rec.get("visibility"),
            box=rec.get("box"),
            meta=rec.get("meta"),
        )
        if self.output == "tuple":
            sample = (sample["image"], sample["landmarks"])
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


class RecordDataset(LandmarkDataset):
    """A dataset held as parallel lists parsed from annotation files at construction.

    Args:
        image_paths: one image path per sample (``None`` entries when images are absent).
        keypoints: ``(M, N, 2)`` tensor or list of ``(N_i, 2)`` tensors (0-based pixel coordinates).
        visibility: optional ``(M, N)`` bool tensor or list.
        boxes: optional ``(M, 4)`` XYXY tensor (NaN rows mean "no box").
        metas: optional list of per-sample metadata dicts.
        canvas_size: ``(H, W)`` for samples without an image file (``load_images=False``).
        **kwargs: ``transforms``, ``load_images``, ``output`` of :class:`LandmarkDataset`.
    """

    def __init__(
        self,
        image_paths: list,
        keypoints: torch.Tensor | list[torch.Tensor],
        *,
        visibility: torch.Tensor | list[torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        metas: list[dict[str, Any]] | None = None,
        canvas_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if canvas_size is not None and (len(canvas_size) != 2 or min(int(v) for v in canvas_size) < 1):
            raise ValueError(f"canvas_size must be (H, W) with positive ints, got {canvas_size!r}")
        self._canvas = None if canvas_size is None else (int(canvas_size[0]), int(canvas_size[1]))
        if len(image_paths) != len(keypoints):
            raise ValueError(f"{len(image_paths)} image paths but {len(keypoints)} landmark sets")
        self._paths = list(image_paths)
        self._kps = keypoints
        self._vis = visibility
        self._boxes = boxes
        self._metas = metas if metas is not None else [{} for _ in image_paths]

    def __len__(self) -> int:
        return len(self._paths)

    def landmarks(self) -> torch.Tensor | list[torch.Tensor]:
        """All landmark sets (a copy) without decoding images: ``(M, N, 2)`` or a list of ``(N_i, 2)``."""
        if isinstance(self._kps, torch.Tensor):
            return self._kps.clone()
        sets = [k.clone() for k in self._kps]
        if sets and all(s.shape == sets[0].shape for s in sets):
            return torch.stack(sets)
        return sets

    def image_paths(self) -> list:
        """The image path of every sample."""
        return list(self._paths)

    def _record(self, index: int) -> dict[str, Any]:
        kp = self._kps[index].clone()
        vis = None if self._vis is None else self._vis[index].clone()
        box = None
        if self._boxes is not None and bool(torch.isfinite(self._boxes[index]).all()):
            box = self._boxes[index].clone()
        # "" rather than None for a missing image so that default_collate can batch the metadata
        meta = {"index": index, "path": "" if self._paths[index] is None else str(self._paths[index])}
        meta.update(self._metas[index])
        return {"landmarks": kp, "visibility": vis, "box": box, "canvas_size": None, "meta": meta}

    def _image_path(self, index: int):
        path = self._paths[index]
        if path is None:
            raise FileNotFoundError(
                f"{type(self).__name__}: sample {index} has no image file ({self._metas[index]}); "
                "use load_images=False / landmarks() for landmarks-only access"
            )
        return path

    def _read_image(self, index: int) -> torch.Tensor:
        from wbaug.datasets.io import read_image

        return read_image(self._image_path(index))

    def _image_size(self, index: int) -> tuple[int, int]:
        from wbaug.datasets.io import image_size

        if self._paths[index] is None and self._canvas is not None:
            return self._canvas
        return image_size(self._image_path(index))

"""WFLW reader: 98 landmarks, face boxes and the six attribute flags per face.

Wu et al., "Look at Boundary: A Boundary-Aware Face Alignment Algorithm" (CVPR 2018). Expected layout::

    root/
      WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt
      WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt
      WFLW_images/<event folder>/<image>.jpg

Each annotation line holds 207 whitespace-separated fields::

    x0 y0 ... x97 y97  x_min y_min x_max y_max  pose expression illumination make-up occlusion blur  name

(196 coordinates, a 4-value face box, 6 binary attribute flags, the image path relative to
``WFLW_images``). Coordinates are used as given (0-based pixel positions, fractional).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from wbaug.datasets.base import RecordDataset

__all__ = ["WFLW", "WFLW_ATTRIBUTES", "read_wflw_annotations"]

WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
_FIELDS = 196 + 4 + 6 + 1
_LAYOUT = (
    "207 whitespace-separated fields per line: 196 landmark coordinates (x0 y0 ... x97 y97), "
    "4 box values (x_min y_min x_max y_max), 6 attribute flags (pose expression illumination makeup "
    "occlusion blur, 0/1) and the image name"
)


def read_wflw_annotations(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a WFLW annotation file.

    Returns:
        dict with ``landmarks`` ``(M, 98, 2)`` float32, ``boxes`` ``(M, 4)`` float32 XYXY,
        ``attributes`` ``(M, 6)`` bool (columns :data:`WFLW_ATTRIBUTES`) and ``names`` (list of str).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a line does not have the 207-field layout (the message names file and line).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"WFLW annotation file not found: {p}; expected {_LAYOUT}")
    lms, boxes, attrs, names = [], [], [], []
    for ln, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != _FIELDS:
            raise ValueError(f"{p}: line {ln}: {len(fields)} fields, expected {_LAYOUT}")
        try:
            nums = [float(v) for v in fields[:200]]
            flags = [int(float(v)) for v in fields[200:206]]
        except ValueError:
            raise ValueError(
                f"{p}: line {ln}: non-numeric landmark/box/attribute value; expected {_LAYOUT}"
            ) from None
        if any(f not in (0, 1) for f in flags):
            raise ValueError(f"{p}: line {ln}: attribute flags must be 0 or 1, got {flags}")
        lms.append(nums[:196])
        boxes.append(nums[196:200])
        attrs.append(flags)
        names.append(fields[206])
    if not names:
        raise ValueError(f"{p}: no annotation lines; expected {_LAYOUT}")
    landmarks = torch.tensor(lms, dtype=torch.float32).view(-1, 98, 2)
    if not torch.isfinite(landmarks).all():
        raise ValueError(f"{p}: non-finite landmark coordinates")
    return {
        "landmarks": landmarks,
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "attributes": torch.tensor(attrs, dtype=torch.bool),
        "names": names,
    }


class WFLW(RecordDataset):
    """WFLW faces with 98 landmarks, face boxes and attribute flags.

    Args:
        root: dataset root (layout in the module docstring and docs/datasets.md).
        split: ``"train"`` (7500 faces) or ``"test"`` (2500).
        subset: keep only faces with any of these attributes (one name or a list of
            :data:`WFLW_ATTRIBUTES`) — the per-subset NME protocol; ``None`` keeps all.
        annotation_file: explicit annotation file (overrides the standard location).
        images_dir: folder of images (default ``root/WFLW_images``).
        transforms, load_images, output: see :class:`~wbaug.datasets.base.LandmarkDataset`.

    ``meta`` holds ``name`` and a dict ``attributes`` of bools; :meth:`attributes` gives the
    ``(M, 6)`` table and :meth:`subset_mask` the selection for one attribute.

    Example:
        >>> test_pose = WFLW("/data/WFLW", split="test", subset="pose")  # doctest: +SKIP
        >>> len(test_pose)  # doctest: +SKIP
        326
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        subset: str | Sequence[str] | None = None,
        annotation_file: str | os.PathLike | None = None,
        images_dir: str | os.PathLike | None = None,
        transforms: Callable[[Any], Any] | None = None,
        load_images: bool = True,
        output: str = "dict",
    ) -> None:
        root = Path(root)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if annotation_file is None:
            annotation_file = (
                root
                / "WFLW_annotations"
                / "list_98pt_rect_attr_train_test"
                / f"list_98pt_rect_attr_{split}.txt"
            )
        ann = read_wflw_annotations(annotation_file)
        keep = torch.ones(len(ann["names"]), dtype=torch.bool)
        if subset is not None:
            names = [subset] if isinstance(subset, str) else list(subset)
            bad = [s for s in names if s not in WFLW_ATTRIBUTES]
            if bad or not names:
                raise ValueError(f"subset must be names from {WFLW_ATTRIBUTES}, got {subset!r}")
            cols = [WFLW_ATTRIBUTES.index(s) for s in names]
            keep = ann["attributes"][:, cols].any(1)
        idx = keep.nonzero().flatten().tolist()
        img_root = Path(images_dir) if images_dir is not None else root / "WFLW_images"
        self._attributes = ann["attributes"][keep]
        metas = [
            {"name": ann["names"][i], "attributes": dict(zip(WFLW_ATTRIBUTES, ann["attributes"][i].tolist()))}
            for i in idx
        ]
        super().__init__(
            [img_root / ann["names"][i] for i in idx],
            ann["landmarks"][keep],
            boxes=ann["boxes"][keep],
            metas=metas,
            transforms=transforms,
            load_images=load_images,
            output=output,
        )
        self.root = root
        self.split = split
        self.subset = subset

    def attributes(self) -> torch.Tensor:
        """``(M, 6)`` bool attribute flags (columns :data:`WFLW_ATTRIBUTES`)."""
        return self._attributes.clone()

    def subset_mask(self, name: str) -> torch.Tensor:
        """``(M,)`` bool mask of the faces in attribute subset ``name`` (for NME per subset)."""
        if name not in WFLW_ATTRIBUTES:
            raise ValueError(f"name must be one of {WFLW_ATTRIBUTES}, got {name!r}")
        return self._attributes[:, WFLW_ATTRIBUTES.index(name)].clone()

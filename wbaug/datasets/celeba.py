"""CelebA reader: 5 landmarks (eyes, nose, mouth corners), boxes and the official partition.

Liu et al., "Deep Learning Face Attributes in the Wild" (ICCV 2015). Expected layout (files are looked
up in ``root``, ``root/Anno``, ``root/Eval`` and ``root/Img``, the layouts of the official archive and
of torchvision's ``CelebA``)::

    root/
      img_align_celeba/000001.jpg ...          (aligned 178x218 crops; aligned=True)
      img_celeba/000001.jpg ...                (in-the-wild images; aligned=False)
      list_landmarks_align_celeba.txt          (aligned=True)
      list_landmarks_celeba.txt                (aligned=False)
      list_bbox_celeba.txt                     (boxes of the in-the-wild images)
      list_eval_partition.txt                  (0 train, 1 valid, 2 test)

Landmark files: line 1 = number of images, line 2 = the header ``lefteye_x lefteye_y righteye_x
righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y``, then ``000001.jpg 69 109
106 113 77 142 73 152 108 154``. "left" is the image left. Box file: count, header ``image_id x_1 y_1
width height``, rows ``000001.jpg 95 71 226 313``. Partition file rows: ``000001.jpg 0`` (no header).
Integer coordinates are used as 0-based pixel positions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from wbaug.datasets.base import RecordDataset

__all__ = ["CELEBA_LANDMARKS", "CelebA", "read_celeba_table"]

CELEBA_LANDMARKS = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
_SPLITS = {"train": 0, "valid": 1, "test": 2, "all": None}


def _locate(root: Path, name: str) -> Path:
    for sub in ("", "Anno", "Eval", "Img", "celeba"):
        cand = root / sub / name if sub else root / name
        if cand.exists():
            return cand
    raise FileNotFoundError(
        f"CelebA file {name!r} not found under {root} (looked in ., Anno/, Eval/, Img/, celeba/)"
    )


def read_celeba_table(
    path: str | os.PathLike, num_values: int, *, header: bool = True
) -> dict[str, list[float]]:
    """Parse a CelebA list file into ``{image name: values}``.

    Args:
        path: the file.
        num_values: values per row after the image name (10 landmarks, 4 box, 1 partition).
        header: the file starts with a count line and a column-name line (landmark and box files).

    Raises:
        FileNotFoundError: the file is missing (the message names it).
        ValueError: a malformed line (the message names the file, the line and the expected layout).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"CelebA file not found: {p}")
    layout = f"rows '<image> v1 ... v{num_values}'" + (
        " after a count line and a header line" if header else ""
    )
    lines = p.read_text(encoding="utf-8").splitlines()
    start = 0
    if header:
        if len(lines) < 2:
            raise ValueError(f"{p}: too short; expected {layout}")
        try:
            count = int(lines[0].split()[0])
        except (ValueError, IndexError):
            raise ValueError(f"{p}: line 1 must be the number of images; expected {layout}") from None
        start = 2
    out: dict[str, list[float]] = {}
    for ln in range(start, len(lines)):
        fields = lines[ln].split()
        if not fields:
            continue
        if len(fields) != num_values + 1:
            raise ValueError(f"{p}: line {ln + 1}: {len(fields)} fields; expected {layout}")
        try:
            out[fields[0]] = [float(v) for v in fields[1:]]
        except ValueError:
            raise ValueError(f"{p}: line {ln + 1}: non-numeric value; expected {layout}") from None
    if header and count != len(out):
        raise ValueError(f"{p}: line 1 announces {count} images but {len(out)} rows were read")
    return out


class CelebA(RecordDataset):
    """CelebA faces with 5 landmarks (order :data:`CELEBA_LANDMARKS`).

    Args:
        root: dataset root (layout in the module docstring and docs/datasets.md).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"`` (needs ``list_eval_partition.txt``
            unless ``"all"``).
        aligned: use ``img_align_celeba`` + ``list_landmarks_align_celeba.txt`` (default) or the
            in-the-wild ``img_celeba`` + ``list_landmarks_celeba.txt`` + ``list_bbox_celeba.txt`` boxes.
        transforms, load_images, output: see :class:`~wbaug.datasets.base.LandmarkDataset`.

    Boxes: for ``aligned=False`` the official boxes ``(x_1, y_1, x_1 + width, y_1 + height)``; the
    aligned crops have no box. ``meta`` holds ``name`` and ``partition``.

    Example:
        >>> ds = CelebA("/data/celeba", split="test", load_images=False)  # doctest: +SKIP
        >>> ds.landmarks().shape  # doctest: +SKIP
        torch.Size([19962, 5, 2])
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        aligned: bool = True,
        transforms: Callable[[Any], Any] | None = None,
        load_images: bool = True,
        output: str = "dict",
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"CelebA root folder not found: {root}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
        lm_file = "list_landmarks_align_celeba.txt" if aligned else "list_landmarks_celeba.txt"
        table = read_celeba_table(_locate(root, lm_file), 10)
        names = list(table)
        parts = None
        if _SPLITS[split] is not None:
            parts = read_celeba_table(_locate(root, "list_eval_partition.txt"), 1, header=False)
            missing = [n for n in names if n not in parts]
            if missing:
                raise ValueError(f"list_eval_partition.txt has no partition for {missing[:3]} ...")
            names = [n for n in names if int(parts[n][0]) == _SPLITS[split]]
        boxes = None
        if not aligned:
            bt = read_celeba_table(_locate(root, "list_bbox_celeba.txt"), 4)
            rows = []
            for n in names:
                if n not in bt:
                    raise ValueError(f"list_bbox_celeba.txt has no box for {n!r}")
                x, y, w, h = bt[n]
                rows.append([x, y, x + w, y + h])
            boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
        img_dir_name = "img_align_celeba" if aligned else "img_celeba"
        try:
            img_dir = _locate(root, img_dir_name)
        except FileNotFoundError:
            img_dir = root / img_dir_name  # images may be absent for landmarks-only use
        kps = torch.tensor([table[n] for n in names], dtype=torch.float32).reshape(-1, 5, 2)
        metas = [{"name": n} if parts is None else {"name": n, "partition": int(parts[n][0])} for n in names]
        super().__init__(
            [img_dir / n for n in names],
            kps,
            boxes=boxes,
            metas=metas,
            transforms=transforms,
            load_images=load_images,
            output=output,
        )
        self.root = root
        self.split = split
        self.aligned = aligned

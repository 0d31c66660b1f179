"""300-W (iBUG) reader: images with 68-point ``.pts`` annotations and the benchmark's face boxes.

Sagonas et al., "300 Faces in-the-Wild Challenge" (2013). Expected layout (the official archives,
unpacked side by side under one root; see docs/datasets.md)::

    root/
      afw/                 *.jpg + *.pts
      helen/trainset/      *.jpg + *.pts       helen/testset/  ...
      lfpw/trainset/       *.png + *.pts       lfpw/testset/   ...
      ibug/                *.jpg + *.pts
      300W/01_Indoor/      *.png + *.pts       300W/02_Outdoor/ ...   (the 600-image challenge test set)
      Bounding Boxes/      bounding_boxes_<subset>.mat                (optional: detector/GT boxes)

Splits (the protocol of the facial-landmark literature): ``train`` = afw + helen/trainset +
lfpw/trainset (3148 faces); ``common`` = helen/testset + lfpw/testset (554); ``challenging`` = ibug
(135); ``full`` = common + challenging (689); ``test`` = 300W indoor + outdoor (600).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbaug.datasets.base import RecordDataset
from wbaug.datasets.io import IMAGE_EXTENSIONS, read_pts

__all__ = ["Face300W", "W300_SPLITS", "read_300w_boxes"]

W300_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "common": ("helen/testset", "lfpw/testset"),
    "challenging": ("ibug",),
    "full": ("helen/testset", "lfpw/testset", "ibug"),
    "test": ("300W/01_Indoor", "300W/02_Outdoor"),
}

_BOX_SOURCES = ("landmarks", "detector", "ground_truth")


def _find_image(pts: Path) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for cand in (pts.with_suffix(ext), pts.with_suffix(ext.upper())):
            if cand.exists():
                return cand
    return None


def read_300w_boxes(path: str | os.PathLike, source: str = "detector") -> dict[str, torch.Tensor]:
    """Read an official 300-W ``bounding_boxes_<subset>.mat`` file.

    The Matlab file holds a cell array ``bounding_boxes`` of structs with fields ``imgName``,
    ``bb_detector`` and ``bb_ground_truth`` (``[x_min y_min x_max y_max]``, 1-based pixels).

    Returns:
        ``{image file name: (4,) float32 XYXY box}`` in 0-based pixel coordinates.
    """
    if source not in ("detector", "ground_truth"):
        raise ValueError(f"source must be 'detector' or 'ground_truth', got {source!r}")
    from scipy.io import loadmat

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"300-W bounding-box file not found: {p}")
    layout = "a .mat with cell array 'bounding_boxes' of structs {imgName, bb_detector, bb_ground_truth}"
    try:
        mat = loadmat(str(p), squeeze_me=True, struct_as_record=False)
    except (ValueError, OSError, TypeError) as err:
        raise ValueError(f"{p}: cannot read ({err}); expected {layout}") from None
    if "bounding_boxes" not in mat:
        raise ValueError(f"{p}: no 'bounding_boxes' variable; expected {layout}")
    entries = np.atleast_1d(mat["bounding_boxes"])
    field = "bb_detector" if source == "detector" else "bb_ground_truth"
    out: dict[str, torch.Tensor] = {}
    for e in entries:
        try:
            name = str(e.imgName)
            box = np.asarray(getattr(e, field), dtype=np.float64).reshape(4)
        except (AttributeError, ValueError):
            raise ValueError(f"{p}: malformed entry; expected {layout}") from None
        out[name] = torch.from_numpy(box - 1.0).float()
    return out


class Face300W(RecordDataset):
    """300-W / iBUG faces with 68 landmarks (0-based pixel centres) and face boxes.

    Args:
        root: dataset root (layout in the module docstring and docs/datasets.md).
        split: ``"train"``, ``"common"``, ``"challenging"``, ``"full"`` or ``"test"``.
        subsets: explicit list of sub-folders of ``root`` instead of ``split`` (e.g. ``["ibug"]``).
        box: face box in each sample: ``"landmarks"`` (the tight extent of the 68 points, the
            ground-truth box convention), ``"detector"`` or ``"ground_truth"`` (from the official
            ``Bounding Boxes/bounding_boxes_<subset>.mat`` files; falls back to an error if missing).
        bbox_dir: folder holding those ``.mat`` files (default ``root/"Bounding Boxes"``).
        transforms, load_images, output: see :class:`~wbaug.datasets.base.LandmarkDataset`.

    The ``.pts`` files are 1-based; landmarks are converted to wbaug's 0-based convention.
    ``meta`` holds ``path``, ``subset`` and ``name``.

    Example:
        >>> ds = Face300W("/data/300W", split="challenging")  # doctest: +SKIP
        >>> ds.landmarks().shape  # doctest: +SKIP
        torch.Size([135, 68, 2])
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        subsets: Sequence[str] | None = None,
        box: str = "landmarks",
        bbox_dir: str | os.PathLike | None = None,
        transforms: Callable[[Any], Any] | None = None,
        load_images: bool = True,
        output: str = "dict",
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"300-W root folder not found: {root}")
        split_name = split if subsets is None else None
        if subsets is None:
            if split not in W300_SPLITS:
                raise ValueError(f"split must be one of {sorted(W300_SPLITS)}, got {split!r}")
            subsets = W300_SPLITS[split]
        if box not in _BOX_SOURCES:
            raise ValueError(f"box must be one of {_BOX_SOURCES}, got {box!r}")
        paths, kps, boxes, metas = [], [], [], []
        for sub in subsets:
            folder = root / sub
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"300-W subset folder not found: {folder}; "
                    f"expected <root>/{sub}/ with <name>.pts next to its image"
                )
            files = sorted(folder.glob("*.pts"))
            if not files:
                raise FileNotFoundError(f"no .pts files in {folder}")
            table = None
            if box != "landmarks":
                bdir = Path(bbox_dir) if bbox_dir is not None else root / "Bounding Boxes"
                mat = bdir / f"bounding_boxes_{sub.replace('/', '_')}.mat"
                table = read_300w_boxes(mat, source=box)
            for f in files:
                pts = read_pts(f)
                if pts.shape != (68, 2):
                    raise ValueError(f"{f}: expected 68 points with (x, y), got shape {tuple(pts.shape)}")
                img = _find_image(f)
                if table is not None:
                    key = img.name if img is not None else f.with_suffix(".jpg").name
                    if key not in table:
                        raise ValueError(f"{mat}: no box for image {key!r}")
                    boxes.append(table[key])
                else:
                    boxes.append(torch.cat([pts.amin(0), pts.amax(0)]))
                paths.append(img)
                kps.append(pts)
                metas.append({"subset": sub, "name": f.stem, "annotation": str(f)})
        super().__init__(
            paths,
            torch.stack(kps),
            boxes=torch.stack(boxes),
            metas=metas,
            transforms=transforms,
            load_images=load_images,
            output=output,
        )
        self.root = root
        self.split = split_name
        self.subsets = tuple(subsets)

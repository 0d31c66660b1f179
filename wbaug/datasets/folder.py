"""``LandmarkFolder``: user images with one landmark file per image (ordered or unordered sets)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbaug.datasets.base import RecordDataset
from wbaug.datasets.io import IMAGE_EXTENSIONS, read_pts

__all__ = ["LandmarkFolder", "read_point_file"]

_ANNOTATIONS = (".pts", ".npy", ".csv", ".txt")
_POINT_LAYOUT = (
    ".pts (iBUG, 1-based), .npy float array (N, 2), or .csv/.txt with one point 'x,y' / 'x y' per line "
    "(optional header 'x,y')"
)


def read_point_file(path: str | os.PathLike, *, one_based_pts: bool = True) -> torch.Tensor:
    """Read one landmark set ``(N, 2)`` from ``.pts``, ``.npy``, ``.csv`` or ``.txt`` (one point per line)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"landmark file not found: {p}; expected {_POINT_LAYOUT}")
    suffix = p.suffix.lower()
    if suffix == ".pts":
        return read_pts(p, one_based=one_based_pts)
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{p}: cannot load ({err}); expected {_POINT_LAYOUT}") from None
        if not np.issubdtype(arr.dtype, np.number) or arr.ndim != 2 or arr.shape[1] not in (2, 3):
            raise ValueError(f"{p}: array of shape {arr.shape} / dtype {arr.dtype}; expected {_POINT_LAYOUT}")
        return torch.from_numpy(arr.astype(np.float32))
    if suffix in (".csv", ".txt"):
        rows = []
        for ln, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.replace(",", " ").split()
            if not fields:
                continue
            if ln == 1 and [f.lower() for f in fields[:2]] == ["x", "y"]:
                continue
            try:
                vals = [float(v) for v in fields]
            except ValueError:
                raise ValueError(
                    f"{p}: line {ln}: non-numeric value {line!r}; expected {_POINT_LAYOUT}"
                ) from None
            if len(vals) not in (2, 3):
                raise ValueError(f"{p}: line {ln}: {len(vals)} values; expected {_POINT_LAYOUT}")
            rows.append(vals)
        if not rows or len({len(r) for r in rows}) != 1:
            raise ValueError(f"{p}: no points or mixed dimensions; expected {_POINT_LAYOUT}")
        return torch.tensor(rows, dtype=torch.float32)
    raise ValueError(f"{p}: unsupported landmark file type {suffix!r}; expected {_POINT_LAYOUT}")


class LandmarkFolder(RecordDataset):
    """Images in a folder, each with a landmark file of the same stem (``face1.jpg`` + ``face1.pts``).

    Landmark files may be ``.pts`` (1-based iBUG, converted to 0-based), ``.npy`` ``(N, 2)``, or
    ``.csv``/``.txt`` (one ``x, y`` point per line), all in 0-based pixel coordinates except ``.pts``.
    The number of points may differ between images (unordered contours): :meth:`landmarks` then returns
    a list.

    Args:
        root: folder of images (searched recursively when ``recursive``).
        split: optional sub-folder of ``root`` (and of ``landmarks_dir``) to read, e.g. ``"train"`` /
            ``"test"`` for a user dataset laid out as ``root/train/...`` and ``root/test/...``.
        landmarks_dir: folder mirroring ``root``'s structure with the landmark files (default: next to
            the images).
        extensions: landmark file types to look for, in order of preference.
        missing: ``"skip"`` images without a landmark file (listed in ``self.skipped``) or ``"error"``.
        one_based_pts: subtract 1 from ``.pts`` coordinates.
        recursive: search sub-folders.
        transforms, load_images, output: see :class:`~wbaug.datasets.base.LandmarkDataset`.

    ``meta`` holds ``path``, ``name`` and ``annotation`` (the landmark file).

    Example:
        >>> ds = LandmarkFolder("my_faces/")  # doctest: +SKIP
        >>> sample = ds[0]; sample["landmarks"].canvas_size  # doctest: +SKIP
        (480, 640)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        *,
        landmarks_dir: str | os.PathLike | None = None,
        extensions: Sequence[str] = _ANNOTATIONS,
        missing: str = "skip",
        one_based_pts: bool = True,
        recursive: bool = True,
        transforms: Callable[[Any], Any] | None = None,
        load_images: bool = True,
        output: str = "dict",
    ) -> None:
        root = Path(root)
        if split is not None:
            if not isinstance(split, str) or not split:
                raise ValueError(f"split must be a sub-folder name or None, got {split!r}")
            root = root / split
            if landmarks_dir is not None:
                landmarks_dir = Path(landmarks_dir) / split
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        if missing not in ("skip", "error"):
            raise ValueError(f"missing must be 'skip' or 'error', got {missing!r}")
        exts = tuple(e if e.startswith(".") else "." + e for e in extensions)
        bad = [e for e in exts if e.lower() not in _ANNOTATIONS]
        if bad or not exts:
            raise ValueError(
                f"extensions must be a non-empty subset of {_ANNOTATIONS}, got {tuple(extensions)}"
            )
        lm_root = Path(landmarks_dir) if landmarks_dir is not None else root
        pattern = root.rglob("*") if recursive else root.glob("*")
        images = sorted(q for q in pattern if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
        paths, kps, metas, skipped = [], [], [], []
        for img in images:
            rel = img.relative_to(root)
            ann = next(
                (lm_root / rel.with_suffix(e) for e in exts if (lm_root / rel.with_suffix(e)).exists()), None
            )
            if ann is None:
                if missing == "error":
                    raise FileNotFoundError(
                        f"no landmark file for {img}; "
                        f"expected {lm_root / rel.with_suffix('.pts')} (or {exts})"
                    )
                skipped.append(img)
                continue
            paths.append(img)
            kps.append(read_point_file(ann, one_based_pts=one_based_pts))
            metas.append({"name": img.stem, "annotation": str(ann)})
        if not paths:
            raise FileNotFoundError(f"no images with landmark files ({exts}) found in {root}")
        same = all(k.shape == kps[0].shape for k in kps)
        super().__init__(
            paths,
            torch.stack(kps) if same else kps,
            metas=metas,
            transforms=transforms,
            load_images=load_images,
            output=output,
        )
        self.root = root
        self.skipped = skipped

"""Human3.6M reader for the 32-joint 2D pose layout used by the unsupervised-landmark literature.

Ionescu et al., "Human3.6M" (TPAMI 2014); the protocol of Zhang et al. (CVPR 2018), Jakab et al.
(NeurIPS 2018), Lorenz et al. (CVPR 2019): subjects S1, S5, S6, S7, S8, S9 for training and S11 for
testing, 2D joint positions in image pixels. The official poses ship as CDF files
(``D2_Positions/*.cdf``, 64 values per frame); convert each sequence once to a plain file (the CDF
reader is not a wbaug dependency). Supported layout::

    root/
      images/<subject>/<sequence>/<frame>.jpg      frames of one video, sorted by file name
      poses/<subject>/<sequence>.npy               float array (T, 32, 2) or (T, 64)
      poses/<subject>/<sequence>.txt | .csv        T lines of 64 numbers x0 y0 x1 y1 ... x31 y31
                                                   (whitespace or comma separated; '#' comments)

``<sequence>`` is e.g. ``Directions 1.54138969`` (action, take, camera); row ``t`` of the pose file is
the ``t``-th image of ``images/<subject>/<sequence>/`` in sorted order, so ``T`` must equal the number
of frames when images are present. Coordinates are 0-based pixel positions in those frames.

The 32 joints follow the H36M skeleton: 0 hip, 1-5 right leg (hip, knee, ankle, foot, toe end),
6-10 left leg, 11 spine, 12 thorax, 13 neck/nose, 14 head, 15 head top, 16-23 left arm (shoulder,
elbow, wrist, hand, hand end, thumb...), 24-31 right arm — see :data:`HUMAN36M_PARENTS` and
:data:`HUMAN36M_FLIP_INDICES` (left/right joint swap for horizontal flips).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbaug.datasets.base import RecordDataset
from wbaug.datasets.io import IMAGE_EXTENSIONS

__all__ = ["HUMAN36M_FLIP_INDICES", "HUMAN36M_PARENTS", "HUMAN36M_SUBJECTS", "Human36M", "read_h36m_poses"]

HUMAN36M_SUBJECTS = {"train": ("S1", "S5", "S6", "S7", "S8", "S9"), "test": ("S11",)}
HUMAN36M_PARENTS = (
    -1,
    0,
    1,
    2,
    3,
    4,
    0,
    6,
    7,
    8,
    9,
    0,
    11,
    12,
    13,
    14,
    12,
    16,
    17,
    18,
    19,
    20,
    19,
    22,
    12,
    24,
    25,
    26,
    27,
    28,
    27,
    30,
)
_LEFT = (6, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21, 22, 23)
_RIGHT = (1, 2, 3, 4, 5, 24, 25, 26, 27, 28, 29, 30, 31)


def _flip_indices() -> tuple[int, ...]:
    perm = list(range(32))
    for a, b in zip(_LEFT, _RIGHT):
        perm[a], perm[b] = b, a
    return tuple(perm)


HUMAN36M_FLIP_INDICES = _flip_indices()
_LAYOUT = "a (T, 32, 2) / (T, 64) .npy array, or a text file of T lines with 64 numbers x0 y0 ... x31 y31"


def read_h36m_poses(path: str | os.PathLike) -> torch.Tensor:
    """Read one sequence's 2D poses as ``(T, 32, 2)`` float32 (format in the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Human3.6M pose file not found: {p}; expected {_LAYOUT}")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{p}: cannot load ({err}); expected {_LAYOUT}") from None
        if (
            not np.issubdtype(arr.dtype, np.number)
            or arr.ndim not in (2, 3)
            or arr.shape[1:] not in ((64,), (32, 2))
        ):
            raise ValueError(f"{p}: array of shape {arr.shape} / dtype {arr.dtype}; expected {_LAYOUT}")
        rows = arr.reshape(-1, 32, 2).astype(np.float32)
    else:
        data = []
        for ln, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            line = line.split("#", 1)[0].replace(",", " ").strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 64:
                raise ValueError(f"{p}: line {ln}: {len(fields)} values; expected {_LAYOUT}")
            try:
                data.append([float(v) for v in fields])
            except ValueError:
                raise ValueError(f"{p}: line {ln}: non-numeric value; expected {_LAYOUT}") from None
        if not data:
            raise ValueError(f"{p}: no pose lines; expected {_LAYOUT}")
        rows = np.asarray(data, dtype=np.float32).reshape(-1, 32, 2)
    out = torch.from_numpy(np.ascontiguousarray(rows))
    if not torch.isfinite(out).all():
        raise ValueError(f"{p}: non-finite coordinates")
    return out


class Human36M(RecordDataset):
    """Human3.6M frames with 32 2D joints (ordered layout).

    Args:
        root: dataset root (layout in the module docstring and docs/datasets.md).
        split: ``"train"`` (S1, S5-S9) or ``"test"`` (S11); ignored when ``subjects`` is given. Subjects
            of the split missing from ``root/poses`` are skipped (an error if none is found).
        subjects: explicit subject folders, e.g. ``["S1"]`` (each must exist).
        actions: keep sequences whose name starts with one of these (e.g. the six activities of the
            unsupervised-landmark protocol: ``["Directions", "Discussion", "Posing", "Waiting",
            "Greeting", "Walking"]``); ``None`` keeps all.
        stride: keep every ``stride``-th frame of each sequence.
        canvas_size: ``(H, W)`` of the frames, used for key-point canvases when the frames are absent
            (e.g. ``(1000, 1000)`` for the original videos; ``load_images=False``).
        transforms, load_images, output: see :class:`~wbaug.datasets.base.LandmarkDataset`.

    ``meta`` holds ``subject``, ``sequence``, ``frame``. Images may be absent for landmarks-only use
    (``landmarks()`` never needs them).

    Example:
        >>> ds = Human36M("/data/h36m", split="test", load_images=False)  # doctest: +SKIP
        >>> ds.landmarks().shape[1:]  # doctest: +SKIP
        torch.Size([32, 2])
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        subjects: Sequence[str] | None = None,
        actions: Sequence[str] | None = None,
        stride: int = 1,
        canvas_size: tuple[int, int] | None = None,
        transforms: Callable[[Any], Any] | None = None,
        load_images: bool = True,
        output: str = "dict",
    ) -> None:
        root = Path(root)
        if not (root / "poses").is_dir():
            raise FileNotFoundError(
                f"Human3.6M poses folder not found: {root / 'poses'}; expected {_LAYOUT} per sequence"
            )
        explicit = subjects is not None
        if subjects is None:
            if split not in HUMAN36M_SUBJECTS:
                raise ValueError(f"split must be 'train' or 'test', got {split!r}")
            subjects = HUMAN36M_SUBJECTS[split]
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive int, got {stride!r}")
        paths, kps, metas = [], [], []
        for subj in subjects:
            pose_dir = root / "poses" / subj
            if not pose_dir.is_dir():
                if explicit:
                    raise FileNotFoundError(f"Human3.6M subject folder not found: {pose_dir}")
                continue  # a split's subject that is not part of this copy of the data
            files = sorted(f for f in pose_dir.iterdir() if f.suffix.lower() in (".npy", ".txt", ".csv"))
            for f in files:
                seq = f.stem
                if actions is not None and not any(seq.startswith(a) for a in actions):
                    continue
                poses = read_h36m_poses(f)
                img_dir = root / "images" / subj / seq
                frames: list[Path | None]
                if img_dir.is_dir():
                    frames = sorted(q for q in img_dir.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
                    if len(frames) != poses.shape[0]:
                        raise ValueError(
                            f"{f}: {poses.shape[0]} pose rows but {len(frames)} frames in {img_dir}; "
                            "row t must be the t-th frame in sorted order"
                        )
                else:
                    frames = [None] * poses.shape[0]
                for t in range(0, poses.shape[0], stride):
                    paths.append(frames[t])
                    kps.append(poses[t])
                    metas.append({"subject": subj, "sequence": seq, "frame": t})
        if not kps:
            raise ValueError(
                f"no Human3.6M sequences found under {root / 'poses'} for subjects {list(subjects)}"
            )
        super().__init__(
            paths,
            torch.stack(kps),
            metas=metas,
            canvas_size=canvas_size,
            transforms=transforms,
            load_images=load_images,
            output=output,
        )
        self.root = root

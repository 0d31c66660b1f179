"""Frame clips and frame pairs for the learned-local-transformations recipe (Chrysos et al. 2018, §4.1).

* **Clips**: the embedded synthetic face clips (:func:`wbaug.datasets.synthetic_face_videos`; no files),
  or a folder whose entries are clips: sub-folders of PNG/JPEG frames (read with PIL, in name order)
  and/or video files (``.mp4 .avi .mov .mkv .webm``, decoded with PyAV, the optional ``video`` extra:
  ``pip install wbaug[video]``). Frames are centre-cropped to a square and resized to ``S × S``.
* **Pairs**: ``(clip, t, t + x)`` with ``1 <= x <= max_gap`` whose SSIM lies in ``[ssim_low, ssim_high]``
  -- neither identical nor too different, as the paper requires.
* **Datasets** keyed by ``(index, sample_seed)`` for :class:`zoo.common.ShardedEpochSampler`: single
  frames (Stage I) and ``(source, target)`` pairs (Stages II-IV), in ``[-1, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from wbaug.datasets import synthetic_face_videos
from wbaug.transforms import ssim_score
from zoo.common.seeding import derive_seed, make_generator

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "FrameDataset",
    "LTData",
    "PairDataset",
    "build_data",
    "frame_pairs",
    "load_clips",
    "read_frame_folder",
    "read_video",
    "synthetic_clips",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def _square_resize(frames: Tensor, size: int) -> Tensor:
    """``(T, C, H, W)`` uint8 → centre square crop resized to ``(T, 3, size, size)`` uint8."""
    t, c, h, w = frames.shape
    if c == 1:
        frames = frames.expand(t, 3, h, w)
    elif c == 4:
        frames = frames[:, :3]
    elif c != 3:
        raise ValueError(f"frames must have 1, 3 or 4 channels, got {c}")
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = frames[:, :, top : top + side, left : left + side].float()
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def read_frame_folder(folder: str | Path, size: int) -> Tensor:
    """The PNG/JPEG frames of ``folder`` in name order (read with PIL) as ``(T, 3, size, size)`` uint8."""
    import numpy as np
    import PIL.Image

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} frames in this clip folder")
    frames = []
    for f in files:
        try:
            with PIL.Image.open(f) as pil:
                img = torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1)
        except (OSError, ValueError) as err:
            raise ValueError(f"{f}: cannot decode this frame ({err})") from err
        frames.append(_square_resize(img.unsqueeze(0), size))
    return torch.cat(frames)


def read_video(path: str | Path, size: int, *, max_frames: int | None = None) -> Tensor:
    """Decode a video file with PyAV (the optional ``video`` extra) to ``(T, 3, size, size)`` uint8."""
    try:
        import av
    except ImportError as err:
        raise ImportError(
            f"reading the video {path} needs PyAV: pip install 'wbaug[video]' "
            "(or give the clips as folders of PNG/JPEG frames)"
        ) from err
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            img = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            frames.append(_square_resize(img.unsqueeze(0), size))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no video frames decoded")
    return torch.cat(frames)


def load_clips(root: str | Path, size: int) -> list[Tensor]:
    """Every clip under ``root`` (sub-folders of frames and video files, in name order) as a list of
    ``(T_i, 3, size, size)`` uint8 tensors; clips with fewer than 2 frames are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data.root {str(root)!r} is not a directory")
    clips = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in entry.iterdir()):
            clip = read_frame_folder(entry, size)
        elif entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
            clip = read_video(entry, size)
        else:
            continue
        if clip.shape[0] >= 2:
            clips.append(clip)
    if not clips:
        raise ValueError(
            f"data.root {str(root)!r} holds no clips (sub-folders of {'/'.join(IMAGE_SUFFIXES)} frames or "
            f"{'/'.join(VIDEO_SUFFIXES)} videos with at least 2 frames)"
        )
    return clips


def synthetic_clips(cfg: Any, split: str) -> tuple[list[Tensor], dict[str, Tensor]]:
    """The embedded clips of ``split`` (``"train"`` / ``"test"``: different seeds) and their parameters
    (``(V, T)`` tensors, e.g. ``yaw``)."""
    d = cfg.data
    n = d.num_videos if split == "train" else d.num_test_videos
    g = make_generator(derive_seed(d.data_seed, "clips", split))
    frames, params = synthetic_face_videos(
        n,
        d.num_frames,
        image_size=cfg.model.image_size,
        generator=g,
        pose_step=d.pose_step,
        expression_step=d.expression_step,
        reversion=d.reversion,
        light_step=d.light_step,
        noise=d.noise,
        zoom=d.zoom,
    )
    return list(frames.unbind(0)), params


def frame_pairs(
    clips: list[Tensor], *, max_gap: int, ssim_low: float, ssim_high: float, window: int = 7
) -> Tensor:
    """``(P, 3)`` long tensor of ``(clip, t, t + x)``, ``1 <= x <= max_gap``, with SSIM in the band."""
    found = []
    for c, clip in enumerate(clips):
        x = clip.float() / 255
        for gap in range(1, min(max_gap, clip.shape[0] - 1) + 1):
            s = ssim_score(x[:-gap], x[gap:], window=window)
            t = ((s >= ssim_low) & (s <= ssim_high)).nonzero().flatten()
            found.append(torch.stack([torch.full_like(t, c), t, t + gap], 1))
    return torch.cat(found) if found else torch.zeros(0, 3, dtype=torch.long)


def _to_unit(frame: Tensor) -> Tensor:
    return frame.float() / 127.5 - 1.0


class FrameDataset(torch.utils.data.Dataset):
    """Every frame of the clips: ``(index, seed)`` → ``(3, S, S)`` in [-1, 1] (Stage I)."""

    def __init__(self, clips: list[Tensor]) -> None:
        self.clips = clips
        self.index = [(c, t) for c, clip in enumerate(clips) for t in range(clip.shape[0])]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> Tensor:
        pos = key[0] if isinstance(key, tuple) else key
        c, t = self.index[pos]
        return _to_unit(self.clips[c][t])


class PairDataset(torch.utils.data.Dataset):
    """Frame pairs: ``(index, seed)`` → ``(source, target)`` ``(3, S, S)`` each in [-1, 1]."""

    def __init__(self, clips: list[Tensor], pairs: Tensor) -> None:
        self.clips = clips
        self.pairs = pairs

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def __getitem__(self, key: Any) -> tuple[Tensor, Tensor]:
        pos = key[0] if isinstance(key, tuple) else key
        c, t, u = (int(v) for v in self.pairs[pos])
        return _to_unit(self.clips[c][t]), _to_unit(self.clips[c][u])


@dataclass
class LTData:
    """Training and held-out clips, their pairs and datasets; ``params`` of the synthetic clips."""

    train_clips: list[Tensor]
    test_clips: list[Tensor]
    train_pairs: Tensor
    test_pairs: Tensor
    frames: FrameDataset
    pairs: PairDataset
    test_frames: FrameDataset
    test_pair_set: PairDataset
    train_params: dict[str, Tensor] | None = None
    test_params: dict[str, Tensor] | None = None


def build_data(cfg: Any) -> LTData:
    """Clips (synthetic or ``data.root``), SSIM-band pairs, and the datasets of both splits."""
    d = cfg.data
    size = cfg.model.image_size
    train_params = test_params = None
    if d.dataset == "synthetic":
        train_clips, train_params = synthetic_clips(cfg, "train")
        test_clips, test_params = synthetic_clips(cfg, "test")
    else:
        clips = load_clips(d.root, size)
        if len(clips) < 2:
            raise ValueError(f"data.root {d.root!r} must hold at least 2 clips (training and held-out)")
        n_test = min(len(clips) - 1, max(1, round(d.test_fraction * len(clips))))
        train_clips, test_clips = clips[:-n_test], clips[-n_test:]
    kwargs = {"max_gap": d.max_gap, "ssim_low": d.ssim_low, "ssim_high": d.ssim_high, "window": d.ssim_window}
    train_pairs = frame_pairs(train_clips, **kwargs)
    test_pairs = frame_pairs(test_clips, **kwargs)
    for name, pairs in (("training", train_pairs), ("held-out", test_pairs)):
        if pairs.shape[0] == 0:
            raise ValueError(
                f"no {name} frame pairs have an SSIM in [data.ssim_low, data.ssim_high] = "
                f"[{d.ssim_low}, {d.ssim_high}]; widen the band or raise data.max_gap"
            )
    return LTData(
        train_clips=train_clips,
        test_clips=test_clips,
        train_pairs=train_pairs,
        test_pairs=test_pairs,
        frames=FrameDataset(train_clips),
        pairs=PairDataset(train_clips, train_pairs),
        test_frames=FrameDataset(test_clips),
        test_pair_set=PairDataset(test_clips, test_pairs),
        train_params=train_params,
        test_params=test_params,
    )

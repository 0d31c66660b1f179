"""Shape banks and training pairs built on the fly: the paper's scale (10k shapes, 100k pairs at 512²).

At 512² the paper's training set does not fit in memory as tensors (100k pairs of two inputs and a
target are ~300 GB in float32). Its own trick makes that unnecessary: the linearised barycenter of any
weighted pair is a weighted average of two per-shape transport maps followed by a bilinear splat. So the
data are a *bank*: the ``M`` contour densities, their maps from the uniform measure and the uniform
measure's self map, written once (memory-mapped ``.npy`` files in a directory, or kept in memory for
small grids), and :class:`LinearizedPairs` draws pair ``index`` and its weight from a seed derived from
``index`` and computes the target when the sample is loaded (one splat of ``H·W`` points: ~1 ms at 64²,
tens of ms at 512², spread over DataLoader workers).

Bank files (``<directory>/``): ``shapes.npy (M, H, W)``, ``maps.npy (M, H, W, 2)``, ``self_map.npy
(H, W, 2)``, float32, and ``meta.json`` with the settings; written under a temporary name and renamed
when complete, so an interrupted build never leaves a bank that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from wbaug.grid import linearized_barycenter
from wbaug.io_atomic import TEMP_SUFFIX, atomic_write_text
from zoo.barycenter_net.data import random_contours, shape_maps, square_symmetry, uniform_self_map
from zoo.common.logging import progress
from zoo.common.seeding import derive_seed

__all__ = ["LinearizedPairs", "ShapeBank", "load_or_build_bank"]

_FILES = ("shapes.npy", "maps.npy", "self_map.npy")


class ShapeBank:
    """Contour densities with their transport maps from the uniform measure (NumPy arrays, maybe mmapped).

    Attributes:
        shapes: ``(M, H, W)`` unit-mass densities.
        maps: ``(M, H, W, 2)`` entropic transport maps from the uniform measure, in pixels.
        self_map: ``(H, W, 2)`` the uniform measure's self map (the Sinkhorn-divergence debiasing term).
        reg: entropic regularisation in normalised units (POT's), as in ``zoo.barycenter_net.data``.
    """

    def __init__(self, shapes: np.ndarray, maps: np.ndarray, self_map: np.ndarray, reg: float) -> None:
        m, h, w = shapes.shape
        if maps.shape != (m, h, w, 2) or self_map.shape != (h, w, 2):
            raise ValueError(
                f"bank arrays disagree: shapes {shapes.shape}, maps {maps.shape}, self_map {self_map.shape}"
            )
        self.shapes, self.maps, self.self_map, self.reg = shapes, maps, self_map, float(reg)

    def __len__(self) -> int:
        return self.shapes.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.shapes.shape[1], self.shapes.shape[2]

    @classmethod
    def build(
        cls,
        num_shapes: int,
        size: int,
        *,
        reg: float = 4e-3,
        max_depth: int = 50,
        seed: int = 0,
        directory: str | os.PathLike | None = None,
        chunk: int = 64,
        show_progress: bool = True,
        device: str | torch.device = "cpu",
    ) -> ShapeBank:
        """Generate ``num_shapes`` CSG contours and their maps, in memory or into ``directory``.

        The Sinkhorn solves for the maps run on ``device`` (float64; ~7 s per 512² shape on one CPU core
        of the development machine, so use a GPU at the paper's scale); shapes are drawn on the CPU from
        one generator seeded with ``seed``, so the bank does not depend on the device or on ``chunk``.
        """
        if isinstance(num_shapes, bool) or not isinstance(num_shapes, int) or num_shapes < 2:
            raise ValueError(f"num_shapes must be an int >= 2, got {num_shapes!r}")
        shape3 = (num_shapes, size, size)
        tmp = None
        if directory is None:
            shapes = np.empty(shape3, np.float32)
            maps = np.empty((*shape3, 2), np.float32)
        else:
            # a private, unpredictable folder next to the target (never a guessable name to plant a link at)
            directory = Path(directory)
            directory.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(
                tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=TEMP_SUFFIX, dir=directory.parent)
            )
            shapes = np.lib.format.open_memmap(tmp / "shapes.npy", "w+", np.float32, shape3)
            maps = np.lib.format.open_memmap(tmp / "maps.npy", "w+", np.float32, (*shape3, 2))
        g = torch.Generator().manual_seed(seed)
        with progress(total=num_shapes, enabled=show_progress, desc="shape bank", unit="shape") as bar:
            for s in range(0, num_shapes, chunk):
                batch = random_contours(min(chunk, num_shapes - s), size, generator=g, max_depth=max_depth)
                shapes[s : s + batch.shape[0]] = batch.numpy()
                maps[s : s + batch.shape[0]] = shape_maps(batch.to(device), reg=reg).float().cpu().numpy()
                bar.update(batch.shape[0])
        self_map = uniform_self_map(size, reg=reg, device=device).float().cpu().numpy()
        if tmp is None:
            return cls(shapes, maps, self_map, reg)
        np.save(tmp / "self_map.npy", self_map)
        shapes.flush()
        maps.flush()
        del shapes, maps
        meta = {"num_shapes": num_shapes, "size": size, "reg": reg, "max_depth": max_depth, "seed": seed}
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        if directory.is_symlink():
            raise ValueError(f"directory {str(directory)!r} is a symbolic link; refusing to replace it")
        old = None
        if directory.exists():  # move the old bank aside under an unpredictable name, then swap
            old = Path(
                tempfile.mkdtemp(prefix=f".{directory.name}.old.", suffix=TEMP_SUFFIX, dir=directory.parent)
            )
            os.replace(directory, old / "bank")
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return cls.load(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ShapeBank:
        """Memory-map a bank written by :meth:`build` (nothing is read until it is indexed)."""
        directory = Path(directory)
        missing = [f for f in (*_FILES, "meta.json") if not (directory / f).exists()]
        if missing:
            raise ValueError(f"directory {str(directory)!r} is not a shape bank (missing {missing})")
        meta = json.loads((directory / "meta.json").read_text())
        arrays = [np.load(directory / f, mmap_mode="r") for f in _FILES]
        return cls(*arrays, reg=meta["reg"])


def load_or_build_bank(
    cache_dir: str | os.PathLike | None,
    *,
    num_shapes: int,
    size: int,
    reg: float = 4e-3,
    max_depth: int = 50,
    seed: int = 0,
    show_progress: bool = True,
    device: str | torch.device = "cpu",
) -> ShapeBank:
    """The bank for these settings from ``cache_dir`` (one sub-directory per setting), built if missing.

    ``cache_dir=None`` builds it in memory (fine for small grids: 1000 shapes at 64² are ~50 MB).
    """
    kwargs = {"reg": reg, "max_depth": max_depth, "seed": seed, "device": device}
    if cache_dir is None:
        return ShapeBank.build(num_shapes, size, show_progress=show_progress, **kwargs)
    directory = Path(cache_dir) / f"bank_s{size}_m{num_shapes}_r{reg:g}_d{max_depth}_seed{seed}"
    if (directory / "meta.json").exists():
        return ShapeBank.load(directory)
    return ShapeBank.build(num_shapes, size, directory=directory, show_progress=show_progress, **kwargs)


class LinearizedPairs(torch.utils.data.Dataset):
    """``num_pairs`` weighted pairs of a bank with linearised-barycenter targets computed on the fly.

    Pair ``index`` is two distinct shapes and ``lambda ~ U(0, 1)`` (weights ``(lambda, 1 - lambda)``, the
    paper's), drawn from ``derive_seed(seed, "pair", index)``: the set of pairs is fixed, like the paper's
    100k, whatever the order or the number of workers. Items are indices or the ``(index, sample_seed)``
    pairs of :class:`zoo.common.ShardedEpochSampler`; with ``augment=True`` and a sample seed the pair is
    mapped by one of the 8 symmetries of the square (``sample_seed % 8``; they commute with the
    barycenter, so the target stays exact).

    Returns ``(inputs (2, H, W), weights (2,), target (H, W))`` float32, as
    :class:`zoo.barycenter_net.data.PairDataset`.

    Example:
        >>> bank = load_or_build_bank(None, num_shapes=3, size=16, reg=2e-2, max_depth=2, show_progress=False)
        >>> pairs = LinearizedPairs(bank, 10, seed=0, augment=True)
        >>> x, w, t = pairs[(4, 123)]          # (index, sample_seed) as ShardedEpochSampler yields them
        >>> x.shape, w.shape, t.shape, round(float(t.sum()), 4)
        (torch.Size([2, 16, 16]), torch.Size([2]), torch.Size([16, 16]), 1.0)
    """

    def __init__(self, bank: ShapeBank, num_pairs: int, *, seed: int = 0, augment: bool = False) -> None:
        if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 1:
            raise ValueError(f"num_pairs must be a positive int, got {num_pairs!r}")
        h, w = bank.size
        if augment and h != w:
            raise ValueError("augment=True needs square grids (transposes are among the symmetries)")
        self.bank, self.num_pairs, self.seed, self.augment = bank, num_pairs, seed, augment
        self._pixel_reg = bank.reg * (h - 1) ** 2
        # read (and, for a memory-mapped bank, copied out) once, not once per sample
        self._self_map = torch.from_numpy(np.array(bank.self_map, dtype=np.float64))

    def __len__(self) -> int:
        return self.num_pairs

    def pair(self, index: int) -> tuple[int, int, float]:
        """The shapes ``(i, j)`` and the weight ``lambda`` of shape ``i`` of pair ``index``."""
        if not 0 <= index < self.num_pairs:
            raise IndexError(f"pair index {index} out of range [0, {self.num_pairs})")
        g = torch.Generator().manual_seed(derive_seed(self.seed, "pair", index))
        m = len(self.bank)
        i = int(torch.randint(m, (1,), generator=g))
        j = int(torch.randint(m - 1, (1,), generator=g))
        j += j >= i  # uniform over the other shapes
        return i, j, float(torch.rand(1, generator=g, dtype=torch.float64))

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        index, sample_seed = item if isinstance(item, tuple) else (item, None)
        i, j, lam = self.pair(index)
        inputs = torch.from_numpy(np.stack([self.bank.shapes[i], self.bank.shapes[j]]))
        maps = torch.from_numpy(np.stack([self.bank.maps[i], self.bank.maps[j]])).double()
        weights = torch.tensor([lam, 1.0 - lam], dtype=torch.float64)
        target = linearized_barycenter(
            inputs[None].double(),
            weights[None],
            reg=self._pixel_reg,
            maps=maps[None],
            self_map=self._self_map,
        )[0]
        target = (target / target.sum()).float()
        if self.augment and sample_seed is not None:
            inputs, target = square_symmetry(inputs, target, sample_seed % 8)
        return inputs, weights.float(), target

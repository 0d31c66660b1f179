"""``torch.utils.data`` datasets of sampled landmark sets: the unpaired "landmarks domain" that a CycleGAN
(paper §3, Algorithm 1) trains on.

Seeding (the package's rule, :mod:`wbaug._random`; the global RNG is never seeded):

* :class:`BarycentricLandmarksDataset` (map-style): item ``i`` is drawn with a private generator seeded
  by ``mix_seed(seed, epoch, i)``, so it is the same whatever the number of DataLoader workers, the batch
  size or the shuffling; :meth:`~BarycentricLandmarksDataset.set_epoch` changes the draw per epoch.
* :class:`BarycentricLandmarksIterableDataset`: each worker streams its own share, from
  ``mix_seed(seed, epoch, worker_id)`` when a seed is given. With ``seed=None`` the stream's seed is drawn
  from torch's global RNG when iteration starts: in a DataLoader worker that RNG is seeded with
  ``base_seed + worker_id`` (the base seed drawn from the DataLoader's ``generator=``), so
  ``DataLoader(..., generator=g)`` makes every run reproducible and every worker distinct; in the main
  process ``torch.manual_seed`` does.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from wbaug._random import mix_seed
from wbaug.sampling._validation import check_nonnegative_int

__all__ = ["BarycentricLandmarksDataset", "BarycentricLandmarksIterableDataset"]

def _check_sampler(sampler) -> None:
    if not getattr(sampler, "is_fitted", False):
        raise ValueError("sampler must be a fitted WassersteinBarycentricSampler")


class BarycentricLandmarksDataset(Dataset):
    """Map-style dataset of ``length`` sampled landmark sets ``(N, D)``.

    Args:
        sampler: a fitted :class:`~wbaug.sampling.WassersteinBarycentricSampler`.
        length: number of items.
        seed: base seed (item ``i`` depends only on ``seed``, the epoch and ``i``).
        return_info: items become ``(landmarks, {"clique": ..., "vertices": ..., "weights": ...})``.

    Example:
        >>> ds = BarycentricLandmarksDataset(sampler, 7000, seed=0)  # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=2)  # doctest: +SKIP
    """

    def __init__(self, sampler, length: int, *, seed: int = 0, return_info: bool = False) -> None:
        _check_sampler(sampler)
        self.sampler = sampler
        self.length = check_nonnegative_int(length, "length")
        self.seed = check_nonnegative_int(seed, "seed")
        self.return_info = return_info
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use a different (still deterministic) draw for every epoch."""
        self.epoch = check_nonnegative_int(epoch, "epoch")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        index %= self.length
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
        out, info = self.sampler.sample(1, generator=g, return_info=True, progress=False)
        x = out[0]
        if not self.return_info:
            return x
        return x, {
            "clique": info["cliques"][0],
            "vertices": info["vertices"][0],
            "weights": info["weights"][0],
        }


class BarycentricLandmarksIterableDataset(IterableDataset):
    """Stream of sampled landmark sets, computed ``batch_size`` at a time (batched barycenters).

    Args:
        sampler: a fitted sampler.
        num_samples: total items per epoch over all workers (``None``: endless).
        batch_size: barycenters computed per call of ``sampler.sample``.
        seed: ``None`` (a seed drawn from torch's global RNG when iteration starts) or a base seed.

    Example:
        >>> ds = BarycentricLandmarksIterableDataset(sampler, 7000)  # doctest: +SKIP
        >>> g = torch.Generator().manual_seed(0)  # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(  # doctest: +SKIP
        ...     ds, batch_size=32, num_workers=2, generator=g)
    """

    def __init__(
        self, sampler, num_samples: int | None = None, *, batch_size: int = 256, seed: int | None = None
    ):
        _check_sampler(sampler)
        self.sampler = sampler
        self.num_samples = None if num_samples is None else check_nonnegative_int(num_samples, "num_samples")
        self.batch_size = check_nonnegative_int(batch_size, "batch_size", minimum=1)
        self.seed = None if seed is None else check_nonnegative_int(seed, "seed")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_nonnegative_int(epoch, "epoch")

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("an endless BarycentricLandmarksIterableDataset has no len(); pass num_samples")
        return self.num_samples

    def _worker_seed(self) -> tuple[int, int, int]:
        info = get_worker_info()
        wid, nworkers = (0, 1) if info is None else (info.id, info.num_workers)
        if self.seed is not None:
            return mix_seed(self.seed, self.epoch, wid), wid, nworkers
        # torch's global RNG (seeded per worker by the DataLoader, by torch.manual_seed in the main process)
        base = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        return mix_seed(base, self.epoch), wid, nworkers

    def __iter__(self) -> Iterator[Tensor]:
        seed, wid, nworkers = self._worker_seed()
        g = torch.Generator().manual_seed(seed)
        if self.num_samples is None:
            share = None
        else:
            share = self.num_samples // nworkers + (1 if wid < self.num_samples % nworkers else 0)
        produced = 0
        while share is None or produced < share:
            b = self.batch_size if share is None else min(self.batch_size, share - produced)
            batch = self.sampler.sample(b, generator=g, progress=False)
            yield from batch
            produced += b

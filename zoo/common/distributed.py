"""``torchrun`` helpers: process-group setup/teardown, device choice, rank-aware resumable sampling.

Single process (``python -m zoo.hourglass.train``) and ``torchrun --nproc_per_node=G`` use the same
code path: :func:`init_distributed` reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and only creates a
process group when ``WORLD_SIZE > 1`` (NCCL on CUDA, Gloo on CPU).

:class:`ShardedEpochSampler` replaces ``RandomSampler``/``DistributedSampler`` in the trainers: the
permutation of epoch ``e`` is a pure function of ``(seed, e)``, each rank takes a disjoint stride of
it, and it can start mid-epoch (``start_batch``), so a resumed run continues with exactly the
batches the killed run would have seen. It yields ``(index, sample_seed)`` pairs: datasets wrapped by
the trainer draw their augmentation from ``sample_seed``, which makes augmentation independent of
the number of DataLoader workers and replayable on resume.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from zoo.common.checkpoint import prepare_run_dir
from zoo.common.seeding import derive_seed, make_generator, seed_process

if TYPE_CHECKING:
    from zoo.common.config import TrainConfig

__all__ = [
    "DistributedContext",
    "ShardedEpochSampler",
    "all_reduce_mean",
    "autocast",
    "barrier",
    "claim_out_dir",
    "cleanup_distributed",
    "distributed_session",
    "epoch_batches",
    "init_distributed",
    "resolve_device",
    "start_run",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: ``rank`` of ``world_size``, its ``local_rank`` and ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:<local_rank>`` if CUDA is available (else MPS, else CPU); others as given."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str = "auto") -> DistributedContext:
    """Initialise ``torch.distributed`` from ``torchrun``'s environment (no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def claim_out_dir(
    out_dir: str | os.PathLike, *, resume: bool, overwrite: bool, ctx: DistributedContext
) -> Path:
    """:func:`~zoo.common.checkpoint.prepare_run_dir` on the main process, then a barrier, so no rank
    starts before the ``out_dir`` rules were applied (the main process raises when they are violated)."""
    if ctx.is_main:
        prepare_run_dir(out_dir, resume=resume, overwrite=overwrite)
    if ctx.is_distributed:
        barrier()
    return Path(out_dir)


@contextlib.contextmanager
def distributed_session(device: str, ctx: DistributedContext | None = None) -> Iterator[DistributedContext]:
    """The ``with`` block a trainer's ``train`` runs in: ``ctx`` as given (a caller such as an ablation
    owns it), else one from ``torchrun``'s environment (:func:`init_distributed`; one process without it)
    that is torn down on exit (:func:`cleanup_distributed`)."""
    if ctx is not None:
        yield ctx
        return
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        cleanup_distributed()


def start_run(train_cfg: TrainConfig, ctx: DistributedContext, *, resume: bool, overwrite: bool) -> Path:
    """The first steps of every trainer's run: claim ``out_dir`` (:func:`claim_out_dir`), seed this rank
    (:func:`~zoo.common.seeding.seed_process`) and apply ``num_threads``. Returns the run directory."""
    out = claim_out_dir(train_cfg.out_dir, resume=resume, overwrite=overwrite, ctx=ctx)
    seed_process(train_cfg.seed, ctx.rank)
    if train_cfg.num_threads is not None:
        torch.set_num_threads(train_cfg.num_threads)
    return out


def wrap_ddp(model: nn.Module, ctx: DistributedContext, **kwargs) -> nn.Module:
    """Wrap in ``DistributedDataParallel`` when running under ``torchrun`` with several ranks."""
    if not ctx.is_distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (identity for a single process). Returns a new tensor."""
    out = value.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


class ShardedEpochSampler(torch.utils.data.Sampler):
    """Deterministic, rank-sharded, resumable shuffling sampler yielding ``(index, sample_seed)``.

    Epoch ``e`` uses permutation ``π_e = randperm(n, generator=seed(seed, e))``; rank ``r`` of ``R``
    takes ``π_e[r::R]`` truncated to ``⌊n / R⌋`` items (every rank the same length, as DDP needs).
    ``sample_seed = derive_seed(seed, "sample", e, index)``.

    Args:
        num_samples: dataset length ``n``.
        batch_size: per-rank batch size (used by ``start_batch``).
        rank, world_size: this process's shard.
        seed: base seed shared by all ranks.
        shuffle: False gives ``0..n-1`` in order (evaluation).

    Example:
        >>> s = ShardedEpochSampler(10, batch_size=2, seed=0)
        >>> s.set_epoch(3, start_batch=1)
        >>> len(list(s))
        8
    """

    def __init__(
        self,
        num_samples: int,
        *,
        batch_size: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if num_samples < world_size:
            raise ValueError(f"num_samples ({num_samples}) must be >= world_size ({world_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def per_rank(self) -> int:
        return self.num_samples // self.world_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and the first per-rank batch to yield (for resuming mid-epoch)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = make_generator(derive_seed(self.seed, "epoch", epoch))
            perm = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            perm = list(range(self.num_samples))
        return perm[self.rank :: self.world_size][: self.per_rank]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        idx = self.indices(self.epoch)[self.start_batch * self.batch_size :]
        for i in idx:
            yield i, derive_seed(self.seed, "sample", self.epoch, i)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start_batch * self.batch_size)


def epoch_batches(loader: Any, sampler: ShardedEpochSampler, start: int) -> Iterator[Any]:
    """Endless batches of ``loader`` starting at per-rank micro-batch ``start`` (resumable).

    The epoch and the offset inside it are derived from ``start``, so a resumed run replays exactly the
    batches an uninterrupted run would have seen (the sampler's order is a function of seed and epoch).
    """
    per_epoch = len(sampler.indices(0)) // loader.batch_size
    if per_epoch == 0:
        raise ValueError(
            f"batch_size {loader.batch_size} exceeds the {len(sampler.indices(0))} samples of this rank"
        )
    epoch, offset = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch, start_batch=offset)
        yield from loader
        epoch, offset = epoch + 1, 0


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere (CPU runs stay in float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

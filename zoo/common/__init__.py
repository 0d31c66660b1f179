"""Pieces shared by the zoo trainers: configs, atomic checkpoints, seeding, logging, ``torchrun`` helpers.

* :mod:`zoo.common.config` -- dataclass config ↔ plain dict / JSON, ``--section.field`` CLI overrides.
* :mod:`zoo.common.checkpoint` -- atomic ``torch.save`` of model/optimiser/scheduler/step/RNG/config,
  loaded with ``torch.load(weights_only=True)``.
* :mod:`zoo.common.seeding` -- stable derived seeds and per-rank/per-worker/per-sample generators.
* :mod:`zoo.common.logging` -- CSV + TensorBoard scalars, tqdm, landmark figures.
* :mod:`zoo.common.distributed` -- process-group init/teardown, DDP wrapping, resumable sharded sampler.
"""

from zoo.common.checkpoint import (
    RUN_ARTIFACTS,
    CheckpointManager,
    RunDirError,
    build_checkpoint,
    capture_rng_state,
    load_checkpoint,
    prepare_run_dir,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)
from zoo.common.config import (
    TrainConfig,
    add_config_arguments,
    apply_overrides,
    config_from_args,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_config,
    save_config,
    trainer_main,
)
from zoo.common.distributed import (
    DistributedContext,
    ShardedEpochSampler,
    all_reduce_mean,
    autocast,
    barrier,
    claim_out_dir,
    cleanup_distributed,
    distributed_session,
    epoch_batches,
    init_distributed,
    resolve_device,
    start_run,
    wrap_ddp,
)
from zoo.common.logging import MetricLogger, landmark_figure, progress, run_summary, save_figure
from zoo.common.seeding import derive_seed, make_generator, sample_generator, seed_process, worker_generator

__all__ = [
    "RUN_ARTIFACTS",
    "CheckpointManager",
    "RunDirError",
    "TrainConfig",
    "DistributedContext",
    "MetricLogger",
    "ShardedEpochSampler",
    "add_config_arguments",
    "all_reduce_mean",
    "apply_overrides",
    "autocast",
    "barrier",
    "build_checkpoint",
    "capture_rng_state",
    "claim_out_dir",
    "cleanup_distributed",
    "distributed_session",
    "config_from_args",
    "config_from_dict",
    "config_to_dict",
    "derive_seed",
    "epoch_batches",
    "init_distributed",
    "landmark_figure",
    "load_checkpoint",
    "read_checkpoint",
    "load_config",
    "make_generator",
    "parse_config",
    "prepare_run_dir",
    "progress",
    "run_summary",
    "resolve_device",
    "restore_rng_state",
    "sample_generator",
    "start_run",
    "save_checkpoint",
    "save_config",
    "save_figure",
    "seed_process",
    "trainer_main",
    "unwrap_model",
    "worker_generator",
    "wrap_ddp",
]

"""Configuration of the BarycenterNet trainer (dataclasses; JSON + ``--section.field`` overrides).

Defaults follow the paper where it is explicit (512² grids, 10k shapes, 100k training pairs, KL loss,
SGD with warm restarts); :func:`smoke_config` and :func:`cpu_config` are the CPU-sized variants used by
the smoke test and the short training run reported in ``README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zoo.common.config import TrainConfig as _SharedTrainConfig

__all__ = [
    "PRESETS",
    "BarycenterNetConfig",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "cpu_config",
    "smoke_config",
]


@dataclass
class ModelConfig:
    """:class:`zoo.barycenter_net.model.BarycenterNet`."""

    width: int = field(default=32, metadata={"help": "channels of the first block (doubled per level)"})
    depth: int = field(default=5, metadata={"help": "2x2 average poolings (size divisible by 2**depth)"})
    max_width: int = field(default=256, metadata={"help": "channel cap of the deep blocks"})


@dataclass
class DataConfig:
    """CSG contour shapes and solver targets (``zoo.barycenter_net.data``)."""

    size: int = field(default=512, metadata={"help": "grid side in pixels (the paper: 512)"})
    num_shapes: int = field(default=10000, metadata={"help": "training shapes (the paper: 10k)"})
    num_pairs: int = field(default=100000, metadata={"help": "training pairs (the paper: 100k)"})
    max_depth: int = field(default=50, metadata={"help": "upper end of the CSG depth mixture"})
    target: Literal["linearized", "convolutional", "debiased"] = field(
        default="linearized", metadata={"help": "solver of the targets (the paper: linearised one-step)"}
    )
    reg: float = field(default=4e-3, metadata={"help": "entropic regularisation, normalised units"})
    augment: bool = field(default=True, metadata={"help": "random flips/transposes (exact symmetries)"})
    cache_dir: str | None = field(
        default="runs/barycenter_net-cache",
        metadata={
            "help": "shape banks and sets are cached here (keyed by the settings); None: in memory (small "
            "grids only: the 512² bank is ~30 GB)"
        },
    )
    data_seed: int = field(default=0, metadata={"help": "seed of shapes, pairs and weights"})


@dataclass
class EvalConfig:
    """Held-out problems built from shapes never seen in training."""

    num_shapes: int = field(default=200, metadata={"help": "held-out shapes"})
    num_problems: int = field(default=100, metadata={"help": "problems per number of inputs"})
    ways: tuple[int, ...] = field(default=(2, 3, 5), metadata={"help": "numbers of inputs evaluated"})
    batch_size: int = 16


@dataclass
class OptimConfig:
    """SGD with warm restarts (Loshchilov & Hutter, SGDR), stepped once per optimiser step."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    restart_steps: int = field(default=2000, metadata={"help": "length of the first cosine cycle (T_0)"})
    restart_mult: int = field(default=2, metadata={"help": "cycle length multiplier (T_mult)"})
    min_lr: float = 1e-4
    max_grad_norm: float | None = 5.0


@dataclass
class TrainConfig(_SharedTrainConfig):
    """Loop, hardware and bookkeeping (the shared fields, this trainer's defaults, and its own)."""

    steps: int = 50000
    out_dir: str = "runs/barycenter_net"
    eval_every: int = 2000
    ckpt_every: int = 1000
    sample_images: int = field(default=4, metadata={"help": "problems per sample figure (0: none)"})
    num_workers: int = 0


@dataclass
class BarycenterNetConfig:
    """Complete trainer configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def smoke_config(out_dir: str = "runs/barycenter_net-tiny") -> BarycenterNetConfig:
    """A seconds-long CPU configuration (16² grids, a 2-level narrow net) for smoke tests."""
    return BarycenterNetConfig(
        model=ModelConfig(width=4, depth=2, max_width=8),
        data=DataConfig(size=16, num_shapes=12, num_pairs=16, max_depth=3, reg=2e-2, cache_dir=None),
        eval=EvalConfig(num_shapes=8, num_problems=3, ways=(2, 3), batch_size=4),
        optim=OptimConfig(restart_steps=2),
        train=TrainConfig(
            steps=3,
            batch_size=4,
            out_dir=out_dir,
            log_every=1,
            eval_every=3,
            ckpt_every=1,
            progress=False,
            tensorboard=False,
        ),
    )


def cpu_config(out_dir: str = "runs/barycenter_net-cpu") -> BarycenterNetConfig:
    """The short CPU run reported in the README (64² grids, 1000 shapes, 8000 pairs)."""
    return BarycenterNetConfig(
        model=ModelConfig(width=16, depth=4, max_width=128),
        data=DataConfig(size=64, num_shapes=1000, num_pairs=8000, cache_dir=None),
        eval=EvalConfig(num_shapes=200, num_problems=100),
        optim=OptimConfig(restart_steps=500),
        train=TrainConfig(steps=1500, out_dir=out_dir, eval_every=500, ckpt_every=500),
    )


#: ``--preset NAME`` of the trainer (the first is the default)
PRESETS = {"gpu": BarycenterNetConfig, "cpu": cpu_config, "smoke": smoke_config}

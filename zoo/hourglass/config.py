"""Configuration of the stacked-hourglass trainer (dataclasses; JSON + ``--section.field`` overrides).

Training modes are switched by three flags that combine freely:

=========================  =================================================================
``aug.classical``          scale ±10 %, rotate ±π/12 with probability 0.3 (the "baseline + aug"
                           column of Table 1 in Bespalov et al., *Data augmentation with manifold
                           barycenters*)
``aug.barycentric``        the sampler's paired warp: a new landmark set from the
                           Wasserstein-barycentric sampler fitted on the *labelled* landmarks, and
                           the image TPS-warped onto it ("baseline + BC")
``elt.enabled``            ``Loss = L_gt + λ_elt · L_elt`` on two views differing by a rotation and a
                           translation, on labelled and unlabelled images (Equivariant Landmark
                           Transformation, thesis eq. 3.9, λ_elt = 0.25)
=========================  =================================================================

All flags off is the supervised baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from zoo.common.config import TrainConfig as _SharedTrainConfig

__all__ = [
    "PRESETS",
    "AugConfig",
    "DataConfig",
    "EltConfig",
    "HourglassConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "cpu_config",
    "gpu_config",
    "smoke_config",
]


@dataclass
class ModelConfig:
    """Stacked hourglass (Newell, Yang & Deng, 2016)."""

    stacks: int = field(default=2, metadata={"help": "number of stacked hourglasses"})
    width: int = field(default=128, metadata={"help": "feature channels inside the hourglasses"})
    depth: int = field(default=4, metadata={"help": "down-sampling levels per hourglass"})
    blocks: int = field(default=1, metadata={"help": "residual blocks per level"})
    heatmap_stride: Literal[1, 2, 4] = field(default=4, metadata={"help": "image / heatmap size ratio"})
    backbone: str | None = field(
        default=None, metadata={"help": "timm model name used as the stem (pretrained=False), e.g. resnet18"}
    )
    sigma: float = field(default=1.5, metadata={"help": "target Gaussian std in heatmap pixels"})
    soft_argmax_temperature: float = field(
        default=0.1, metadata={"help": "softmax temperature of the differentiable decoder (ELT loss)"}
    )


@dataclass
class DataConfig:
    """Data: any wbaug reader; the embedded synthetic faces by default."""

    dataset: str = field(
        default="synthetic",
        metadata={"help": "synthetic | 300w | wflw | celeba | h36m | folder (wbaug.datasets readers)"},
    )
    root: str | None = field(default=None, metadata={"help": "dataset root for file-based readers"})
    layout: str = field(default="ibug68", metadata={"help": "landmark layout (wbaug.landmarks.get_layout)"})
    image_size: int = field(default=128, metadata={"help": "square network input size in pixels"})
    render_size: int | None = field(
        default=None, metadata={"help": "synthetic faces: rendering resolution (None: image_size)"}
    )
    face_crop: bool = field(
        default=False,
        metadata={"help": "crop a square landmark box (× crop_margin) to the canvas (file readers: always)"},
    )
    crop_margin: float = field(default=1.25, metadata={"help": "box side / landmark extent of the face crop"})
    num_train: int = field(default=2000, metadata={"help": "training images (synthetic data)"})
    num_val: int = field(
        default=100,
        metadata={"help": "synthetic: validation images for the plateau schedule (0: use the test split)"},
    )
    num_test: int = field(default=300, metadata={"help": "held-out test images (synthetic data)"})
    label_budget: int | None = field(
        default=None, metadata={"help": "labelled training images; the rest are unlabelled (None: all)"}
    )
    data_seed: int = field(default=0, metadata={"help": "seed of the synthetic data and the label split"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers per rank"})
    cache_images: bool = field(
        default=False, metadata={"help": "keep decoded canvas images in memory (small data sets)"}
    )


@dataclass
class AugConfig:
    """Classical and barycentric augmentation."""

    classical: bool = False
    classical_p: float = 0.3
    scale: float = field(default=0.1, metadata={"help": "relative scale range ±scale"})
    rotate: float = field(default=math.pi / 12, metadata={"help": "rotation range ±rotate (radians)"})
    barycentric: bool = False
    barycentric_p: float = field(default=0.5, metadata={"help": "probability of the barycentric warp"})
    k_neighbors: int = field(default=6, metadata={"help": "sampler neighbourhood graph k"})
    concentration: float = field(default=1.0, metadata={"help": "Dirichlet concentration of the weights"})
    tps_grid_stride: int = field(
        default=1, metadata={"help": "TPS map evaluated every n pixels and upsampled (1: exact)"}
    )
    correspondence: Literal["index", "ot"] = field(
        default="index", metadata={"help": "landmark correspondence of the sampler (ordered faces: index)"}
    )


@dataclass
class EltConfig:
    """Equivariant landmark transformation loss (thesis eq. 3.9)."""

    enabled: bool = False
    weight: float = field(default=0.25, metadata={"help": "λ_elt"})
    rotate: float = field(default=math.pi / 4, metadata={"help": "view rotation range ±rotate (radians)"})
    translate: float = field(default=0.05, metadata={"help": "view translation range ±translate·size"})
    loss: Literal["l2", "l1", "smooth_l1", "euclidean"] = field(
        default="l2", metadata={"help": "point loss of L_elt (thesis: squared distance)"}
    )
    symmetric: bool = field(
        default=True, metadata={"help": "average both directions (each against the detached other view)"}
    )
    unlabelled: bool = field(default=True, metadata={"help": "also apply L_elt to unlabelled images"})
    unlabelled_batch_size: int | None = field(default=None, metadata={"help": "None: same as labelled"})


@dataclass
class OptimConfig:
    """Adam with plateau decay (thesis §4: lr 1e-3, ×0.1 on plateau, stop at 1e-5)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    plateau_factor: float = 0.1
    plateau_patience: int = field(default=5, metadata={"help": "evaluations without improvement"})
    min_lr: float = 1e-5
    early_stop: bool = field(
        default=True, metadata={"help": "stop once lr reached min_lr and the plateau patience ran out again"}
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimiser step"})
    max_grad_norm: float | None = None


@dataclass
class TrainConfig(_SharedTrainConfig):
    """Loop, hardware and bookkeeping (the shared fields, this trainer's defaults, and its own)."""

    steps: int = 20000
    out_dir: str = "runs/hourglass"
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    eval_batch_size: int = 64


@dataclass
class HourglassConfig:
    """Complete trainer configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    elt: EltConfig = field(default_factory=EltConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def mode_name(self) -> str:
        """Short name of the training mode: ``supervised``, ``classical+barycentric+elt`` ..."""
        parts = [
            name
            for name, on in (
                ("classical", self.aug.classical),
                ("barycentric", self.aug.barycentric),
                ("elt", self.elt.enabled),
            )
            if on
        ]
        return "+".join(parts) if parts else "supervised"


def smoke_config(out_dir: str = "runs/hourglass-smoke") -> HourglassConfig:
    """``--preset smoke``: seconds on a CPU (64×64 images, one narrow 2-level stack, 2 steps); the tests."""
    return HourglassConfig(
        model=ModelConfig(stacks=1, width=16, depth=2, blocks=1, heatmap_stride=4, sigma=1.5),
        data=DataConfig(image_size=64, num_train=32, num_val=0, num_test=16),
        train=TrainConfig(
            steps=2,
            batch_size=4,
            out_dir=out_dir,
            log_every=1,
            eval_every=2,
            ckpt_every=1,
            sample_images=4,
            progress=False,
            eval_batch_size=8,
        ),
    )


def cpu_config(out_dir: str = "runs/hourglass-cpu") -> HourglassConfig:
    """``--preset cpu``: a reduced real run for a 2-core CPU (64×64 face crops rendered at 128 px, one
    3-level stack of width 32, 3000 steps of 16): the size of the README's CPU ablation."""
    cfg = HourglassConfig()
    cfg.model = ModelConfig(stacks=1, width=32, depth=3, blocks=1, heatmap_stride=4, sigma=1.5)
    cfg.data.image_size = 64
    cfg.data.render_size = 128  # render finer, then crop the face box (× 1.25) to 64 × 64
    cfg.data.face_crop = True
    cfg.train.steps = 3000
    cfg.train.batch_size = 16
    cfg.train.eval_batch_size = 100
    cfg.train.device = "cpu"
    cfg.train.amp = False
    cfg.train.out_dir = out_dir
    return cfg


def gpu_config(out_dir: str = "runs/hourglass") -> HourglassConfig:
    """``--preset gpu`` (the default): the dataclass defaults, Newell et al.'s two stacks of width 128 on
    128×128 images, 20 000 steps, bf16 autocast on CUDA."""
    cfg = HourglassConfig()
    cfg.train.out_dir = out_dir
    return cfg


#: ``--preset NAME`` of the trainer (the first is the default)
PRESETS = {"gpu": gpu_config, "cpu": cpu_config, "smoke": smoke_config}

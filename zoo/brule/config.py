"""Configuration of the BRULÉ trainer (Bespalov, Buzun & Dylov, *BRULÉ: Barycenter-Regularized
Unsupervised Landmark Extraction*: §2 Algorithms 1-2, §3 architecture, §4 losses, §5 coefficients).

Presets (``python -m zoo.brule.train --preset NAME``):

=========  ===================================================================================
``smoke``  seconds on a CPU: 32 px, tiny widths, 6 iterations (tests, CLI checks)
``cpu``    a reduced run for 2 CPU cores: 64 px, narrow networks, 600 synthetic training images,
           label budget 100 (barycenter and linear probe), a few hundred iterations
``gpu``    the paper's recipe: 256 px, 64×64 encoder heatmaps (hourglass stride 4), 14×512 styles,
           §5 coefficients, bf16 autocast, 100k iterations
=========  ===================================================================================

The dataclass defaults are the paper's values (§5: ``c1 = 30, c2 = 1e4, c3 = 30, λ = 80``;
``c5 = c6 = 20, c7 = 1e5, c8 = 5, c9 = 10, c10 = 1``; ``c11 = c12 = c13 = 1``; R1 every 4, the restore
block every 5, the encoder step every 3 iterations); the smaller presets shrink the networks and the run,
never the coefficients. :func:`validate_config` checks every value and names the offending field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zoo.common.config import TrainConfig as _SharedTrainConfig

__all__ = [
    "PRESETS",
    "BruleConfig",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "cpu_config",
    "gpu_config",
    "smoke_config",
    "validate_config",
]


@dataclass
class ModelConfig:
    """Networks (§3): hourglass encoder L, conditional generator G, style encoder S, S_o, conditional D."""

    image_size: int = field(default=256, metadata={"help": "square image side (power of two)"})
    num_landmarks: int | None = field(
        default=None, metadata={"help": "K discovered landmarks (None: the layout's N; semi-supervised: N)"}
    )
    hg_stacks: int = field(default=2, metadata={"help": "encoder: stacked hourglasses"})
    hg_width: int = field(default=128, metadata={"help": "encoder: hourglass width"})
    hg_depth: int = field(default=4, metadata={"help": "encoder: hourglass levels"})
    hg_stride: int = field(default=4, metadata={"help": "image / heatmap side (4: 64x64 maps at 256 px)"})
    sigma: float = field(
        default=1.0, metadata={"help": "L_sp width in heatmap pixels (Alg. 2: exp(-|mesh - X|^2 / 2))"}
    )
    w_dim: int = field(default=512, metadata={"help": "style dimension"})
    z_dim: int = field(default=512, metadata={"help": "noise dimension of S_o"})
    mapping_layers: int = field(default=8, metadata={"help": "FC layers of S_o"})
    channel_base: int = field(default=16384, metadata={"help": "G channels: min(base / res, max)"})
    channel_max: int = field(default=512, metadata={"help": "G channel cap"})
    pyramid_channels: int = field(default=32, metadata={"help": "heatmap-pyramid channels per resolution"})
    fused_modconv: bool = field(default=False, metadata={"help": "grouped-conv modulation"})
    style_width: int = field(default=32, metadata={"help": "first width of the style encoder S"})
    style_max: int = field(default=256, metadata={"help": "channel cap of S"})
    d_channel_base: int = field(default=16384, metadata={"help": "D channels: min(base / res, max)"})
    d_channel_max: int = field(default=512, metadata={"help": "D channel cap"})
    mbstd_group: int = field(default=4, metadata={"help": "minibatch-stddev group size"})


@dataclass
class DataConfig:
    """All training images, a label budget (barycenter; probe; semi-supervised labels), the test split."""

    dataset: str = field(
        default="synthetic", metadata={"help": "synthetic | 300w | wflw | celeba | h36m | folder"}
    )
    root: str | None = field(default=None, metadata={"help": "dataset root for file-based readers"})
    layout: str = field(default="ibug68", metadata={"help": "landmark layout (eye corners for the IOD)"})
    num_train: int = field(default=3000, metadata={"help": "synthetic: training images"})
    num_test: int = field(default=300, metadata={"help": "synthetic: held-out images"})
    label_budget: int = field(
        default=300,
        metadata={
            "help": "labelled training images: the barycenter's landmarks, the linear probe, "
            "and the supervised term in semi-supervised mode"
        },
    )
    data_seed: int = field(default=0, metadata={"help": "seed of the synthetic data and the label subset"})
    barycenter_file: str | None = field(
        default=None, metadata={"help": "(N_b, 2) barycenter in canvas pixels (.pt / .npy); None: computed"}
    )
    barycenter_iters: int = field(default=100, metadata={"help": "free-support barycenter iterations"})
    cache_images: bool = field(default=True, metadata={"help": "keep decoded images in memory"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers per rank"})


@dataclass
class LossConfig:
    """Algorithms 1-2 with the §5 coefficients; the mode; the random geometric transforms g."""

    mode: Literal["unsupervised", "semi_supervised"] = field(
        default="unsupervised",
        metadata={"help": "unsupervised (barycenter only) | semi_supervised (labels; R_b off, §5)"},
    )
    # ---- Algorithm 1 (GAN side)
    r1_gamma: float = field(default=80.0, metadata={"help": "lambda of the R1 penalty (§5: 80)"})
    r1_every: int = field(default=4, metadata={"help": "R1 on iterations = 0 mod r1_every (Alg. 1: 4)"})
    restore_every: int = field(default=5, metadata={"help": "restore/style block interval (Alg. 1: 5)"})
    c1: float = field(default=30.0, metadata={"help": "L1 of I_R = G(gL, S(I)) against gI"})
    c2: float = field(default=1e4, metadata={"help": "H(L(I_F) || gL)"})
    c3: float = field(default=30.0, metadata={"help": "L_style(S(I_F))"})
    # ---- Algorithm 2 (encoder side)
    encoder_every: int = field(default=3, metadata={"help": "encoder step interval (Alg. 2: 3)"})
    c5: float = field(default=20.0, metadata={"help": "R_b(X_L), barycenter regulariser"})
    c6: float = field(default=20.0, metadata={"help": "R_g(L), geometric regulariser"})
    c7: float = field(default=1e5, metadata={"help": "H(L || L_sp), heatmap concentration"})
    c8: float = field(default=5.0, metadata={"help": "L_D(L), adversarial term"})
    c9: float = field(default=10.0, metadata={"help": "|I_R - I|_1 with I_R = G(L_sp, S(I))"})
    c10: float = field(default=1.0, metadata={"help": "H(L(I_F) || L)"})
    c11: float = field(default=1.0, metadata={"help": "R_b: translation term"})
    c12: float = field(default=1.0, metadata={"help": "R_b: linear (rotation, scale) term"})
    c13: float = field(default=1.0, metadata={"help": "R_b: warp term to the barycenter"})
    supervised: float = field(
        default=1e5, metadata={"help": "semi-supervised: H(L || Gaussians of the labels) (c7's scale)"}
    )
    # ---- g: random affine + elastic, applied to image and heatmap together
    g_rotate: float = field(default=math.pi / 12, metadata={"help": "g: rotation range (radians)"})
    g_scale: float = field(default=0.1, metadata={"help": "g: isotropic scale range ±"})
    g_shear: float = field(default=0.05, metadata={"help": "g: shear / anisotropy range ±"})
    g_translate: float = field(default=0.05, metadata={"help": "g: translation range ± (image fraction)"})
    g_elastic: float = field(default=0.02, metadata={"help": "g: elastic displacement std (image fraction)"})
    g_elastic_grid: int = field(default=4, metadata={"help": "g: control grid of the elastic field"})


@dataclass
class OptimConfig:
    """Adam per part: G + S_o + S (Alg. 1), D (lazy R1), the encoder L (Alg. 2)."""

    lr_g: float = field(default=2e-4, metadata={"help": "generator G, S_o and style encoder S"})
    lr_d: float = field(default=2e-4, metadata={"help": "discriminator D"})
    lr_l: float = field(default=1e-4, metadata={"help": "landmark encoder L"})
    betas: tuple[float, float] = field(default=(0.0, 0.99), metadata={"help": "Adam betas (StyleGAN2)"})


@dataclass
class TrainConfig(_SharedTrainConfig):
    """Loop, hardware and bookkeeping (the shared fields, this trainer's defaults, and its own)."""

    steps: int = 100000
    batch_size: int = field(default=8, metadata={"help": "per-rank batch"})
    out_dir: str = "runs/brule"
    log_every: int = 100
    eval_every: int = 5000
    ckpt_every: int = 2000
    sample_every: int = 2000
    eval_batch_size: int = 32


@dataclass
class BruleConfig:
    """Complete trainer configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def semi_supervised(self) -> bool:
        return self.loss.mode == "semi_supervised"


def smoke_config(out_dir: str = "runs/brule-smoke") -> BruleConfig:
    """Seconds on a CPU: 32 px, 16x16 heatmaps, tiny networks, 6 iterations (0-5: every schedule fires)."""
    return BruleConfig(
        model=ModelConfig(
            image_size=32,
            hg_stacks=1,
            hg_width=8,
            hg_depth=2,
            hg_stride=2,
            w_dim=8,
            z_dim=8,
            mapping_layers=2,
            channel_base=128,
            channel_max=8,
            pyramid_channels=4,
            style_width=4,
            style_max=8,
            d_channel_base=128,
            d_channel_max=8,
        ),
        data=DataConfig(num_train=12, num_test=6, label_budget=6, barycenter_iters=10),
        train=TrainConfig(
            steps=6,
            batch_size=4,
            out_dir=out_dir,
            log_every=1,
            eval_every=6,
            ckpt_every=3,
            sample_every=6,
            sample_images=4,
            progress=False,
            tensorboard=False,
            eval_batch_size=6,
            num_threads=1,
        ),
    )


def cpu_config(out_dir: str = "runs/brule-cpu") -> BruleConfig:
    """A reduced run for 2 CPU cores: 64 px, 32x32 heatmaps, narrow networks, budget 100."""
    return BruleConfig(
        model=ModelConfig(
            image_size=64,
            hg_stacks=1,
            hg_width=32,
            hg_depth=3,
            hg_stride=2,
            w_dim=32,
            z_dim=32,
            mapping_layers=3,
            channel_base=512,
            channel_max=32,
            pyramid_channels=8,
            style_width=8,
            style_max=32,
            d_channel_base=512,
            d_channel_max=32,
        ),
        data=DataConfig(num_train=600, num_test=100, label_budget=100, barycenter_iters=50),
        train=TrainConfig(
            steps=600,
            batch_size=8,
            out_dir=out_dir,
            log_every=25,
            eval_every=300,
            ckpt_every=100,
            sample_every=300,
            eval_batch_size=50,
        ),
    )


def gpu_config(out_dir: str = "runs/brule-gpu") -> BruleConfig:
    """The paper's 256 px recipe (§3, §5): every default, bf16 autocast on CUDA."""
    return BruleConfig(
        data=DataConfig(num_train=3000, num_test=300, label_budget=300, num_workers=4),
        train=TrainConfig(out_dir=out_dir),
    )


PRESETS = {"smoke": smoke_config, "cpu": cpu_config, "gpu": gpu_config}


#: integer fields and their smallest allowed value (checked by :func:`validate_config`)
_AT_LEAST = {
    **dict.fromkeys(
        [
            f"model.{k}"
            for k in (
                "hg_stacks",
                "hg_width",
                "hg_depth",
                "w_dim",
                "z_dim",
                "mapping_layers",
                "channel_base",
                "channel_max",
                "pyramid_channels",
                "style_width",
                "style_max",
                "d_channel_base",
                "d_channel_max",
                "mbstd_group",
            )
        ]
        + [f"data.{k}" for k in ("num_train", "num_test", "label_budget", "barycenter_iters")]
        + [f"loss.{k}" for k in ("r1_every", "restore_every", "encoder_every")]
        + [
            f"train.{k}"
            for k in (
                "steps",
                "batch_size",
                "log_every",
                "eval_every",
                "ckpt_every",
                "sample_every",
                "eval_batch_size",
            )
        ],
        1,
    ),
    "loss.g_elastic_grid": 2,
    "data.num_workers": 0,
    "train.keep_checkpoints": 0,
    "train.sample_images": 0,
}
#: loss weights and transform ranges: finite and non-negative
_NON_NEGATIVE = [
    f"loss.{k}"
    for k in (
        "r1_gamma",
        "c1",
        "c2",
        "c3",
        "c5",
        "c6",
        "c7",
        "c8",
        "c9",
        "c10",
        "c11",
        "c12",
        "c13",
        "supervised",
        "g_rotate",
        "g_scale",
        "g_shear",
        "g_translate",
        "g_elastic",
    )
]


def _require(ok: bool, name: str, message: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} {message}, got {value!r}")


def _value(cfg: BruleConfig, dotted: str) -> object:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def validate_config(cfg: BruleConfig) -> BruleConfig:
    """Check every value of ``cfg``; raise ``ValueError`` naming the field (``loss.c5 ...``).

    Returns:
        ``cfg`` unchanged.
    """
    for dotted, low in _AT_LEAST.items():
        value = _value(cfg, dotted)
        _require(value >= low, dotted, f"must be >= {low}", value)
    for dotted in _NON_NEGATIVE:
        value = _value(cfg, dotted)
        _require(math.isfinite(value) and value >= 0, dotted, "must be finite and >= 0", value)
    m, d, lo, o, t = cfg.model, cfg.data, cfg.loss, cfg.optim, cfg.train
    size = m.image_size
    _require(size >= 8 and size & (size - 1) == 0, "model.image_size", "must be a power of two >= 8", size)
    _require(m.hg_stride in (1, 2, 4), "model.hg_stride", "must be 1, 2 or 4", m.hg_stride)
    side = m.hg_stride * 2**m.hg_depth
    _require(
        size % side == 0,
        "model.hg_depth",
        f"needs image_size divisible by hg_stride·2^depth ({side})",
        m.hg_depth,
    )
    _require(m.sigma > 0 and math.isfinite(m.sigma), "model.sigma", "must be positive", m.sigma)
    if m.num_landmarks is not None:
        _require(m.num_landmarks >= 1, "model.num_landmarks", "must be >= 1 or None", m.num_landmarks)
    if d.dataset == "synthetic":
        _require(
            d.label_budget <= d.num_train,
            "data.label_budget",
            f"must be <= data.num_train ({d.num_train})",
            d.label_budget,
        )
    if d.barycenter_file is not None:
        path = Path(d.barycenter_file)
        _require(
            path.is_file() and path.suffix in (".pt", ".npy"),
            "data.barycenter_file",
            "must name an existing .pt or .npy file",
            d.barycenter_file,
        )
    if cfg.semi_supervised:
        _require(
            t.batch_size <= d.label_budget,
            "train.batch_size",
            f"must be <= data.label_budget ({d.label_budget}) in semi_supervised mode",
            t.batch_size,
        )
    _require(lo.g_scale < 1, "loss.g_scale", "must be < 1", lo.g_scale)
    _require(lo.g_shear < 1, "loss.g_shear", "must be < 1", lo.g_shear)
    for name in ("lr_g", "lr_d", "lr_l"):
        value = getattr(o, name)
        _require(value > 0 and math.isfinite(value), f"optim.{name}", "must be positive", value)
    _require(all(0.0 <= b < 1.0 for b in o.betas), "optim.betas", "must lie in [0, 1)", o.betas)
    if t.num_threads is not None:
        _require(t.num_threads >= 1, "train.num_threads", "must be >= 1 or None", t.num_threads)
    return cfg

"""Configuration of the unpaired landmark CycleGAN (Bespalov et al., *Data augmentation with manifold
barycenters*, §3 Algorithm 1, §4 losses, §5 architecture, §6.1 hyper-parameters).

Presets (``python -m zoo.cyclegan.train --preset NAME``):

=========  ===================================================================================
``smoke``  seconds on a CPU: 64 px, tiny widths, 4 steps (tests, CLI checks)
``cpu``    a reduced run that fits well inside an hour on 2 CPU cores: 64 px, narrow networks,
           1 000 synthetic training images, budget 100 landmark sets (+ barycenters)
``gpu``    the paper's recipe: 256 px, 14×512 styles, batch 8, σ = 4, §6.1 coefficients and
           learning rates, 150k iterations, bf16 autocast
=========  ===================================================================================

The dataclass defaults are the paper's values (the ``gpu`` preset only adds the run length and the
data size); the other presets shrink the architecture and the run, never the loss coefficients.
:func:`validate_config` checks every value and names the offending field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zoo.common.config import TrainConfig as _SharedTrainConfig

__all__ = [
    "PRESETS",
    "CycleGANConfig",
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
    """Networks (§5): G_I (modulated-conv generator + heatmap pyramid), S_o, S, G_L, D_I, D_L."""

    image_size: int = field(default=256, metadata={"help": "square image/heatmap side (power of two)"})
    w_dim: int = field(default=512, metadata={"help": "style dimension (the paper: 14 x 512 at 256 px)"})
    z_dim: int = field(default=512, metadata={"help": "noise dimension of S_o"})
    mapping_layers: int = field(default=8, metadata={"help": "FC layers of the mapping network S_o"})
    channel_base: int = field(default=16384, metadata={"help": "G_I channels: min(base / res, max)"})
    channel_max: int = field(default=512, metadata={"help": "G_I channel cap"})
    pyramid_channels: int = field(default=32, metadata={"help": "heatmap-pyramid channels per resolution"})
    fused_modconv: bool = field(
        default=False, metadata={"help": "grouped-conv modulation (True) or scale-activations form (False)"}
    )
    style_encoder: Literal["cnn", "psp"] = field(
        default="cnn",
        metadata={"help": "S: a plain CNN, or pSp's feature pyramid + per-latent heads (image_size >= 64)"},
    )
    style_width: int = field(default=32, metadata={"help": "first width of the style encoder S"})
    style_max: int = field(default=256, metadata={"help": "channel cap of the style encoder"})
    hg_stacks: int = field(default=2, metadata={"help": "G_L: stacked hourglasses"})
    hg_width: int = field(default=128, metadata={"help": "G_L: hourglass width"})
    hg_depth: int = field(default=4, metadata={"help": "G_L: hourglass levels"})
    hg_channels: int = field(
        default=68, metadata={"help": "G_L: hourglass output maps before the strided convs"}
    )
    d_channel_base: int = field(default=16384, metadata={"help": "D_I / D_L channels: min(base / res, max)"})
    d_channel_max: int = field(default=512, metadata={"help": "discriminator channel cap"})
    mbstd_group: int = field(default=4, metadata={"help": "minibatch-stddev group size"})
    sigma: float = field(
        default=4.0, metadata={"help": "Gaussian heatmap std in pixels (eq. 1; 4 at 256 px)"}
    )
    ordered: bool = field(
        default=False,
        metadata={"help": "one heatmap channel per landmark (True) or the summed heatmap (False, paper)"},
    )


@dataclass
class DataConfig:
    """Unpaired domains: all training images; landmarks from a label budget (+ barycenters, + classical)."""

    dataset: str = field(
        default="synthetic", metadata={"help": "synthetic | 300w | wflw | celeba | h36m | folder"}
    )
    root: str | None = field(default=None, metadata={"help": "dataset root for file-based readers"})
    layout: str = field(default="ibug68", metadata={"help": "landmark layout (eye corners for the NME)"})
    num_train: int = field(default=3000, metadata={"help": "synthetic: training images"})
    num_test: int = field(default=300, metadata={"help": "synthetic: held-out images for evaluation"})
    label_budget: int = field(default=300, metadata={"help": "landmark sets available (100 / 300 / 600)"})
    data_seed: int = field(default=0, metadata={"help": "seed of the synthetic data and the label subset"})
    barycentric: bool = field(default=True, metadata={"help": "add Wasserstein-barycentric samples"})
    num_barycenters: int = field(default=7000, metadata={"help": "N_aug (§6.1: 7000)"})
    k_neighbors: int = field(default=6, metadata={"help": "sampler kNN graph k (§6.1: 6)"})
    concentration: float = field(default=1.0, metadata={"help": "Dirichlet concentration"})
    correspondence: Literal["auto", "ot", "index"] = field(
        default="auto", metadata={"help": "sampler correspondence; auto: index if model.ordered else ot"}
    )
    classical: bool = field(default=False, metadata={"help": "classical landmark augmentation"})
    classical_p: float = field(default=0.3, metadata={"help": "probability of the classical similarity"})
    scale: float = field(default=0.1, metadata={"help": "classical: relative scale range ±scale"})
    rotate: float = field(default=math.pi / 12, metadata={"help": "classical: rotation range (radians)"})
    cache_images: bool = field(default=True, metadata={"help": "keep decoded images in memory"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers per rank"})


@dataclass
class LossConfig:
    """§4 losses with the §6.1 coefficients."""

    image_cycle: float = field(default=150.0, metadata={"help": "c1 of the image cycle L^I_rec"})
    perceptual: float = field(default=0.8, metadata={"help": "L^I_rec c1 (perceptual term)"})
    identity: float = field(default=0.1, metadata={"help": "L^I_rec c2 (identity; needs identity_weights)"})
    l1: float = field(default=1.0, metadata={"help": "L^I_rec c3 (L1)"})
    perceptual_backend: Literal["ssim_fm", "user"] = field(
        default="ssim_fm",
        metadata={
            "help": "ssim_fm: 1-SSIM + D_I feature matching (no weights); user: a user-given perceptual "
            "distance (e.g. an exported LPIPS; TorchScript .pt or torch.export .pt2) from perceptual_weights"
        },
    )
    perceptual_weights: str | None = field(
        default=None, metadata={"help": "perceptual net file (.pt / .pt2)"}
    )
    identity_weights: str | None = field(
        default=None, metadata={"help": "identity embedder file (.pt / .pt2; None: term off)"}
    )
    ssim_window: int = field(default=11, metadata={"help": "SSIM window (odd)"})
    feature_matching: float = field(
        default=1.0, metadata={"help": "weight of D_I feature matching in ssim_fm"}
    )
    landmark_cycle: float = field(default=1.5, metadata={"help": "c2 of the landmark cycle L^L_rec"})
    heatmap_bce: float = field(
        default=1e4,
        metadata={
            "help": "L^L_rec c1: per-pixel binary cross-entropy of the heatmaps (the paper's H[L_R|L])"
        },
    )
    wasserstein: float = field(default=100.0, metadata={"help": "L^L_rec c2: W1 on [0, 1] coordinates"})
    style: float = field(default=10.0, metadata={"help": "c of L^I_g: ||S(I_F) - S_o||_1"})
    r1_gamma: float = field(default=10.0, metadata={"help": "R1 weight gamma (penalty gamma/2 E||grad||^2)"})
    r1_every: int = field(default=4, metadata={"help": "lazy R1 interval (Algorithm 1: 4)"})
    g_rotate: float = field(default=math.pi / 12, metadata={"help": "g before S(gI): rotation range"})
    g_scale: float = field(default=0.1, metadata={"help": "g before S(gI): scale range"})
    g_translate: float = field(default=0.05, metadata={"help": "g before S(gI): translation / size"})


@dataclass
class OptimConfig:
    """Adam per network (§6.1 learning rates), shadow EMA of both generators."""

    lr_g: float = field(default=2e-4, metadata={"help": "image generator G_I and mapping S_o"})
    lr_d: float = field(default=4e-4, metadata={"help": "discriminators D_I and D_L"})
    lr_gl: float = field(default=2e-5, metadata={"help": "landmark encoder G_L"})
    lr_s: float = field(default=1e-5, metadata={"help": "style encoder S"})
    betas: tuple[float, float] = field(default=(0.0, 0.99), metadata={"help": "Adam betas (StyleGAN2)"})
    ema_kimg: float = field(default=10.0, metadata={"help": "EMA half-life in thousands of images"})
    max_grad_norm: float | None = field(default=None, metadata={"help": "clip generator gradients"})


@dataclass
class TrainConfig(_SharedTrainConfig):
    """Loop, hardware and bookkeeping (the shared fields, this trainer's defaults, and its own)."""

    steps: int = 150000
    batch_size: int = field(default=8, metadata={"help": "per-rank batch (images and landmark sets)"})
    out_dir: str = "runs/cyclegan"
    log_every: int = 100
    eval_every: int = 5000
    ckpt_every: int = 2000
    sample_every: int = 2000
    eval_batch_size: int = 32


@dataclass
class CycleGANConfig:
    """Complete trainer configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def mode_name(self) -> str:
        """Table 1 row: ``baseline``, ``baseline+aug``, ``baseline+BC`` or ``baseline+aug+BC``."""
        parts = ["baseline"]
        if self.data.classical:
            parts.append("aug")
        if self.data.barycentric:
            parts.append("BC")
        return "+".join(parts)

    @property
    def correspondence(self) -> str:
        """The sampler's correspondence: ``data.correspondence`` or, for ``auto``, by ``model.ordered``."""
        if self.data.correspondence != "auto":
            return self.data.correspondence
        return "index" if self.model.ordered else "ot"


def smoke_config(out_dir: str = "runs/cyclegan-smoke") -> CycleGANConfig:
    """Seconds on a CPU: 64 px, tiny networks, 4 iterations (0-3; lazy R1 at iteration 0), one thread."""
    return CycleGANConfig(
        model=ModelConfig(
            image_size=64,
            w_dim=16,
            z_dim=16,
            mapping_layers=2,
            channel_base=256,
            channel_max=16,
            pyramid_channels=4,
            style_width=8,
            style_max=16,
            hg_stacks=1,
            hg_width=16,
            hg_depth=2,
            hg_channels=8,
            d_channel_base=256,
            d_channel_max=16,
            sigma=1.5,
        ),
        data=DataConfig(num_train=16, num_test=8, label_budget=8, num_barycenters=16, k_neighbors=3),
        loss=LossConfig(ssim_window=5),
        train=TrainConfig(
            steps=4,
            batch_size=4,
            out_dir=out_dir,
            log_every=1,
            eval_every=4,
            ckpt_every=2,
            sample_every=4,
            sample_images=4,
            progress=False,
            tensorboard=False,
            eval_batch_size=8,
            num_threads=1,
        ),
    )


def cpu_config(out_dir: str = "runs/cyclegan-cpu") -> CycleGANConfig:
    """A reduced run for 2 CPU cores (well inside an hour): 64 px, narrow networks, budget 100."""
    return CycleGANConfig(
        model=ModelConfig(
            image_size=64,
            w_dim=64,
            z_dim=64,
            mapping_layers=4,
            channel_base=1024,
            channel_max=64,
            pyramid_channels=8,
            style_width=16,
            style_max=64,
            hg_stacks=1,
            hg_width=32,
            hg_depth=3,
            hg_channels=16,
            d_channel_base=1024,
            d_channel_max=64,
            sigma=1.5,
        ),
        data=DataConfig(num_train=1000, num_test=200, label_budget=100, num_barycenters=2000),
        loss=LossConfig(ssim_window=7),
        optim=OptimConfig(ema_kimg=1.0),
        train=TrainConfig(
            steps=1000,
            batch_size=8,
            out_dir=out_dir,
            log_every=25,
            eval_every=250,
            ckpt_every=250,
            sample_every=250,
            eval_batch_size=50,
        ),
    )


def gpu_config(out_dir: str = "runs/cyclegan-gpu") -> CycleGANConfig:
    """The paper's 256 px recipe (§5, §6.1): every default, 150k iterations of batch 8."""
    return CycleGANConfig(
        data=DataConfig(num_train=3000, num_test=300, label_budget=300, num_workers=4),
        train=TrainConfig(out_dir=out_dir),
    )


PRESETS = {"smoke": smoke_config, "cpu": cpu_config, "gpu": gpu_config}


def _require(ok: bool, name: str, message: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} {message}, got {value!r}")


def validate_config(cfg: CycleGANConfig) -> CycleGANConfig:
    """Check every value of ``cfg``; raise ``ValueError`` naming the field (``model.image_size ...``).

    Returns:
        ``cfg`` unchanged.
    """
    m, d, lo, o, t = cfg.model, cfg.data, cfg.loss, cfg.optim, cfg.train
    size = m.image_size
    _require(size >= 8 and size & (size - 1) == 0, "model.image_size", "must be a power of two >= 8", size)
    for name in (
        "w_dim",
        "z_dim",
        "mapping_layers",
        "channel_base",
        "channel_max",
        "pyramid_channels",
        "style_width",
        "style_max",
        "hg_stacks",
        "hg_width",
        "hg_depth",
        "hg_channels",
        "d_channel_base",
        "d_channel_max",
        "mbstd_group",
    ):
        value = getattr(m, name)
        _require(value >= 1, f"model.{name}", "must be >= 1", value)
    _require(
        size % (4 * 2**m.hg_depth) == 0,
        "model.hg_depth",
        "needs image_size divisible by 4·2^depth",
        m.hg_depth,
    )
    _require(m.sigma > 0, "model.sigma", "must be positive", m.sigma)
    _require(
        m.style_encoder == "cnn" or (m.style_encoder == "psp" and size >= 64),
        "model.style_encoder",
        "must be 'cnn' or 'psp' ('psp' needs image_size >= 64)",
        m.style_encoder,
    )
    for name in ("num_train", "num_test", "label_budget", "k_neighbors"):
        value = getattr(d, name)
        _require(value >= 1, f"data.{name}", "must be >= 1", value)
    if d.dataset == "synthetic":
        _require(
            d.label_budget <= d.num_train,
            "data.label_budget",
            f"must be <= data.num_train ({d.num_train})",
            d.label_budget,
        )
    if d.barycentric:
        _require(
            d.num_barycenters >= 1,
            "data.num_barycenters",
            "must be >= 1 with data.barycentric",
            d.num_barycenters,
        )
        _require(
            d.k_neighbors < d.label_budget,
            "data.k_neighbors",
            f"must be < data.label_budget ({d.label_budget})",
            d.k_neighbors,
        )
    _require(d.concentration > 0, "data.concentration", "must be positive", d.concentration)
    _require(0.0 <= d.classical_p <= 1.0, "data.classical_p", "must be in [0, 1]", d.classical_p)
    _require(0.0 <= d.scale < 1.0, "data.scale", "must be in [0, 1)", d.scale)
    _require(d.num_workers >= 0, "data.num_workers", "must be >= 0", d.num_workers)
    for name in (
        "image_cycle",
        "perceptual",
        "identity",
        "l1",
        "feature_matching",
        "landmark_cycle",
        "heatmap_bce",
        "wasserstein",
        "style",
        "r1_gamma",
    ):
        value = getattr(lo, name)
        _require(value >= 0 and math.isfinite(value), f"loss.{name}", "must be finite and >= 0", value)
    _require(lo.r1_every >= 1, "loss.r1_every", "must be >= 1", lo.r1_every)
    _require(
        lo.ssim_window >= 3 and lo.ssim_window % 2 == 1,
        "loss.ssim_window",
        "must be odd and >= 3",
        lo.ssim_window,
    )
    if lo.perceptual_backend == "user" and lo.perceptual > 0:
        path = lo.perceptual_weights
        _require(
            path is not None and Path(path).is_file(),
            "loss.perceptual_weights",
            "must name an existing .pt/.pt2 file when loss.perceptual_backend is 'user' "
            "(nothing is downloaded)",
            path,
        )
    if lo.identity_weights is not None:
        _require(
            Path(lo.identity_weights).is_file(),
            "loss.identity_weights",
            "must name an existing .pt/.pt2 file (nothing is downloaded)",
            lo.identity_weights,
        )
    for name in ("lr_g", "lr_d", "lr_gl", "lr_s"):
        value = getattr(o, name)
        _require(value > 0 and math.isfinite(value), f"optim.{name}", "must be positive", value)
    _require(all(0.0 <= b < 1.0 for b in o.betas), "optim.betas", "must lie in [0, 1)", o.betas)
    _require(o.ema_kimg > 0, "optim.ema_kimg", "must be positive", o.ema_kimg)
    for name in (
        "steps",
        "batch_size",
        "log_every",
        "eval_every",
        "ckpt_every",
        "sample_every",
        "eval_batch_size",
    ):
        value = getattr(t, name)
        _require(value >= 1, f"train.{name}", "must be >= 1", value)
    _require(t.keep_checkpoints >= 0, "train.keep_checkpoints", "must be >= 0", t.keep_checkpoints)
    _require(t.sample_images >= 0, "train.sample_images", "must be >= 0", t.sample_images)
    if t.num_threads is not None:
        _require(t.num_threads >= 1, "train.num_threads", "must be >= 1 or None", t.num_threads)
    return cfg

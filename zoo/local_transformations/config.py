"""Configuration of the learned-local-transformations recipe (Chrysos et al. 2018): dataclasses, the
``smoke`` / ``cpu`` / ``gpu`` presets and :func:`validate_config` (errors name the field)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from zoo.common.config import TrainConfig as _SharedTrainConfig

__all__ = [
    "DataConfig",
    "LocalTransformationsConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PRESETS",
    "TrainConfig",
    "cpu_config",
    "gpu_config",
    "smoke_config",
    "validate_config",
]


@dataclass
class ModelConfig:
    """Networks (§3.6): encoder/decoder/U-Net widths, latent size, discriminators."""

    image_size: int = field(default=64, metadata={"help": "frame side S (power of two >= 8)"})
    latent_dim: int = field(default=128, metadata={"help": "latent d (paper: 1024)"})
    channels: int = field(default=32, metadata={"help": "first encoder layer's channels (doubling)"})
    max_channels: int = field(default=256, metadata={"help": "channel cap of encoders/decoders"})
    skips: tuple[int, ...] = field(default=(2, 4), metadata={"help": "U-Net skips from encoder layers"})
    d_channels: int = field(default=32, metadata={"help": "discriminators' first-layer channels"})
    d_max_channels: int = field(default=256, metadata={"help": "discriminators' channel cap"})
    d_hidden: int = field(default=256, metadata={"help": "discriminators' penultimate width"})


@dataclass
class DataConfig:
    """Frame pairs (§4.1): embedded synthetic face clips by default, or a folder of clips."""

    dataset: Literal["synthetic", "folder"] = field(
        default="synthetic", metadata={"help": "synthetic | folder (frame folders and/or video files)"}
    )
    root: str | None = field(default=None, metadata={"help": "folder of clips for dataset=folder"})
    test_fraction: float = field(default=0.2, metadata={"help": "folder: share of clips held out"})
    num_videos: int = field(default=60, metadata={"help": "synthetic: training clips"})
    num_test_videos: int = field(default=12, metadata={"help": "synthetic: held-out clips"})
    num_frames: int = field(default=32, metadata={"help": "synthetic: frames per clip"})
    pose_step: float = field(default=2.0, metadata={"help": "synthetic: yaw step std (degrees/frame)"})
    expression_step: float = field(default=1.0, metadata={"help": "synthetic: expression step scale"})
    reversion: float = field(default=0.05, metadata={"help": "synthetic: drift to frontal/rest per frame"})
    light_step: float = field(default=0.02, metadata={"help": "synthetic: light step std per frame"})
    noise: float = field(default=2.0, metadata={"help": "synthetic: pixel noise std (0-255)"})
    zoom: float = field(default=1.5, metadata={"help": "synthetic: crop magnification (face size)"})
    max_gap: int = field(default=4, metadata={"help": "pairs (t, t+x) with 1 <= x <= max_gap"})
    ssim_low: float = field(default=0.5, metadata={"help": "pairs need SSIM >= ssim_low (not too different)"})
    ssim_high: float = field(default=0.99, metadata={"help": "pairs need SSIM <= ssim_high (not identical)"})
    ssim_window: int = field(default=7, metadata={"help": "SSIM window (odd)"})
    data_seed: int = field(default=0, metadata={"help": "seed of the synthetic clips"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers per rank"})


@dataclass
class LossConfig:
    """Loss weights: eq. 2-3 (Stage I), eq. 6 (Stage II), eq. 9 (Stage III)."""

    lambda_1: float = field(default=10.0, metadata={"help": "λ_I: L1 + gradient-L1 of the reconstruction"})
    lambda_2: float = field(default=1.0, metadata={"help": "λ_II: ridge of the transition A"})
    lambda_3: float | None = field(default=None, metadata={"help": "λ_III (None: = λ_I, as the paper)"})
    lambda_feat: float = field(default=1.0, metadata={"help": "λ_III,feat: Stage I D feature matching"})
    latent_adv: float = field(default=1.0, metadata={"help": "weight of the latent-vs-prior GAN term"})
    image_adv: float = field(default=1.0, metadata={"help": "weight of the image GAN terms"})

    @property
    def lambda_3_value(self) -> float:
        return self.lambda_1 if self.lambda_3 is None else self.lambda_3


@dataclass
class OptimConfig:
    """Adam per network (pix2pix-style betas)."""

    lr: float = field(default=2e-4, metadata={"help": "encoders, decoders, generator"})
    lr_d: float = field(default=2e-4, metadata={"help": "discriminators"})
    lr_finetune: float = field(default=2e-5, metadata={"help": "Stage IV end-to-end fine-tuning"})
    betas: tuple[float, float] = field(default=(0.5, 0.999), metadata={"help": "Adam betas"})


@dataclass
class TrainConfig(_SharedTrainConfig):
    """Loop, hardware and bookkeeping: the shared fields plus the stage lengths.

    The global step runs through Stage I (``stage1_steps``), Stage II (one closed-form step), Stage III
    (``stage3_steps``) and Stage IV (``stage4_steps``, 0 = skipped); ``steps`` stops early (``None``:
    the whole schedule)."""

    steps: int | None = field(default=None, metadata={"help": "stop after this global step (None: all)"})
    stage1_steps: int = field(default=20000, metadata={"help": "Stage I (adversarial autoencoder) steps"})
    stage3_steps: int = field(default=20000, metadata={"help": "Stage III (conditional GAN) steps"})
    stage4_steps: int = field(default=0, metadata={"help": "Stage IV (end-to-end fine-tuning) steps"})
    batch_size: int = field(default=32, metadata={"help": "per-rank batch (frames or pairs)"})
    out_dir: str = "runs/local_transformations"
    log_every: int = 100
    eval_every: int = 5000
    ckpt_every: int = 2000
    sample_every: int = 5000
    sample_images: int = field(default=6, metadata={"help": "sources per iterated-prediction figure"})
    sample_iterations: int = field(default=4, metadata={"help": "k iterations shown in the figures"})
    eval_batch_size: int = 64


@dataclass
class LocalTransformationsConfig:
    """Complete recipe configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def smoke_config(out_dir: str = "runs/lt-smoke") -> LocalTransformationsConfig:
    """Seconds on one CPU thread: 16 px frames, tiny networks, 3 + 1 + 3 + 2 steps."""
    return LocalTransformationsConfig(
        model=ModelConfig(
            image_size=16,
            latent_dim=8,
            channels=4,
            max_channels=8,
            d_channels=4,
            d_max_channels=8,
            d_hidden=8,
        ),
        data=DataConfig(
            num_videos=4,
            num_test_videos=2,
            num_frames=6,
            max_gap=2,
            ssim_low=0.0,
            ssim_high=1.0,
            ssim_window=5,
        ),
        train=TrainConfig(
            stage1_steps=3,
            stage3_steps=3,
            stage4_steps=2,
            batch_size=4,
            out_dir=out_dir,
            log_every=1,
            eval_every=4,
            ckpt_every=2,
            sample_every=5,
            sample_images=2,
            sample_iterations=2,
            eval_batch_size=8,
            progress=False,
            tensorboard=False,
            num_threads=1,
        ),
    )


def cpu_config(out_dir: str = "runs/lt-cpu") -> LocalTransformationsConfig:
    """A reduced run for one CPU thread (~15-20 min): 32 px frames, narrow networks, d = 64."""
    return LocalTransformationsConfig(
        model=ModelConfig(
            image_size=32,
            latent_dim=64,
            channels=16,
            max_channels=64,
            d_channels=16,
            d_max_channels=64,
            d_hidden=64,
        ),
        data=DataConfig(num_videos=48, num_test_videos=12, num_frames=24),
        train=TrainConfig(
            stage1_steps=3000,
            stage3_steps=3000,
            stage4_steps=300,
            batch_size=16,
            out_dir=out_dir,
            log_every=100,
            eval_every=1500,
            ckpt_every=500,
            sample_every=1500,
            eval_batch_size=64,
            num_threads=1,
        ),
    )


def gpu_config(out_dir: str = "runs/lt-gpu") -> LocalTransformationsConfig:
    """64 px, d = 256, 20k + 20k steps of batch 32 and a short fine-tuning (bf16 on CUDA, DDP-ready)."""
    return LocalTransformationsConfig(
        model=ModelConfig(image_size=64, latent_dim=256, channels=32, max_channels=256),
        data=DataConfig(num_videos=400, num_test_videos=40, num_frames=48, num_workers=2),
        train=TrainConfig(stage4_steps=2000, out_dir=out_dir),
    )


PRESETS = {"smoke": smoke_config, "cpu": cpu_config, "gpu": gpu_config}


def _require(ok: bool, name: str, message: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} {message}, got {value!r}")


def validate_config(cfg: LocalTransformationsConfig) -> LocalTransformationsConfig:
    """Check every value of ``cfg``; raise ``ValueError`` naming the field. Returns ``cfg``."""
    m, d, lo, o, t = cfg.model, cfg.data, cfg.loss, cfg.optim, cfg.train
    s = m.image_size
    _require(s >= 8 and s & (s - 1) == 0, "model.image_size", "must be a power of two >= 8", s)
    for name in ("latent_dim", "channels", "max_channels", "d_channels", "d_max_channels", "d_hidden"):
        _require(getattr(m, name) >= 1, f"model.{name}", "must be >= 1", getattr(m, name))
    _require(all(k >= 1 for k in m.skips), "model.skips", "must be 1-based encoder layers", m.skips)
    if d.dataset == "folder":
        _require(
            d.root is not None,
            "data.root",
            "must name a folder of clips when data.dataset is 'folder'",
            d.root,
        )
        _require(0.0 < d.test_fraction < 1.0, "data.test_fraction", "must be in (0, 1)", d.test_fraction)
    for name in ("num_videos", "num_test_videos"):
        _require(getattr(d, name) >= 1, f"data.{name}", "must be >= 1", getattr(d, name))
    _require(d.num_frames >= 2, "data.num_frames", "must be >= 2", d.num_frames)
    _require(d.max_gap >= 1, "data.max_gap", "must be >= 1", d.max_gap)
    _require(d.zoom > 0, "data.zoom", "must be > 0", d.zoom)
    for name in ("pose_step", "expression_step", "light_step", "noise"):
        _require(getattr(d, name) >= 0, f"data.{name}", "must be >= 0", getattr(d, name))
    _require(0.0 <= d.reversion <= 1.0, "data.reversion", "must be in [0, 1]", d.reversion)
    _require(
        -1.0 <= d.ssim_low <= d.ssim_high <= 1.0,
        "data.ssim_low",
        f"must satisfy -1 <= ssim_low <= ssim_high ({d.ssim_high}) <= 1",
        d.ssim_low,
    )
    _require(
        d.ssim_window >= 3 and d.ssim_window % 2 == 1,
        "data.ssim_window",
        "must be odd and >= 3",
        d.ssim_window,
    )
    _require(d.num_workers >= 0, "data.num_workers", "must be >= 0", d.num_workers)
    for name in ("lambda_1", "lambda_2", "lambda_feat", "latent_adv", "image_adv"):
        value = getattr(lo, name)
        _require(value >= 0 and math.isfinite(value), f"loss.{name}", "must be finite and >= 0", value)
    if lo.lambda_3 is not None:
        _require(
            lo.lambda_3 >= 0 and math.isfinite(lo.lambda_3),
            "loss.lambda_3",
            "must be finite and >= 0",
            lo.lambda_3,
        )
    for name in ("lr", "lr_d", "lr_finetune"):
        value = getattr(o, name)
        _require(value > 0 and math.isfinite(value), f"optim.{name}", "must be positive", value)
    _require(all(0.0 <= b < 1.0 for b in o.betas), "optim.betas", "must lie in [0, 1)", o.betas)
    for name in ("stage1_steps", "stage3_steps"):
        _require(getattr(t, name) >= 1, f"train.{name}", "must be >= 1", getattr(t, name))
    _require(t.stage4_steps >= 0, "train.stage4_steps", "must be >= 0", t.stage4_steps)
    if t.steps is not None:
        _require(t.steps >= 1, "train.steps", "must be >= 1 or None", t.steps)
    for name in (
        "batch_size",
        "log_every",
        "eval_every",
        "ckpt_every",
        "sample_every",
        "eval_batch_size",
        "sample_iterations",
    ):
        _require(getattr(t, name) >= 1, f"train.{name}", "must be >= 1", getattr(t, name))
    _require(t.keep_checkpoints >= 0, "train.keep_checkpoints", "must be >= 0", t.keep_checkpoints)
    _require(t.sample_images >= 0, "train.sample_images", "must be >= 0", t.sample_images)
    if t.num_threads is not None:
        _require(t.num_threads >= 1, "train.num_threads", "must be >= 1 or None", t.num_threads)
    return cfg

r"""Train the unpaired landmark CycleGAN (Bespalov et al., *Data augmentation with manifold barycenters*,
Algorithm 1): one readable loop.

::

    python -m zoo.cyclegan.train --preset smoke --train.out_dir runs/cg-smoke
    python -m zoo.cyclegan.train --preset cpu --train.out_dir runs/cg --data.label_budget 300
    torchrun --nproc_per_node=4 -m zoo.cyclegan.train --preset gpu --train.out_dir runs/cg-gpu
    python -m zoo.cyclegan.train --train.out_dir runs/cg --resume       # continue after a kill

**Domains** (unpaired): images ``I`` are all training images; landmark sets ``X`` come from a *label
budget* (``data.label_budget`` sets of other training images), optionally enlarged by
``data.num_barycenters`` Wasserstein barycenters (:class:`wbaug.WassersteinBarycentricSampler`, fitted on
the budget) and/or classical augmentation (scale ±10 %, rotation ±π/12 with probability 0.3).

**One iteration** (Algorithm 1; ``L = L(X, σ)`` Gaussian heatmaps, eq. 1):

1. image GAN: ``z ~ N(0, 1)``, ``S_o = S_o(z)``, ``I_F = G_I(L, S_o)``; D_I step on
   ``L_d = E softplus(−D_I(I)) + E softplus(D_I(I_F))``;
2. landmark GAN: ``X_F = G_L(I)``, ``L_F = L(X_F)``; D_L step on the same loss (together with 1);
3. every ``loss.r1_every`` (4) iterations: lazy R1, ``r1_every · γ/2 (E‖∇D_I(I)‖² + E‖∇D_L(L)‖²)``
   (Adam of D with the lazy-regularisation correction);
4. generators (G_I, S_o, S, G_L) in one step on

   .. math::
       \underbrace{E\,\mathrm{sp}(-D_I(I_F)) + c\,\lVert S(I_F) - S_o\rVert_1}_{L^I_g}
       + \underbrace{E\,\mathrm{sp}(-D_L(L_F))}_{L^L_g}
       + c_1 L^I_{rec}\big(G_I(L(X_F), S(gI)),\ I\big)
       + c_2 L^L_{rec}\big(G_L(I_F),\ X\big)

   with ``L^I_rec = 0.8·perceptual + 0.1·identity + 1·L1`` (perceptual: ``1 − SSIM`` plus D_I feature
   matching by default, or a user-given network file; identity only from a user-given file),
   ``L^L_rec = 1e4·H[L(X_R) | L] + 100·W_1(X_R, X)`` (per-pixel binary cross-entropy of the heatmaps;
   W1 of :mod:`wbaug.losses` on coordinates divided by the image size), ``g`` a random similarity (§4),
   ``c = 10``, ``c_1 = 150``, ``c_2 = 1.5`` (§6.1);
5. shadow EMA of the generators (evaluation uses it).

Checkpoints (``<out_dir>/checkpoints/last.pt``, atomic) carry every network, both optimisers, the EMA,
the step, the RNG states and the config; the data order is a function of ``(seed, epoch, index)``, so
``--resume`` continues bit-identically on CPU. Under ``torchrun`` gradients are averaged across ranks
explicitly (:func:`zoo.common.gan.average_gradients`; DDP does not support R1's double backward).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wbaug.io_atomic import atomic_write_text
from wbaug.landmarks import get_layout
from wbaug.losses import wasserstein_landmark_loss
from zoo.common import (
    CheckpointManager,
    DistributedContext,
    MetricLogger,
    ShardedEpochSampler,
    all_reduce_mean,
    autocast,
    config_to_dict,
    derive_seed,
    distributed_session,
    epoch_batches,
    make_generator,
    progress,
    run_summary,
    save_config,
    start_run,
    trainer_main,
)
from zoo.common.gan import (
    OptimizerGroup,
    average_gradients,
    broadcast_parameters,
    d_logistic_loss,
    ema_beta,
    feature_matching_loss,
    g_nonsaturating_loss,
    lazy_adam,
    r1_penalty,
    set_requires_grad,
)
from zoo.cyclegan.config import PRESETS, CycleGANConfig, validate_config
from zoo.cyclegan.model import LandmarkCycleGAN
from zoo.hourglass.data import (
    DataSplits,
    EvalSet,
    build_splits,
    canvas_landmarks,
    random_similarity,
    warp_images,
)

__all__ = [
    "CycleGANData",
    "ImageCycleLoss",
    "build_data",
    "build_model",
    "build_optimizers",
    "image_cycle_loss",
    "landmark_cycle_loss",
    "main",
    "train",
    "train_step",
]

LOSS_KEYS = (
    "d_image",
    "d_landmarks",
    "r1",
    "g_image",
    "style",
    "g_landmarks",
    "image_cycle",
    "landmark_cycle",
    "g_total",
)


# ------------------------------------------------------------------------------------------- data
def _hourglass_data_config(cfg: CycleGANConfig) -> Any:
    from zoo.hourglass.config import DataConfig as HgData

    d = cfg.data
    return HgData(
        dataset=d.dataset,
        root=d.root,
        layout=d.layout,
        image_size=cfg.model.image_size,
        num_train=d.num_train,
        num_val=0,
        num_test=d.num_test,
        label_budget=d.label_budget,
        data_seed=d.data_seed,
        cache_images=d.cache_images,
    )


class _ImageDomain(torch.utils.data.Dataset):
    """Training images only (their landmarks are never used): ``(pos, seed)`` → ``(3, S, S)`` in [-1, 1]."""

    def __init__(self, images: EvalSet) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> Tensor:
        pos = key[0] if isinstance(key, tuple) else key
        return self.images[pos]["image"] * 2 - 1


class _LandmarkDomain(torch.utils.data.Dataset):
    """The landmark pool (budget + barycenters), with classical augmentation drawn from the sample seed."""

    def __init__(self, pool: Tensor, cfg: CycleGANConfig) -> None:
        self.pool = pool
        self.cfg = cfg

    def __len__(self) -> int:
        return self.pool.shape[0]

    def __getitem__(self, key: tuple[int, int]) -> Tensor:
        pos, seed = key
        x = self.pool[pos]
        d = self.cfg.data
        if d.classical:
            g = make_generator(seed)
            if float(torch.rand((), generator=g)) < d.classical_p:
                m = random_similarity(
                    1, self.cfg.model.image_size, scale=d.scale, rotate=d.rotate, generator=g
                )[0]
                x = x @ m[:2, :2].t() + m[:2, 2]
        return x


@dataclass
class CycleGANData:
    """Everything the loop needs from the data: the two unpaired domains and the held-out split."""

    splits: DataSplits
    images: _ImageDomain
    landmarks: _LandmarkDomain
    budget: Tensor  # (M, N, 2) the label-budget landmark sets on the canvas
    barycenters: Tensor  # (A, N, 2) sampled barycenters (A = 0 without data.barycentric)
    test: EvalSet

    @property
    def num_landmarks(self) -> int:
        return int(self.budget.shape[1])


def build_data(cfg: CycleGANConfig, *, fit_sampler: bool = True) -> CycleGANData:
    """Build the image domain (all training images), the landmark domain (budget ∪ barycenters) and the
    held-out test split from ``cfg.data`` (synthetic faces by default, any wbaug reader otherwise).

    ``fit_sampler=False`` skips fitting the sampler even when ``cfg.data.barycentric`` (evaluation only
    needs the test split)."""
    size = cfg.model.image_size
    splits = build_splits(_hourglass_data_config(cfg))
    native = splits.native_canvas
    train_idx = splits.labelled + splits.unlabelled
    images = EvalSet(
        splits.dataset,
        sorted(train_idx),
        size,
        native=native,
        cache=cfg.data.cache_images,
        crop_margin=splits.crop_margin,
    )
    test = EvalSet(
        splits.test_dataset,
        splits.test,
        size,
        native=native,
        cache=cfg.data.cache_images,
        crop_margin=splits.crop_margin,
    )
    budget = canvas_landmarks(splits, splits.labelled, size).float()
    barycenters = budget.new_zeros(0, *budget.shape[1:])
    if cfg.data.barycentric and fit_sampler:
        from wbaug import WassersteinBarycentricSampler

        sampler = WassersteinBarycentricSampler(
            k_neighbors=cfg.data.k_neighbors,
            concentration=cfg.data.concentration,
            correspondence=cfg.correspondence,
            progress=False,
        ).fit(budget.double())
        g = make_generator(derive_seed(cfg.data.data_seed, "barycenters", cfg.data.label_budget))
        barycenters = sampler.sample(cfg.data.num_barycenters, generator=g, progress=False).float()
    pool = torch.cat([budget, barycenters])
    return CycleGANData(
        splits=splits,
        images=_ImageDomain(images),
        landmarks=_LandmarkDomain(pool, cfg),
        budget=budget,
        barycenters=barycenters,
        test=test,
    )


# ------------------------------------------------------------------------------------------ model
def build_model(cfg: CycleGANConfig, num_landmarks: int) -> LandmarkCycleGAN:
    """The networks described by ``cfg.model`` for ``num_landmarks``-point landmark sets."""
    return LandmarkCycleGAN(num_landmarks, **asdict(cfg.model))


def build_optimizers(model: LandmarkCycleGAN, cfg: CycleGANConfig) -> OptimizerGroup:
    """Adam for the generators (param groups G_I + S_o: ``lr_g``, G_L: ``lr_gl``, S: ``lr_s``) and for the
    discriminators (``lr_d``, corrected for lazy R1 every ``loss.r1_every`` steps)."""
    o = cfg.optim
    betas = tuple(o.betas)
    gen = torch.optim.Adam(
        [
            {"params": [*model.generator.parameters(), *model.mapping.parameters()], "lr": o.lr_g},
            {"params": model.landmark_encoder.parameters(), "lr": o.lr_gl},
            {"params": model.style_encoder.parameters(), "lr": o.lr_s},
        ],
        betas=betas,
    )
    disc = lazy_adam(
        [*model.d_image.parameters(), *model.d_landmarks.parameters()],
        o.lr_d,
        betas,
        interval=cfg.loss.r1_every if cfg.loss.r1_every > 1 else 0,
    )
    return OptimizerGroup(g=gen, d=disc)


# ----------------------------------------------------------------------------------------- losses
class ImageCycleLoss(nn.Module):
    r"""``L^I_rec(I_R, I) = c_p·perceptual + c_id·(1 − cos(Id(I_R), Id(I))) + c_l1·‖I_R − I‖_1`` (§4).

    ``perceptual``: ``backend="ssim_fm"`` → ``1 − SSIM(I_R, I)`` (kornia) plus ``feature_matching`` × the
    L1 between D_I's features of ``I_R`` and ``I`` (pix2pixHD's ``L_feat``), needing no pretrained weights;
    ``backend="user"`` → a user-given network ``(I_R, I) → distance`` (e.g. an exported LPIPS; a
    TorchScript ``.pt`` or ``torch.export`` ``.pt2`` file) from ``perceptual_weights``. Identity: an
    embedder ``I → (B, D)`` from ``identity_weights`` (same formats; off when ``None``). Nothing is
    downloaded; a missing file is a ``ValueError`` naming the config field.
    Images ``(B, 3, S, S)`` in [-1, 1].
    """

    def __init__(self, cfg: CycleGANConfig) -> None:
        super().__init__()
        lo = cfg.loss
        self.backend = lo.perceptual_backend
        self.w_perceptual, self.w_identity, self.w_l1 = lo.perceptual, lo.identity, lo.l1
        self.w_fm = lo.feature_matching
        self.window = lo.ssim_window
        self.perceptual_net = None
        self.identity_net = None
        if self.backend == "user" and self.w_perceptual > 0:
            self.perceptual_net = _load_scripted(lo.perceptual_weights, "loss.perceptual_weights")
        if lo.identity_weights is not None and self.w_identity > 0:
            self.identity_net = _load_scripted(lo.identity_weights, "loss.identity_weights")

    def forward(
        self,
        recon: Tensor,
        target: Tensor,
        recon_features: Sequence[Tensor] | None = None,
        target_features: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        import kornia

        recon, target = recon.float(), target.float()
        out = {"l1": F.l1_loss(recon, target)}
        if self.backend == "ssim_fm":
            ssim = kornia.losses.ssim_loss((recon + 1) / 2, (target + 1) / 2, self.window, max_val=1.0)
            out["ssim"] = 2 * ssim  # kornia returns (1 − SSIM) / 2
            perceptual = out["ssim"]
            if self.w_fm > 0 and recon_features is not None and target_features is not None:
                out["feature_matching"] = feature_matching_loss(recon_features, target_features)
                perceptual = perceptual + self.w_fm * out["feature_matching"]
        else:
            perceptual = self.perceptual_net(recon, target).float().mean()
        out["perceptual"] = perceptual
        total = self.w_perceptual * perceptual + self.w_l1 * out["l1"]
        if self.identity_net is not None:
            e_r = F.normalize(self.identity_net(recon).float().flatten(1), dim=1)
            e_t = F.normalize(self.identity_net(target).float().flatten(1), dim=1).detach()
            out["identity"] = (1 - (e_r * e_t).sum(1)).mean()
            total = total + self.w_identity * out["identity"]
        out["total"] = total
        return out


def _load_scripted(path: str | None, field_name: str) -> nn.Module:
    if path is None or not Path(path).is_file():
        raise ValueError(
            f"{field_name} must name an existing TorchScript (.pt) or torch.export (.pt2) file "
            f"(nothing is downloaded), got {path!r}"
        )
    if str(path).endswith(".pt2"):  # torch.export program
        net = torch.export.load(path).module()
    else:  # TorchScript archive
        net = torch.jit.load(path, map_location="cpu").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def landmark_cycle_loss(
    model: LandmarkCycleGAN, coords: Tensor, target: Tensor, target_heatmaps: Tensor, cfg: CycleGANConfig
) -> dict[str, Tensor]:
    r"""``L^L_rec = c_H·H[L(X_R) | L] + c_W·W_1(X_R/S, X/S)`` (§4).

    ``H`` is the binary cross-entropy between the re-rendered prediction ``L(X_R)`` and the target heatmap
    ``L``, both peak-1 Gaussians clipped to [0, 1] (summed heatmaps exceed 1 where points overlap),
    averaged over pixels: with that normalisation the paper's ``c_H = 10⁴`` and ``c_W = 100`` give terms
    of comparable size (a spatial-softmax cross-entropy, :func:`wbaug.losses.heatmap_cross_entropy`, is
    ``~log(S²)`` and would swamp every other loss by 10⁴). ``W_1`` is the exact order-free Wasserstein
    distance (:func:`wbaug.losses.wasserstein_landmark_loss`) on coordinates in image units.

    Shapes: ``coords``/``target`` ``(B, N, 2)`` pixels, ``target_heatmaps`` ``(B, K, S, S)``.
    """
    lo = cfg.loss
    eps = 1e-6
    pred_heat = model.heatmaps(coords).clamp(eps, 1 - eps)
    bce = F.binary_cross_entropy(pred_heat, target_heatmaps.float().clamp(0, 1))
    size = float(model.image_size)
    w1 = wasserstein_landmark_loss(coords.float() / size, target.float() / size, p=1)
    return {"heatmap_bce": bce, "w1": w1, "total": lo.heatmap_bce * bce + lo.wasserstein * w1}


def image_cycle_loss(
    model: LandmarkCycleGAN,
    images: Tensor,
    fake_heat: Tensor,
    image_loss: ImageCycleLoss,
    cfg: CycleGANConfig,
) -> Tensor:
    r"""The image cycle of Algorithm 1: ``I_R = G_I(L(G_L(I)), S(gI))`` with ``g`` a random similarity
    (§4: style from a geometrically transformed copy, to separate style from content), scored by
    :class:`ImageCycleLoss`. ``images (B, 3, S, S)`` in [-1, 1]; ``fake_heat = L(G_L(I))`` ``(B, K, S, S)``.
    Returns the scalar ``L^I_rec`` (gradients reach G_I, G_L and S). ``g`` draws from torch's global RNG."""
    lo = cfg.loss
    g = random_similarity(
        images.shape[0], model.image_size, scale=lo.g_scale, rotate=lo.g_rotate, translate=lo.g_translate
    ).to(images.device)
    style_real = model.style_encoder(warp_images(images, g, model.image_size))
    recon = model.generator(fake_heat, style_real)
    recon_feats = real_feats = None
    if image_loss.backend == "ssim_fm" and image_loss.w_fm > 0:
        _, recon_feats = model.d_image(recon, return_features=True)
        with torch.no_grad():
            _, real_feats = model.d_image(images, return_features=True)
    return image_loss(recon, images, recon_feats, real_feats)["total"]


# ------------------------------------------------------------------------------------------- step
def train_step(
    model: LandmarkCycleGAN,
    optimizers: OptimizerGroup,
    images: Tensor,
    landmarks: Tensor,
    step: int,
    cfg: CycleGANConfig,
    image_loss: ImageCycleLoss,
    *,
    amp: bool = False,
) -> dict[str, Tensor]:
    """One iteration of Algorithm 1 (see the module docstring) on ``images`` ``(B, 3, S, S)`` in [-1, 1]
    and unpaired ``landmarks`` ``(B, N, 2)``; returns detached scalar losses (``r1`` is 0 off-schedule).

    Randomness (``z``, the noise maps, ``g``) comes from torch's global RNG, which checkpoints capture."""
    lo = cfg.loss
    device = images.device
    b = images.shape[0]
    opt_g, opt_d = optimizers["g"], optimizers["d"]
    discs, gens = model.discriminators(), model.generators()
    heat = model.heatmaps(landmarks)  # L = L(X_l, σ)
    z = torch.randn(b, model.z_dim, device=device)

    # ---- 1-2. discriminators: image GAN and landmark GAN --------------------------------------------
    set_requires_grad(discs, True)
    with autocast(device, amp):
        s_o = model.styles(z)  # S_o = S_o(z)
        fake_images = model.generator(heat, s_o)  # I_F = G_I(L, S_o)
        fake_coords = model.landmark_encoder(images)  # X_F = G_L(I)
        fake_heat = model.heatmaps(fake_coords)  # L_F
        d_image = d_logistic_loss(model.d_image(images), model.d_image(fake_images.detach()))
        d_landmarks = d_logistic_loss(model.d_landmarks(heat), model.d_landmarks(fake_heat.detach()))
    opt_d.zero_grad(set_to_none=True)
    (d_image + d_landmarks).backward()
    average_gradients(discs)
    opt_d.step()

    # ---- 3. lazy R1 every r1_every iterations -------------------------------------------------------
    r1 = images.new_zeros((), dtype=torch.float32)
    if step % lo.r1_every == 0 and lo.r1_gamma > 0:
        real_i = images.detach().requires_grad_(True)
        real_l = heat.detach().requires_grad_(True)
        with autocast(device, amp):
            r1 = r1_penalty(model.d_image(real_i), real_i) + r1_penalty(model.d_landmarks(real_l), real_l)
        opt_d.zero_grad(set_to_none=True)
        (lo.r1_gamma / 2 * r1 * lo.r1_every).backward()
        average_gradients(discs)
        opt_d.step()

    # ---- 4. generators: adversarial, style reconstruction, both cycles ------------------------------
    set_requires_grad(discs, False)
    with autocast(device, amp):
        g_image = g_nonsaturating_loss(model.d_image(fake_images))
        style = (model.style_encoder(fake_images).float() - s_o.detach().float()).abs().mean()  # ‖S_F − S_o‖₁
        g_landmarks = g_nonsaturating_loss(model.d_landmarks(fake_heat))
        image_cycle = image_cycle_loss(model, images, fake_heat, image_loss, cfg)
        landmark_cycle = landmark_cycle_loss(
            model, model.landmark_encoder(fake_images), landmarks, heat, cfg
        )["total"]
        g_total = (
            g_image
            + lo.style * style
            + g_landmarks
            + lo.image_cycle * image_cycle
            + lo.landmark_cycle * landmark_cycle
        )
    opt_g.zero_grad(set_to_none=True)
    g_total.backward()
    average_gradients(gens)
    if cfg.optim.max_grad_norm is not None:
        nn.utils.clip_grad_norm_([p for m in gens for p in m.parameters()], cfg.optim.max_grad_norm)
    opt_g.step()

    # ---- 5. shadow EMA of the generators ---------------------------------------------------------------
    model.update_ema(ema_beta(b, cfg.optim.ema_kimg))
    values = [d_image, d_landmarks, r1, g_image, style, g_landmarks, image_cycle, landmark_cycle, g_total]
    return dict(zip(LOSS_KEYS, [v.detach().float() for v in values]))


# ------------------------------------------------------------------------------------------- loop
def _loader(dataset: torch.utils.data.Dataset, sampler: ShardedEpochSampler, cfg: CycleGANConfig, ctx, g):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=True,
        pin_memory=ctx.device.type == "cuda",
        generator=g,
    )


def train(
    cfg: CycleGANConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    ctx: DistributedContext | None = None,
    data: CycleGANData | None = None,
) -> dict:
    """Train according to ``cfg``; returns the final evaluation metrics (also in ``metrics.json``).

    Args:
        cfg: the resolved configuration (validated here: bad values raise ``ValueError`` naming the field).
        resume: continue from the newest intact checkpoint in ``<out_dir>/checkpoints`` (it must exist).
        overwrite: replace the run artifacts in a non-empty ``out_dir`` (without it a new run refuses a
            non-empty ``out_dir``; see :func:`zoo.common.checkpoint.prepare_run_dir`).
        ctx: distributed context (default: from ``torchrun``'s environment, or a single process).
        data: pre-built data (default: :func:`build_data`); the ablation shares one across cells.
    """
    validate_config(cfg)
    with distributed_session(cfg.train.device, ctx) as ctx:
        return _train(cfg, resume=resume, overwrite=overwrite, ctx=ctx, data=data)


def _train(
    cfg: CycleGANConfig, *, resume: bool, overwrite: bool, ctx: DistributedContext, data: CycleGANData | None
) -> dict:
    from zoo.cyclegan.evaluate import evaluate_model, log_samples

    t_cfg = cfg.train
    out = start_run(t_cfg, ctx, resume=resume, overwrite=overwrite)
    device = ctx.device
    data = data if data is not None else build_data(cfg)
    layout = get_layout(cfg.data.layout)

    # ---- samplers: images and landmark sets are drawn independently (unpaired) ------------------------
    def sampler_for(n: int, stream: str) -> ShardedEpochSampler:
        return ShardedEpochSampler(
            n,
            batch_size=t_cfg.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            seed=derive_seed(t_cfg.seed, stream),
        )

    image_sampler = sampler_for(len(data.images), "images")
    landmark_sampler = sampler_for(len(data.landmarks), "landmarks")
    image_gen = make_generator(derive_seed(t_cfg.seed, "image-loader", ctx.rank))
    landmark_gen = make_generator(derive_seed(t_cfg.seed, "landmark-loader", ctx.rank))
    test_loader = torch.utils.data.DataLoader(data.test, batch_size=t_cfg.eval_batch_size, shuffle=False)

    # ---- model, optimisers ------------------------------------------------------------------------------
    model = build_model(cfg, data.num_landmarks).to(device)
    model.mean_shape.copy_(data.budget.mean(0).to(device))
    broadcast_parameters(model)
    optimizers = build_optimizers(model, cfg)
    image_loss = ImageCycleLoss(cfg).to(device)
    ckpts = CheckpointManager(out / "checkpoints", keep=t_cfg.keep_checkpoints, enabled=ctx.is_main)
    generators = {"image-loader": image_gen, "landmark-loader": landmark_gen}
    step = 0
    if resume:  # the newest intact checkpoint (claim_out_dir made sure there is one)
        ckpt = ckpts.load_latest(model=model, optimizer=optimizers, generators=generators)
        step = ckpt["step"]
    if ctx.is_main:
        save_config(cfg, out / "config.json")
    amp = t_cfg.amp and device.type == "cuda"
    logger = MetricLogger(
        out / "logs", enabled=ctx.is_main, tensorboard=t_cfg.tensorboard, resume_step=step if resume else None
    )
    image_batches = epoch_batches(
        _loader(data.images, image_sampler, cfg, ctx, image_gen), image_sampler, step
    )
    landmark_batches = epoch_batches(
        _loader(data.landmarks, landmark_sampler, cfg, ctx, landmark_gen), landmark_sampler, step
    )

    bar = progress(
        total=t_cfg.steps, initial=step, enabled=ctx.is_main and t_cfg.progress, desc=cfg.mode_name
    )
    sums = torch.zeros(len(LOSS_KEYS), device=device)
    window = {"n": 0, "t0": time.perf_counter()}
    totals = {"seconds": 0.0, "steps": 0}
    r1_iterations = 0
    for net in (
        model.generator,
        model.mapping,
        model.style_encoder,
        model.landmark_encoder,
        *model.discriminators(),
    ):
        net.train()
    while step < t_cfg.steps:
        t_step = time.perf_counter()
        images = next(image_batches).to(device, non_blocking=True)
        landmarks = next(landmark_batches).to(device, non_blocking=True)
        losses = train_step(model, optimizers, images, landmarks, step, cfg, image_loss, amp=amp)
        r1_iterations += int(step % cfg.loss.r1_every == 0)
        step += 1
        sums += torch.stack([losses[k] for k in LOSS_KEYS])
        window["n"] += 1
        totals["steps"] += 1
        totals["seconds"] += time.perf_counter() - t_step
        bar.update(1)

        if step % t_cfg.log_every == 0 or step == t_cfg.steps:
            dt = max(time.perf_counter() - window["t0"], 1e-9)
            stats = all_reduce_mean(sums / window["n"]).cpu()
            row = {k: stats[i] for i, k in enumerate(LOSS_KEYS)}
            row["iterations_per_s"] = window["n"] / dt
            logger.log(step, row)
            bar.set_postfix(g=f"{float(stats[-1]):.3g}", d=f"{float(stats[0]):.3g}")
            sums.zero_()
            window.update(n=0, t0=time.perf_counter())
        if (
            ctx.is_main
            and t_cfg.sample_images > 0
            and (step % t_cfg.sample_every == 0 or step == t_cfg.steps)
        ):
            log_samples(
                model, data, logger, step, n=t_cfg.sample_images, device=device, png_dir=out / "samples"
            )
        if step % t_cfg.eval_every == 0 and step != t_cfg.steps:
            metrics = evaluate_model(model, test_loader, layout, device=device)
            logger.log(step, metrics, split="eval")
        if step % t_cfg.ckpt_every == 0 or step == t_cfg.steps:
            ckpts.save(
                step=step,
                model=model,
                optimizer=optimizers,
                config=config_to_dict(cfg),
                generators=generators,
                extra={"num_landmarks": data.num_landmarks, "mode": cfg.mode_name},
            )
    bar.close()

    # ---- closing summary --------------------------------------------------------------------------------
    metrics = evaluate_model(model, test_loader, layout, device=device)
    logger.log(step, metrics, split="test")
    logger.close()
    seconds = max(totals["seconds"], 1e-9)
    result = {
        "step": step,
        "mode": cfg.mode_name,
        "label_budget": cfg.data.label_budget,
        "landmark_pool": len(data.landmarks),
        **metrics,
        "r1_iterations_this_run": r1_iterations,
        "train_seconds": totals["seconds"],
        "iterations_per_s": totals["steps"] / seconds,
    }
    if ctx.is_main:
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=float) + "\n")
        keys = ("nme", "ot_nme", "baseline_nme", "baseline_ot_nme", "iterations_per_s")
        print(run_summary(out, result, keys))
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (see the module docstring)."""
    return trainer_main(
        CycleGANConfig,
        train,
        argv,
        description="Train the unpaired landmark CycleGAN of 'Data augmentation with manifold barycenters'.",
        presets=PRESETS,
    )


if __name__ == "__main__":
    main()

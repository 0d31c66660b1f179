r"""Train BRULÉ (Bespalov, Buzun & Dylov, *BRULÉ: Barycenter-Regularized Unsupervised Landmark Extraction*,
§2 Algorithms 1 and 2): one readable loop.

::

    python -m zoo.brule.train --preset smoke --train.out_dir runs/brule-smoke
    python -m zoo.brule.train --preset cpu --train.out_dir runs/brule-cpu
    python -m zoo.brule.train --preset cpu --train.out_dir runs/brule-semi --loss.mode semi_supervised
    torchrun --nproc_per_node=4 -m zoo.brule.train --preset gpu --train.out_dir runs/brule-gpu
    python -m zoo.brule.train --train.out_dir runs/brule-cpu --resume        # continue after a kill

**Data.** All training images ``I``; a label budget (``data.label_budget`` images with landmarks) gives the
fixed barycenter ``X_b`` (exact free-support W2 barycenter, :func:`wbaug.ot.free_support_barycenter`, or
``data.barycenter_file``), the linear probe of the evaluation and, in ``semi_supervised`` mode, the labels
of the supervised term.

**One iteration** (``step`` counts from 0; ``g`` is a fresh random affine + elastic transform applied to
image and heatmap together, :func:`zoo.brule.model.apply_warp`; ``H(P‖Q)`` is the spatial cross-entropy of
the per-channel softmax ``P`` against the per-channel-normalised ``Q``, averaged over channels *and pixels*,
see :func:`heatmap_ce`):

*Algorithm 1* (GAN side; the encoder is frozen): ``X_L = L(I)``, ``gL = g L_sp(X_L)``, ``gI = g I``,
``I_F = G(gL, S_o(z))``;

1. D step on ``E sp(−D(gI, gL)) + E sp(D(I_F, gL))``; when ``step % 4 == 0`` a lazy R1 step
   ``4 · λ E‖∇D(gI, gL)‖²`` (λ = 80);
2. G, S_o, S step on ``E sp(−D(I_F, gL))``, plus when ``step % 5 == 0`` the restore/style block
   ``c1 ‖G(gL, S(I)) − gI‖₁ + c2 H(L(I_F)‖gL) + c3 (‖S(I_F) − S_o(z)‖₁ + ‖S(I_F) − S(g'I_F)‖₁)``.

*Algorithm 2* (encoder side, when ``step % 3 == 0``; only L is updated): ``L = L(I)``, ``X_L`` its
soft-argmax, ``L_sp`` Gaussians at ``X_L``; ``I_F = G(L, S_o(z))``, ``I_R = G(L_sp, S(I))``;

.. math::
    c_5 R_b(X_L) + c_6 R_g(L) + c_7 H(L\|L_{sp}) + c_8 L_D(L) + c_9\|I_R - I\|_1 + c_{10} H(L(I_F)\|L)

with ``R_b`` = :func:`wbaug.losses.barycenter_regularizer` (c11, c12, c13) and the L1 part of
``R_g = H(L(gI)‖gL) + ‖X_L(gI) − X_{gL}‖₁`` in heatmap pixels (the ``mesh`` units of ``L_sp``; ``X_{gL}`` the
centre of mass of the warped ``L_sp``, so the elastic part of ``g`` needs no point inverse),
``L_D = E sp(−D(I, L)) + E sp(−D(I_F, L))``.
``semi_supervised`` adds ``supervised · H(L(I_lab)‖L_sp(X_lab))`` on a labelled batch and never computes
``R_b`` (§5).

Checkpoints (``<out_dir>/checkpoints/last.pt``, atomic) carry every network, the three optimisers, the step,
the RNG states and the config; the data order is a function of ``(seed, epoch, index)``, so ``--resume``
continues bit-identically on CPU. Under ``torchrun`` gradients are averaged across ranks explicitly
(:func:`zoo.common.gan.average_gradients`: DDP cannot do R1's double backward); bf16 autocast on CUDA.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wbaug.io_atomic import atomic_write_text
from wbaug.landmarks import get_layout, soft_argmax
from wbaug.losses import barycenter_regularizer, heatmap_cross_entropy
from wbaug.ot import free_support_barycenter
from zoo import create_model
from zoo.brule.config import PRESETS, BruleConfig, validate_config
from zoo.brule.model import Brule, apply_warp, random_warp
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
    g_nonsaturating_loss,
    lazy_adam,
    r1_penalty,
    set_requires_grad,
)
from zoo.hourglass.data import DataSplits, EvalSet, build_splits, canvas_landmarks
from zoo.hourglass.model import heatmap_to_image, image_to_heatmap

__all__ = [
    "ENCODER_TERMS",
    "BruleData",
    "build_data",
    "build_model",
    "build_optimizers",
    "compute_barycenter",
    "encoder_losses",
    "gan_step",
    "heatmap_ce",
    "main",
    "train",
    "train_step",
]

#: Algorithm 2's terms (``supervised`` only in semi-supervised mode, ``barycenter`` only in unsupervised)
ENCODER_TERMS = (
    "barycenter",
    "geometric",
    "concentration",
    "adversarial",
    "reconstruction",
    "fake_landmarks",
    "supervised",
)
LOSS_KEYS = (
    "d_loss",
    "r1",
    "g_adv",
    "restore",
    "fake_heatmap",
    "style",
    *(f"enc_{k}" for k in ENCODER_TERMS),
    "enc_total",
    "r1_applied",
    "restore_applied",
    "encoder_applied",
)

#: logged losses that only exist on scheduled iterations, and the flag that says when
_SCHEDULED = {
    "r1": "r1_applied",
    "restore": "restore_applied",
    "fake_heatmap": "restore_applied",
    "style": "restore_applied",
    **{f"enc_{k}": "encoder_applied" for k in (*ENCODER_TERMS, "total")},
}


# ------------------------------------------------------------------------------------------- data
class _Images(torch.utils.data.Dataset):
    """Training images, ``(pos, seed)`` → ``(3, S, S)`` in [-1, 1] (landmarks are never read)."""

    def __init__(self, images: EvalSet) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> Tensor:
        pos = key[0] if isinstance(key, tuple) else key
        return self.images[pos]["image"] * 2 - 1


class _Labelled(_Images):
    """Labelled training images for the semi-supervised term: ``(pos, seed)`` → ``(image, landmarks)``."""

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        item = self.images[key[0] if isinstance(key, tuple) else key]
        return item["image"] * 2 - 1, item["landmarks"].float()


@dataclass
class BruleData:
    """What the loop and the evaluation need: images, labelled images, the barycenter, the test split."""

    splits: DataSplits
    images: _Images
    labelled: _Labelled
    budget: Tensor  # (M, N, 2) canvas landmarks of the labelled images
    barycenter: Tensor  # (N_b, 2) canvas pixels
    test: EvalSet

    @property
    def num_points(self) -> int:
        """``N``: annotated points per image."""
        return int(self.budget.shape[1])


def compute_barycenter(landmarks: Tensor, *, max_iter: int = 100) -> Tensor:
    """The uniform-weight free-support W2 barycenter ``(N, 2)`` of landmark sets ``(M, N, 2)`` (§5: "we first
    compute the barycenter using the given landmarks"), by :func:`wbaug.ot.free_support_barycenter`."""
    if landmarks.ndim != 3 or landmarks.shape[0] < 1:
        raise ValueError(f"landmarks must have shape (M, N, D) with M >= 1, got {tuple(landmarks.shape)}")
    m = landmarks.shape[0]
    weights = torch.full((1, m), 1.0 / m, dtype=torch.float64)
    return free_support_barycenter(landmarks.double()[None], weights, max_iter=max_iter)[0].float()


def _load_barycenter(path: str) -> Tensor:
    if path.endswith(".npy"):
        bary = torch.from_numpy(np.load(path, allow_pickle=False))
    else:
        bary = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(bary, Tensor) or bary.ndim != 2 or bary.shape[-1] != 2 or bary.shape[0] < 1:
        raise ValueError(f"data.barycenter_file {path!r} must hold an (N_b, 2) array")
    if not bool(torch.isfinite(bary).all()):
        raise ValueError(f"data.barycenter_file {path!r} holds non-finite values")
    return bary.float()


def build_data(cfg: BruleConfig) -> BruleData:
    """Training images, labelled subset, barycenter and test split from ``cfg.data`` (synthetic faces by
    default, any wbaug reader otherwise)."""
    from zoo.hourglass.config import DataConfig as HgData

    d, size = cfg.data, cfg.model.image_size
    splits = build_splits(
        HgData(
            dataset=d.dataset,
            root=d.root,
            layout=d.layout,
            image_size=size,
            num_train=d.num_train,
            num_val=0,
            num_test=d.num_test,
            label_budget=d.label_budget,
            data_seed=d.data_seed,
            cache_images=d.cache_images,
        )
    )

    def evalset(dataset: Any, indices: Sequence[int]) -> EvalSet:
        return EvalSet(
            dataset,
            indices,
            size,
            native=splits.native_canvas,
            cache=d.cache_images,
            crop_margin=splits.crop_margin,
        )

    budget = canvas_landmarks(splits, splits.labelled, size).float()
    k = cfg.model.num_landmarks
    if cfg.semi_supervised and k is not None and k != budget.shape[1]:
        raise ValueError(
            f"model.num_landmarks must be None or {budget.shape[1]} (the annotated points) in "
            f"semi_supervised mode, got {k}"
        )
    if d.barycenter_file is not None:
        bary = _load_barycenter(d.barycenter_file)
    else:
        bary = compute_barycenter(budget, max_iter=d.barycenter_iters)
    return BruleData(
        splits=splits,
        images=_Images(evalset(splits.dataset, sorted(splits.labelled + splits.unlabelled))),
        labelled=_Labelled(evalset(splits.dataset, splits.labelled)),
        budget=budget,
        barycenter=bary,
        test=evalset(splits.test_dataset, splits.test),
    )


# ------------------------------------------------------------------------------------------ model
def build_model(cfg: BruleConfig, num_points: int, barycenter_points: int | None = None) -> Brule:
    """``zoo.create_model("brule", ...)`` with ``cfg.model``; ``K = model.num_landmarks or num_points``."""
    arch = asdict(cfg.model)
    k = arch.pop("num_landmarks") or num_points
    return create_model("brule", num_landmarks=k, barycenter_points=barycenter_points or k, **arch)


def build_optimizers(model: Brule, cfg: BruleConfig) -> OptimizerGroup:
    """Adam for G + S_o + S (``g``), for D (``d``, lazy-R1 corrected) and for the encoder (``l``)."""
    o = cfg.optim
    betas = tuple(o.betas)
    gen = torch.optim.Adam(
        [*model.generator.parameters(), *model.mapping.parameters(), *model.style_encoder.parameters()],
        lr=o.lr_g,
        betas=betas,
    )
    interval = cfg.loss.r1_every if cfg.loss.r1_every > 1 else 0
    disc = lazy_adam(model.discriminator.parameters(), o.lr_d, betas, interval=interval)
    enc = torch.optim.Adam(model.encoder.parameters(), lr=o.lr_l, betas=betas)
    return OptimizerGroup(g=gen, d=disc, l=enc)


# ----------------------------------------------------------------------------------------- losses
def heatmap_ce(logits: Tensor, target: Tensor) -> Tensor:
    r"""``H(P‖Q)``: :func:`wbaug.losses.heatmap_cross_entropy` of logits ``(B, K, h, w)`` (softmax per
    channel) against the per-channel-normalised ``target`` ``(B, K, h, w)``, divided by ``h·w``.

    The per-pixel normalisation is what makes §5's coefficients (``c2 = 1e4``, ``c7 = 1e5``) commensurate
    with the other terms: the summed spatial cross-entropy is ``≈ log(hw)`` (8.3 at 64×64), which ×1e5
    would swamp every other term; per pixel it is ``≈ 2e-3`` at 64×64."""
    h, w = logits.shape[-2:]
    return heatmap_cross_entropy(logits.float(), target.float().clamp_min(0)) / (h * w)


def _softmax_maps(logits: Tensor) -> Tensor:
    return torch.softmax(logits.flatten(-2), -1).view_as(logits)


def _mesh(coords: Tensor, model: Brule) -> Tensor:
    """Image pixels → the encoder's heatmap grid (the ``mesh`` of Algorithm 2's ``L_sp``)."""
    return image_to_heatmap(coords, model.encoder.stride)


def geometric_term(model: Brule, images: Tensor, coords: Tensor, warp: Any) -> Tensor:
    r"""``R_g(L) = H(L(gI)‖gL) + ‖X_L(gI) − X_{gL}‖₁`` (§4): ``gL`` is ``L_sp(X_L)`` warped by ``g`` (the same
    map as the image), ``X_{gL}`` its per-channel centre of mass; coordinates in heatmap pixels.
    Gradients reach the encoder through both branches (``L(gI)`` and ``X_L``)."""
    logits_g = model.encoder(apply_warp(images, warp))
    g_heat = apply_warp(model.sparse_heatmaps(coords), warp)
    target = heatmap_to_image(soft_argmax(g_heat, normalize="sum"), model.encoder.stride)
    pred = model.encoder.coordinates(logits_g)
    l1 = ((pred - target) / model.encoder.stride).abs().sum(-1).mean()
    return heatmap_ce(logits_g, g_heat) + l1


def _warp(cfg: BruleConfig, n: int, device: torch.device) -> Any:
    lo = cfg.loss
    return random_warp(
        n,
        rotate=lo.g_rotate,
        scale=lo.g_scale,
        shear=lo.g_shear,
        translate=lo.g_translate,
        elastic=lo.g_elastic,
        grid=lo.g_elastic_grid,
        device=device,
    )


def encoder_losses(
    model: Brule,
    images: Tensor,
    cfg: BruleConfig,
    *,
    labelled: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Algorithm 2's terms (unweighted, scalars) and their weighted ``total`` for images ``(B, 3, S, S)``
    in [-1, 1]; ``labelled`` = ``(images, landmarks (B, N, 2))`` adds the semi-supervised term.

    ``barycenter`` is only present in unsupervised mode and ``supervised`` only in semi-supervised mode
    (R_b is never evaluated there). Randomness (``z``, ``g``) comes from torch's global RNG."""
    lo = cfg.loss
    logits = model.encoder(images)
    coords = model.encoder.coordinates(logits)  # X_L
    probs = _softmax_maps(logits)  # L
    terms: dict[str, Tensor] = {}
    if not cfg.semi_supervised:
        terms["barycenter"] = barycenter_regularizer(
            _mesh(coords, model), _mesh(model.barycenter, model), coefficients=(lo.c11, lo.c12, lo.c13)
        )
    terms["geometric"] = geometric_term(model, images, coords, _warp(cfg, images.shape[0], images.device))
    terms["concentration"] = heatmap_ce(logits, model.sparse_heatmaps(coords.detach()))  # H(L‖L_sp)
    z = torch.randn(images.shape[0], model.z_dim, device=images.device)
    fake = model.generate(probs, model.styles(z))  # I_F = G(L, S_o(z))
    terms["adversarial"] = g_nonsaturating_loss(model.discriminate(images, probs)) + g_nonsaturating_loss(
        model.discriminate(fake, probs)
    )
    restored = model.generate(model.sparse_heatmaps(coords), model.style_encoder(images))  # G(L_sp, S(I))
    terms["reconstruction"] = (restored.float() - images.float()).abs().mean()
    terms["fake_landmarks"] = heatmap_ce(model.encoder(fake), probs.detach())  # H(L(I_F)‖L)
    if labelled is not None:
        lab_images, lab_points = labelled
        terms["supervised"] = heatmap_ce(model.encoder(lab_images), model.sparse_heatmaps(lab_points))
    weights = {
        "barycenter": lo.c5,
        "geometric": lo.c6,
        "concentration": lo.c7,
        "adversarial": lo.c8,
        "reconstruction": lo.c9,
        "fake_landmarks": lo.c10,
        "supervised": lo.supervised,
    }
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms


def gan_step(
    model: Brule,
    optimizers: OptimizerGroup,
    images: Tensor,
    step: int,
    cfg: BruleConfig,
    *,
    amp: bool = False,
) -> dict[str, Tensor]:
    """Algorithm 1 on ``images`` ``(B, 3, S, S)`` in [-1, 1] (the encoder is frozen): D step, lazy R1 when
    ``step % r1_every == 0``, G/S_o/S step with the restore/style block when ``step % restore_every == 0``.
    Returns detached scalars (zeros for the blocks that did not run)."""
    lo = cfg.loss
    device = images.device
    b = images.shape[0]
    zero = images.new_zeros((), dtype=torch.float32)
    out = {k: zero for k in ("r1", "restore", "fake_heatmap", "style")}
    with torch.no_grad(), autocast(device, amp):
        coords = model.encoder.coordinates(model.encoder(images))
    warp = _warp(cfg, b, device)
    g_images = apply_warp(images, warp)  # gI
    g_heat = apply_warp(model.sparse_heatmaps(coords), warp)  # gL
    z = torch.randn(b, model.z_dim, device=device)

    # ---- discriminator ------------------------------------------------------------------------------
    set_requires_grad(model.discriminator, True)
    with autocast(device, amp):
        s_o = model.styles(z)
        fake = model.generate(g_heat, s_o)  # I_F = G(gL, S_o(z))
        d_loss = d_logistic_loss(
            model.discriminate(g_images, g_heat), model.discriminate(fake.detach(), g_heat)
        )
    opt_d = optimizers["d"]
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    average_gradients(model.discriminator)
    opt_d.step()
    if step % lo.r1_every == 0 and lo.r1_gamma > 0:  # lazy R1, λ E‖∇D(gI, gL)‖²
        real = torch.cat([g_images, model.condition(g_heat)], 1).detach().requires_grad_(True)
        with autocast(device, amp):
            r1 = r1_penalty(model.discriminator(real), real)
        opt_d.zero_grad(set_to_none=True)
        (lo.r1_gamma * r1 * lo.r1_every).backward()
        average_gradients(model.discriminator)
        opt_d.step()
        out["r1"] = r1.detach().float()

    # ---- generator, S_o, S --------------------------------------------------------------------------
    set_requires_grad(model.discriminator, False)
    with autocast(device, amp):
        g_adv = g_nonsaturating_loss(model.discriminate(fake, g_heat))
        total = g_adv
        if step % lo.restore_every == 0:
            restored = model.generate(g_heat, model.style_encoder(images))  # I_R = G(gL, S(I))
            restore = (restored.float() - g_images.float()).abs().mean()
            fake_heat = heatmap_ce(model.encoder(fake), g_heat)  # H(L_F‖gL)
            s_fake = model.style_encoder(fake).float()
            s_fake_g = model.style_encoder(apply_warp(fake, _warp(cfg, b, device))).float()
            style = (s_fake - s_o.detach().float()).abs().mean() + (s_fake - s_fake_g).abs().mean()
            total = total + lo.c1 * restore + lo.c2 * fake_heat + lo.c3 * style
            out.update(restore=restore.detach(), fake_heatmap=fake_heat.detach(), style=style.detach())
    opt_g = optimizers["g"]
    opt_g.zero_grad(set_to_none=True)
    total.backward()
    gens = [model.generator, model.mapping, model.style_encoder]
    average_gradients(gens)
    opt_g.step()
    set_requires_grad(model.discriminator, True)
    out.update(d_loss=d_loss.detach().float(), g_adv=g_adv.detach().float())
    return out


def train_step(
    model: Brule,
    optimizers: OptimizerGroup,
    images: Tensor,
    step: int,
    cfg: BruleConfig,
    *,
    labelled: tuple[Tensor, Tensor] | None = None,
    amp: bool = False,
) -> dict[str, Tensor]:
    """One iteration: Algorithm 1 (:func:`gan_step`), then Algorithm 2 (:func:`encoder_losses`, encoder
    step) when ``step % encoder_every == 0``. Returns detached scalars keyed by ``LOSS_KEYS``."""
    lo = cfg.loss
    others = [model.generator, model.mapping, model.style_encoder, model.discriminator]
    set_requires_grad(model.encoder, False)
    out = gan_step(model, optimizers, images, step, cfg, amp=amp)
    set_requires_grad(model.encoder, True)
    zero = images.new_zeros((), dtype=torch.float32)
    enc = {k: zero for k in (*ENCODER_TERMS, "total")}
    run_encoder = step % lo.encoder_every == 0
    if run_encoder:
        set_requires_grad(others, False)
        with autocast(images.device, amp):
            terms = encoder_losses(model, images, cfg, labelled=labelled)
        opt_l = optimizers["l"]
        opt_l.zero_grad(set_to_none=True)
        terms["total"].backward()
        average_gradients(model.encoder)
        opt_l.step()
        set_requires_grad(others, True)
        enc.update({k: v.detach().float() for k, v in terms.items()})
    out.update({f"enc_{k}": v for k, v in enc.items()})
    flags = {
        "r1_applied": step % lo.r1_every == 0 and lo.r1_gamma > 0,
        "restore_applied": step % lo.restore_every == 0,
        "encoder_applied": run_encoder,
    }
    out.update({k: torch.tensor(float(v), device=images.device) for k, v in flags.items()})
    return {k: out[k] for k in LOSS_KEYS}


# ------------------------------------------------------------------------------------------- loop
class _BatchStream:
    """Endless, resumable batches of one dataset: the order is a function of ``(seed, stream, epoch)``
    (:class:`zoo.common.ShardedEpochSampler`), the loader's generator is checkpointed."""

    def __init__(self, dataset: torch.utils.data.Dataset, stream: str, cfg: BruleConfig, ctx) -> None:
        t = cfg.train
        self.sampler = ShardedEpochSampler(
            len(dataset),
            batch_size=t.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            seed=derive_seed(t.seed, stream),
        )
        self.generator = make_generator(derive_seed(t.seed, stream, "loader", ctx.rank))
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=t.batch_size,
            sampler=self.sampler,
            num_workers=cfg.data.num_workers,
            drop_last=True,
            pin_memory=ctx.device.type == "cuda",
            generator=self.generator,
        )

    def start(self, step: int):
        return epoch_batches(self.loader, self.sampler, step)


def train(
    cfg: BruleConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    ctx: DistributedContext | None = None,
    data: BruleData | None = None,
) -> dict:
    """Train according to ``cfg``; returns the final evaluation metrics (also in ``metrics.json``).

    Args:
        cfg: the resolved configuration (validated here: bad values raise ``ValueError`` naming the field).
        resume: continue from the newest intact checkpoint in ``<out_dir>/checkpoints`` (it must exist).
        overwrite: replace the run artifacts in a non-empty ``out_dir``.
        ctx: distributed context (default: from ``torchrun``'s environment, or a single process).
        data: pre-built data (default: :func:`build_data`); the ablation shares one across cells.
    """
    validate_config(cfg)
    with distributed_session(cfg.train.device, ctx) as ctx:
        return _train(cfg, resume=resume, overwrite=overwrite, ctx=ctx, data=data)


def _train(
    cfg: BruleConfig, *, resume: bool, overwrite: bool, ctx: DistributedContext, data: BruleData | None
) -> dict:
    from zoo.brule.evaluate import evaluate_model, log_samples

    t_cfg = cfg.train
    out = start_run(t_cfg, ctx, resume=resume, overwrite=overwrite)
    device = ctx.device
    data = data if data is not None else build_data(cfg)
    layout = get_layout(cfg.data.layout)

    streams = {"images": _BatchStream(data.images, "images", cfg, ctx)}
    if cfg.semi_supervised:
        streams["labelled"] = _BatchStream(data.labelled, "labelled", cfg, ctx)
    generators = {f"{name}-loader": stream.generator for name, stream in streams.items()}

    # ---- model, optimisers ------------------------------------------------------------------------------
    model = build_model(cfg, data.num_points, data.barycenter.shape[0]).to(device)
    model.barycenter.copy_(data.barycenter.to(device))
    broadcast_parameters(model)
    optimizers = build_optimizers(model, cfg)
    ckpts = CheckpointManager(out / "checkpoints", keep=t_cfg.keep_checkpoints, enabled=ctx.is_main)
    step = 0
    if resume:
        step = ckpts.load_latest(model=model, optimizer=optimizers, generators=generators)["step"]
    if ctx.is_main:
        save_config(cfg, out / "config.json")
    amp = t_cfg.amp and device.type == "cuda"
    logger = MetricLogger(
        out / "logs", enabled=ctx.is_main, tensorboard=t_cfg.tensorboard, resume_step=step if resume else None
    )
    batches = {name: stream.start(step) for name, stream in streams.items()}
    show_bar = ctx.is_main and t_cfg.progress and sys.stderr.isatty()  # a bar only on a terminal
    bar = progress(total=t_cfg.steps, initial=step, enabled=show_bar, desc=cfg.loss.mode)
    sums = torch.zeros(len(LOSS_KEYS), device=device)
    window = {"n": 0, "t0": time.perf_counter()}
    totals = {"seconds": 0.0, "steps": 0, "encoder_steps": 0}
    model.train()
    while step < t_cfg.steps:
        t_step = time.perf_counter()
        images = next(batches["images"]).to(device, non_blocking=True)
        labelled = None
        if "labelled" in batches:
            labelled = tuple(x.to(device, non_blocking=True) for x in next(batches["labelled"]))
        losses = train_step(model, optimizers, images, step, cfg, labelled=labelled, amp=amp)
        totals["encoder_steps"] += int(losses["encoder_applied"])
        step += 1
        sums += torch.stack([losses[k] for k in LOSS_KEYS])
        window["n"] += 1
        totals["steps"] += 1
        totals["seconds"] += time.perf_counter() - t_step
        bar.update(1)

        if step % t_cfg.log_every == 0 or step == t_cfg.steps:
            dt = max(time.perf_counter() - window["t0"], 1e-9)
            stats = all_reduce_mean(sums / window["n"]).cpu()
            row = {k: float(stats[i]) for i, k in enumerate(LOSS_KEYS)}
            for key, flag in _SCHEDULED.items():  # a scheduled block's mean over the iterations it ran
                row[key] = row[key] / row[flag] if row[flag] > 0 else 0.0
            row["iterations_per_s"] = window["n"] / dt
            logger.log(step, row)
            bar.set_postfix(d=f"{float(row['d_loss']):.3g}", enc=f"{float(row['enc_total']):.3g}")
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
            logger.log(step, evaluate_model(model, data, layout, device=device), split="eval")
        if step % t_cfg.ckpt_every == 0 or step == t_cfg.steps:
            ckpts.save(
                step=step,
                model=model,
                optimizer=optimizers,
                config=config_to_dict(cfg),
                generators=generators,
                extra={"num_points": data.num_points, "barycenter_points": int(data.barycenter.shape[0])},
            )
    bar.close()

    # ---- closing summary --------------------------------------------------------------------------------
    metrics = evaluate_model(model, data, layout, device=device)
    logger.log(step, metrics, split="test")
    logger.close()
    seconds = max(totals["seconds"], 1e-9)
    result = {
        "step": step,
        "mode": cfg.loss.mode,
        "label_budget": cfg.data.label_budget,
        **metrics,
        "encoder_steps_this_run": totals["encoder_steps"],
        "train_seconds": totals["seconds"],
        "iterations_per_s": totals["steps"] / seconds,
    }
    if ctx.is_main:
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=float) + "\n")
        keys = (
            "linear_probe_nme",
            "baseline_linear_probe_nme",
            "ot_nme",
            "baseline_ot_nme",
            "stability",
            "iterations_per_s",
        )
        print(run_summary(out, result, keys))
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (see the module docstring)."""
    return trainer_main(
        BruleConfig,
        train,
        argv,
        description="Train BRULÉ (barycenter-regularised unsupervised landmark extraction).",
        presets=PRESETS,
    )


if __name__ == "__main__":
    main()

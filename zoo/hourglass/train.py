r"""Train a stacked hourglass on landmarks: one readable loop.

::

    python -m zoo.hourglass.train --train.out_dir runs/hg --data.label_budget 300 --aug.classical true
    torchrun --nproc_per_node=4 -m zoo.hourglass.train --config runs/hg/config.json
    python -m zoo.hourglass.train --train.out_dir runs/hg --resume      # continue after a kill

Per optimiser step (``optim.grad_accum`` micro-batches, each of ``train.batch_size`` labelled images
and, with ELT on unlabelled data, as many unlabelled ones):

.. math::
    L = \underbrace{\frac{1}{S}\sum_{t=1}^{S} \frac{1}{|B_\ell| N}\sum_{b,k}
        \lVert H^{(t)}_{b,k} - G_\sigma(x_{b,k}) \rVert_2^2}_{L_{gt}\ \text{(intermediate supervision)}}
        \;+\; \lambda_{elt}\, L_{elt}\big(\hat x^{(a)}, \hat x^{(b)}, T_a, T_b\big)

where ``G_σ`` are Gaussian target heatmaps (eq. 1 of Bespalov et al.), ``\hat x`` the soft-argmax
coordinates of the last stack on two views ``T_a, T_b`` of each image (thesis eq. 3.9; labelled and
unlabelled images), ``L_{elt}`` :class:`wbaug.losses.EquivariantLandmarkLoss` measured in heatmap
pixels. Adam (``optim.lr`` = 1e-3) with ``ReduceLROnPlateau`` (×0.1) on the validation NME, early stop at
the lr floor; final metrics on the held-out test split.

Checkpoints (``<out_dir>/checkpoints/last.pt`` + numbered copies, atomic) carry model, optimiser,
scheduler, step, RNG states and the resolved config; the data order and augmentation are pure
functions of ``(seed, epoch, index)``, so ``--resume`` replays the same batches from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from wbaug.io_atomic import atomic_write_text
from wbaug.landmarks import gaussian_heatmaps, get_layout
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
    unwrap_model,
    wrap_ddp,
)
from zoo.hourglass.config import PRESETS, HourglassConfig
from zoo.hourglass.data import DataSplits, EvalSet, TrainSet, build_splits, collate_views
from zoo.hourglass.evaluate import evaluate_model, log_samples
from zoo.hourglass.model import StackedHourglass, image_to_heatmap

__all__ = ["build_model", "heatmap_loss", "main", "train"]



def build_model(cfg: HourglassConfig, num_landmarks: int) -> StackedHourglass:
    """The hourglass described by ``cfg.model`` with ``num_landmarks`` heatmaps."""
    m = cfg.model
    return StackedHourglass(
        num_landmarks,
        stacks=m.stacks,
        width=m.width,
        depth=m.depth,
        blocks=m.blocks,
        heatmap_stride=m.heatmap_stride,
        backbone=m.backbone,
    )


def heatmap_loss(heatmaps: Tensor, landmarks: Tensor, *, stride: int, sigma: float) -> Tensor:
    """Intermediate-supervision loss: squared error summed over pixels, averaged over images, landmarks
    and stacks. ``heatmaps (B, S, N, h, w)``, ``landmarks (B, N, 2)`` in image pixels."""
    if heatmaps.shape[0] == 0:
        return heatmaps.float().sum() * 0.0
    target = gaussian_heatmaps(image_to_heatmap(landmarks.float(), stride), heatmaps.shape[-2:], sigma)
    return (heatmaps.float() - target.unsqueeze(1)).square().sum((-2, -1)).mean()


def _loader(dataset: TrainSet, sampler: ShardedEpochSampler, cfg: HourglassConfig, ctx, g) -> Any:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_views,
        drop_last=True,
        pin_memory=ctx.device.type == "cuda",
        generator=g,
        persistent_workers=False,
    )


def _barycentric_transform(cfg: HourglassConfig, splits: DataSplits) -> Any:
    """Fit the paired Wasserstein-barycentric sampler on the labelled landmarks."""
    from zoo.hourglass.augment import build_barycentric_sampler

    return build_barycentric_sampler(cfg, splits)


def _elt_loss(cfg: HourglassConfig) -> nn.Module:
    try:
        from wbaug.losses import EquivariantLandmarkLoss
    except ImportError:  # the subpackage's re-export may be missing in partial installs
        from wbaug.losses.equivariant import EquivariantLandmarkLoss

    return EquivariantLandmarkLoss(loss=cfg.elt.loss, symmetric=cfg.elt.symmetric, reduction="mean")


def train(
    cfg: HourglassConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    ctx: DistributedContext | None = None,
    splits: DataSplits | None = None,
) -> dict:
    """Train according to ``cfg``; returns the final evaluation metrics (also in ``metrics.json``).

    Args:
        cfg: the resolved configuration.
        resume: continue from the newest intact checkpoint in ``<out_dir>/checkpoints`` (``last.pt``, else
            the newest numbered one); fails when there is none.
        overwrite: replace the run artifacts in a non-empty ``out_dir`` (without it a new run refuses a
            non-empty ``out_dir``; see :func:`zoo.common.checkpoint.prepare_run_dir`).
        ctx: distributed context (default: from ``torchrun``'s environment, or a single process).
        splits: pre-built data splits (default: :func:`~zoo.hourglass.data.build_splits` of ``cfg.data``);
            the ablation passes one pre-rendered set to every cell.
    """
    with distributed_session(cfg.train.device, ctx) as ctx:
        return _train(cfg, resume=resume, overwrite=overwrite, ctx=ctx, splits=splits)


def _train(
    cfg: HourglassConfig, *, resume: bool, overwrite: bool, ctx: DistributedContext, splits: DataSplits | None
) -> dict:
    t_cfg = cfg.train
    out = start_run(t_cfg, ctx, resume=resume, overwrite=overwrite)
    device = ctx.device

    # ---- data ------------------------------------------------------------------------------------
    splits = splits if splits is not None else build_splits(cfg.data)
    layout = get_layout(cfg.data.layout)
    bary = _barycentric_transform(cfg, splits) if cfg.aug.barycentric else None
    train_set = TrainSet(
        splits,
        splits.labelled,
        cfg.data.image_size,
        cfg.aug,
        cfg.elt,
        barycentric=bary,
        cache=cfg.data.cache_images,
    )
    loader_gen = make_generator(derive_seed(t_cfg.seed, "loader", ctx.rank))
    sampler = ShardedEpochSampler(
        len(train_set),
        batch_size=t_cfg.batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=derive_seed(t_cfg.seed, "labelled"),
    )
    use_unlabelled = cfg.elt.enabled and cfg.elt.unlabelled and len(splits.unlabelled) > 0
    if use_unlabelled:
        unl_set = TrainSet(
            splits,
            splits.unlabelled,
            cfg.data.image_size,
            cfg.aug,
            cfg.elt,
            labelled=False,
            cache=cfg.data.cache_images,
        )
        unl_sampler = ShardedEpochSampler(
            len(unl_set),
            batch_size=cfg.elt.unlabelled_batch_size or t_cfg.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            seed=derive_seed(t_cfg.seed, "unlabelled"),
        )

    def eval_split(dataset, indices):
        split = EvalSet(
            dataset,
            indices,
            cfg.data.image_size,
            native=splits.native_canvas,
            cache=cfg.data.cache_images,
            crop_margin=splits.crop_margin,
        )
        loader = torch.utils.data.DataLoader(
            split, batch_size=t_cfg.eval_batch_size, shuffle=False, num_workers=cfg.data.num_workers
        )
        return split, loader

    eval_set, eval_loader = eval_split(splits.test_dataset, splits.test)
    if splits.val:  # periodic evaluation (plateau schedule, early stop) on validation images
        val_set, val_loader = eval_split(splits.dataset, splits.val)
    else:
        val_set, val_loader = eval_set, eval_loader

    # ---- model, optimiser ------------------------------------------------------------------------
    model = build_model(cfg, splits.num_landmarks).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=cfg.optim.plateau_factor,
        patience=cfg.optim.plateau_patience,
        min_lr=cfg.optim.min_lr,
    )
    ckpts = CheckpointManager(out / "checkpoints", keep=t_cfg.keep_checkpoints, enabled=ctx.is_main)
    step, extra = 0, {"best_nme": math.inf}
    if resume:  # the newest intact checkpoint (prepare_run_dir made sure there is one)
        ckpt = ckpts.load_latest(
            model=model, optimizer=optimizer, scheduler=scheduler, generators={"loader": loader_gen}
        )
        step, extra = ckpt["step"], {**extra, **ckpt["extra"]}
    if ctx.is_main:
        save_config(cfg, out / "config.json")
    net = wrap_ddp(model, ctx)
    if t_cfg.compile:
        net = torch.compile(net)
    elt_loss = _elt_loss(cfg) if cfg.elt.enabled else None
    amp = t_cfg.amp and device.type == "cuda"
    stride, sigma = cfg.model.heatmap_stride, cfg.model.sigma
    accum = cfg.optim.grad_accum

    logger = MetricLogger(
        out / "logs", enabled=ctx.is_main, tensorboard=t_cfg.tensorboard, resume_step=step if resume else None
    )
    batches = epoch_batches(_loader(train_set, sampler, cfg, ctx, loader_gen), sampler, step * accum)
    if use_unlabelled:
        unl_gen = make_generator(derive_seed(t_cfg.seed, "unl-loader", ctx.rank))
        unl_batches = epoch_batches(
            _loader(unl_set, unl_sampler, cfg, ctx, unl_gen), unl_sampler, step * accum
        )

    # ---- loop ------------------------------------------------------------------------------------
    bar = progress(
        total=t_cfg.steps, initial=step, enabled=ctx.is_main and t_cfg.progress, desc=cfg.mode_name
    )
    window: dict[str, Any] = {
        "sums": torch.zeros(3, device=device),
        "images": 0,
        "t0": time.perf_counter(),
        "n": 0,
    }
    totals = {"images": 0, "seconds": 0.0, "steps": 0}
    net.train()
    while step < t_cfg.steps:
        t_step = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for micro in range(accum):
            batch = next(batches)
            parts = [batch]
            if use_unlabelled:
                parts.append(next(unl_batches))
            images = torch.cat([p["images"].flatten(0, 1) for p in parts]).to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            n_lab = batch["images"].shape[0] * batch["images"].shape[1]
            sync = ctx.is_distributed and micro < accum - 1
            with net.no_sync() if sync and hasattr(net, "no_sync") else contextlib.nullcontext():
                with autocast(ctx.device, amp):
                    heat = net(images)
                landmarks = batch["landmarks"].flatten(0, 1).to(device)
                l_gt = heatmap_loss(heat[:n_lab], landmarks, stride=stride, sigma=sigma)
                l_elt = heat.new_zeros((), dtype=torch.float32)
                if elt_loss is not None:
                    coords = unwrap_model(net).decode(
                        heat, soft=True, temperature=cfg.model.soft_argmax_temperature
                    )
                    coords = coords.view(-1, 2, *coords.shape[1:]) / stride  # (B, 2, N, 2) heatmap px
                    mats = torch.cat([p["matrices"] for p in parts]).to(device)
                    to_hm = torch.diag(torch.tensor([1 / stride, 1 / stride, 1.0], device=device))
                    from_hm = torch.diag(torch.tensor([float(stride), float(stride), 1.0], device=device))
                    mats = to_hm @ mats.float() @ from_hm  # the same maps expressed in heatmap pixels
                    l_elt = elt_loss(coords[:, 0], coords[:, 1], mats[:, 0], mats[:, 1])
                loss = l_gt + cfg.elt.weight * l_elt
                (loss / accum).backward()
            # accumulate on the device: no host synchronisation inside the loop (CUDA stays asynchronous)
            window["sums"] = window["sums"] + torch.stack([loss, l_gt, l_elt]).detach().float() / accum
            window["images"] += images.shape[0] * ctx.world_size
        if cfg.optim.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        step += 1
        window["n"] += 1
        totals["steps"] += 1
        totals["images"] += images.shape[0] * accum * ctx.world_size
        totals["seconds"] += time.perf_counter() - t_step
        bar.update(1)

        if step % t_cfg.log_every == 0 or step == t_cfg.steps:
            dt = max(time.perf_counter() - window["t0"], 1e-9)
            stats = all_reduce_mean(window["sums"] / window["n"]).cpu()
            row = {
                "loss": stats[0],
                "l_gt": stats[1],
                "l_elt": stats[2],
                "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": window["images"] / dt,
            }
            logger.log(step, row)
            bar.set_postfix(loss=f"{float(stats[0]):.4f}", ips=f"{row['images_per_s']:.1f}")
            window.update(sums=torch.zeros(3, device=device), images=0, t0=time.perf_counter(), n=0)

        stop = False
        if step % t_cfg.eval_every == 0 or step == t_cfg.steps:
            val = evaluate_model(unwrap_model(net), val_loader, layout, device=device, amp=amp)
            scheduler.step(val["nme"])
            extra["best_nme"] = min(extra["best_nme"], val["nme"])
            logger.log(step, {k: v for k, v in val.items() if isinstance(v, float)}, split="eval")
            # thesis §4: stop once the lr sits at its floor and the plateau patience has run out again
            stop = (
                cfg.optim.early_stop
                and optimizer.param_groups[0]["lr"] <= cfg.optim.min_lr * (1 + 1e-6)
                and scheduler.num_bad_epochs > cfg.optim.plateau_patience
            )
            if ctx.is_main and t_cfg.sample_images > 0:
                log_samples(
                    unwrap_model(net),
                    val_set,
                    logger,
                    step,
                    n=t_cfg.sample_images,
                    device=device,
                    png_dir=out / "samples",
                )
            net.train()

        if step % t_cfg.ckpt_every == 0 or step == t_cfg.steps or stop:
            ckpts.save(
                step=step,
                model=net,
                optimizer=optimizer,
                scheduler=scheduler,
                config=config_to_dict(cfg),
                generators={"loader": loader_gen},
                extra=extra,
            )
        if stop:
            if ctx.is_main:
                print(f"early stop at step {step}: lr at its floor and no improvement")
            break
    bar.close()
    # final numbers on the held-out test split
    metrics = evaluate_model(unwrap_model(net), eval_loader, layout, device=device, amp=amp)
    logger.log(step, {k: v for k, v in metrics.items() if isinstance(v, float)}, split="test")
    logger.close()
    seconds = max(totals["seconds"], 1e-9)
    result = {
        "step": step,
        "mode": cfg.mode_name,
        **metrics,
        "train_seconds": totals["seconds"],
        "train_images_per_s": totals["images"] / seconds,
        "train_steps_per_s": totals["steps"] / seconds,
    }
    if ctx.is_main:
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=float) + "\n")
        print(run_summary(out, result, ("nme", "auc", "fr", "train_steps_per_s")))
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (see the module docstring)."""
    return trainer_main(
        HourglassConfig,
        train,
        argv,
        description="Train a stacked hourglass landmark detector (wbaug zoo).",
        presets=PRESETS,
    )


if __name__ == "__main__":
    main()

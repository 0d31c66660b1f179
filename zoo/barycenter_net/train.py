r"""Train BarycenterNet on weighted pairs of CSG contours: one readable loop.

::

    python -m zoo.barycenter_net.train --train.out_dir runs/bn                       # the paper's 512² recipe
    python -m zoo.barycenter_net.train --preset cpu --train.out_dir runs/bn-cpu      # 64², minutes on a CPU
    torchrun --nproc_per_node=4 -m zoo.barycenter_net.train --config runs/bn/config.json
    python -m zoo.barycenter_net.train --train.out_dir runs/bn --resume             # continue after a kill

Per step, on a batch of pairs :math:`(a_1, a_2)` with weights :math:`(\lambda, 1 - \lambda)` and solver
barycenter :math:`t` (the paper's linearised Sinkhorn-divergence barycenter by default):

.. math:: L = \frac{1}{B} \sum_b \mathrm{KL}\big(t_b \,\|\, f_\theta(a_{b,1}, a_{b,2}; \lambda_b)\big)

SGD with momentum and warm restarts (``CosineAnnealingWarmRestarts``, stepped every optimiser step),
gradient clipping, bf16 autocast on CUDA. Every ``eval_every`` steps: KL / L1 on held-out 2-, 3- and 5-way
problems (the network is trained on pairs only; more inputs just duplicate the shared contractive path)
and a figure of inputs, targets and predictions. Checkpoints (``<out_dir>/checkpoints``) carry model,
optimiser, scheduler, step, RNG states and the resolved config; batches are a pure function of
``(seed, epoch, index)``, so ``--resume`` replays the same data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wbaug.io_atomic import atomic_write_text
from zoo.barycenter_net.bank import LinearizedPairs, load_or_build_bank
from zoo.barycenter_net.config import PRESETS, BarycenterNetConfig
from zoo.barycenter_net.data import PairDataset, build_eval_sets, build_training_set
from zoo.barycenter_net.evaluate import barycenter_figure, build_model, evaluate_model, kl_divergence
from zoo.common import (
    CheckpointManager,
    DistributedContext,
    MetricLogger,
    ShardedEpochSampler,
    all_reduce_mean,
    autocast,
    barrier,
    config_to_dict,
    derive_seed,
    distributed_session,
    epoch_batches,
    make_generator,
    progress,
    run_summary,
    save_config,
    save_figure,
    start_run,
    trainer_main,
    unwrap_model,
    wrap_ddp,
)

__all__ = ["build_data", "main", "train"]



def build_data(
    cfg: BarycenterNetConfig, device: str | torch.device = "cpu"
) -> tuple[torch.utils.data.Dataset, dict[int, dict]]:
    """Training pairs and held-out k-way sets described by ``cfg.data`` / ``cfg.eval`` (cached if asked).

    Linearised targets (the paper's) come from a shape bank with targets computed on the fly
    (:mod:`zoo.barycenter_net.bank`, memory-mapped under ``data.cache_dir``), which scales to 512²;
    the other solvers precompute every target in memory (small grids only). The bank's Sinkhorn solves
    run on ``device``.
    """
    d, e = cfg.data, cfg.eval
    common = {"size": d.size, "target": d.target, "reg": d.reg, "max_depth": d.max_depth, "seed": d.data_seed}
    if d.target == "linearized":
        bank = load_or_build_bank(
            d.cache_dir,
            num_shapes=d.num_shapes,
            size=d.size,
            reg=d.reg,
            max_depth=d.max_depth,
            seed=d.data_seed,
            show_progress=cfg.train.progress,
            device=device,
        )
        train_set = LinearizedPairs(bank, d.num_pairs, seed=d.data_seed, augment=d.augment)
    else:
        pairs = build_training_set(
            num_shapes=d.num_shapes, num_pairs=d.num_pairs, cache_dir=d.cache_dir, **common
        )
        train_set = PairDataset(pairs, augment=d.augment)
    eval_sets = build_eval_sets(
        num_shapes=e.num_shapes,
        num_problems=e.num_problems,
        ways=e.ways,
        cache_dir=d.cache_dir,
        device=device,
        show_progress=cfg.train.progress,
        **common,
    )
    return train_set, eval_sets


def train(
    cfg: BarycenterNetConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    ctx: DistributedContext | None = None,
) -> dict:
    """Train according to ``cfg``; returns the final held-out metrics (also in ``metrics.json``).

    ``resume`` continues from the newest intact checkpoint (and fails when there is none); ``overwrite``
    replaces the run artifacts of a non-empty ``out_dir``, which a new run otherwise refuses (see
    :func:`zoo.common.checkpoint.prepare_run_dir`)."""
    with distributed_session(cfg.train.device, ctx) as ctx:
        return _train(cfg, resume=resume, overwrite=overwrite, ctx=ctx)


def _train(cfg: BarycenterNetConfig, *, resume: bool, overwrite: bool, ctx: DistributedContext) -> dict:
    t_cfg, o_cfg = cfg.train, cfg.optim
    out = start_run(t_cfg, ctx, resume=resume, overwrite=overwrite)
    device = ctx.device

    # ---- data ------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    if ctx.is_distributed and not ctx.is_main:
        barrier()  # rank 0 builds (and caches) the shape bank first; the others then load it
    dataset, eval_sets = build_data(cfg, device)
    if ctx.is_distributed and ctx.is_main:
        barrier()
    data_seconds = time.perf_counter() - t0
    sampler = ShardedEpochSampler(
        len(dataset),
        batch_size=t_cfg.batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=derive_seed(t_cfg.seed, "pairs"),
    )
    loader_gen = make_generator(derive_seed(t_cfg.seed, "loader", ctx.rank))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=t_cfg.batch_size,
        sampler=sampler,
        num_workers=t_cfg.num_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=loader_gen,
    )

    # ---- model, optimiser ------------------------------------------------------------------------
    model = build_model(cfg).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=o_cfg.lr, momentum=o_cfg.momentum, weight_decay=o_cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=o_cfg.restart_steps, T_mult=o_cfg.restart_mult, eta_min=o_cfg.min_lr
    )
    ckpts = CheckpointManager(out / "checkpoints", keep=t_cfg.keep_checkpoints, enabled=ctx.is_main)
    step = 0
    if resume:  # the newest intact checkpoint (prepare_run_dir made sure there is one)
        ckpt = ckpts.load_latest(
            model=model, optimizer=optimizer, scheduler=scheduler, generators={"loader": loader_gen}
        )
        step = ckpt["step"]
    if ctx.is_main:
        save_config(cfg, out / "config.json")
    net = wrap_ddp(model, ctx)
    amp = t_cfg.amp and device.type == "cuda"
    logger = MetricLogger(
        out / "logs", enabled=ctx.is_main, tensorboard=t_cfg.tensorboard, resume_step=step if resume else None
    )
    batches = epoch_batches(loader, sampler, step)

    def evaluate(at_step: int, split: str) -> dict[str, float]:
        metrics = evaluate_model(
            unwrap_model(net), eval_sets, batch_size=cfg.eval.batch_size, device=device, amp=amp
        )
        logger.log(at_step, metrics, split=split)
        if ctx.is_main and t_cfg.sample_images:
            for k, data in eval_sets.items():
                n_show = min(t_cfg.sample_images, len(data["inputs"]))
                with torch.no_grad(), autocast(device, amp):
                    inputs, weights = data["inputs"][:n_show].to(device), data["weights"][:n_show].to(device)
                    pred = unwrap_model(net)(inputs, weights)
                fig = barycenter_figure(data, pred.cpu(), n=n_show, title=f"step {at_step}, {k} inputs")
                save_figure(fig, out / "samples" / f"step{at_step:08d}_k{k}.png")
        net.train()
        return metrics

    # ---- loop ------------------------------------------------------------------------------------
    bar = progress(
        total=t_cfg.steps, initial=step, enabled=ctx.is_main and t_cfg.progress, desc="barycenter_net"
    )
    window = {"loss": torch.zeros((), device=device), "n": 0, "t0": time.perf_counter()}
    train_seconds = 0.0
    net.train()
    while step < t_cfg.steps:
        t_step = time.perf_counter()
        inputs, weights, target = (v.to(device, non_blocking=True) for v in next(batches))
        with autocast(device, amp):
            log_pred = net(inputs, weights, log=True)
        loss = kl_divergence(target, log_pred).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o_cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(net.parameters(), o_cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        # accumulate on the device: no host synchronisation inside the loop
        window["loss"] = window["loss"] + loss.detach()
        window["n"] += 1
        train_seconds += time.perf_counter() - t_step
        bar.update(1)

        if step % t_cfg.log_every == 0 or step == t_cfg.steps:
            dt = max(time.perf_counter() - window["t0"], 1e-9)
            mean_loss = all_reduce_mean(window["loss"] / window["n"]).cpu()
            pairs_per_s = window["n"] * t_cfg.batch_size * ctx.world_size / dt
            logger.log(
                step, {"kl": mean_loss, "lr": optimizer.param_groups[0]["lr"], "pairs_per_s": pairs_per_s}
            )
            bar.set_postfix(kl=f"{float(mean_loss):.4f}", pps=f"{pairs_per_s:.0f}")
            window = {"loss": torch.zeros((), device=device), "n": 0, "t0": time.perf_counter()}
        if step % t_cfg.eval_every == 0 and step != t_cfg.steps:
            evaluate(step, "eval")
        if step % t_cfg.ckpt_every == 0 or step == t_cfg.steps:
            ckpts.save(
                step=step,
                model=net,
                optimizer=optimizer,
                scheduler=scheduler,
                config=config_to_dict(cfg),
                generators={"loader": loader_gen},
            )
    bar.close()
    metrics = evaluate(step, "test")
    logger.close()
    result: dict[str, Any] = {
        "step": step,
        **metrics,
        "data_seconds": data_seconds,
        "train_seconds": train_seconds,
        "parameters": unwrap_model(net).num_parameters(),
    }
    if ctx.is_main:
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=float) + "\n")
        print(run_summary(out, result, sorted(k for k in metrics if k.startswith("kl_"))))
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (see the module docstring)."""
    return trainer_main(
        BarycenterNetConfig, train, argv, description="Train BarycenterNet (wbaug zoo).", presets=PRESETS
    )


if __name__ == "__main__":
    main()

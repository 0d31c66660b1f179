r"""Train the learned local transformations of Chrysos et al., *Visual Data Augmentation through
Learning* (2018): all stages in one readable loop.

::

    python -m zoo.local_transformations.train --preset smoke --train.out_dir runs/lt-smoke
    python -m zoo.local_transformations.train --preset cpu --train.out_dir runs/lt
    torchrun --nproc_per_node=4 -m zoo.local_transformations.train --preset gpu --train.out_dir runs/lt-gpu
    python -m zoo.local_transformations.train --train.out_dir runs/lt --resume     # continue after a kill

One global step counter runs through the stages (``train.stage*_steps``):

* **Stage I** (§3.1, eq. 2-3) -- adversarial autoencoder on single frames: encoder ``f^I_e`` to the
  latent ``d``, decoder ``f^I_d``; the discriminator ``D_I`` scores the latent against the prior
  ``N(0, I)`` and the reconstruction against the input. D step: ``E sp(−D(x)) + E sp(D(x̂))`` on both
  branches; autoencoder step: ``E sp(−D(x̂)) + E sp(−D(z)) + λ_I (‖x̂ − x‖₁ + ‖∇x̂ − ∇x‖₁)``.
* **Stage II** (§3.2, eq. 6-7) -- one step: encode every training pair with the frozen encoder and set
  ``A = Y Xᵀ (X Xᵀ + λ_II I)⁻¹`` on ``X = [d^{(t)}; 1]`` (:func:`wbaug.transforms.fit_transition`, float64).
* **Stage III** (§3.3, eq. 8-9) -- the U-Net generator on ``(d̂ = A [f^I_e(i_t); 1], i_t)`` against the
  later frame ``i_{t+x}``; cGAN discriminator ``D_III(i_t, ·)``; generator loss
  ``E sp(−D_III(i_t, î)) + λ_III (‖î − i_{t+x}‖₁ + ‖∇î − ∇i_{t+x}‖₁) + λ_feat ‖φ(î) − φ(i_{t+x})‖₁`` with
  ``φ`` the penultimate layer of the (frozen) Stage I discriminator.
* **Stage IV** (§3.4, optional) -- the same losses, now also training the encoder and ``A``
  end to end (lower learning rate).

Checkpoints (``<out_dir>/checkpoints/last.pt``, atomic) hold every network, all optimisers, the step,
the stage, the RNG states and the config; the data order is a function of ``(seed, stage, epoch,
index)``, so ``--resume`` continues mid-stage bit-identically on CPU. The trained model is exported as
``<out_dir>/local_transformation.pt`` (:func:`wbaug.transforms.save_local_transformation`), the file
:class:`wbaug.transforms.LearnedLocalTransformation` loads. Under ``torchrun`` gradients are averaged
across ranks explicitly (:func:`zoo.common.gan.average_gradients`; several forwards per update).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from wbaug.io_atomic import atomic_write_text
from wbaug.transforms import fit_transition, image_gradient_l1, save_local_transformation
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
    feature_matching_loss,
    g_nonsaturating_loss,
    set_requires_grad,
)
from zoo.local_transformations.config import PRESETS, LocalTransformationsConfig, validate_config
from zoo.local_transformations.data import LTData, build_data
from zoo.local_transformations.model import LocalTransformationNets

__all__ = [
    "STAGES",
    "build_model",
    "build_optimizers",
    "fit_stage2",
    "main",
    "reconstruction_loss",
    "stage1_step",
    "stage3_step",
    "stage_at",
    "stage_bounds",
    "train",
]

STAGES = ("stage1", "stage2", "stage3", "stage4")


# -------------------------------------------------------------------------------------- schedule
def stage_bounds(cfg: LocalTransformationsConfig) -> dict[str, tuple[int, int]]:
    """``{stage: (first global step, end)}``: Stage I, one step of Stage II, Stage III, Stage IV."""
    t = cfg.train
    s1 = (0, t.stage1_steps)
    s2 = (s1[1], s1[1] + 1)
    s3 = (s2[1], s2[1] + t.stage3_steps)
    s4 = (s3[1], s3[1] + t.stage4_steps)
    return {"stage1": s1, "stage2": s2, "stage3": s3, "stage4": s4}


def stage_at(step: int, cfg: LocalTransformationsConfig) -> str:
    """The stage that global step ``step`` (0-based) belongs to (``"done"`` past the schedule)."""
    for name, (lo, hi) in stage_bounds(cfg).items():
        if lo <= step < hi:
            return name
    return "done"


def total_steps(cfg: LocalTransformationsConfig) -> int:
    end = stage_bounds(cfg)["stage4"][1]
    return end if cfg.train.steps is None else min(end, cfg.train.steps)


# ------------------------------------------------------------------------------------------ model
def build_model(cfg: LocalTransformationsConfig) -> LocalTransformationNets:
    """The networks described by ``cfg.model``."""
    return LocalTransformationNets(**asdict(cfg.model))


def build_optimizers(nets: LocalTransformationNets, cfg: LocalTransformationsConfig) -> OptimizerGroup:
    """Adam per stage: ``ae`` (Stage I encoder + decoder), ``d1`` (Stage I D), ``g3`` (Stage III
    generator), ``d3`` (Stage III D, also in Stage IV), ``ft`` (Stage IV: encoder, A, generator)."""
    o = cfg.optim
    betas = tuple(o.betas)
    adam = torch.optim.Adam
    return OptimizerGroup(
        ae=adam([*nets.encoder.parameters(), *nets.decoder.parameters()], lr=o.lr, betas=betas),
        d1=adam(nets.d_stage1.parameters(), lr=o.lr_d, betas=betas),
        g3=adam(nets.generator.parameters(), lr=o.lr, betas=betas),
        d3=adam(nets.d_stage3.parameters(), lr=o.lr_d, betas=betas),
        ft=adam(
            [*nets.encoder.parameters(), nets.model.transition, *nets.generator.parameters()],
            lr=o.lr_finetune,
            betas=betas,
        ),
    )


# ----------------------------------------------------------------------------------------- losses
def reconstruction_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``‖pred − target‖₁ + ‖∇pred − ∇target‖₁`` (eq. 3 and eq. 8; means over pixels)."""
    pred, target = pred.float(), target.float()
    return F.l1_loss(pred, target) + image_gradient_l1(pred, target)


def stage1_step(
    nets: LocalTransformationNets,
    optimizers: OptimizerGroup,
    images: Tensor,
    cfg: LocalTransformationsConfig,
    *,
    amp: bool = False,
) -> dict[str, Tensor]:
    """One Stage I iteration on frames ``(B, C, S, S)`` in [-1, 1]: a D_I step, then an autoencoder step.
    The prior sample comes from torch's global RNG (captured by checkpoints). Returns detached scalars."""
    lo = cfg.loss
    device = images.device
    d1 = nets.d_stage1
    with autocast(device, amp):
        latent = nets.encoder(images)
        recon = nets.decoder(latent)
    prior = torch.randn(latent.shape, device=device)

    set_requires_grad(d1, True)
    with autocast(device, amp):
        d_image = d_logistic_loss(d1.image(images), d1.image(recon.detach()))
        d_latent = d_logistic_loss(d1.latent(prior), d1.latent(latent.detach()))
        d_total = lo.image_adv * d_image + lo.latent_adv * d_latent
    optimizers["d1"].zero_grad(set_to_none=True)
    d_total.backward()
    average_gradients(d1)
    optimizers["d1"].step()

    set_requires_grad(d1, False)
    with autocast(device, amp):
        g_image = g_nonsaturating_loss(d1.image(recon))
        g_latent = g_nonsaturating_loss(d1.latent(latent))
        rec = reconstruction_loss(recon, images)
        ae_total = lo.image_adv * g_image + lo.latent_adv * g_latent + lo.lambda_1 * rec
    optimizers["ae"].zero_grad(set_to_none=True)
    ae_total.backward()
    average_gradients([nets.encoder, nets.decoder])
    optimizers["ae"].step()
    set_requires_grad(d1, True)
    values = {
        "d_image": d_image,
        "d_latent": d_latent,
        "g_image": g_image,
        "g_latent": g_latent,
        "recon": rec,
        "total": ae_total,
    }
    return {k: v.detach().float() for k, v in values.items()}


@torch.no_grad()
def encode_pairs(
    nets: LocalTransformationNets, data: LTData, *, device: torch.device, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Latents ``(P, d)`` of the sources and targets of every training pair (encoder in eval mode)."""
    nets.encoder.eval()
    src, tgt = [], []
    for start in range(0, len(data.pairs), batch_size):
        batch = [data.pairs[i] for i in range(start, min(len(data.pairs), start + batch_size))]
        s = torch.stack([b[0] for b in batch]).to(device)
        t = torch.stack([b[1] for b in batch]).to(device)
        src.append(nets.encoder(s).double())
        tgt.append(nets.encoder(t).double())
    return torch.cat(src), torch.cat(tgt)


@torch.no_grad()
def fit_stage2(
    nets: LocalTransformationNets, data: LTData, cfg: LocalTransformationsConfig, *, device: torch.device
) -> dict[str, Tensor]:
    """Stage II: ``A`` by closed-form ridge regression on the encoded training pairs (copied into
    ``nets.model.transition``). Returns the mean squared residual of ``A`` and of the identity map."""
    src, tgt = encode_pairs(nets, data, device=device)
    a = fit_transition(src, tgt, cfg.loss.lambda_2)
    nets.model.transition.copy_(a.to(nets.model.transition.dtype))
    pred = src @ a[:, :-1].t() + a[:, -1]
    return {
        "residual": (pred - tgt).square().mean().float(),
        "identity_residual": (src - tgt).square().mean().float(),
        "pairs": torch.tensor(float(src.shape[0])),
    }


def stage3_step(
    nets: LocalTransformationNets,
    optimizers: OptimizerGroup,
    source: Tensor,
    target: Tensor,
    cfg: LocalTransformationsConfig,
    *,
    finetune: bool = False,
    amp: bool = False,
) -> dict[str, Tensor]:
    """One Stage III (or, with ``finetune``, Stage IV) iteration on pairs ``(B, C, S, S)`` in [-1, 1].

    Stage III keeps the encoder and ``A`` fixed (no gradients) and trains the generator (``g3``);
    Stage IV trains encoder, ``A`` and generator together (``ft``). The D_III step comes first; the
    Stage I discriminator is frozen and only provides the feature-matching space."""
    lo = cfg.loss
    device = source.device
    model, d3, d1 = nets.model, nets.d_stage3, nets.d_stage1
    set_requires_grad(d1, False)
    if finetune:
        nets.encoder.train()
        model.transition.requires_grad_(True)
        with autocast(device, amp):
            latent = model.regress(model.encode(source).float())
    else:
        nets.encoder.eval()
        with torch.no_grad():
            latent = model.regress(model.encode(source).float())
    with autocast(device, amp):
        fake = model.synthesize(latent, source)

    set_requires_grad(d3, True)
    with autocast(device, amp):
        d_loss = d_logistic_loss(d3(source, target), d3(source, fake.detach()))
    optimizers["d3"].zero_grad(set_to_none=True)
    (lo.image_adv * d_loss).backward()
    average_gradients(d3)
    optimizers["d3"].step()

    set_requires_grad(d3, False)
    with autocast(device, amp):
        g_adv = g_nonsaturating_loss(d3(source, fake))
        rec = reconstruction_loss(fake, target)
        feat = feature_matching_loss([d1.features(fake)], [d1.features(target)])
        total = lo.image_adv * g_adv + lo.lambda_3_value * rec + lo.lambda_feat * feat
    opt = optimizers["ft" if finetune else "g3"]
    opt.zero_grad(set_to_none=True)
    total.backward()
    trained = [nets.generator, nets.encoder] if finetune else [nets.generator]
    average_gradients(trained)
    if finetune:
        average_gradients([_TransitionHolder(model.transition)])
    opt.step()
    set_requires_grad(d3, True)
    if finetune:
        model.transition.requires_grad_(False)
    values = {"d": d_loss, "g_adv": g_adv, "recon": rec, "feat": feat, "total": total}
    return {k: v.detach().float() for k, v in values.items()}


class _TransitionHolder(torch.nn.Module):
    """Wraps the transition parameter so :func:`average_gradients` (which takes modules) reaches it."""

    def __init__(self, param: torch.nn.Parameter) -> None:
        super().__init__()
        self.param = param


# ------------------------------------------------------------------------------------------- loop
def _batches(dataset: Any, stream: str, start: int, cfg: LocalTransformationsConfig, ctx) -> Iterator:
    t = cfg.train
    sampler = ShardedEpochSampler(
        len(dataset),
        batch_size=t.batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=derive_seed(t.seed, stream),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=t.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=True,
        pin_memory=ctx.device.type == "cuda",
        generator=make_generator(derive_seed(t.seed, stream, "loader", ctx.rank)),
    )
    return epoch_batches(loader, sampler, start)


def _set_modes(nets: LocalTransformationNets, stage: str) -> None:
    nets.train()
    if stage in ("stage2", "stage3"):
        nets.encoder.eval()


def train(
    cfg: LocalTransformationsConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    ctx: DistributedContext | None = None,
    data: LTData | None = None,
) -> dict:
    """Run the stages of ``cfg`` (validated here); returns the final metrics (also in ``metrics.json``).

    Args:
        cfg: the configuration.
        resume: continue from the newest intact checkpoint in ``<out_dir>/checkpoints``.
        overwrite: replace the run artifacts in a non-empty ``out_dir``.
        ctx: distributed context (default: from ``torchrun``'s environment, or one process).
        data: pre-built data (default: :func:`~zoo.local_transformations.data.build_data`).
    """
    validate_config(cfg)
    with distributed_session(cfg.train.device, ctx) as ctx:
        return _train(cfg, resume=resume, overwrite=overwrite, ctx=ctx, data=data)


def _train(
    cfg: LocalTransformationsConfig,
    *,
    resume: bool,
    overwrite: bool,
    ctx: DistributedContext,
    data: LTData | None,
) -> dict:
    from zoo.local_transformations.evaluate import evaluate_nets, log_samples

    t_cfg = cfg.train
    out = start_run(t_cfg, ctx, resume=resume, overwrite=overwrite)
    device = ctx.device
    data = data if data is not None else build_data(cfg)
    bounds = stage_bounds(cfg)
    end = total_steps(cfg)

    nets = build_model(cfg).to(device)
    broadcast_parameters(nets)
    optimizers = build_optimizers(nets, cfg)
    ckpts = CheckpointManager(out / "checkpoints", keep=t_cfg.keep_checkpoints, enabled=ctx.is_main)
    step = 0
    if resume:
        ckpt = ckpts.load_latest(model=nets, optimizer=optimizers)
        step = ckpt["step"]
        saved_stage = ckpt.get("extra", {}).get("stage")
        if saved_stage is not None and saved_stage != stage_at(step, cfg):
            raise ValueError(
                f"{ckpt['path']}: saved at {saved_stage} but step {step} is in {stage_at(step, cfg)} under "
                "this config (were train.stage*_steps changed?)"
            )
    if ctx.is_main:
        save_config(cfg, out / "config.json")
    amp = t_cfg.amp and device.type == "cuda"
    logger = MetricLogger(
        out / "logs", enabled=ctx.is_main, tensorboard=t_cfg.tensorboard, resume_step=step if resume else None
    )
    on_terminal = sys.stderr.isatty()  # no bar in log files
    bar = progress(
        total=end,
        initial=step,
        enabled=ctx.is_main and t_cfg.progress and on_terminal,
        desc="local transformations",
    )
    throughput: dict[str, dict[str, float]] = {}
    streams: dict[str, Iterator] = {}
    window: dict[str, Any] = {"sums": {}, "n": 0, "t0": time.perf_counter()}

    while step < end:
        stage = stage_at(step, cfg)
        _set_modes(nets, stage)
        t0 = time.perf_counter()
        if stage == "stage1":
            if "frames" not in streams:
                streams["frames"] = _batches(data.frames, "frames", step - bounds["stage1"][0], cfg, ctx)
            losses = stage1_step(nets, optimizers, next(streams["frames"]).to(device), cfg, amp=amp)
        elif stage == "stage2":
            losses = fit_stage2(nets, data, cfg, device=device)
            broadcast_parameters(nets.model)  # the same A (and weights) on every rank
        else:  # stage3 / stage4: one continuous stream of pairs
            if "pairs" not in streams:
                streams["pairs"] = _batches(data.pairs, "pairs", step - bounds["stage3"][0], cfg, ctx)
            source, target = (x.to(device) for x in next(streams["pairs"]))
            losses = stage3_step(nets, optimizers, source, target, cfg, finetune=stage == "stage4", amp=amp)
        step += 1
        seconds = time.perf_counter() - t0
        tp = throughput.setdefault(stage, {"steps": 0, "seconds": 0.0})
        tp["steps"] += 1
        tp["seconds"] += seconds
        for k, v in losses.items():
            key = f"{stage}/{k}"
            window["sums"][key] = window["sums"].get(key, 0.0) + v
        window["n"] += 1
        bar.update(1)

        stage_end = step == bounds[stage][1]
        if step % t_cfg.log_every == 0 or step == end or stage_end:
            keys = sorted(window["sums"])
            stats = all_reduce_mean(torch.stack([window["sums"][k] / window["n"] for k in keys])).cpu()
            row = {k: stats[i] for i, k in enumerate(keys)}
            row["iterations_per_s"] = window["n"] / max(time.perf_counter() - window["t0"], 1e-9)
            logger.log(step, row)
            bar.set_postfix(stage=stage, total=f"{float(row.get(f'{stage}/total', stats[-1])):.3g}")
            window.update(sums={}, n=0, t0=time.perf_counter())
        if ctx.is_main and t_cfg.sample_images > 0 and (step % t_cfg.sample_every == 0 or step == end):
            log_samples(
                nets, data, logger, step, stage=stage, cfg=cfg, device=device, png_dir=out / "samples"
            )
        if step % t_cfg.eval_every == 0 and step != end:
            logger.log(step, evaluate_nets(nets, data, cfg, device=device, full=False), split="eval")
        if step % t_cfg.ckpt_every == 0 or step == end or stage_end:
            ckpts.save(
                step=step,
                model=nets,
                optimizer=optimizers,
                config=config_to_dict(cfg),
                extra={"stage": stage_at(step, cfg)},
            )
    bar.close()

    # ---- export, closing evaluation and summary ---------------------------------------------------------
    final_stage = stage_at(step, cfg)
    nets.eval()
    if ctx.is_main and step > bounds["stage2"][0]:
        save_local_transformation(nets.model, out / "local_transformation.pt")
    metrics = evaluate_nets(nets, data, cfg, device=device, full=True)
    logger.log(step, {k: v for k, v in metrics.items() if isinstance(v, float)}, split="test")
    logger.close()
    result: dict[str, Any] = {"step": step, "stage": final_stage, **metrics}
    for name, tp in throughput.items():
        result[f"{name}_iterations_per_s"] = tp["steps"] / max(tp["seconds"], 1e-9)
    result["train_seconds"] = float(sum(tp["seconds"] for tp in throughput.values()))
    if ctx.is_main:
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=float) + "\n")
        keys = (
            "recon_l1",
            "pred_l1",
            "pca_pred_l1",
            "identity_pred_l1",
            "stage1_iterations_per_s",
            "stage3_iterations_per_s",
        )
        print(run_summary(out, result, keys))
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (see the module docstring)."""
    return trainer_main(
        LocalTransformationsConfig,
        train,
        argv,
        description="Train the learned local transformations of 'Visual Data Augmentation through Learning'.",
        presets=PRESETS,
    )


if __name__ == "__main__":
    main()

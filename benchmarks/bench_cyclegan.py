"""Iterations per second of the ``zoo.cyclegan`` training step (Algorithm 1) for its presets.

Times :func:`zoo.cyclegan.train.train_step` (both discriminator updates, the generator update with both
cycles, the EMA update) on fixed batches of the preset's own data, separately for iterations with the
lazy R1 penalty (every ``loss.r1_every``) and without, and reports the schedule-weighted average. Data
loading is excluded (the trainer caches the small synthetic sets in memory). Timings are never asserted
anywhere: this machine class is shared and noisy, so report the conditions with the numbers.

Usage::

    python benchmarks/bench_cyclegan.py                       # smoke and cpu presets on the CPU
    python benchmarks/bench_cyclegan.py --presets cpu --threads 2 --iters 10
    python benchmarks/bench_cyclegan.py --presets gpu --device cuda --batch 8   # 256 px, bf16
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from zoo.cyclegan.config import PRESETS
from zoo.cyclegan.train import ImageCycleLoss, build_model, build_optimizers, train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_preset(name: str, *, device: str, iters: int, batch: int | None, amp: bool) -> dict:
    cfg = PRESETS[name]()
    if batch is not None:
        cfg = replace(cfg, train=replace(cfg.train, batch_size=batch))
    dev = torch.device(device)
    torch.manual_seed(0)
    n = cfg.train.batch_size
    size = cfg.model.image_size
    num_landmarks = 68
    # the step's cost does not depend on the pixel values: random images and landmark sets of the
    # preset's shapes avoid building the whole data set for a timing
    images = torch.rand(n, 3, size, size, device=dev) * 2 - 1
    landmarks = torch.rand(n, num_landmarks, 2, device=dev) * (size - 1)
    model = build_model(cfg, num_landmarks).to(dev)
    opts = build_optimizers(model, cfg)
    loss = ImageCycleLoss(cfg).to(dev)
    use_amp = amp and dev.type == "cuda"
    k = cfg.loss.r1_every
    train_step(model, opts, images, landmarks, 1, cfg, loss, amp=use_amp)  # warm-up (allocations, kernels)
    times = {"r1": [], "plain": []}
    for i in range(iters):
        step = i * k if i % 2 == 0 else i * k + 1
        _sync(dev)
        t = time.perf_counter()
        train_step(model, opts, images, landmarks, step, cfg, loss, amp=use_amp)
        _sync(dev)
        times["r1" if step % k == 0 else "plain"].append(time.perf_counter() - t)
    r1 = sum(times["r1"]) / len(times["r1"])
    plain = sum(times["plain"]) / max(1, len(times["plain"])) if times["plain"] else r1
    avg = (r1 + (k - 1) * plain) / k
    return {
        "preset": name,
        "size": size,
        "batch": n,
        "s_per_iter_plain": plain,
        "s_per_iter_r1": r1,
        "s_per_iter": avg,
        "iters_per_s": 1 / avg,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="smoke,cpu", help="comma-separated preset names")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, default=6, help="timed iterations per preset (half with R1)")
    parser.add_argument("--batch", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print("| preset | size | batch | s/iter (no R1) | s/iter (R1) | s/iter (avg) | iterations/s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets.split(","):
        r = bench_preset(
            name.strip(), device=args.device, iters=args.iters, batch=args.batch, amp=not args.no_amp
        )
        print(
            f"| {r['preset']} | {r['size']} | {r['batch']} | {r['s_per_iter_plain']:.3f} | "
            f"{r['s_per_iter_r1']:.3f} | {r['s_per_iter']:.3f} | {r['iters_per_s']:.2f} |"
        )


if __name__ == "__main__":
    main()

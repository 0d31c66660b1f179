"""Benchmark ``wbaug.grid.convolutional_barycenter`` against POT's ``ot.bregman.convolutional_barycenter2d``.

Both solve the same entropic barycenter of two densities (same ``reg``, POT's normalised [0, 1] grid
units, the same fixed number of Bregman iterations with the stopping test disabled) in the same run;
the script prints both times, the ratio and the L1 difference of the results. Timings are never
asserted anywhere: this machine class is noisy, so read the ratio.

A second table times, per device present (CPU, and CUDA when available), one two-input barycenter by
our solver (100 iterations) and by the BarycenterNet of ``zoo/barycenter_net`` (default architecture:
width 32, depth 5; one forward, untrained weights -- the cost does not depend on them), in ms: the
comparison of the paper (9.2 ms for its network at 512² on a GPU, 589 ms for GeomLoss).

A third table (``--exact``) times the exact small-``reg`` path (``method="log"``, used by ``auto`` when
``max_d2 / reg > 680``): one application of the log kernel to ``(6, 64, 64)`` and ``(2, 128, 128)``
potentials (and one 256² one) by blocks (what the solver uses, the cheaper of the two block kernels of
``wbaug.grid._blocked``) vs the plain chunked ``logsumexp`` over the full kernel (the previous
implementation, and the definition), with the largest difference of the two.

Usage::

    python benchmarks/bench_grid.py                # 64², 128², 512² (POT timed on fewer iterations at 512²)
    python benchmarks/bench_grid.py --sizes 512 --iters 50 --threads 1
    python benchmarks/bench_grid.py --no-network   # solver comparison only
    python benchmarks/bench_grid.py --exact-only   # only the exact small-reg path table
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import ot
import torch

from wbaug.grid import convolutional_barycenter


def two_blobs(size: int, dtype: torch.dtype) -> torch.Tensor:
    """Two unit-mass densities: a ring and an off-centre Gaussian, ``(1, 2, size, size)``."""
    t = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    y, x = torch.meshgrid(t, t, indexing="ij")
    ring = torch.exp(-(((x - 0.4).square() + (y - 0.45).square()).sqrt() - 0.2).square() / 0.002)
    blob = torch.exp(-((x - 0.7).square() + (y - 0.6).square()) / 0.01)
    dens = torch.stack([ring, blob]) + 1e-6
    dens = dens / dens.sum(dim=(-1, -2), keepdim=True)
    return dens[None].to(dtype)


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="64,128,512", help="comma-separated grid sides")
    parser.add_argument("--iters", type=int, default=100, help="Bregman iterations for both solvers")
    parser.add_argument("--reg", type=float, default=4e-3, help="entropic regularisation (POT's units)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--pot-iters-512", type=int, default=20, help="POT iterations timed at 512² (scaled to --iters)"
    )
    parser.add_argument("--no-network", action="store_true", help="skip the BarycenterNet timing table")
    parser.add_argument("--exact-only", action="store_true", help="only the exact small-reg path table")
    args = parser.parse_args()
    if args.exact_only:
        time_exact_path()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, POT {ot.__version__}, threads {torch.get_num_threads()}, device cpu")
    print(f"reg={args.reg:g} (normalised units), {args.iters} iterations, 2 inputs, weights (0.5, 0.5)")
    weights = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    for size in (int(s) for s in args.sizes.split(",")):
        dens64 = two_blobs(size, torch.float64)
        pot_iters = min(args.iters, args.pot_iters_512) if size >= 512 else args.iters
        a_np = dens64[0].numpy()

        def run_pot(iters: int = pot_iters, a_np: np.ndarray = a_np) -> np.ndarray:
            return ot.bregman.convolutional_barycenter2d(
                a_np, args.reg, weights[0].numpy(), numItermax=iters, stopThr=0.0, method="sinkhorn"
            )

        t_pot, bar_pot = timed(run_pot)
        t_pot_scaled = t_pot * args.iters / pot_iters
        scaled = " (scaled)" if pot_iters != args.iters else ""
        line = [f"[{size}x{size}] POT {t_pot_scaled:8.3f} s{scaled}"]
        for dtype in (torch.float64, torch.float32):
            dens = dens64.to(dtype)

            def run_ours(d: torch.Tensor = dens, it: int = pot_iters) -> torch.Tensor:
                return convolutional_barycenter(d, weights.to(d.dtype), reg=args.reg, max_iter=it, tol=0.0)

            run_ours(it=2)  # warm-up (kernel construction, allocator)
            t_ours, bar = timed(run_ours)
            if pot_iters != args.iters:
                # the comparison of results uses POT's iteration count; the time is scaled like POT's
                t_ours = t_ours * args.iters / pot_iters
            l1 = float(np.abs(bar[0].double().numpy() - bar_pot).sum())
            name = str(dtype).replace("torch.", "")
            line.append(f"ours[{name}] {t_ours:7.3f} s -> {t_pot_scaled / t_ours:5.1f}x (L1 vs POT {l1:.1e})")
        print(" | ".join(line))
    if not args.no_network:
        time_network([int(s) for s in args.sizes.split(",")], args.reg, args.iters)
    time_exact_path()


def _synchronised(fn, device: torch.device):
    def run():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


def time_network(sizes: list[int], reg: float, iters: int) -> None:
    """ms per two-input barycenter: solver (``iters`` iterations, float32 input) vs BarycenterNet forward."""
    from zoo.barycenter_net.model import BarycenterNet

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"\nms per barycenter (2 inputs): solver ({iters} iterations) vs BarycenterNet (width 32, depth 5)")
    for device in devices:
        net = BarycenterNet(width=32, depth=5, max_width=256).to(device).eval()
        weights = torch.tensor([[0.5, 0.5]], device=device)
        for size in sizes:
            if size % 32:
                continue
            dens = two_blobs(size, torch.float32).to(device)
            solver = _synchronised(
                partial(convolutional_barycenter, dens, weights, reg=reg, max_iter=iters, tol=0.0), device
            )
            with torch.inference_mode():
                network = _synchronised(partial(net, dens, weights), device)
                network()  # warm-up (cuDNN autotuning, allocator)
                t_net, _ = timed(network, repeats=5)
            solver()
            t_solver, _ = timed(solver, repeats=1 if device.type == "cpu" and size >= 512 else 3)
            print(
                f"[{device.type} {size}x{size}] solver {1e3 * t_solver:9.1f} ms | "
                f"network {1e3 * t_net:8.1f} ms -> {t_solver / t_net:6.1f}x"
            )


def time_exact_path() -> None:
    """One exact log-kernel application (both axes): blocks vs plain chunked logsumexp, CPU float64."""
    from wbaug.grid._gibbs import SeparableLogConvolution

    print("\nexact small-reg path (method='log'), one log-kernel application, float64, pixel units")
    gen = torch.Generator().manual_seed(0)
    for lead, size, reg in ((6, 64, 1.0), (6, 64, 4.0), (2, 128, 2.0), (2, 128, 8.0), (1, 256, 4.0)):
        x = torch.randn(lead, size, size, generator=gen, dtype=torch.float64) * 50
        conv = SeparableLogConvolution((size, size), reg, "pixel", "log", dtype=x.dtype, device=x.device)
        blocks = [f"{type(b).__name__} s={b.s}" if b is not None else "plain" for b in conv.blocked]
        conv(x)  # warm-up
        t_blocked, out = timed(lambda conv=conv, x=x: conv(x), repeats=3)
        conv.blocked = [None, None]  # the plain logsumexp over the full kernel
        t_plain, ref = timed(lambda conv=conv, x=x: conv(x), repeats=3)
        diff = float((out - ref).abs().max())
        print(
            f"[{lead}x{size}x{size} reg={reg:g}px {blocks[0]}] blocks {1e3 * t_blocked:7.1f} ms | "
            f"plain {1e3 * t_plain:8.1f} ms -> {t_plain / t_blocked:5.1f}x (max diff {diff:.1e})"
        )


if __name__ == "__main__":
    main()

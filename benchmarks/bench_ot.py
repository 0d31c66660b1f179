"""Benchmark wbaug.ot against POT loops, measured in the same run (ratios, never asserted).

Cases (defaults keep the whole run around 2-3 minutes on a 2-core CPU):

1. pairwise W2 for ``--clouds`` (1000) clouds of 68 points vs a loop of ``ot.emd2(a, b, ot.dist(x, y))``;
   POT is timed on ``--ref-pairs`` random pairs and scaled to the full pair count.
2. ``--barycenters`` (7000) barycenters of 3-7 clouds (Dirichlet(1) weights) vs a loop of
   ``ot.lp.free_support_barycenter`` started from the same initialisation (the largest-weight cloud);
   POT is timed on ``--ref-barycenters`` problems and scaled. The objective of both is compared there.
3. the same on CUDA (barycenters/s) when a GPU is present.

Data: "faces" = a fixed 68-point iBUG-like mean shape on a 256x256 canvas + per-set similarity transform
(rotation +-10 deg, scale 0.9-1.1, shift +-10 px) + 2 px Gaussian noise; "random" = independent uniform
clouds on the canvas (the hard case for assignment solvers). Generated here with a torch.Generator.

Both wall-clock and CPU-time ratios are printed: on a shared machine the wall ratio depends on how
many cores were free; the CPU-time ratio (all threads summed) is the work ratio.

Run: ``python benchmarks/bench_ot.py`` (``--quick`` for a smoke run, ``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import ot
import torch

from wbaug.ot import barycenter_objective, free_support_barycenter, pairwise_wasserstein


def mean_face(dtype=torch.float64) -> torch.Tensor:
    """A 68-point iBUG-like face (jaw, brows, nose, eyes, mouth) in pixels of a 256x256 canvas."""
    parts = []
    t = torch.linspace(-1, 1, 17, dtype=dtype)
    parts.append(torch.stack([128 + 80 * t, 120 + 90 * (1 - t**2).sqrt()], 1))  # jaw
    for side in (-1, 1):  # brows
        u = torch.linspace(0, 1, 5, dtype=dtype)
        parts.append(torch.stack([128 + side * (20 + 45 * u), 92 - 10 * torch.sin(math.pi * u)], 1))
    parts.append(
        torch.stack([torch.full((4,), 128.0, dtype=dtype), torch.linspace(110, 150, 4, dtype=dtype)], 1)
    )
    parts.append(
        torch.stack([torch.linspace(112, 144, 5, dtype=dtype), 160 - 4 * torch.tensor([0, 1, 1.5, 1, 0])], 1)
    )
    for side in (-1, 1):  # eyes
        a = torch.linspace(0, 2 * math.pi, 7, dtype=dtype)[:-1]
        parts.append(torch.stack([128 + side * 42 + 14 * torch.cos(a), 112 + 6 * torch.sin(a)], 1))
    a = torch.linspace(0, 2 * math.pi, 13, dtype=dtype)[:-1]
    parts.append(torch.stack([128 + 30 * torch.cos(a), 190 + 14 * torch.sin(a)], 1))  # outer lip
    a = torch.linspace(0, 2 * math.pi, 9, dtype=dtype)[:-1]
    parts.append(torch.stack([128 + 20 * torch.cos(a), 190 + 6 * torch.sin(a)], 1))  # inner lip
    face = torch.cat(parts)
    assert face.shape == (68, 2)
    return face


def faces(m: int, g: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """``(m, 68, 2)`` face-like landmark sets: similarity transform of the mean shape + noise."""
    base = mean_face(dtype) - 128
    angle = (torch.rand(m, generator=g, dtype=dtype) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(m, generator=g, dtype=dtype)
    rot = torch.stack([torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)], 1).view(
        m, 2, 2
    )
    shift = (torch.rand(m, 1, 2, generator=g, dtype=dtype) * 2 - 1) * 10
    pts = scale[:, None, None] * base @ rot.transpose(1, 2) + 128 + shift
    return pts + 2 * torch.randn(m, 68, 2, generator=g, dtype=dtype)


def random_clouds(m: int, g: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(m, 68, 2, generator=g, dtype=dtype) * 256


def cliques(pool: torch.Tensor, count: int, g: torch.Generator, dist: torch.Tensor | None = None):
    """``count`` cliques of 3-7 distinct clouds of the pool, padded to K=7 with a mask, Dirichlet(1) weights.

    With ``dist`` (the pool's W2 matrix) a clique is a random anchor and its nearest neighbours, as the
    neighbourhood-graph cliques of the sampler (Algorithm 2); without, a random subset (harder).
    """
    sizes = torch.randint(3, 8, (count,), generator=g)
    kmax = 7
    if dist is None:
        idx = torch.argsort(torch.rand(count, pool.shape[0], generator=g), 1)[:, :kmax]
    else:
        anchor = torch.randint(0, pool.shape[0], (count,), generator=g)
        idx = torch.argsort(dist.cpu()[anchor], 1)[:, :kmax]
    mask = torch.arange(kmax)[None] < sizes[:, None]
    e = -torch.rand(count, kmax, generator=g, dtype=pool.dtype).log() * mask
    w = e / e.sum(1, keepdim=True)
    return pool[idx], w, mask


def timeit(fn, sync=None):
    """Wall-clock seconds of ``fn()``; the CPU seconds of the process (all threads) go to ``CPU_SECONDS``."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if sync is not None:
        sync()
    CPU_SECONDS.append(time.process_time() - c)
    return out, time.perf_counter() - t


CPU_SECONDS: list[float] = []


def pot_pair_time(clouds: torch.Tensor, pairs: int, g: torch.Generator) -> float:
    m, n = clouds.shape[0], clouds.shape[1]
    c = clouds.double().cpu().numpy()
    i = torch.randint(0, m, (pairs,), generator=g).numpy()
    j = (i + torch.randint(1, m, (pairs,), generator=g).numpy()) % m
    a = np.full(n, 1 / n)
    t, cpu = time.perf_counter(), time.process_time()
    for u, v in zip(i, j):
        ot.emd2(a, a, ot.dist(c[u], c[v]))
    return (time.perf_counter() - t) / pairs, (time.process_time() - cpu) / pairs


def bench_pairwise(
    name: str, clouds: torch.Tensor, ref_pairs: int, g: torch.Generator, device
) -> torch.Tensor:
    m = clouds.shape[0]
    total = m * (m - 1) // 2
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    dist, ours = timeit(lambda: pairwise_wasserstein(clouds.to(device)), sync)
    ours_cpu = CPU_SECONDS[-1]
    per_pair, per_pair_cpu = pot_pair_time(clouds, ref_pairs, g)
    ref = per_pair * total
    print(
        f"[pairwise/{name}] M={m} ({total} pairs): wbaug {ours:.2f} s ({ours / total * 1e6:.1f} us/pair) | "
        f"POT emd2 loop {ref:.1f} s est. ({per_pair * 1e6:.0f} us/pair on {ref_pairs} pairs) | "
        f"speed-up {ref / ours:.1f}x wall, {per_pair_cpu * total / ours_cpu:.1f}x CPU-time"
    )
    return dist


def bench_barycenters(name, pool, count, ref_count, g, device, dist=None):
    clouds, w, mask = cliques(pool, count, g, dist)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    cd, wd, md = clouds.to(device), w.to(device), mask.to(device)
    bary, ours = timeit(lambda: free_support_barycenter(cd, wd, mask=md), sync)
    ours_cpu = CPU_SECONDS[-1]
    n = pool.shape[1]
    sub = torch.randperm(count, generator=g)[:ref_count]
    ref_out, gaps = [], []
    t, cpu = time.perf_counter(), time.process_time()
    for b in sub.tolist():
        k = int(mask[b].sum())
        cl = [c.numpy() for c in clouds[b, :k].double()]
        wb = w[b, :k].double().numpy()
        init = cl[int(wb.argmax())]
        ref_out.append(ot.lp.free_support_barycenter(cl, [np.full(n, 1 / n)] * k, init, weights=wb))
    per = (time.perf_counter() - t) / ref_count
    per_cpu = (time.process_time() - cpu) / ref_count
    ref = per * count
    ref_t = torch.from_numpy(np.stack(ref_out))
    f_ours = barycenter_objective(
        bary[sub].cpu().double(), clouds[sub].double(), w[sub].double(), mask=mask[sub]
    )
    f_ref = barycenter_objective(ref_t, clouds[sub].double(), w[sub].double(), mask=mask[sub])
    gaps = (f_ours - f_ref) / f_ref.clamp_min(1e-300)
    print(
        f"[barycenter/{name}] {count} barycenters of 3-7 x {n} pts on {device.type}: wbaug {ours:.2f} s "
        f"({count / ours:.0f}/s) | POT loop {ref:.1f} s est. ({per * 1e3:.2f} ms each on {ref_count}) | "
        f"speed-up {ref / ours:.1f}x wall, {per_cpu * count / ours_cpu:.1f}x CPU-time | "
        f"objective rel. diff vs POT: max {gaps.max():.2e} (<=0: ours better), "
        f"ours better on {(gaps < -1e-9).sum()}/{ref_count}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clouds", type=int, default=1000)
    parser.add_argument("--random-clouds", type=int, default=200)
    parser.add_argument("--ref-pairs", type=int, default=1000)
    parser.add_argument("--barycenters", type=int, default=7000)
    parser.add_argument("--random-barycenters", type=int, default=500)
    parser.add_argument("--ref-barycenters", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.clouds, args.random_clouds, args.ref_pairs = 100, 50, 200
        args.barycenters, args.random_barycenters, args.ref_barycenters = 300, 100, 20
    g = torch.Generator().manual_seed(args.seed)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"torch {torch.__version__}, POT {ot.__version__}, threads {torch.get_num_threads()}, "
        f"devices {[str(d) for d in devices]}"
        + (f" ({torch.cuda.get_device_name()})" if len(devices) > 1 else "")
    )
    face_pool = faces(args.clouds, g)
    rand_pool = random_clouds(max(args.clouds, 10), g)
    for device in devices:
        dist = bench_pairwise("faces", face_pool, args.ref_pairs, g, device)
        bench_pairwise("random", rand_pool[: args.random_clouds], args.ref_pairs, g, device)
        bench_barycenters("faces-knn", face_pool, args.barycenters, args.ref_barycenters, g, device, dist)
        bench_barycenters("faces-subset", face_pool, args.random_barycenters, args.ref_barycenters, g, device)
        bench_barycenters("random", rand_pool, args.random_barycenters, args.ref_barycenters, g, device)


if __name__ == "__main__":
    main()

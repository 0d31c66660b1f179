"""Benchmarks of the Wasserstein-barycentric sampler (issue "Performance" section). Ratios are measured in
one run.

1. fit on M x 68 face-like landmark sets (default M = 3148, the 300-W train size) vs the seed pipeline:
   a Python loop of ``ot.emd2`` over all pairs (timed on a subset, scaled by pair count) + networkx kNN graph
   and ``find_cliques``;
2. sample n (default 7000) barycenters vs a loop of ``ot.lp.free_support_barycenter`` (timed on a subset,
   scaled);
3. per-sample overhead of the sampler as a v2 transform inside a DataLoader (landmarks only, with the
   similarity alignment to the fitted frame), and the paired TPS warp at 256x256 (the warp alone and the
   whole paired transform: draw + warp) vs kornia's ``warp_image_tps``;
4. on CUDA (when available): fit and sample timings on the GPU;
5. ``--scale``: fit at several M (default 5 000, 20 000, 50 000, 100 000), each in a fresh process
   (``benchmarks/fit_distributed.py``) so that its peak RSS is the fit's alone: wall time, peak RSS, exact
   OT solves per vertex; ``--scale-procs 1,2`` adds the same fits under ``torchrun --nproc_per_node 2``
   (time, bytes each rank sent).

Usage::

    python benchmarks/bench_sampler.py            # full run (~3-4 min on 2 CPU cores)
    python benchmarks/bench_sampler.py --quick    # small sizes, smoke test
    python benchmarks/bench_sampler.py --sections fit --scale --scale-procs 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np
import ot
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from wbaug.datasets import synthetic_faces
from wbaug.sampling import WassersteinBarycentricSampler
from wbaug.transforms import tps_warp_image


def _same_graph(sampler: WassersteinBarycentricSampler, **params) -> WassersteinBarycentricSampler:
    """A sampler with other settings (``correspondence``, ``p``, ``paired``, ...) on ``sampler``'s fitted
    graph, without refitting."""
    out = WassersteinBarycentricSampler(k_neighbors=sampler.k_neighbors, **params)
    out._set_fitted(
        sampler.landmarks_,
        sampler.knn_indices_,
        sampler.knn_distances_,
        sampler.distances_,
        sampler.n_pairs_evaluated_,
    )
    return out


def _timeit(fn, repeat: int = 1) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def seed_pipeline_fit_time(x: np.ndarray, subset: int, k: int) -> tuple[float, float, float]:
    """Seconds of the seed code's fit, extrapolated: a pairwise ot.emd2 loop on `subset` clouds scaled by the
    pair count, plus the networkx kNN graph and maximal cliques timed on the subset's dense matrix and scaled
    by (M / subset)^2 (the dense argsort dominates)."""
    m = x.shape[0]
    n = x.shape[1]
    w = np.full(n, 1.0 / n)
    sub = x[:subset]
    d = np.zeros((subset, subset))
    start = time.perf_counter()
    for i in range(subset):
        for j in range(i + 1, subset):
            d[i, j] = d[j, i] = np.sqrt(ot.emd2(w, w, ot.dist(sub[i], sub[j])))
    per_pair = (time.perf_counter() - start) / (subset * (subset - 1) / 2)
    start = time.perf_counter()
    graph = nx.Graph()
    graph.add_nodes_from(range(subset))
    order = np.argsort(d, axis=1)[:, 1 : k + 1]
    for i in range(subset):
        for j in order[i]:
            graph.add_edge(i, int(j), weight=d[i, j])
    cliques = list(nx.find_cliques(graph))
    graph_s = (time.perf_counter() - start) * (m / subset) ** 2  # dense argsort scales with M^2
    assert cliques
    return per_pair * m * (m - 1) / 2 + graph_s, per_pair, graph_s


def reference_sample_time(sampler: WassersteinBarycentricSampler, n_ref: int, n_total: int) -> float:
    """Seconds for n_total samples with a loop of POT's free-support barycenter (timed on n_ref, scaled)."""
    _, info = sampler.sample(n_ref, generator=torch.Generator().manual_seed(0), return_info=True)
    x = sampler.landmarks_.double().numpy()
    n = x.shape[1]
    start = time.perf_counter()
    for b in range(n_ref):
        verts = [int(v) for v in info["vertices"][b] if v >= 0]
        lam = info["weights"][b][: len(verts)].double().numpy()
        ot.lp.free_support_barycenter(
            [x[v] for v in verts],
            [np.full(n, 1.0 / n)] * len(verts),
            x[verts[int(lam.argmax())]].copy(),
            weights=lam,
            numItermax=100,
            stopThr=1e-7,
        )
    return (time.perf_counter() - start) / n_ref * n_total


class _FaceImages(Dataset):
    def __init__(self, landmarks: torch.Tensor, transform=None):
        self.landmarks = landmarks
        self.image = tv_tensors.Image(torch.rand(3, 256, 256))
        self.transform = transform

    def __len__(self) -> int:
        return self.landmarks.shape[0]

    def __getitem__(self, i):
        sample = (self.image, tv_tensors.KeyPoints(self.landmarks[i], canvas_size=(256, 256)))
        return self.transform(*sample) if self.transform is not None else sample


def _collate(batch):
    return batch


def _cpu_timeit(fn, repeat: int = 1) -> float:
    """Least process CPU seconds of one call over ``repeat`` (after a warm-up): robust to other processes
    sharing the cores."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _best_of(fn, repeat: int) -> float:
    """Least wall seconds of one call over ``repeat`` (after a warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def transform_overhead(sampler, landmarks: torch.Tensor, n: int) -> tuple[float, float, float, float]:
    """Per-sample wall and CPU seconds (least of 7 passes) of the DataLoader with and without the
    landmarks-only v2 transform."""
    data = landmarks[:n]
    plain = DataLoader(_FaceImages(data), batch_size=16, collate_fn=_collate)
    aug = DataLoader(
        _FaceImages(data, sampler),
        batch_size=16,
        collate_fn=_collate,
    )
    # the least of 7 passes: one pass is ~0.2 s, where a scheduler hiccup shows
    t_plain = _best_of(lambda: [b for b in plain], 7) / n
    t_aug = _best_of(lambda: [b for b in aug], 7) / n
    c_plain = _cpu_timeit(lambda: [b for b in plain], 7) / n
    c_aug = _cpu_timeit(lambda: [b for b in aug], 7) / n
    return t_aug, t_plain, c_aug, c_plain


def tps_vs_kornia(repeat: int, paired_sampler) -> dict[str, float]:
    from kornia.geometry.transform import get_tps_transform, warp_image_tps

    g = torch.Generator().manual_seed(0)
    faces = synthetic_faces(2, generator=g)
    src, dst = faces[:1], faces[:1] + torch.randn(1, 68, 2, generator=g) * 2
    img = torch.rand(1, 3, 256, 256, generator=g)

    def norm(p):
        return (2 * p + 1) / 256 - 1

    def kornia_warp():
        kw, aw = get_tps_transform(norm(dst), norm(src))
        return warp_image_tps(img, norm(src), kw, aw)

    image = tv_tensors.Image(img[0])
    keypoints = tv_tensors.KeyPoints(paired_sampler.landmarks_[0], canvas_size=(256, 256))
    out = {
        "ours_transform": _timeit(lambda: paired_sampler(image, keypoints), repeat),
        "ours_exact": _timeit(lambda: tps_warp_image(img, src, dst), repeat),
        "ours_stride4": _timeit(lambda: tps_warp_image(img, src, dst, grid_stride=4), repeat),
        "kornia": _timeit(kornia_warp, max(1, repeat // 2)),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--m", type=int, default=3148, help="landmark sets to fit on (default 3148)")
    parser.add_argument("--n", type=int, default=7000, help="samples to draw (default 7000)")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--ref-subset", type=int, default=150, help="clouds for the timed ot.emd2 loop")
    parser.add_argument("--ref-samples", type=int, default=100, help="barycenters for the timed POT loop")
    parser.add_argument(
        "--sections",
        default="fit,sample,transform,tps",
        help="comma-separated subset of fit,sample,transform,tps",
    )
    parser.add_argument("--scale", action="store_true", help="fit at --scale-sizes in fresh processes")
    parser.add_argument("--scale-sizes", default="5000,20000,50000,100000")
    parser.add_argument("--scale-procs", default="1", help="comma-separated process counts, e.g. 1,2")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if args.quick:
        args.m, args.n, args.ref_subset, args.ref_samples = 400, 500, 60, 30
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")
    x = synthetic_faces(args.m, generator=torch.Generator().manual_seed(0))

    # 1. fit
    start = time.perf_counter()
    sampler = WassersteinBarycentricSampler(k_neighbors=args.k, correspondence="ot").fit(x)
    fit_s = time.perf_counter() - start
    pairs = args.m * (args.m - 1) // 2
    if "fit" in sections:
        report_fit(args, sampler, x, fit_s, pairs)
    if "sample" in sections:
        report_sample(args, sampler)
    index_sampler = _same_graph(sampler, p=1.0)
    paired_sampler = _same_graph(sampler, p=1.0, paired=True)
    # per-sample transforms run in DataLoader workers, which use one intra-op thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if "transform" in sections:
        n_tr = 64 if args.quick else 256
        t_aug, t_plain, c_aug, c_plain = transform_overhead(index_sampler, x, n_tr)
        print(
            f"[v2] DataLoader per sample (1 thread, landmarks only, p=1, M={args.m}): "
            f"wall {t_plain * 1e3:.3f} -> {t_aug * 1e3:.3f} ms (overhead {(t_aug - t_plain) * 1e3:.3f} ms); "
            f"process CPU {c_plain * 1e3:.3f} -> {c_aug * 1e3:.3f} ms "
            f"(overhead {(c_aug - c_plain) * 1e3:.3f} ms)"
        )
    if "tps" in sections:
        tps = tps_vs_kornia(5 if args.quick else 20, paired_sampler)
        print(
            f"[tps] 256x256, 68 points (1 thread): ours exact {tps['ours_exact'] * 1e3:.1f} ms, ours "
            f"grid_stride=4 {tps['ours_stride4'] * 1e3:.1f} ms, "
            f"kornia warp_image_tps {tps['kornia'] * 1e3:.1f} ms -> "
            f"{tps['kornia'] / tps['ours_exact']:.1f}x (exact), "
            f"{tps['kornia'] / tps['ours_stride4']:.1f}x (stride 4)"
        )
        print(
            f"[paired] the sampler as a paired v2 transform, one 256x256 sample (draw + warp, 1 thread): "
            f"{tps['ours_transform'] * 1e3:.1f} ms -> {tps['kornia'] / tps['ours_transform']:.1f}x kornia's "
            "warp alone"
        )
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        report_cuda(args, x)
    if args.scale:
        sizes = [int(v) for v in args.scale_sizes.split(",")]
        report_scale(sizes, args.k, [int(v) for v in args.scale_procs.split(",")])


def _fit_in_fresh_processes(m: int, k: int, procs: int) -> list[dict]:
    """Run benchmarks/fit_distributed.py for ``m`` sets in a new process (``procs > 1``: torchrun)."""
    script = str(Path(__file__).with_name("fit_distributed.py"))
    cmd = [sys.executable, script]
    if procs > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={procs}",
            "--master_port=29517",
        ]
        cmd.append(script)
    env = dict(os.environ)
    if procs > 1:  # the ranks share the cores: one intra-op thread each
        env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // procs))
    with tempfile.TemporaryDirectory() as out:  # each rank saves and reloads its sampler there (timed)
        run = subprocess.run(
            [*cmd, "--num-sets", str(m), "--k", str(k), "--out", out], capture_output=True, text=True, env=env
        )
    if run.returncode != 0:
        print(f"[scale] M={m} procs={procs} failed:\n{run.stderr[-2000:]}")
        return []
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def report_scale(sizes: list[int], k: int, procs_list: list[int]) -> None:
    print(f"[scale] fit of synthetic_faces (N=68, k={k}), a fresh process per row (peak RSS its own)")
    print(
        "| M | processes | fit s | peak RSS GB (max over ranks) | evaluated pairs / vertex "
        "| exact OT solves / vertex | MB sent per rank | save s | load s | file MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in sizes:
        for procs in procs_list:
            recs = _fit_in_fresh_processes(m, k, procs)
            if not recs:
                continue
            r0 = recs[0]
            print(
                f"| {m} | {procs} | {max(r['seconds'] for r in recs):.1f} | "
                f"{max(r['peak_rss_gb'] for r in recs):.2f} | {r0['n_pairs'] / m:.2f} | "
                f"{r0['n_solves'] / m:.2f} | {max(r['sent_bytes'] for r in recs) / 1e6:.1f} | "
                f"{r0['save_s']:.2f} | {r0['load_s']:.2f} | {r0['file_mb']:.1f} |",
                flush=True,
            )


def report_fit(args, sampler, x, fit_s, pairs) -> None:
    ref_fit, per_pair, graph_s = seed_pipeline_fit_time(x.double().numpy(), args.ref_subset, args.k)
    print(
        f"[fit] M={args.m} N=68 k={args.k}: {fit_s:.2f} s (exact W2 on {sampler.n_pairs_evaluated_} of "
        f"{pairs} pairs = {100 * sampler.n_pairs_evaluated_ / pairs:.2f} %, {len(sampler.cliques_)} cliques)"
    )
    print(
        f"[fit] seed pipeline (ot.emd2 loop {per_pair * 1e3:.3f} ms/pair x {pairs} pairs + networkx "
        f"{graph_s:.2f} s), extrapolated from {args.ref_subset} clouds: {ref_fit:.1f} s"
    )
    print(f"[fit] speed-up vs seed pipeline: {ref_fit / fit_s:.1f}x")


def report_sample(args, sampler) -> None:
    start = time.perf_counter()
    sampler.sample(args.n, generator=torch.Generator().manual_seed(1))
    sample_s = time.perf_counter() - start
    ref_sample = reference_sample_time(sampler, args.ref_samples, args.n)
    index_sampler = _same_graph(sampler, p=1.0)
    start = time.perf_counter()
    index_sampler.sample(args.n, generator=torch.Generator().manual_seed(1))
    index_s = time.perf_counter() - start
    print(f"[sample] n={args.n} ot mode: {sample_s:.2f} s; index mode: {index_s:.3f} s")
    print(
        f"[sample] loop of ot.lp.free_support_barycenter, extrapolated from {args.ref_samples}: "
        f"{ref_sample:.1f} s"
    )
    print(
        f"[sample] speed-up vs POT loop: ot mode {ref_sample / sample_s:.1f}x, index mode "
        f"{ref_sample / index_s:.1f}x"
    )


def report_cuda(args, x) -> None:
    if torch.cuda.is_available():
        xc = x.cuda()
        torch.cuda.synchronize()
        start = time.perf_counter()
        gpu = WassersteinBarycentricSampler(k_neighbors=args.k, correspondence="ot").fit(xc)
        torch.cuda.synchronize()
        gfit = time.perf_counter() - start
        start = time.perf_counter()
        gpu.sample(args.n, generator=torch.Generator().manual_seed(1))
        torch.cuda.synchronize()
        gsample = time.perf_counter() - start
        gi = WassersteinBarycentricSampler(k_neighbors=args.k, correspondence="index").fit(xc)
        start = time.perf_counter()
        gi.sample(args.n, generator=torch.Generator().manual_seed(1))
        torch.cuda.synchronize()
        print(
            f"[cuda] {torch.cuda.get_device_name()}: fit {gfit:.2f} s, sample ot {gsample:.2f} s, "
            f"sample index {time.perf_counter() - start:.3f} s"
        )
        img = torch.rand(1, 3, 256, 256, device="cuda")
        src = xc[:1]
        dst = xc[1:2]
        torch.cuda.synchronize()
        t = _timeit(lambda: (tps_warp_image(img, src, dst), torch.cuda.synchronize()), 20)
        print(f"[cuda] TPS warp 256x256: {t * 1e3:.2f} ms")


if __name__ == "__main__":
    main()

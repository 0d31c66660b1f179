"""Fit the sampler on ``synthetic_faces`` in one process or under ``torchrun`` (Gloo on CPU).

Every rank ends with the same fitted sampler; with ``--out`` each rank saves it to ``rank{r}/sampler.pt``
(``fit_time_``, the only field that is a measurement, set to 0) so the files can be compared byte for
byte, and the save / load times and file size are reported. Prints one JSON line per rank: fit seconds,
exact OT solves, bytes sent through collectives, peak RSS.

Usage::

    python benchmarks/fit_distributed.py --num-sets 20000                              # one process
    torchrun --nproc_per_node 2 benchmarks/fit_distributed.py --num-sets 20000         # two processes
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 2 \\
        benchmarks/fit_distributed.py --num-sets 100000                                # two machines
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from wbaug.datasets import synthetic_faces
from wbaug.sampling import WassersteinBarycentricSampler
from wbaug.sampling.graph import exact_knn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-sets", type=int, default=2000)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="save rank{r}/sampler.pt here")
    parser.add_argument("--knn-only", action="store_true", help="time exact_knn alone (solves, traffic)")
    args = parser.parse_args()
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    x = synthetic_faces(args.num_sets, generator=torch.Generator().manual_seed(args.seed))
    start = time.perf_counter()
    record = {"rank": rank, "world": world, "m": args.num_sets, "k": args.k}
    if args.knn_only:
        res = exact_knn(x, args.k)
        record.update(
            n_solves=res.n_solves, n_pairs=int(res.pair_rows.numel()), sent_bytes=res.communication_bytes
        )
    else:
        sampler = WassersteinBarycentricSampler(args.k).fit(x)
        record["seconds"] = time.perf_counter() - start  # the fit alone (save/load timed apart)
        record.update(
            n_pairs=int(sampler.n_pairs_evaluated_),
            n_solves=int(sampler.n_exact_solves_),
            sent_bytes=int(sampler.communication_bytes_),
            n_cliques=len(sampler.cliques_),
        )
        if args.out is not None:
            sampler.fit_time_ = 0.0
            folder = args.out / f"rank{rank}"  # same file name: torch.save records it in the archive
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            sampler.save(folder / "sampler.pt")
            t1 = time.perf_counter()
            WassersteinBarycentricSampler.load(folder / "sampler.pt")
            record.update(
                save_s=round(t1 - t0, 3),
                load_s=round(time.perf_counter() - t1, 3),
                file_mb=round((folder / "sampler.pt").stat().st_size / 1e6, 2),
            )
    record["seconds"] = round(record.get("seconds", time.perf_counter() - start), 3)
    record["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)
    # one write() of a short line to a pipe is atomic: the ranks' lines never interleave
    os.write(sys.stdout.fileno(), (json.dumps(record) + "\n").encode())
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

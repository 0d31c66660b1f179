r"""Ablation in the shape of Table 1 of Bespalov et al., *Data augmentation with manifold barycenters*:
label budgets × {no aug, classical, barycentric, ELT, barycentric + ELT}, NME on a held-out test split.

::

    # reduced CPU version (64×64 images, one narrow hourglass, a few hundred steps per cell)
    python -m zoo.hourglass.ablation --out runs/ablation-cpu --budgets 100,300,600 --steps 300 --jobs 2
    # GPU version (128×128, 2 stacks × 128 channels)
    python -m zoo.hourglass.ablation --out runs/ablation-gpu --preset gpu

All cells share one pre-rendered :class:`wbaug.datasets.SyntheticFaces` set (``num_train`` training
images of which the first ``budget`` of a fixed permutation are labelled -- the rest are the unlabelled
pool the ELT modes use -- and ``num_test`` held-out test images), the same model, optimiser, step count
and seed; only the training mode differs. Each cell is a normal :func:`zoo.hourglass.train.train` run
in ``<out>/<mode>-<budget>/``; finished cells are recorded in ``<out>/results.jsonl`` and skipped when
the command is re-run. ``<out>/table.md`` holds the NME table (inter-ocular, %) and the throughput.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from wbaug.io_atomic import atomic_write_text
from zoo.hourglass.config import HourglassConfig, cpu_config, gpu_config
from zoo.hourglass.data import DataSplits, build_splits, sample_to_tensors

__all__ = ["MODES", "PrerenderedDataset", "format_tables", "main", "mode_config", "run_ablation"]

MODES: dict[str, dict[str, bool]] = {
    "no aug": {"classical": False, "barycentric": False, "elt": False},
    "classical": {"classical": True, "barycentric": False, "elt": False},
    "barycentric": {"classical": False, "barycentric": True, "elt": False},
    "ELT": {"classical": False, "barycentric": False, "elt": True},
    "barycentric+ELT": {"classical": False, "barycentric": True, "elt": True},
}


class PrerenderedDataset(torch.utils.data.Dataset):
    """In-memory copy of a landmark dataset (images, landmarks, meta) so every cell reuses one rendering."""

    def __init__(self, dataset: Any) -> None:
        self.items = []
        for i in range(len(dataset)):
            image, landmarks, meta = sample_to_tensors(dataset[i])
            self.items.append(((image * 255).round().to(torch.uint8), landmarks, meta))
        if hasattr(dataset, "landmarks"):
            self._landmarks = torch.stack([lm for _, lm, _ in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, landmarks, meta = self.items[i]
        return {"image": image, "keypoints": landmarks, "meta": meta}

    def landmarks(self) -> torch.Tensor:
        return self._landmarks.clone()


def mode_config(base: HourglassConfig, mode: str, budget: int, out: Path) -> HourglassConfig:
    """Copy of ``base`` switched to ``mode`` with ``budget`` labelled images, writing to ``out``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    cfg = copy.deepcopy(base)
    flags = MODES[mode]
    cfg.aug.classical = flags["classical"]
    cfg.aug.barycentric = flags["barycentric"]
    cfg.elt.enabled = flags["elt"]
    cfg.data.label_budget = budget
    cfg.train.out_dir = str(out / f"{mode.replace(' ', '_').replace('+', '_')}-{budget}")
    return cfg


def _cpu_base(args: argparse.Namespace) -> HourglassConfig:
    cfg = cpu_config()
    cfg.model.width = args.width
    return cfg


def _gpu_base(args: argparse.Namespace) -> HourglassConfig:
    cfg = gpu_config()
    cfg.data.render_size = 256  # render finer, then crop the face box (× 1.25) to 128 × 128
    cfg.data.face_crop = True
    cfg.data.num_workers = 4
    cfg.train.batch_size = 32
    cfg.train.eval_batch_size = 128
    return cfg


def _run_cell(job: tuple[HourglassConfig, str, int, int]) -> dict[str, Any]:
    from zoo.hourglass.train import train

    cfg, mode, budget, threads = job
    torch.set_num_threads(threads)
    splits = _SHARED["splits"]
    cell_splits = DataSplits(
        dataset=splits.dataset,
        labelled=splits.labelled[:budget],
        unlabelled=splits.labelled[budget:] + splits.unlabelled,
        test=splits.test,
        val=splits.val,
        test_dataset=splits.test_dataset,
        layout=splits.layout,
        native_canvas=splits.native_canvas,
        crop_margin=splits.crop_margin,
    )
    t0 = time.perf_counter()
    result = train(cfg, splits=cell_splits, overwrite=True)  # an unfinished cell restarts from scratch
    subsets = result.pop("subsets", {})
    return {
        **{k: v for k, v in result.items() if isinstance(v, (int, float, str))},
        "train_mode": result["mode"],
        "mode": mode,
        "budget": budget,
        "wall_s": time.perf_counter() - t0,
        "subset_nme": {name: m["nme"] for name, m in subsets.items()},
    }


_SHARED: dict[str, Any] = {}


def format_tables(results: Sequence[dict[str, Any]], budgets: Sequence[int], modes: Sequence[str]) -> str:
    """Markdown: NME (%) table (modes × budgets, Table 1 shape), large-pose NME and throughput tables."""
    by = {(r["mode"], r["budget"]): r for r in results}
    head = "| mode | " + " | ".join(f"{b} labels" for b in budgets) + " |"
    sep = "|---" * (len(budgets) + 1) + "|"

    def table(title: str, fn) -> list[str]:
        lines = [f"**{title}**", "", head, sep]
        for m in modes:
            cells = [fn(by[(m, b)]) if (m, b) in by else "–" for b in budgets]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        return [*lines, ""]

    out = table("NME (inter-ocular, %), held-out test split", lambda r: f"{100 * r['nme']:.2f}")
    out += table("NME-95 (%)", lambda r: f"{100 * r['nme_95']:.2f}")
    if any("large_pose" in r.get("subset_nme", {}) for r in results):
        out += table(
            "NME (%) on the large-pose subset (|yaw| > 30°)",
            lambda r: (
                f"{100 * r['subset_nme']['large_pose']:.2f}" if "large_pose" in r["subset_nme"] else "–"
            ),
        )
    out += table(
        "Training throughput (network images/s incl. views; labelled steps/s)",
        lambda r: f"{r['train_images_per_s']:.0f} img/s, {r['train_steps_per_s']:.1f} it/s",
    )
    return "\n".join(out)


def run_ablation(
    base: HourglassConfig,
    out: Path,
    *,
    budgets: Sequence[int],
    modes: Sequence[str],
    num_train: int,
    num_test: int,
    jobs: int = 1,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Run (or finish) every cell and write ``results.jsonl`` and ``table.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    base = copy.deepcopy(base)
    base.data.num_train, base.data.num_val, base.data.num_test = num_train, 0, num_test
    base.data.label_budget = None
    if max(budgets) > num_train:
        raise ValueError(f"budgets must be <= num_train ({num_train}), got {list(budgets)}")
    t0 = time.perf_counter()
    splits = build_splits(base.data)  # label order is a fixed permutation: budgets are nested subsets
    rendered = PrerenderedDataset(splits.dataset)
    splits.dataset = splits.test_dataset = rendered
    print(f"rendered {len(rendered)} images in {time.perf_counter() - t0:.1f} s")
    _SHARED["splits"] = splits

    results_path = out / "results.jsonl"
    done = []
    if results_path.exists():
        done = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
    finished = {(r["mode"], r["budget"]) for r in done}
    jobs_list = [
        (mode_config(base, m, b, out), m, b, threads)
        for b in budgets
        for m in modes
        if (m, b) not in finished
    ]
    results = list(done)
    ctx = mp.get_context("fork") if jobs > 1 and "fork" in mp.get_all_start_methods() else None
    pool = ctx.Pool(jobs) if ctx is not None else None
    try:
        iterator = (
            pool.imap_unordered(_run_cell, jobs_list) if pool is not None else map(_run_cell, jobs_list)
        )
        for r in iterator:
            results.append(r)
            with open(results_path, "a") as fh:
                fh.write(json.dumps(r) + "\n")
            print(
                f"[{time.perf_counter() - t0:7.1f}s] {r['mode']:>16} @ {r['budget']:4d} labels: "
                f"NME {100 * r['nme']:.2f} %  ({r['train_images_per_s']:.0f} img/s, {r['wall_s']:.0f} s)",
                flush=True,
            )
            atomic_write_text(out / "table.md", format_tables(results, budgets, modes) + "\n")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    table = format_tables(results, budgets, modes)
    atomic_write_text(out / "table.md", table + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description="Label-budget × augmentation-mode ablation (Table 1 shape).")
    p.add_argument("--out", default="runs/ablation", help="output directory")
    p.add_argument("--preset", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--budgets", default="100,300,600", help="comma-separated label budgets")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {list(MODES)}")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per cell")
    p.add_argument("--num-train", type=int, default=900, help="training images (labelled + unlabelled)")
    p.add_argument("--num-test", type=int, default=300, help="held-out test images")
    p.add_argument("--width", type=int, default=32, help="hourglass width (cpu preset)")
    p.add_argument("--unlabelled-batch", type=int, default=8, help="unlabelled images per ELT batch")
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel (processes)")
    p.add_argument(
        "--threads", type=int, default=max(1, (os.cpu_count() or 1) // 2), help="torch threads/job"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(list(argv) if argv is not None else None)
    base = _gpu_base(args) if args.preset == "gpu" else _cpu_base(args)
    base.train.steps = args.steps
    base.train.seed = args.seed
    base.data.data_seed = args.seed
    base.train.eval_every = args.steps
    base.train.ckpt_every = args.steps
    base.train.log_every = max(1, args.steps // 10)
    base.train.progress = False
    base.train.tensorboard = args.preset == "gpu"
    base.train.sample_images = 8
    base.data.cache_images = True
    base.elt.unlabelled_batch_size = args.unlabelled_batch
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    budgets = [int(b) for b in args.budgets.split(",")]
    results = run_ablation(
        base,
        Path(args.out),
        budgets=budgets,
        modes=modes,
        num_train=args.num_train,
        num_test=args.num_test,
        jobs=args.jobs,
        threads=args.threads,
    )
    print(format_tables(results, budgets, modes))
    return results


if __name__ == "__main__":
    main()

r"""Ablation in the shape of Table 1 of Bespalov et al., *Data augmentation with manifold barycenters*:
CycleGAN rows (baseline, + classical aug, + barycentric, + both) × label budgets × seeds, mean ± std.

::

    # reduced CPU version: the cpu preset shortened to --steps iterations per cell
    python -m zoo.cyclegan.ablation --out runs/cg-ablation --budgets 100,300 --seeds 0,1 --steps 300
    # the paper's setting (256 px; one GPU per cell, cells run one after another)
    python -m zoo.cyclegan.ablation --out runs/cg-abl-gpu --preset gpu --budgets 100,300,600 --seeds 0,1,2

Every cell is an ordinary :func:`zoo.cyclegan.train.train` run in ``<out>/<row>-<budget>-s<seed>/`` on the
same images, architecture, step count and seed; only the landmark domain differs (``data.classical``,
``data.barycentric``; the label subset depends on ``data.data_seed`` = seed). Finished cells are appended to
``<out>/results.jsonl`` and skipped when the command is re-run (a killed ablation resumes where it stopped).
``<out>/table.md`` holds two tables, OT-NME and NME (inter-ocular, %), mean ± std over seeds, with the
mean-shape baseline of each budget for reference.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wbaug.io_atomic import atomic_write_text
from zoo.cyclegan.config import PRESETS, CycleGANConfig

__all__ = ["ROWS", "cell_config", "format_table", "main", "run_ablation"]

ROWS: dict[str, dict[str, bool]] = {
    "baseline": {"classical": False, "barycentric": False},
    "baseline + aug": {"classical": True, "barycentric": False},
    "baseline + BC": {"classical": False, "barycentric": True},
    "baseline + aug + BC": {"classical": True, "barycentric": True},
}


def cell_config(base: CycleGANConfig, row: str, budget: int, seed: int, out: Path) -> CycleGANConfig:
    """Copy of ``base`` for one cell: Table 1 ``row``, ``budget`` landmark sets, ``seed`` (training and
    label subset), writing to a sub-directory of ``out``."""
    if row not in ROWS:
        raise ValueError(f"row must be one of {list(ROWS)}, got {row!r}")
    cfg = copy.deepcopy(base)
    cfg.data.classical = ROWS[row]["classical"]
    cfg.data.barycentric = ROWS[row]["barycentric"]
    cfg.data.label_budget = budget
    cfg.data.data_seed = seed
    cfg.train.seed = seed
    slug = row.replace(" + ", "+").replace(" ", "_")
    cfg.train.out_dir = str(out / f"{slug}-{budget}-s{seed}")
    return cfg


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{100 * mean:.2f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def format_table(results: Sequence[dict[str, Any]], budgets: Sequence[int], rows: Sequence[str]) -> str:
    """Markdown tables (OT-NME and NME, %, mean ± sample std over seeds) of ``results`` records."""
    lines = []
    for metric, title in (("ot_nme", "OT-NME (inter-ocular, %)"), ("nme", "NME (inter-ocular, %)")):
        lines += [f"**{title}**", "", "| row | " + " | ".join(str(b) for b in budgets) + " |"]
        lines.append("|---|" + "---|" * len(budgets))
        for row in rows:
            cells = [
                _mean_std([r[metric] for r in results if r["row"] == row and r["budget"] == b])
                for b in budgets
            ]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        base = [_mean_std([r[f"baseline_{metric}"] for r in results if r["budget"] == b]) for b in budgets]
        lines.append("| mean shape (reference) | " + " | ".join(base) + " |")
        lines.append("")
    seeds = sorted({r["seed"] for r in results})
    steps = sorted({r["step"] for r in results})
    lines.append(f"seeds {seeds}; iterations per cell {steps}; {len(results)} cells.")
    return "\n".join(lines) + "\n"


def run_ablation(
    base: CycleGANConfig,
    out: str | Path,
    *,
    budgets: Sequence[int],
    seeds: Sequence[int],
    rows: Sequence[str] = tuple(ROWS),
) -> list[dict[str, Any]]:
    """Run (or resume) every ``row × budget × seed`` cell; returns all result records and writes
    ``results.jsonl`` and ``table.md`` under ``out``."""
    from zoo.cyclegan.train import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done: list[dict[str, Any]] = []
    if log.exists():
        done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    keys = {(r["row"], r["budget"], r["seed"]) for r in done}
    for budget in budgets:
        for seed in seeds:
            for row in rows:
                if (row, budget, seed) in keys:
                    continue
                cfg = cell_config(base, row, budget, seed, out)
                result = train(cfg)
                record = {
                    "row": row,
                    "budget": budget,
                    "seed": seed,
                    **{k: result[k] for k in ("step", "nme", "ot_nme", "baseline_nme", "baseline_ot_nme")},
                    "iterations_per_s": result["iterations_per_s"],
                }
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                done.append(record)
                table = format_table(done, budgets, rows)
                atomic_write_text(out / "table.md", table)
    return done


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description="Table 1 ablation of the landmark CycleGAN (zoo.cyclegan).")
    parser.add_argument("--out", required=True, help="output directory (results.jsonl, table.md, cells)")
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu")
    parser.add_argument("--budgets", default="100,300", help="comma-separated label budgets")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated Table 1 rows")
    parser.add_argument("--steps", type=int, default=None, help="iterations per cell (default: the preset's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(list(argv) if argv is not None else None)
    base = PRESETS[args.preset]()
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        base.train.steps = args.steps
        base.train.eval_every = max(args.steps, 1)
        base.train.ckpt_every = max(1, min(base.train.ckpt_every, args.steps))
    base.train.progress = False
    if args.threads is not None:
        base.train.num_threads = args.threads
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    results = run_ablation(base, args.out, budgets=budgets, seeds=seeds, rows=rows)
    print(format_table(results, budgets, rows))
    return results


if __name__ == "__main__":
    main()

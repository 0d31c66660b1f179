r"""Ablation in the shape of BRULÉ's Fig. 6 (supplement): the full loss, without ``R_b`` (``c5 = 0``) and
without ``R_g`` (``c6 = 0``), against the barycenter-as-prediction baseline (Fig. 6's black line).

::

    # reduced CPU version: the cpu preset shortened to --steps iterations per cell
    python -m zoo.brule.ablation --out runs/brule-ablation --steps 150 --seeds 0
    # the paper's setting (256 px; cells one after another)
    python -m zoo.brule.ablation --out runs/brule-abl-gpu --preset gpu --seeds 0,1,2

Every cell is an ordinary :func:`zoo.brule.train.train` run in ``<out>/<row>-s<seed>/`` on the same data,
architecture, step count and seed; only the loss coefficients differ. Finished cells are appended to
``<out>/results.jsonl`` and skipped when the command is re-run. ``<out>/table.md`` holds the linear-probe
NME, OT-NME and NME (inter-ocular, %) with mean ± std over seeds, the barycenter baseline, and the
stability score; each cell's ``logs/eval.csv`` holds the curve over training (Fig. 6's x-axis).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wbaug.io_atomic import atomic_write_text
from zoo.brule.config import PRESETS, BruleConfig

__all__ = ["ROWS", "cell_config", "format_table", "main", "run_ablation"]

#: Fig. 6 rows: the loss coefficients each one zeroes
ROWS: dict[str, dict[str, float]] = {
    "full": {},
    "without R_b": {"c5": 0.0},
    "without R_g": {"c6": 0.0},
}
METRICS = ("linear_probe_nme", "ot_nme", "nme", "stability")


def cell_config(base: BruleConfig, row: str, seed: int, out: Path) -> BruleConfig:
    """Copy of ``base`` for one cell (Fig. 6 ``row``, ``seed`` of the training), writing under ``out``."""
    if row not in ROWS:
        raise ValueError(f"row must be one of {list(ROWS)}, got {row!r}")
    cfg = copy.deepcopy(base)
    for name, value in ROWS[row].items():
        setattr(cfg.loss, name, value)
    cfg.train.seed = seed
    cfg.train.out_dir = str(out / f"{row.replace(' ', '_')}-s{seed}")
    return cfg


def _percent(values: Sequence[float]) -> str:
    vals = [100 * v for v in values if not math.isnan(v)]
    if not vals:
        return "-"
    spread = f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
    return f"{statistics.fmean(vals):.2f}{spread}"


def format_table(results: Sequence[dict[str, Any]], rows: Sequence[str]) -> str:
    """A markdown table (%, mean ± sample std over seeds) of ``results`` records, baseline last."""
    header = "| row | linear-probe NME | OT-NME | NME | stability (% of side) |"
    lines = [header, "|---|---|---|---|---|"]
    for row in rows:
        cells = [_percent([r[m] for r in results if r["row"] == row]) for m in METRICS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    per_seed = {r["seed"]: r for r in results}  # the baseline depends on the data only: one value per seed
    base = [_percent([r[f"baseline_{m}"] for r in per_seed.values()]) for m in METRICS[:3]]
    lines.append("| barycenter as prediction | " + " | ".join(base) + " | - |")
    seeds = sorted({r["seed"] for r in results})
    steps = sorted({r["step"] for r in results})
    lines += ["", f"Inter-ocular NME in %; seeds {seeds}; iterations per cell {steps}; {len(results)} cells."]
    return "\n".join(lines) + "\n"


def run_ablation(
    base: BruleConfig, out: str | Path, *, seeds: Sequence[int], rows: Sequence[str] = tuple(ROWS)
) -> list[dict[str, Any]]:
    """Run (or resume) every ``row × seed`` cell on one shared data build; returns all result records and
    writes ``results.jsonl`` and ``table.md`` under ``out``."""
    from zoo.brule.train import build_data, train

    for row in rows:
        if row not in ROWS:
            raise ValueError(f"rows must be among {list(ROWS)}, got {row!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done: list[dict[str, Any]] = []
    if log.exists():
        done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    keys = {(r["row"], r["seed"]) for r in done}
    data = None
    for seed in seeds:
        for row in rows:
            if (row, seed) in keys:
                continue
            cfg = cell_config(base, row, seed, out)
            data = data if data is not None else build_data(cfg)
            result = train(cfg, overwrite=True, data=data)
            record = {"row": row, "seed": seed, "step": result["step"]}
            record.update({k: result[k] for k in METRICS})
            record.update({f"baseline_{k}": result[f"baseline_{k}"] for k in METRICS[:3]})
            record["iterations_per_s"] = result["iterations_per_s"]
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            done.append(record)
            atomic_write_text(out / "table.md", format_table(done, rows))
    return done


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description="Fig. 6 ablation of BRULÉ (zoo.brule).")
    parser.add_argument("--out", required=True, help="output directory (results.jsonl, table.md, cells)")
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated Fig. 6 rows")
    parser.add_argument("--steps", type=int, default=None, help="iterations per cell (default: the preset's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(list(argv) if argv is not None else None)
    base = PRESETS[args.preset]()
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        base.train.steps = args.steps
        base.train.eval_every = max(1, args.steps // 3)
        base.train.ckpt_every = args.steps
        base.train.sample_every = args.steps
    base.train.progress = False
    if args.threads is not None:
        base.train.num_threads = args.threads
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    results = run_ablation(base, args.out, seeds=seeds, rows=rows)
    print(format_table(results, rows))
    return results


if __name__ == "__main__":
    main()

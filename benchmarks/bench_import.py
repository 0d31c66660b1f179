"""Start-up cost: what ``import wbaug`` and the ``wbaug`` command add on top of ``import torch, torchvision``.

Each row is the best of ``--repeat`` fresh interpreters (the OS file cache is warm after the first), so
the numbers compare start-up work, not disk reads. Measured in the same run:

* ``torch + torchvision``: the floor every wbaug user pays anyway;
* ``+ import wbaug``: the package itself (everything is imported on first access, PEP 562);
* ``+ from wbaug import <the sampler, the loss, the metrics>``: a typical first line of a training
  script; the heavy optional dependencies (POT, numba, networkx, scipy, kornia) stay unimported until a
  fit, a kNN search or the kornia form needs them -- the last column says which were loaded;
* ``wbaug --help``: the console script (does not import torch at all).

``--src DIR`` (repeatable) measures other checkouts of wbaug in the same run, e.g. the previous release::

    git worktree add /tmp/wbaug-0.2.0 v0.2.0
    python benchmarks/bench_import.py --src . --src /tmp/wbaug-0.2.0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("ot", "numba", "networkx", "scipy", "kornia", "matplotlib")

PROBE = """
import json, sys, time
t0 = time.perf_counter()
{code}
dt = time.perf_counter() - t0
loaded = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps([dt, loaded]))
"""


def time_code(code: str, src: Path, repeat: int) -> tuple[float, list[str]]:
    """Best wall time (s) of ``code`` in a fresh interpreter with ``src`` first on the path."""
    env = dict(os.environ, PYTHONPATH=str(src))
    best, loaded = float("inf"), []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
            env=env, cwd=src, check=True, capture_output=True, text=True,
        ).stdout
        dt, loaded = json.loads(out.strip().splitlines()[-1])
        best = min(best, dt)
    return best, loaded


def time_command(args: list[str], src: Path, repeat: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(args, env=env, cwd=src, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def measure(src: Path, repeat: int) -> dict[str, float | list[str]]:
    base, _ = time_code("import torch, torchvision", src, repeat)
    pkg, pkg_loaded = time_code("import torch, torchvision\nimport wbaug", src, repeat)
    first, first_loaded = time_code(
        "import torch, torchvision\n"
        "from wbaug import WassersteinBarycentricSampler, EquivariantLandmarkLoss, synthetic_faces\n"
        "from wbaug.metrics import nme",
        src,
        repeat,
    )
    cli = time_command([sys.executable, "-m", "wbaug.cli", "--help"], src, repeat)
    return {
        "torch+torchvision_s": base,
        "import_wbaug_extra_s": pkg - base,
        "first_line_extra_s": first - base,
        "first_line_loaded": first_loaded,
        "import_wbaug_loaded": pkg_loaded,
        "cli_help_s": cli,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", type=Path, help="wbaug checkout(s) to measure (default: .)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    sources = args.src or [Path(__file__).resolve().parents[1]]
    results = {}
    print(f"{'checkout':<28} {'torch+tv':>9} {'+wbaug':>8} {'+first line':>12} {'wbaug --help':>13}  loaded")
    for src in sources:
        r = measure(src.resolve(), args.repeat)
        results[str(src)] = r
        print(
            f"{str(src):<28} {r['torch+torchvision_s']:>8.2f}s {r['import_wbaug_extra_s']:>+7.2f}s "
            f"{r['first_line_extra_s']:>+11.2f}s {r['cli_help_s']:>12.2f}s  "
            f"{','.join(r['first_line_loaded']) or '-'}"
        )
    print("targets: +wbaug <= 0.3 s over torch+torchvision; wbaug --help <= 1.5 s")
    if args.json:
        from wbaug.io_atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

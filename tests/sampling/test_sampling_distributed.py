"""``fit`` under torch.distributed: 2 CPU processes (torchrun, Gloo) end with the same sampler, byte for
byte after ``save``, as one process; the sharded kNN search returns exactly the single-process result
(table, evaluated pairs and values, matchings) for equal-size and ragged clouds."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import torch

from wbaug.datasets import synthetic_faces
from wbaug.sampling import WassersteinBarycentricSampler
from wbaug.sampling.graph import exact_knn

ROOT = Path(__file__).resolve().parents[2]


def _records(run) -> list[dict]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def test_torchrun_two_ranks_fit_saves_the_same_bytes_as_one_process(tmp_path, torchrun):
    """benchmarks/fit_distributed.py (the documented command) on 2 ranks: both ranks' saved files equal
    the single-process file byte for byte (fit_time_, a wall-clock measurement, set to 0 on all)."""
    records = _records(
        torchrun(ROOT / "benchmarks" / "fit_distributed.py", "--num-sets", "700", "--out", tmp_path)
    )
    assert sorted(r["rank"] for r in records) == [0, 1] and all(r["world"] == 2 for r in records)
    x = synthetic_faces(700, generator=torch.Generator().manual_seed(0))
    single = WassersteinBarycentricSampler(6).fit(x)
    single.fit_time_ = 0.0
    (tmp_path / "single").mkdir()
    single.save(tmp_path / "single" / "sampler.pt")
    reference = (tmp_path / "single" / "sampler.pt").read_bytes()
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}" / "sampler.pt").read_bytes() == reference
    loaded = WassersteinBarycentricSampler.load(tmp_path / "rank1" / "sampler.pt")
    assert loaded.cliques_ == single.cliques_
    torch.testing.assert_close(loaded.clique_probs_, single.clique_probs_, rtol=0, atol=0)


_KNN_SCRIPT = """
import os
import sys
import torch
import torch.distributed as dist
from wbaug.datasets import synthetic_faces
from wbaug.sampling.graph import exact_knn

dist.init_process_group("gloo")
out = sys.argv[1]
x = synthetic_faces(150, generator=torch.Generator().manual_seed(3)).double()
x = torch.cat([x, x[:5]])  # duplicates: distance-0 ties
g = torch.Generator().manual_seed(4)
ragged = [torch.randn(int(s), 2, generator=g, dtype=torch.float64) + i % 4
          for i, s in enumerate(torch.randint(3, 7, (60,), generator=g))]
results = {
    "faces": exact_knn(x, 5, block_size=16, return_matchings=True),
    "faces_eps": exact_knn(x, 4, epsilon=4.0, block_size=23),
    "ragged": exact_knn(ragged, 3, block_size=7),
}
if dist.get_rank() == 1:
    torch.save({k: tuple(v) for k, v in results.items()}, out)
os.write(sys.stdout.fileno(), ('{"sent": %d}' % results["faces"].communication_bytes + chr(10)).encode())
dist.destroy_process_group()
"""


def test_torchrun_two_ranks_knn_equals_single_process(tmp_path, torchrun):
    script = tmp_path / "knn.py"
    script.write_text(textwrap.dedent(_KNN_SCRIPT))
    records = _records(torchrun(script, tmp_path / "out.pt"))
    assert all(r["sent"] > 0 for r in records)
    got = torch.load(tmp_path / "out.pt", weights_only=False)
    x = synthetic_faces(150, generator=torch.Generator().manual_seed(3)).double()
    x = torch.cat([x, x[:5]])
    g = torch.Generator().manual_seed(4)
    ragged = [
        torch.randn(int(s), 2, generator=g, dtype=torch.float64) + i % 4
        for i, s in enumerate(torch.randint(3, 7, (60,), generator=g))
    ]
    expected = {
        "faces": exact_knn(x, 5, block_size=16, return_matchings=True),
        "faces_eps": exact_knn(x, 4, epsilon=4.0, block_size=23),
        "ragged": exact_knn(ragged, 3, block_size=7),
    }
    for name, ref in expected.items():
        res = got[name]
        for field in ("indices", "distances", "pair_rows", "pair_cols", "pair_values"):
            assert torch.equal(res[ref._fields.index(field)], getattr(ref, field)), (name, field)
        if ref.matchings is not None:
            mt = res[ref._fields.index("matchings")]
            assert all(torch.equal(a, b) for a, b in zip(mt, ref.matchings))
    assert expected["faces"].communication_bytes == 0

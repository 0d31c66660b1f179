"""The one atomic writer (wbaug.io_atomic) and every writer routed through it: a SIGKILL during an overwrite
(a subprocess killed by PID), a full disk (fsync / write raising ENOSPC), a symlink at the target and
predictable temporary names -- the previous file must survive intact and no temporary file may remain."""

import dataclasses
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import wbaug.io_atomic as io_atomic
from wbaug.cli import plot_densities
from wbaug.datasets import read_pts, write_pts
from wbaug.io_atomic import TEMP_SUFFIX, atomic_write, atomic_write_text, remove_stale_temporaries
from wbaug.sampling import WassersteinBarycentricSampler
from zoo.common.checkpoint import save_checkpoint
from zoo.common.config import save_config
from zoo.common.logging import MetricLogger


@dataclasses.dataclass
class _Cfg:
    a: int = 1


def _temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def _fitted(m=12, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 40 + torch.randn(m, n, 2, generator=g)
    return WassersteinBarycentricSampler(k_neighbors=3, correspondence="index").fit(x)


def test_atomic_write_replaces_and_keeps_permissions(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one"
    os.chmod(target, 0o640)
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert (target.stat().st_mode & 0o777) == 0o640
    assert _temps(target.parent) == []


def test_exception_in_body_leaves_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"good"
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("where", ["fsync", "write"])
def test_disk_full_keeps_previous_file(tmp_path, monkeypatch, where):
    """ENOSPC from fsync (monkeypatched) or from a write (a failing file object): OSError naming the
    target, errno kept, previous sampler file intact and loadable, no temporary left."""
    s = _fitted()
    target = tmp_path / "s.pt"
    s.save(target)
    before = target.read_bytes()
    if where == "fsync":

        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(io_atomic.os, "fsync", full)
        with pytest.raises(OSError) as info:
            _fitted(seed=1).save(target)
    else:
        with pytest.raises(OSError) as info:
            with atomic_write(target) as fh:
                fh.write(b"x" * 100)
                raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC
    assert str(target) in str(info.value)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert _temps(tmp_path) == []
    WassersteinBarycentricSampler.load(target)


_KILL_SCRIPT = """
import json, os, signal, sys, time
import torch
torch.set_num_threads(1)  # no OpenMP pool: fork-safe
from wbaug.sampling import WassersteinBarycentricSampler

target = sys.argv[1]
g = torch.Generator().manual_seed(0)
x = torch.rand(20000, 2, generator=g, dtype=torch.float64) * 40 + torch.randn(
    12, 20000, 2, generator=g, dtype=torch.float64)
s = WassersteinBarycentricSampler(k_neighbors=3, correspondence="index")
s.fit(x, distances=torch.cdist(x.flatten(1), x.flatten(1)))
s.save(target)
t0 = time.perf_counter(); s.save(target); save_s = time.perf_counter() - t0
results = []
for i in range(8):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: overwrite the file forever
        os.close(r)
        s.save(target)
        os.write(w, b"x")
        while True:
            s.save(target)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    time.sleep(0.005 + 0.025 * i)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    try:
        ok = bool(torch.equal(WassersteinBarycentricSampler.load(target).landmarks_, x))
        err = ""
    except Exception as e:
        ok, err = False, str(e)
    results.append({"killed": os.WIFSIGNALED(status), "ok": ok, "err": err})
print(json.dumps({"save_s": save_s, "results": results}))
"""


def test_sigkill_during_save_keeps_a_loadable_file(tmp_path):
    """A subprocess forks a writer that overwrites a 3.8 MB sampler file in a loop and SIGKILLs it by PID
    at 8 different moments; every time the file must load (validated, checksum) and equal the saved
    landmarks -- with a plain ``open(path, "wb")`` writer (the old ``torch.save(state, path)``) this fails
    for most kills -- and the stray temporaries are only ours."""
    target = tmp_path / "s.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(target)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for r in report["results"]:
        assert r["killed"] and r["ok"], r["err"]
    assert all(p.name.startswith(".s.pt.") for p in _temps(tmp_path))
    remove_stale_temporaries(tmp_path, "s.pt")
    assert _temps(tmp_path) == [] and target.exists()


def test_symlink_target_is_refused_and_not_followed(tmp_path):
    """Decision: a link at the target is refused (ValueError naming the path); the link and the file it
    points to are untouched -- for the writer itself, sampler.save, write_pts, figures, checkpoints,
    configs."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    m = torch.nn.Linear(2, 2)
    writers = {
        "out.txt": lambda p: atomic_write_text(p, "x"),
        "out.pt": lambda p: _fitted().save(p),
        "out.pts": lambda p: write_pts(p, torch.zeros(3, 2)),
        "out.png": lambda p: plot_densities(torch.rand(4, 3, 2), torch.rand(4, 3, 2), p),
        "ckpt.pt": lambda p: save_checkpoint(p, model=m, step=1),
        "config.json": lambda p: save_config(_Cfg(), p),
    }
    for name, write in writers.items():
        link = tmp_path / name
        link.symlink_to(victim)
        with pytest.raises(ValueError, match="symbolic link") as info:
            write(link)
        assert str(link) in str(info.value)
        assert link.is_symlink() and victim.read_text() == "precious"
    assert _temps(tmp_path) == []


def test_temporary_names_are_unpredictable_and_never_followed(tmp_path, monkeypatch):
    """Two writes use different mkstemp names (random part); a link planted at the old predictable name
    '.NAME.tmp<pid>' is never followed."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / f".s.pt.tmp{os.getpid()}").symlink_to(victim)
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(io_atomic.os, "replace", spy)
    s = _fitted()
    s.save(tmp_path / "s.pt")
    s.save(tmp_path / "s.pt")
    assert len(seen) == 2 and seen[0] != seen[1]
    for name in seen:
        assert name.startswith(".s.pt.") and name.endswith(TEMP_SUFFIX)
        assert len(name) >= len(".s.pt.") + 8 + len(TEMP_SUFFIX)
    assert victim.read_text() == "precious"
    WassersteinBarycentricSampler.load(tmp_path / "s.pt")


def test_every_writer_goes_through_atomic_write(tmp_path, monkeypatch):
    """write_pts, sampler.save, CLI outputs, figures, checkpoints, configs and metric logs all call the
    one writer (counted through a wrapper around atomic_write's mkstemp)."""
    import tempfile

    calls = []
    real = tempfile.mkstemp

    def counting(*args, **kwargs):
        calls.append(kwargs.get("prefix"))
        return real(*args, **kwargs)

    monkeypatch.setattr(io_atomic.tempfile, "mkstemp", counting)
    write_pts(tmp_path / "a.pts", torch.zeros(3, 2))
    _fitted().save(tmp_path / "s.pt")
    plot_densities(torch.rand(4, 3, 2), torch.rand(4, 3, 2), tmp_path / "f.png")
    save_checkpoint(tmp_path / "c.pt", model=torch.nn.Linear(2, 2), step=1)
    save_config(_Cfg(), tmp_path / "c.json")
    MetricLogger(tmp_path / "logs", tensorboard=False).log(1, {"loss": 1.0})
    from wbaug.cli import main

    np.save(tmp_path / "lm.npy", np.random.default_rng(0).normal(size=(8, 4, 2)))
    assert (
        main(
            [
                "sample",
                "--input",
                str(tmp_path / "lm.npy"),
                "--k",
                "2",
                "--n",
                "3",
                "--out",
                str(tmp_path / "o.csv"),
                "--summary",
                str(tmp_path / "sum.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    for prefix in (
        ".a.pts.",
        ".s.pt.",
        ".f.png.",
        ".c.pt.",
        ".c.json.",
        ".train.csv.",
        ".o.csv.",
        ".sum.json.",
    ):
        assert prefix in calls, prefix
    assert read_pts(tmp_path / "a.pts").shape == (3, 2)


def test_remove_stale_temporaries_only_touches_ours(tmp_path):
    target = tmp_path / "last.pt"
    ours = [tmp_path / f".last.pt.abc123{TEMP_SUFFIX}", tmp_path / ".last.pt.tmp4242"]
    for p in ours:
        p.write_bytes(b"stale")
    others = [tmp_path / ".other.pt.x.wbaug-tmp", tmp_path / "last.pt.tmp", tmp_path / "notes.txt"]
    for p in others:
        p.write_bytes(b"keep")
    removed = remove_stale_temporaries(tmp_path, target.name)
    assert sorted(removed) == sorted(ours)
    assert all(p.exists() for p in others)
    assert remove_stale_temporaries(tmp_path) == [others[0]]  # every target's temporaries
    assert all(p.exists() for p in others[1:])

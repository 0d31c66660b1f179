"""Shared test configuration.

Hypothesis runs a bounded number of examples so the whole suite stays well inside CI's budget on a
2-core machine; set HYPOTHESIS_PROFILE=thorough locally for a deeper search.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]


def cuda_devices() -> list[str]:
    return ["cuda"] if torch.cuda.is_available() else []


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def one_thread():
    """Tiny tensors on a shared CPU: one torch thread is several times faster and keeps results
    reproducible (the GAN and zoo test modules use it for every test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def torchrun():
    """``run(*args)``: ``python -m torch.distributed.run --nproc_per_node=2 *args`` on the CPU (Gloo, one
    thread per rank) from the repository root; asserts success, returns the ``CompletedProcess``."""

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        port = f"--master_port={_free_port()}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", port]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [*cmd, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    return run

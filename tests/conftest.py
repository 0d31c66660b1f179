"""Shared test configuration.

Hypothesis runs a bounded number of examples so the whole suite stays well inside CI's budget on a
2-core machine; set HYPOTHESIS_PROFILE=thorough locally for a deeper search.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def cuda_devices() -> list[str]:
    return ["cuda"] if torch.cuda.is_available() else []


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

"""The public surface: every name in ``wbaug.__all__`` (and in each subpackage's ``__all__``) exists,
and importing wbaug never imports the zoo."""

import importlib
import subprocess
import sys

import pytest

import wbaug

SUBPACKAGES = [
    "wbaug.ot",
    "wbaug.sampling",
    "wbaug.transforms",
    "wbaug.losses",
    "wbaug.landmarks",
    "wbaug.metrics",
    "wbaug.datasets",
    "wbaug.grid",
]


def test_top_level_all_names_exist():
    assert wbaug.__all__, "wbaug.__all__ must not be empty"
    for name in wbaug.__all__:
        assert hasattr(wbaug, name), f"wbaug.__all__ lists {name!r} but wbaug has no such attribute"


@pytest.mark.parametrize("module_name", SUBPACKAGES)
def test_subpackage_all_names_exist(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    assert names, f"{module_name} must define a non-empty __all__"
    for name in names:
        assert hasattr(module, name), f"{module_name}.__all__ lists {name!r} but it does not exist"


def test_import_does_not_pull_zoo():
    code = "import sys, wbaug; assert not any(m == 'zoo' or m.startswith('zoo.') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)

"""The examples in the wbaug.ot docstrings run and print what they claim (doctest)."""

import doctest
import importlib

import pytest

MODULES = ["wbaug.ot.assignment", "wbaug.ot.distance", "wbaug.ot.barycenter"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    """Every >>> example of the module gives the documented output."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": importlib.import_module("torch")}, verbose=False)
    assert result.failed == 0
    if name != "wbaug.ot.assignment":
        assert result.attempted > 0

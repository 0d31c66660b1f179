"""Every docstring example in the shipped package and the zoo runs and prints what it claims (doctest
over all ``wbaug`` and ``zoo`` modules, except command-line entry points). Examples may use ``torch``
and ``np`` without importing them."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest
import torch

import wbaug
import zoo

MODULES = sorted(
    info.name
    for package in (wbaug, zoo)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
    if info.name != "wbaug.cli"
)


@pytest.mark.parametrize("module_name", ["wbaug", "zoo", *MODULES])
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name, extraglobs={"torch": torch, "np": np}):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} docstring example(s) failed in {module_name}"

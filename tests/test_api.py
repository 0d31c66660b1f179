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


HEAVY = ("ot", "numba", "networkx", "scipy", "kornia", "matplotlib")


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_first_line_of_a_training_script_stays_light():
    # The optional-heavy dependencies load when a fit / kNN search / the kornia form needs them.
    loaded = _loaded_after(
        "from wbaug import WassersteinBarycentricSampler, EquivariantLandmarkLoss, synthetic_faces\n"
        "from wbaug.metrics import nme\nfrom wbaug.transforms import LandmarkHorizontalFlip"
    )
    assert not loaded & set(HEAVY), f"imported eagerly: {sorted(loaded & set(HEAVY))}"


def test_import_wbaug_and_cli_help_do_not_import_torch():
    assert "torch" not in _loaded_after("import wbaug")
    assert "torch" not in _loaded_after(
        "import contextlib, io\nfrom wbaug.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])"
    )


def test_lazy_names_resolve_to_the_real_objects():
    from wbaug.sampling import WassersteinBarycentricSampler
    from wbaug.transforms.kornia_adapter import RandomBarycentricWarp

    assert wbaug.RandomBarycentricWarp is RandomBarycentricWarp
    assert importlib.import_module("wbaug.transforms").RandomBarycentricWarp is RandomBarycentricWarp
    assert wbaug.WassersteinBarycentricSampler is WassersteinBarycentricSampler
    assert set(wbaug.__all__) <= set(dir(wbaug))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        wbaug.nope  # noqa: B018

"""`wbaug sample` / `wbaug demo`: outputs exist and are consistent (shapes, summary numbers, loadable
sampler),
bad input exits with status 2 and a message naming the problem."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from wbaug.cli import main, plot_densities
from wbaug.datasets import load_landmarks, read_pts
from wbaug.sampling import WassersteinBarycentricSampler


def _landmarks(m=20, n=8):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 2, generator=g) * 50 + torch.randn(m, n, 2, generator=g)).numpy()


def test_sample_command_writes_outputs(tmp_path, capsys):
    src = tmp_path / "lm.npy"
    np.save(src, _landmarks())
    out, fig, sam, summ = tmp_path / "aug.npy", tmp_path / "fig.png", tmp_path / "s.pt", tmp_path / "sum.json"
    code = main(
        [
            "sample",
            "--input",
            str(src),
            "--k",
            "3",
            "--n",
            "15",
            "--out",
            str(out),
            "--plot",
            str(fig),
            "--save-sampler",
            str(sam),
            "--summary",
            str(summ),
            "--correspondence",
            "index",
            "--no-progress",
        ]
    )
    assert code == 0
    aug = np.load(out)
    assert aug.shape == (15, 8, 2) and np.isfinite(aug).all()
    assert fig.stat().st_size > 1000
    summary = json.loads(summ.read_text())
    assert summary["landmark_sets"] == 20 and summary["samples"] == 15
    assert summary["exact_w2_pairs"] <= summary["all_pairs"] == 190
    loaded = WassersteinBarycentricSampler.load(sam)
    assert len(loaded.cliques_) == summary["cliques"]
    assert "fitted 20 landmark sets" in capsys.readouterr().out
    # same seed => same output file content
    out2 = tmp_path / "aug2.npy"
    main(
        [
            "sample",
            "--input",
            str(src),
            "--k",
            "3",
            "--n",
            "15",
            "--out",
            str(out2),
            "--correspondence",
            "index",
            "--no-progress",
        ]
    )
    np.testing.assert_array_equal(np.load(out2), aug)


def test_demo_command(tmp_path):
    code = main(
        ["demo", "--out-dir", str(tmp_path / "d"), "--faces", "40", "--n", "20", "--k", "4", "--no-progress"]
    )
    assert code == 0
    assert np.load(tmp_path / "d" / "augmented.npy").shape == (20, 68, 2)
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["landmark_sets"] == 40
    assert (tmp_path / "d" / "density.png").exists()


def test_bad_input_exit_code(tmp_path, capsys):
    src = tmp_path / "lm.npy"
    np.save(src, _landmarks(m=3))
    assert (
        main(["sample", "--input", str(src), "--k", "5", "--n", "2", "--out", str(tmp_path / "a.npy")]) == 2
    )
    assert "k_neighbors" in capsys.readouterr().err
    assert main(["sample", "--input", str(tmp_path / "missing.npy"), "--n", "2"]) == 2


def test_plot_densities_ragged(tmp_path):
    """The density figure also accepts lists of clouds of different sizes."""
    clouds = [torch.rand(5, 2), torch.rand(7, 2)]
    assert plot_densities(clouds, clouds, tmp_path / "f.png").exists()


def _sample(tmp_path, out, *extra, n="6", src=None):
    if src is None:
        src = tmp_path / "lm.npy"
        np.save(src, _landmarks())
    args = ["sample", "--input", str(src), "--k", "3", "--n", n, "--correspondence", "index", "--no-progress"]
    return main([*args, "--out", str(out), *extra])


@pytest.mark.parametrize(
    ("given", "written"),
    [("aug", "aug.npy"), ("folder/", "folder/augmented.npy"), ("existing", "existing/augmented.npy")],
)
def test_out_reports_the_real_written_path(tmp_path, capsys, given, written):
    """--out without a suffix gets .npy, a folder gets augmented.npy: the file written is the one printed
    and recorded in the summary (it used to write aug.npy but report 'aug')."""
    (tmp_path / "existing").mkdir()
    summ = tmp_path / "sum.json"
    assert _sample(tmp_path, f"{tmp_path}/{given}", "--summary", str(summ)) == 0
    real = tmp_path / written
    assert np.load(real).shape == (6, 8, 2)
    assert json.loads(summ.read_text())["out"] == str(real)
    assert f"out: {real}" in capsys.readouterr().out


def test_out_pts_and_csv(tmp_path):
    """.pts (one set, 1-based iBUG file) and .csv (one set per row) are real formats, not x.pts.npy."""
    assert _sample(tmp_path, tmp_path / "one.pts", n="1") == 0
    assert read_pts(tmp_path / "one.pts").shape == (8, 2)
    assert not (tmp_path / "one.pts.npy").exists()
    assert _sample(tmp_path, tmp_path / "many.csv") == 0
    assert _sample(tmp_path, tmp_path / "many.npy") == 0
    torch.testing.assert_close(
        load_landmarks(tmp_path / "many.csv"), torch.from_numpy(np.load(tmp_path / "many.npy")).float()
    )


def test_input_dtype_is_kept(tmp_path):
    src = tmp_path / "lm64.npy"
    np.save(src, _landmarks().astype(np.float64))
    assert _sample(tmp_path, tmp_path / "o.npy", src=src) == 0
    assert np.load(tmp_path / "o.npy").dtype == np.float64
    np.save(src, _landmarks().astype(np.float32))
    assert _sample(tmp_path, tmp_path / "o32.npy", src=src) == 0
    assert np.load(tmp_path / "o32.npy").dtype == np.float32


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("pts_many", "a .pts file holds one landmark set"),
        ("bad_suffix", "unsupported file type '.txt'"),
        ("bad_plot", "unsupported figure type '.xyz'"),
        ("link", "symbolic link"),
        ("nan_input", "NaN or infinite"),
    ],
)
def test_bad_outputs_and_inputs_fail_before_fitting(tmp_path, capsys, case, match):
    """Output paths and inputs are checked before the (long) fit: exit 2, a message naming the problem,
    nothing fitted, nothing written."""
    extra, out = [], tmp_path / "o.npy"
    src = None
    if case == "pts_many":
        out = tmp_path / "o.pts"
    elif case == "bad_suffix":
        out = tmp_path / "o.txt"
    elif case == "bad_plot":
        extra = ["--plot", str(tmp_path / "fig.xyz")]
    elif case == "link":
        (tmp_path / "target.npy").write_bytes(b"keep")
        out.symlink_to(tmp_path / "target.npy")
    else:
        src = tmp_path / "nan.npy"
        bad = _landmarks()
        bad[3, 2, 1] = np.nan
        np.save(src, bad)
    assert _sample(tmp_path, out, *extra, src=src) == 2
    captured = capsys.readouterr()
    assert match in captured.err and "fitted" not in captured.out
    if case == "nan_input":
        assert str(src) in captured.err
    if case == "link":
        assert (tmp_path / "target.npy").read_bytes() == b"keep"
    elif case != "bad_suffix":
        assert not out.exists()


def test_plot_densities_leaves_the_callers_matplotlib_alone(tmp_path):
    # a library function must not switch the user's backend (a notebook's inline one, say)
    code = (
        "import matplotlib, torch\n"
        "from wbaug.cli import plot_densities\n"
        f"plot_densities(torch.rand(5, 68, 2), torch.rand(9, 68, 2), {str(tmp_path / 'd.png')!r})\n"
        "print(matplotlib.get_backend())\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "svg"
    assert (tmp_path / "d.png").read_bytes().startswith(b"\x89PNG")

"""`wbaug sample` / `wbaug demo`: outputs exist and are consistent (shapes, summary numbers, loadable
sampler),
bad input exits with status 2 and a message naming the problem."""

import json

import numpy as np
import torch

from wbaug.cli import main, plot_densities
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

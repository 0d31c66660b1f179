"""zoo/barycenter_net: the network, its targets, metrics, training loop and evaluation.

* model: the output is a probability density for any number of inputs K (weights shared across the
  contractive paths), invariant to the order of the inputs (hypothesis), zero-weight inputs are inert
  (padding), ``log=True`` is the log of the density, bad input raises ValueError naming the argument;
* data: linearised targets built from per-shape maps equal the direct solver (the paper's trick is
  exact); the square's symmetries used as augmentation commute with the solver barycenter;
* metrics: KL / L1 equal a direct NumPy evaluation;
* training: a CPU smoke run (3 steps, eval, checkpoint, figure), a resume (from the numbered checkpoint
  when last.pt is torn) bit-identical to an uninterrupted run, a re-run into the used out_dir refused,
  a 40-step run that lowers the held-out KL, and the evaluation CLI.
"""

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from zoo.barycenter_net.config import smoke_config
from zoo.barycenter_net.data import (
    PairDataset,
    build_kway_set,
    random_contours,
    shape_maps,
    solver_barycenter,
)
from zoo.barycenter_net.evaluate import kl_divergence, l1_distance
from zoo.barycenter_net.model import BarycenterNet
from zoo.common.checkpoint import RunDirError


def _densities(b, k, size, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(b, k, size, size, generator=g) ** 4
    return a / a.sum(dim=(-1, -2), keepdim=True)


def _weights(b, k, seed):
    g = torch.Generator().manual_seed(seed + 1)
    w = torch.rand(b, k, generator=g) + 0.05
    return w / w.sum(-1, keepdim=True)


def _net(seed=0):
    torch.manual_seed(seed)  # test-only: parameter init of a throwaway network
    return BarycenterNet(width=4, depth=2, max_width=8).eval()


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_output_is_a_density_for_any_number_of_inputs(k):
    net = _net()
    a, w = _densities(3, k, 16, k), _weights(3, k, k)
    out = net(a, w)
    assert out.shape == (3, 16, 16) and bool((out >= 0).all())
    torch.testing.assert_close(out.sum(dim=(-1, -2)), torch.ones(3))
    torch.testing.assert_close(net(a, w, log=True).exp(), out)


def test_parameters_do_not_depend_on_k_or_resolution():
    net = _net()
    n = net.num_parameters()
    net(_densities(1, 2, 16, 0), _weights(1, 2, 0))
    net(_densities(1, 7, 32, 0), _weights(1, 7, 0))
    assert net.num_parameters() == n


@given(k=st.integers(2, 5), seed=st.integers(0, 10_000), data=st.data())
def test_invariant_to_the_order_of_inputs(k, seed, data):
    """Barycenters do not depend on how the inputs are listed; neither does the shared-path network."""
    perm = torch.tensor(data.draw(st.permutations(list(range(k)))))
    net = _net()
    a, w = _densities(2, k, 16, seed), _weights(2, k, seed)
    with torch.no_grad():
        torch.testing.assert_close(net(a[:, perm], w[:, perm]), net(a, w), rtol=1e-5, atol=1e-7)


def test_zero_weight_inputs_are_inert():
    """Padding a batch of cliques with zero-weight inputs leaves each barycenter unchanged."""
    net = _net()
    a, w = _densities(2, 3, 16, 1), _weights(2, 3, 1)
    padded_a = torch.cat([a, _densities(2, 2, 16, 9)], 1)
    padded_w = torch.cat([w, torch.zeros(2, 2)], 1)
    with torch.no_grad():
        torch.testing.assert_close(net(padded_a, padded_w), net(a, w), rtol=1e-5, atol=1e-7)


def test_bad_input_names_the_argument():
    net = _net()
    a, w = _densities(2, 2, 16, 0), _weights(2, 2, 0)
    with pytest.raises(ValueError, match="densities"):
        net(a[0], w)
    with pytest.raises(ValueError, match="divisible"):
        net(_densities(2, 2, 18, 0), w)
    with pytest.raises(ValueError, match="weights"):
        net(a, w[:, :1])
    with pytest.raises(ValueError, match="sum to one"):
        net(a, w * 2)
    with pytest.raises(ValueError, match="non-negative"):
        net(-a, w)
    with pytest.raises(ValueError, match="depth"):
        BarycenterNet(depth=-1)


def test_gradients_reach_every_parameter():
    net = _net().train()
    a, w = _densities(2, 2, 16, 3), _weights(2, 2, 3)
    kl_divergence(_densities(2, 1, 16, 4)[:, 0], net(a, w, log=True)).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_linearized_targets_from_shape_maps_equal_the_direct_solver():
    """The paper's trick: per-shape maps computed once give the same targets as solving each problem."""
    g = torch.Generator().manual_seed(0)
    bank = random_contours(5, 16, generator=g, max_depth=3)
    maps = shape_maps(bank, reg=2e-2)
    data = build_kway_set(bank, 4, 3, generator=g, reg=2e-2, bank_maps=maps)
    direct = solver_barycenter(data["inputs"], data["weights"], target="linearized", reg=2e-2)
    torch.testing.assert_close(data["target"], direct, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(data["target"].sum(dim=(-1, -2)), torch.ones(4))
    with pytest.raises(ValueError, match="bank_maps"):
        build_kway_set(bank, 2, 2, bank_maps=maps[:2])
    with pytest.raises(ValueError, match="target"):
        build_kway_set(bank, 2, 2, target="geomloss")


@pytest.mark.parametrize("target", ["linearized", "convolutional"])
def test_square_symmetries_commute_with_the_solver(target):
    """PairDataset's augmentation is exact: flipping/transposing inputs flips/transposes the barycenter."""
    g = torch.Generator().manual_seed(1)
    bank = random_contours(4, 16, generator=g, max_depth=2)
    data = build_kway_set(bank, 2, 2, generator=g, target=target, reg=2e-2)
    ds = PairDataset(data, augment=True)
    for seed in range(8):
        x, w, t = ds[(1, seed)]
        t_solved = solver_barycenter(x[None], w[None], target=target, reg=2e-2)[0]
        torch.testing.assert_close(t_solved, t, rtol=1e-4, atol=1e-6)
    x, w, t = ds[1]  # a plain index: no augmentation
    torch.testing.assert_close(t, data["target"][1])


def test_metrics_match_numpy():
    t = _densities(3, 1, 8, 5)[:, 0]
    t[0, :2] = 0.0  # zero target pixels contribute 0 log 0 = 0
    t = t / t.sum(dim=(-1, -2), keepdim=True)
    p = _densities(3, 1, 8, 6)[:, 0]
    tn, pn = t.double().numpy(), p.double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_ref = np.where(tn > 0, tn * np.log(tn / pn), 0.0).sum(axis=(-1, -2))
    torch.testing.assert_close(
        kl_divergence(t, p.log()).double(), torch.from_numpy(kl_ref), rtol=1e-5, atol=1e-6
    )
    l1_ref = np.abs(tn - pn).sum(axis=(-1, -2))
    torch.testing.assert_close(l1_distance(t, p).double(), torch.from_numpy(l1_ref), rtol=1e-5, atol=1e-6)


def _final_weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_smoke_train_checkpoint_resume_and_cli(tmp_path, capsys):
    """3 CPU steps (eval, figure, checkpoint); resuming 2 -> 3 equals an uninterrupted 3-step run."""
    from zoo.barycenter_net.evaluate import main as evaluate_main
    from zoo.barycenter_net.train import main as train_main
    from zoo.barycenter_net.train import train

    cfg = smoke_config(str(tmp_path / "a"))
    cfg.train.steps = 2
    first = train(cfg)
    out = tmp_path / "a"
    assert first["step"] == 2 and np.isfinite(first["kl_2"]) and np.isfinite(first["kl_3"])
    assert (out / "checkpoints" / "last.pt").exists() and (out / "config.json").exists()
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [
        "step00000002_k2.png",
        "step00000002_k3.png",
    ]
    cfg.train.steps = 3
    with pytest.raises(RunDirError, match="not empty"):  # no silent mixing with the old run
        train(cfg)
    # a torn last.pt: --resume falls back to the intact step_00000002.pt, still bit-identical
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="step_00000002.pt"):
        resumed = train(cfg, resume=True)
    # the uninterrupted run goes into a used out_dir: --overwrite replaces the old run's files
    (tmp_path / "b" / "logs").mkdir(parents=True)
    (tmp_path / "b" / "logs" / "train.csv").write_text("step,kl\n7,0.1\n8,0.2\n")
    (tmp_path / "b" / "config.json").write_text("{}")
    straight = train_main(["--preset", "smoke", "--train.out_dir", str(tmp_path / "b"), "--overwrite"])
    assert [
        r.split(",")[0] for r in (tmp_path / "b" / "logs" / "train.csv").read_text().splitlines()[1:]
    ] == [
        "1",
        "2",
        "3",
    ]
    assert resumed["step"] == straight["step"] == 3
    a, b = _final_weights(out / "checkpoints" / "last.pt"), _final_weights(tmp_path / "b/checkpoints/last.pt")
    for name in a:
        torch.testing.assert_close(
            a[name], b[name], rtol=0, atol=0, msg=f"parameter {name} differs after resume"
        )
    assert [r.split(",")[0] for r in (out / "logs" / "train.csv").read_text().splitlines()[1:]] == [
        "1",
        "2",
        "3",
    ]

    report = tmp_path / "eval.json"
    capsys.readouterr()
    metrics = evaluate_main(
        [
            "--checkpoint",
            str(out / "checkpoints" / "last.pt"),
            "--ways",
            "2,4",
            "--timing",
            "--out",
            str(report),
        ]
    )
    assert set(metrics) >= {"kl_2", "l1_2", "l1_mix_2", "kl_4", "net_ms_batched", "solver_ms"}
    assert json.loads(report.read_text()) == pytest.approx(metrics)
    assert "kl_4" in capsys.readouterr().out


def test_short_training_lowers_held_out_kl(tmp_path):
    """40 SGD steps on 16x16 pairs reduce the held-out 2- and 3-way KL below the untrained network's."""
    from zoo.barycenter_net.evaluate import build_model, evaluate_model
    from zoo.barycenter_net.train import build_data, train

    cfg = smoke_config(str(tmp_path / "run"))
    cfg.data.num_pairs, cfg.eval.num_problems = 64, 8
    cfg.train.steps, cfg.train.eval_every, cfg.train.ckpt_every = 40, 1000, 1000
    cfg.train.sample_images = 0
    cfg.optim.restart_steps = 40
    _, eval_sets = build_data(cfg)
    torch.manual_seed(cfg.train.seed)  # the trainer seeds the same way before building its model
    before = evaluate_model(build_model(cfg), eval_sets)
    after = train(cfg)
    assert after["kl_2"] < 0.8 * before["kl_2"] and after["kl_3"] < 0.8 * before["kl_3"]


def test_shape_bank_on_disk_equals_in_memory_and_rejects_partial_builds(tmp_path):
    """The memory-mapped bank holds exactly the in-memory one; a leftover temporary build is not a bank."""
    from zoo.barycenter_net.bank import ShapeBank, load_or_build_bank

    kwargs = {"num_shapes": 5, "size": 16, "reg": 2e-2, "max_depth": 3, "seed": 4, "show_progress": False}
    mem = load_or_build_bank(None, **kwargs)
    disk = load_or_build_bank(tmp_path, **kwargs)
    again = load_or_build_bank(tmp_path, **kwargs)  # loaded, not rebuilt
    for name in ("shapes", "maps", "self_map"):
        np.testing.assert_array_equal(getattr(disk, name), getattr(mem, name))
        np.testing.assert_array_equal(getattr(again, name), getattr(mem, name))
    assert isinstance(again.shapes, np.memmap) and len(again) == 5 and again.size == (16, 16)
    torch.testing.assert_close(torch.from_numpy(mem.shapes).sum(dim=(-1, -2)), torch.ones(5))
    partial = tmp_path / "partial"
    partial.mkdir()
    np.save(partial / "shapes.npy", mem.shapes)
    with pytest.raises(ValueError, match="not a shape bank"):
        ShapeBank.load(partial)


def test_pairs_on_the_fly_equal_the_direct_solver():
    """Each on-the-fly target equals the linearised solver run from scratch on that pair (float32 maps);
    pairs are fixed by their index, use two distinct shapes and a weight in (0, 1)."""
    from zoo.barycenter_net.bank import LinearizedPairs, load_or_build_bank

    bank = load_or_build_bank(None, num_shapes=6, size=16, reg=2e-2, max_depth=3, seed=5, show_progress=False)
    pairs = LinearizedPairs(bank, 20, seed=1, augment=True)
    for index in range(0, 20, 4):
        i, j, lam = pairs.pair(index)
        assert i != j and 0.0 < lam < 1.0 and pairs.pair(index) == (i, j, lam)
        x, w, t = pairs[index]
        direct = solver_barycenter(x[None], w[None], target="linearized", reg=2e-2)[0]
        torch.testing.assert_close(t, direct, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(w, torch.tensor([lam, 1 - lam], dtype=torch.float32))
        xs, _, ts = pairs[(index, 5)]  # code 5: flip x + transpose
        torch.testing.assert_close(ts, t.flip(-1).transpose(-1, -2))
        torch.testing.assert_close(xs, x.flip(-1).transpose(-1, -2))
    assert len({pairs.pair(k)[:2] for k in range(20)}) > 5  # pairs differ across indices
    with pytest.raises(IndexError):
        pairs.pair(20)
    with pytest.raises(ValueError, match="num_pairs"):
        LinearizedPairs(bank, 0)


def test_torchrun_two_ranks_share_one_cached_bank(tmp_path):
    """``torchrun --nproc_per_node=2`` (Gloo, CPU): rank 0 builds the cached shape bank while rank 1 waits,
    both train on it, and only rank 0 writes the bank, checkpoint and metrics."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, cache = tmp_path / "ddp", tmp_path / "cache"
    args = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
        "-m", "zoo.barycenter_net.train", "--preset", "smoke", "--train.out_dir", str(out),
        "--data.cache_dir", str(cache), "--train.steps", "2", "--train.sample_images", "0",
    ]  # fmt: skip
    run = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["step"] == 2
    banks = [p.name for p in cache.iterdir() if p.name.startswith("bank_")]
    assert len(banks) == 1 and not banks[0].endswith(".tmp")
    steps = [r.split(",")[0] for r in (out / "logs" / "train.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2"]  # only rank 0 logs

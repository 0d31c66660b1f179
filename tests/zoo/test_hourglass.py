"""Tests of the hourglass trainer (zoo/hourglass) and the shared trainer pieces (zoo/common).

What is checked, and against what:

* config: JSON and command-line round trips reproduce the dataclass exactly; bad keys/values raise.
* seeding / sampler: derived seeds are stable and distinct; the rank shards of an epoch are disjoint and
  cover ``world_size * floor(n / world_size)`` indices; a mid-epoch start yields exactly the suffix.
* checkpoints: a ``weights_only=True`` round trip restores model, Adam, plateau scheduler and RNG
  streams bit-exactly; a stale temporary file from a killed write does not affect loading.
* geometry: ``warp_images`` moves image content exactly where the matrix moves the landmarks (the
  warped Gaussian blob equals a blob rendered directly at ``M p``; reference: ``gaussian_heatmaps``);
  ``random_similarity`` draws similarities within the configured ranges (hypothesis).
* model: shapes, coordinate maps, and decoding of ideal Gaussian heatmaps recovers the landmarks.
* training: a CPU smoke run (2 steps + evaluation, checkpoint written) and a resume that reproduces
  the uninterrupted run's weights bit-exactly; ELT mode runs one step on labelled + unlabelled images.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Literal

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wbaug.landmarks import gaussian_heatmaps, soft_argmax
from zoo.common import (
    CheckpointManager,
    MetricLogger,
    ShardedEpochSampler,
    config_from_dict,
    config_to_dict,
    derive_seed,
    load_checkpoint,
    load_config,
    make_generator,
    parse_config,
    save_checkpoint,
    save_config,
)
from zoo.hourglass.config import HourglassConfig, smoke_config
from zoo.hourglass.data import random_similarity, sample_to_tensors, warp_images
from zoo.hourglass.model import StackedHourglass, heatmap_to_image, image_to_heatmap
from zoo.hourglass.train import heatmap_loss


# ---------------------------------------------------------------------------------------- config
@dataclass
class _Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    steps: int = 10
    name: str | None = None
    mode: Literal["a", "b"] = "a"
    flag: bool = False


def test_config_cli_and_json_round_trip(tmp_path):
    """CLI strings are parsed by annotation (no eval) and survive a JSON round trip unchanged."""
    argv = [
        "--inner.lr",
        "3e-4",
        "--inner.betas",
        "0.5,0.9",
        "--name",
        "none",
        "--mode",
        "b",
        "--flag",
        "yes",
    ]
    cfg, _ = parse_config(_Outer, argv)
    assert cfg == _Outer(inner=_Inner(lr=3e-4, betas=(0.5, 0.9)), name=None, mode="b", flag=True)
    save_config(cfg, tmp_path / "c.json")
    assert load_config(_Outer, tmp_path / "c.json") == cfg
    assert json.loads((tmp_path / "c.json").read_text())["inner"]["betas"] == [0.5, 0.9]
    # --config file first, flags override it
    cfg2, _ = parse_config(_Outer, ["--config", str(tmp_path / "c.json"), "--steps", "7"])
    assert cfg2.steps == 7 and cfg2.inner.lr == 3e-4


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown config keys"):
        config_from_dict(_Outer, {"stepz": 3})
    with pytest.raises(TypeError, match="steps"):
        config_from_dict(_Outer, {"steps": "3"})
    with pytest.raises(ValueError, match="mode"):
        config_from_dict(_Outer, {"mode": "c"})
    with pytest.raises(SystemExit):
        parse_config(_Outer, ["--nope", "1"])
    with pytest.raises(ValueError, match="flag"):
        parse_config(_Outer, ["--flag", "maybe"])


def test_hourglass_config_round_trip():
    cfg = smoke_config("x")
    cfg.aug.barycentric = True
    cfg.elt.enabled = True
    assert config_from_dict(HourglassConfig, config_to_dict(cfg)) == cfg
    assert cfg.mode_name == "barycentric+elt"


# ----------------------------------------------------------------------------- seeding / sampler
def test_derive_seed_stable_and_distinct():
    assert derive_seed(0, "data", 1) == derive_seed(0, "data", 1)
    seeds = {derive_seed(0, "data", r) for r in range(64)}
    assert len(seeds) == 64
    assert derive_seed(1, "a") != derive_seed("1", "a")  # ints and strings are different keys
    with pytest.raises(TypeError, match="keys"):
        derive_seed(1.5)


@given(n=st.integers(2, 60), world=st.integers(1, 4), bs=st.integers(1, 5), epoch=st.integers(0, 5))
def test_sharded_sampler_partitions_and_resumes(n, world, bs, epoch):
    """Ranks get disjoint equal-size shards of one permutation; a mid-epoch start yields the suffix."""
    if n < world:
        return
    shards = []
    for r in range(world):
        s = ShardedEpochSampler(n, batch_size=bs, rank=r, world_size=world, seed=3)
        s.set_epoch(epoch)
        shards.append([i for i, _ in s])
        assert len(shards[-1]) == len(s) == n // world
    flat = [i for sh in shards for i in sh]
    assert len(set(flat)) == len(flat) == world * (n // world)
    s = ShardedEpochSampler(n, batch_size=bs, rank=0, world_size=world, seed=3)
    s.set_epoch(epoch, start_batch=1)
    assert [i for i, _ in s] == shards[0][bs:]
    # per-sample seeds depend on (seed, epoch, index) only
    s.set_epoch(epoch)
    assert all(seed == derive_seed(3, "sample", epoch, i) for i, seed in s)


# ------------------------------------------------------------------------------------ checkpoint
def test_checkpoint_round_trip_weights_only(tmp_path):
    """Model, Adam, plateau scheduler and RNG streams are restored exactly from a weights_only load."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    for v in (1.0, 2.0, 3.0):
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        sched.step(v)
    g = make_generator(11)
    torch.rand(3, generator=g)
    save_checkpoint(
        tmp_path / "c.pt", model=model, step=3, optimizer=opt, scheduler=sched, config={"a": 1},
        generators={"loader": g}, extra={"best": 0.5},
    )  # fmt: skip
    expect_g, expect_global = torch.rand(4, generator=g), torch.rand(4)
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)  # plain data only
    assert ckpt["step"] == 3 and ckpt["config"] == {"a": 1} and ckpt["extra"] == {"best": 0.5}

    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt2 = torch.optim.Adam(model2.parameters(), lr=1.0)
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, patience=0)
    g2 = make_generator(999)
    load_checkpoint(
        tmp_path / "c.pt", model=model2, optimizer=opt2, scheduler=sched2, generators={"loader": g2}
    )
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert sched2.state_dict()["num_bad_epochs"] == sched.state_dict()["num_bad_epochs"]
    torch.testing.assert_close(torch.rand(4, generator=g2), expect_g, rtol=0, atol=0)
    torch.testing.assert_close(torch.rand(4), expect_global, rtol=0, atol=0)


def test_checkpoint_manager_keeps_last_and_survives_torn_write(tmp_path):
    model = torch.nn.Linear(2, 2)
    mgr = CheckpointManager(tmp_path, keep=2)
    for step in (5, 10, 15):
        mgr.save(step=step, model=model)
    assert [s for s, _ in mgr.numbered()] == [10, 15]
    # a killed writer leaves only a hidden temporary file; the last complete checkpoint still loads
    (tmp_path / ".last.pt.tmp12345").write_bytes(b"\x00garbage")
    assert load_checkpoint(mgr.latest(), model=model)["step"] == 15
    with pytest.raises(ValueError, match="step"):
        mgr.save(step=-1, model=model)


def test_metric_logger_csv_and_resume_truncation(tmp_path):
    log = MetricLogger(tmp_path, tensorboard=True)
    for step in (1, 2, 3):
        log.log(step, {"loss": 1.0 / step})
    log.log(3, {"loss": 0.2, "lr": 1e-3})  # a new column extends the header
    log.close()
    rows = MetricLogger(tmp_path, tensorboard=False, resume_step=2).read("train")
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert set(rows[0]) == {"step", "loss", "lr"}
    assert any(p.name.startswith("events") for p in (tmp_path / "tb").iterdir())


# -------------------------------------------------------------------------------------- geometry
@given(x=st.floats(14, 49), y=st.floats(14, 49), seed=st.integers(0, 2**31 - 1), scale=st.floats(0, 0.2))
def test_warp_moves_content_with_landmarks(x, y, seed, scale):
    """Warping a blob rendered at p gives the blob rendered at M p (pixel centres at integers)."""
    size, sigma = 64, 2.5
    p = torch.tensor([[[x, y]]], dtype=torch.float64)
    m = random_similarity(1, size, scale=scale, rotate=math.pi / 12, translate=0.03,
                          generator=make_generator(seed), dtype=torch.float64)  # fmt: skip
    q = p @ m[:, :2, :2].transpose(1, 2) + m[:, None, :2, 2]
    blob = gaussian_heatmaps(p, (size, size), sigma)
    warped = warp_images(blob, m, size)
    expected = gaussian_heatmaps(q, (size, size), sigma * torch.sqrt(torch.det(m[0, :2, :2])).item())
    # bilinear interpolation error of a σ = 2.5 px blob is < 0.05; a half-pixel offset would give ~0.12
    torch.testing.assert_close(warped, expected, atol=0.05, rtol=0)
    torch.testing.assert_close(soft_argmax(warped, normalize="sum"), q, atol=0.03, rtol=0)


@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0, 0.3), rot=st.floats(0, 1.5), tr=st.floats(0, 0.2))
def test_random_similarity_ranges(seed, scale, rot, tr):
    """Each matrix is s·R(θ) plus a translation with |s-1| <= scale, |θ| <= rot, and (without translation)
    it fixes the canvas centre."""
    size = 64
    m = random_similarity(16, size, scale=scale, rotate=rot, translate=tr, generator=make_generator(seed),
                          dtype=torch.float64)  # fmt: skip
    a = m[:, :2, :2]
    s = torch.sqrt(torch.det(a))
    theta = torch.atan2(a[:, 1, 0], a[:, 0, 0])
    torch.testing.assert_close(a[:, 0, 0], a[:, 1, 1])
    torch.testing.assert_close(a[:, 0, 1], -a[:, 1, 0])
    assert bool(((s - 1).abs() <= scale + 1e-9).all()) and bool((theta.abs() <= rot + 1e-9).all())
    c = torch.full((16, 2), (size - 1) / 2, dtype=torch.float64)
    shift = (a @ c.unsqueeze(-1)).squeeze(-1) + m[:, :2, 2] - c
    assert bool((shift.abs() <= tr * size + 1e-9).all())
    m0 = random_similarity(
        4, size, scale=scale, rotate=rot, generator=make_generator(seed), dtype=torch.float64
    )
    c4 = c[:4]
    torch.testing.assert_close((m0[:, :2, :2] @ c4.unsqueeze(-1)).squeeze(-1) + m0[:, :2, 2], c4)


# ----------------------------------------------------------------------------------------- model
def test_model_shapes_and_decoding():
    """Decoding ideal Gaussian heatmaps (reference renderer) returns the landmarks in image pixels."""
    net = StackedHourglass(5, stacks=2, width=16, depth=2).eval()
    heat = net(torch.rand(2, 3, 64, 64))
    assert heat.shape == (2, 2, 5, 16, 16)
    pts = torch.rand(2, 5, 2, generator=make_generator(0)) * 40 + 12
    hm = gaussian_heatmaps(image_to_heatmap(pts, 4), (16, 16), 1.5)
    torch.testing.assert_close(net.decode(hm), pts, atol=1e-3, rtol=0)
    torch.testing.assert_close(net.decode(hm, soft=True, temperature=0.1), pts, atol=0.4, rtol=0)
    torch.testing.assert_close(heatmap_to_image(image_to_heatmap(pts, 4), 4), pts)
    # heatmap pixel j covers image pixels 4j..4j+3, whose centre is 4j + 1.5
    torch.testing.assert_close(heatmap_to_image(torch.tensor([2.0]), 4), torch.tensor([9.5]))
    assert float(heatmap_loss(hm.unsqueeze(1), pts, stride=4, sigma=1.5)) < 1e-10
    with pytest.raises(ValueError, match="divisible"):
        net(torch.rand(1, 3, 60, 60))
    with pytest.raises(ValueError, match="heatmap_stride"):
        StackedHourglass(5, heatmap_stride=3)


def test_timm_backbone_stem():
    """The timm stem (random init, nothing downloaded) yields the same heatmap geometry."""
    pytest.importorskip("timm")
    net = StackedHourglass(5, stacks=1, width=16, depth=2, backbone="resnet18")
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 1, 5, 16, 16)
    with pytest.raises(ValueError, match="reductions"):
        StackedHourglass(5, width=16, depth=2, backbone="resnet18", heatmap_stride=1)


# ------------------------------------------------------------------------------------ evaluation
def test_evaluate_predictions_matches_numpy():
    """NME (outer-eye-corner normalised), NME-X (mean of the worst (100-X) %), AUC and FR re-derived in
    NumPy; subsets are selected by attribute flags."""
    import numpy as np

    from zoo.hourglass.evaluate import evaluate_predictions, markdown_table, subset_metrics

    g = make_generator(4)
    target = torch.rand(200, 68, 2, generator=g, dtype=torch.float64) * 50 + 7
    pred = (
        target
        + torch.randn(200, 68, 2, generator=g, dtype=torch.float64)
        * torch.linspace(0.1, 3, 200)[:, None, None]
    )
    out = evaluate_predictions(pred, target, "ibug68", threshold=0.08)
    t, p = target.numpy(), pred.numpy()
    iod = np.linalg.norm(t[:, 36] - t[:, 45], axis=-1)
    per = np.linalg.norm(p - t, axis=-1).mean(-1) / iod
    worst = np.sort(per)[::-1]
    expect = {
        "nme": per.mean(),
        "nme_90": worst[:20].mean(),
        "nme_95": worst[:10].mean(),
        "nme_99": worst[:2].mean(),
        "auc": np.clip(1 - per / 0.08, 0, None).mean(),
        "fr": (per > 0.08).mean(),
        "count": 200.0,
    }
    torch.testing.assert_close(
        torch.tensor([out[k] for k in expect], dtype=torch.float64), torch.tensor(list(expect.values()))
    )
    attrs = torch.zeros(200, 1)
    attrs[150:, 0] = 1
    table = subset_metrics(pred, target, attrs, ["pose"], "ibug68")
    torch.testing.assert_close(
        torch.tensor(table["pose"]["nme"], dtype=torch.float64), torch.tensor(per[150:].mean())
    )
    md = markdown_table(table)
    assert md.splitlines()[0].startswith("| subset | nme |") and "| pose |" in md


def test_eval_set_synthetic_large_pose_subset():
    """The synthetic faces' ``large_pose`` flag is |yaw| > 30° from the dataset's own pose metadata."""
    from zoo.hourglass.config import DataConfig
    from zoo.hourglass.data import EvalSet, build_splits

    splits = build_splits(DataConfig(image_size=64, num_train=4, num_test=40))
    es = EvalSet(splits.test_dataset, splits.test, 64, native=True)
    assert es.attribute_names == ["large_pose"]
    flags = torch.stack([es[i]["attributes"][0] for i in range(len(es))])
    yaw = torch.tensor([splits.test_dataset[j]["meta"]["yaw"] for j in splits.test])
    torch.testing.assert_close(flags, (yaw.abs() > math.radians(30)).float())


# -------------------------------------------------------------------------------------- training
def _tiny(tmp_path, name, **overrides):
    cfg = smoke_config(str(tmp_path / name))
    cfg.train.tensorboard = False
    for key, value in overrides.items():
        section, attr = key.split("__")
        setattr(getattr(cfg, section), attr, value)
    return cfg


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_smoke_train_evaluate_checkpoint_resume(tmp_path):
    """Two steps + evaluation + checkpoint; resuming to step 3 equals an uninterrupted 3-step run."""
    from zoo.hourglass.train import train

    cfg = _tiny(tmp_path, "a")
    result = train(cfg)
    out = tmp_path / "a"
    assert result["step"] == 2 and math.isfinite(result["nme"])
    assert (out / "checkpoints" / "last.pt").exists() and (out / "config.json").exists()
    assert list((out / "samples").glob("*.png"))
    rows = (out / "logs" / "train.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3
    assert json.loads((out / "metrics.json").read_text())["step"] == 2

    cfg.train.steps = 3
    cfg.train.sample_images = 0  # figures do not touch the weights; skip them to keep the test fast
    resumed = train(cfg, resume=True)
    straight = train(_tiny(tmp_path, "b", train__steps=3, train__sample_images=0))
    assert resumed["step"] == straight["step"] == 3
    for (k, a), b in zip(_weights(out / "checkpoints" / "last.pt").items(),
                         _weights(tmp_path / "b" / "checkpoints" / "last.pt").values()):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"parameter {k} differs after resume")
    assert [int(r.split(",")[0]) for r in (out / "logs" / "train.csv").read_text().splitlines()[1:]] == [
        1,
        2,
        3,
    ]


def test_elt_and_classical_modes_run(tmp_path):
    """ELT (labelled + unlabelled two-view batches) with classical augmentation trains one step."""
    from zoo.hourglass.train import train

    cfg = _tiny(tmp_path, "elt", train__steps=1, data__label_budget=8)
    cfg.elt.enabled = True
    cfg.aug.classical = True
    cfg.aug.classical_p = 1.0
    result = train(cfg)
    rows = (tmp_path / "elt" / "logs" / "train.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    l_elt = float(values[header.index("l_elt")])
    assert result["mode"] == "classical+elt" and math.isfinite(l_elt) and l_elt > 0


def test_barycentric_warp_follows_landmarks(tmp_path):
    """The paired barycentric warp returns new landmarks (a barycenter of a clique around the sample,
    hence inside the coordinate-wise range of the fitted sets) and moves image content with them: the
    peak of a Gaussian blob rendered at an old landmark is found at the new landmark (a warp that left
    the image alone would read ~0 there whenever the landmark moved by more than 3 px)."""
    from wbaug.transforms import apply_barycentric, draw_barycentric_params
    from zoo.hourglass.augment import build_barycentric_sampler
    from zoo.hourglass.data import build_splits, canvas_landmarks

    cfg = _tiny(tmp_path, "bc", data__num_train=24, data__label_budget=12)
    cfg.aug.barycentric = True
    splits = build_splits(cfg.data)
    sampler = build_barycentric_sampler(cfg, splits)
    lm = canvas_landmarks(splits, splits.labelled, 64)
    fitted = sampler.landmarks_
    torch.testing.assert_close(fitted, lm)
    moved = 0
    for pos in range(6):
        for k in (8, 30, 36):  # chin, nose tip, eye corner
            blob = gaussian_heatmaps(lm[pos, k : k + 1][None], (64, 64), 1.5)[0]  # (1, 64, 64), peak 1
            draw = draw_barycentric_params(
                sampler, lm[pos], paired=True, canvas_size=(64, 64), generator=make_generator(pos)
            )
            image, new = apply_barycentric(blob.expand(3, -1, -1).clone(), draw), draw.landmarks[0]
            assert new.shape == (68, 2)
            assert bool((new >= fitted.amin(0) - 1e-4).all() and (new <= fitted.amax(0) + 1e-4).all())
            # the TPS interpolates: output point new[k] samples the input at old[k], the blob's peak
            grid = ((2 * new[k] + 1) / 64 - 1).view(1, 1, 1, 2)
            value = torch.nn.functional.grid_sample(image[None, :1], grid, align_corners=False).item()
            assert value > 0.75, (pos, k, value)
            if float((new[k] - lm[pos, k]).norm()) > 3.0:  # the blob has really moved with its landmark
                moved += 1
    assert moved >= 3


def test_barycentric_mode_trains(tmp_path):
    from zoo.hourglass.train import train

    cfg = _tiny(tmp_path, "bct", train__steps=1, data__label_budget=12)
    cfg.aug.barycentric = True
    cfg.aug.barycentric_p = 1.0
    assert train(cfg)["mode"] == "barycentric"


def test_cli_print_config(capsys):
    from zoo.hourglass.train import main

    main(["--print-config", "--model.stacks", "3", "--aug.classical", "true"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["stacks"] == 3 and printed["aug"]["classical"] is True
    assert os.environ.get("WORLD_SIZE", "1") == "1"


def test_trains_on_a_file_reader(tmp_path):
    """The trainer runs on a wbaug file reader (``LandmarkFolder`` with train/ and test/ sub-folders of
    PNG + .pts files): faces are cropped from their landmark box onto the canvas."""
    from PIL import Image

    from wbaug.datasets import SyntheticFaces, write_pts
    from zoo.hourglass.train import train

    faces = SyntheticFaces(12, image_size=96, seed=5)
    for i in range(12):
        split = "train" if i < 8 else "test"
        (tmp_path / "faces" / split).mkdir(parents=True, exist_ok=True)
        image, landmarks, _ = sample_to_tensors(faces[i])
        pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(tmp_path / "faces" / split / f"f{i}.png")
        write_pts(tmp_path / "faces" / split / f"f{i}.pts", landmarks)
    cfg = _tiny(
        tmp_path, "folder", train__steps=1, data__dataset="folder", data__root=str(tmp_path / "faces")
    )
    result = train(cfg)
    assert result["count"] == 4 and math.isfinite(result["nme"])


def test_torchrun_ddp_two_ranks_cpu(tmp_path, torchrun):
    """``torchrun --nproc_per_node=2`` on CPU (Gloo): the CLI trains with DDP + ELT and rank 0 alone
    writes the checkpoint, logs and metrics (rank sharding itself is tested on the sampler above)."""
    out = tmp_path / "ddp"
    args = [
        "-m", "zoo.hourglass.train", "--train.out_dir", str(out), "--data.image_size", "64",
        "--data.num_train", "32", "--data.num_test", "8", "--data.label_budget", "16", "--model.stacks", "1",
        "--model.width", "16", "--model.depth", "2", "--train.steps", "2", "--train.batch_size", "4",
        "--train.eval_every", "2", "--train.ckpt_every", "1", "--train.log_every", "1",
        "--train.progress", "false", "--train.tensorboard", "false", "--train.sample_images", "0",
        "--elt.enabled", "true",
    ]  # fmt: skip
    torchrun(*args, timeout=300)
    assert json.loads((out / "metrics.json").read_text())["step"] == 2
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    steps = [int(r.split(",")[0]) for r in (out / "logs" / "train.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2]  # one row per step: only rank 0 logs

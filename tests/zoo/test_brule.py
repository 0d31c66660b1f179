"""Tests of the BRULÉ trainer (zoo/brule).

What is checked, and against what:

* R_b (as the trainer calls it, on the barycenter of the label budget): zero at the barycenter; for an
  affine image of the barycenter its warp term (c13, the non-affine part of the transport) is zero, so
  R_b is exactly the translation + linear cost, and R_b with (c11, c12, c13) = (0, 0, 1) vanishes; a
  non-affine perturbation makes the warp term positive. (With the paper's c11 = c12 = 1 an affine image
  costs its translation and linear parts: R_b is zero only at the barycenter, §4's formula.)
* every term of Algorithm 2 sends a gradient to the encoder's parameters (each term on its own);
* schedules: R1 on iterations 0, 4, 8, the restore/style block on 0, 5, the encoder step on 0, 3, 6, 9
  (counting wrappers around the functions the loop calls);
* a 3-step smoke run resumed to 6 equals an uninterrupted 6-step run bit for bit (CPU);
* semi-supervised mode never evaluates R_b and does apply the supervised term;
* the random transform g moves heatmaps exactly as it moves the image (affine part vs. the matrix);
* ``python -m zoo.brule.evaluate --json`` writes nme, ot_nme, linear_probe_nme and the barycenter baseline,
  which equal :mod:`wbaug.metrics` recomputed here;
* bad config values raise ``ValueError`` naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import zoo
from wbaug.landmarks import gaussian_heatmaps, soft_argmax
from wbaug.losses import barycenter_regularizer
from zoo.brule import train as brule_train
from zoo.brule.config import LossConfig, smoke_config, validate_config
from zoo.brule.evaluate import main as evaluate_main
from zoo.brule.model import Warp, apply_warp
from zoo.brule.train import build_data, build_model, build_optimizers, encoder_losses, train, train_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(out_dir=None, *, loss=None, **train):
    cfg = smoke_config(str(out_dir) if out_dir is not None else "runs/brule-smoke")
    if train:
        cfg = replace(cfg, train=replace(cfg.train, **train))
    if loss:
        cfg = replace(cfg, loss=replace(cfg.loss, **loss))
    return cfg


@pytest.fixture(scope="module")
def smoke_data():
    return build_data(smoke_config())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("brule-smoke")
    return out, train(_cfg(out))


def _model(cfg, data, seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg, data.num_points, data.barycenter.shape[0])
    model.barycenter.copy_(data.barycenter)
    return model


def _batch(data, n=4):
    return torch.stack([data.images[(i, 0)] for i in range(n)])


def _affine(points, angle, scale, shear, shift):
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    m = scale * rot @ torch.tensor([[1 + shear, shear], [0.0, 1 - shear]])
    centre = points.mean(0)
    return (points - centre) @ m.T.to(points.dtype) + centre + torch.tensor(shift, dtype=points.dtype)


# ------------------------------------------------------------------------------------------ R_b
def test_barycenter_regularizer_on_affine_images_of_the_barycenter(smoke_data, monkeypatch):
    size = smoke_config().model.image_size
    bary = smoke_data.barycenter.double() / size
    assert float(barycenter_regularizer(bary[None], bary)) < 1e-12
    for angle, scale, shear, shift in [(0.05, 1.03, 0.02, (0.03, -0.02)), (-0.04, 0.97, -0.01, (0.0, 0.05))]:
        x = _affine(bary, angle, scale, shear, shift)[None]
        value, terms = barycenter_regularizer(x, bary, return_terms=True)
        assert float(terms[0, 2]) < 1e-12  # the warp (non-affine) part vanishes
        assert float(barycenter_regularizer(x, bary, coefficients=(0, 0, 1))) < 1e-12
        assert float(value) == pytest.approx(float(terms[0, 0] + terms[0, 1]), rel=1e-9)
        assert float(terms[0, 0]) > 0 and float(terms[0, 1]) > 0
    g = torch.Generator().manual_seed(0)
    warped = bary + 0.01 * torch.randn(bary.shape, generator=g, dtype=bary.dtype)
    _, terms = barycenter_regularizer(warped[None], bary, return_terms=True)
    assert float(terms[0, 2]) > 1e-5

    # the trainer's R_b is this function on X_L / S and X_b / S: feed it predictions placed by hand
    cfg = _cfg(loss={"c11": 0.0, "c12": 0.0})
    model = _model(cfg, smoke_data)
    images = _batch(smoke_data)
    affine_pred = _affine(smoke_data.barycenter, 0.05, 1.03, 0.02, (1.0, -0.5)).expand(4, -1, -1)
    real = model.encoder.coordinates
    monkeypatch.setattr(model.encoder, "coordinates", lambda logits: affine_pred + 0 * real(logits))
    assert encoder_losses(model, images, cfg)["barycenter"].item() < 1e-6
    noisy = affine_pred + torch.randn(affine_pred.shape, generator=g)
    monkeypatch.setattr(model.encoder, "coordinates", lambda logits: noisy + 0 * real(logits))
    assert encoder_losses(model, images, cfg)["barycenter"].item() > 1e-5


# ---------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("mode", ["unsupervised", "semi_supervised"])
def test_every_encoder_term_reaches_the_encoder(smoke_data, mode):
    cfg = _cfg(loss={"mode": mode})
    model = _model(cfg, smoke_data, seed=1)
    images = _batch(smoke_data)
    labelled = smoke_data.labelled[(0, 0)]
    lab = (labelled[0][None].expand(4, -1, -1, -1), labelled[1][None].expand(4, -1, -1))
    terms = encoder_losses(model, images, cfg, labelled=lab if mode == "semi_supervised" else None)
    expected = {"geometric", "concentration", "adversarial", "reconstruction", "fake_landmarks"}
    expected |= {"supervised"} if mode == "semi_supervised" else {"barycenter"}
    assert set(terms) - {"total"} == expected
    for name in sorted(expected):
        model.zero_grad(set_to_none=True)
        terms[name].backward(retain_graph=True)
        norm = sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None)
        assert norm > 0 and math.isfinite(norm), f"{name} does not reach the encoder"


# ---------------------------------------------------------------------------------- schedules
def test_schedules_every_3rd_4th_5th(smoke_data, monkeypatch):
    cfg = _cfg()
    model = _model(cfg, smoke_data, seed=2)
    opts = build_optimizers(model, cfg)
    calls = {"r1": [], "encoder": []}
    real_r1, real_enc = brule_train.r1_penalty, brule_train.encoder_losses

    def r1_counting(*args, **kwargs):
        calls["r1"].append(current)
        return real_r1(*args, **kwargs)

    def enc_counting(*args, **kwargs):
        calls["encoder"].append(current)
        return real_enc(*args, **kwargs)

    monkeypatch.setattr(brule_train, "r1_penalty", r1_counting)
    monkeypatch.setattr(brule_train, "encoder_losses", enc_counting)
    images = _batch(smoke_data)
    restore = []
    for current in range(10):
        out = train_step(model, opts, images, current, cfg)
        if float(out["restore_applied"]):
            assert float(out["restore"]) > 0 and float(out["style"]) > 0
            restore.append(current)
        else:
            assert float(out["restore"]) == 0
        assert (float(out["r1"]) > 0) == (current % 4 == 0)
    assert calls["r1"] == [0, 4, 8]
    assert restore == [0, 5]
    assert calls["encoder"] == [0, 3, 6, 9]
    # D's Adam carries the lazy-regularisation correction for r1_every = 4
    assert opts["d"].param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_d * 4 / 5)


# ------------------------------------------------------------------------------------- resume
def test_resume_equals_uninterrupted_run(tmp_path, smoke_run):
    straight_dir, straight = smoke_run
    train(_cfg(tmp_path, steps=3))
    resumed = train(_cfg(tmp_path), resume=True)
    assert resumed["step"] == straight["step"] == 6
    assert straight["encoder_steps_this_run"] == 2 and resumed["encoder_steps_this_run"] == 1  # 0, 3 | 3
    a = torch.load(straight_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=f"{k} differs")
    assert resumed["linear_probe_nme"] == straight["linear_probe_nme"]
    rows = zoo.common.MetricLogger(tmp_path / "logs", tensorboard=False).read("train")
    assert [int(float(r["step"])) for r in rows] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------ semi-supervised
def test_semi_supervised_never_applies_barycenter(tmp_path, monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return barycenter_regularizer(*args, **kwargs)

    monkeypatch.setattr(brule_train, "barycenter_regularizer", counting)
    result = train(_cfg(tmp_path, loss={"mode": "semi_supervised"}, steps=4, sample_images=0))
    assert calls == []
    rows = zoo.common.MetricLogger(tmp_path / "logs", tensorboard=False).read("train")
    applied = [r for r in rows if float(r["encoder_applied"])]
    assert len(applied) == 2 and all(float(r["enc_supervised"]) > 0 for r in applied)
    assert all(float(r["enc_barycenter"]) == 0 for r in rows)
    assert result["mode"] == "semi_supervised"


# -------------------------------------------------------------------------------------------- g
def test_warp_moves_heatmaps_like_the_image_geometry():
    """Affine g (no elastic part): a Gaussian at p, warped, peaks at the forward image of p; the same
    continuous map is applied at every resolution."""
    angle, s, t = 0.2, 1.1, torch.tensor([0.1, -0.05])
    a = s * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    a_inv = torch.linalg.inv(a)
    warp = Warp(torch.cat([a_inv, -(a_inv @ t[:, None])], -1)[None], torch.zeros(1, 2, 4, 4))
    for size in (16, 32):
        p = torch.tensor([[[0.4 * size, 0.55 * size]]])
        heat = gaussian_heatmaps(p, size, size / 16)
        moved = soft_argmax(apply_warp(heat, warp), normalize="sum")
        u = (2 * p + 1) / size - 1  # normalised coordinates (align_corners=False)
        expected = ((u @ a.T + t) + 1) * size / 2 - 0.5
        torch.testing.assert_close(moved, expected, atol=0.02 * size / 16, rtol=0)


# ------------------------------------------------------------------------------------- evaluate
def test_evaluate_cli_writes_json(smoke_run, smoke_data, tmp_path):
    from wbaug import metrics

    out, result = smoke_run
    path = tmp_path / "eval.json"
    evaluate_main(
        ["--checkpoint", str(out / "checkpoints" / "last.pt"), "--json", str(path), "--device", "cpu"]
    )
    got = json.loads(path.read_text())
    for key in (
        "nme",
        "ot_nme",
        "linear_probe_nme",
        "baseline_nme",
        "baseline_ot_nme",
        "baseline_linear_probe_nme",
        "stability",
        "count",
        "step",
    ):
        assert key in got, key
    assert got["step"] == 6
    assert got["linear_probe_nme"] == pytest.approx(result["linear_probe_nme"])
    target = torch.stack([smoke_data.test[i]["landmarks"] for i in range(len(smoke_data.test))]).double()
    bary = smoke_data.barycenter.double().expand(target.shape[0], -1, -1)
    kw = {"normalization": "inter_ocular", "layout": "ibug68"}
    assert got["baseline_ot_nme"] == pytest.approx(float(metrics.ot_nme(bary, target, **kw)))
    mean_shape = smoke_data.budget.double().mean(0).expand_as(target)  # a constant probe input
    assert got["baseline_linear_probe_nme"] == pytest.approx(float(metrics.nme(mean_shape, target, **kw)))
    assert got["ot_nme"] <= got["nme"] + 1e-12
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        evaluate_main(["--checkpoint", str(tmp_path / "missing.pt")])


def test_smoke_outputs(smoke_run):
    out, result = smoke_run
    assert (out / "config.json").exists() and (out / "metrics.json").exists()
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [
        "fakes_same_landmarks_00000006.png",
        "real_predicted_00000006.png",
    ]
    rows = zoo.common.MetricLogger(out / "logs", tensorboard=False).read("train")
    assert all(math.isfinite(float(r["enc_total"])) and math.isfinite(float(r["d_loss"])) for r in rows)
    assert result["iterations_per_s"] > 0


def test_barycenter_from_file(tmp_path, smoke_data):
    path = tmp_path / "bary.npy"
    np.save(path, (smoke_data.barycenter[:20] + 1).numpy())
    cfg = smoke_config()
    cfg.data.barycenter_file = str(path)
    data = build_data(cfg)
    torch.testing.assert_close(data.barycenter, smoke_data.barycenter[:20] + 1)
    model = build_model(cfg, data.num_points, data.barycenter.shape[0])
    assert model.barycenter.shape == (20, 2)  # N_b may differ from K (R_b is order- and size-free)


# --------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "section,field,value,match",
    [
        ("model", "image_size", 48, "model.image_size"),
        ("model", "sigma", 0.0, "model.sigma"),
        ("model", "hg_stride", 3, "model.hg_stride"),
        ("model", "hg_depth", 5, "model.hg_depth"),
        ("data", "label_budget", 100, "data.label_budget"),
        ("data", "barycenter_file", "/nonexistent/bary.npy", "data.barycenter_file"),
        ("loss", "r1_every", 0, "loss.r1_every"),
        ("loss", "encoder_every", 0, "loss.encoder_every"),
        ("loss", "c5", -1.0, "loss.c5"),
        ("loss", "c7", float("nan"), "loss.c7"),
        ("loss", "g_scale", 1.5, "loss.g_scale"),
        ("optim", "lr_l", 0.0, "optim.lr_l"),
        ("optim", "betas", (0.0, 1.0), "optim.betas"),
        ("train", "batch_size", 0, "train.batch_size"),
    ],
)
def test_bad_config_values_name_the_field(section, field, value, match):
    cfg = smoke_config()
    bad = replace(cfg, **{section: replace(getattr(cfg, section), **{field: value})})
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        validate_config(bad)


def test_bad_mode_combinations_and_cli(tmp_path):
    cfg = replace(smoke_config(), loss=LossConfig(mode="semi_supervised"))
    cfg.train.batch_size = 8  # more than the 6 labelled images
    with pytest.raises(ValueError, match=r"train\.batch_size"):
        validate_config(cfg)
    cfg.train.batch_size = 4
    cfg.model.num_landmarks = 10
    with pytest.raises(ValueError, match=r"model\.num_landmarks"):
        build_data(cfg)
    with pytest.raises(ValueError, match=r"loss\.mode"):
        brule_train.main(["--preset", "smoke", "--train.out_dir", str(tmp_path), "--loss.mode", "weak"])
    with pytest.raises(ValueError, match=r"loss\.c9"):
        brule_train.main(["--preset", "smoke", "--train.out_dir", str(tmp_path), "--loss.c9", "-3"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_step_cuda_bf16(smoke_data):
    """bf16 autocast on CUDA: one iteration of every block runs and gives finite losses."""
    cfg = _cfg()
    model = _model(cfg, smoke_data).cuda()
    opts = build_optimizers(model, cfg)
    out = train_step(model, opts, _batch(smoke_data).cuda(), 0, cfg, amp=True)
    assert all(math.isfinite(float(v)) for v in out.values())
    assert float(out["r1_applied"]) == float(out["restore_applied"]) == float(out["encoder_applied"]) == 1


def test_barycenter_file_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save(torch.zeros(5, 3), bad)
    cfg = smoke_config()
    cfg.data.barycenter_file = str(bad)
    with pytest.raises(ValueError, match="data.barycenter_file"):
        build_data(cfg)
    good = tmp_path / "good.pt"
    torch.save(torch.rand(7, 2) * 31, good)
    cfg.data.barycenter_file = str(good)
    assert build_data(cfg).barycenter.shape == (7, 2)


def test_torchrun_two_ranks_cpu(tmp_path, torchrun):
    """``torchrun --nproc_per_node=2`` on CPU (Gloo): the smoke preset trains with its gradients averaged
    across ranks, and rank 0 alone writes the checkpoint, logs and metrics."""
    out = tmp_path / "ddp"
    torchrun("-m", "zoo.brule.train", "--preset", "smoke", "--train.out_dir", out, timeout=300)
    assert json.loads((out / "metrics.json").read_text())["step"] == 6
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 6
    steps = [int(r["step"]) for r in zoo.common.MetricLogger(out / "logs", tensorboard=False).read("train")]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # one row per logged step: only rank 0 logs

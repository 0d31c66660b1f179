"""Tests of the unpaired landmark CycleGAN trainer (zoo/cyclegan).

What is checked, and against what:

* R1 runs exactly on iterations ``≡ 0 (mod r1_every)`` (a counting wrapper around ``r1_penalty``), and
  the reported R1 is zero elsewhere;
* gradients: the image cycle reaches G_I, G_L and S; the landmark cycle reaches G_I, S_o and G_L (and,
  as Algorithm 1 says, not S); one full ``train_step`` changes every network;
* EMA: after training the shadow G_L differs from the live one, and evaluation uses the shadow
  (scrambling the live weights does not change the metrics, scrambling the shadow does);
* a smoke run of 2 steps resumed to 4 equals an uninterrupted 4-step run bit for bit (CPU);
* ``python -m zoo.cyclegan.evaluate --json`` writes ``nme``, ``ot_nme`` and the mean-shape baselines,
  which equal :mod:`wbaug.metrics` on the mean of the label-budget landmarks;
* bad config values raise ``ValueError`` naming the field; the optional perceptual / identity networks
  load only from user-given TorchScript files (clear error otherwise) and their gradients flow.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import zoo
from zoo.common.gan import PyramidStyleEncoder
from zoo.cyclegan import train as cg_train
from zoo.cyclegan.config import LossConfig, smoke_config, validate_config
from zoo.cyclegan.evaluate import evaluate_model
from zoo.cyclegan.evaluate import main as evaluate_main
from zoo.cyclegan.train import (
    ImageCycleLoss,
    build_data,
    build_model,
    build_optimizers,
    image_cycle_loss,
    landmark_cycle_loss,
    train,
    train_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(out_dir, **train):
    cfg = smoke_config(str(out_dir))
    return replace(cfg, train=replace(cfg.train, **train)) if train else cfg


@pytest.fixture(scope="module")
def smoke_data():
    return build_data(smoke_config())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cg-smoke")
    result = train(_cfg(out))
    return out, result


def _grad_norms(modules):
    return {
        name: sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None)
        for name, m in modules.items()
    }


def test_r1_only_on_schedule(monkeypatch, smoke_data):
    torch.manual_seed(0)
    cfg = smoke_config()
    model = build_model(cfg, smoke_data.num_landmarks)
    opts = build_optimizers(model, cfg)
    loss = ImageCycleLoss(cfg)
    calls = []
    real_r1 = cg_train.r1_penalty

    def counting(logits, inputs):
        calls.append(current)
        return real_r1(logits, inputs)

    monkeypatch.setattr(cg_train, "r1_penalty", counting)
    images = torch.stack([smoke_data.images[(i, 0)] for i in range(4)])
    landmarks = torch.stack([smoke_data.landmarks[(i, 0)] for i in range(4)])
    r1_values = {}
    for current in range(6):
        r1_values[current] = float(train_step(model, opts, images, landmarks, current, cfg, loss)["r1"])
    assert calls == [0, 0, 4, 4]  # D_I and D_L on iterations 0 and 4 only
    assert r1_values[0] > 0 and r1_values[4] > 0
    assert all(r1_values[s] == 0 for s in (1, 2, 3, 5))
    # D's Adam carries the lazy-regularisation correction for r1_every = 4
    assert opts["d"].param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_d * 4 / 5)


def test_gradients_reach_networks_through_both_cycles(smoke_data):
    torch.manual_seed(1)
    cfg = smoke_config()
    model = build_model(cfg, smoke_data.num_landmarks)
    images = torch.stack([smoke_data.images[(i, 0)] for i in range(4)])
    landmarks = torch.stack([smoke_data.landmarks[(i, 0)] for i in range(4)])
    nets = {
        "G_I": model.generator,
        "S_o": model.mapping,
        "S": model.style_encoder,
        "G_L": model.landmark_encoder,
    }
    # image cycle: I -> G_L -> L(X_F) -> G_I(., S(gI)) -> I_R
    fake_heat = model.heatmaps(model.landmark_encoder(images))
    image_cycle_loss(model, images, fake_heat, ImageCycleLoss(cfg), cfg).backward()
    norms = _grad_norms(nets)
    assert norms["G_I"] > 0 and norms["G_L"] > 0 and norms["S"] > 0
    assert norms["S_o"] == 0
    model.zero_grad(set_to_none=True)
    # landmark cycle: X -> L -> G_I(., S_o(z)) -> I_F -> G_L -> X_R
    heat = model.heatmaps(landmarks)
    fake = model.generator(heat, model.styles(torch.randn(4, model.z_dim)))
    landmark_cycle_loss(model, model.landmark_encoder(fake), landmarks, heat, cfg)["total"].backward()
    norms = _grad_norms(nets)
    assert norms["G_I"] > 0 and norms["S_o"] > 0 and norms["G_L"] > 0
    assert norms["S"] == 0
    # one full iteration updates every trained network
    model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_step(model, build_optimizers(model, cfg), images, landmarks, 0, cfg, ImageCycleLoss(cfg))
    for prefix in (
        "generator.",
        "mapping.",
        "style_encoder.",
        "landmark_encoder.",
        "d_image.",
        "d_landmarks.",
    ):
        changed = [
            k for k in before if k.startswith(prefix) and not torch.equal(before[k], model.state_dict()[k])
        ]
        assert changed, f"{prefix} did not change"


def _touched(module) -> bool:
    return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())


def test_psp_style_encoder_reads_its_pyramid_level_and_trains(smoke_data):
    torch.manual_seed(2)
    enc = PyramidStyleEncoder(64, 16, width=8, max_width=16)
    assert enc.split == (3, 4, 3) and enc.num_latents == 10
    x = torch.randn(2, 3, 64, 64)
    assert enc(x).shape == (2, 10, 16)
    # vector i has its own head; coarse vectors read no lateral, medium the S/8 one, fine both
    for i, laterals in ((0, []), (2, []), (3, [1]), (6, [1]), (7, [0, 1]), (9, [0, 1])):
        enc.zero_grad(set_to_none=True)
        enc(x)[:, i].sum().backward()
        assert [j for j, h in enumerate(enc.heads) if _touched(h)] == [i]
        assert [j for j, lat in enumerate(enc.lateral) if _touched(lat)] == laterals
        assert _touched(enc.stem)
    with pytest.raises(ValueError, match="size must be a power of two >= 64"):
        PyramidStyleEncoder(32, 16)
    # a full iteration of Algorithm 1 with S = the pSp-style encoder
    cfg = smoke_config()
    cfg = validate_config(replace(cfg, model=replace(cfg.model, style_encoder="psp")))
    model = build_model(cfg, smoke_data.num_landmarks)
    assert isinstance(model.style_encoder, PyramidStyleEncoder)
    images = torch.stack([smoke_data.images[(i, 0)] for i in range(4)])
    landmarks = torch.stack([smoke_data.landmarks[(i, 0)] for i in range(4)])
    before = [p.clone() for p in model.style_encoder.parameters()]
    losses = train_step(model, build_optimizers(model, cfg), images, landmarks, 1, cfg, ImageCycleLoss(cfg))
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.style_encoder.parameters()))


def test_ema_differs_and_evaluation_uses_it(smoke_run, smoke_data):
    out, result = smoke_run
    cfg = smoke_config()
    model = build_model(cfg, smoke_data.num_landmarks)
    zoo.common.load_checkpoint(out / "checkpoints" / "last.pt", model=model, restore_rng=False)
    live = dict(model.landmark_encoder.named_parameters())
    shadow = dict(model.ema["landmark_encoder"].named_parameters())
    assert any(not torch.equal(live[k], shadow[k]) for k in live)
    loader = torch.utils.data.DataLoader(smoke_data.test, batch_size=8)
    metrics = evaluate_model(model, loader, "ibug68")
    assert metrics["nme"] == pytest.approx(result["nme"], abs=1e-9)
    with torch.no_grad():
        for p in model.landmark_encoder.parameters():
            p.normal_()
    assert evaluate_model(model, loader, "ibug68") == metrics  # live weights do not matter
    with torch.no_grad():
        model.ema["landmark_encoder"].head.bias.add_(3.0)
    assert evaluate_model(model, loader, "ibug68")["nme"] != metrics["nme"]


def test_resume_equals_uninterrupted_run(tmp_path, smoke_run):
    straight_dir, straight = smoke_run
    interrupted = _cfg(tmp_path, steps=2)
    train(interrupted)
    resumed = train(_cfg(tmp_path), resume=True)
    assert resumed["step"] == straight["step"] == 4
    # iterations are 0-based: R1 ran at iteration 0 (before the checkpoint at 2: lazy D state restored)
    assert straight["r1_iterations_this_run"] == 1 and resumed["r1_iterations_this_run"] == 0
    a = torch.load(straight_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(
            a["model"][k], b["model"][k], rtol=0, atol=0, msg=f"{k} differs after resume"
        )
    assert resumed["nme"] == straight["nme"]
    rows = zoo.common.MetricLogger(tmp_path / "logs", tensorboard=False).read("train")
    assert [int(float(r["step"])) for r in rows] == [1, 2, 3, 4]


def test_evaluate_cli_writes_json(smoke_run, smoke_data, tmp_path):
    from wbaug import metrics

    out, result = smoke_run
    path = tmp_path / "eval.json"
    evaluate_main(
        ["--checkpoint", str(out / "checkpoints" / "last.pt"), "--json", str(path), "--device", "cpu"]
    )
    got = json.loads(path.read_text())
    for key in ("nme", "ot_nme", "baseline_nme", "baseline_ot_nme", "count", "step"):
        assert key in got
    assert got["step"] == 4 and got["weights"] == "ema"
    assert got["nme"] == pytest.approx(result["nme"])
    target = torch.stack([smoke_data.test[i]["landmarks"] for i in range(len(smoke_data.test))]).double()
    mean_shape = smoke_data.budget.mean(0).double().expand_as(target)
    expected = metrics.nme(mean_shape, target, normalization="inter_ocular", layout="ibug68")
    assert got["baseline_nme"] == pytest.approx(float(expected))
    assert got["ot_nme"] <= got["nme"] + 1e-12  # OT matching can only lower the error
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        evaluate_main(["--checkpoint", str(tmp_path / "missing.pt")])


def test_smoke_outputs(smoke_run):
    out, result = smoke_run
    assert (out / "config.json").exists() and (out / "metrics.json").exists()
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [
        "generated_00000004.png",
        "real_predicted_00000004.png",
    ]
    rows = zoo.common.MetricLogger(out / "logs", tensorboard=False).read("train")
    assert all(float(r["g_total"]) == float(r["g_total"]) for r in rows)  # finite (not NaN)
    assert result["landmark_pool"] == 8 + 16  # budget + barycenters


@pytest.mark.parametrize(
    "section,field,value,match",
    [
        ("model", "image_size", 48, "model.image_size"),
        ("model", "sigma", 0.0, "model.sigma"),
        ("model", "hg_depth", 5, "model.hg_depth"),
        ("model", "style_encoder", "resnet", "model.style_encoder"),
        ("data", "label_budget", 100, "data.label_budget"),
        ("data", "k_neighbors", 8, "data.k_neighbors"),
        ("data", "classical_p", 1.5, "data.classical_p"),
        ("loss", "r1_every", 0, "loss.r1_every"),
        ("loss", "style", -1.0, "loss.style"),
        ("loss", "ssim_window", 4, "loss.ssim_window"),
        ("optim", "lr_d", 0.0, "optim.lr_d"),
        ("optim", "betas", (0.0, 1.0), "optim.betas"),
        ("train", "batch_size", 0, "train.batch_size"),
    ],
)
def test_bad_config_values_name_the_field(section, field, value, match):
    cfg = smoke_config()
    bad = replace(cfg, **{section: replace(getattr(cfg, section), **{field: value})})
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        validate_config(bad)


def test_cli_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="train.steps"):
        cg_train.main(["--preset", "smoke", "--train.out_dir", str(tmp_path), "--train.steps", "many"])
    with pytest.raises(ValueError, match="loss.perceptual_weights"):
        cg_train.main(
            [
                "--preset",
                "smoke",
                "--train.out_dir",
                str(tmp_path),
                "--loss.perceptual_backend",
                "user",
            ]
        )


class _Embed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


class _Distance(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, a, b):
        return (self.conv(a) - self.conv(b)).square().mean((1, 2, 3))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_user_given_perceptual_and_identity_networks(tmp_path):
    """TorchScript (.pt) identity embedder and torch.export (.pt2) perceptual distance, as a user would
    export LPIPS / ArcFace themselves; losses combine with the §6.1 weights and are differentiable."""
    torch.jit.script(_Embed()).save(str(tmp_path / "id.pt"))
    example = (torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    torch.export.save(torch.export.export(_Distance(), example), str(tmp_path / "lpips.pt2"))
    cfg = smoke_config()
    lo = replace(
        cfg.loss,
        perceptual_backend="user",
        perceptual_weights=str(tmp_path / "lpips.pt2"),
        identity_weights=str(tmp_path / "id.pt"),
    )
    cfg = validate_config(replace(cfg, loss=lo))
    loss = ImageCycleLoss(cfg)
    recon = torch.rand(1, 3, 64, 64, requires_grad=True)
    terms = loss(recon * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1)
    assert {"perceptual", "identity", "l1", "total"} <= set(terms)
    assert terms["identity"] > 0 and terms["perceptual"] > 0
    expected = lo.perceptual * terms["perceptual"] + lo.identity * terms["identity"] + lo.l1 * terms["l1"]
    torch.testing.assert_close(terms["total"], expected)
    terms["total"].backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    missing = replace(cfg, loss=replace(lo, identity_weights=str(tmp_path / "nope.pt")))
    with pytest.raises(ValueError, match="loss.identity_weights"):
        validate_config(missing)
    with pytest.raises(ValueError, match="loss.identity_weights"):
        ImageCycleLoss(missing)


def test_registry_and_defaults():
    assert {"landmark_cyclegan", "landmark_cyclegan_smoke"} <= set(zoo.list_models("landmark_cyclegan*"))
    net = zoo.create_model("landmark_cyclegan_smoke", num_landmarks=5)
    assert net.predict(torch.zeros(1, 3, 64, 64)).shape == (1, 5, 2)
    assert net.num_latents == 10  # 2 log2(64) - 2
    # the paper's coefficients are the defaults (§6.1)
    lo = LossConfig()
    assert (lo.image_cycle, lo.perceptual, lo.identity, lo.l1) == (150.0, 0.8, 0.1, 1.0)
    assert (lo.landmark_cycle, lo.heatmap_bce, lo.wasserstein, lo.style, lo.r1_every) == (
        1.5,
        1e4,
        100.0,
        10.0,
        4,
    )


def test_ablation_cells_and_table(tmp_path):
    from zoo.cyclegan.ablation import ROWS, cell_config, format_table

    base = smoke_config()
    cfg = cell_config(base, "baseline + aug + BC", 8, 3, tmp_path)
    assert cfg.data.classical and cfg.data.barycentric and cfg.data.label_budget == 8
    assert cfg.train.seed == cfg.data.data_seed == 3 and cfg.mode_name == "baseline+aug+BC"
    assert not base.data.classical  # the base is not modified
    with pytest.raises(ValueError, match="row must be one of"):
        cell_config(base, "supervised", 8, 0, tmp_path)
    records = [
        {
            "row": "baseline",
            "budget": 8,
            "seed": s,
            "step": 4,
            "nme": v,
            "ot_nme": v / 2,
            "baseline_nme": 0.3,
            "baseline_ot_nme": 0.2,
        }
        for s, v in ((0, 0.10), (1, 0.12))
    ]
    table = format_table(records, [8], list(ROWS))
    assert "| baseline | 11.00 ± 1.41 |" in table  # mean 0.11, sample std 0.01414 in %
    assert "| baseline | 5.50 ± 0.71 |" in table
    assert "| baseline + BC | - |" in table and "| mean shape (reference) | 30.00 ± 0.00 |" in table


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_step_and_modconv_forms():
    """On a GPU: a bf16-autocast iteration gives finite losses and the two modulated-conv forms agree."""
    from zoo.common.gan import modulated_conv2d

    torch.manual_seed(0)
    cfg = smoke_config()
    model = build_model(cfg, 68).cuda()
    images = torch.rand(4, 3, 64, 64, device="cuda") * 2 - 1
    landmarks = torch.rand(4, 68, 2, device="cuda") * 63
    opts, loss = build_optimizers(model, cfg), ImageCycleLoss(cfg).cuda()
    for step in range(2):
        losses = train_step(model, opts, images, landmarks, step, cfg, loss, amp=True)
        assert all(torch.isfinite(v) for v in losses.values())
    x, w, s = (
        torch.randn(8, 32, 16, 16, device="cuda"),
        torch.randn(64, 32, 3, 3, device="cuda"),
        torch.rand(8, 32, device="cuda"),
    )
    torch.testing.assert_close(
        modulated_conv2d(x, w, s, padding=1, fused=True),
        modulated_conv2d(x, w, s, padding=1, fused=False),
        rtol=1e-3,
        atol=1e-3,
    )


def test_classical_landmark_augmentation_is_a_bounded_similarity():
    """data.classical: with probability classical_p a similarity (scale ±10 %, rotation ±π/12) about the
    canvas centre, drawn from the sample seed (replayable); otherwise the landmark set is unchanged."""
    from zoo.cyclegan.train import _LandmarkDomain

    cfg = smoke_config()
    pool = torch.rand(3, 68, 2) * 40 + 12
    on = replace(cfg, data=replace(cfg.data, classical=True, classical_p=1.0))
    off = replace(cfg, data=replace(cfg.data, classical=False))
    for seed in range(5):
        x = _LandmarkDomain(pool, on)[(1, seed)]
        torch.testing.assert_close(x, _LandmarkDomain(pool, on)[(1, seed)], rtol=0, atol=0)
        d_new, d_old = torch.pdist(x), torch.pdist(pool[1])
        ratio = d_new / d_old
        torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio), rtol=1e-4, atol=0)
        assert 0.9 - 1e-5 <= float(ratio.mean()) <= 1.1 + 1e-5
        assert not torch.equal(x, pool[1])
        torch.testing.assert_close(_LandmarkDomain(pool, off)[(1, seed)], pool[1], rtol=0, atol=0)


DDP_WORKER = '''
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from zoo.common.gan import average_gradients, broadcast_parameters
from zoo.cyclegan.config import smoke_config
from zoo.cyclegan.train import ImageCycleLoss, build_model, build_optimizers, train_step

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
# average_gradients is the mean over ranks; a parameter without a gradient keeps none
lin, frozen = nn.Linear(3, 2), nn.Linear(2, 2)
for p in lin.parameters():
    p.grad = torch.full_like(p, float(rank + 1))
average_gradients([lin, frozen])
mean_ok = all(torch.equal(p.grad, torch.full_like(p, 1.5)) for p in lin.parameters())
frozen_ok = all(p.grad is None for p in frozen.parameters())
# Algorithm 1 steps (R1 at step 0) on different data and noise per rank keep identical weights
cfg = smoke_config()
torch.manual_seed(100 + rank)  # a different initialisation per rank: the broadcast must replace it
model = build_model(cfg, 68)
broadcast_parameters(model)
optimizers, image_loss = build_optimizers(model, cfg), ImageCycleLoss(cfg)
g = torch.Generator().manual_seed(rank)
losses = []
for step in range(2):
    images = torch.rand(4, 3, 64, 64, generator=g) * 2 - 1
    landmarks = torch.rand(4, 68, 2, generator=g) * 48 + 8
    losses.append(float(train_step(model, optimizers, images, landmarks, step, cfg, image_loss)["d_image"]))
flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
gathered = [torch.empty_like(flat) for _ in range(world)]
dist.all_gather(gathered, flat)
record = {"rank": rank, "mean_ok": mean_ok, "frozen_ok": frozen_ok, "losses": losses,
          "same_weights": torch.equal(gathered[0], gathered[1])}
Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(record))  # one file per rank: no interleaving
dist.destroy_process_group()
'''


def test_torchrun_two_ranks_average_gradients_and_stay_identical(tmp_path, torchrun):
    """Under ``torchrun`` (2 CPU ranks, Gloo) gradients are averaged explicitly (DDP cannot run R1's double
    backward): ``average_gradients`` gives the mean over ranks, and Algorithm 1 steps on different data
    per rank leave both ranks with bit-identical weights."""
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    torchrun(script, tmp_path, timeout=300)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in records) == [0, 1]
    for r in records:
        assert r["mean_ok"] and r["frozen_ok"] and r["same_weights"]
    assert records[0]["losses"] != records[1]["losses"]  # the ranks really saw different batches

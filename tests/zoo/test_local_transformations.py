"""Tests of the learned-local-transformations recipe (zoo/local_transformations, Chrysos et al. 2018).

What is checked, and against what:

* Stage II: :func:`wbaug.transforms.fit_transition` equals ``torch.linalg.lstsq`` on the augmented
  system ``[Xᵀ; √λ I] Aᵀ = [Yᵀ; 0]`` (float64), and (hypothesis) satisfies the normal equations
  ``A (X Xᵀ + λ I) = Y Xᵀ`` for random shapes and ridges; the trainer's Stage II writes that ``A``;
* every stage's update reaches exactly its networks (parameters compared before/after one step);
  Stage III's feature matching goes through the Stage I discriminator's penultimate layer (call
  counting, value recomputed, gradient reaches the generator);
* a smoke run interrupted mid Stage I and again mid Stage III, then resumed, equals the uninterrupted
  run bit for bit (CPU), and exports a model file the wbaug transform loads;
* ``python -m zoo.local_transformations.evaluate --json`` writes the metrics; the PCA baseline's
  L1 is recomputed independently;
* data: frame folders written to ``tmp_path`` load as clips, SSIM-band pairs lie in the band, videos
  without PyAV raise an error naming the ``video`` extra; bad config values name the field.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from wbaug.transforms import LearnedLocalTransformation, fit_transition, load_local_transformation, ssim_score
from zoo.common.gan import feature_matching_loss
from zoo.local_transformations.config import DataConfig, smoke_config, validate_config
from zoo.local_transformations.data import build_data, frame_pairs, load_clips, read_video
from zoo.local_transformations.evaluate import main as evaluate_main
from zoo.local_transformations.train import (
    build_model,
    build_optimizers,
    fit_stage2,
    stage1_step,
    stage3_step,
    stage_at,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(out_dir, **train_kw):
    cfg = smoke_config(str(out_dir))
    return replace(cfg, train=replace(cfg.train, **train_kw)) if train_kw else cfg


@pytest.fixture(scope="module")
def smoke_data():
    return build_data(smoke_config())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lt-smoke")
    return out, train(_cfg(out))


# ------------------------------------------------------------------------------------------ Stage II
def test_fit_transition_equals_lstsq_on_augmented_system():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randn(40, 4, generator=g, dtype=torch.float64)
    lam = 0.7
    a = fit_transition(x, y, lam)
    xa = torch.cat([x, torch.ones(40, 1, dtype=torch.float64)], 1)
    lhs = torch.cat([xa, lam**0.5 * torch.eye(6, dtype=torch.float64)])
    rhs = torch.cat([y, torch.zeros(6, 4, dtype=torch.float64)])
    expected = torch.linalg.lstsq(lhs, rhs).solution.t()
    assert a.shape == (4, 6) and a.dtype == torch.float64
    torch.testing.assert_close(a, expected, rtol=1e-10, atol=1e-10)
    # float32 inputs are solved in float64 too
    torch.testing.assert_close(
        fit_transition(x.float(), y.float(), lam), fit_transition(x, y, lam), atol=1e-5, rtol=0
    )


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    d=st.integers(1, 6),
    e=st.integers(1, 6),
    lam=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31 - 1),
)
def test_fit_transition_normal_equations(n, d, e, lam, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, e, generator=g, dtype=torch.float64)
    a = fit_transition(x, y, lam)
    xa = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1).t()
    lhs = a @ (xa @ xa.t() + lam * torch.eye(d + 1, dtype=torch.float64))
    torch.testing.assert_close(lhs, y.t() @ xa.t(), rtol=1e-8, atol=1e-8 * (1 + lam))


def test_fit_transition_bad_input():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="same N"):
        fit_transition(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="ridge"):
        fit_transition(x, x, -1.0)
    with pytest.raises(ValueError, match="source must be"):
        fit_transition(torch.randn(5), x)
    with pytest.raises(TypeError, match="target must be"):
        fit_transition(x, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="finite"):
        fit_transition(x, torch.full((5, 2), float("nan")))


# ------------------------------------------------------------------------------------ stage updates
def _snapshot(nets):
    return {
        "encoder": copy.deepcopy(nets.encoder.state_dict()),
        "decoder": copy.deepcopy(nets.decoder.state_dict()),
        "generator": copy.deepcopy(nets.generator.state_dict()),
        "transition": nets.model.transition.detach().clone(),
        "d_stage1": copy.deepcopy(nets.d_stage1.state_dict()),
        "d_stage3": copy.deepcopy(nets.d_stage3.state_dict()),
    }


def _changed(before, nets):
    after = _snapshot(nets)
    out = {}
    for name, old in before.items():
        new = after[name]
        if isinstance(old, torch.Tensor):
            out[name] = not torch.equal(old, new)
        else:  # parameters only (BN buffers move in train mode regardless of the optimiser)
            params = dict(getattr(nets, name).named_parameters()) if name != "transition" else {}
            out[name] = any(not torch.equal(old[k], new[k]) for k in params)
    return out


def _batch(data, n=4):
    frames = torch.stack([data.frames[i] for i in range(n)])
    pairs = [data.pairs[i] for i in range(n)]
    return frames, torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def test_each_stage_updates_its_networks(smoke_data):
    cfg = smoke_config()
    torch.manual_seed(0)
    nets = build_model(cfg)
    opt = build_optimizers(nets, cfg)
    frames, src, tgt = _batch(smoke_data)
    nets.train()

    before = _snapshot(nets)
    losses = stage1_step(nets, opt, frames, cfg)
    assert set(losses) >= {"d_image", "d_latent", "g_image", "g_latent", "recon"}
    assert _changed(before, nets) == {
        "encoder": True, "decoder": True, "generator": False, "transition": False, "d_stage1": True,
        "d_stage3": False,
    }  # fmt: skip

    before = _snapshot(nets)
    stats = fit_stage2(nets, smoke_data, cfg, device=torch.device("cpu"))
    assert _changed(before, nets)["transition"] and not _changed(before, nets)["encoder"]
    with torch.no_grad():
        nets.encoder.eval()
        s = torch.stack([smoke_data.pairs[i][0] for i in range(len(smoke_data.pairs))])
        t = torch.stack([smoke_data.pairs[i][1] for i in range(len(smoke_data.pairs))])
        expected = fit_transition(nets.encoder(s).double(), nets.encoder(t).double(), cfg.loss.lambda_2)
    torch.testing.assert_close(nets.model.transition.detach(), expected.float())
    assert set(stats) == {"residual", "identity_residual", "pairs"}

    before = _snapshot(nets)
    stage3_step(nets, opt, src, tgt, cfg)
    assert _changed(before, nets) == {
        "encoder": False, "decoder": False, "generator": True, "transition": False, "d_stage1": False,
        "d_stage3": True,
    }  # fmt: skip

    before = _snapshot(nets)
    stage3_step(nets, opt, src, tgt, cfg, finetune=True)
    assert _changed(before, nets) == {
        "encoder": True, "decoder": False, "generator": True, "transition": True, "d_stage1": False,
        "d_stage3": True,
    }  # fmt: skip
    assert not nets.model.transition.requires_grad


def test_feature_matching_uses_stage1_discriminator(smoke_data):
    cfg = smoke_config()
    torch.manual_seed(1)
    nets = build_model(cfg)
    opt = build_optimizers(nets, cfg)
    _, src, tgt = _batch(smoke_data)
    nets.train()
    probe = copy.deepcopy(nets)  # an identical copy, before the step
    calls = []
    original = nets.d_stage1.features

    def counting(x):
        calls.append(x.shape)
        return original(x)

    nets.d_stage1.features = counting
    losses = stage3_step(nets, opt, src, tgt, cfg)
    assert len(calls) == 2  # the synthesised image and the real later frame
    # recompute L_feat with the Stage I discriminator of an identical copy
    probe.encoder.eval()
    with torch.no_grad():
        fake = probe.model.synthesize(probe.model.regress(probe.model.encode(src)), src)
        expected = feature_matching_loss([probe.d_stage1.features(fake)], [probe.d_stage1.features(tgt)])
    torch.testing.assert_close(losses["feat"], expected.float())
    # its gradient reaches the generator
    probe.zero_grad(set_to_none=True)
    fake = probe.model.synthesize(probe.model.regress(probe.model.encode(src)).detach(), src)
    feature_matching_loss([probe.d_stage1.features(fake)], [probe.d_stage1.features(tgt)]).backward()
    assert sum(float(p.grad.abs().sum()) for p in probe.generator.parameters() if p.grad is not None) > 0


# --------------------------------------------------------------------------------- runs and resume
def test_schedule():
    cfg = smoke_config()  # 3 + 1 + 3 + 2
    stages = [stage_at(s, cfg) for s in range(10)]
    assert stages == ["stage1"] * 3 + ["stage2"] + ["stage3"] * 3 + ["stage4"] * 2 + ["done"]


def test_resume_mid_stages_equals_uninterrupted_run(tmp_path, smoke_run, smoke_data):
    straight_dir, straight = smoke_run
    assert straight["step"] == 9 and straight["stage"] == "done"
    train(_cfg(tmp_path, steps=2), data=smoke_data)  # stops inside Stage I
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["extra"]["stage"] == "stage1"
    train(_cfg(tmp_path, steps=5), resume=True, data=smoke_data)  # through Stage II, stops inside III
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["extra"]["stage"] == "stage3"
    resumed = train(_cfg(tmp_path), resume=True, data=smoke_data)
    a = torch.load(straight_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(
            a["model"][k], b["model"][k], rtol=0, atol=0, msg=f"{k} differs after resume"
        )
    assert resumed["pred_l1"] == straight["pred_l1"]
    rows = zoo.common.MetricLogger(tmp_path / "logs", tensorboard=False).read("train")
    assert [int(float(r["step"])) for r in rows] == list(range(1, 10))


def test_smoke_outputs_and_exported_model(smoke_run):
    out, result = smoke_run
    for name in ("config.json", "metrics.json", "local_transformation.pt"):
        assert (out / name).exists(), name
    assert list((out / "samples").glob("*.png"))
    for key in ("stage1_iterations_per_s", "stage3_iterations_per_s", "stage4_iterations_per_s", "pred_l1"):
        assert key in result
    model = load_local_transformation(out / "local_transformation.pt")
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    state = {k[len("model.") :]: v for k, v in ckpt["model"].items() if k.startswith("model.")}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    out_img = LearnedLocalTransformation(model, p=1.0, min_ssim=None)(
        torch.zeros(3, 16, 16, dtype=torch.uint8)
    )
    assert out_img.shape == (3, 16, 16)
    assert "local_transformations_smoke" in zoo.list_models("local_transformations*")
    assert zoo.create_model("local_transformations_smoke").config.image_size == 16


def test_evaluate_cli_writes_json(smoke_run, smoke_data, tmp_path):
    out, result = smoke_run
    path = tmp_path / "eval.json"
    figure = tmp_path / "variance.png"
    evaluate_main(
        ["--checkpoint", str(out / "checkpoints" / "last.pt"), "--json", str(path), "--figure", str(figure)]
    )
    assert figure.stat().st_size > 0
    got = json.loads(path.read_text())
    for key in (
        "recon_l1",
        "pred_l1",
        "pca_pred_l1",
        "identity_pred_l1",
        "oracle_latent_pred_l1",
        "latent_cumulative_variance",
        "step",
    ):
        assert key in got
    assert got["step"] == 9 and got["pred_l1"] == pytest.approx(result["pred_l1"])
    curve = got["latent_cumulative_variance"]
    assert len(curve) == 8 and all(a <= b + 1e-9 for a, b in zip(curve, curve[1:])) and curve[-1] <= 1 + 1e-9
    # the identity baseline recomputed independently
    src = torch.stack([smoke_data.test_pair_set[i][0] for i in range(len(smoke_data.test_pair_set))])
    tgt = torch.stack([smoke_data.test_pair_set[i][1] for i in range(len(smoke_data.test_pair_set))])
    assert got["identity_pred_l1"] == pytest.approx(float((src - tgt).abs().mean() / 2))
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        evaluate_main(["--checkpoint", str(tmp_path / "missing.pt")])


# ------------------------------------------------------------------------------------------- data
def test_frame_folders_and_pairs(tmp_path):
    import PIL.Image

    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (3, 20, 28), generator=g, dtype=torch.uint8)
    for clip in ("a", "b"):
        (tmp_path / clip).mkdir()
        for t in range(4):
            frame = (base.int() + 3 * t).clamp(0, 255).to(torch.uint8)
            PIL.Image.fromarray(frame.permute(1, 2, 0).numpy()).save(tmp_path / clip / f"{t:03d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    PIL.Image.fromarray(base.permute(1, 2, 0).numpy()).save(tmp_path / "a" / "004.jpg")  # JPEG frames too
    clips = load_clips(tmp_path, 16)
    assert len(clips) == 2 and clips[0].shape == (5, 3, 16, 16) and clips[1].shape == (4, 3, 16, 16)
    assert clips[0].dtype == torch.uint8
    pairs = frame_pairs(clips, max_gap=2, ssim_low=0.5, ssim_high=0.999)
    assert pairs.shape[1] == 3 and pairs.shape[0] > 0
    for c, t, u in pairs.tolist():
        assert 1 <= u - t <= 2
        s = float(ssim_score(clips[c][t : t + 1].float() / 255, clips[c][u : u + 1].float() / 255))
        assert 0.5 <= s <= 0.999
    cfg = smoke_config()
    cfg = replace(
        cfg, data=replace(cfg.data, dataset="folder", root=str(tmp_path), test_fraction=0.5, ssim_low=0.0)
    )
    data = build_data(cfg)
    assert len(data.train_clips) == 1 and len(data.test_clips) == 1 and data.train_params is None
    with pytest.raises(ValueError, match="holds no clips"):
        load_clips(tmp_path / "a", 16)


def test_video_files_decode_with_pyav(tmp_path):
    """A clip written as an .mp4 with PyAV (the ``video`` extra) loads like a frame folder."""
    av = pytest.importorskip("av")
    g = torch.Generator().manual_seed(1)
    base = torch.randint(40, 200, (32, 32, 3), generator=g, dtype=torch.uint8)
    with av.open(str(tmp_path / "clip.mp4"), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for t in range(6):
            frame = av.VideoFrame.from_ndarray((base.int() + 4 * t).clamp(0, 255).to(torch.uint8).numpy())
            out.mux(stream.encode(frame))
        out.mux(stream.encode())  # flush
    clip = read_video(tmp_path / "clip.mp4", 16)
    assert clip.shape == (6, 3, 16, 16) and clip.dtype == torch.uint8
    assert read_video(tmp_path / "clip.mp4", 16, max_frames=3).shape[0] == 3
    assert (clip[-1].float().mean() - clip[0].float().mean()) > 10  # the frames brighten as written
    clips = load_clips(tmp_path, 16)
    assert len(clips) == 1 and torch.equal(clips[0], clip)


def test_video_without_pyav_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av → ImportError
    with pytest.raises(ImportError, match=r"wbaug\[video\]"):
        read_video(tmp_path / "clip.mp4", 16)


@pytest.mark.parametrize(
    ("section", "field", "value", "match"),
    [
        ("model", "image_size", 24, "model.image_size"),
        ("data", "max_gap", 0, "data.max_gap"),
        ("data", "ssim_low", 0.9, "data.ssim_low"),
        ("loss", "lambda_1", -1.0, "loss.lambda_1"),
        ("train", "stage1_steps", 0, "train.stage1_steps"),
        ("optim", "lr", 0.0, "optim.lr"),
    ],
)
def test_bad_config_values_name_the_field(section, field, value, match):
    cfg = smoke_config()
    if section == "data" and field == "ssim_low":
        cfg = replace(cfg, data=replace(cfg.data, ssim_high=0.5))
    cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{field: value})})
    with pytest.raises(ValueError, match=match):
        validate_config(cfg)
    folder = replace(smoke_config(), data=DataConfig(dataset="folder"))
    with pytest.raises(ValueError, match="data.root"):
        validate_config(folder)


def test_cli_rejects_bad_values(tmp_path):
    from zoo.local_transformations.train import main

    with pytest.raises(ValueError, match="model.image_size"):
        main(["--preset", "smoke", "--train.out_dir", str(tmp_path / "x"), "--model.image_size", "24"])
    with pytest.raises(ValueError, match="train.stage3_steps"):
        main(["--preset", "smoke", "--train.out_dir", str(tmp_path / "y"), "--train.stage3_steps", "0"])


def test_downstream_runs_on_the_smoke_model(smoke_run, smoke_data):
    from zoo.local_transformations.downstream import run_downstream
    from zoo.local_transformations.evaluate import load_run

    out, _ = smoke_run
    nets, _, _ = load_run(out / "checkpoints" / "last.pt")
    got = run_downstream(
        nets, smoke_data, train_frames=8, steps=2, batch_size=4, seeds=1, p=1.0, min_ssim=-1.0
    )
    assert got["accepted_share"] == 1.0 and got["train_frames"] == 8
    assert (
        got["mae_with_augmentation"] != got["mae_without_augmentation"]
    )  # the augmentation changed the inputs
    with pytest.raises(ValueError, match="--attribute"):
        run_downstream(nets, smoke_data, attribute="nope", steps=1, seeds=1)


def test_torchrun_two_ranks_cpu(tmp_path, torchrun):
    """``torchrun --nproc_per_node=2`` on CPU (Gloo): every stage runs with gradients averaged across ranks
    (and Stage II's map broadcast), and rank 0 alone writes the checkpoint, metrics and model file."""
    out = tmp_path / "ddp"
    torchrun("-m", "zoo.local_transformations.train", "--preset", "smoke", "--train.out_dir", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == metrics["step"]
    assert (out / "local_transformation.pt").is_file()
    steps = [int(r["step"]) for r in zoo.common.MetricLogger(out / "logs", tensorboard=False).read("train")]
    assert steps == sorted(set(steps))  # one row per logged step: only rank 0 logs

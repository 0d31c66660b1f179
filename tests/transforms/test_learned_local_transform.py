"""Tests of the learned-local-transformation augmentation (wbaug.transforms.learned_local).

What is checked, and against what:

* the v2 transform keeps dtype, device, shape and tv_tensor type (uint8 / float32 / float64 tensors,
  ``tv_tensors.Image``, PIL), resizes to the model's size and back;
* ``p``: 0 returns the input, 1 changes every image, 0.3 changes ~30 % of a batch (binomial bound);
* SSIM rejection: ``min_ssim=1`` rejects every output (input returned bit for bit); the kept images are
  exactly those whose SSIM to the input reaches the threshold (checked against ``ssim_score``);
* a seeded ``generator`` reproduces the draw; key-points raise unless ``label_preserving=True``;
* model files: save/load round trip with ``weights_only``; bad files raise errors naming the file;
  bad arguments raise errors naming the argument.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision import tv_tensors

from wbaug.transforms import (
    LearnedLocalTransformation,
    LocalTransformationConfig,
    LocalTransformationModel,
    load_local_transformation,
    save_local_transformation,
    ssim_score,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = LocalTransformationModel(
        LocalTransformationConfig(image_size=16, latent_dim=8, channels=4, max_channels=8)
    )
    return m.eval()


def _images(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_keeps_dtype_shape_and_range(model, dtype):
    x = _images()
    x = x if dtype == torch.uint8 else x.to(dtype) / 255
    out = LearnedLocalTransformation(model, p=1.0, min_ssim=None)(x)
    assert out.dtype == dtype and out.shape == x.shape and out.device == x.device
    assert not torch.equal(out, x)
    if dtype.is_floating_point:
        assert 0 <= float(out.min()) and float(out.max()) <= 1
    single = LearnedLocalTransformation(model, p=1.0, min_ssim=None)(x[0])
    assert single.shape == x[0].shape and single.dtype == dtype


def test_tv_tensor_pil_and_resize(model):
    import PIL.Image

    img = tv_tensors.Image(_images(1, 24)[0])
    out = LearnedLocalTransformation(model, p=1.0, min_ssim=None)(img)
    assert isinstance(out, tv_tensors.Image) and out.shape == (3, 24, 24) and out.dtype == torch.uint8
    pil = PIL.Image.fromarray(_images(1, 20)[0].permute(1, 2, 0).numpy())
    out_pil = LearnedLocalTransformation(model, p=1.0, min_ssim=None)(pil)
    assert isinstance(out_pil, PIL.Image.Image) and out_pil.size == (20, 20)


def test_the_callers_model_is_copied_not_changed(model):
    mine = copy.deepcopy(model).train()
    t = LearnedLocalTransformation(mine, p=1.0, min_ssim=None)
    assert mine.training and t.model is not mine  # the caller's module keeps its mode
    with torch.no_grad():
        next(mine.parameters()).add_(1.0)  # and later edits of it do not leak into the transform
    assert not torch.equal(next(mine.parameters()), next(t.model.parameters()))


def test_repr_names_the_settings_not_the_layers(model):
    text = repr(LearnedLocalTransformation(model, p=0.3, iterations=2))
    assert text.startswith("LearnedLocalTransformation(p=0.3, iterations=2, min_ssim=0.4,")
    assert "image_size=16, latent_dim=8" in text and "Conv2d" not in text


def test_eval_mode_whatever_the_pipeline_mode(model):
    t = LearnedLocalTransformation(model, p=1.0, min_ssim=None)
    x = _images(2)
    a = t(x)
    t.train()  # a parent module's .train() reaches the networks
    assert torch.equal(t(x), a) and not t.model.training


def test_probability(model):
    x = _images(400)
    assert torch.equal(LearnedLocalTransformation(model, p=0.0)(x), x)
    out = LearnedLocalTransformation(model, p=0.3, min_ssim=None, generator=torch.Generator().manual_seed(1))(
        x
    )
    changed = (out != x).flatten(1).any(1).float().mean()
    assert abs(float(changed) - 0.3) < 4 * (0.3 * 0.7 / 400) ** 0.5


def test_ssim_rejection(model):
    x = _images(16).float() / 255  # floats: the transform's output is the scored prediction itself
    assert torch.equal(LearnedLocalTransformation(model, p=1.0, min_ssim=1.0)(x), x)
    free = LearnedLocalTransformation(model, p=1.0, min_ssim=None)(x)
    scores = ssim_score(free, x)
    threshold = float(scores.median())
    out = LearnedLocalTransformation(model, p=1.0, min_ssim=threshold)(x)
    kept = (out != x).flatten(1).any(1)
    assert torch.equal(kept, scores >= threshold)
    assert 0 < int(kept.sum()) < 16


def test_generator_reproducible(model):
    x = _images(64)

    def run(seed):
        return LearnedLocalTransformation(
            model, p=0.5, min_ssim=None, generator=torch.Generator().manual_seed(seed)
        )(x)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    torch.manual_seed(5)  # without a generator: torch's global RNG
    a = LearnedLocalTransformation(model, p=0.5, min_ssim=None)(x)
    torch.manual_seed(5)
    assert torch.equal(a, LearnedLocalTransformation(model, p=0.5, min_ssim=None)(x))


def test_labels_need_label_preserving(model):
    img = tv_tensors.Image(_images(1)[0])
    kp = tv_tensors.KeyPoints(torch.tensor([[3.0, 4.0], [5.0, 6.0]]), canvas_size=(16, 16))
    with pytest.raises(ValueError, match="label_preserving"):
        LearnedLocalTransformation(model, p=1.0)({"image": img, "keypoints": kp})
    out = LearnedLocalTransformation(model, p=1.0, min_ssim=None, label_preserving=True)(
        {"image": img, "keypoints": kp}
    )
    assert torch.equal(out["keypoints"], kp) and not torch.equal(out["image"], img)


def test_model_file_round_trip(model, tmp_path):
    path = save_local_transformation(model, tmp_path / "lt.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "wbaug.local_transformation" and raw["config"]["latent_dim"] == 8
    loaded = load_local_transformation(path)
    x = _images(3).float() / 127.5 - 1
    torch.testing.assert_close(loaded(x, 2), model(x, 2), rtol=0, atol=0)
    a = LearnedLocalTransformation(path, p=1.0, min_ssim=None)(_images(2))
    b = LearnedLocalTransformation(model, p=1.0, min_ssim=None)(_images(2))
    assert torch.equal(a, b)


def test_bad_model_files(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_local_transformation(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt"):
        load_local_transformation(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="other.pt.*not a wbaug.local_transformation"):
        LearnedLocalTransformation(other)
    path = save_local_transformation(model, tmp_path / "lt.pt")
    data = torch.load(path, weights_only=True)
    data["config"]["latent_dim"] = 9
    torch.save(data, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="mismatch.pt.*do not match"):
        load_local_transformation(tmp_path / "mismatch.pt")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p": 1.5}, "p must"),
        ({"iterations": 0}, "iterations must"),
        ({"min_ssim": 2.0}, "min_ssim must"),
        ({"ssim_window": 4}, "ssim_window must"),
        ({"generator": 3}, "generator must"),
    ],
)
def test_bad_arguments(model, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LearnedLocalTransformation(model, **kwargs)


def test_bad_inputs_and_config(model):
    with pytest.raises(ValueError, match="channels"):
        LearnedLocalTransformation(model, p=1.0)(torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="image_size"):
        LocalTransformationConfig(image_size=24)
    with pytest.raises(ValueError, match="source must be"):
        model.generator(torch.zeros(1, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="model must be"):
        LearnedLocalTransformation(b"a string path that is not a model")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_kept(model):
    t = LearnedLocalTransformation(copy.deepcopy(model), p=1.0, min_ssim=None, device="cuda")
    x = _images(2).cuda()
    out = t(x)
    assert out.device == x.device and out.dtype == torch.uint8

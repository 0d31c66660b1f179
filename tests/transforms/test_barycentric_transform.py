"""torchvision v2 transform and kornia adapters of barycentric landmark augmentation: outputs are the
sampler's
barycenters (checked against sample_around's definition), paired images follow tps_warp_image, the v2 type
protocol (tuples, dicts, KeyPoints re-wrapped) holds, DataLoader workers get distinct reproducible streams."""

import kornia.augmentation as K
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from wbaug.sampling import WassersteinBarycentricSampler
from wbaug.transforms import (
    RandomBarycentricKeypoints,
    RandomBarycentricLandmarks,
    RandomBarycentricWarp,
    barycentric_warp,
    tps_warp_image,
)

H = W = 48


@pytest.fixture(scope="module")
def faces():
    g = torch.Generator().manual_seed(0)
    template = torch.rand(12, 2, generator=g) * 24 + 12
    return template + torch.randn(25, 12, 2, generator=g) * 1.5


@pytest.fixture(scope="module")
def sampler(faces):
    return WassersteinBarycentricSampler(3, correspondence="index").fit(faces)


def _sample(faces, i=0):
    img = tv_tensors.Image(torch.rand(3, H, W, generator=torch.Generator().manual_seed(i)))
    return img, tv_tensors.KeyPoints(faces[i], canvas_size=(H, W))


def test_unpaired_replaces_keypoints_only(sampler, faces):
    """p=1 unpaired: KeyPoints become sum lambda X over a clique containing the sample's vertex (index mode);
    the image is untouched; types and canvas are kept inside v2.Compose."""
    t = RandomBarycentricLandmarks(sampler, p=1.0, seed=0)
    img, kp = _sample(faces, 2)
    out_img, out_kp = v2.Compose([t])(img, kp)
    assert isinstance(out_kp, tv_tensors.KeyPoints) and out_kp.canvas_size == (H, W)
    assert out_img is img
    params = t.make_params([img, kp])  # a fresh draw, checked against its own definition
    info = params["info"]
    verts = [int(v) for v in info["vertices"][0] if v >= 0]
    assert int(info["nearest"][0]) == 2 and 2 in verts
    ref = sum(info["weights"][0][k] * faces[v] for k, v in enumerate(verts))
    torch.testing.assert_close(params["new"][0], ref)
    replayed = t.replay((img, kp), params)
    torch.testing.assert_close(replayed[1].as_subclass(torch.Tensor), ref)


def test_probability_zero_is_identity_and_dict_samples(sampler, faces):
    """p=0 returns inputs unchanged; dict samples are supported."""
    img, kp = _sample(faces)
    out = RandomBarycentricLandmarks(sampler, p=0.0)({"image": img, "landmarks": kp, "label": 3})
    assert out["image"] is img and out["landmarks"] is kp and out["label"] == 3
    out = RandomBarycentricLandmarks(sampler, p=1.0, seed=1)({"image": img, "landmarks": kp})
    assert not torch.equal(out["landmarks"], kp)


def test_paired_image_follows_tps(sampler, faces):
    """Paired mode: the image equals tps_warp_image(old -> new landmarks); masks are warped with nearest."""
    t = RandomBarycentricLandmarks(sampler, p=1.0, paired=True, seed=3, padding_mode="zeros")
    img, kp = _sample(faces, 4)
    mask = tv_tensors.Mask(
        (torch.rand(H, W, generator=torch.Generator().manual_seed(9)) > 0.5).to(torch.uint8)
    )
    params = t.make_params([img, kp, mask])
    out_img, out_kp, out_mask = t.replay((img, kp, mask), params)
    ref = tps_warp_image(img.as_subclass(torch.Tensor)[None], params["old"].float(), params["new"].float())[0]
    torch.testing.assert_close(out_img.as_subclass(torch.Tensor), ref, atol=1e-5, rtol=0)
    assert isinstance(out_mask, tv_tensors.Mask) and out_mask.dtype == torch.uint8
    assert set(out_mask.unique().tolist()) <= {0, 1}


def test_paired_dataset_dict_passes_non_pixel_entries_through(sampler, faces):
    """Regression: a wbaug dataset sample (image, KeyPoints, per-landmark Visibility, boxes, metadata)
    goes through the paired transform; only pixels are warped, the (N,) visibility flags and the
    boxes come back unchanged instead of being treated as images."""
    from wbaug.transforms import Visibility

    img, kp = _sample(faces, 5)
    vis = Visibility(torch.ones(kp.shape[0], dtype=torch.bool))
    box = tv_tensors.BoundingBoxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]]), format="XYXY", canvas_size=(H, W))
    t = RandomBarycentricLandmarks(sampler, p=1.0, paired=True, seed=4)
    out = t({"image": img, "landmarks": kp, "visibility": vis, "box": box, "meta": {"i": 5}})
    assert torch.equal(out["visibility"], vis) and torch.equal(out["box"], box) and out["meta"] == {"i": 5}
    assert out["image"].shape == img.shape and not torch.equal(out["image"], img)


def test_canvas_and_shape_errors(sampler, faces):
    img, kp = _sample(faces)
    with pytest.raises(ValueError, match="canvas_size"):
        RandomBarycentricLandmarks(sampler, p=1.0, canvas_size=(64, 64))(img, kp)
    with pytest.raises(ValueError, match="KeyPoints must have shape"):
        RandomBarycentricLandmarks(sampler, p=1.0)(
            img, tv_tensors.KeyPoints(faces[0, :5], canvas_size=(H, W))
        )
    with pytest.raises(ValueError, match="exactly one"):
        RandomBarycentricLandmarks(sampler, p=1.0)(img)
    with pytest.raises(ValueError, match="p must be"):
        RandomBarycentricLandmarks(sampler, p=1.5)
    with pytest.raises(ValueError, match="sampler"):
        RandomBarycentricLandmarks(WassersteinBarycentricSampler())
    big = tv_tensors.Image(torch.rand(3, H + 2, W))
    with pytest.raises(ValueError, match="canvas_size"):
        RandomBarycentricLandmarks(sampler, p=1.0, paired=True)(big, kp)


class _Faces(Dataset):
    def __init__(self, faces, transform, same=False):
        self.faces, self.transform, self.same = faces, transform, same

    def __len__(self):
        return 12

    def __getitem__(self, i):
        img, kp = _sample(self.faces, 0 if self.same else i)
        return self.transform(img, kp)


def _collate(batch):
    return torch.stack([b[0].as_subclass(torch.Tensor) for b in batch]), torch.stack(
        [b[1].as_subclass(torch.Tensor) for b in batch]
    )


def test_dataloader_two_workers_reproducible_and_distinct(sampler, faces):
    """DataLoader(num_workers=2, generator=g): same g seed => same batches; the workers' streams differ
    (the same underlying sample index would get different draws in the two workers)."""
    t = v2.Compose([RandomBarycentricLandmarks(sampler, p=1.0, paired=True)])
    ds = _Faces(faces, t)

    def run(seed):
        loader = DataLoader(
            ds,
            batch_size=3,
            num_workers=2,
            collate_fn=_collate,
            generator=torch.Generator().manual_seed(seed),
        )
        return [b for b in loader]

    a, b, c = run(0), run(0), run(1)
    for (ia, ka), (ib, kb) in zip(a, b):
        torch.testing.assert_close(ia, ib)
        torch.testing.assert_close(ka, kb)
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, c))
    # distinct worker streams: every item is sample 0, batch 0 comes from worker 0 and batch 1 from worker 1;
    # identical per-worker streams would make the two batches equal
    same = _Faces(faces, t, same=True)
    loader = DataLoader(
        same, batch_size=3, num_workers=2, collate_fn=_collate, generator=torch.Generator().manual_seed(0)
    )
    batches = [kp for _, kp in loader]
    assert not torch.equal(batches[0], batches[1])


def test_kornia_augmentation_sequential_keypoints(sampler, faces):
    """RandomBarycentricKeypoints inside AugmentationSequential(data_keys=["input","keypoints"]): images pass
    through, every key-point set becomes a barycenter around its own sample (p=1), shapes (B, N, 2) kept."""
    aug = K.AugmentationSequential(
        RandomBarycentricKeypoints(sampler, p=1.0, generator=torch.Generator().manual_seed(0)),
        data_keys=["input", "keypoints"],
    )
    imgs = torch.rand(4, 3, H, W)
    kps = faces[:4].clone()
    out_img, out_kp = aug(imgs, kps)
    torch.testing.assert_close(out_img, imgs)
    assert out_kp.shape == kps.shape and not torch.equal(out_kp, kps)
    # each output is a convex combination of fitted sets in a clique containing that sample's own index
    for b in range(4):
        assert float((out_kp[b] - kps[b]).abs().max()) < float((faces - kps[b]).abs().amax((1, 2)).max())
    aug0 = K.AugmentationSequential(
        RandomBarycentricKeypoints(sampler, p=0.0), data_keys=["input", "keypoints"]
    )
    torch.testing.assert_close(aug0(imgs, kps)[1], kps)


def test_barycentric_warp_batch(sampler, faces):
    """barycentric_warp on a batch: unselected samples are unchanged, selected images equal tps_warp_image."""
    imgs = torch.rand(5, 3, H, W, generator=torch.Generator().manual_seed(1))
    kps = faces[:5].clone()
    g = torch.Generator().manual_seed(4)
    out_img, out_kp = barycentric_warp(imgs, kps, sampler, p=0.5, generator=g)
    changed = (out_kp - kps).abs().amax((1, 2)) > 0
    for b in range(5):
        if changed[b]:
            ref = tps_warp_image(imgs[b : b + 1], kps[b : b + 1], out_kp[b : b + 1], padding_mode="border")
            torch.testing.assert_close(out_img[b : b + 1], ref, atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(out_img[b], imgs[b])
    warp = RandomBarycentricWarp(sampler, p=1.0, generator=torch.Generator().manual_seed(0))
    i2, k2 = warp(imgs, kps)
    assert i2.shape == imgs.shape and k2.shape == kps.shape
    with pytest.raises(ValueError, match="keypoints"):
        barycentric_warp(imgs, kps[0], sampler)

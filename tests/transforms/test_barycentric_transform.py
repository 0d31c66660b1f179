"""The sampler as the drop-in barycentric transform (torchvision v2) and its kornia form: outputs are
the sampler's barycenters (checked against sample_around's definition), paired images follow
tps_warp_image, every input type gets its kernel (images, videos, masks, PIL, key-points, boxes),
draws replay, DataLoader workers get distinct reproducible streams, frames never mix."""

import math

import kornia.augmentation as K
import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from wbaug.landmarks.geometry import apply_transform, estimate_similarity
from wbaug.sampling import WassersteinBarycentricSampler
from wbaug.transforms import (
    RandomBarycentricWarp,
    SanitizeLandmarks,
    Visibility,
    apply_barycentric,
    draw_barycentric_params,
    landmark_collate,
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
    return WassersteinBarycentricSampler(3, p=1.0, frame="fitted").fit(faces, canvas_size=(H, W))


@pytest.fixture(scope="module")
def paired(faces):
    return WassersteinBarycentricSampler(3, p=1.0, paired=True, padding_mode="zeros").fit(faces)


def _sample(faces, i=0):
    img = tv_tensors.Image(torch.rand(3, H, W, generator=torch.Generator().manual_seed(i)))
    return img, tv_tensors.KeyPoints(faces[i], canvas_size=(H, W))


def _plain(x):
    return x.as_subclass(torch.Tensor)


def _reference(faces, info, b, query):
    verts = [int(v) for v in info["vertices"][b] if v >= 0]
    return sum(
        info["weights"][b][k] * (query if v == int(info["nearest"][b]) else faces[v])
        for k, v in enumerate(verts)
    )


def test_sampler_is_a_v2_transform_unpaired(sampler, faces):
    """The fitted sampler inside v2.Compose: KeyPoints become sum lambda X over a clique containing the
    sample's own vertex (index correspondence, fitted frame); the image is untouched; types are kept."""
    img, kp = _sample(faces, 2)
    out_img, out_kp = v2.Compose([sampler])(img, kp)
    assert isinstance(out_kp, tv_tensors.KeyPoints) and out_kp.canvas_size == (H, W)
    assert out_img is img
    draw = sampler.make_params([img, kp])["draw"]  # a fresh draw, checked against its own definition
    info = draw.info
    assert int(info["nearest"][0]) == 2 and 2 in info["vertices"][0].tolist()
    torch.testing.assert_close(draw.landmarks[0], _reference(faces, info, 0, faces[2]))
    replayed = sampler.transform(kp, {"draw": draw})
    torch.testing.assert_close(_plain(replayed), _reference(faces, info, 0, faces[2]))


def test_issue_snippets_run(faces):
    """The issue's three snippets: fit with p/paired, a v2 pipeline with ToImage/flip/ToDtype, and a kornia
    AugmentationSequential with RandomAffine and the kornia form."""
    sampler = WassersteinBarycentricSampler(k_neighbors=6, p=0.5, paired=True).fit(faces)
    pipeline = v2.Compose(
        [v2.ToImage(), sampler, v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)]
    )
    image = PIL.Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8))
    out, kp = pipeline(image, tv_tensors.KeyPoints(faces[0], canvas_size=(H, W)))
    assert out.dtype == torch.float32 and out.shape == (3, H, W) and kp.shape == (12, 2)
    aug = K.AugmentationSequential(
        K.RandomAffine(15.0), RandomBarycentricWarp(sampler, p=0.5), data_keys=["input", "keypoints"]
    )
    images, keypoints = aug(torch.rand(4, 3, H, W), faces[:4].clone())
    assert images.shape == (4, 3, H, W) and keypoints.shape == (4, 12, 2)


def test_unfitted_and_bad_inputs_are_clear(sampler, faces):
    img, kp = _sample(faces)
    with pytest.raises(RuntimeError, match="not fitted yet"):
        WassersteinBarycentricSampler()(img, kp)
    with pytest.raises(ValueError, match="KeyPoints must have shape"):
        sampler(img, tv_tensors.KeyPoints(faces[0, :5], canvas_size=(H, W)))
    with pytest.raises(ValueError, match="exactly one"):
        sampler(img)
    with pytest.raises(ValueError, match="p must be"):
        WassersteinBarycentricSampler(p=1.5)
    with pytest.raises(ValueError, match="frame must be"):
        WassersteinBarycentricSampler(frame="pixels")
    with pytest.raises(ValueError, match="frame='fitted'"):  # a resized canvas is refused, never mixed
        sampler(img, tv_tensors.KeyPoints(faces[0] / 2, canvas_size=(H // 2, W // 2)))
    with pytest.raises(ValueError, match="sampler must be"):
        RandomBarycentricWarp(WassersteinBarycentricSampler())


def test_probability_zero_is_identity_and_dict_samples(faces):
    s0 = WassersteinBarycentricSampler(3, p=0.0, paired=True).fit(faces)
    img, kp = _sample(faces)
    out = s0({"image": img, "landmarks": kp, "label": 3})
    assert out["image"] is img and out["landmarks"] is kp and out["label"] == 3


def test_every_input_type_has_its_kernel(paired, faces):
    """Paired mode: Image, plain tensor, Video (B=1: every frame), Mask (nearest), PIL all equal
    tps_warp_image(old -> new); metadata and Visibility pass through."""
    img, kp = _sample(faces, 4)
    mask = tv_tensors.Mask(
        (torch.rand(H, W, generator=torch.Generator().manual_seed(9)) > 0.5).to(torch.uint8)
    )
    video = tv_tensors.Video(torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1)))
    pil = PIL.Image.fromarray((torch.rand(H, W, 3) * 255).to(torch.uint8).numpy())
    draw = paired.make_params([img, kp])["draw"]
    old, new = draw.source.float(), draw.landmarks.float()

    def ref(x, mode="bilinear"):
        return tps_warp_image(x, old.expand(x.shape[0], -1, -1), new.expand(x.shape[0], -1, -1), mode=mode)

    out_img = paired.transform(img, {"draw": draw})
    assert isinstance(out_img, tv_tensors.Image)
    torch.testing.assert_close(_plain(out_img), ref(_plain(img)[None])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(paired.transform(_plain(img), {"draw": draw}), _plain(out_img))
    out_video = paired.transform(video, {"draw": draw})
    assert isinstance(out_video, tv_tensors.Video)
    torch.testing.assert_close(_plain(out_video), ref(_plain(video)), atol=1e-5, rtol=0)
    out_mask = paired.transform(mask, {"draw": draw})
    assert isinstance(out_mask, tv_tensors.Mask) and out_mask.dtype == torch.uint8
    torch.testing.assert_close(_plain(out_mask), ref(_plain(mask)[None, None], "nearest")[0, 0])
    out_pil = paired.transform(pil, {"draw": draw})
    assert isinstance(out_pil, PIL.Image.Image) and out_pil.size == pil.size
    pil_ref = ref(torch.from_numpy(np.array(pil)).permute(2, 0, 1)[None])[0]
    torch.testing.assert_close(torch.from_numpy(np.array(out_pil)).permute(2, 0, 1), pil_ref, atol=1, rtol=0)
    vis = Visibility(torch.ones(12, dtype=torch.bool))
    assert paired.transform(vis, {"draw": draw}) is vis
    assert paired.transform({"i": 5}, {"draw": draw}) == {"i": 5}


@pytest.mark.parametrize("index", [6, 11, 3])
def test_boxes_follow_the_warp(paired, faces, index):
    """A box warped by the kernel matches the bounding box of the warped box mask (nearest), to 1 px; the
    box format is kept."""
    torch.manual_seed(index)
    img, kp = _sample(faces, index)
    box = torch.tensor([[10.0, 12.0, 37.0, 35.0]])
    boxes = tv_tensors.BoundingBoxes(box, format="XYXY", canvas_size=(H, W))
    draw = paired.make_params([img, kp])["draw"]
    out = paired.transform(boxes, {"draw": draw})
    assert isinstance(out, tv_tensors.BoundingBoxes) and out.format == boxes.format
    # independent reference: the box's pixel mask warped like an image (nearest), its bounding box
    mask = torch.zeros(1, 1, H, W)
    mask[..., 12:35, 10:37] = 1.0
    warped = tps_warp_image(mask, draw.source.float(), draw.landmarks.float(), mode="nearest")[0, 0]
    ys, xs = torch.nonzero(warped > 0.5, as_tuple=True)
    ref = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    assert float((_plain(out)[0] - ref).abs().max()) <= 1.0
    assert not torch.equal(_plain(out), box)
    cxcywh = tv_tensors.BoundingBoxes(
        v2.functional.convert_bounding_box_format(box, old_format="XYXY", new_format="CXCYWH"),
        format="CXCYWH",
        canvas_size=(H, W),
    )
    back = v2.functional.convert_bounding_box_format(
        _plain(paired.transform(cxcywh, {"draw": draw})), old_format="CXCYWH", new_format="XYXY"
    )
    torch.testing.assert_close(back, _plain(out), atol=1e-4, rtol=0)


def test_batched_keypoints_paired_one_warp_per_sample(paired, faces):
    """KeyPoints (B, N, 2) with images (B, C, H, W): each sample gets its own draw and warp."""
    imgs = tv_tensors.Image(torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(2)))
    kp = tv_tensors.KeyPoints(faces[:3], canvas_size=(H, W))
    draw = paired.make_params([imgs, kp])["draw"]
    out_imgs, out_kp = paired.transform(imgs, {"draw": draw}), paired.transform(kp, {"draw": draw})
    assert out_kp.shape == (3, 12, 2)
    for b in range(3):
        torch.testing.assert_close(_plain(out_kp)[b], draw.landmarks[b].float())
        ref = tps_warp_image(_plain(imgs)[b : b + 1], faces[b : b + 1], draw.landmarks[b : b + 1].float())
        torch.testing.assert_close(_plain(out_imgs)[b : b + 1], ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="matching batch"):
        paired.transform(tv_tensors.Image(torch.rand(3, H, W)), {"draw": draw})


class _Faces(Dataset):
    def __init__(self, faces, transform, same=False):
        self.faces, self.transform, self.same = faces, transform, same

    def __len__(self):
        return 12

    def __getitem__(self, i):
        img, kp = _sample(self.faces, 0 if self.same else i)
        return self.transform(img, kp)


def test_dataloader_two_workers_reproducible_and_distinct(faces):
    """The sampler draws from torch's global RNG (no generator): inside DataLoader(num_workers=2,
    generator=g) the same g seed gives the same batches, another seed others, and the two workers'
    streams differ (every item is sample 0; batch 0 comes from worker 0, batch 1 from worker 1)."""
    t = v2.Compose([WassersteinBarycentricSampler(3, p=1.0, paired=True).fit(faces)])

    def run(seed, same=False):
        loader = DataLoader(
            _Faces(faces, t, same),
            batch_size=3,
            num_workers=2,
            collate_fn=landmark_collate,
            generator=torch.Generator().manual_seed(seed),
        )
        return list(loader)

    a, b, c = run(0), run(0), run(1)
    for (ia, ka), (ib, kb) in zip(a, b):
        assert isinstance(ka, tv_tensors.KeyPoints) and ka.canvas_size == (H, W) and ka.shape == (3, 12, 2)
        torch.testing.assert_close(_plain(ia), _plain(ib))
        torch.testing.assert_close(_plain(ka), _plain(kb))
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, c))
    batches = [kp for _, kp in run(0, same=True)]
    assert not torch.equal(batches[0], batches[1])


def test_global_rng_rule_and_generator(faces):
    """Without generator=, torch.manual_seed makes draws reproducible; with one, only it is used (the
    global RNG state is neither read nor advanced)."""
    s = WassersteinBarycentricSampler(3, p=1.0).fit(faces)
    img, kp = _sample(faces, 3)
    torch.manual_seed(5)
    first = _plain(s(img, kp)[1])
    torch.manual_seed(5)
    torch.testing.assert_close(_plain(s(img, kp)[1]), first)
    g = WassersteinBarycentricSampler(3, p=1.0, generator=torch.Generator().manual_seed(1)).fit(faces)
    state = torch.get_rng_state()
    g(img, kp)
    assert torch.equal(torch.get_rng_state(), state)


def test_kornia_replay_inverse_and_paired_direct_call(faces):
    """Kornia form: parameters drawn in generate_parameters replay identical key-points; inverse passes
    images through; paired inside a container is refused clearly; paired called directly warps images
    like tps_warp_image."""
    sampler = WassersteinBarycentricSampler(3).fit(faces)
    aug = K.AugmentationSequential(
        K.RandomAffine(10.0), RandomBarycentricWarp(sampler, p=0.7), data_keys=["input", "keypoints"]
    )
    imgs, kps = torch.rand(6, 3, H, W), faces[:6].clone()
    out_img, out_kp = aug(imgs, kps)
    again_img, again_kp = aug(imgs, kps, params=aug._params)
    torch.testing.assert_close(again_kp, out_kp, rtol=0, atol=0)
    torch.testing.assert_close(again_img, out_img)
    inv_img, inv_kp = aug.inverse(out_img, out_kp)  # the affine is undone; the barycenter passes through
    assert inv_img.shape == imgs.shape and inv_kp.shape == kps.shape
    alone = RandomBarycentricWarp(sampler, p=1.0)
    torch.testing.assert_close(alone.inverse(alone(imgs)), imgs)
    bad = K.AugmentationSequential(
        RandomBarycentricWarp(sampler, p=1.0, paired=True), data_keys=["input", "keypoints"]
    )
    with pytest.raises(ValueError, match="call it directly"):
        bad(imgs, kps)
    warp = RandomBarycentricWarp(sampler, p=0.5, paired=True, generator=torch.Generator().manual_seed(3))
    w_img, w_kp = warp(imgs, kps)
    changed = warp._params["batch_prob"].reshape(-1) > 0.5
    assert bool(changed.any()) and not bool(changed.all())
    for b in range(6):
        if changed[b]:
            ref = tps_warp_image(imgs[b : b + 1], kps[b : b + 1], w_kp[b : b + 1], padding_mode="border")
            torch.testing.assert_close(w_img[b : b + 1], ref, atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(w_img[b], imgs[b])
            torch.testing.assert_close(w_kp[b], kps[b])
    replay_img, replay_kp = warp(imgs, kps, params=warp._params)
    torch.testing.assert_close(replay_kp, w_kp, rtol=0, atol=0)


def _similarity(angle, scale, tx, ty, center):
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    m = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    m[:2, 2] = torch.tensor([tx, ty], dtype=torch.float64) + center - m[:2, :2] @ center
    return m


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    angle=st.floats(-math.pi, math.pi),
    scale=st.floats(0.3, 3.0),
    tx=st.floats(-40, 40),
    ty=st.floats(-40, 40),
    index=st.integers(0, 24),
    seed=st.integers(0, 2**31 - 1),
)
def test_similarity_frame_is_equivariant(faces, angle, scale, tx, ty, index, seed):
    """frame="similarity": sampling around a moved query equals moving the sample of the original
    (same draw) -- the result is always in the query's frame, whatever similarity came before. In index
    mode it is sum lambda Y with the query in its slot and the neighbours moved by the aligning map."""
    s = _SIM[0]
    x = faces[index].to(torch.float64)
    m = _similarity(angle, scale, tx, ty, x.mean(0))
    moved = apply_transform(x[None], m[None])
    base, info = s.sample_around(x[None], generator=torch.Generator().manual_seed(seed))
    out, info_m = s.sample_around(moved, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(info["vertices"], info_m["vertices"])
    tol = 1e-6 * (1.0 + float(moved.abs().max()))
    torch.testing.assert_close(out, apply_transform(base, m[None]), atol=tol, rtol=0)
    v = int(info_m["nearest"][0])
    back = torch.linalg.inv(estimate_similarity(moved, faces[v][None].to(torch.float64)))
    neighbours = apply_transform(faces.to(torch.float64), back.expand(len(faces), 3, 3))
    ref = _reference(neighbours, info_m, 0, moved[0])
    torch.testing.assert_close(out[0], ref, atol=tol, rtol=0)


_SIM: list = []


@pytest.fixture(scope="module", autouse=True)
def _similarity_sampler(faces):
    _SIM.append(WassersteinBarycentricSampler(3).fit(faces.to(torch.float64)))
    yield
    _SIM.clear()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(20, 96),
    degrees=st.floats(0, 180),
    shear=st.floats(0, 20),
    index=st.integers(0, 24),
    seed=st.integers(0, 2**31 - 1),
)
def test_frames_never_mix_after_resize_or_affine(faces, size, degrees, shear, index, seed):
    """Whatever resize/affine precedes the sampler, the key-points come out in the current frame: each
    output point stays within half the input set's diameter of its own input point (never in the fitted
    48 px frame of a 20..96 px canvas; landmark n stays near landmark n), so an input lying well inside
    the canvas comes out inside it."""
    s = _SIM[0]
    torch.manual_seed(seed)
    img, kp = _sample(faces, index)
    before = v2.Compose([v2.Resize(size), v2.RandomAffine(degrees=degrees, shear=shear)])
    img2, kp2 = before(img, kp)
    out_img, out_kp = s(img2, kp2)
    assert out_kp.canvas_size == kp2.canvas_size
    q, o = _plain(kp2).to(torch.float64), _plain(out_kp).to(torch.float64)
    diameter = float(torch.cdist(q, q).max())
    assert float((o - q).norm(dim=-1).max()) <= 0.5 * diameter + 1e-6
    assert float((o.mean(0) - q.mean(0)).norm()) <= 0.25 * diameter + 1e-6
    h, w = kp2.canvas_size
    margin = 0.5 * diameter
    lo, hi = q.amin(0), q.amax(0)
    if bool((lo >= margin - 0.5).all()) and hi[0] <= w - 0.5 - margin and hi[1] <= h - 0.5 - margin:
        inside = (o[:, 0] >= -0.5) & (o[:, 0] <= w - 0.5) & (o[:, 1] >= -0.5) & (o[:, 1] <= h - 0.5)
        assert bool(inside.all())  # input well inside the canvas => output inside the canvas


def test_identity_kept_by_default_and_ot_documented(faces):
    """Default correspondence is "index": landmark n of a paired sample is the lambda-average of landmark
    n of the clique; "ot" stays available (point indices then carry no meaning)."""
    s = WassersteinBarycentricSampler(3, p=1.0, paired=True, frame="fitted").fit(faces, canvas_size=(H, W))
    assert s.correspondence == "index"
    img, kp = _sample(faces, 7)
    draw = s.make_params([img, kp])["draw"]
    torch.testing.assert_close(draw.landmarks[0], _reference(faces, draw.info, 0, faces[7]))
    ot = WassersteinBarycentricSampler(3, p=1.0, correspondence="ot").fit(faces)
    assert ot(img, kp)[1].shape == kp.shape


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), hidden=st.floats(0.0, 0.6))
def test_masked_fit_equals_visible_only_fit_and_masked_sampling(faces, seed, hidden):
    """fit(visibility=): the graph is the one of a fit on the visible-only clouds ("ot": everything
    equal, samples included); "index" barycenters average each point over the members that see it, and
    invisible values (NaN here) never leak."""
    g = torch.Generator().manual_seed(seed)
    vis = torch.rand(25, 12, generator=g) >= hidden
    vis[:, :3] = True
    data = faces.clone().to(torch.float64)
    data[~vis] = float("nan")
    visible = [x[v] for x, v in zip(faces.to(torch.float64), vis)]
    masked = WassersteinBarycentricSampler(3, correspondence="ot").fit(data, visibility=vis)
    ragged = WassersteinBarycentricSampler(3, correspondence="ot").fit(visible)
    assert set(masked.graph_.edges()) == set(ragged.graph_.edges())
    assert masked.cliques_ == ragged.cliques_
    for a, b in zip(
        masked.sample(5, generator=torch.Generator().manual_seed(0)),
        ragged.sample(5, generator=torch.Generator().manual_seed(0)),
    ):
        torch.testing.assert_close(a, b)
    index = WassersteinBarycentricSampler(3).fit(data, visibility=vis)
    assert set(index.graph_.edges()) == set(ragged.graph_.edges())
    out, info = index.sample(40, generator=torch.Generator().manual_seed(1), return_info=True)
    for b in range(40):
        verts = info["vertices"][b][info["vertices"][b] >= 0]
        lam = info["weights"][b][: len(verts)]
        for n in range(12):
            seen = vis[verts, n]
            if not bool(seen.any()) or float(lam[seen].sum()) == 0:
                assert not bool(info["visibility"][b, n]) and bool(torch.isnan(out[b, n]).all())
                continue
            ref = (lam[seen, None] * faces[verts[seen], n].to(torch.float64)).sum(0) / lam[seen].sum()
            torch.testing.assert_close(out[b, n], ref)
    full = WassersteinBarycentricSampler(3).fit(faces)
    same = WassersteinBarycentricSampler(3).fit(faces, visibility=torch.ones(25, 12, dtype=torch.bool))
    torch.testing.assert_close(
        full.sample(6, generator=torch.Generator().manual_seed(2)),
        same.sample(6, generator=torch.Generator().manual_seed(2)),
    )
    with pytest.raises(ValueError, match="visibility must have shape"):
        WassersteinBarycentricSampler(3).fit(faces, visibility=vis[:, :5])
    with pytest.raises(ValueError, match="at least one visible"):
        WassersteinBarycentricSampler(3).fit(faces, visibility=torch.zeros(25, 12, dtype=torch.bool))


def test_partly_visible_query_in_a_pipeline(faces):
    """A sample with Visibility: hidden points (stored as garbage) take no part in the alignment, search,
    barycenter or warp; they stay hidden in the output flags."""
    s = WassersteinBarycentricSampler(3, p=1.0, paired=True).fit(faces)
    img, kp = _sample(faces, 8)
    flags = torch.ones(12, dtype=torch.bool)
    flags[[1, 5]] = False
    data = _plain(kp).clone()
    data[[1, 5]] = torch.tensor([0.0, 0.0])  # invisible points stored as (0, 0)
    out_img, out_kp, out_vis = s(img, tv_tensors.KeyPoints(data, canvas_size=(H, W)), Visibility(flags))
    # occlusion belongs to the image: hidden points stay hidden; the barycenter still places them
    # (the fitted sets see every point), so coordinates are finite everywhere
    assert isinstance(out_vis, Visibility) and torch.equal(_plain(out_vis), flags)
    assert bool(torch.isfinite(_plain(out_kp)).all())
    # the hidden (0, 0) points did not drag the result: it stays near the true landmarks
    assert float((_plain(out_kp) - faces[8]).norm(dim=-1).max()) < 0.5 * float(
        torch.cdist(faces[8], faces[8]).max()
    )


def test_sanitize_landmarks_and_collate(faces):
    kp = tv_tensors.KeyPoints(
        torch.tensor([[1.0, 1.0], [60.0, 2.0], [3.0, -0.6], [4.0, 4.0]]), canvas_size=(8, 8)
    )
    vis = Visibility(torch.tensor([True, True, True, False]))
    out_kp, out_vis = SanitizeLandmarks("invisible")(kp, vis)
    assert torch.equal(out_kp, kp) and out_vis.tolist() == [True, False, False, False]
    kept_kp, kept_vis = SanitizeLandmarks("remove")(kp, vis)
    assert kept_kp.shape == (2, 2) and kept_kp.canvas_size == (8, 8) and kept_vis.tolist() == [True, False]
    with pytest.raises(ValueError, match="needs a Visibility"):
        SanitizeLandmarks("invisible")(kp)
    with pytest.raises(ValueError, match="mode must be"):
        SanitizeLandmarks("drop")
    sample = {"image": tv_tensors.Image(torch.zeros(3, 8, 8)), "kp": kp, "vis": vis, "y": 1}
    batch = landmark_collate([sample, sample])
    assert isinstance(batch["kp"], tv_tensors.KeyPoints) and batch["kp"].canvas_size == (8, 8)
    assert isinstance(batch["vis"], Visibility) and batch["vis"].shape == (2, 4)
    assert isinstance(batch["image"], tv_tensors.Image) and batch["y"].tolist() == [1, 1]
    other = dict(sample, kp=tv_tensors.KeyPoints(_plain(kp), canvas_size=(9, 8)))
    with pytest.raises(ValueError, match="canvas_size"):
        landmark_collate([sample, other])


def test_functional_core_replays_and_registers_kernels(paired, faces):
    """draw_barycentric_params / apply_barycentric are the transform: the same draw applied twice gives
    the same output; a user kernel registered for a TVTensor type of their own is used."""
    from wbaug.transforms import register_barycentric_kernel

    img, kp = _sample(faces, 9)
    draw = draw_barycentric_params(paired, kp, p=1.0, paired=True, canvas_size=(H, W))
    a, b = apply_barycentric(img, draw), apply_barycentric(img, draw)
    torch.testing.assert_close(_plain(a), _plain(b), rtol=0, atol=0)

    class Depth(tv_tensors.TVTensor):
        pass

    depth = torch.rand(1, H, W).as_subclass(Depth)
    assert apply_barycentric(depth, draw) is depth  # unregistered TVTensor types pass through

    @register_barycentric_kernel(Depth)
    def _depth(inpt, params, *, padding_mode):
        return apply_barycentric(
            tv_tensors.Image(inpt.as_subclass(torch.Tensor)), params, padding_mode=padding_mode
        )

    torch.testing.assert_close(
        _plain(apply_barycentric(depth, draw)),
        _plain(apply_barycentric(tv_tensors.Image(_plain(depth)), draw)),
    )


def test_save_load_keeps_the_transform_and_the_mask(tmp_path, faces):
    """save/load round trip: transform settings, visibility and canvas size survive; the loaded sampler
    draws the same augmentation from the same generator state."""
    vis = torch.ones(25, 12, dtype=torch.bool)
    vis[::3, 4] = False
    s = WassersteinBarycentricSampler(3, p=0.7, paired=True, frame="fitted", grid_stride=2)
    s.fit(faces, visibility=vis, canvas_size=(H, W))
    s.save(tmp_path / "s.pt")
    t = WassersteinBarycentricSampler.load(tmp_path / "s.pt")
    assert (t.p, t.paired, t.frame, t.grid_stride, t.canvas_size_) == (0.7, True, "fitted", 2, (H, W))
    assert torch.equal(t.visibility_, vis)
    img, kp = _sample(faces, 1)
    a = draw_barycentric_params(s, kp, generator=torch.Generator().manual_seed(0), p=1.0)
    b = draw_barycentric_params(t, kp, generator=torch.Generator().manual_seed(0), p=1.0)
    torch.testing.assert_close(a.landmarks, b.landmarks, equal_nan=True)


def test_repr_says_what_the_sampler_is(faces):
    s = WassersteinBarycentricSampler(3, p=1.0, paired=True)
    assert repr(s) == "WassersteinBarycentricSampler(k_neighbors=3, p=1.0, paired=True) [not fitted]"
    s.fit(faces)
    text = repr(s)
    assert "fitted: M=25 sets, N=12 points, D=2" in text and f"{len(s.cliques_)} cliques" in text
    assert "paired=True" in repr(RandomBarycentricWarp(s, paired=True))


def test_sample_refuses_outputs_larger_than_memory(faces, monkeypatch):
    """sample(n) estimates its output and raises a clear error before allocating what cannot fit."""
    import wbaug.sampling.sampler as sampler_module

    s = WassersteinBarycentricSampler(3).fit(faces)
    monkeypatch.setattr(sampler_module, "available_memory", lambda: 1_000_000)
    with pytest.raises(ValueError, match="n=10000000 samples need about .* GiB"):
        s.sample(10_000_000)
    assert s.sample(100).shape == (100, 12, 2)  # 9.6 kB: fine


def test_fit_owns_its_data(faces):
    """Editing the caller's array (NumPy or torch) after fit changes nothing the sampler does."""
    for make in (lambda x: x.numpy().copy(), lambda x: x.clone()):
        data = make(faces)
        s = WassersteinBarycentricSampler(3).fit(data)
        before = s.sample(20, generator=torch.Generator().manual_seed(0))
        data[:] = 0  # in place, on the caller's side
        torch.testing.assert_close(s.sample(20, generator=torch.Generator().manual_seed(0)), before)
        torch.testing.assert_close(s.landmarks_, faces)

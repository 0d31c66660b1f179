"""Loading a saved sampler validates everything in one place (wbaug.sampling.persistence.validate_state):
tampered files (NaN landmarks, flipped bytes, empty config, out-of-range kNN indices, inconsistent
tables) and truncated or garbage files raise ValueError naming the file -- with the checksum intact
(re-computed after tampering) the structural checks must still catch each case."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wbaug.sampling import WassersteinBarycentricSampler
from wbaug.sampling.persistence import CONFIG_KEYS, load_state, state_checksum


def _fitted(correspondence="index", m=14, n=5):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 2, generator=g) * 30 + torch.randn(m, n, 2, generator=g)
    return WassersteinBarycentricSampler(k_neighbors=3, correspondence=correspondence).fit(x)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("persist") / "s.pt"
    _fitted().save(path)
    return path


def _rewrite(src, dst, edit, *, fix_checksum=True):
    raw = torch.load(src, weights_only=True)
    edit(raw)
    if fix_checksum:
        raw["checksum"] = state_checksum(raw)
    torch.save(raw, dst)
    return dst


def test_config_keys_match_the_sampler():
    assert set(CONFIG_KEYS) == set(WassersteinBarycentricSampler().get_params())


def test_roundtrip_ragged_and_map_location(tmp_path):
    g = torch.Generator().manual_seed(0)
    clouds = [torch.randn(int(k), 2, generator=g) * 3 for k in torch.randint(3, 7, (10,), generator=g)]
    s = WassersteinBarycentricSampler(k_neighbors=2, correspondence="ot").fit(clouds)
    s.save(tmp_path / "r.pt")
    t = WassersteinBarycentricSampler.load(tmp_path / "r.pt", map_location="cpu")
    assert t.cliques_ == s.cliques_
    assert all(torch.equal(a, b) for a, b in zip(t.landmarks_, s.landmarks_))


def _set_nan(raw):
    raw["landmarks"][0, 0, 0] = float("nan")


def _empty_config(raw):
    raw["config"] = "{}"


def _knn_out_of_range(raw):
    raw["knn_indices"][2, 1] = 99


def _knn_self(raw):
    raw["knn_indices"][2, 0] = 2


def _knn_distance_mismatch(raw):
    raw["knn_distances"][1, 0] += 5.0


def _pairs_reversed(raw):
    raw["pair_rows"], raw["pair_cols"] = raw["pair_cols"].clone(), raw["pair_rows"].clone()


def _duplicate_pair(raw):
    for key in ("pair_rows", "pair_cols", "pair_values"):
        raw[key] = torch.cat([raw[key], raw[key][:1]])


def _pair_nan(raw):
    raw["pair_values"][0] = float("nan")


def _knn_float(raw):
    raw["knn_indices"] = raw["knn_indices"].double()


def _k_mismatch(raw):
    raw["knn_indices"] = raw["knn_indices"][:, :2].clone()
    raw["knn_distances"] = raw["knn_distances"][:, :2].clone()


def _config_not_json(raw):
    raw["config"] = "{k_neighbors: 3"


def _bad_epsilon(raw):
    raw["config"] = raw["config"].replace('"epsilon": null', '"epsilon": -1.0')


def _missing_entry(raw):
    del raw["pair_values"]


def _version(raw):
    raw["version"] = 1


def _clique_rows_swapped(raw):
    raw["clique_table"][[0, 1]] = raw["clique_table"][[1, 0]].clone()
    raw["clique_mask"][[0, 1]] = raw["clique_mask"][[1, 0]].clone()


def _clique_outside(raw):
    raw["clique_table"][-1, 0] = raw["knn_indices"].shape[0]


def _clique_not_a_clique(raw):
    # row 0 becomes (0, v) for a set v that is no neighbour of set 0
    knn = raw["knn_indices"]
    linked = set(knn[0].tolist()) | {i for i, row in enumerate(knn.tolist()) if 0 in row} | {0}
    v = min(set(range(knn.shape[0])) - linked)
    table, mask = raw["clique_table"], raw["clique_mask"]
    table[0], mask[0] = 0, False
    table[0, 1], mask[0, :2] = v, True


def _clique_not_maximal(raw):
    # drop the last vertex of a clique that is not among the widest: a subset of a maximal clique
    table, mask = raw["clique_table"], raw["clique_mask"]
    sizes = mask.sum(1)
    r = int(torch.nonzero((sizes >= 2) & (sizes < table.shape[1]))[0])
    last = int(sizes[r]) - 1
    mask[r, last], table[r, last] = False, table[r, 0]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_set_nan, "'landmarks' contains NaN"),
        (_empty_config, "'config' keys: missing"),
        (_knn_out_of_range, "'knn_indices' holds indices outside"),
        (_knn_self, "own neighbour"),
        (_knn_distance_mismatch, "disagree with the pair table"),
        (_pairs_reversed, "0 <= row < col"),
        (_pair_nan, "'pair_values' has NaN"),
        (_duplicate_pair, "duplicate pairs"),
        (_knn_float, "'knn_indices' has dtype"),
        (_k_mismatch, "expected (M, k_neighbors)"),
        (_config_not_json, "not valid JSON"),
        (_bad_epsilon, "epsilon=-1.0"),
        (_missing_entry, "entries"),
        (_version, "format version 1"),
        (_clique_rows_swapped, "'clique_table' rows must be distinct and sorted"),
        (_clique_outside, "'clique_table' holds vertices outside"),
        (_clique_not_a_clique, "not a clique"),
        (_clique_not_maximal, "not maximal"),
    ],
)
def test_tampered_state_is_refused_naming_the_file(saved, tmp_path, edit, words):
    """Each tampering with a re-computed (valid) checksum is caught by the structural checks; with the
    stale checksum it is caught as a checksum mismatch. Both name the file."""
    bad = _rewrite(saved, tmp_path / "bad.pt", edit)
    with pytest.raises(ValueError) as info:
        WassersteinBarycentricSampler.load(bad)
    assert str(bad) in str(info.value) and words in str(info.value)
    if edit not in (_missing_entry, _version):
        stale = _rewrite(saved, tmp_path / "stale.pt", edit, fix_checksum=False)
        with pytest.raises(ValueError, match="checksum mismatch") as info:
            load_state(stale)
        assert str(stale) in str(info.value)


def test_flipped_byte_in_landmark_data_is_caught_by_the_checksum(saved, tmp_path):
    """torch stores tensor bytes uncompressed and unverified: a flipped byte in the landmark data loads
    silently without the checksum (the landmark moves); with it, ValueError naming the file."""
    data = bytearray(saved.read_bytes())
    landmarks = torch.load(saved, weights_only=True)["landmarks"]
    raw_bytes = landmarks.contiguous().view(torch.uint8).numpy().tobytes()
    at = bytes(data).find(raw_bytes)
    assert at > 0
    data[at + 3] ^= 0x40  # the high byte of landmarks[0, 0, 0] (float32, little endian)
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    moved = torch.load(bad, weights_only=True)["landmarks"]
    assert not torch.equal(moved, landmarks)  # the raw format itself does not notice
    with pytest.raises(ValueError, match="checksum mismatch") as info:
        WassersteinBarycentricSampler.load(bad)
    assert str(bad) in str(info.value)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 0.999))
def test_truncated_file_raises_value_error_naming_it(saved, tmp_path_factory, fraction):
    """Any truncation (0 bytes up to all but one byte) -> ValueError naming the file, never EOFError,
    OSError or a reader error without the path."""
    data = saved.read_bytes()
    bad = tmp_path_factory.mktemp("trunc") / "cut.pt"
    bad.write_bytes(data[: int(fraction * len(data))])
    with pytest.raises(ValueError) as info:
        load_state(bad)
    assert str(bad) in str(info.value)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**9), st.integers(1, 255))
def test_any_flipped_byte_fails_loudly_or_changes_nothing(saved, tmp_path_factory, where, mask):
    """A byte flipped anywhere: either ValueError naming the file, or (a byte the reader ignores, e.g. in
    the zip headers' padding) the loaded sampler equals the original exactly -- never silent garbage."""
    data = bytearray(saved.read_bytes())
    data[where % len(data)] ^= mask
    bad = tmp_path_factory.mktemp("flip") / "f.pt"
    bad.write_bytes(bytes(data))
    ref = WassersteinBarycentricSampler.load(saved)
    try:
        got = WassersteinBarycentricSampler.load(bad)
    except ValueError as err:
        assert str(bad) in str(err)
        return
    assert torch.equal(got.landmarks_, ref.landmarks_)
    assert torch.equal(got.knn_indices_, ref.knn_indices_)
    assert got.get_params() == ref.get_params()


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04" + b"\x00" * 40])
def test_garbage_file(tmp_path, content):
    bad = tmp_path / "g.pt"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match="cannot read a saved sampler") as info:
        WassersteinBarycentricSampler.load(bad)
    assert str(bad) in str(info.value)


def test_missing_file_and_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_state(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a saved WassersteinBarycentricSampler") as info:
        load_state(tmp_path / "other.pt")
    assert str(tmp_path / "other.pt") in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{}, {"symmetrize": "mutual", "isolated": "drop"}, {"max_clique_size": 2}, {"epsilon": 2.5}]
)
def test_load_keeps_the_cliques_and_builds_the_graph_on_demand(tmp_path, kwargs):
    """The file stores the maximal cliques (format 3): a load takes them as they are (validated), equal to
    the fit's, and ``graph_`` is the fit's graph, edges and weights, built on first access."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(5, 2, generator=g) * 30 + 2 * torch.randn(40, 5, 2, generator=g)
    fitted = WassersteinBarycentricSampler(k_neighbors=3, **kwargs).fit(x)
    fitted.save(tmp_path / "s.pt")
    loaded = WassersteinBarycentricSampler.load(tmp_path / "s.pt")
    assert loaded.cliques_ == fitted.cliques_
    assert torch.equal(loaded.clique_table_, fitted.clique_table_)
    assert torch.equal(loaded.clique_probs_, fitted.clique_probs_)
    assert loaded._graph is None and repr(loaded) == repr(fitted)  # the repr does not build the graph
    assert sorted(loaded.graph_.edges(data="weight")) == sorted(fitted.graph_.edges(data="weight"))
    assert loaded.graph_.number_of_nodes() == 40

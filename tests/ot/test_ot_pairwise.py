"""pairwise_wasserstein against a loop of POT's ``ot.emd2`` (equal and ragged clouds), chunking invariance,
symmetry with an exact zero diagonal, progress bar and device/dtype of the result."""

import numpy as np
import ot
import pytest
import torch

from wbaug.ot import pairwise_wasserstein


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _pot_matrix(clouds, weights=None):
    """Reference W2 matrix from ot.emd2 on every pair (float64)."""
    m = len(clouds)
    out = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            x, y = clouds[i].double().numpy(), clouds[j].double().numpy()
            a = np.full(len(x), 1 / len(x)) if weights is None else weights[i].double().numpy()
            b = np.full(len(y), 1 / len(y)) if weights is None else weights[j].double().numpy()
            cost = ((x[:, None] - y[None]) ** 2).sum(-1)  # exact form (ot.dist's expansion is off by ~1e-16)
            out[i, j] = np.sqrt(max(ot.emd2(a, b, cost), 0.0))
    return torch.from_numpy(out)


@pytest.mark.parametrize("d", [2, 3])
def test_equal_clouds_match_pot(d):
    """(M, N, D) tensor: every entry equals sqrt(emd2) to 1e-6 relative; symmetric, exact zero diagonal."""
    clouds = torch.randn(9, 20, d, generator=_gen(d), dtype=torch.float64)
    got = pairwise_wasserstein(clouds)
    torch.testing.assert_close(got, _pot_matrix(clouds), rtol=1e-6, atol=1e-12)
    assert torch.equal(got, got.T)
    assert (got.diagonal() == 0).all()


def test_chunking_does_not_change_result():
    """Tiny chunks (many solver batches) give bit-identical results to one big chunk."""
    clouds = torch.randn(12, 15, 2, generator=_gen(1), dtype=torch.float64)
    torch.testing.assert_close(
        pairwise_wasserstein(clouds, chunk_size=5), pairwise_wasserstein(clouds), rtol=0, atol=0
    )


def test_ragged_list_and_weights_match_pot():
    """A list of clouds of different sizes, with and without point weights, uses exact network simplex."""
    g = _gen(2)
    clouds = [torch.randn(s, 2, generator=g, dtype=torch.float64) for s in (5, 9, 7, 12)]
    got = pairwise_wasserstein(clouds, chunk_size=4)
    torch.testing.assert_close(got, _pot_matrix(clouds), rtol=1e-6, atol=1e-12)
    weights = []
    for c in clouds:
        w = torch.rand(len(c), generator=g, dtype=torch.float64) + 0.1
        weights.append(w / w.sum())
    torch.testing.assert_close(
        pairwise_wasserstein(clouds, weights=weights), _pot_matrix(clouds, weights), rtol=1e-6, atol=1e-12
    )


def test_equal_size_list_is_stacked_and_float32():
    """A list of equal-size float32 clouds gives a float32 matrix equal to the stacked tensor call."""
    clouds = torch.randn(6, 10, 2, generator=_gen(3)) * 30
    got = pairwise_wasserstein(list(clouds))
    assert got.dtype == torch.float32 and got.shape == (6, 6)
    torch.testing.assert_close(got, pairwise_wasserstein(clouds))
    torch.testing.assert_close(got.double(), _pot_matrix(clouds), rtol=1e-5, atol=1e-4)


def test_p1_and_single_cloud():
    """p=1 uses Euclidean (not squared) cost; a single cloud gives a 1x1 zero matrix."""
    clouds = torch.randn(4, 6, 2, generator=_gen(4), dtype=torch.float64)
    got = pairwise_wasserstein(clouds, p=1)
    x, y = clouds[0].numpy(), clouds[1].numpy()
    ref = ot.emd2(np.full(6, 1 / 6), np.full(6, 1 / 6), ot.dist(x, y, metric="euclidean"))
    torch.testing.assert_close(got[0, 1], torch.tensor(ref, dtype=torch.float64), rtol=1e-9, atol=0)
    assert torch.equal(pairwise_wasserstein(clouds[:1]), torch.zeros(1, 1, dtype=torch.float64))


def test_progress_bar(capsys):
    """progress=True draws a tqdm bar (on stderr) and does not change the result."""
    clouds = torch.randn(5, 8, 2, generator=_gen(5), dtype=torch.float64)
    got = pairwise_wasserstein(clouds, progress=True)
    assert "pairwise" in capsys.readouterr().err
    torch.testing.assert_close(got, pairwise_wasserstein(clouds))


def test_bad_inputs():
    """Wrong rank, empty lists, mismatched dims and bad chunk sizes raise errors naming the argument."""
    with pytest.raises(ValueError, match="clouds"):
        pairwise_wasserstein(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="clouds"):
        pairwise_wasserstein([])
    with pytest.raises(ValueError, match=r"clouds\[1\]"):
        pairwise_wasserstein([torch.zeros(3, 2), torch.zeros(3, 3)])
    with pytest.raises(ValueError, match="chunk_size"):
        pairwise_wasserstein(torch.zeros(2, 3, 2), chunk_size=0)
    with pytest.raises(ValueError, match="clouds"):
        pairwise_wasserstein(torch.full((2, 3, 2), float("nan")))
    with pytest.raises(ValueError, match="weights"):
        pairwise_wasserstein([torch.zeros(3, 2), torch.zeros(4, 2)], weights=[torch.ones(3) / 3])


@pytest.mark.parametrize(("num", "chunk"), [(2, 5), (5, 3), (10, 1), (7, 100), (30, 17)])
def test_pair_chunks_cover_upper_triangle_lazily(num, chunk):
    """The pair generator yields each i < j exactly once, in row order, at most `chunk` pairs at a time."""
    from wbaug.ot.distance import _pair_chunks

    parts = list(_pair_chunks(num, chunk))
    assert all(i.size <= chunk and i.size == j.size for i, j in parts)
    rows, cols = np.triu_indices(num, 1)
    assert np.array_equal(np.concatenate([i for i, _ in parts]), rows)
    assert np.array_equal(np.concatenate([j for _, j in parts]), cols)

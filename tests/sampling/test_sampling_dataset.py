"""Datasets of sampled landmark sets: determinism independent of workers (map-style), distinct reproducible
per-worker streams (iterable), and that items are barycenters of fitted cliques."""

import pytest
import torch
from torch.utils.data import DataLoader

from wbaug.sampling import (
    BarycentricLandmarksDataset,
    BarycentricLandmarksIterableDataset,
    WassersteinBarycentricSampler,
)


@pytest.fixture(scope="module")
def sampler():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 2, generator=g) * 40 + torch.randn(30, 8, 2, generator=g)
    return WassersteinBarycentricSampler(3, correspondence="index").fit(x)


def _all(loader):
    return torch.cat([b for b in loader])


def test_map_dataset_items_are_clique_barycenters(sampler):
    """Item i with return_info equals sum lambda X over its clique (index mode definition)."""
    ds = BarycentricLandmarksDataset(sampler, 10, seed=3, return_info=True)
    for i in range(10):
        x, info = ds[i]
        verts = [int(v) for v in info["vertices"] if v >= 0]
        ref = sum(info["weights"][k] * sampler.landmarks_[v] for k, v in enumerate(verts))
        torch.testing.assert_close(x, ref)


def test_map_dataset_same_with_0_and_2_workers(sampler):
    """Map-style items depend only on (seed, epoch, index): num_workers=0 and 2 give identical batches;
    set_epoch changes the draw."""
    ds = BarycentricLandmarksDataset(sampler, 24, seed=5)
    a = _all(DataLoader(ds, batch_size=6, num_workers=0))
    b = _all(DataLoader(ds, batch_size=6, num_workers=2))
    torch.testing.assert_close(a, b)
    ds.set_epoch(1)
    assert not torch.equal(a, _all(DataLoader(ds, batch_size=6)))
    with pytest.raises(IndexError):
        ds[24]


def test_iterable_dataset_workers_distinct_and_reproducible(sampler):
    """With DataLoader(generator=g) the stream is reproducible; the two workers' streams differ."""
    ds = BarycentricLandmarksIterableDataset(sampler, 20, batch_size=4)

    def run(seed):
        loader = DataLoader(ds, batch_size=5, num_workers=2, generator=torch.Generator().manual_seed(seed))
        return [b for b in loader]

    first, second = run(0), run(0)
    assert len(first) == 4
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
    # batches alternate between workers 0 and 1: their contents must differ
    assert not torch.equal(first[0], first[1])
    other = run(1)
    assert not torch.equal(first[0], other[0])
    assert sum(len(b) for b in first) == len(ds) == 20


def test_iterable_dataset_explicit_seed_main_process(sampler):
    """A given seed makes the main-process stream reproducible."""
    a = list(BarycentricLandmarksIterableDataset(sampler, 7, batch_size=3, seed=1))
    b = list(BarycentricLandmarksIterableDataset(sampler, 7, batch_size=3, seed=1))
    assert len(a) == 7
    torch.testing.assert_close(torch.stack(a), torch.stack(b))


def test_dataset_bad_arguments(sampler):
    with pytest.raises(ValueError, match="sampler"):
        BarycentricLandmarksDataset(WassersteinBarycentricSampler(), 3)
    with pytest.raises(ValueError, match="length"):
        BarycentricLandmarksDataset(sampler, -1)
    with pytest.raises(TypeError, match="len"):
        len(BarycentricLandmarksIterableDataset(sampler))

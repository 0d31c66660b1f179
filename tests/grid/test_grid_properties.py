"""Hypothesis properties of the grid barycenters, heatmap barycenters, linearised barycenter, bad input.

* mass: the barycenter's mass is ``sum_k w_k mass(a_k)`` (up to the marginal error);
* symmetry: permuting the densities and the weights together leaves the barycenter unchanged;
* scaling domain == log domain: the fast scaling-domain solver (with its range guard and hand-over)
  returns the log-domain barycenter on random problems, zeros and small ``reg`` included;
* heatmap_barycenter of a landmark set and its translate peaks at the interpolated positions;
* linearized_barycenter keeps unit mass and moves the centre of mass to the weighted mean.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.testing import assert_close

from wbaug.grid import (
    convolutional_barycenter,
    debiased_barycenter,
    heatmap_barycenter,
    linearized_barycenter,
    transport_maps_from_uniform,
)

SEEDS = st.integers(0, 2**31 - 1)


def random_problem(seed: int, k: int, size: int = 12):
    g = torch.Generator().manual_seed(seed)
    dens = torch.rand(1, k, size, size, generator=g, dtype=torch.float64) ** 3
    dens = dens * (0.5 + 2 * torch.rand(1, k, 1, 1, generator=g, dtype=torch.float64))  # unequal masses
    w = torch.rand(1, k, generator=g, dtype=torch.float64) + 0.05
    return dens, w


@given(seed=SEEDS, k=st.integers(1, 4), debiased=st.booleans())
def test_mass_conservation(seed, k, debiased):
    """bar.sum() == sum_k w_k mass_k (weights rescaled onto the simplex)."""
    dens, w = random_problem(seed, k)
    fn = debiased_barycenter if debiased else convolutional_barycenter
    bar = fn(dens, w, reg=5e-2, max_iter=40, tol=1e-10)
    expected = ((w / w.sum()) * dens.sum(dim=(-1, -2))).sum()
    assert_close(bar.sum(), expected, atol=1e-4 * float(expected), rtol=0)
    assert (bar >= 0).all()


@given(seed=SEEDS, k=st.integers(2, 4), perm_seed=SEEDS)
def test_symmetry_in_input_order(seed, k, perm_seed):
    """Permuting (densities, weights) jointly gives the same barycenter."""
    dens, w = random_problem(seed, k)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(perm_seed))
    a = convolutional_barycenter(dens, w, reg=2e-2, max_iter=20, tol=0.0)
    b = convolutional_barycenter(dens[:, perm], w[:, perm], reg=2e-2, max_iter=20, tol=0.0)
    assert_close(a, b, atol=1e-12, rtol=0)


@given(
    seed=SEEDS,
    k=st.integers(1, 3),
    size=st.integers(6, 20),
    reg=st.floats(2e-3, 5e-2),
    zero_fraction=st.floats(0.0, 0.9),
    debiased=st.booleans(),
)
def test_scaling_domain_equals_log_domain(seed, k, size, reg, zero_fraction, debiased):
    """``method="scaling"`` (which may hand over to the log domain mid-solve) == ``method="log"``:
    1e-12 in L1 and 1e-9 relative on every entry above 1e-280."""
    dens, w = random_problem(seed, k, size)
    g = torch.Generator().manual_seed(seed + 1)
    dens = dens * (torch.rand(dens.shape, generator=g, dtype=torch.float64) >= zero_fraction)
    dens[..., 0, 0] += 1e-3  # keep every density's mass positive
    fn = debiased_barycenter if debiased else convolutional_barycenter
    bar = fn(dens, w, reg=reg, max_iter=30, tol=0.0, method="scaling")
    ref = fn(dens, w, reg=reg, max_iter=30, tol=0.0, method="log")
    assert_close(bar, ref, atol=1e-12, rtol=0)
    keep = ref > 1e-280
    assert float(((bar - ref).abs() / ref)[keep].max()) < 1e-9


@given(
    seed=SEEDS,
    size=st.integers(4, 20),
    exponent=st.floats(20.0, 400.0),
    zero_fraction=st.floats(0.0, 0.9),
)
def test_transport_maps_scaling_equals_log_domain(seed, size, exponent, zero_fraction):
    """Uniform-to-density transport maps: ``method="scaling"`` (guarded, may hand over to the log
    domain) == ``method="kernel"`` (log domain) to 1e-9 px; ``reg = (size - 1)^2 / exponent`` pixels."""
    dens, _ = random_problem(seed, 2, size)
    g = torch.Generator().manual_seed(seed + 1)
    dens = dens[0] * (torch.rand(dens.shape[1:], generator=g, dtype=torch.float64) >= zero_fraction)
    dens[..., 0, 0] += 1e-3
    reg = (size - 1) ** 2 / exponent
    fast = transport_maps_from_uniform(dens, reg=reg, max_iter=40, tol=0.0, method="scaling")
    ref = transport_maps_from_uniform(dens, reg=reg, max_iter=40, tol=0.0, method="kernel")
    assert_close(fast, ref, atol=1e-9, rtol=0)


def test_transport_maps_scaling_non_square():
    """17 x 29 grid: the transposed-layout map products keep x and y apart (scaling = log domain)."""
    g = torch.Generator().manual_seed(0)
    dens = torch.rand(3, 17, 29, generator=g, dtype=torch.float64) ** 3
    fast = transport_maps_from_uniform(dens, reg=3.0, max_iter=50, tol=0.0, method="scaling")
    ref = transport_maps_from_uniform(dens, reg=3.0, max_iter=50, tol=0.0, method="kernel")
    assert fast.shape == (3, 17, 29, 2)
    assert_close(fast, ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize(("n", "exponent"), [(16, 380), (32, 360), (32, 600)])
def test_transport_maps_hand_over(n, exponent, monkeypatch):
    """Tiny corner supports at small ``reg``: the scalings leave the safe range after some iterations
    (measured: 25, 5 and 1); the log domain takes over from there and the maps equal a log-domain solve."""
    import wbaug.grid.linearized as linearized

    starts = []
    log_solve = linearized._maps_log

    def spy(*args, **kwargs):
        starts.append(args[5])
        return log_solve(*args, **kwargs)

    monkeypatch.setattr(linearized, "_maps_log", spy)
    dens = torch.zeros(2, n, n, dtype=torch.float64)
    dens[0, :2, :2] = 1
    dens[1, -3:, :3] = 1
    dens[1, 0, -1] = 1e-3
    reg = (n - 1) ** 2 / exponent
    fast = transport_maps_from_uniform(dens, reg=reg, max_iter=100, tol=0.0, method="scaling")
    assert len(starts) == 1 and 1 <= starts[0] < 100
    ref = transport_maps_from_uniform(dens, reg=reg, max_iter=100, tol=0.0, method="kernel")
    assert_close(fast, ref, atol=1e-9, rtol=0)


@given(s=st.floats(0.2, 0.8), shift=st.integers(6, 14))
def test_heatmap_barycenter_peaks_at_interpolation(s, shift):
    """Barycenter of the heatmaps of landmarks P and P + t with weights (1-s, s): each landmark's peak
    lies within 1 px of p + s t (translation is exact for W2; the entropic blur is isotropic)."""
    pts = torch.tensor([[6.0, 6.0], [6.0, 24.0], [20.0, 14.0]])
    t = torch.tensor([float(shift), 2.0])
    lm = torch.stack([pts, pts + t])[None]
    bar = heatmap_barycenter(lm, torch.tensor([[1 - s, s]]), size=(32, 40), sigma=1.0, reg=3.0, max_iter=150)
    assert_close(bar.sum(), torch.tensor(1.0), atol=1e-3, rtol=0)
    target = pts + s * t
    for p in target:
        x0, y0 = int(p[0].round()), int(p[1].round())
        win = bar[0, y0 - 3 : y0 + 4, x0 - 3 : x0 + 4]
        iy, ix = divmod(int(win.argmax()), win.shape[1])
        assert abs(x0 - 3 + ix - float(p[0])) <= 1.0 and abs(y0 - 3 + iy - float(p[1])) <= 1.0
        assert float(win.max()) > 0.5 * float(bar.max())


def test_linearized_barycenter_properties():
    """Unit mass; e_0 returns a_0 up to L1 0.2; the centre of mass of the 50/50 barycenter of two boxes is
    the mean of their centres (0.05 px); debias=False shrinks toward the centre, debias removes it."""
    a = torch.zeros(1, 2, 32, 32, dtype=torch.float64)
    a[0, 0, 4:10, 5:12] = 1
    a[0, 1, 20:28, 18:25] = 1
    a = a / a.sum(dim=(-1, -2), keepdim=True)
    ys, xs = torch.meshgrid(
        torch.arange(32.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64), indexing="ij"
    )
    maps = transport_maps_from_uniform(a, reg=2.0)
    bar = linearized_barycenter(a, torch.tensor([[0.5, 0.5]], dtype=torch.float64), reg=2.0, maps=maps)
    assert_close(bar.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-10, rtol=0)
    for coord in (xs, ys):
        mean = 0.5 * float((a[0, 0] * coord).sum() + (a[0, 1] * coord).sum())
        assert abs(float((bar[0] * coord).sum()) - mean) < 0.05
    e0 = linearized_barycenter(a, torch.tensor([[1.0, 0.0]], dtype=torch.float64), reg=2.0, maps=maps)
    assert float((e0[0] - a[0, 0]).abs().sum()) < 0.2
    # the maps of the uniform density are close to the identity only after debiasing
    uni = torch.ones(1, 32, 32, dtype=torch.float64)
    t0 = transport_maps_from_uniform(uni, reg=2.0)[0]
    assert float((t0[..., 0] - xs).abs().max()) > 0.1  # entropic shrinkage exists
    same = linearized_barycenter(uni[None], reg=2.0)
    assert_close(same[0], uni[0] / uni.sum(), atol=1e-9, rtol=0)
    # a precomputed self map gives exactly the same barycenter as recomputing it
    w = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    assert_close(
        linearized_barycenter(a, w, reg=2.0, maps=maps, self_map=t0),
        linearized_barycenter(a, w, reg=2.0, maps=maps),
        atol=0,
        rtol=0,
    )
    with pytest.raises(ValueError, match="self_map"):
        linearized_barycenter(a, w, reg=2.0, maps=maps, self_map=t0[:-1])


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"densities": torch.ones(2, 8, 8)}, ValueError, "densities"),
        ({"densities": torch.ones(1, 2, 8, 8, dtype=torch.long)}, TypeError, "densities"),
        ({"densities": -torch.ones(1, 2, 8, 8)}, ValueError, "densities"),
        ({"densities": [[1.0]]}, TypeError, "densities"),
        ({"weights": torch.ones(1, 3)}, ValueError, "weights"),
        ({"weights": torch.tensor([[1.0, -1.0]])}, ValueError, "weights"),
        ({"weights": torch.zeros(1, 2)}, ValueError, "weights"),
        ({"reg": 0.0}, ValueError, "reg"),
        ({"reg": "1"}, TypeError, "reg"),
        ({"units": "mm"}, ValueError, "units"),
        ({"method": "fft"}, ValueError, "method"),
        ({"max_iter": 0}, ValueError, "max_iter"),
    ],
)
def test_bad_input(kwargs, exc, name):
    args = {"densities": torch.ones(1, 2, 8, 8), "weights": torch.ones(1, 2), "reg": 1e-2, **kwargs}
    with pytest.raises(exc, match=name):
        convolutional_barycenter(**args)


def test_heatmap_bad_input():
    with pytest.raises(ValueError, match="landmarks"):
        heatmap_barycenter(torch.ones(2, 5, 2), size=16, sigma=1.0, reg=1.0)
    with pytest.raises(ValueError, match="size"):
        heatmap_barycenter(torch.ones(1, 2, 5, 2), size=0, sigma=1.0, reg=1.0)

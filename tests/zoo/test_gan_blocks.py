"""Tests of the StyleGAN2 building blocks in ``zoo.common.gan``.

What is checked, and against what:

* equalised lr: the effective weight is ``W·lr_mul/√fan_in`` (closed form), so the output of a unit-variance
  input has unit-order variance whatever ``lr_mul``;
* modulated convolution: the grouped-conv and scale-activations forms agree on random shapes (hypothesis);
  both equal an explicit per-sample ``conv2d`` with hand-modulated weights; with demodulation and no padding
  every output channel's effective weights have unit norm, so i.i.d. unit inputs give unit output variance;
* minibatch stddev: matches a direct per-group computation, and works for batch sizes not divisible by
  the group (the group shrinks to a divisor);
* R1: equals ``‖a‖²`` for a linear discriminator and a central finite-difference gradient for a small
  non-linear one (float64);
* lazy Adam: ``lr·k/(k+1)``, ``betas**(k/(k+1))``;
* EMA: ``p_ema = β p_ema_old + (1 − β) p`` for parameters, buffers copied exactly;
* generator / discriminator: shapes, conditions required, gradient reaching the condition maps, noise
  from an explicit generator is reproducible; the mapping network tracks ``w_avg`` only in training.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from zoo.common.gan import (
    EqualLinear,
    MappingNetwork,
    ResidualDiscriminator,
    StyleGenerator,
    d_logistic_loss,
    ema_beta,
    feature_matching_loss,
    g_nonsaturating_loss,
    lazy_adam,
    lazy_adam_hparams,
    make_ema,
    minibatch_stddev,
    modulated_conv2d,
    num_latents,
    r1_penalty,
    update_ema,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_modulated(x, weight, styles, demodulate, padding):
    outs = []
    for b in range(x.shape[0]):
        w = weight * styles[b][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        outs.append(F.conv2d(x[b : b + 1], w, padding=padding))
    return torch.cat(outs)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 4),
    i=st.integers(1, 6),
    o=st.integers(1, 6),
    k=st.sampled_from([1, 3]),
    hw=st.integers(3, 7),
    demod=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_modulated_conv_forms_agree(b, i, o, k, hw, demod, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, i, hw, hw, generator=g, dtype=torch.float64)
    weight = torch.randn(o, i, k, k, generator=g, dtype=torch.float64)
    styles = torch.randn(b, i, generator=g, dtype=torch.float64) + 1.0
    fused = modulated_conv2d(x, weight, styles, demodulate=demod, padding=k // 2, fused=True)
    split = modulated_conv2d(x, weight, styles, demodulate=demod, padding=k // 2, fused=False)
    ref = _reference_modulated(x, weight, styles, demod, k // 2)
    torch.testing.assert_close(fused, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(split, ref, rtol=1e-9, atol=1e-9)


@settings(max_examples=10, deadline=None)
@given(i=st.integers(2, 16), o=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_demodulated_output_has_unit_variance(i, o, seed):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(o, i, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.rand(2, i, generator=g, dtype=torch.float64) * 3 + 0.1  # arbitrary positive styles
    x = torch.randn(2, i, 64, 64, generator=g, dtype=torch.float64)
    out = modulated_conv2d(x, weight, styles, demodulate=True, padding=0)
    # sum of unit-norm weights times i.i.d. N(0,1): Var = 1 exactly; 62*62 samples per channel
    var = out.var(dim=(2, 3))
    assert torch.all((var - 1).abs() < 0.25), var
    # without demodulation the variance follows the (large) styles instead
    raw = modulated_conv2d(x, weight, styles * 10, demodulate=False, padding=0).var(dim=(2, 3))
    assert raw.mean() > 10


def test_equal_linear_runtime_scale():
    lin = EqualLinear(64, 8, lr_mul=0.01, bias_init=1.0)
    x = torch.randn(5, 64)
    expected = x @ (lin.weight * 0.01 / math.sqrt(64)).t() + lin.bias * 0.01
    torch.testing.assert_close(lin(x), expected)
    assert lin.weight.std() > 10  # stored as randn / lr_mul
    big = EqualLinear(256, 256)(torch.randn(512, 256))
    assert 0.7 < float(big.detach().std()) < 1.3


def _mbstd_reference(x, g):
    b = x.shape[0]
    out = torch.empty(b)
    m = b // g
    for j in range(m):
        members = x[j::m]  # sample b belongs to group b mod (B/G)
        out[j::m] = (members.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    return out


@pytest.mark.parametrize(
    "batch,group,expected_g", [(8, 4, 4), (6, 4, 3), (5, 4, 5), (2, 4, 2), (7, 4, 7), (1, 4, 1)]
)
def test_minibatch_stddev_any_batch(batch, group, expected_g):
    x = torch.randn(batch, 4, 3, 3, dtype=torch.float64)
    y = minibatch_stddev(x, group_size=group)
    assert y.shape == (batch, 5, 3, 3)
    torch.testing.assert_close(y[:, :4], x)
    ref = _mbstd_reference(x.float(), expected_g)
    torch.testing.assert_close(y[:, 4, 0, 0].float(), ref, rtol=1e-4, atol=1e-4)
    assert torch.all(y[:, 4] == y[:, 4, :1, :1])


def test_r1_linear_discriminator_closed_form():
    a = torch.randn(3, 4, 4, dtype=torch.float64)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    logits = (x * a).sum(dim=(1, 2, 3))
    torch.testing.assert_close(r1_penalty(logits, x), a.square().sum())


def test_r1_matches_finite_differences():
    torch.manual_seed(0)
    disc = ResidualDiscriminator(8, 1, channel_base=32, channel_max=4).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(disc(x), x)
    # finite-difference gradient of sum_b D(x_b) (mbstd couples the batch, as in training)
    eps = 1e-6
    flat = x.detach().clone().flatten()
    grad = torch.empty_like(flat)
    with torch.no_grad():
        for j in range(flat.numel()):
            up, dn = flat.clone(), flat.clone()
            up[j] += eps
            dn[j] -= eps
            grad[j] = (disc(up.view_as(x)).sum() - disc(dn.view_as(x)).sum()) / (2 * eps)
    ref = grad.view_as(x).square().flatten(1).sum(1).mean()
    torch.testing.assert_close(r1.double(), ref, rtol=1e-4, atol=1e-6)
    r1.backward()  # differentiable (create_graph) for the penalty step
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def test_r1_requires_grad_input():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="real_inputs"):
        r1_penalty(x.sum(1), x)


def test_logistic_losses():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = F.softplus
    torch.testing.assert_close(d_logistic_loss(real, fake), sp(-real).mean() + sp(fake).mean())
    torch.testing.assert_close(g_nonsaturating_loss(fake), sp(-fake).mean())


def test_lazy_adam_correction():
    lr, betas = lazy_adam_hparams(2e-3, (0.0, 0.99), 4)
    assert lr == pytest.approx(2e-3 * 4 / 5)
    assert betas == pytest.approx((0.0, 0.99**0.8))
    assert lazy_adam_hparams(1e-3, (0.5, 0.9), 0) == (1e-3, (0.5, 0.9))
    opt = lazy_adam([torch.nn.Parameter(torch.zeros(1))], 4e-4, (0.0, 0.99), interval=16)
    assert opt.param_groups[0]["lr"] == pytest.approx(4e-4 * 16 / 17)
    assert opt.param_groups[0]["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    with pytest.raises(ValueError, match="interval"):
        lazy_adam_hparams(1e-3, (0.0, 0.99), -1)


def test_ema_formula_and_buffers():
    torch.manual_seed(0)
    net = MappingNetwork(8, 8, num_layers=2)
    ema = make_ema(net)
    assert not any(p.requires_grad for p in ema.parameters())
    old = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    net.train()
    net(torch.randn(4, 8))  # updates the w_avg buffer
    beta = ema_beta(8, 10.0)
    assert beta == pytest.approx(0.5 ** (8 / 10000))
    update_ema(ema, net, beta)
    for name, p in net.named_parameters():
        expected = beta * old[name] + (1 - beta) * p.detach()
        torch.testing.assert_close(ema.state_dict()[name], expected)
        assert not torch.equal(ema.state_dict()[name], p.detach())
    torch.testing.assert_close(ema.w_avg, net.w_avg, rtol=0, atol=0)
    assert net.w_avg.abs().sum() > 0


def test_mapping_tracks_w_avg_only_in_training():
    net = MappingNetwork(4, 6, num_layers=1).eval()
    net(torch.randn(3, 4))
    assert torch.all(net.w_avg == 0)
    with pytest.raises(ValueError, match="z must be"):
        net(torch.randn(3, 5))


def test_generator_shapes_conditions_and_noise():
    torch.manual_seed(0)
    cond_ch = {4: 2, 8: 2, 16: 2}
    G = StyleGenerator(16, 8, channel_base=64, channel_max=16, cond_channels=cond_ch)
    assert G.num_latents == num_latents(16) == 6
    cond = {r: torch.rand(3, 2, r, r, requires_grad=True) for r in cond_ch}
    with torch.no_grad():  # make the noise matter
        for m in G.modules():
            if hasattr(m, "strength"):
                m.strength.fill_(0.5)
    out_a = G(torch.randn(3, 6, 8), cond, generator=torch.Generator().manual_seed(1))
    out_b = G(torch.zeros(3, 6, 8), cond, generator=torch.Generator().manual_seed(1))
    assert out_a.shape == (3, 3, 16, 16)
    assert not torch.allclose(out_a, out_b)  # styles matter
    w = torch.randn(3, 8)
    o1 = G(w, cond, generator=torch.Generator().manual_seed(2))
    o2 = G(w, cond, generator=torch.Generator().manual_seed(2))
    o3 = G(w, cond, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    assert not torch.equal(o1, o3)
    o1.square().mean().backward()
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in cond.values())
    with pytest.raises(ValueError, match=r"cond\[8\]"):
        G(w, {4: cond[4], 16: cond[16]})
    with pytest.raises(ValueError, match="power of two"):
        StyleGenerator(12, 8)
    # the unfused (scale-activations) generator computes the same image with the same weights
    G2 = StyleGenerator(16, 8, channel_base=64, channel_max=16, cond_channels=cond_ch, fused=False)
    G2.load_state_dict(G.state_dict())
    o4 = G2(w, cond, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(o4, o1, rtol=1e-4, atol=1e-5)


def test_discriminator_features_and_feature_matching():
    D = ResidualDiscriminator(16, 3, channel_base=64, channel_max=16, mbstd_group=4)
    logits, feats = D(torch.randn(6, 3, 16, 16), return_features=True)
    assert logits.shape == (6,)
    assert [f.shape[-1] for f in feats] == [16, 8, 4]
    fake = torch.randn(6, 3, 16, 16, requires_grad=True)
    _, fake_feats = D(fake, return_features=True)
    fm = feature_matching_loss(fake_feats, feats)
    assert fm > 0
    fm.backward()
    assert fake.grad is not None
    assert float(feature_matching_loss(feats, feats).detach()) == 0.0
    with pytest.raises(ValueError, match="input must be"):
        D(torch.randn(2, 1, 16, 16))


def test_equal_conv_down_pools_first():
    """Pool-then-conv: exactly conv-then-pool for 1×1 kernels (linear ops commute); half size for 3×3."""
    from zoo.common.gan import EqualConv2d

    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    one = EqualConv2d(3, 5, 1, down=True).double()
    ref = F.avg_pool2d(F.conv2d(x, one.weight * one.scale, one.bias), 2)
    torch.testing.assert_close(one(x), ref)
    assert EqualConv2d(3, 5, 3, down=True)(x.float()).shape == (2, 5, 4, 4)


def test_optimizer_group_round_trip():
    from zoo.common.gan import OptimizerGroup

    def make():
        torch.manual_seed(0)
        a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
        return a, b, OptimizerGroup(g=torch.optim.Adam(a.parameters()), d=lazy_adam(b.parameters(), 1e-3))

    a, b, group = make()
    for _ in range(3):
        for opt, net in ((group["g"], a), (group["d"], b)):
            opt.zero_grad()
            net(torch.randn(4, net.in_features)).square().mean().backward()
            opt.step()
    state = group.state_dict()
    assert set(state) == {"g", "d"}
    _, _, fresh = make()
    fresh.load_state_dict(state)
    for name in ("g", "d"):
        got, want = fresh[name].state_dict()["state"], group[name].state_dict()["state"]
        for k in want:
            torch.testing.assert_close(got[k]["exp_avg"], want[k]["exp_avg"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="lacks"):
        fresh.load_state_dict({"g": state["g"]})

"""LiteNeXt: counts and shapes, the Marginal Weight Loss on hand-built masks, SeRP's EMA and loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightseg import create_network
from lightseg.handlers import EMAUpdate
from lightseg.losses import LiteNeXtLoss, MarginalWeightLoss, marginal_weight_map
from lightseg.networks.blocks.litenext import GCF, ChannelLayerNorm, LGEMixer
from lightseg.profiling import profile
from lightseg.training import SeRP, pooled_embedding, serp_cosine_loss

from .conftest import ROOT


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- network
def test_parts_equal_the_reference_counts():
    """../shared/reference/reference_counts.json, "LiteNeXt parts (k=7)"."""
    net = create_network("litenext")
    enc = net.encoder
    parts = {
        "stem": enc.stem, "stage1": enc.stage1, "stage2": enc.stage2, "stage3": enc.stage3, "stage4": enc.stage4,
        "bottleneck_RB": net.bottleneck, "attention_GCF": net.gcf, "decoder_rb4": net.decoder, "head": net.head,
    }  # fmt: skip
    expected = {
        "stem": 240, "stage1": 3488, "stage2": 12704, "stage3": 46912, "stage4": 179840, "bottleneck_RB": 295680,
        "attention_GCF": 168176, "decoder_rb4": 4144, "head": 17,
    }  # fmt: skip
    assert {k: _params(m) for k, m in parts.items()} == expected
    assert _params(net) == 711_201 and _params(create_network("litenext_k3")) == 701_601
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert not list(net.buffers())


def test_macs_equal_the_reference_counters():
    c = profile(create_network("litenext"), (1, 3, 256, 256))
    assert c.conv_macs == 412_273_920  # reference conv_macs
    assert c.bias_macs == 417_452_784  # the paper's 0.42 G: convs + bias + linear


@pytest.mark.parametrize("hw", [(16, 16), (48, 80), (256, 256)])
def test_shapes_and_channels(hw):
    net = create_network("litenext", in_channels=1, out_channels=3).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, *hw)).shape == (2, 3, *hw)
        feats = net.encoder(torch.randn(1, 1, *hw))
    h, w = hw
    assert [tuple(f.shape[1:]) for f in feats] == [
        (16, h // 2, w // 2), (32, h // 4, w // 4), (64, h // 8, w // 8), (128, h // 16, w // 16)
    ]  # fmt: skip
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 1, 24, 32))


def test_lgemixer_follows_equations():
    torch.manual_seed(0)
    block = LGEMixer(8, 7).eval()
    x = torch.randn(2, 8, 12, 12)
    a = F.gelu(block.local_mixer[1](block.local_mixer[0](x)))
    b = F.gelu(block.far_mixer[1](block.far_mixer[0](a)))
    y = F.gelu(block.channel_mixer[1](block.channel_mixer[0](b + a + x)))
    torch.testing.assert_close(block(x), y)
    assert block.far_mixer[0].groups == 8 and block.far_mixer[0].kernel_size == (7, 7)


def test_channel_layernorm_normalizes_each_pixel_over_channels():
    ln = ChannelLayerNorm(5)
    x = torch.randn(2, 5, 3, 4) * 3 + 1
    y = ln(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 3, 4), atol=1e-3, rtol=0)


def test_gcf_output_and_weights():
    torch.manual_seed(0)
    gcf = GCF((4, 8, 16, 32), 32, 32).eval()
    feats = [torch.randn(2, c, 32 // s, 32 // s) for c, s in ((4, 1), (8, 2), (16, 4), (32, 8))]
    out = gcf(feats, torch.randn(2, 32, 4, 4))
    assert out.shape == (2, 64, 32, 32)
    # the weights are a softmax across the four scales, per channel
    keys = [gcf.stages[i](feats[i], [32, 32])[1] for i in range(4)]
    k_b = gcf.bottleneck(torch.randn(2, 32, 4, 4), [32, 32])[1]
    w = torch.softmax(gcf.score(torch.cat([torch.stack(keys, 1), k_b[:, None].expand(2, 4, 32)], 2)), dim=1)
    torch.testing.assert_close(w.sum(1), torch.ones(2, 32))


@pytest.mark.parametrize("channels_last", [False, True])
def test_gcf_mixing_equals_the_stacked_formula(channels_last):
    """GCF sums the weighted scales one by one (no 5-D stack of full-resolution maps): the output and every
    gradient equal the formula as written, ``(stack(values) * weights).sum(scales)``, within 1e-5."""
    torch.manual_seed(0)
    gcf = GCF((4, 8, 16, 32), 32, 32).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    feats = [torch.randn(2, c, 32 // s, 32 // s).to(memory_format=fmt) for c, s in ((4, 1), (8, 2), (16, 4), (32, 8))]
    bottleneck = torch.randn(2, 32, 4, 4).to(memory_format=fmt)

    def stacked(features, b):
        values, keys = zip(*(ctx(f, [32, 32]) for ctx, f in zip(gcf.stages, features, strict=True)), strict=True)
        v_b, k_b = gcf.bottleneck(b, [32, 32])
        key = torch.stack(keys, dim=1)
        weights = torch.softmax(gcf.score(torch.cat([key, k_b.unsqueeze(1).expand_as(key)], dim=2)), dim=1)
        return torch.cat([(torch.stack(values, dim=1) * weights[:, :, :, None, None]).sum(dim=1), v_b], dim=1)

    results = []
    for forward in (gcf, stacked):
        inputs = [f.clone().requires_grad_() for f in feats]
        b = bottleneck.clone().requires_grad_()
        gcf.zero_grad()
        out = forward(inputs, b)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), [i.grad for i in [*inputs, b]], [q.grad.clone() for q in gcf.parameters()]))
    (out_a, in_a, par_a), (out_b, in_b, par_b) = results
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=0)
    for a, b in zip([*in_a, *par_a], [*in_b, *par_b], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- Marginal Weight Loss
def test_weight_map_on_a_hand_built_mask():
    """A 3x3 square in a 7x7 image, k = 3: its centre is the only eroded pixel, the dilation is the 5x5 square
    around it; margin 0.6, object 0.3, background 0.1."""
    mask = torch.zeros(1, 1, 7, 7)
    mask[0, 0, 2:5, 2:5] = 1
    w = marginal_weight_map(mask, kernel_size=3)[0, 0]
    expected = torch.full((7, 7), 0.1)
    expected[1:6, 1:6] = 0.6
    expected[3, 3] = 0.3
    torch.testing.assert_close(w, expected)


def test_weight_map_border_counts_as_background():
    """An object filling the image is eroded at the border (zero padding), as Algorithm 1's box filter."""
    w = marginal_weight_map(torch.ones(1, 1, 5, 5), kernel_size=3, w_margin=1.0, w_object=0.0, w_background=0.0)
    ring = torch.ones(5, 5)
    ring[1:4, 1:4] = 0
    torch.testing.assert_close(w[0, 0], ring)
    # equals Algorithm 1 written with box convolutions (floor / clip)
    torch.manual_seed(0)
    masks = (torch.rand(3, 1, 20, 24) > 0.6).float()
    k = 5
    box = torch.ones(1, 1, k, k)
    dil = F.conv2d(masks, box, padding=k // 2).clamp(0, 1)
    ero = torch.floor(F.conv2d(masks, box / k**2, padding=k // 2) + 1e-2)
    alg1 = 0.6 * (dil - ero) + 0.3 * ero + 0.1 * (1 - dil)
    torch.testing.assert_close(marginal_weight_map(masks, k), alg1)


def test_mwl_value_and_normalization():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 7, 7)
    mask = torch.zeros(2, 1, 7, 7)
    mask[:, :, 2:5, 2:5] = 1
    w = marginal_weight_map(mask, 3)
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    expected = ((w * bce).sum((1, 2, 3)) / w.sum((1, 2, 3))).mean()
    torch.testing.assert_close(MarginalWeightLoss(kernel_size=3)(logits, mask), expected)
    equal = MarginalWeightLoss(kernel_size=3, w_margin=1, w_object=1, w_background=1)
    torch.testing.assert_close(equal(logits, mask), F.binary_cross_entropy_with_logits(logits, mask))
    with pytest.raises(ValueError, match="odd"):
        marginal_weight_map(mask, 4)


# ---------------------------------------------------------------- SeRP
def test_serp_wrapper_and_ema_update():
    torch.manual_seed(0)
    net = create_network("litenext", width=4)
    serp = SeRP(net, momentum=0.9)
    for p_t, p_m in zip(serp.target_encoder.parameters(), net.encoder.parameters(), strict=True):
        assert torch.equal(p_t, p_m) and not p_t.requires_grad  # initialized equal, never trained
    assert serp.target_encoder is not net.encoder
    x = torch.randn(2, 3, 32, 32)
    loss_fn = LiteNeXtLoss(serp)
    y = (torch.rand(2, 1, 32, 32) > 0.5).float()
    opt = torch.optim.SGD([p for p in serp.parameters() if p.requires_grad], lr=0.1)
    loss = loss_fn(serp(x, weak=x.flip(-1)), y)
    loss.backward()
    assert set(loss_fn.last_terms) == {"mwl", "dice", "serp"} and serp.last_serp_loss is None  # consumed
    assert all(p.grad is None for p in serp.target_encoder.parameters())
    assert all(p.grad is not None for p in serp.projector_s.parameters())
    opt.step()
    before = [p.clone() for p in serp.target_encoder.parameters()]
    main = [p.clone() for p in net.encoder.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, main, strict=True))  # the main extractor moved

    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    EMAUpdate(serp).attach(engine)
    engine.run([0], max_epochs=1)  # one iteration: one EMA step
    for t, b, m in zip(serp.target_encoder.parameters(), before, main, strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * m)
    # evaluation / inference: the wrapper returns the network's logits, no SeRP term
    serp.eval()
    with torch.no_grad():
        torch.testing.assert_close(serp(x, weak=x), net.eval()(x))
    assert serp.last_serp_loss is None


def test_serp_cosine_loss_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(serp_cosine_loss(a, a), torch.tensor(0.0))
    torch.testing.assert_close(serp_cosine_loss(a, -a), torch.tensor(2.0))
    torch.testing.assert_close(serp_cosine_loss(torch.zeros(1, 2), a[:1]), torch.tensor(1.0))  # eps, no NaN
    f = torch.zeros(1, 2, 2, 2)
    f[0, 0, 0, 0] = 4
    torch.testing.assert_close(pooled_embedding(f), torch.tensor([[5.0, 0.0]]))
    with pytest.raises(TypeError, match="SeRP cannot wrap"):
        SeRP(nn.Conv2d(1, 1, 1))


def test_saved_and_exported_network_excludes_serp_parts(tmp_path):
    net = create_network("litenext")
    serp = SeRP(net)
    assert _params(serp) - _params(net) == _params(serp.target_encoder) + _params(serp.projector_s)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert sum(v.numel() for v in state.values()) == 711_201
    scripted = torch.jit.script(net.eval())
    assert _params(scripted) == 711_201


@pytest.mark.slow
def test_serp_loss_decreases_on_the_demo_data(tmp_path):
    """Three epochs of the bundle on the demo data (small images): the epoch mean of the SeRP term falls."""
    from mlflow.tracking import MlflowClient

    from .bundle_suite import _ok
    from .conftest import run_bundle, tiny_overrides

    out = tmp_path / "run"
    overrides = tiny_overrides(out, tmp_path / "demo", ROOT / "data_lists" / "demo.json", bundle="litenext",
                               image_size=[32, 32], batch_size=8)  # fmt: skip
    _ok(run_bundle("litenext", ("train.json",), run_id="training", epochs=3, learning_rate=1e-3, **overrides))
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'eval' / 'mlruns.db'}")
    run = client.search_runs([client.get_experiment_by_name("litenext").experiment_id])[0]
    serp = [
        m.value for m in sorted(client.get_metric_history(run.info.run_id, "train_loss_serp"), key=lambda m: m.step)
    ]
    assert len(serp) == 3 and serp[-1] < serp[0], serp

"""LV-UNet network: MobileNetV3-Large layout, pretrained loading, fusible blocks, re-parameterization, deep
training schedule."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from ignite.engine import Engine

from lightseg import create_network
from lightseg.handlers.deep_training import DeepTrainingSchedule, deep_training_slope
from lightseg.networks import reparameterize_model, set_deep_training_slope
from lightseg.networks.blocks.mobilenetv3 import MobileNetV3Large
from lightseg.networks.blocks.vanilla import FusibleBlock, SeriesActivation
from lightseg.networks.pretrained import (
    PretrainedWeightsError,
    init_pretrained,
    load_mobilenet_v3_encoder,
    resolve_weights,
)

from .conftest import SHARED

SHAPES = SHARED / "reference" / "torchvision_mobilenet_v3_large_state_dict_shapes.json"


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


# ---------------------------------------------------------------- MobileNetV3-Large layout
@pytest.mark.skipif(not SHAPES.is_file(), reason="reference shapes not present in ../shared")
def test_mobilenet_keys_and_shapes_equal_torchvision():
    reference = json.loads(SHAPES.read_text())
    own = {k: list(v.shape) for k, v in MobileNetV3Large().state_dict().items()}
    assert own == reference
    assert sum(p.numel() for p in MobileNetV3Large().parameters()) == 5_483_032


def test_encoder_is_features_0_to_9():
    net = create_network("lvunet")
    assert sum(p.numel() for p in net.features.parameters()) == 159_952
    keys = {k.split(".")[1] for k in net.state_dict() if k.startswith("features.")}
    assert keys == {str(i) for i in range(10)}


# ---------------------------------------------------------------- parameter counts, shapes
def test_parameter_counts_training_and_deployment():
    net = create_network("lvunet")
    assert sum(p.numel() for p in net.parameters()) == 934_545
    set_deep_training_slope(net, 1.0)
    deployed = reparameterize_model(net)
    assert sum(p.numel() for p in deployed.parameters()) == 513_585
    assert sum(b.numel() for n, b in deployed.named_buffers() if "running" in n) == 5_200


@pytest.mark.parametrize("hw", [(128, 128), (256, 384), (384, 128)])
def test_output_shapes(hw):
    net = create_network("lvunet", out_channels=2).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, *hw)).shape == (1, 2, *hw)


def test_size_not_divisible_by_128_is_refused():
    with pytest.raises(ValueError, match="divisible by 128"):
        create_network("lvunet").eval()(torch.randn(1, 3, 256, 200))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = create_network("lvunet").train()
    set_deep_training_slope(net, 0.3)
    net(torch.randn(2, 3, 128, 128)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


# ---------------------------------------------------------------- re-parameterization
@pytest.mark.parametrize("resample", ["down", "up", None])
def test_block_fusion_is_exact(resample):
    torch.manual_seed(1)
    block = FusibleBlock(8, 12, resample)
    _randomize_bn(block)
    block.set_deep_training_slope(1.0)
    block.eval()
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in block.parameters()) == 8 * 12 + 12 + 9 * 12 + 12


def test_fusion_refuses_unfinished_deep_training():
    block = FusibleBlock(4, 4)
    block.set_deep_training_slope(0.5)
    with pytest.raises(ValueError, match=r"slope is 0\.5"):
        block.reparameterize()
    block.reparameterize(allow_inexact=True)
    assert block.deployed


def test_model_fusion_exact_idempotent_and_scriptable(tmp_path):
    torch.manual_seed(2)
    net = create_network("lvunet")
    _randomize_bn(net, seed=3)
    set_deep_training_slope(net, 1.0)
    net.eval()
    x = torch.randn(2, 3, 128, 256)
    deployed = reparameterize_model(net)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=1e-4)
        again = reparameterize_model(deployed)
        torch.testing.assert_close(again(x), expected, atol=1e-5, rtol=1e-4)
        for model in (net, deployed):
            scripted = torch.jit.script(model)
            torch.jit.save(scripted, str(tmp_path / "m.ts"))
            torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.ts"))(x), model(x))
    assert isinstance(deployed.down[0].act, SeriesActivation) and deployed.down[0].act.bias is not None
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.down.modules())


# ---------------------------------------------------------------- deep training schedule
def test_schedule_values():
    assert deep_training_slope(1, 300) == 0.0
    assert deep_training_slope(300, 300) == 1.0
    assert deep_training_slope(400, 300) == 1.0
    assert deep_training_slope(150, 300) == pytest.approx(1 - math.cos(math.pi / 2 * 149 / 299))
    assert deep_training_slope(2, 3) == pytest.approx(1 - math.cos(math.pi / 4))
    assert deep_training_slope(2, 3, "linear") == 0.5
    # monotone, and strictly below 1 before the end
    values = [deep_training_slope(e, 10) for e in range(1, 11)]
    assert values == sorted(values) and values[-2] < 1.0
    with pytest.raises(ValueError):
        deep_training_slope(1, 10, "step")


def test_schedule_handler_sets_every_block():
    net = create_network("lvunet")
    seen = []

    def step(engine, batch):
        seen.append({float(b.slope) for b in net.modules() if isinstance(b, FusibleBlock)})

    engine = Engine(step)
    DeepTrainingSchedule(net).attach(engine)
    engine.run([0], max_epochs=5)
    assert [s.pop() for s in seen] == pytest.approx([deep_training_slope(e, 5) for e in range(1, 6)])
    assert engine.state.deep_training_slope == 1.0


def test_schedule_keeps_identity_when_fine_tuning_finished_weights():
    """MONAI Label fine-tunes from model.pt: a finished deep training (slope 1) is not restarted at a ReLU."""
    net = create_network("lvunet")
    set_deep_training_slope(net, 1.0)  # as loaded from a trained model.pt before the first epoch
    seen = []
    engine = Engine(lambda e, b: seen.append({float(m.slope) for m in net.modules() if isinstance(m, FusibleBlock)}))
    DeepTrainingSchedule(net).attach(engine)
    engine.run([0], max_epochs=3)
    assert seen == [{1.0}] * 3
    set_deep_training_slope(net, 1.0)
    seen.clear()
    engine = Engine(lambda e, b: seen.append({float(m.slope) for m in net.modules() if isinstance(m, FusibleBlock)}))
    DeepTrainingSchedule(net, fine_tune_keeps_identity=False).attach(engine)
    engine.run([0], max_epochs=3)
    assert [s.pop() for s in seen] == pytest.approx([deep_training_slope(e, 3) for e in range(1, 4)])


def test_slope_is_saved_with_the_weights():
    """A trained model reloaded into a fresh network computes the same function (and can be fused)."""
    torch.manual_seed(4)
    trained = create_network("lvunet")
    set_deep_training_slope(trained, 1.0)
    fresh = create_network("lvunet")
    fresh.load_state_dict(trained.state_dict())
    assert all(float(b.slope) == 1.0 for b in fresh.modules() if isinstance(b, FusibleBlock))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), trained.eval()(x))
    reparameterize_model(fresh)  # no "slope is not 1" error


# ---------------------------------------------------------------- pretrained weights
@pytest.fixture
def fake_checkpoint(tmp_path):
    """A checkpoint in torchvision's key layout, named like torchvision's files (hash prefix of its SHA-256)."""
    torch.manual_seed(5)
    source = MobileNetV3Large()
    tmp = tmp_path / "tmp.pth"
    torch.save(source.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = tmp_path / f"mobilenet_v3_large-{digest}.pth"
    tmp.rename(path)
    return source, path


def test_load_checkpoint_in_torchvision_layout(fake_checkpoint):
    source, path = fake_checkpoint
    net = create_network("lvunet")
    keys = load_mobilenet_v3_encoder(net, path)
    assert len(keys) == sum(1 for k in net.state_dict() if k.startswith("features."))
    for k in keys:
        torch.testing.assert_close(net.state_dict()[k], source.state_dict()[k])
    gray = create_network("lvunet", in_channels=1)
    load_mobilenet_v3_encoder(gray, path)
    torch.testing.assert_close(gray.features[0][0].weight, source.features[0][0].weight.sum(1, keepdim=True))


def test_bad_checkpoints_fail_clearly(fake_checkpoint, tmp_path):
    _, path = fake_checkpoint
    corrupt = tmp_path / "mobilenet_v3_large-00000000.pth"
    corrupt.write_bytes(path.read_bytes())
    with pytest.raises(PretrainedWeightsError, match="does not start with 00000000"):
        resolve_weights(corrupt)
    partial = tmp_path / "partial.pth"
    state = torch.load(path, weights_only=True)
    del state["classifier.3.bias"]
    torch.save(state, partial)
    with pytest.raises(PretrainedWeightsError, match="not a torchvision MobileNetV3-Large checkpoint"):
        load_mobilenet_v3_encoder(create_network("lvunet"), partial)
    with pytest.raises(PretrainedWeightsError, match="neither a known name"):
        resolve_weights(tmp_path / "nothing.pth")


def test_offline_fallback_and_strict(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    net = create_network("lvunet")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert net.features[1].block[0][1].momentum == 0.01  # torchvision's, for ImageNet statistics
    status = init_pretrained(net, "IMAGENET1K_V1")
    assert status.startswith("random-init") and "PRETRAINED WEIGHTS NOT LOADED" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.features[1].block[0][1].momentum == 0.1  # no statistics to keep: PyTorch's default
    with pytest.raises(PretrainedWeightsError, match="could not download IMAGENET1K_V1"):
        init_pretrained(net, "IMAGENET1K_V1", strict="true")
    assert init_pretrained(net, None) == "none"


def test_cached_weights_are_used_without_download(fake_checkpoint, tmp_path, monkeypatch):
    """A file already in the hub cache under torchvision's name is used (and its hash checked)."""
    _, path = fake_checkpoint
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "mobilenet_v3_large-8738ca79.pth").write_bytes(path.read_bytes())
    with pytest.raises(PretrainedWeightsError, match="does not start with 8738ca79"):
        init_pretrained(create_network("lvunet"), "IMAGENET1K_V1", strict=True)

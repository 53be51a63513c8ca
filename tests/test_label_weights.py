"""Weights as annotation servers load them (issue 14): the SeRP training wrapper accepts the bare network's
``model.pt``, LV-UNet fuses when loaded for inference, and LV-UNet skips ImageNet when a CheckpointLoader will
overwrite the network."""

from __future__ import annotations

import logging

import pytest
import torch
from monai.handlers import CheckpointLoader

from lightseg import create_network
from lightseg.networks import reparameterize_model, set_deep_training_slope
from lightseg.networks.pretrained import init_pretrained
from lightseg.training import SeRP


def _randomize_bn(net: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _tiny_litenext():
    return create_network("litenext", in_channels=3, out_channels=1)


# --- SeRP: model.pt (the bare network) loads into the training wrapper -------------------------------------------


def test_serp_loads_bare_network_state_dict_and_resets_target():
    torch.manual_seed(0)
    trained = _tiny_litenext()
    bare = {k: v + 0.01 for k, v in trained.state_dict().items()}  # differs from any fresh network
    serp = SeRP(_tiny_litenext())
    with torch.no_grad():  # a drifted EMA target, as after training
        for p in serp.target_encoder.parameters():
            p.add_(1.0)
    projector = {k: v.clone() for k, v in serp.projector_s.state_dict().items()}
    result = serp.load_state_dict(bare, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in serp.model.state_dict().items():
        torch.testing.assert_close(v, bare[k], rtol=0, atol=0)
    for k, v in serp.target_encoder.state_dict().items():  # EMA target re-initialized from the loaded encoder
        torch.testing.assert_close(v, bare[f"encoder.{k}"], rtol=0, atol=0)
    for k, v in serp.projector_s.state_dict().items():
        torch.testing.assert_close(v, projector[k], rtol=0, atol=0)


def test_serp_bare_load_through_monai_checkpoint_loader(tmp_path):
    """What MONAI Label prepends to train#handlers: CheckpointLoader(load_dict={'model': @network}, strict=False)."""
    from ignite.engine import Engine

    torch.manual_seed(1)
    trained = _tiny_litenext()
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    serp = SeRP(_tiny_litenext())
    CheckpointLoader(str(tmp_path / "model.pt"), {"model": serp}, strict=False)(Engine(lambda e, b: None))
    changed = [k for k, v in trained.state_dict().items() if torch.equal(serp.model.state_dict()[k], v)]
    assert len(changed) == len(trained.state_dict())


def test_serp_full_wrapper_checkpoint_still_loads_strictly():
    torch.manual_seed(2)
    a, b = SeRP(_tiny_litenext()), SeRP(_tiny_litenext())
    b.load_state_dict(a.state_dict())  # strict
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k


def test_serp_bare_load_strict_errors_and_nothing_matching_fails():
    serp = SeRP(_tiny_litenext())
    bare = _tiny_litenext().state_dict()
    bare.pop(next(iter(bare)))
    with pytest.raises(RuntimeError, match="Missing key"):
        serp.load_state_dict(bare, strict=True)
    with pytest.raises(RuntimeError, match="none of the"):
        serp.load_state_dict({"nothing.here": torch.zeros(1)}, strict=False)


# --- LV-UNet: fused when loaded for inference ---------------------------------------------------------------------


def _finished_lvunet(seed: int = 0):
    torch.manual_seed(seed)
    net = create_network("lvunet")
    set_deep_training_slope(net, 1.0)  # deep training finished
    _randomize_bn(net, seed)
    return net.eval()


def test_lvunet_fuse_on_load_gives_the_deployment_form(caplog):
    trained = _finished_lvunet()
    served = create_network("lvunet", fuse_on_load=True)
    assert sum(p.numel() for p in served.parameters()) == 934_545
    with caplog.at_level(logging.INFO, logger="lightseg"):
        result = served.load_state_dict(trained.state_dict(), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    assert served.deployed and sum(p.numel() for p in served.parameters()) == 513_585
    assert "934,545 parameters -> 513,585" in caplog.text
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(served.eval()(x), trained(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(served)(x), trained(x), rtol=0, atol=1e-5)  # ckpt_export path


def test_lvunet_fused_state_dict_loads_into_either_form():
    trained = _finished_lvunet(3)
    fused = reparameterize_model(trained)
    x = torch.randn(1, 3, 128, 128)
    for fuse_on_load in (False, True):
        net = create_network("lvunet", fuse_on_load=fuse_on_load)
        net.load_state_dict(fused.state_dict())  # strict
        assert net.deployed and sum(p.numel() for p in net.parameters()) == 513_585
        with torch.no_grad():
            torch.testing.assert_close(net.eval()(x), trained(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="cannot be loaded into a fused"):
        fused.load_state_dict(trained.state_dict())


def test_lvunet_unfinished_deep_training_stays_in_training_form(caplog):
    torch.manual_seed(0)
    unfinished = create_network("lvunet").eval()  # slope 0
    served = create_network("lvunet", fuse_on_load=True)
    with caplog.at_level(logging.WARNING, logger="lightseg"):
        served.load_state_dict(unfinished.state_dict())
    assert not served.deployed and "not fused on load" in caplog.text
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(served.eval()(x), unfinished(x), rtol=0, atol=0)


def test_lvunet_training_network_is_not_fused_by_loading():
    served = create_network("lvunet")  # the train.json network_def: fuse_on_load is False
    served.load_state_dict(_finished_lvunet().state_dict())
    assert not served.deployed


def test_lvunet_inference_config_fuses_model_pt(tmp_path):
    """The bundle's inference.json network_def, loaded the way MONAI Label does (load_state_dict, strict=False)."""
    from monai.bundle import ConfigParser

    from .conftest import BUNDLES

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "lvunet" / "configs" / "inference.json"))
    parser["bundle_root"] = str(tmp_path)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(_finished_lvunet().state_dict(), strict=False)
    assert net.deployed and sum(p.numel() for p in net.parameters()) == 513_585


# --- LV-UNet: no ImageNet step when a CheckpointLoader will load the network ---------------------------------------


def test_init_pretrained_skipped_when_a_checkpoint_loader_loads_the_network(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    net = create_network("lvunet")
    loader = CheckpointLoader(str(tmp_path / "models" / "model.pt"), {"model": net}, strict=False)
    assert init_pretrained(net, "IMAGENET1K_V1", loaded_by=loader) == f"skipped ({tmp_path / 'models' / 'model.pt'})"
    assert init_pretrained(net, "IMAGENET1K_V1", loaded_by=[object(), loader]).startswith("skipped")
    # without a loader the normal path runs (here: the download, refused)
    assert init_pretrained(net, "IMAGENET1K_V1", loaded_by=object(), download=False).startswith("random-init")

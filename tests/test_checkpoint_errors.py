"""Wrong-architecture, wrong-channel and corrupt model files: errors that name the file, its network and the fix."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from ignite.engine import Engine

from lightseg.handlers import CheckpointError, CheckpointLoader, ResumableCheckpoint, load_checkpoint
from lightseg.networks import create_network
from lightseg.settings import write_settings

from .conftest import make_tiny_dataset, run_bundle, tiny_overrides


def _engine() -> Engine:
    return Engine(lambda e, b: None)


def _loader(path, net, **kw) -> CheckpointLoader:
    return CheckpointLoader(str(path), {"model": net}, map_location="cpu", **kw)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {"cmunext_xxs": create_network("cmunext_xxs"), "mininet": create_network("mininet")}


def test_matching_checkpoint_loads(tmp_path, nets):
    path = tmp_path / "model.pt"
    torch.save(nets["cmunext_xxs"].state_dict(), path)
    target = create_network("cmunext_xxs")
    _loader(path, target, network_name="cmunext_xxs")(_engine())
    for k, v in target.state_dict().items():
        assert torch.equal(v, nets["cmunext_xxs"].state_dict()[k]), k


def test_other_network_named_from_settings(tmp_path, nets):
    path = tmp_path / "model.pt"
    torch.save(nets["mininet"].state_dict(), path)
    write_settings(path, {"network_name": "mininet", "in_channels": 3, "out_channels": 1, "image_size": [64, 64]})
    loader = _loader(path, create_network("cmunext_xxs"), network_name="cmunext_xxs", in_channels=3, out_channels=1)
    with pytest.raises(CheckpointError) as err:
        loader(_engine())
    msg = str(err.value)
    assert str(path) in msg and "network_name=mininet" in msg
    assert "--network_name mininet --in_channels 3 --out_channels 1" in msg and '--image_size "[64,64]"' in msg
    assert "settings.json" in msg and len(msg) < 900  # not a screen of key names


def test_other_network_guessed_without_settings(tmp_path, nets):
    path = tmp_path / "model.pt"
    torch.save(nets["mininet"].state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        _loader(path, create_network("cmunext_xxs"), network_name="cmunext_xxs")(_engine())
    msg = str(err.value)
    assert str(path) in msg and "does not fit cmunext_xxs" in msg
    assert "network 'mininet'" in msg and "--network_name mininet" in msg


def test_other_channels_from_settings(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(create_network("cmunext_xxs", in_channels=1).state_dict(), path)
    write_settings(path, {"network_name": "cmunext_xxs", "in_channels": 1, "out_channels": 1})
    loader = _loader(path, create_network("cmunext_xxs"), network_name="cmunext_xxs", in_channels=3, out_channels=1)
    with pytest.raises(CheckpointError) as err:
        loader(_engine())
    msg = str(err.value)
    assert "in_channels=1" in msg and "--in_channels 1" in msg and "size mismatches" in msg


def test_other_channels_without_settings(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(create_network("cmunext_xxs", out_channels=3).state_dict(), path)
    with pytest.raises(CheckpointError, match="same network, other sizes: pass the --in_channels / --out_channels"):
        _loader(path, create_network("cmunext_xxs"), network_name="cmunext_xxs")(_engine())


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all\n", b"PK\x03\x04 truncated zip"], ids=["empty", "text", "zip"]
)
def test_corrupt_model_file_names_path(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        _loader(path, create_network("cmunext_xxs"))(_engine())
    msg = str(err.value)
    assert str(path) in msg and ("not a readable" in msg or "not a PyTorch checkpoint" in msg)


def test_truncated_checkpoint_names_path(tmp_path, nets):
    path = tmp_path / "model.pt"
    torch.save(nets["cmunext_xxs"].state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
        _loader(path, create_network("cmunext_xxs"))(_engine())
    assert str(path) in str(err.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_code_executing_pickle_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "weights_only=True" in str(err.value)
    with open(path, "wb") as f:  # a raw pickle, not torch.save's format
        pickle.dump({"w": _Evil()}, f)
    with pytest.raises(CheckpointError, match="nothing in it was run"):
        load_checkpoint(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        _loader(tmp_path / "nope.pt", create_network("cmunext_xxs"))(_engine())


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a state_dict"):
        _loader(path, create_network("cmunext_xxs"))(_engine())


def _resumable(tmp_path, net):
    engine = _engine()
    handler = ResumableCheckpoint(tmp_path, {"network": net}, resume=True)
    handler.attach(engine)
    return engine, handler


def test_resume_corrupt_checkpoint_names_path(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00" * 100)
    engine, handler = _resumable(tmp_path, create_network("cmunext_xxs"))
    with pytest.raises(CheckpointError) as err:
        handler.load(engine)
    assert str(tmp_path / "checkpoint.pt") in str(err.value) and "checkpoint" in str(err.value)


def test_resume_checkpoint_of_other_network_names_path(tmp_path, nets):
    engine = _engine()
    torch.save({"network": nets["mininet"].state_dict(), "trainer": engine.state_dict()}, tmp_path / "checkpoint.pt")
    engine, handler = _resumable(tmp_path, create_network("cmunext_xxs"))
    with pytest.raises(CheckpointError, match="does not fit this training") as err:
        handler.load(engine)
    assert str(tmp_path / "checkpoint.pt") in str(err.value)


def test_inference_with_other_network_short_error(tmp_path, nets):
    """End to end: inference.json told to build cmunext_xxs (explicitly: by default it takes the network from the
    settings.json beside the model) with a mininet model.pt says so in a few lines on stderr."""
    data = tmp_path / "data"
    datalist = make_tiny_dataset(data, n_train=1, n_val=1, n_test=1)
    out = tmp_path / "run"
    (out / "models").mkdir(parents=True)
    torch.save(nets["mininet"].state_dict(), out / "models" / "model.pt")
    write_settings(out / "models" / "model.pt", {"network_name": "mininet", "in_channels": 3, "out_channels": 1})
    overrides = tiny_overrides(out, data, datalist)
    overrides = {k: v for k, v in overrides.items() if k in ("bundle_root", "ckpt_dir", "output_dir", "dataset_dir")}
    result = run_bundle(
        "cmunext_xxs", ("inference.json",), datalist=str(datalist), image_size=[32, 32], network_name="cmunext_xxs",
        **overrides,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout[-2000:]
    ours = [ln for ln in result.stderr.splitlines() if ln.startswith(("lightseg:", "  "))]
    assert ours and ours[0].startswith("lightseg: CheckpointError:"), result.stderr[-3000:]
    assert "network_name=mininet" in ours[0] and "--network_name mininet" in ours[0]
    assert "Traceback" not in result.stderr and len(ours) <= 4, result.stderr

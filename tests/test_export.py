"""Exports of a bundle: TorchScript through MONAI's ckpt_export, and ONNX checked with ONNX Runtime."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lightseg import create_network
from lightseg.export import export_torchscript, load_bundle_network

from .conftest import BUNDLES, ROOT


@pytest.fixture
def trained_like(tmp_path):
    torch.manual_seed(1)
    net = create_network("cmunext_xxs")
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    return net.eval(), path


def test_load_bundle_network(trained_like, tmp_path):
    net, ckpt = trained_like
    loaded = load_bundle_network(BUNDLES / "cmunext_xxs", ckpt)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), net(x))
    torch.save({"model": net.state_dict()}, tmp_path / "wrapped.pt")
    load_bundle_network(BUNDLES / "cmunext_xxs", tmp_path / "wrapped.pt")
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        load_bundle_network(BUNDLES / "cmunext_xxs", tmp_path / "absent.pt")


def test_export_torchscript_matches_eager(trained_like, tmp_path):
    _, ckpt = trained_like
    diff = export_torchscript(BUNDLES / "cmunext_xxs", tmp_path / "model.ts", ckpt=ckpt)
    assert diff < 1e-5


def test_torchscript_archive_layout_is_the_one_monai_deploy_reads(trained_like, tmp_path):
    """MONAI Deploy's bundle operator opens the TorchScript zip and reads ``<root>/extra/inference.json`` and
    ``<root>/extra/metadata.json`` with ``<root>`` = ``model`` or the file's stem; any other root makes it run with
    no transforms and no error. Read the archive back the same way."""
    import json
    import zipfile

    from lightseg.export import archive_root, read_embedded_configs

    _, ckpt = trained_like
    for name, bundle in (("model.ts", "cmunext_xxs"), ("lvunet_fused.ts", "lvunet")):
        ckpt_b = ckpt if bundle == "cmunext_xxs" else tmp_path / "lv.pt"
        if bundle == "lvunet":  # as at the end of deep training, so that it exports fused
            from lightseg.networks.blocks.vanilla import set_deep_training_slope

            lv = create_network("lvunet")
            set_deep_training_slope(lv, 1.0)
            torch.save(lv.state_dict(), ckpt_b)
        out = tmp_path / name
        export_torchscript(BUNDLES / bundle, out, ckpt=ckpt_b)
        assert archive_root(out) == out.stem
        with zipfile.ZipFile(out) as zf:
            members = set(zf.namelist())
        assert f"{out.stem}/extra/inference.json" in members and f"{out.stem}/extra/metadata.json" in members
        configs = read_embedded_configs(out)
        on_disk = json.loads((BUNDLES / bundle / "configs" / "inference.json").read_text())
        assert configs["inference.json"]["postprocessing"] == on_disk["postprocessing"]
        assert configs["metadata.json"]["network_data_format"]["outputs"].keys() == {"pred"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # staging folders gone
    # the layout the old temp-file export produced is reported, not silently accepted
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(tmp_path / ".model.ts.tmp"))
    (tmp_path / ".model.ts.tmp").rename(tmp_path / "bad.ts")
    assert archive_root(tmp_path / "bad.ts") == ".model.ts"
    with pytest.raises(KeyError, match="without its pre/postprocessing"):
        read_embedded_configs(tmp_path / "bad.ts")


def test_failed_check_writes_nothing(trained_like, tmp_path):
    _, ckpt = trained_like
    with pytest.raises(AssertionError, match="nothing was written"):
        export_torchscript(BUNDLES / "cmunext_xxs", tmp_path / "model.ts", ckpt=ckpt, atol=-1.0, rtol=0.0)
    assert not any(tmp_path.glob("*.ts*")) and not any(tmp_path.glob(".*"))


@pytest.mark.slow
def test_export_script_onnx(trained_like, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    _, ckpt = trained_like
    result = subprocess.run(
        [sys.executable, "scripts/export_bundle.py", str(BUNDLES / "cmunext_xxs"), "--ckpt", str(ckpt),
         "--format", "all", "--out_dir", str(tmp_path), "--image_size", "64", "64"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ONNX" in result.stderr and "TorchScript" in result.stderr and "max |export - eager|" in result.stderr
    assert (tmp_path / "model.ts").is_file() and (tmp_path / "model.onnx").is_file()


def test_export_a_trained_variant_with_overrides(tmp_path):
    """A model trained as another registered variant exports with the same --network_name; without it the error
    says what to pass."""
    import json

    torch.manual_seed(2)
    net = create_network("mininet_paper_counts").eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    with pytest.raises(RuntimeError, match="another --network_name"):
        load_bundle_network(BUNDLES / "mininet", tmp_path / "model.pt")
    result = subprocess.run(
        [sys.executable, "scripts/export_bundle.py", str(BUNDLES / "mininet"), "--ckpt", str(tmp_path / "model.pt"),
         "--out_dir", str(tmp_path), "--network_name", "mininet_paper_counts"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    extra = {"inference.json": ""}
    loaded = torch.jit.load(str(tmp_path / "model.ts"), _extra_files=extra)
    assert json.loads(extra["inference.json"])["network_name"] == "mininet_paper_counts"
    assert sum(p.numel() for p in loaded.parameters()) == 36_657
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))

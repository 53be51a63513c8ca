"""Exports of a bundle: TorchScript through MONAI's ckpt_export, and ONNX checked with ONNX Runtime."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lightseg import create_network
from lightseg.export import export_torchscript, load_bundle_network

from .conftest import BUNDLE_NAMES, BUNDLES, ROOT


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
    """scripts/export_bundle.py is a thin caller of python -m lightseg.export."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    _, ckpt = trained_like
    for fmt in ("torchscript", "onnx"):
        result = subprocess.run(
            [sys.executable, "scripts/export_bundle.py", str(BUNDLES / "cmunext_xxs"), "--ckpt", str(ckpt),
             "--format", fmt, "--out_dir", str(tmp_path), "--image_size", "64", "64"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "max |export - eager|" in result.stderr
    assert (tmp_path / "model.ts").is_file() and (tmp_path / "model.onnx").is_file()


def _bundle_ckpt(bundle: str, path) -> torch.nn.Module:
    """Random weights with BatchNorm statistics (LV-UNet: deep training finished, so it exports fused)."""
    from .bundle_suite import _network_with_statistics

    net = _network_with_statistics(bundle, 5)
    if bundle == "lvunet":
        from lightseg.networks.blocks.vanilla import set_deep_training_slope

        set_deep_training_slope(net, 1.0)
    torch.save(net.state_dict(), path)
    return net.eval()


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_every_format_for_every_bundle(bundle, tmp_path):
    """python -m lightseg.export --format X for the four formats: each checked against eager, with its JSON (the
    checkpoint's SHA-256, the bundle metadata), ONNX metadata_props and dynamic axes, INT8 agreement recorded."""
    import json

    import numpy as np
    import onnx
    import onnxruntime as ort

    from lightseg.export import DEFAULT_FILES, file_sha256

    from .conftest import make_tiny_dataset

    models = tmp_path / "models"
    models.mkdir()
    net = _bundle_ckpt(bundle, models / "model.pt")
    data = tmp_path / "data"
    datalist = make_tiny_dataset(data, n_train=6, n_val=3, n_test=1)
    size = "256" if bundle == "lvunet" else "64"
    for fmt, name in DEFAULT_FILES.items():
        result = subprocess.run(
            [sys.executable, "-m", "lightseg.export", str(BUNDLES / bundle), "--format", fmt,
             "--ckpt", str(models / "model.pt"), "--out_dir", str(models), "--image_size", size, size,
             "--datalist", str(datalist), "--dataset_dir", str(data), "--calib_count", "6"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, (fmt, result.stderr[-3000:])
        sidecar = json.loads((models / f"{name}.json").read_text())
        assert sidecar["format"] == fmt and sidecar["checkpoint_sha256"] == file_sha256(models / "model.pt")
        if fmt != "onnx-int8":
            assert sidecar["max_abs_diff"] <= 1e-4, (fmt, sidecar["max_abs_diff"])
    int8 = json.loads((models / "model_int8.onnx.json").read_text())
    assert int8["agreement"]["calibration"]["images"] == 6 and int8["agreement"]["validation"]["images"] == 3
    for split in ("calibration", "validation"):
        assert int8["agreement"][split]["dice"] >= 0.98, int8["agreement"]
    # 7-bit weights (reduce_range), which keep AVX2 CPUs without VNNI from saturating: every int8 weight in [-64, 64]
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(i) for i in onnx.load(str(models / "model_int8.onnx")).graph.initializer]
    weights = [w for w in weights if w.dtype == np.int8]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
    assert int8["quantization"]["weights"] == "int8 per-channel (7-bit range: reduce_range)"
    meta = json.loads((models / "model.pt2.json").read_text())["metadata"]
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 1
    for name in ("model.onnx", "model_int8.onnx"):
        model = onnx.load(str(models / name))
        props = {p.key: p.value for p in model.metadata_props}
        assert props["opset"] == "18" and json.loads(props["metadata.json"])["version"]
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_param != "" for d in dims] == [True, False, True, True], name  # batch, H, W dynamic
    # dynamic axes really work: another batch and size than the export's
    h, w = (256, 384) if bundle == "lvunet" else (32, 96)
    x = torch.randn(3, 3, h, w)
    session = ort.InferenceSession(str(models / "model.onnx"), providers=["CPUExecutionProvider"])
    program = torch.export.load(str(models / "model.pt2")).module()
    with torch.no_grad():
        ref = net(x).numpy()
        assert np.abs(session.run(None, {"image": x.numpy()})[0] - ref).max() <= 1e-4
        assert np.abs(program(x).numpy() - ref).max() <= 1e-4


def test_int8_below_the_agreement_gate_writes_nothing(tmp_path):
    pytest.importorskip("onnxruntime")
    from lightseg.export import export_bundle

    from .conftest import make_tiny_dataset

    data = tmp_path / "data"
    datalist = make_tiny_dataset(data, n_train=2, n_val=1, n_test=0)
    _bundle_ckpt("mininet", tmp_path / "model.pt")
    with pytest.raises(AssertionError, match="nothing was written"):
        export_bundle(
            BUNDLES / "mininet", "onnx-int8", ckpt=tmp_path / "model.pt", out=tmp_path / "m.onnx", image_size=(32, 32),
            datalist=str(datalist), dataset_dir=str(data), min_agreement=1.01,
        )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model.pt"]


def test_mask_agreement():
    import numpy as np

    from lightseg.export import mask_agreement

    a = np.full((1, 1, 4, 4), -1.0)
    a[..., :2, :] = 1.0  # 8 foreground pixels
    b = a.copy()
    b[..., 0, :2] = -1.0  # 2 lost
    r = mask_agreement([a], [b])
    assert r["dice"] == pytest.approx(2 * 6 / 14) and r["pixel_agreement"] == pytest.approx(14 / 16)
    empty = np.full((1, 1, 4, 4), -1.0)
    assert mask_agreement([empty], [empty])["dice"] == 1.0
    two = np.zeros((1, 3, 2, 2))
    two[:, 1] = 1.0
    assert mask_agreement([two], [two], out_channels=3)["dice"] == 1.0


def test_export_cli_rejects_out_with_all(tmp_path):
    from lightseg.export.__main__ import main

    with pytest.raises(SystemExit, match="--out names one file"):
        main([str(BUNDLES / "mininet"), "--format", "all", "--out", str(tmp_path / "x.onnx")])


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

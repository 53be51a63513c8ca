"""lightseg.backends: BackendNetwork behind MONAI's CheckpointLoader and evaluator; `run inferring --backend X`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.backends import AUTO_ORDER, BackendError, BackendNetwork, export_status
from lightseg.export import DEFAULT_FILES, export_bundle

from .bundle_suite import _network_with_statistics
from .conftest import BUNDLE_NAMES, BUNDLES, ROOT, make_tiny_dataset, run_bundle

pytest.importorskip("onnxruntime")


def _models(tmp_path: Path, name: str = "cmunext_xxs", seed: int = 3) -> tuple[torch.nn.Module, Path]:
    net = _network_with_statistics(name, seed)
    if name == "lvunet":  # deep training finished: the bundle infers with the fused form
        from lightseg.networks.blocks.vanilla import set_deep_training_slope

        set_deep_training_slope(net, 1.0)
    models = tmp_path / "models"
    models.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), models / "model.pt")
    return net.eval(), models


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` look ``seconds`` older (an export built before the checkpoint)."""
    st = path.stat()
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """cmunext_xxs with model.pt and its ONNX, TorchScript and torch.export files (64x64 checks)."""
    tmp = tmp_path_factory.mktemp("backends")
    net, models = _models(tmp)
    for fmt in ("onnx", "torchscript", "torch-export"):
        export_bundle(BUNDLES / "cmunext_xxs", fmt, ckpt=models / "model.pt", out=models / DEFAULT_FILES[fmt])
    return net, models


def _fresh_eager(models: Path) -> torch.nn.Module:
    from lightseg import create_network

    net = create_network("cmunext_xxs")
    net.load_state_dict(torch.load(models / "model.pt", weights_only=True))
    return net.eval()


@pytest.mark.parametrize("backend", ["eager", "onnxruntime", "torchscript", "torch-export"])
def test_every_fp32_backend_matches_eager(exported, backend):
    net, models = exported
    wrapped = BackendNetwork(backend, models, network=_fresh_eager(models), threads=1)
    assert wrapped.backend == backend
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref, got = net(x), wrapped(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert float((got - ref).abs().max()) <= 1e-4
    assert torch.equal(got > 0, ref > 0)


def test_auto_picks_the_first_fresh_export_and_falls_back_to_eager(exported, tmp_path, caplog):
    _, models = exported
    assert BackendNetwork("auto", models, network=_fresh_eager(models)).backend == AUTO_ORDER[0] == "onnxruntime"
    # a folder with model.pt only: eager, said in one log line
    _, only_ckpt = _models(tmp_path / "plain")
    with caplog.at_level("INFO", logger="lightseg.backends"):
        assert BackendNetwork("auto", only_ckpt, network=_fresh_eager(only_ckpt)).backend == "eager"
    lines = [r.getMessage() for r in caplog.records if r.name == "lightseg.backends"]
    assert len(lines) == 1 and lines[0].startswith("backend auto: eager") and "model.onnx does not exist" in lines[0]
    with pytest.raises(BackendError, match=r"does not exist.*python -m lightseg.export .* --format onnx"):
        BackendNetwork("onnxruntime", only_ckpt, network=_fresh_eager(only_ckpt))
    with pytest.raises(ValueError, match="unknown backend"):
        BackendNetwork("tensorrt", models, network=_fresh_eager(models))


def test_stale_exports_are_skipped_by_auto_and_refused_when_asked_for(exported, tmp_path):
    import shutil

    _, source = exported
    models = tmp_path / "models"
    shutil.copytree(source, models)  # copy2 keeps the times: exports newer than model.pt
    assert export_status(models / "model.onnx", models / "model.pt") is None
    _age(models / "model.onnx", 3600)  # built before the checkpoint was (re)written
    assert "older than" in export_status(models / "model.onnx", models / "model.pt")
    assert BackendNetwork("auto", models, network=_fresh_eager(models)).backend == "torch-export"
    with pytest.raises(BackendError, match=r"stale.*--format onnx"):
        BackendNetwork("onnxruntime", models, network=_fresh_eager(models))
    # a newer export built from another checkpoint (its JSON records the SHA-256)
    other = _network_with_statistics("cmunext_xxs", 99)
    torch.save(other.state_dict(), models / "model.pt")
    for name in ("model.ts", "model.pt2"):
        os.utime(models / name)
    assert "another checkpoint" in export_status(models / "model.pt2", models / "model.pt")
    assert BackendNetwork("auto", models, network=_fresh_eager(models)).backend == "eager"
    with pytest.raises(BackendError, match="another checkpoint"):
        BackendNetwork("torch-export", models, network=_fresh_eager(models))


def test_checkpoint_loader_and_evaluator_see_the_eager_network(exported):
    """CheckpointLoader(load_dict={"model": @network}) loads model.pt into the wrapped eager network (same keys);
    SupervisedEvaluator calls .eval(), .to(device) and network(x) on MetaTensor batches; metadata is kept."""
    from ignite.engine import Engine
    from monai.data import MetaTensor
    from monai.engines import SupervisedEvaluator
    from monai.handlers import CheckpointLoader

    from lightseg import create_network

    net, models = exported
    wrapped = BackendNetwork("onnxruntime", models, network=create_network("cmunext_xxs"))
    assert wrapped.state_dict().keys() == net.state_dict().keys()
    engine = Engine(lambda e, b: None)
    CheckpointLoader(str(models / "model.pt"), {"model": wrapped}, map_location="cpu").attach(engine)
    engine.run([0], max_epochs=1)
    for key, value in net.state_dict().items():
        assert torch.equal(wrapped.network.state_dict()[key], value), key
    image = MetaTensor(torch.randn(1, 3, 64, 64), meta={"filename_or_obj": "a.png"})
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=[{"image": image, "label": torch.zeros(1, 1, 64, 64)}],
        network=wrapped.to("cpu"),
    )  # fmt: skip
    evaluator.run()
    pred = evaluator.state.output[0]["pred"]
    assert isinstance(pred, MetaTensor) and pred.meta["filename_or_obj"] == "a.png"
    with torch.no_grad():
        torch.testing.assert_close(pred.as_tensor(), net(image.as_tensor())[0], atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# `python -m monai.bundle run inferring --backend X` for every bundle and backend


def _size(bundle: str) -> list[int]:
    return [256, 256] if bundle == "lvunet" else [64, 64]  # LV-UNet's torch.export program takes >= 256


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.array(Image.open(p)) > 0 for p in sorted(folder.glob("*_seg.png"))}


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_run_inferring_every_backend_gives_the_eager_masks(bundle, tmp_path):
    """Export all four formats with the CLI (random weights with BatchNorm statistics), then infer the same
    images with every backend: fp32 masks identical to eager, INT8 Dice agreement >= 0.98 (stated in the log);
    the default ("auto") backend is ONNX Runtime and gives the eager masks."""
    _, models = _models(tmp_path, bundle)
    data = tmp_path / "data"
    datalist = make_tiny_dataset(data, n_train=6, n_val=3, n_test=4)
    size = _size(bundle)
    cmd = [sys.executable, "-m", "lightseg.export", str(BUNDLES / bundle), "--format", "all", "--out_dir", str(models),
           "--ckpt", str(models / "model.pt"),
           "--datalist", str(datalist), "--dataset_dir", str(data), "--image_size", *map(str, size)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert {"model.ts", "model.onnx", "model_int8.onnx", "model.pt2"} <= {p.name for p in models.iterdir()}
    int8 = json.loads((models / "model_int8.onnx.json").read_text())
    assert int8["agreement"]["calibration"]["dice"] >= 0.98 and int8["agreement"]["validation"]["dice"] >= 0.98

    masks = {}
    for backend in ("eager", "torchscript", "onnxruntime", "onnxruntime-int8", "torch-export", "auto"):
        out = tmp_path / f"out_{backend}"
        run = run_bundle(
            bundle, ("inference.json",), run_id="inferring", bundle_root=str(BUNDLES / bundle), ckpt_dir=str(models),
            input=str(datalist), dataset_dir=str(data), output_dir=str(out), image_size=size, backend=backend,
            backend_threads=1,
        )  # fmt: skip
        log = run.stdout + run.stderr
        assert run.returncode == 0, log[-4000:]
        expected = "onnxruntime" if backend == "auto" else backend
        assert f"backend {'auto: ' if backend == 'auto' else ''}{expected}" in log or backend == "eager", log[-3000:]
        masks[backend] = _masks(out)
        assert len(masks[backend]) == 4
    for backend in ("torchscript", "onnxruntime", "torch-export", "auto"):
        for name, mask in masks["eager"].items():
            assert np.array_equal(masks[backend][name], mask), (backend, name)
    inter = sum(int((masks["onnxruntime-int8"][n] & m).sum()) for n, m in masks["eager"].items())
    total = sum(int(masks["onnxruntime-int8"][n].sum() + m.sum()) for n, m in masks["eager"].items())
    assert total == 0 or 2 * inter / total >= 0.98

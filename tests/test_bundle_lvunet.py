"""The lvunet bundle: the shared bundle suite, plus pretrained weights, deep training and deployment form."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
import torch

from lightseg.networks.blocks.mobilenetv3 import MobileNetV3Large

from .bundle_suite import _ok
from .conftest import run_bundle, tiny_overrides

# Downloads go through a proxy that refuses connections: "offline" whatever the machine's network is.
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


def _metrics(path: Path) -> dict[str, float]:
    with open(path) as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if row}


def _mlflow(out: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'eval' / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("lvunet").experiment_id])
    return client, runs


@pytest.fixture
def torchvision_checkpoint(tmp_path) -> Path:
    torch.manual_seed(3)
    tmp = tmp_path / "weights.pth"
    torch.save(MobileNetV3Large().state_dict(), tmp)
    path = tmp_path / f"mobilenet_v3_large-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(path)
    return path


@pytest.mark.slow
def test_offline_default_run_falls_back_and_records_it(tiny_dataset, tmp_path):
    data, datalist = tiny_dataset
    out = tmp_path / "run"
    overrides = tiny_overrides(out, data, datalist, bundle="lvunet", image_size=[256, 256])
    env = {**OFFLINE, "TORCH_HOME": str(tmp_path / "torch_home")}  # an empty cache: the weights must be fetched
    log = _ok(run_bundle("lvunet", ("train.json",), run_id="training", env=env, epochs=2, **overrides))
    assert "PRETRAINED WEIGHTS NOT LOADED" in log and "could not download IMAGENET1K_V1" in log
    client, runs = _mlflow(out)
    params = runs[0].data.params
    assert params["pretrained"].startswith("random-init") and params["deep_training"] == "True"
    slopes = client.get_metric_history(runs[0].info.run_id, "deep_training_slope")
    assert [(m.step, m.value) for m in slopes] == [(1, 0.0), (2, 1.0)]
    assert params["lr_scheduler"] == "CosineAnnealingLR"

    # strict: the same run refuses to start, with the reason
    strict = run_bundle("lvunet", ("train.json",), run_id="training", env=env, epochs=1, pretrained_strict=True,
                        **{**overrides, "ckpt_dir": str(tmp_path / "strict"),
                           "checkpoint_dir": str(tmp_path / "strict_checkpoints")})  # fmt: skip
    assert strict.returncode != 0 and "could not download IMAGENET1K_V1" in strict.stdout + strict.stderr
    assert not (tmp_path / "strict" / "model.pt").exists()


@pytest.mark.slow
def test_pretrained_file_is_loaded_and_deployment_form_scores_the_same(tiny_dataset, tmp_path, torchvision_checkpoint):
    data, datalist = tiny_dataset
    out = tmp_path / "run"
    overrides = tiny_overrides(out, data, datalist, bundle="lvunet", image_size=[256, 256])
    log = _ok(
        run_bundle("lvunet", ("train.json",), run_id="training", epochs=2, pretrained=str(torchvision_checkpoint),
                   **overrides)
    )  # fmt: skip
    assert "loaded 174 MobileNetV3-Large tensors" in log
    _, runs = _mlflow(out)
    assert runs[0].data.params["pretrained"] == str(torchvision_checkpoint)

    # evaluate the final-epoch model in both forms: deep training ended at slope 1, so fusion is exact
    results = {}
    for deploy in (False, True):
        eval_dir = tmp_path / f"eval_{deploy}"
        log = _ok(
            run_bundle("lvunet", ("train.json", "evaluate.json"), run_id="evaluating", deploy=deploy,
                       **{**overrides, "output_dir": str(eval_dir)})
        )  # fmt: skip
        assert ("deployment form: 934,545 parameters -> 513,585" in log) == deploy
        results[deploy] = _metrics(eval_dir / "metrics.csv")
    assert results[True].keys() == results[False].keys()
    for key, value in results[False].items():
        # fused logits differ by float rounding (<= 1e-5): thresholded metrics agree to 1e-6, AUC (a ranking of
        # near-tied probabilities) to 1e-5
        assert results[True][key] == pytest.approx(value, abs=1e-5 if "auc" in key else 1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("use_mlflow", [True, False])
def test_torchrun_loads_the_pretrained_file(tiny_dataset, tmp_path, torchvision_checkpoint, use_mlflow):
    """multi_gpu_train.json appends to initialize: the pretrained step runs under torchrun, MLflow on or off
    (it used to run only as a side effect of MLflow resolving the hyperparameters)."""
    import os
    import subprocess
    import sys

    from .bundle_suite import _free_port
    from .conftest import ROOT, _cli, bundle_config

    data, datalist = tiny_dataset
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "--master_addr=127.0.0.1", "-m", "monai.bundle", "run",
           "--config_file", bundle_config("lvunet", "train.json", "multi_gpu_train.json"), "--epochs", "1",
           "--pretrained", str(torchvision_checkpoint), "--use_mlflow", str(use_mlflow).lower()]  # fmt: skip
    for k, v in tiny_overrides(out, data, datalist, bundle="lvunet", image_size=[256, 256]).items():
        cmd += [f"--{k}", _cli(v)]
    result = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    log = _ok(result)
    assert log.count("loaded 174 MobileNetV3-Large tensors") == 2  # both ranks, before DDP broadcasts rank 0's
    assert (out / "eval" / "mlruns.db").is_file() == use_mlflow

"""The litenext bundle: the shared bundle suite, plus SeRP/MWL terms in MLflow and the ablation switches."""

from __future__ import annotations

import pytest
import torch

from .bundle_suite import BundleSuite, _ok, mlflow_run
from .conftest import run_bundle, tiny_overrides


class TestLiteNeXtBundle(BundleSuite):
    bundle = "litenext"
    network_name = "litenext"
    image_size = (32, 32)
    other_model_file = "model_final.pt"
    deployed_params = 711_201


@pytest.mark.slow
def test_serp_terms_logged_and_only_the_network_saved(tiny_dataset, tmp_path):
    data, datalist = tiny_dataset
    out = tmp_path / "run"
    log = _ok(run_bundle("litenext", ("train.json",), run_id="training", epochs=2,
                         **tiny_overrides(out, data, datalist, bundle="litenext")))  # fmt: skip
    assert "train_loss_serp" in log
    client, run = mlflow_run(out, "litenext")
    assert run.data.params["loss"] == "SeRP+MWL+Dice" and run.data.params["serp"] == "True"
    for name in ("train_loss_serp", "train_loss_mwl", "train_loss_dice", "val_mean_dice"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2], name
    # model.pt: the 711,201-parameter network only; checkpoint.pt: also the target extractor and projector S
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert sum(v.numel() for v in state.values()) == 711_201 and not any("target" in k for k in state)
    ckpt = torch.load(out / "checkpoints" / "checkpoint.pt", weights_only=True)["network"]
    assert any(k.startswith("target_encoder.") for k in ckpt) and any(k.startswith("projector_s.") for k in ckpt)
    # the target extractor moved away from its initial copy by EMA, but is not equal to the main one
    main = {k[len("model.encoder.") :]: v for k, v in ckpt.items() if k.startswith("model.encoder.")}
    target = {k[len("target_encoder.") :]: v for k, v in ckpt.items() if k.startswith("target_encoder.")}
    assert main.keys() == target.keys()
    assert any(not torch.equal(main[k], target[k]) for k in main)


@pytest.mark.slow
def test_ablation_without_serp_and_with_bce_dice(tiny_dataset, tmp_path):
    data, datalist = tiny_dataset
    out = tmp_path / "run"
    _ok(run_bundle("litenext", ("train.json",), run_id="training", epochs=1, serp=False, loss="bce_dice",
                   **tiny_overrides(out, data, datalist, bundle="litenext")))  # fmt: skip
    client, run = mlflow_run(out, "litenext")
    assert run.data.params["loss"] == "0.5*BCE+Dice" and run.data.params["serp"] == "False"
    assert client.get_metric_history(run.info.run_id, "train_loss_bce")
    assert not client.get_metric_history(run.info.run_id, "train_loss_serp")
    assert not client.get_metric_history(run.info.run_id, "train_loss_mwl")
    ckpt = torch.load(out / "checkpoints" / "checkpoint.pt", weights_only=True)["network"]
    assert not any(k.startswith("target_encoder.") for k in ckpt)

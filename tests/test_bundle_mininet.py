"""The mininet bundle: the shared bundle suite, plus early stopping and the loss terms in MLflow."""

from __future__ import annotations

import pytest
import torch

from .bundle_suite import _epoch, _ok, mlflow_run
from .conftest import ROOT, run_bundle, tiny_overrides


@pytest.mark.slow
def test_early_stopping_ends_a_run_on_the_demo_data(tmp_path):
    """Demo data, patience 2: with an improvement threshold no IoU can pass (1.0), the run must stop after the
    first validation plus two without improvement: at epoch 3 of 20 (every validation counted: start_above None,
    since a 32x32 model may still score IoU 0 at epoch 1)."""
    out = tmp_path / "run"
    overrides = tiny_overrides(out, tmp_path / "demo", ROOT / "data_lists" / "demo.json", bundle="mininet",
                               image_size=[32, 32], batch_size=16)  # fmt: skip
    log = _ok(
        run_bundle("mininet", ("train.json",), run_id="training", epochs=20, early_stopping_patience=2,
                   early_stopping_min_delta=1.0, early_stopping_start_above=None, **overrides)
    )  # fmt: skip
    assert "early stopping at epoch 3" in log and "Epoch[4]" not in log
    ckpt = torch.load(out / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert _epoch(ckpt["trainer"]) == 3
    assert ckpt["trainer"]["early_stopping_counter"] == 2  # saved for a resumed run
    assert (out / "models" / "model.pt").is_file() and (out / "models" / "model_final.pt").is_file()
    client, run = mlflow_run(out, "mininet")
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mean_iou")] == [1, 2, 3]


@pytest.mark.slow
def test_loss_terms_and_paper_metrics_are_logged(tiny_dataset, tmp_path):
    data, datalist = tiny_dataset
    out = tmp_path / "run"
    overrides = tiny_overrides(out, data, datalist, bundle="mininet")
    log = _ok(run_bundle("mininet", ("train.json",), run_id="training", epochs=2, **overrides))
    assert "train_loss_jaccard" in log
    client, run = mlflow_run(out, "mininet")
    assert run.data.params["loss"] == "dice+bce+jaccard (alpha-weighted per instance, gamma=1.0)"
    assert run.data.params["early_stopping_patience"] == "4"
    assert run.data.params["early_stopping_start_above"] == "0.0"
    for name in ("train_loss_dice", "train_loss_bce", "train_loss_jaccard", "val_mean_iou", "val_mean_dice",
                 "val_mean_recall", "val_mean_specificity", "val_mean_accuracy"):  # fmt: skip
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name
        assert all(0.0 <= m.value for m in history), name

    # the ablation: the plain sum of BCE and Jaccard, recorded as such
    out2 = tmp_path / "plain"
    _ok(
        run_bundle("mininet", ("train.json",), run_id="training", epochs=1, loss_alpha="none",
                   loss_terms=["bce", "jaccard"], **tiny_overrides(out2, data, datalist, bundle="mininet"))
    )  # fmt: skip
    client, run = mlflow_run(out2, "mininet")
    assert run.data.params["loss"] == "bce+jaccard (plain sum)"
    assert not client.get_metric_history(run.info.run_id, "train_loss_dice")

"""The evaluation report (lightseg.report, lightseg.handlers.EvaluationReport) and inference overlays (SaveOverlayd)."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd
from PIL import Image

from lightseg.handlers import EvaluationReport
from lightseg.report import (
    ImageCase,
    SaveOverlayd,
    build_report,
    case_scores,
    label_maps,
    log_to_mlflow,
    overlay,
    select_cases,
)
from lightseg.settings import write_settings
from tests.conftest import BUNDLE_NAMES, BUNDLES, run_bundle, tiny_overrides

# ---------------------------------------------------------------------------------------------------- helpers


def _mlflow_run(tmp_path: Path, epochs: int = 3) -> tuple[str, str]:
    """A finished MLflow run in a tmp SQLite store with per-iteration train_loss and per-epoch val_mean_dice."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("report_test", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp, run_name="train")
    run_id = run.info.run_id
    for it in range(1, 3 * epochs + 1):
        client.log_metric(run_id, "train_loss", 1.0 / it, step=it)
    for epoch in range(1, epochs + 1):
        client.log_metric(run_id, "val_mean_dice", 0.5 + 0.1 * epoch, step=epoch)
        client.log_metric(run_id, "val_mean_iou", 0.4 + 0.1 * epoch, step=epoch)
    client.log_metric(run_id, "best_metric", 0.7, step=epochs)
    client.set_terminated(run_id)
    return uri, run_id


def _cases(dices: list[float], size: int = 16) -> list[ImageCase]:
    cases = []
    for i, d in enumerate(dices):
        img = np.full((size, size + 4, 3), 10 * i % 255, np.uint8)
        gt = np.zeros((size, size + 4), np.uint8)
        gt[4:10, 4:12] = 1
        cases.append(ImageCase(f"/data/case{i:02d}.png", d, d / (2 - d), img, gt, gt.copy()))
    return cases


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float()


def _evaluator_data(n: int, size: int = 24) -> tuple[list[dict], list[float]]:
    """Items whose image channel 0 is the network's logit map: a disk shifted by i pixels from the true disk."""
    items, dices = [], []
    for i in range(n):
        label = _disk(size, size, 12, 12, 6)
        pred = _disk(size, size, 12, 12 + i, 6)
        image = MetaTensor((pred * 2 - 1)[None] * 8, meta={"filename_or_obj": f"/data/img{i:02d}.png"})
        items.append({"image": image, "label": MetaTensor(label[None])})
        tp = float((pred * label).sum())
        dices.append(2 * tp / float(pred.sum() + label.sum()))
    return items, dices


class _Channel0(torch.nn.Module):
    """The input's first channel as the logits (a 'network' whose predictions the test controls)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x[:, :1] + 0 * self.dummy


def _run_evaluator(items: list[dict], handler: EvaluationReport, batch_size: int = 2) -> SupervisedEvaluator:
    post = Activationsd(keys="pred", sigmoid=True)
    loader = DataLoader(Dataset(items), batch_size=batch_size, shuffle=False, num_workers=0)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=loader, network=_Channel0(), postprocessing=post
    )
    handler.attach(evaluator)
    evaluator.run()
    return evaluator


def _html_links(html_file: Path) -> list[str]:
    return re.findall(r"(?:src|href)='([^']+)'", html_file.read_text())


# ---------------------------------------------------------------------------------------------------- unit tests


def test_select_cases_picks_best_median_worst():
    rng = np.random.default_rng(0)
    scores = rng.permutation(np.linspace(0.05, 0.95, 19))
    groups = select_cases(scores, k=3)
    ranked = list(np.argsort(-scores))
    assert groups["best"] == ranked[:3]
    assert groups["worst"] == ranked[-3:]
    assert groups["median"] == ranked[8:11]
    assert scores[groups["median"][1]] == pytest.approx(np.median(scores))
    # fewer than 3k images: each shown once, in three near-equal groups
    assert select_cases([0.2, 0.9, 0.5, 0.7, 0.1], k=3) == {"best": [1, 3], "median": [2], "worst": [0, 4]}
    assert select_cases([0.2, 0.9, 0.5], k=3) == {"best": [1], "median": [2], "worst": [0]}
    assert select_cases([0.3], k=3) == {"best": [0], "median": [], "worst": []}
    assert select_cases([], k=3) == {"best": [], "median": [], "worst": []}


def test_case_scores_binary_and_multiclass():
    label = torch.zeros(1, 4, 4)
    label[0, :2] = 1  # 8 pixels
    pred = torch.zeros(1, 4, 4)
    pred[0, :1] = 0.9  # 4 pixels, all inside
    pred[0, 3, 0] = 0.6  # one false positive
    dice, iou = case_scores(pred, label)
    assert dice == pytest.approx(2 * 4 / (2 * 4 + 1 + 4)) and iou == pytest.approx(4 / (4 + 1 + 4))
    assert case_scores(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)) == (1.0, 1.0)  # empty on empty scores 1
    # 3 classes: class 1 perfect, class 2 missed entirely -> mean Dice 0.5
    lab = torch.zeros(1, 4, 4)
    lab[0, 0] = 1
    lab[0, 3] = 2
    probs = torch.zeros(3, 4, 4)
    probs[0] = 1.0
    probs[0, 0], probs[1, 0] = 0.0, 1.0
    assert case_scores(probs, lab)[0] == pytest.approx(0.5)
    gt, pr = label_maps(probs, lab)
    assert gt.shape == (4, 4) and set(np.unique(gt)) == {0, 1, 2} and set(np.unique(pr)) == {0, 1}
    assert gt[0, 0] == 1 and gt[0, 3] == 2  # transposed: MONAI's (W, H) back to the file's (H, W)


def test_overlay_fill_and_contour():
    image = np.zeros((10, 12, 3), np.uint8)
    labels = np.zeros((10, 12), np.uint8)
    labels[2:8, 3:9] = 1
    out = overlay(image, labels, colour=(255, 0, 0), alpha=0.5)
    assert tuple(out[2, 3]) == (255, 0, 0)  # contour opaque
    assert tuple(out[5, 5]) == (128, 0, 0)  # inside translucent
    assert tuple(out[0, 0]) == (0, 0, 0)
    with pytest.raises(ValueError, match="sizes differ"):
        overlay(image, labels[:5])


def test_build_report_writes_files_and_links(tmp_path):
    dices = [0.91, 0.15, 0.55, 0.73, 0.42, 0.88, 0.05, 0.63, 0.35, 0.99, 0.27, 0.5]
    cases = _cases(dices)
    out = tmp_path / "report"
    summary = build_report(
        cases, out, ckpt_path="/m/model.pt", settings={"network_name": "lvunet"}, metrics={"pooled_dice": 0.6}
    )
    assert summary["mean_dice"] == pytest.approx(np.mean(dices))
    assert summary["median_dice"] == pytest.approx(np.median(dices)) and summary["n_images"] == 12
    for name in ("report.png", "dice_hist.png", "per_image.csv", "report.html"):
        assert (out / name).is_file(), name
    assert not (out / "learning_curves.png").exists()  # no run history given
    links = _html_links(out / "report.html")
    assert {"report.png", "dice_hist.png", "per_image.csv"} <= set(links)
    assert all((out / link).is_file() for link in links)
    html_text = (out / "report.html").read_text()
    assert "/m/model.pt" in html_text and "lvunet" in html_text and "pooled_dice" in html_text
    # the selected rows: best 0.99, 0.91, 0.88; median 0.55, 0.5, 0.42; worst 0.15, 0.05 ... (worst 3 by Dice)
    selected = re.findall(r"<th>(best|median|worst): (case\d+)\.png</th>", html_text)
    names = {g: [n for gg, n in selected if gg == g] for g in ("best", "median", "worst")}
    assert names["best"] == ["case09", "case00", "case05"]
    assert names["median"] == ["case02", "case11", "case04"]
    assert names["worst"] == ["case10", "case01", "case06"]
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["dice"]) for r in rows] == pytest.approx(dices)
    # the grid: 9 rows of 3 pictures (3 columns of 3.1 inch rows at 80 dpi)
    assert Image.open(out / "report.png").height == pytest.approx(9 * 3.1 * 80, abs=2)


def test_build_report_with_curves(tmp_path):
    from lightseg.report import metric_histories, mlflow_client

    uri, run_id = _mlflow_run(tmp_path)
    histories = metric_histories(mlflow_client(uri), run_id)
    assert [s for s, _ in histories["val_mean_dice"]] == [1, 2, 3]
    build_report(_cases([0.2, 0.8, 0.5]), tmp_path / "r", histories=histories)
    assert (tmp_path / "r" / "learning_curves.png").is_file()
    assert "learning_curves.png" in _html_links(tmp_path / "r" / "report.html")


# ---------------------------------------------------------------------------------------------------- handler


def test_handler_on_evaluator_logs_to_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    uri, run_id = _mlflow_run(tmp_path)
    ckpt = tmp_path / "models" / "model.pt"
    write_settings(ckpt, {"mlflow_run_id": run_id, "tracking_uri": uri, "network_name": "test", "image_size": [24]})
    items, dices = _evaluator_data(10)
    handler = EvaluationReport(tmp_path / "eval" / "report", ckpt_path=ckpt, split="testing")
    _run_evaluator(items, handler)

    assert [c.dice for c in handler.cases] == pytest.approx(dices)
    assert [c.name for c in handler.cases] == [f"img{i:02d}.png" for i in range(10)]
    out = tmp_path / "eval" / "report"
    for name in ("report.png", "dice_hist.png", "learning_curves.png", "per_image.csv", "report.html"):
        assert (out / name).is_file(), name
    html_text = (out / "report.html").read_text()
    assert re.findall(r"<th>best: (img\d+)\.png", html_text) == ["img00", "img01", "img02"]
    assert re.findall(r"<th>worst: (img\d+)\.png", html_text) == ["img07", "img08", "img09"]
    assert "network_name" in html_text and str(ckpt) in html_text

    client = MlflowClient(tracking_uri=uri)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["test_mean_dice"] == pytest.approx(np.mean(dices))
    assert metrics["test_median_dice"] == pytest.approx(np.median(dices))
    assert metrics["test_n_images"] == 10 and 0 < metrics["test_mean_iou"] < metrics["test_mean_dice"]
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation/testing")}
    assert {"evaluation/testing/report.html", "evaluation/testing/report.png"} <= artifacts


def test_handler_rereads_past_max_stored(tmp_path):
    items, dices = _evaluator_data(7)
    handler = EvaluationReport(tmp_path / "r", max_stored=2, postprocessing=Activationsd(keys="pred", sigmoid=True))
    _run_evaluator(items, handler, batch_size=3)
    stored = [c.image is not None for c in handler.cases]
    # the first two kept during the run; every selected one (all 7 here: fewer than 9) re-read at the end
    assert all(stored)
    assert [c.dice for c in handler.cases] == pytest.approx(dices)
    assert (tmp_path / "r" / "report.png").is_file()
    # re-read predictions are the same as during the run
    _, pred = label_maps(torch.sigmoid(items[5]["image"][:1]), items[5]["label"])
    assert np.array_equal(handler.cases[5].pictures()[2], pred)


def test_handler_without_run_or_with_dead_server(tmp_path, caplog):
    items, _ = _evaluator_data(4)
    caplog.set_level(logging.INFO)
    handler = EvaluationReport(tmp_path / "a", ckpt_path=tmp_path / "none" / "model.pt")
    _run_evaluator(items, handler)
    assert (tmp_path / "a" / "report.html").is_file() and not (tmp_path / "a" / "learning_curves.png").exists()
    assert caplog.text.count("learning curves skipped") == 1

    ckpt = tmp_path / "models" / "model.pt"
    write_settings(ckpt, {"mlflow_run_id": "0123", "tracking_uri": "http://127.0.0.1:9"})
    start = time.monotonic()
    _run_evaluator(items, EvaluationReport(tmp_path / "b", ckpt_path=ckpt))
    assert time.monotonic() - start < 20
    assert (tmp_path / "b" / "report.html").is_file()
    assert "unreachable" in caplog.text
    assert caplog.text.count("unreachable") == 1
    assert log_to_mlflow(f"sqlite:///{tmp_path / 'missing.db'}", "0123", {"x": 1.0}) is False
    assert not (tmp_path / "missing.db").exists()  # no empty store created


def test_log_to_a_server_that_is_not_mlflow(tmp_path):
    """An HTTP server that answers, but not as MLflow: False within seconds (no retries), environment restored."""
    import http.server
    import os
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = time.monotonic()
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        assert log_to_mlflow(uri, "0123", {"test_mean_dice": 0.5}, tmp_path) is False
        assert time.monotonic() - start < 15
    finally:
        server.shutdown()
        server.server_close()
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_handler_multiclass(tmp_path):
    """3 classes (softmax, label map): per-image Dice is the mean over the two foreground classes."""
    size = 20
    items, expected = [], []
    for i in range(4):
        label = torch.zeros(1, size, size)
        label[0, 2:8, 2:8] = 1
        label[0, 12:18, 12:18] = 2
        guess = label.clone()
        if i % 2:
            guess[guess == 2] = 0  # class 2 missed: Dice 1 for class 1, 0 for class 2
        logits = torch.nn.functional.one_hot(guess[0].long(), 3).movedim(-1, 0).float() * 10
        image = MetaTensor(logits, meta={"filename_or_obj": f"/d/m{i}.png"})
        items.append({"image": image, "label": MetaTensor(label)})
        expected.append(0.5 if i % 2 else 1.0)

    class _Identity(_Channel0):
        def forward(self, x):
            return x + 0 * self.dummy

    loader = DataLoader(Dataset(items), batch_size=2, shuffle=False, num_workers=0)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=_Identity(),
        postprocessing=Activationsd(keys="pred", softmax=True),
    )
    handler = EvaluationReport(tmp_path / "r")
    handler.attach(evaluator)
    evaluator.run()
    assert [c.dice for c in handler.cases] == pytest.approx(expected)
    assert set(np.unique(handler.cases[0].pictures()[1])) == {0, 1, 2}
    assert set(np.unique(handler.cases[1].pictures()[2])) == {0, 1}
    assert (tmp_path / "r" / "report.png").is_file()


# ---------------------------------------------------------------------------------------------------- overlays


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_save_overlay_at_original_size(tmp_path, mode):
    h, w = 23, 37
    arr = (np.arange(h * w).reshape(h, w) % 200).astype(np.uint16 if mode == "I;16" else np.uint8)
    img = Image.fromarray(np.stack([arr] * 3, -1) if mode == "RGB" else arr)
    src = tmp_path / "in dir" / "photo 1.png"
    src.parent.mkdir()
    img.save(src)
    mask = torch.zeros(1, w, h)  # MONAI's (C, W, H) of a PIL-read file
    mask[0, 5:15, 3:10] = 1
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    SaveOverlayd("pred", output_dir=out_dir)({"pred": MetaTensor(mask, meta={"filename_or_obj": str(src)})})
    written = out_dir / "photo 1_overlay.png"
    assert written.is_file()
    pic = np.asarray(Image.open(written))
    assert Image.open(written).size == (w, h) and pic.shape == (h, w, 3)
    assert pic[6, 10, 0] > pic[6, 10, 1]  # inside the mask (rows 3:10, columns 5:15): reddened
    assert pic[20, 30, 0] == pic[20, 30, 1]  # outside: the gray image as it was


def test_save_overlay_wrong_size_names_file(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(src)
    with pytest.raises(ValueError, match=r"a\.png.*original size"):
        SaveOverlayd("pred", output_dir=tmp_path)(
            {"pred": MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": str(src)})}
        )


def _reddened(path: Path) -> np.ndarray:
    pic = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return pic[..., 0] - pic[..., 1] > 30


@pytest.mark.slow
def test_inferring_overlays_for_every_format(tmp_path):
    """A fixed 1x1 convolution marks bright pixels: each overlay is at the input's size with the asymmetric
    bright block coloured where it is in the file (PNG gray/RGBA, JPEG, TIFF, BMP, 2D NIfTI, DICOM)."""
    import nibabel as nib

    from tests.dicom_utils import write_dicom

    h, w = 45, 70
    a = np.full((h, w), 20, np.uint8)
    a[5:15, 44:64] = 235  # top-right block
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(a).save(inputs / "gray.png")
    Image.fromarray(np.stack([a, a, a, np.full_like(a, 255)], -1)).save(inputs / "rgba.png")
    Image.fromarray(np.stack([a] * 3, -1)).save(inputs / "photo.jpg", quality=98)
    Image.fromarray(np.stack([a] * 3, -1)).save(inputs / "scan.tif")
    Image.fromarray(np.stack([a] * 3, -1)).save(inputs / "bitmap.bmp")
    nib.save(nib.Nifti1Image(a.T.astype(np.float32), np.diag([0.5, 0.7, 1, 1])), inputs / "slice.nii.gz")
    write_dicom(inputs / "frame.dcm", a.astype(np.uint16) * 16)
    models = tmp_path / "models"
    models.mkdir()
    torch.save({"weight": torch.ones(1, 3, 1, 1), "bias": torch.zeros(1)}, models / "model.pt")
    out = tmp_path / "out"
    net_def = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 1, "kernel_size": 1}
    _ok(
        run_bundle(
            "cmunext_xxs", ("inference.json",), input=str(inputs), ckpt_dir=str(models), output_dir=str(out),
            image_size=[64, 64], network_def=net_def, overlay="true",
        )
    )  # fmt: skip
    expected = np.zeros((h, w), bool)
    expected[5:15, 44:64] = True
    for stem in ("gray", "rgba", "photo", "scan", "bitmap", "slice", "frame"):
        mask = np.array(Image.open(out / f"{stem}_seg.png")) > 0
        coloured = _reddened(out / f"{stem}_overlay.png")
        assert coloured.shape == (h, w), stem
        assert (coloured ^ expected).sum() <= 2 * (10 + 20) + 4, stem
        assert np.array_equal(coloured, mask), stem  # the overlay shows the written mask, pixel for pixel

    # off by default
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(inputs / "gray.png", single)
    _ok(
        run_bundle(
            "cmunext_xxs", ("inference.json",), input=str(single), ckpt_dir=str(models),
            output_dir=str(tmp_path / "plain"), image_size=[64, 64], network_def=net_def,
        )
    )  # fmt: skip
    assert (tmp_path / "plain" / "gray_seg.png").is_file() and not list((tmp_path / "plain").glob("*_overlay.png"))


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_config_switches(bundle, tmp_path):
    """``report`` (default on) adds the handler after MetricsSaver; ``overlay`` (default off) adds SaveOverlayd
    after the postprocessing of the folder inference."""
    from monai.bundle import ConfigParser

    configs = BUNDLES / bundle / "configs"
    for flag, on in ((None, True), ("false", False)):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), str(configs / "evaluate.json")])
        parser.update({"bundle_root": str(BUNDLES / bundle), "output_dir": str(tmp_path), "pretrained": "none"})
        if flag is not None:
            parser["report"] = flag
        names = [type(h).__name__ for h in parser.get_parsed_content("validate#handlers")]
        assert ("EvaluationReport" in names) == on, names
        assert not on or names.index("EvaluationReport") > names.index("MetricsSaver")
    for flag, on in ((None, False), ("true", True)):
        parser = ConfigParser()
        parser.read_config(str(configs / "inference.json"))
        parser["bundle_root"] = str(BUNDLES / bundle)
        if flag is not None:
            parser["overlay"] = flag
        names = [type(t).__name__ for t in parser.get_parsed_content("infer_postprocessing").transforms]
        assert names == ["Compose", "SaveOverlayd"] if on else names == ["Compose"], names
        # the postprocessing itself (MONAI Label's and Deploy's) holds MONAI's transforms only
        assert "SaveOverlayd" not in [type(t).__name__ for t in parser.get_parsed_content("postprocessing").transforms]


# ---------------------------------------------------------------------------------------------------- end to end


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_train_evaluate_report_infer_overlay(tiny_dataset, tmp_path):
    """Train 1 epoch with MLflow, evaluate (report written and logged to the run), infer with overlays."""
    from mlflow.tracking import MlflowClient

    from lightseg.settings import read_settings

    data, datalist = tiny_dataset
    bundles = tmp_path / "bundles"
    shutil.copytree(BUNDLES / "cmunext_xxs", bundles / "cmunext_xxs", ignore=shutil.ignore_patterns("models", "eval"))
    bundle = bundles / "cmunext_xxs"
    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    base = tiny_overrides(out, data, datalist, bundles_dir=bundles)
    _ok(run_bundle(bundle, ("train.json",), run_id="training", epochs=1, tracking_uri=uri, **base))
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cmunext_xxs").experiment_id])
    settings = read_settings(out / "models" / "model.pt")
    if not (settings or {}).get("mlflow_run_id"):  # training that does not record its run yet: record it here
        write_settings(out / "models" / "model.pt", {**(settings or {}), "mlflow_run_id": run.info.run_id,
                                                     "tracking_uri": uri})  # fmt: skip
    assert read_settings(out / "models" / "model.pt")["mlflow_run_id"] == run.info.run_id

    _ok(run_bundle(bundle, ("train.json", "evaluate.json"), run_id="evaluating", use_mlflow="false", **base))
    report = out / "eval" / "report"
    for name in ("report.png", "dice_hist.png", "learning_curves.png", "per_image.csv", "report.html"):
        assert (report / name).is_file(), name
    with open(report / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(json.loads(datalist.read_text())["testing"])
    with open(out / "eval" / "mean_dice_raw.csv") as f:  # MetricsSaver's per-image Dice of the same run
        saved = {r["filename"]: float(r["mean"]) for r in csv.DictReader(f, delimiter=",")}
    assert {r["file"]: float(r["dice"]) for r in rows} == pytest.approx(saved, abs=1e-4)
    logged = client.get_run(run.info.run_id).data.metrics
    assert "test_mean_dice" in logged and "test_pooled_dice" in logged
    assert "evaluation/testing/report.html" in {
        a.path for a in client.list_artifacts(run.info.run_id, "evaluation/testing")
    }

    infer = {k: v for k, v in base.items() if k not in ("batch_size", "checkpoint_dir")}
    _ok(run_bundle(bundle, ("inference.json",), overlay="true", **infer))
    for entry in json.loads(datalist.read_text())["testing"]:
        stem = Path(entry["image"]).stem
        original = Image.open(data / entry["image"])
        assert (out / "eval" / f"{stem}_seg.png").is_file()
        assert Image.open(out / "eval" / f"{stem}_overlay.png").size == original.size

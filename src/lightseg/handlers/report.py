"""The evaluation report: per-image scores and thumbnails collected during ``run evaluating``, pictures at the end."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import torch
from ignite.engine import Engine, Events

from lightseg.report import (
    ImageCase,
    build_report,
    case_scores,
    display_image,
    encode_picture,
    label_maps,
    log_to_mlflow,
    metric_histories,
    mlflow_client,
    select_cases,
    thumbnail,
)

__all__ = ["EvaluationReport", "split_prefix"]

logger = logging.getLogger(__name__)


def split_prefix(split: str) -> str:
    """The MLflow metric prefix of an evaluation split: ``test_`` for ``testing``, else ``<split>_``."""
    return "test_" if split == "testing" else f"{split}_"


class EvaluationReport:
    """Write the evaluation report (:mod:`lightseg.report`) when an evaluator completes, and log it to MLflow.

    Per image (each item of the decollated ``engine.state.output``) it keeps the file name, Dice and IoU computed
    from ``pred``/``label``, and thumbnails of at most ``thumbnail_size`` pixels (JPEG/PNG-compressed in memory,
    some 10-30 kB an image at 256 px). Past ``max_stored`` images no
    more thumbnails are kept: at the end the chosen best/median/worst images are re-read from the evaluator's
    dataset (unshuffled, in iteration order) and run through its network again (with ``postprocessing``, the
    evaluator's own chain, e.g. the activation).

    The model's MLflow run comes from ``run_id``/``tracking_uri`` or, when not given, from the settings saved
    beside ``ckpt_path`` (``mlflow_run_id``, ``tracking_uri``). Its metric histories give the learning curves;
    the summary (``<prefix>mean_dice``, ``median_dice``, ``mean_iou``, ``median_iou``, ``n_images``, plus every
    scalar metric of the evaluator) and the report folder (artifact ``evaluation/<split>``) are logged to it.
    A missing or unreachable run is one log line, never a failure.

    Args:
        report_dir: output folder.
        ckpt_path: the evaluated checkpoint (shown in the report; its settings locate the MLflow run).
        split: the evaluated split (report title, metric prefix, artifact folder).
        intensity_mean, intensity_std: the input normalization to undo for display (min-max scaled without).
        thumbnail_size: longest side of the stored thumbnails.
        max_stored: images whose thumbnails are kept in memory.
        postprocessing: the evaluator's postprocessing, for re-read images (None: identity).
        run_id, tracking_uri: the model's MLflow run (default: from its settings).
        log_mlflow: log metrics and the report to the run.
        k: images per group (best, median, worst).
    """

    def __init__(
        self,
        report_dir: str | os.PathLike,
        ckpt_path: str | os.PathLike | None = None,
        split: str = "testing",
        intensity_mean: Sequence[float] | None = None,
        intensity_std: Sequence[float] | None = None,
        thumbnail_size: int = 256,
        max_stored: int = 500,
        postprocessing: Callable | None = None,
        run_id: str | None = None,
        tracking_uri: str | None = None,
        log_mlflow: bool = True,
        k: int = 3,
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
    ) -> None:
        self.report_dir = str(report_dir)
        self.ckpt_path = None if ckpt_path is None else str(ckpt_path)
        self.split = str(split)
        self.mean, self.std = intensity_mean, intensity_std
        self.thumbnail_size = int(thumbnail_size)
        self.max_stored = int(max_stored)
        self.postprocessing = postprocessing
        self.run_id, self.tracking_uri = run_id, tracking_uri
        self.log_mlflow = log_mlflow
        self.k = int(k)
        self.image_key, self.label_key, self.pred_key = image_key, label_key, pred_key
        self.cases: list[ImageCase] = []
        self.summary: dict[str, float] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.complete)

    def reset(self, engine: Engine | None = None) -> None:
        self.cases = []

    def _case(self, item: dict, index: int, keep: bool) -> ImageCase:
        image, label, pred = item[self.image_key], item[self.label_key], item[self.pred_key]
        meta = getattr(image, "meta", None) or {}
        file = meta.get("filename_or_obj") or f"image_{index:05d}"
        file = str(file[0] if isinstance(file, (list, tuple)) else file)
        dice, iou = case_scores(pred, label)
        case = ImageCase(file, dice, iou)
        if keep:
            gt, pr = label_maps(pred, label)
            size = self.thumbnail_size
            case.image = encode_picture(thumbnail(display_image(image, self.mean, self.std), size), lossy=True)
            case.gt = encode_picture(thumbnail(gt, size, nearest=True))
            case.pred = encode_picture(thumbnail(pr, size, nearest=True))
        return case

    def collect(self, engine: Engine) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        for item in items:
            index = len(self.cases)
            self.cases.append(self._case(item, index, keep=index < self.max_stored))

    def _reread(self, engine: Engine, index: int) -> ImageCase:
        """Thumbnails of image ``index`` of the evaluator's dataset, predicted again."""
        from monai.data import list_data_collate

        dataset = engine.data_loader.dataset  # type: ignore[attr-defined]
        batch = list_data_collate([dataset[index]])
        prepared = engine.prepare_batch(batch, engine.state.device, engine.non_blocking, **engine.to_kwargs)  # type: ignore[attr-defined]
        inputs, targets = prepared[:2]
        args, kwargs = (prepared[2], prepared[3]) if len(prepared) == 4 else ((), {})
        engine.network.eval()  # type: ignore[attr-defined]
        with torch.no_grad():
            pred = engine.inferer(inputs, engine.network, *args, **kwargs)  # type: ignore[attr-defined]
        item = {self.image_key: inputs[0], self.label_key: targets[0], self.pred_key: pred[0]}
        if self.postprocessing is not None:
            item = self.postprocessing(item)
        case = self._case(item, index, keep=True)
        if case.file != self.cases[index].file:
            raise RuntimeError(
                f"EvaluationReport: re-read image {index} is {case.file}, expected {self.cases[index].file}: the "
                "evaluation data loader must not shuffle (or raise max_stored)."
            )
        return case

    def _settings(self) -> dict:
        if self.ckpt_path is None:
            return {}
        from lightseg.settings import read_settings

        try:
            return read_settings(self.ckpt_path) or {}
        except ValueError as e:
            logger.warning("%s", e)
            return {}

    def complete(self, engine: Engine) -> None:
        if not self.cases:
            logger.warning("EvaluationReport: no images were evaluated; no report written.")
            return
        groups = select_cases([c.dice for c in self.cases], self.k)
        for index in {i for idx in groups.values() for i in idx}:
            if self.cases[index].image is None:
                self.cases[index] = self._reread(engine, index)
        settings = self._settings()
        run_id = self.run_id or settings.get("mlflow_run_id")
        tracking_uri = self.tracking_uri or settings.get("tracking_uri")
        client = mlflow_client(tracking_uri) if run_id else None
        if not run_id:
            logger.info(
                "no MLflow run known for %s (no mlflow_run_id in its settings): learning curves skipped, report and "
                "metrics not logged to MLflow",
                self.ckpt_path,
            )
        histories = None
        if client is not None:
            try:
                histories = metric_histories(client, run_id)
            except Exception as e:
                logger.warning("learning curves skipped: cannot read run %s at %s (%s)", run_id, tracking_uri, e)
        metrics = {
            k: float(v)
            for k, v in engine.state.metrics.items()
            if isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)
        }
        self.summary = build_report(
            self.cases, self.report_dir, self.ckpt_path, settings, histories, metrics, self.split, self.k
        )
        if self.log_mlflow and client is not None:
            prefix = split_prefix(self.split)
            logged = {f"{prefix}{k}": v for k, v in self.summary.items()}
            logged.update({f"{prefix}{k}": v for k, v in metrics.items() if f"{prefix}{k}" not in logged})
            log_to_mlflow(tracking_uri, run_id, logged, self.report_dir, f"evaluation/{self.split}", client=client)

"""Pictures of the results: the evaluation report and inference overlays.

The evaluation report (written by :class:`lightseg.handlers.EvaluationReport` at the end of ``run evaluating``)
is a folder with

- ``report.png``: rows of image / ground-truth overlay / prediction overlay for the best, median and worst images
  by Dice, each titled with its file name and Dice;
- ``dice_hist.png``: histograms of the per-image Dice and IoU;
- ``learning_curves.png``: loss and validation metrics of the model's MLflow run (when the run is known);
- ``per_image.csv``: file, Dice, IoU of every image;
- ``report.html``: all of the above with a summary table (mean/median Dice and IoU, N, checkpoint, settings).

Per-image Dice and IoU follow :mod:`lightseg.metrics.functional` (threshold 0.5 for one channel, argmax and the
mean over foreground classes for several). Images are shown as the files look: MONAI's PIL reader loads a
``(W, H)`` array, so the displayed arrays are the transposed tensors.

:class:`SaveOverlayd` writes ``<stem>_overlay.png`` beside each inferred mask.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import logging
import math
import os
import socket
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from lightseg.metrics.functional import confusion_counts, scores_from_counts
from lightseg.metrics.segmentation import foreground_channels

__all__ = [
    "GROUPS",
    "ImageCase",
    "SaveOverlayd",
    "build_report",
    "case_scores",
    "display_image",
    "encode_picture",
    "label_maps",
    "log_to_mlflow",
    "metric_histories",
    "mlflow_client",
    "overlay",
    "quick_http",
    "select_cases",
    "thumbnail",
]

logger = logging.getLogger(__name__)

GROUPS = ("best", "median", "worst")
# RGB colours: ground truth green, prediction red-orange; classes beyond the first take the next palette entries
GT_COLOUR = (0, 200, 80)
PRED_COLOUR = (255, 70, 30)
PALETTE = ((255, 70, 30), (30, 144, 255), (255, 215, 0), (186, 85, 211), (0, 206, 209), (255, 105, 180))


def encode_picture(array: np.ndarray, lossy: bool = False) -> bytes:
    """``array`` (uint8 ``(H, W)`` or ``(H, W, 3)``) as JPEG (``lossy``, quality 90) or PNG bytes."""
    buf = io.BytesIO()
    if lossy:
        Image.fromarray(array).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _decoded(value: np.ndarray | bytes | None) -> np.ndarray | None:
    return np.asarray(Image.open(io.BytesIO(value))) if isinstance(value, bytes) else value


@dataclass
class ImageCase:
    """One evaluated image: its file, scores and (optionally) display thumbnails.

    ``image`` (``(H, W, 3)``), ``gt`` and ``pred`` (``(H, W)`` label maps, 0 background) are uint8 arrays, or
    their :func:`encode_picture` bytes (a few kB instead of a few hundred: what the evaluation handler keeps).
    """

    file: str
    dice: float
    iou: float
    image: np.ndarray | bytes | None = None
    gt: np.ndarray | bytes | None = None
    pred: np.ndarray | bytes | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.file) or self.file

    def pictures(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, gt, pred) as arrays; ValueError when the case has no thumbnails."""
        image, gt, pred = _decoded(self.image), _decoded(self.gt), _decoded(self.pred)
        if image is None or gt is None or pred is None:
            raise ValueError(f"case {self.file}: no thumbnails to draw.")
        return image, gt, pred


# ---------------------------------------------------------------------------------------------------- per image


def case_scores(pred: torch.Tensor, label: torch.Tensor, threshold: float = 0.5) -> tuple[float, float]:
    """(Dice, IoU) of one image: ``pred`` ``(C, H, W)`` probabilities, ``label`` ``(1 or C, H, W)``.

    One channel: ``pred >= threshold``; several: the argmax, scored per foreground class, then averaged.
    """
    p, y = torch.as_tensor(pred).float()[None], torch.as_tensor(label).float()[None]
    p, y = foreground_channels(p, y)
    counts = confusion_counts(p, y, threshold)
    return float(scores_from_counts(counts, "dice").mean()), float(scores_from_counts(counts, "iou").mean())


def label_maps(pred: torch.Tensor, label: torch.Tensor, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(ground truth, prediction) as ``(H, W)`` uint8 label maps (0 background) in the files' orientation."""
    pred, label = torch.as_tensor(pred).detach().float().cpu(), torch.as_tensor(label).detach().float().cpu()
    if pred.shape[0] == 1:
        p = (pred[0] >= threshold).to(torch.uint8)
        g = (label[0] > 0.5).to(torch.uint8)
    else:
        p = pred.argmax(0).to(torch.uint8)
        g = label[0].round().clamp(0, 255).to(torch.uint8) if label.shape[0] == 1 else label.argmax(0).to(torch.uint8)
    return g.numpy().T.copy(), p.numpy().T.copy()


def display_image(image: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
    """A network input ``(C, W, H)`` as an ``(H, W, 3)`` uint8 picture.

    ``mean``/``std``: the per-channel normalization to undo (``x * std + mean``, then clipped to [0, 1]); without
    them the image is min-max scaled.
    """
    x = torch.as_tensor(image).detach().float().cpu()
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        s = torch.as_tensor(std, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        x = (x * s + m).clamp(0, 1)
    else:
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    x = x[:3] if x.shape[0] >= 3 else x[:1].repeat(3, *([1] * (x.dim() - 1)))
    return (x.permute(2, 1, 0).numpy() * 255 + 0.5).astype(np.uint8)


def thumbnail(array: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """``array`` (``(H, W)`` or ``(H, W, 3)`` uint8) shrunk to at most ``size`` pixels on its longer side."""
    h, w = array.shape[:2]
    scale = size / max(h, w)
    if scale >= 1:
        return np.ascontiguousarray(array)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(array).resize(new, resample))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` that have a 4-neighbour outside it."""
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay(image: np.ndarray, labels: np.ndarray, colour=None, alpha: float = 0.4, contour: bool = True):
    """``labels`` (``(H, W)``, 0 background) drawn over ``image`` (``(H, W, 3)`` uint8): translucent fill and contour.

    ``colour``: one RGB colour for every class, or None for the palette (class k takes ``PALETTE[k - 1]``).
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f"overlay: image {image.shape[:2]} and mask {labels.shape} sizes differ.")
    out = image.astype(np.float32)
    for k in np.unique(labels):
        if k == 0:
            continue
        rgb = np.asarray(colour if colour is not None else PALETTE[(int(k) - 1) % len(PALETTE)], np.float32)
        mask = labels == k
        out[mask] = (1 - alpha) * out[mask] + alpha * rgb
        if contour:
            out[_boundary(mask)] = rgb
    return np.rint(out).clip(0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- selection


def select_cases(scores: Sequence[float], k: int = 3) -> dict[str, list[int]]:
    """Indices of the ``k`` best, ``k`` median and ``k`` worst ``scores`` (best first within each group).

    With fewer than ``3 k`` scores every index appears once, split into three near-equal groups (best, worst,
    then the median gets what is left): 1 best, 1 median, 1 worst of 3 images.
    """
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-1.0)
    order = [int(i) for i in np.argsort(-values, kind="stable")]
    n = len(order)
    if n >= 3 * k:
        start = n // 2 - k // 2
        return {"best": order[:k], "median": order[start : start + k], "worst": order[n - k :]}
    n_best = math.ceil(n / 3)
    n_worst = math.ceil((n - n_best) / 2)
    return {"best": order[:n_best], "median": order[n_best : n - n_worst], "worst": order[n - n_worst :]}


# ---------------------------------------------------------------------------------------------------- MLflow


def _sqlite_path(uri: str) -> str | None:
    return uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def quick_http(timeout: float = 10.0) -> Iterator[None]:
    """MLflow HTTP requests without retries and with a ``timeout`` (unless the environment sets them), restored on
    exit: a tracking server that answers badly costs seconds, not minutes of retries."""
    values = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout))}
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def mlflow_client(tracking_uri: str | None, timeout: float = 5.0):
    """An ``MlflowClient`` for ``tracking_uri`` when it can be reached, else None (one log line says why).

    A SQLite store must exist already (no empty store is created); an HTTP server must accept a connection within
    ``timeout`` seconds. Make the client's requests inside :func:`quick_http`.
    """
    if not tracking_uri:
        return None
    uri = str(tracking_uri)
    db = _sqlite_path(uri)
    if db is not None and not os.path.isfile(db):
        logger.warning("MLflow: no tracking store at %s; nothing logged.", db)
        return None
    if uri.startswith(("http://", "https://")):
        parsed = urlparse(uri)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        except OSError as e:
            logger.warning("MLflow: tracking server %s unreachable (%s); nothing read or logged.", uri, e)
            return None
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def metric_histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` of every metric of the run (sorted by step)."""
    with quick_http():
        names = sorted(client.get_run(run_id).data.metrics)
        return {
            name: sorted((int(m.step), float(m.value)) for m in client.get_metric_history(run_id, name))
            for name in names
        }


def log_to_mlflow(
    tracking_uri: str | None,
    run_id: str | None,
    metrics: Mapping[str, float],
    report_dir: str | os.PathLike | None = None,
    artifact_path: str = "evaluation",
    client=None,
) -> bool:
    """Log ``metrics`` and the files of ``report_dir`` (under ``artifact_path``) to an existing run.

    ``client``: an ``MlflowClient`` from :func:`mlflow_client` (made from ``tracking_uri`` when None). Returns
    False (with one log line) when the run is not known or cannot be reached; never raises for that.
    """
    if not run_id:
        logger.warning("MLflow: the model has no known run (no mlflow_run_id in its settings); nothing logged.")
        return False
    client = client or mlflow_client(tracking_uri)
    if client is None:
        return False
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
    try:
        with quick_http():
            client.get_run(run_id)
            client.log_batch(run_id, metrics=batch)
            if report_dir is not None:
                client.log_artifacts(run_id, str(report_dir), artifact_path)
    except Exception as e:
        logger.warning("MLflow: could not log to run %s at %s (%s); nothing more logged.", run_id, tracking_uri, e)
        return False
    logger.info("MLflow: logged %d metrics and %s to run %s", len(batch), artifact_path, run_id)
    return True


# ---------------------------------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_grid(cases: Sequence[ImageCase], groups: Mapping[str, Sequence[int]], path: str | os.PathLike) -> Path:
    """``report.png``: one row per selected case (image, ground truth overlay, prediction overlay)."""
    plt = _plt()
    rows = [(group, i) for group in GROUPS for i in groups.get(group, [])]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3.1 * len(rows)), squeeze=False)
    for r, (group, i) in enumerate(rows):
        case = cases[i]
        image, gt, pred = case.pictures()
        multi = max(int(gt.max()), int(pred.max())) > 1
        pictures = (
            image,
            overlay(image, gt, None if multi else GT_COLOUR),
            overlay(image, pred, None if multi else PRED_COLOUR),
        )
        for c, (ax, pic) in enumerate(zip(axes[r], pictures, strict=True)):
            ax.imshow(pic)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(group, fontsize=11)
        axes[r][0].set_title(case.name if len(case.name) <= 40 else "..." + case.name[-37:], fontsize=9)
        axes[r][1].set_title("ground truth", fontsize=9)
        axes[r][2].set_title(f"prediction: Dice {case.dice:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def plot_histogram(cases: Sequence[ImageCase], path: str | os.PathLike) -> Path:
    """``dice_hist.png``: per-image Dice and IoU histograms on [0, 1], mean and median marked."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, name in zip(axes, ("dice", "iou"), strict=True):
        values = np.asarray([getattr(c, name) for c in cases], dtype=np.float64)
        ax.hist(values, bins=20, range=(0, 1), color="tab:blue", edgecolor="white")
        ax.axvline(values.mean(), color="tab:red", label=f"mean {values.mean():.3f}")
        ax.axvline(np.median(values), color="tab:green", linestyle="--", label=f"median {np.median(values):.3f}")
        ax.set_xlabel(f"per-image {'Dice' if name == 'dice' else 'IoU'}")
        ax.set_ylabel("images")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{len(cases)} images")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def plot_learning_curves(histories: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike) -> Path | None:
    """``learning_curves.png``: losses (left, by logged step) and other per-epoch metrics (right).

    Bookkeeping values (``best_metric*``) and single points are left out; returns None when nothing is left.
    """
    curves = {k: v for k, v in histories.items() if len(v) > 1 and not k.startswith("best_metric")}
    losses = {k: v for k, v in curves.items() if "loss" in k}
    others = {k: v for k, v in curves.items() if k not in losses}
    panels = [(title, group) for title, group in (("loss", losses), ("metrics", others)) if group]
    if not panels:
        return None
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (title, group) in zip(axes[0], panels, strict=True):
        for name, points in sorted(group.items()):
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=name, linewidth=1.2)
        ax.set_title(title)
        ax.set_xlabel("iteration" if title == "loss" else "epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------------- report


def summary_metrics(cases: Sequence[ImageCase]) -> dict[str, float]:
    """``mean_dice, median_dice, mean_iou, median_iou, n_images`` of the per-image scores."""
    dice = np.asarray([c.dice for c in cases], dtype=np.float64)
    iou = np.asarray([c.iou for c in cases], dtype=np.float64)
    return {
        "mean_dice": float(dice.mean()),
        "median_dice": float(np.median(dice)),
        "mean_iou": float(iou.mean()),
        "median_iou": float(np.median(iou)),
        "n_images": float(len(cases)),
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _table(rows: Sequence[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def write_html(
    path: Path,
    cases: Sequence[ImageCase],
    groups: Mapping[str, Sequence[int]],
    summary: Mapping[str, float],
    images: Sequence[str],
    ckpt_path: str | None,
    settings: Mapping | None,
    metrics: Mapping[str, float] | None,
    split: str,
) -> Path:
    """``report.html``: summary, the figures (relative links), the selected cases, all metrics and the settings."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Evaluation report: {html.escape(split)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>Evaluation report: {html.escape(split)}</h1>",
        "<h2>Summary</h2>",
        _table(
            [
                ("images (N)", int(summary["n_images"])),
                ("mean Dice", summary["mean_dice"]),
                ("median Dice", summary["median_dice"]),
                ("mean IoU", summary["mean_iou"]),
                ("median IoU", summary["median_iou"]),
                ("checkpoint", ckpt_path or "unknown"),
            ]
        ),
        "<p>Per image: <a href='per_image.csv'>per_image.csv</a></p>",
    ]
    titles = {
        "report.png": "Best, median and worst images by Dice",
        "dice_hist.png": "Per-image metrics",
        "learning_curves.png": "Learning curves (MLflow run of the model)",
    }
    for name in images:
        parts.append(f"<h2>{titles.get(name, name)}</h2><p><img src='{html.escape(name)}' alt='{name}'></p>")
    rows = [
        (f"{g}: {cases[i].name}", f"Dice {cases[i].dice:.4f}, IoU {cases[i].iou:.4f}")
        for g in GROUPS
        for i in groups.get(g, [])
    ]
    parts += ["<h2>Selected images</h2>", _table(rows)]
    if metrics:
        parts += ["<h2>All metrics</h2>", _table(sorted(metrics.items()))]
    parts.append("<h2>Training settings</h2>")
    parts.append(_table(sorted(settings.items())) if settings else "<p>none saved</p>")
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def build_report(
    cases: Sequence[ImageCase],
    report_dir: str | os.PathLike,
    ckpt_path: str | None = None,
    settings: Mapping | None = None,
    histories: Mapping[str, Sequence[tuple[int, float]]] | None = None,
    metrics: Mapping[str, float] | None = None,
    split: str = "testing",
    k: int = 3,
) -> dict[str, float]:
    """Write the report of ``cases`` into ``report_dir``; returns :func:`summary_metrics`.

    The cases chosen by :func:`select_cases` must carry thumbnails. ``histories`` (from :func:`metric_histories`)
    gives the learning curves; without it that figure is left out.
    """
    if not cases:
        raise ValueError("build_report: no evaluated images (is the evaluation split empty?).")
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = select_cases([c.dice for c in cases], k)
    summary = summary_metrics(cases)
    with open(out / "per_image.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "dice", "iou"])
        writer.writerows([c.file, f"{c.dice:.6f}", f"{c.iou:.6f}"] for c in cases)
    images = [plot_grid(cases, groups, out / "report.png").name, plot_histogram(cases, out / "dice_hist.png").name]
    curves = plot_learning_curves(histories, out / "learning_curves.png") if histories else None
    if curves is not None:
        images.append(curves.name)
    elif (out / "learning_curves.png").is_file():
        (out / "learning_curves.png").unlink()  # a stale figure of an earlier report
    write_html(out / "report.html", cases, groups, summary, images, ckpt_path, settings, metrics, split)
    logger.info(
        "report: %s (%d images, mean Dice %.4f, median Dice %.4f)",
        out / "report.html",
        len(cases),
        summary["mean_dice"],
        summary["median_dice"],
    )
    return summary


# ---------------------------------------------------------------------------------------------------- inference


class SaveOverlayd(MapTransform):
    """Write ``<output_dir>/<stem>_<output_postfix>.png``: the mask over the original image, at its original size.

    The original is re-read from the mask's ``meta["filename_or_obj"]`` (set by ``LoadImaged`` and kept by
    ``Invertd``); the mask (after ``AsDiscreted``, ``(1, W, H)`` in MONAI's orientation of a PIL-read file) must
    already be at the original size. The file name follows ``SaveImaged(separate_folder=False)``, so the overlay
    lies beside the mask.

    Args:
        keys: the mask key (``pred``).
        output_dir: the folder of the masks.
        output_postfix: file name postfix (``overlay``).
        alpha: opacity of the mask's fill; the contour is drawn opaque.
        contour: draw the mask's contour.
        reader: the ``LoadImage`` reader(s) for the original (MONAI's defaults when None).
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | os.PathLike = "./",
        output_postfix: str = "overlay",
        alpha: float = 0.4,
        contour: bool = True,
        reader=None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = str(output_dir)
        self.output_postfix = output_postfix
        self.alpha = alpha
        self.contour = contour
        self.reader = reader

    def _original(self, filename: str) -> np.ndarray:
        """The original image as ``(W, H, 3)`` uint8 (MONAI's orientation), intensities min-max scaled."""
        from monai.transforms import LoadImage

        loaded = np.asarray(LoadImage(image_only=True, reader=self.reader, dtype=None)(filename))
        eight_bit = loaded.dtype == np.uint8
        img = loaded.astype(np.float64)
        while img.ndim > 2 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.ndim == 3 and img.shape[-1] in (2, 4):  # gray + alpha, RGBA: drop alpha
            img = img[..., :1] if img.shape[-1] == 2 else img[..., :3]
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"{filename}: cannot draw an overlay on an image of shape {list(img.shape)}.")
        if not eight_bit:  # 16-bit, float: min-max scaled for display
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(img)
        return img.clip(0, 255).astype(np.uint8)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from monai.data.utils import create_file_basename

        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            meta = getattr(mask, "meta", None) or {}
            filename = meta.get("filename_or_obj")
            if not filename:
                raise ValueError(f"SaveOverlayd: {key!r} has no meta['filename_or_obj'] to read the original from.")
            filename = str(filename)
            labels = np.asarray(torch.as_tensor(mask).detach().cpu())
            labels = labels[0] if labels.ndim == 3 else labels
            image = self._original(filename)
            if image.shape[:2] != labels.shape:
                raise ValueError(
                    f"{filename}: mask {list(labels.shape)} is not at the image's size {list(image.shape[:2])}; "
                    "put SaveOverlayd after Invertd (the mask must be at the original size)."
                )
            labels = np.rint(labels).clip(0, 255).astype(np.uint8)
            multi = int(labels.max()) > 1
            # (W, H) -> (H, W): the picture as the file looks, like SaveImaged's PIL writer
            pic = overlay(image.transpose(1, 0, 2), labels.T, None if multi else PRED_COLOUR, self.alpha, self.contour)
            base = create_file_basename(self.output_postfix, filename, self.output_dir, "", separate_folder=False)
            path = base + ".png"
            Image.fromarray(pic).save(path)
            logger.info("overlay written to %s", path)
        return d

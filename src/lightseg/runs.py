"""Run folders: every training writes to its own folder, and the bundle's model is replaced only on success.

Layout (defaults of ``train.json``)::

    <bundle>/runs/<run_name>/models/       model.pt, model_final.pt or model_best.pt, settings.json
    <bundle>/runs/<run_name>/checkpoints/  checkpoint.pt (for --resume)
    <bundle>/models/                       the last successful run's files, promoted as the last step

``run_name`` defaults to a new, time-stamped name; with ``--resume true`` it defaults to the most recent run
folder that holds a checkpoint, so resuming needs no other argument. Promotion copies the run's model files into
``<bundle>/models/``; the files they replace are never deleted: those of an earlier run are already in that run's
folder (identical copies are dropped, anything else, such as an export of the old model, is moved there), and
files of unknown origin are moved to ``<bundle>/runs/previous_<time>/models/``.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import time
from pathlib import Path

from lightseg.settings import SETTINGS_NAME, read_settings

__all__ = [
    "CHECKPOINT_NAME",
    "RunError",
    "check_run",
    "find_mlflow_run",
    "latest_resumable_run",
    "new_run_name",
    "promote",
    "resumable_params",
    "run_dir",
    "run_name",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_PATTERNS = ("model*.pt", SETTINGS_NAME)


class RunError(RuntimeError):
    """A run folder cannot be used as asked; the message names the path and what to pass instead."""


def new_run_name() -> str:
    """``run_<date>_<time>_<pid>``; under torchrun every rank gets the same name (the launcher's pid)."""
    stamp = time.strftime("%Y%m%d_%H%M%S")
    if "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ:
        return f"run_{time.strftime('%Y%m%d')}_ddp{os.getppid()}"
    return f"run_{stamp}_{os.getpid()}"


def latest_resumable_run(runs_dir: str | os.PathLike) -> str | None:
    """The name of the run folder under ``runs_dir`` whose checkpoint was written last, or None."""
    runs = Path(runs_dir)
    if not runs.is_dir():
        return None
    found = [(p.stat().st_mtime, p.parent.parent.name) for p in runs.glob(f"*/checkpoints/{CHECKPOINT_NAME}")]
    return max(found)[1] if found else None


def run_name(runs_dir: str | os.PathLike, resume: object = False) -> str:
    """The default run name: with ``resume``, the latest run folder under ``runs_dir`` that holds a checkpoint;
    otherwise (or when there is none: :func:`check_run` then stops with the path) a new name."""
    from lightseg.utils import as_bool

    name = latest_resumable_run(runs_dir) if as_bool(resume) else None
    if name is None:
        return new_run_name()
    logger.info("resuming the latest run with a checkpoint: %s", Path(runs_dir) / name)
    return name


def run_dir(runs_dir: str | os.PathLike, name: str) -> str:
    """``runs_dir/name``, refusing names that would leave ``runs_dir``."""
    name = str(name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise RunError(f"--run_name {name!r} must be a plain folder name (no path separators).")
    return os.path.join(str(runs_dir), name)


def _writable(folder: Path, what: str) -> None:
    from lightseg.utils import ensure_writable

    try:
        ensure_writable(folder)
    except OSError as e:
        raise RunError(f"{what} {folder} is not writable ({e.strerror or e}); choose another folder.") from None


def check_run(
    ckpt_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    resume: object = False,
    runs_dir: str | os.PathLike | None = None,
) -> bool:
    """Pre-flight of a training run (``train.json``'s ``initialize``): nothing is trained that cannot be saved.

    Raises:
        RunError: ``resume`` without a checkpoint (naming the path), a checkpoint already in ``checkpoint_dir``
            without ``resume`` (it would be overwritten after one epoch), or a folder that is not writable.
    """
    from lightseg.utils import as_bool

    checkpoint = Path(checkpoint_dir) / CHECKPOINT_NAME
    if as_bool(resume) and not checkpoint.is_file():
        where = f" and no run folder under {runs_dir} holds one" if runs_dir else ""
        raise RunError(
            f"--resume true: checkpoint {checkpoint} does not exist{where}. Start without --resume, or pass the "
            "--run_name (or --checkpoint_dir) of the run to continue."
        )
    if not as_bool(resume) and checkpoint.is_file():
        raise RunError(
            f"{checkpoint} holds the checkpoint of an earlier run and would be overwritten: pass --resume true to "
            "continue that run, or another --run_name (or --checkpoint_dir) to start a new one."
        )
    for folder, what in ((ckpt_dir, "model folder"), (checkpoint_dir, "checkpoint folder"),
                         (models_dir, "bundle model folder")):  # fmt: skip
        _writable(Path(folder), what)
    return True


def find_mlflow_run(tracking_uri: str | None, experiment_name: str, name: str) -> str | None:
    """The id of the latest MLflow run named ``name`` in ``experiment_name``, or None (never raises)."""
    if not tracking_uri:
        return None
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'", max_results=1
        )
        return runs[0].info.run_id if runs else None
    except Exception as e:  # tracking is best effort here: the run itself reports tracking failures
        logger.debug("MLflow run lookup failed: %s", e)
        return None


def _model_files(folder: Path) -> list[Path]:
    return sorted({p for pattern in MODEL_PATTERNS for p in folder.glob(pattern) if p.is_file()})


def _copy_atomic(src: Path, dst: Path) -> None:
    from lightseg.utils import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)


def promote(run_models: str | os.PathLike, models_dir: str | os.PathLike, runs_dir: str | os.PathLike) -> list[Path]:
    """Make the model files of ``run_models`` the bundle's (``models_dir``), keeping the ones they replace.

    Every file already in ``models_dir`` (models, settings, exports) is kept: dropped only when an identical copy
    is in the folder of the run it came from (``run_dir`` of its settings), else moved there, or to
    ``runs_dir/previous_<time>/models/`` when its run is unknown. Returns the files written.
    """
    src, dst = Path(run_models), Path(models_dir)
    if src.resolve() == dst.resolve():
        return []
    dst.mkdir(parents=True, exist_ok=True)
    existing = [p for p in dst.iterdir() if p.is_file() and p.name != ".gitkeep"]
    if existing:
        previous = read_settings(dst) or {}
        keep = Path(previous["run_dir"]) / "models" if previous.get("run_dir") else None
        if keep is None or not keep.is_dir():
            keep = Path(runs_dir) / f"previous_{time.strftime('%Y%m%d_%H%M%S')}" / "models"
        keep.mkdir(parents=True, exist_ok=True)
        moved = []
        for path in existing:
            target = keep / path.name
            if target.is_file() and filecmp.cmp(path, target, shallow=False):
                path.unlink()
            else:
                if target.exists():
                    target = keep / f"{path.stem}.{time.strftime('%Y%m%d_%H%M%S')}{path.suffix}"
                shutil.move(str(path), target)
                moved.append(target.name)
        logger.info("the previous model files are kept in %s%s", keep, f" (moved there: {moved})" if moved else "")
    written = []
    for path in _model_files(src):
        _copy_atomic(path, dst / path.name)
        written.append(dst / path.name)
    logger.info("promoted %s to %s: %s", src, dst, [p.name for p in written])
    return written


def resumable_params(
    params: dict, tracking_uri: str | None, experiment_name: str, name: str, resume: object = False
) -> dict:
    """``params`` for MONAI's MLFlowHandler, minus those a resumed run logged before with another value.

    MLflow refuses to change a logged parameter, and a resumed run continues the same MLflow run (same run name):
    a new value (``--epochs`` extended, say) is recorded as the tag ``lightseg.resumed.<key>`` instead.
    """
    from lightseg.utils import as_bool

    if not as_bool(resume):
        return params
    run_id = find_mlflow_run(tracking_uri, experiment_name, name)
    if run_id is None:
        return params
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    logged = client.get_run(run_id).data.params
    kept, changed = {}, {}
    for key, value in params.items():
        if key in logged and logged[key] != str(value):
            changed[key] = value
        else:
            kept[key] = value
    for key, value in changed.items():
        client.set_tag(run_id, f"lightseg.resumed.{key}", str(value))
    if changed:
        logger.info("resumed MLflow run %s: changed parameters recorded as tags: %s", run_id, changed)
    return kept

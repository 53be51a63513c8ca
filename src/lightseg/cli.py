"""Command-line hygiene for ``python -m monai.bundle run``: checked overrides, ``--help``, short errors.

MONAI's fire-based CLI turns every ``--key value`` after the command into ``parser[key] = value``: a typo
(``--epoch 2``) silently adds a new key, and ``--help`` after the config file becomes the override
``help=True`` and starts the run. The bundles call :func:`check_command_line` as the FIRST item of their
``initialize`` list (before anything is instantiated, so before any data, model file or MLflow run exists):

- every override key must exist in the merged config files (a top-level id, or an ``a#b`` id that resolves;
  a new keyword of a ``_target_`` component is allowed). An unknown key is an error listing the nearest valid
  keys; ``--strict_overrides false`` or ``LIGHTSEG_STRICT_OVERRIDES=0`` makes it a warning. A key that only
  another config of the bundle defines (``--epochs`` given to ``inference.json``) is a warning: it is unused.
- ``--help`` / ``-h`` anywhere prints the bundle's top-level options with their defaults and exits 0.
- a ``sys.excepthook`` is installed that prints one short message (the root cause of the exception chain,
  not MONAI's "Failed to evaluate ConfigExpression" wrappers) and writes the full traceback to a log file;
  ``--debug true`` or ``LIGHTSEG_DEBUG=1`` prints the full traceback instead.

:func:`check_image_size` checks ``image_size`` against the network's stride before any data is read.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from lightseg.bundles import _config_files_from_argv
from lightseg.utils import as_bool

__all__ = [
    "DESCRIPTIONS",
    "CommandLineError",
    "ImageSizeError",
    "check_command_line",
    "check_image_size",
    "check_override_keys",
    "format_help",
    "install_excepthook",
    "is_bundle_command_line",
    "override_keys",
    "root_cause",
]

logger = logging.getLogger(__name__)

ERROR_LOG_ENV = "LIGHTSEG_ERROR_LOG"
DEBUG_ENV = "LIGHTSEG_DEBUG"
STRICT_ENV = "LIGHTSEG_STRICT_OVERRIDES"

# One line for each option a user commonly sets; ``--help`` falls back to an item's ``_desc_``.
DESCRIPTIONS: dict[str, str] = {
    "bundle_name": "name of the bundle (selects bundles/<name>)",
    "bundle_root": "the bundle folder (found from --config_file when not given)",
    "ckpt_dir": "folder of model.pt (the trained weights)",
    "ckpt_path": "the model file to load",
    "checkpoint_dir": "folder of checkpoint.pt (what --resume true continues from)",
    "output_dir": "folder of evaluation results, inference masks and the local MLflow store",
    "dataset_dir": "folder the datalist's relative paths start from",
    "datalist": "Decathlon-style datalist JSON (training / validation / testing lists)",
    "input": "what to segment: a datalist, a folder or an image file",
    "input_split": "datalist section that inference reads",
    "eval_split": "datalist section that evaluation reads",
    "output_ext": "file extension of the written masks",
    "output_postfix": "suffix added to each mask's file name",
    "output_scale": "value of the foreground in written masks (255 for binary PNGs)",
    "device": "torch device (cuda:0 when available, else cpu)",
    "network_name": "registered network to build (lightseg.networks.list_networks())",
    "in_channels": "image channels: 3 (RGB) or 1 (grayscale)",
    "out_channels": "1 for binary (sigmoid) segmentation, N for N classes including background",
    "labels": "label names, background first",
    "epochs": "number of training epochs (with --time_budget: the most epochs)",
    "time_budget": "train for this many minutes (wall clock; LR and LV-UNet slope laid over it; null: off)",
    "batch_size": "training batch size",
    "val_batch_size": "validation batch size",
    "image_size": "[H, W] the images are resized to; each must be divisible by the network's stride",
    "learning_rate": "optimizer learning rate",
    "lr_schedule": "paper (the bundle's own schedule) or cosine (to 1 % of the rate over the epochs or time budget)",
    "weight_decay": "optimizer weight decay",
    "num_workers": "data loader worker processes (0: load in the main process)",
    "cache_rate": "fraction of the dataset cached in memory",
    "tune_allocator": "keep freed memory in the process (glibc mallopt; 2x faster eager CPU training here)",
    "fused_kernels": "fused BatchNorm+activation CPU kernel (same results; false: the plain modules)",
    "channels_last": "run the network in channels_last memory format",
    "compile": "torch.compile the network (true or a mode; eager with one warning when it cannot)",
    "bf16": "bf16 autocast of the forward pass on CPUs with native bf16 (approximate)",
    "val_interval": "validate every N epochs",
    "seed": "random seed (determinism)",
    "resume": "continue from checkpoint_dir/checkpoint.pt",
    "mask_threshold": "masks are foreground where value > threshold (null: any non-zero value)",
    "intensity_mean": "per-channel mean of the intensity normalisation",
    "intensity_std": "per-channel std of the intensity normalisation",
    "use_mlflow": "log the run to MLflow",
    "tracking_uri": "MLflow tracking URI (default: a SQLite file in output_dir)",
    "experiment_name": "MLflow experiment name",
    "run_name": "MLflow run name",
    "use_tensorboard": "also write TensorBoard logs to output_dir/tensorboard",
    "progress_bar": "show a progress bar",
    "model_select": "which model becomes model.pt: best (validation) or final",
    "runs_dir": "folder of the run folders (<runs_dir>/<run_name>/models, /checkpoints)",
    "run_dir": "this run's folder",
    "models_dir": "the bundle's models/ folder, updated from the run only when training succeeds",
    "promote": "copy the run's model into models_dir at the end (false: keep the current one)",
    "report": "write the evaluation report (overlays, histograms, learning curves)",
    "report_dir": "folder of the evaluation report",
    "overlay": "also write <name>_overlay.png beside each mask",
    "train_network": "the module trained (the network, or a wrapper around it)",
    "lr_step_transform": "what the LR scheduler's step() gets after each epoch",
    "deep_training": "LV-UNet deep training: activation slope 0 -> 1 over the epochs",
    "deep_training_epochs": "epochs of the deep-training schedule (null: all)",
    "min_learning_rate": "final learning rate of the cosine schedule",
    "pretrained": "encoder weights: a name (IMAGENET1K_V1), a file, or none",
    "pretrained_strict": "missing pretrained weights are an error (false: random init with a warning)",
    "pretrained_download": "download the pretrained weights when not cached",
    "loss": "loss function name",
    "loss_terms": "terms of the loss",
    "loss_alpha": "per-instance alpha weighting of the loss terms (none: plain sum)",
    "loss_gamma": "exponent of the per-instance weights (alpha ~ loss ** gamma)",
    "early_stopping": "stop when validation stops improving",
    "early_stopping_patience": "validations without improvement before stopping",
    "early_stopping_min_delta": "smallest improvement that counts",
    "early_stopping_start_above": "validations count against the patience from the first above this score (null: all)",
    "serp": "LiteNeXt SeRP self-supervised regularisation (EMA target, weak/strong views)",
    "ema_momentum": "momentum of SeRP's EMA target network",
    "serp_weight": "weight of the SeRP loss",
    "lr_factor": "ReduceLROnPlateau factor",
    "lr_patience": "ReduceLROnPlateau patience (validations)",
    "rotate_degrees": "random rotation range of the augmentation",
    "strict_overrides": "an unknown --key is an error (false: a warning)",
    "debug": "print full tracebacks instead of one short error message",
}

# Values that are not options: shown neither by --help nor as suggestions.
_NOT_OPTIONS = {"imports", "initialize", "run", "finalize", "training", "evaluating", "inferring", "_meta_"}


class CommandLineError(ValueError):
    """An override key the bundle's configs do not define."""


class ImageSizeError(ValueError):
    """``image_size`` does not fit the network."""


# ---------------------------------------------------------------------------------------------------------------
# command line parsing


def _run_arguments() -> set[str]:
    """Names ``python -m monai.bundle run`` consumes itself (never config overrides)."""
    names = {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}
    names |= {"workflow_name", "workflow_type", "properties_path", "workflow"}
    try:
        from monai.bundle import ConfigWorkflow
        from monai.bundle.scripts import create_workflow, run

        for fn in (run, create_workflow, ConfigWorkflow.__init__):
            names |= {
                n
                for n, p in inspect.signature(fn).parameters.items()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"
            }
    except (ImportError, ValueError, TypeError):  # pragma: no cover - MONAI always installed with lightseg
        pass
    return names


def _command_args(argv: list[str]) -> list[str]:
    """The arguments after ``run`` (or all of ``argv[1:]`` when there is no ``run`` command)."""
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg in ("run", "run_workflow"):
            return args[i + 1 :]
    return args


def override_keys(argv: list[str] | None = None) -> dict[str, Any]:
    """The ``--key value`` / ``--key=value`` pairs of a ``monai.bundle run`` command line, as typed (strings;
    a flag without a value is ``True``), without MONAI's own ``run`` arguments. Keys of an ``--args_file``
    other than ``run``'s arguments are overrides too."""
    argv = sys.argv if argv is None else argv
    args = _command_args(argv)
    skip = _run_arguments()
    pairs: dict[str, Any] = {}
    args_file = None
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--") or arg == "--":
            continue
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i < len(args) and not args[i].startswith("--"):
                value = args[i]
                i += 1
            else:
                value = True
        if key == "args_file":
            args_file = value
        if key and key not in skip:
            pairs[key] = value
    if isinstance(args_file, str) and Path(args_file).is_file():
        try:
            from monai.bundle import ConfigParser

            extra = ConfigParser.load_config_file(args_file)
            pairs = {**{k: v for k, v in extra.items() if k not in skip}, **pairs}
        except Exception as e:
            logger.debug("could not read args_file %s: %s", args_file, e)
    return pairs


def is_bundle_command_line(argv: list[str]) -> bool:
    """``argv`` is a ``python -m monai.bundle run ...`` (or ``torchrun -m monai.bundle run``) command line, not a
    host program that runs a bundle in-process (MONAI Label, MONAI Deploy, a test) with argv of its own."""
    if not argv:
        return False
    main = str(argv[0]).replace("\\", "/")
    return main.endswith(("monai/bundle/__main__.py", "monai.bundle")) and any(
        a in ("run", "run_workflow") for a in argv[1:]
    )


def _help_requested(argv: list[str]) -> bool:
    return any(a in ("--help", "-h", "--help=True", "--help=true") for a in _command_args(argv))


# ---------------------------------------------------------------------------------------------------------------
# key checks


def _load_merged(files: list[str]) -> Any:
    from monai.bundle import ConfigParser

    return ConfigParser(ConfigParser.load_config_files(files))


def _sibling_files(files: list[str]) -> list[str]:
    """The bundle's other config files (train.json first), beside the first of ``files``."""
    if not files:
        return []
    folder = Path(files[0]).parent
    siblings = sorted(p for p in folder.glob("*.json") if p.name != "metadata.json")
    siblings.sort(key=lambda p: p.name != "train.json")
    return [str(p) for p in siblings]


def _key_exists(parser: Any, key: str) -> bool:
    """``key`` is an id of the config, or a new keyword of an existing ``_target_`` component."""
    key = key.replace("::", "#")
    if key.startswith("+"):
        key = key[1:]
    if key in parser:
        return True
    if "#" in key:
        parent, _, _leaf = key.rpartition("#")
        if parent in parser:
            node = parser[parent]
            return isinstance(node, dict) and "_target_" in node
    return False


def _all_ids(config: Any, prefix: str = "", depth: int = 3) -> list[str]:
    """Ids of ``config`` (top level, and ``a#b`` paths ``depth`` levels down through dicts)."""
    ids: list[str] = []
    if isinstance(config, dict) and depth > 0:
        for k, v in config.items():
            if not isinstance(k, str) or k.startswith("_"):
                continue
            path = f"{prefix}{k}"
            ids.append(path)
            ids += _all_ids(v, path + "#", depth - 1)
    return ids


def _suggestions(key: str, config: dict) -> list[str]:
    top = [k for k in config if isinstance(k, str) and not k.startswith("_") and k not in _NOT_OPTIONS]
    candidates = top if "#" not in key else _all_ids(config)
    close = difflib.get_close_matches(key, candidates, n=5, cutoff=0.6)
    if not close and "#" in key:
        close = difflib.get_close_matches(key.rsplit("#", 1)[-1], top, n=5, cutoff=0.6)
    return close


def check_override_keys(
    keys: list[str], config_files: list[str], strict: bool = True, siblings: list[str] | None = None
) -> list[str]:
    """Check that each override key exists in the merged ``config_files``; returns the unknown keys.

    A key that only one of ``siblings`` (the bundle's other configs) defines is logged as unused. Any other
    unknown key raises :class:`CommandLineError` naming the nearest valid keys, or is logged as a warning when
    ``strict`` is False.
    """
    if not keys or not config_files:
        return []
    parser = _load_merged(config_files)
    unknown = [k for k in keys if not _key_exists(parser, k)]
    if not unknown:
        return []
    siblings = _sibling_files(config_files) if siblings is None else siblings
    elsewhere: set[str] = set()
    others = [f for f in siblings if os.path.abspath(f) not in {os.path.abspath(c) for c in config_files}]
    if others:
        try:
            bundle = _load_merged(siblings)
            elsewhere = {k for k in unknown if _key_exists(bundle, k)}
        except Exception as e:
            logger.debug("could not merge the sibling configs %s: %s", siblings, e)
    names = ", ".join(Path(f).name for f in config_files)
    for key in sorted(elsewhere):
        logger.warning("--%s is not used by %s (another config of this bundle defines it): ignored.", key, names)
    errors = [k for k in unknown if k not in elsewhere]
    if not errors:
        return unknown
    lines = []
    for key in errors:
        close = _suggestions(key, parser.get())
        hint = f"did you mean {' or '.join('--' + c for c in close)}?" if close else "no similar option"
        lines.append(f"--{key}: not an option of {names} ({hint})")
    message = (
        "; ".join(lines) + ". Run with --help to list the options; --strict_overrides false (or "
        f"{STRICT_ENV}=0) accepts unknown keys."
    )
    if strict:
        raise CommandLineError(message)
    logger.warning("%s", message)
    return unknown


# ---------------------------------------------------------------------------------------------------------------
# --help


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _is_option(key: str, value: Any) -> bool:
    if not isinstance(key, str) or key.startswith("_") or key in _NOT_OPTIONS or "#" in key:
        return False
    if isinstance(value, dict):
        return False
    if isinstance(value, list):
        return all(not isinstance(v, (dict, list)) for v in value) and len(json.dumps(value)) <= 60
    return True


def format_help(config_files: list[str]) -> str:
    """The ``--help`` text: each top-level option of the merged ``config_files`` with its default and a
    one-line description."""
    parser = _load_merged(config_files)
    config = parser.get()
    rows = []
    for key, value in config.items():
        if not _is_option(key, value):
            continue
        desc = DESCRIPTIONS.get(key, "")
        rows.append((key, _short(value, 38), desc))
    components = [
        k for k, v in config.items() if isinstance(v, dict) and "_target_" in v and not str(k).startswith("_")
    ]
    width = max((len(r[0]) for r in rows), default=10) + 2
    vwidth = min(max((len(r[1]) for r in rows), default=10), 40) + 2
    names = ", ".join(Path(f).name for f in config_files)
    out = [
        f"Options of {names} (python -m monai.bundle run ... --config_file ... --<option> <value>):",
        "",
    ]
    for key, value, desc in rows:
        line = f"  --{key:<{width}}{value:<{vwidth}}{desc}".rstrip()
        out.append(line)
    out += [
        "",
        "Values are Python/JSON literals (--image_size \"[128,128]\", --resume true); '$...' defaults are "
        "expressions evaluated at run time.",
        "Nested items are set with '#': --network_def#name litenext, --train#dataloader#shuffle false"
        + (f" (components: {', '.join(components[:8])})." if components else "."),
        f"An unknown option is an error (--strict_overrides false or {STRICT_ENV}=0: a warning); --debug true "
        f"(or {DEBUG_ENV}=1) prints full tracebacks.",
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# short errors

_WRAPPER_PREFIXES = ("Failed to evaluate", "Failed to instantiate")
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    chain, seen = [], set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    return chain


def _is_wrapper(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and str(e).startswith(_WRAPPER_PREFIXES)


def _raised_in_lightseg(e: BaseException) -> bool:
    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    return bool(frames) and str(Path(frames[-1].filename).resolve()).startswith(_PACKAGE_DIR)


def root_cause(exc: BaseException) -> BaseException:
    """The exception of ``exc``'s chain that explains it: MONAI's "Failed to evaluate/instantiate" wrappers
    are skipped; an exception lightseg raised (outermost first: it adds the file and the fix to what it
    wraps) wins; else the innermost exception with a message."""
    candidates = [e for e in _chain(exc) if not _is_wrapper(e)] or [exc]
    ours = [e for e in candidates if _raised_in_lightseg(e) and str(e)]
    if ours:
        return ours[0]
    with_message = [e for e in candidates if str(e).strip()]
    return (with_message or candidates)[-1]


def _error_log_path() -> Path:
    env = os.environ.get(ERROR_LOG_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / f"lightseg_error_{os.getpid()}.log"


def short_message(exc: BaseException, log_path: Path | None) -> str:
    """The few lines the user sees for ``exc``."""
    cause = root_cause(exc)
    text = str(cause).strip() or repr(cause)
    lines = text.splitlines() or [""]
    if len(lines) > 3:
        lines = [*lines[:3], "..."]
    out = [f"lightseg: {type(cause).__name__}: {lines[0]}", *("  " + ln for ln in lines[1:])]
    frames = traceback.extract_tb(cause.__traceback__) if cause.__traceback__ else []
    if frames and not _raised_in_lightseg(cause):  # lightseg's own errors name the file and the fix
        out.append(f"  (raised in {frames[-1].filename}:{frames[-1].lineno})")
    where = f"full traceback in {log_path}; " if log_path else ""
    out.append(f"  {where}rerun with --debug true (or {DEBUG_ENV}=1) to print it.")
    return "\n".join(out) + "\n"


_installed: dict[str, Any] = {}


def install_excepthook(debug: bool = False) -> None:
    """Replace ``sys.excepthook``: uncaught exceptions print :func:`short_message` to stderr and their full
    traceback goes to the error log (``$LIGHTSEG_ERROR_LOG``, else ``<tempdir>/lightseg_error_<pid>.log``);
    with ``debug`` (or ``LIGHTSEG_DEBUG=1``) the full traceback is printed as usual."""
    previous = _installed.get("previous", sys.excepthook)
    debug = bool(debug) or as_bool(os.environ.get(DEBUG_ENV) or False)

    def hook(etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if debug or not isinstance(value, (Exception, KeyboardInterrupt)):
            previous(etype, value, tb)
            return
        full = "".join(traceback.format_exception(etype, value, tb))
        path: Path | None = _error_log_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(full)
        except OSError:
            path = None
        try:
            if isinstance(value, KeyboardInterrupt):
                sys.stderr.write(f"lightseg: interrupted (traceback in {path}).\n")
                sys.stderr.flush()
                return
            sys.stderr.write(short_message(value, path))
            sys.stderr.flush()
        except Exception:
            previous(etype, value, tb)

    _installed["previous"] = previous
    sys.excepthook = hook


# ---------------------------------------------------------------------------------------------------------------
# entry points for the configs


def check_command_line(argv: list[str] | None = None, strict: Any = True, debug: Any = False) -> None:
    """Check a ``python -m monai.bundle run`` command line (call it first in ``initialize``).

    Only for a ``monai.bundle run`` command line (:func:`is_bundle_command_line`): a program that runs the
    bundle in-process keeps its own ``sys.argv`` and ``sys.excepthook``. Installs the short-error hook
    (:func:`install_excepthook`); on ``--help``/``-h`` prints :func:`format_help`
    to stdout and exits 0; else checks the override keys (:func:`check_override_keys`).

    Args:
        argv: the command line (default ``sys.argv``).
        strict: the config's ``strict_overrides``; ``LIGHTSEG_STRICT_OVERRIDES=0`` also makes it False.
        debug: the config's ``debug``: full tracebacks.
    """
    argv = sys.argv if argv is None else argv
    if not is_bundle_command_line(argv):
        logger.debug("not a monai.bundle command line (%s): overrides not checked", argv[:1])
        return
    install_excepthook(as_bool(debug))
    files = _config_files_from_argv(argv)
    if _help_requested(argv):
        sys.stdout.write(format_help(files) if files else "no --config_file on the command line.\n")
        sys.stdout.flush()
        raise SystemExit(0)
    env = os.environ.get(STRICT_ENV)
    strict = as_bool(strict) and (env is None or as_bool(env))
    check_override_keys(list(override_keys(argv)), files, strict=strict)


def _size_pair(image_size: Any) -> list[int] | None:
    if isinstance(image_size, str):
        try:
            image_size = json.loads(image_size)
        except ValueError:
            return None
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        try:
            return [int(s) for s in image_size]
        except (TypeError, ValueError):
            return None
    return None


def _single_size(image_size: Any) -> int | None:
    try:
        return int(json.loads(image_size) if isinstance(image_size, str) else image_size)
    except (TypeError, ValueError):
        return None


def check_image_size(image_size: Any, network: Any = None, divisor: int | None = None) -> list[int]:
    """``image_size`` as ``[H, W]``, checked against the network's stride (``network.divisor``).

    Raises:
        ImageSizeError: not two positive integers, or not divisible; the message names the sizes that work.
    """
    if divisor is None:
        divisor = int(getattr(network, "divisor", 1) or 1)
    name = type(network).__name__ if network is not None else "the network"
    size = _size_pair(image_size)
    single = None if size is not None else _single_size(image_size)
    if size is None or min(size) <= 0:
        n = single if single and single > 0 else 256
        near = sorted({max(divisor, n // divisor * divisor), -(-n // divisor) * divisor})
        raise ImageSizeError(
            f"image_size {image_size!r}: give two sizes [H, W], each a multiple of {divisor} for {name}, e.g. "
            + " or ".join(f'--image_size "[{s},{s}]"' for s in near)
            + "."
        )
    bad = [s for s in size if s % divisor]
    if bad:
        near = sorted({max(divisor, s // divisor * divisor) for s in bad} | {-(-s // divisor) * divisor for s in bad})
        fixed = ",".join(str(round(s / divisor) * divisor or divisor) for s in size)
        raise ImageSizeError(
            f"image_size {size}: {name} needs H and W divisible by {divisor}; sizes that work near "
            f'{", ".join(map(str, bad))}: {", ".join(map(str, near))} (e.g. --image_size "[{fixed}]").'
        )
    return size

"""Load a model file with errors that say what is wrong: another network, other channels, or not a checkpoint.

MONAI's ``CheckpointLoader`` answers a model trained for another network with a screen of key names, and a
corrupt file with a zip-reader or unpickling message that does not name it. :class:`CheckpointLoader` (used in
``inference.json`` and ``evaluate.json`` in place of MONAI's) keeps its behaviour and ``weights_only=True``
loading but raises :class:`CheckpointError` naming the file and the fix: when the keys or shapes do not match,
which network and channels the file was trained with (``settings.json`` beside it, see
:mod:`lightseg.settings`) and the overrides to pass, or, without settings, which registered network its keys
match. :func:`load_checkpoint` is the same ``torch.load`` with these errors, for other loaders.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from ignite.handlers import Checkpoint
from monai.handlers import CheckpointLoader as MonaiCheckpointLoader
from monai.networks.utils import copy_model_state
from torch import nn

__all__ = ["CheckpointError", "CheckpointLoader", "load_checkpoint", "state_dict_mismatch"]

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A model or checkpoint file that cannot be loaded into the configured network."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", what: str = "model file") -> Any:
    """``torch.load(path, weights_only=True)``; a missing, corrupt or non-weights file raises
    :class:`CheckpointError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist: train first, or pass its path (--ckpt_path).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported operand" in text or "weights only" not in text.lower():
            raise CheckpointError(
                f"{what} {path} is not a PyTorch checkpoint written by torch.save (corrupt, another format or a raw "
                "pickle; nothing in it was run: it is loaded with weights_only=True); restore or re-create it."
            ) from e
        raise CheckpointError(
            f"{what} {path} holds objects other than tensors and plain values: refused (it is loaded with "
            "weights_only=True, which never runs code from a file); save the network's state_dict instead."
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"{what} {path} ({size} bytes) is not a readable PyTorch checkpoint (corrupt or truncated: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}); restore or re-create it."
        ) from e


def state_dict_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, size mismatches as ``"key: file shape vs model shape"``)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {list(state[k].shape)} in the file vs {list(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, shapes


def _guess_network(state: dict) -> str | None:
    """The registered network whose parameter names are exactly those of ``state`` (the one with most equal
    shapes among several); None if none. Networks are built on the meta device: no memory, no init time."""
    try:
        from lightseg.networks import create_network, list_networks
    except ImportError:  # pragma: no cover
        return None
    keys = set(state)
    scores: dict[str, int] = {}
    with torch.device("meta"):
        for name in list_networks():
            try:
                own = create_network(name).state_dict()
            except Exception:
                continue
            if set(own) == keys:
                scores[name] = sum(tuple(own[k].shape) == tuple(getattr(state[k], "shape", ())) for k in keys)
    if not scores:
        return None
    best = max(scores.values())
    winners = [n for n, v in scores.items() if v == best]
    return winners[0] if len(winners) == 1 else None


def _summary(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def mismatch_message(
    path: str | os.PathLike,
    missing: list[str],
    unexpected: list[str],
    shapes: list[str],
    network_name: str | None = None,
    in_channels: int | None = None,
    out_channels: int | None = None,
    state: dict | None = None,
) -> str:
    """The error for a checkpoint whose keys/shapes do not fit the configured network."""
    from lightseg.settings import read_settings, settings_path

    configured = network_name or "the configured network"
    channels = f" (in_channels={in_channels}, out_channels={out_channels})" if in_channels is not None else ""
    details = "; ".join(
        part
        for part in (
            f"{len(missing)} missing keys: {_summary(missing)}" if missing else "",
            f"{len(unexpected)} unexpected keys: {_summary(unexpected)}" if unexpected else "",
            f"{len(shapes)} size mismatches: {_summary(shapes, 2)}" if shapes else "",
        )
        if part
    )
    try:
        settings = read_settings(path)
    except ValueError:
        settings = None
    if settings and settings.get("network_name"):
        trained = {k: settings[k] for k in ("network_name", "in_channels", "out_channels") if k in settings}
        flags = " ".join(f"--{k} {v}" for k, v in trained.items())
        if "image_size" in settings:
            flags += f' --image_size "{json.dumps(list(settings["image_size"]), separators=(",", ":"))}"'
        same = trained.get("network_name") == network_name and all(
            trained.get(k) in (None, v) for k, v in (("in_channels", in_channels), ("out_channels", out_channels))
        )
        if not same:
            trained_text = ", ".join(f"{k}={v}" for k, v in trained.items())
            return (
                f"{path} was trained as {trained_text} ({settings_path(path)}), not for {configured}{channels}: "
                f"pass {flags} (or another --ckpt_path). [{details}]"
            )
        return (
            f"{path} does not fit {configured}{channels} although {settings_path(path)} says it was trained so: "
            f"the file was replaced or the network changed; re-train or restore it. [{details}]"
        )
    guess = _guess_network(state) if (missing or unexpected) and state is not None else None
    if guess and guess != network_name:
        hint = f"its keys are those of network {guess!r}: pass --network_name {guess} (and its channels)"
    elif shapes and not (missing or unexpected):
        hint = "same network, other sizes: pass the --in_channels / --out_channels it was trained with"
    else:
        hint = (
            "it was trained for another network or other channels: pass the --network_name / --in_channels / "
            "--out_channels it was trained with"
        )
    return f"{path} does not fit {configured}{channels} (no {settings_path(path).name} beside it): {hint}. [{details}]"


class CheckpointLoader(MonaiCheckpointLoader):
    """MONAI's ``CheckpointLoader`` with errors naming the file, the network it belongs to and the fix.

    Args:
        load_path, load_dict, name, map_location, strict, strict_shape: as MONAI's ``CheckpointLoader``.
        network_name, in_channels, out_channels: what the config builds (for the error message only).
    """

    def __init__(
        self,
        load_path: str,
        load_dict: dict,
        name: str | None = None,
        map_location: Any = None,
        strict: bool = True,
        strict_shape: bool = True,
        network_name: str | None = None,
        in_channels: int | None = None,
        out_channels: int | None = None,
    ) -> None:
        super().__init__(load_path, load_dict, name, map_location, strict, strict_shape)
        self.network_name = network_name
        self.in_channels = in_channels
        self.out_channels = out_channels

    def __call__(self, engine: Any) -> None:
        checkpoint = load_checkpoint(self.load_path, self.map_location)
        if not isinstance(checkpoint, dict):
            raise CheckpointError(
                f"model file {self.load_path} holds a {type(checkpoint).__name__}, not a state_dict: save "
                "network.state_dict()."
            )
        key, _ = next(iter(self.load_dict.items()))
        state_by_key = checkpoint if (len(self.load_dict) > 1 or key in checkpoint) else {key: checkpoint}
        if self.strict and self.strict_shape:
            for k, obj in self.load_dict.items():
                if not isinstance(obj, nn.Module):
                    continue
                state = state_by_key.get(k)
                if not isinstance(state, dict):
                    raise CheckpointError(f"model file {self.load_path} has no {k!r} state_dict entry.")
                target = obj.module if isinstance(obj, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else obj
                missing, unexpected, shapes = state_dict_mismatch(target, state)
                if missing or unexpected or shapes:
                    raise CheckpointError(
                        mismatch_message(
                            self.load_path,
                            missing,
                            unexpected,
                            shapes,
                            self.network_name,
                            self.in_channels,
                            self.out_channels,
                            state,
                        )
                    )
        # the rest of MONAI's CheckpointLoader.__call__, on the checkpoint already read
        if not self.strict_shape:
            for k, obj in list(self.load_dict.items()):
                if isinstance(obj, nn.Module):
                    state_by_key[k] = copy_model_state(obj, state_by_key, inplace=False)[0]
                else:
                    self.load_dict.pop(k)
        prior_max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load=self.load_dict, checkpoint=state_by_key, strict=self.strict)
        engine.state.max_epochs = prior_max_epochs
        self.logger.info(f"Restored all variables from {self.load_path}")

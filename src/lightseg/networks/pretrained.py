"""Pretrained weights as declared data, loaded in an explicit step (never in a constructor).

MobileNetV3-Large ImageNet checkpoints are torchvision's files: a name (``IMAGENET1K_V1``, ``IMAGENET1K_V2``) is
looked up in the torch hub cache (``torch.hub.get_dir()/checkpoints``) and downloaded there when allowed; a
path is read as it is. Either way the file's SHA-256 must start with the hash in torchvision's file name, and
the state dict must match the full MobileNetV3-Large exactly (no missing or unexpected keys) before its
``features`` are copied into an encoder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lightseg.networks.blocks.mobilenetv3 import MobileNetV3Large
from lightseg.utils import as_bool

__all__ = [
    "MOBILENET_V3_LARGE_WEIGHTS",
    "PretrainedWeights",
    "PretrainedWeightsError",
    "init_pretrained",
    "load_mobilenet_v3_encoder",
    "resolve_weights",
]

logger = logging.getLogger(__name__)


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be found, downloaded, verified or loaded."""


@dataclass(frozen=True)
class PretrainedWeights:
    name: str
    url: str
    filename: str
    sha256_prefix: str
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


MOBILENET_V3_LARGE_WEIGHTS = {
    w.name: w
    for w in (
        PretrainedWeights(
            "IMAGENET1K_V1",
            "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
            "mobilenet_v3_large-8738ca79.pth",
            "8738ca79",
        ),
        PretrainedWeights(
            "IMAGENET1K_V2",
            "https://download.pytorch.org/models/mobilenet_v3_large-5c1a4163.pth",
            "mobilenet_v3_large-5c1a4163.pth",
            "5c1a4163",
        ),
    )
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(
    source: str | os.PathLike, download: bool = True, check_hash: bool = True, timeout: float = 60.0
) -> Path:
    """Local path of a weights file: ``source`` is a known name (cache, then download) or a file path.

    ``timeout`` bounds each network operation of the download, so a machine whose firewall drops packets fails
    instead of hanging.

    Raises:
        PretrainedWeightsError: unknown name, missing file, failed download (offline), or hash mismatch.
    """
    text = str(source)
    if text in MOBILENET_V3_LARGE_WEIGHTS:
        spec = MOBILENET_V3_LARGE_WEIGHTS[text]
        path = Path(torch.hub.get_dir()) / "checkpoints" / spec.filename
        if not path.is_file():
            if not download:
                raise PretrainedWeightsError(
                    f"{text} weights are not in the cache ({path}) and downloading is disabled; download "
                    f"{spec.url} there or pass a local file."
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            logger.info("downloading %s to %s", spec.url, path)
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(timeout)
            try:
                torch.hub.download_url_to_file(spec.url, str(path), hash_prefix=spec.sha256_prefix, progress=True)
            except Exception as e:
                raise PretrainedWeightsError(
                    f"could not download {text} weights from {spec.url} ({type(e).__name__}: {e}). Offline? Put the "
                    f"file at {path} or pass its path."
                ) from e
            finally:
                socket.setdefaulttimeout(previous)
        prefix = spec.sha256_prefix
    else:
        path = Path(text)
        if not path.is_file():
            names = ", ".join(MOBILENET_V3_LARGE_WEIGHTS)
            raise PretrainedWeightsError(f"pretrained weights {text!r} are neither a known name ({names}) nor a file.")
        stem = path.stem.rsplit("-", 1)
        prefix = stem[1] if len(stem) == 2 and all(c in "0123456789abcdef" for c in stem[1]) else None
    if check_hash and prefix is not None:
        actual = _sha256(path)
        if not actual.startswith(prefix):
            raise PretrainedWeightsError(
                f"{path}: SHA-256 {actual[:16]}... does not start with {prefix} (from the file name): corrupt or "
                "wrong file."
            )
    return path


def _adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB stem kernels for ``in_channels`` inputs: summed for 1 channel, else repeated and rescaled."""
    if in_channels == weight.shape[1]:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_channels // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def load_mobilenet_v3_encoder(
    model: nn.Module, source: str | os.PathLike = "IMAGENET1K_V1", download: bool = True, check_hash: bool = True
) -> list[str]:
    """Copy ImageNet MobileNetV3-Large weights into ``model.features`` (torchvision's ``features.{i}`` keys).

    The checkpoint is first loaded strictly into a full :class:`MobileNetV3Large` (so a wrong or truncated file
    fails loudly), then every ``features.*`` key that ``model`` has is copied; the stem is adapted when the model
    does not take 3 channels. Returns the copied keys.
    """
    path = resolve_weights(source, download=download, check_hash=check_hash)
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = MobileNetV3Large()
    try:
        reference.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PretrainedWeightsError(f"{path} is not a torchvision MobileNetV3-Large checkpoint: {e}") from e
    own = model.state_dict()
    wanted = {k: v for k, v in state.items() if k.startswith("features.") and k in own}
    if not wanted:
        raise PretrainedWeightsError(f"{type(model).__name__} has no torchvision-style 'features.*' parameters.")
    stem = "features.0.0.weight"
    if stem in wanted and own[stem].shape != wanted[stem].shape:
        wanted[stem] = _adapt_stem(wanted[stem], own[stem].shape[1])
    for key, value in wanted.items():
        if own[key].shape != value.shape:
            raise PretrainedWeightsError(f"{key}: checkpoint shape {list(value.shape)} != model {list(own[key].shape)}")
    missing = model.load_state_dict(wanted, strict=False)
    if missing.unexpected_keys:
        raise PretrainedWeightsError(f"unexpected keys when loading {path}: {missing.unexpected_keys}")
    logger.info("loaded %d MobileNetV3-Large tensors from %s", len(wanted), path)
    return sorted(wanted)


def init_pretrained(
    model: nn.Module,
    weights: str | os.PathLike | None = "IMAGENET1K_V1",
    strict: bool | str = False,
    download: bool | str = True,
    loaded_by=None,
) -> str:
    """Load pretrained encoder weights into ``model`` for a bundle, and say what happened.

    ``loaded_by``: a trainer handler or a list of them (e.g. ``@train#handlers#0``). When one is a MONAI
    ``CheckpointLoader`` (as MONAI Label prepends to fine-tune from ``models/model.pt``), the whole network is
    about to be overwritten, so nothing is loaded or downloaded and ``"skipped (<path>)"`` is returned.

    Returns ``"<name or path>"`` on success, ``"none"`` when ``weights`` is None/"none", and
    ``"random-init (<reason>)"`` when they cannot be had and ``strict`` is false, after a loud warning; the
    encoder's BatchNorm momentum is then raised from torchvision's 0.01 to PyTorch's default 0.1, since there are
    no ImageNet statistics to keep. With ``strict`` true the error is raised instead.
    """
    if weights is None or str(weights).lower() in ("none", "", "false"):
        return "none"
    loader = _checkpoint_loader(loaded_by)
    if loader is not None:
        path = getattr(loader, "load_path", "?")
        logger.info("pretrained %s weights not loaded: a CheckpointLoader loads the network from %s", weights, path)
        return f"skipped ({path})"
    try:
        load_mobilenet_v3_encoder(model, weights, download=as_bool(download))
    except PretrainedWeightsError as e:
        if as_bool(strict):
            raise
        slow = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum == 0.01]
        for m in slow:
            # torchvision's 0.01 assumes ImageNet statistics to start from; from random initialization the running
            # statistics would lag far behind the weights for hundreds of iterations (validation collapses).
            m.momentum = 0.1
        logger.warning(
            "\n%s\nPRETRAINED WEIGHTS NOT LOADED: %s\nTraining continues from RANDOM initialization; results will be "
            "worse than the paper's. Pass --pretrained_strict true to make this an error.\n%s",
            "!" * 100,
            e,
            "!" * 100,
        )
        return f"random-init ({type(e).__name__})"
    return str(weights)


def _checkpoint_loader(handlers):
    """The first MONAI ``CheckpointLoader`` among ``handlers`` (one object or a sequence), else None."""
    if handlers is None:
        return None
    from monai.handlers import CheckpointLoader

    for handler in handlers if isinstance(handlers, list | tuple) else [handlers]:
        if isinstance(handler, CheckpointLoader):
            return handler
    return None

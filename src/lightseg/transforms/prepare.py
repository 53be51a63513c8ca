"""Checks and 2D fixes for image/mask pairs, as a MONAI dictionary transform.

Placed right after ``LoadImaged`` + ``EnsureChannelFirstd`` in training and evaluation. It handles the 2D
pitfalls of real folders: grayscale, grayscale+alpha, RGB and RGBA images mixed together, masks saved as RGB(A)
or with values 0/255, single-frame DICOM and NIfTI slices with a trailing singleton dimension; and it stops
with a message naming the file for anything it cannot handle safely.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["PrepareImageLabeld", "binarize_mask", "class_mask", "to_channels"]

logger = logging.getLogger(__name__)

_LUMA = (0.299, 0.587, 0.114)
_ALPHA_LOGGED: set[str] = set()


def _name(data) -> str:
    meta = getattr(data, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<in-memory image>"))


def _squeeze_2d(x: torch.Tensor, what: str) -> torch.Tensor:
    while x.dim() > 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.dim() != 3:
        raise ValueError(f"{what} {_name(x)} is not a 2D image: shape {list(x.shape)} after adding channels.")
    return x


def to_channels(x: torch.Tensor, channels: int, log: bool = False) -> torch.Tensor:
    """Convert a channel-first 2D image with 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels.

    Grayscale is repeated to 3 channels; alpha is dropped; RGB becomes luminance (ITU-R 601 weights) when
    ``channels == 1``, with one log line naming the file when ``log`` is set (inference).
    """
    c = x.shape[0]
    if c not in (1, 2, 3, 4):
        raise ValueError(
            f"image {_name(x)} has {c} channels; expected 1 (grayscale), 2 (grayscale + alpha), 3 (RGB) or 4 (RGBA)."
        )
    x = x[:1] if c in (1, 2) else x[:3]
    if channels == 3 and x.shape[0] == 1:
        return x.repeat(3, 1, 1)
    if channels == 1 and x.shape[0] == 3:
        if log:
            logger.info("%s is RGB(A): converted to grayscale (luminance) for this 1-channel model", _name(x))
        weights = torch.tensor(_LUMA, dtype=torch.float32, device=x.device).view(3, 1, 1)
        return (x.float() * weights).sum(0, keepdim=True)
    if x.shape[0] != channels:
        raise ValueError(f"cannot convert image {_name(x)} with {c} channels to {channels} channels.")
    return x


def _alpha_label(y: torch.Tensor) -> torch.Tensor | None:
    """The alpha channel of a gray+alpha or RGBA mask whose colour channels are all zero while the alpha varies:
    the label was painted into the transparency (some annotation tools save masks so)."""
    if y.shape[0] not in (2, 4):
        return None
    colour, alpha = y[:-1], y[-1:]
    if bool((colour == 0).all()) and bool(alpha.amin() != alpha.amax()):
        return alpha
    return None


def binarize_mask(y: torch.Tensor, threshold: float | None = None, name: str | None = None) -> torch.Tensor:
    """A channel-first 2D mask (1-4 channels) as one float channel of {0, 1}.

    RGB(A) masks are reduced to the maximum over the colour channels; the alpha channel is ignored, except when
    the colour channels are all zero and the alpha varies: then the label is in the alpha channel and is read
    from there. Without ``threshold`` the values must be a subset of {0, 1} or of {0, 255}; with it,
    ``y > threshold``, which must not empty a mask that has foreground.

    Raises:
        ValueError: naming the file, for another channel count, other values (more than one foreground value),
        or a threshold at or above the mask's foreground value.
    """
    name = name or _name(y)
    if y.shape[0] not in (1, 2, 3, 4):
        raise ValueError(f"mask {name} has {y.shape[0]} channels; expected 1, 3 (RGB) or 4 (RGBA).")
    alpha = _alpha_label(y)
    if alpha is not None:
        if name not in _ALPHA_LOGGED:
            _ALPHA_LOGGED.add(name)
            logger.info("mask %s: the colour channels are empty, the label is read from the alpha channel", name)
        y = alpha
    else:
        y = y[:1] if y.shape[0] <= 2 else y[:3].amax(0, keepdim=True)
    if threshold is not None:
        out = (y > threshold).float()
        top = float(y.max())
        if top > 0 and not bool(out.any()):
            raise ValueError(
                f"mask {name} has foreground value {top:g} but mask_threshold {threshold:g} makes it empty (labels "
                f"are y > threshold): use --mask_threshold {top / 2:g}, or leave it unset (null) for masks stored "
                "as {0, 1} or {0, 255}."
            )
        return out
    values = torch.unique(torch.as_tensor(y)).tolist()
    if not (set(values) <= {0, 1} or set(values) <= {0, 255}):
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if len(values) > 8 else "")
        foreground = [v for v in values if v != 0]
        if 1 < len(foreground) <= 16 and all(v == int(v) for v in foreground):
            hint = (
                f"{len(foreground)} foreground values, but a binary model (out_channels 1) needs one. If they are "
                f"classes, train with --out_channels {int(max(foreground)) + 1}; to merge them into one label set "
                "mask_threshold 0; for lossy (JPEG) masks set mask_threshold (e.g. 127)."
            )
        else:
            hint = "for lossy (JPEG) masks set mask_threshold (e.g. 127); to take any nonzero value as the label, 0."
        raise ValueError(f"mask {name} has values {{{shown}}}; expected {{0, 1}} or {{0, 255}}: {hint}")
    return (y > 0).float()


def class_mask(y: torch.Tensor, num_classes: int, name: str | None = None) -> torch.Tensor:
    """A channel-first 2D label map (1 channel, or RGB(A) with equal colour channels) as one float channel of
    class indices ``0 .. num_classes - 1`` (0 is the background).

    Raises:
        ValueError: naming the file, for colour masks whose channels differ or values outside the classes.
    """
    name = name or _name(y)
    if y.shape[0] not in (1, 2, 3, 4):
        raise ValueError(f"mask {name} has {y.shape[0]} channels; expected 1 (a label map), 3 (RGB) or 4 (RGBA).")
    if y.shape[0] >= 3:
        if not (torch.equal(y[0], y[1]) and torch.equal(y[0], y[2])):
            raise ValueError(
                f"mask {name} is a colour image with different channels; a {num_classes}-class model needs a "
                f"label map with values 0..{num_classes - 1}."
            )
    y = y[:1]
    values = torch.unique(torch.as_tensor(y)).tolist()
    bad = [v for v in values if v != int(v) or not 0 <= v < num_classes]
    if bad:
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if len(values) > 8 else "")
        raise ValueError(
            f"mask {name} has values {{{shown}}}; a {num_classes}-class model (out_channels {num_classes}) needs "
            f"label values 0..{num_classes - 1} (0 is the background)."
        )
    return y.float()


class PrepareImageLabeld(MapTransform):
    """Validate and normalise a loaded (channel-first) image and its mask.

    - image: trailing singleton dimensions squeezed; converted to ``in_channels`` (see :func:`to_channels`);
      float32.
    - label: RGB(A) masks reduced to one channel (maximum over colour channels, alpha ignored); values must be
      {0, 1} or {0, 255} (or a subset), unless ``mask_threshold`` is set, in which case ``label > threshold``
      (use 127 for JPEG masks); output float32 {0, 1}, one channel.
    - both must have the same height and width.

    Args:
        keys: ``(image_key, label_key)``; the label key may be absent from a sample (inference).
        in_channels: channels the network expects (1 or 3).
        mask_threshold: None for strict binary masks, or a threshold for lossy masks (binary models only).
        out_channels: the network's output channels: 1 is binary (sigmoid); N >= 2 is N classes including the
            background (softmax), and masks are label maps with values 0..N-1 (see :func:`class_mask`).

    Raises:
        ValueError: naming the file, for a wrong channel count, non-2D data, a size mismatch or mask values
        other than {0, 1} / {0, 255}.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        in_channels: int = 3,
        mask_threshold: float | None = None,
        out_channels: int = 1,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image_key, label_key), got {self.keys}.")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}.")
        if int(out_channels) < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}.")
        self.in_channels = in_channels
        self.mask_threshold = mask_threshold
        self.out_channels = int(out_channels)

    def _label(self, y: torch.Tensor) -> torch.Tensor:
        y = _squeeze_2d(y, "mask")
        if self.out_channels > 1:
            return class_mask(y, self.out_channels)
        return binarize_mask(y, self.mask_threshold)

    def __call__(self, data: dict[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image_key, label_key = self.keys
        if image_key not in d:
            raise KeyError(f"sample has no {image_key!r} key: {list(d)}")
        image = to_channels(_squeeze_2d(d[image_key], "image"), self.in_channels).float()
        d[image_key] = image
        if label_key in d:
            label = self._label(d[label_key])
            if tuple(label.shape[1:]) != tuple(image.shape[1:]):
                # MONAI arrays are (width, height) for 2D image files; report height x width like image viewers.
                raise ValueError(
                    f"mask {_name(label)} is {label.shape[2]} x {label.shape[1]} but image {_name(image)} is "
                    f"{image.shape[2]} x {image.shape[1]} (height x width); they must be the same size."
                )
            d[label_key] = label
        return d

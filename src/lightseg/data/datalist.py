"""Decathlon-style datalists: loading, pre-flight validation, seeded splits and the demo dataset.

A datalist is a JSON file with ``training`` / ``validation`` / ``testing`` lists of ``{"image": ..., "label": ...}``
entries whose paths are relative to a dataset root (``base_dir``). Optional top-level keys record provenance
(``source``, ``seed``, ``ratios``); a datalist with a ``synthetic`` key describes generated demo data, which
:func:`ensure_demo_data` (re)creates when files are missing.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

from lightseg.data.io import DatalistError, read_header

__all__ = [
    "DatalistError",
    "split_ids",
    "load_datalist",
    "validate_entries",
    "ensure_demo_data",
    "make_demo_datalist",
    "write_json",
]

logger = logging.getLogger(__name__)
SECTIONS = ("training", "validation", "testing")


def write_json(obj: dict, path: str | os.PathLike) -> None:
    """Write JSON as the Model Zoo does (``indent=4``, trailing newline), atomically."""
    from lightseg.utils import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=4) + "\n")


def split_ids(ids: Sequence[str], ratios: Sequence[float], seed: int) -> list[list[str]]:
    """Split ``ids`` into ``len(ratios)`` parts: a pure function of the sorted ids, the ratios and the seed.

    The ids are sorted, permuted with ``numpy.random.default_rng(seed)``, and cut at the rounded cumulative
    ratios (the last part takes the remainder). Each part is returned sorted.
    """
    if len(set(ids)) != len(ids):
        dup = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise DatalistError(f"duplicated case ids: {dup[:10]}")
    if any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise DatalistError(f"split ratios must be >= 0 and sum to 1, got {list(ratios)}.")
    order = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(order))
    shuffled = [order[i] for i in perm]
    cuts = np.round(np.cumsum(ratios)[:-1] * len(order)).astype(int).tolist()
    parts, start = [], 0
    for end in [*cuts, len(order)]:
        parts.append(sorted(shuffled[start:end]))
        start = end
    return parts


def _read_datalist(datalist: str | os.PathLike) -> dict:
    path = Path(datalist)
    if not path.is_file():
        raise DatalistError(f"datalist {path} does not exist.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatalistError(f"datalist {path} is not valid JSON: {e}.") from e


_LOADERS: dict[str, object] = {}


def _mask_loader(path: str):
    """One MONAI loader per reader for the whole check (each new one logs its reader set-up): Pillow for the
    formats it reads (what MONAI falls back to for them after trying DICOM), MONAI's reader order otherwise."""
    from monai.transforms import LoadImage

    from lightseg.data.io import PIL_SUFFIXES

    pil = path.lower().endswith(PIL_SUFFIXES) and not path.lower().endswith((".tif", ".tiff"))
    kind = "PILReader" if pil else "PydicomReader"
    if kind not in _LOADERS:
        _LOADERS[kind] = LoadImage(image_only=True, reader=[kind])
    return _LOADERS[kind]


def _check_mask_values(path: str, mask_threshold: float | None, out_channels: int = 1) -> bool:
    """Decode a mask with MONAI's loader and apply the training-time binarisation check; True when the mask is
    empty (no foreground) after it."""
    from monai.transforms import EnsureChannelFirst

    from lightseg.transforms.prepare import binarize_mask, class_mask

    mask = EnsureChannelFirst()(_mask_loader(path)(path))
    while mask.dim() > 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    try:
        if int(out_channels) > 1:
            label = class_mask(mask, int(out_channels), name=path)
        else:
            label = binarize_mask(mask, mask_threshold, name=path)
    except ValueError as e:
        raise DatalistError(str(e)) from None
    return not bool(label.any())


def validate_entries(
    entries: Sequence[dict],
    in_channels: int | None = 3,
    where: str = "datalist",
    check_mask_values: bool = True,
    mask_threshold: float | None = None,
    out_channels: int = 1,
) -> int:
    """Check that every image (and label) exists, is readable, single-frame, at least
    :data:`lightseg.data.io.MIN_IMAGE_SIZE` pixels, has a usable channel count and the size of its mask.

    Image headers are read without decoding pixels; masks are decoded (they are small) to check their values
    unless ``check_mask_values`` is False (then :class:`lightseg.transforms.PrepareImageLabeld` checks them at
    load time). Masks that are empty after binarisation are logged (a few are normal: healthy cases); when every
    mask of ``entries`` is empty that is an error. Raises :class:`DatalistError` on the first problem, naming the
    entry and the file. Returns the number of empty masks.
    """
    from tqdm import tqdm

    from lightseg.data.io import MIN_IMAGE_SIZE

    if in_channels not in (None, 1, 3):
        raise DatalistError(f"{where}: in_channels must be 1 or 3 (images are converted to it), got {in_channels}.")
    empty: list[str] = []
    labelled = 0
    for n, entry in enumerate(tqdm(entries, desc="checking data", unit="case", leave=False, disable=None)):
        if "image" not in entry:
            raise DatalistError(f"{where}: entry {n} has no 'image' key: {entry}.")
        image = read_header(entry["image"])
        if image.channels not in (1, 2, 3, 4):
            raise DatalistError(
                f"{where}: image {entry['image']} has {image.channels} channels; expected 1 (grayscale), "
                "2 (grayscale + alpha), 3 (RGB) or 4 (RGBA)."
            )
        if min(image.spatial_shape) < MIN_IMAGE_SIZE:
            raise DatalistError(
                f"{where}: image {entry['image']} is {_hw(image.spatial_shape)} pixels (height x width); images "
                f"must be at least {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}."
            )
        if "label" in entry:
            label = read_header(entry["label"])
            if label.spatial_shape != image.spatial_shape:
                raise DatalistError(
                    f"{where}: mask {entry['label']} is {_hw(label.spatial_shape)} but image {entry['image']} is "
                    f"{_hw(image.spatial_shape)} (height x width); they must be the same size."
                )
            if check_mask_values:
                labelled += 1
                if _check_mask_values(str(entry["label"]), mask_threshold, out_channels):
                    empty.append(str(entry["label"]))
    if labelled and len(empty) == labelled:
        hint = f" with mask_threshold {mask_threshold:g}" if mask_threshold is not None else ""
        raise DatalistError(
            f"{where}: all {labelled} masks are empty{hint} (no foreground pixel), e.g. {empty[0]}: check the masks "
            "folder and mask_threshold (masks stored as {0, 1} need no threshold)."
        )
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        logger.warning("%s: %d of %d masks are empty (no foreground): %s", where, len(empty), labelled, shown)
    return len(empty)


def _hw(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


def load_datalist(
    datalist: str | os.PathLike,
    key: str = "training",
    base_dir: str | os.PathLike | None = None,
    validate: bool = True,
    in_channels: int | None = 3,
    mask_threshold: float | None = None,
    out_channels: int = 1,
) -> list[dict]:
    """Load section ``key`` of a Decathlon datalist with paths joined to ``base_dir``, after checking it.

    ``mask_threshold`` is the one given to :class:`lightseg.transforms.PrepareImageLabeld` (None: masks must be
    {0, 1} or {0, 255}); with ``out_channels`` N >= 2 masks are label maps with values 0..N-1. Demo datalists (with a ``synthetic`` key) have their files generated first when missing. Raises
    :class:`DatalistError` for a missing datalist, a ``base_dir`` that does not exist, an empty or absent
    section, a missing or unreadable file, a wrong channel count or an image/mask size mismatch.
    """
    content = _read_datalist(datalist)
    if base_dir is None:
        base_dir = Path(datalist).parent
    if "synthetic" in content:
        ensure_demo_data(datalist, base_dir)
    if not Path(base_dir).is_dir():
        raise DatalistError(f"dataset_dir {base_dir} does not exist (datalist {datalist}).")
    if not content.get(key):
        raise DatalistError(f"datalist {datalist} has no entries in {key!r} (sections: {list(content)}).")
    entries = load_decathlon_datalist(str(datalist), data_list_key=key, base_dir=str(base_dir))
    for n, entry in enumerate(entries):
        for k in ("image", "label"):
            if k in entry and not Path(entry[k]).is_file():
                raise DatalistError(f"{datalist} [{key}][{n}]: {k} file {entry[k]} does not exist.")
    if validate:
        validate_entries(
            entries, in_channels, f"{datalist} [{key}]", mask_threshold=mask_threshold, out_channels=out_channels
        )
    logger.info("%s: %d %s entries under %s", datalist, len(entries), key, base_dir)
    return entries


def ensure_demo_data(datalist: str | os.PathLike, base_dir: str | os.PathLike) -> bool:
    """Generate the demo dataset a ``synthetic`` datalist describes, if any of its files is missing.

    Safe with several processes (``torchrun``): one generates under a file lock while the others wait.
    Returns True when files were written.
    """
    from filelock import FileLock

    from lightseg.data.synthetic import generate_dataset

    content = _read_datalist(datalist)
    spec = content.get("synthetic")
    if spec is None:
        return False
    cases = [c for s in SECTIONS for c in content.get(s, [])]
    base = Path(base_dir)
    if all((base / c[k]).is_file() for c in cases for k in ("image", "label")):
        return False
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / ".generate.lock")):
        if all((base / c[k]).is_file() for c in cases for k in ("image", "label")):
            return False
        logger.info("generating the demo dataset (%d cases) in %s", len(cases), base)
        generate_dataset(
            base,
            cases,
            seed=int(spec["seed"]),
            min_size=spec["min_size"],
            max_size=spec["max_size"],
            classes=int(spec.get("classes", 2)),
        )
    return True


def make_demo_datalist(
    per_modality: int = 80,
    seed: int = 20240601,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    modalities: Sequence[str] = ("dermoscopy", "ultrasound"),
    min_size: int = 200,
    max_size: int = 700,
    classes: int = 2,
) -> dict:
    """The demo datalist: ``per_modality`` cases of each modality, split per modality with ``split_ids``.

    ``classes=3`` describes the 3-class variant (lesion and nodule, label maps 0/1/2; train with
    ``--out_channels 3``)."""
    from lightseg.data.synthetic import CLASS_NAMES

    extra = {"classes": classes} if classes != 2 else {}
    sections: dict[str, list[dict]] = {s: [] for s in SECTIONS}
    for modality in modalities:
        ids = [f"{modality}_{i:03d}" for i in range(per_modality)]
        for section, part in zip(SECTIONS, split_ids(ids, ratios, seed)):
            for case_id in part:
                sections[section].append(
                    {
                        "image": f"images/{case_id}.png",
                        "label": f"masks/{case_id}.png",
                        "modality": modality,
                        "index": int(case_id.rsplit("_", 1)[1]),
                    }
                )
    return {
        "name": "lightseg synthetic demo",
        "description": "Generated dermoscopy-like RGB and ultrasound-like grayscale images with lesion masks "
        "(lightseg.data.synthetic). Files are created on first use under the dataset_dir.",
        "source": "lightseg.data.synthetic",
        "seed": seed,
        "ratios": list(ratios),
        "synthetic": {
            "seed": seed,
            "min_size": min_size,
            "max_size": max_size,
            "modalities": list(modalities),
            **extra,
        },
        "labels": {str(i): name for i, name in enumerate(CLASS_NAMES[:classes])},
        **sections,
    }

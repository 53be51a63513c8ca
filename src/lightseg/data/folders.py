"""Your own data: an ``images/`` folder and a ``masks/`` folder paired by file name, as a seeded datalist.

``python -m lightseg.data from-folders --images DIR --masks DIR --out datalist.json`` pairs the files by stem
(``case7.jpg`` with ``case7.png``, also ``case7_mask.png``, ``case7_segmentation.png`` and the like), reports the
files that found no partner on either side, splits the case ids with :func:`lightseg.data.split_ids` (seeded),
chooses the mask threshold from the masks themselves, runs the same checks as every training, and writes a
Decathlon datalist that records where the files are, the seed, the ratios and the threshold, so that training
needs nothing but ``--datalist``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightseg.data.io import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES, DatalistError

__all__ = ["MASK_SUFFIXES", "choose_mask_threshold", "datalist_from_folders", "pair_files"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = PIL_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES
LOSSY_SUFFIXES = (".jpg", ".jpeg")
# what annotation tools and public datasets append to a mask's name (matched case-insensitively, after the stem)
MASK_SUFFIXES = ("_mask", "-mask", "_masks", "_seg", "_segmentation", "_label", "_labels", "_gt", "_anno",
                 "_manual1", "_1sthO", "_lesion")  # fmt: skip
_MASK_RE = re.compile("(" + "|".join(re.escape(s) for s in MASK_SUFFIXES) + r")$", re.IGNORECASE)


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DatalistError(f"{what} folder {folder} does not exist.")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES)
    )
    if not files:
        raise DatalistError(f"{what} folder {folder} has no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def _by_key(files: list[Path], what: str, strip_suffix: bool) -> dict[str, Path]:
    keys: dict[str, Path] = {}
    for path in files:
        key = _stem(path)
        if strip_suffix:
            key = _MASK_RE.sub("", key) or key
        if key in keys:
            raise DatalistError(
                f"{what} {keys[key]} and {path} have the same case id {key!r}: keep one of them (pairing is by name)."
            )
        keys[key] = path
    return keys


def pair_files(images: str | os.PathLike, masks: str | os.PathLike) -> tuple[dict[str, tuple[Path, Path]], list, list]:
    """Pair the image files of ``images`` with the mask files of ``masks`` by case id.

    The case id is the file name without its extension; a mask may add one of :data:`MASK_SUFFIXES`. Returns
    ``({case_id: (image, mask)}, unpaired images, unpaired masks)``.

    Raises:
        DatalistError: a folder is missing or empty, two files of one folder share a case id, or nothing pairs.
    """
    image_files = _by_key(_files(Path(images), "images"), "images", strip_suffix=False)
    mask_exact = _by_key(_files(Path(masks), "masks"), "masks", strip_suffix=False)
    mask_files = {}
    for key, path in mask_exact.items():  # an exact name wins over a stripped one (e.g. an image named x_seg)
        stripped = _MASK_RE.sub("", key) or key
        target = key if key in image_files else stripped
        if target in mask_files:
            raise DatalistError(
                f"masks {mask_files[target]} and {path} both pair with case {target!r}: keep one of them."
            )
        mask_files[target] = path
    pairs = {k: (image_files[k], mask_files[k]) for k in sorted(image_files) if k in mask_files}
    lone_images = [image_files[k] for k in sorted(image_files) if k not in mask_files]
    lone_masks = [mask_files[k] for k in sorted(mask_files) if k not in image_files]
    if not pairs:
        raise DatalistError(
            f"no image in {images} has a mask in {masks} with the same name (e.g. {next(iter(image_files.values())).name} "
            f"and {next(iter(mask_files.values())).name}); masks pair by file name, optionally with a suffix such as "
            "_mask."
        )
    return pairs, lone_images, lone_masks


def choose_mask_threshold(masks: Sequence[Path]) -> float | None:
    """None when every mask is stored exactly ({0, 1} or {0, 255}: no threshold needed); 127 when masks are lossy
    (JPEG) or have intermediate values close to 0 and 255 (resampled or compressed 0/255 masks).

    Raises:
        DatalistError: for masks that look like label maps with several classes (values 0, 1, 2, ...), which a
        threshold would merge: naming the file and ``--out_channels``.
    """
    from PIL import Image

    threshold = None
    for path in masks:
        if path.name.lower().endswith(PIL_SUFFIXES):
            with Image.open(path) as im:
                values = np.unique(np.asarray(im.convert("L") if im.mode not in ("L", "1", "I;16", "I") else im))
        else:
            continue  # NIfTI / DICOM masks are label maps stored exactly: the checks read them
        exact = set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}
        if exact and not path.name.lower().endswith(LOSSY_SUFFIXES):
            continue
        if values.max() <= 16 and len(values) > 2:
            raise DatalistError(
                f"mask {path} has values {values.tolist()}: a label map with {len(values) - 1} classes. Train a "
                f"multi-class model (--out_channels {int(values.max()) + 1}) with a datalist written with "
                "--mask_threshold none, or merge the classes with --mask_threshold 0."
            )
        threshold = 127.0
    return threshold


def _rel(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def datalist_from_folders(
    images: str | os.PathLike,
    masks: str | os.PathLike,
    out: str | os.PathLike,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    mask_threshold: float | str | None = "auto",
    in_channels: int = 3,
    out_channels: int = 1,
    check: bool = True,
) -> dict:
    """The datalist of an image folder and a mask folder (see the module docstring), written to ``out``.

    ``ratios`` are training / validation / testing fractions. ``mask_threshold`` ``"auto"`` chooses it with
    :func:`choose_mask_threshold`; a number or None is used as given. With ``check`` every section is validated
    as a training would (readable, single-frame, sizes, mask values, empty masks). Returns the datalist.
    """
    from lightseg.data.datalist import SECTIONS, split_ids, validate_entries, write_json

    if len(ratios) != 3:
        raise DatalistError(f"--ratios takes 3 fractions (training validation testing), got {list(ratios)}.")
    pairs, lone_images, lone_masks = pair_files(images, masks)
    for kind, lone in (("images without a mask", lone_images), ("masks without an image", lone_masks)):
        if lone:
            shown = ", ".join(p.name for p in lone[:10]) + (f" and {len(lone) - 10} more" if len(lone) > 10 else "")
            logger.warning("%d %s (left out): %s", len(lone), kind, shown)
    if mask_threshold == "auto":
        mask_threshold = choose_mask_threshold([m for _, m in pairs.values()]) if int(out_channels) == 1 else None
    out = Path(out)
    base = Path(os.path.commonpath([Path(images).resolve(), Path(masks).resolve()]))
    parts = split_ids(list(pairs), ratios, seed)
    sections = {
        section: [{"image": _rel(pairs[k][0], base), "label": _rel(pairs[k][1], base), "id": k} for k in part]
        for section, part in zip(SECTIONS, parts, strict=True)
    }
    missing = [s for s in ("training", "validation") if not sections[s]]
    if missing:
        raise DatalistError(
            f"{len(pairs)} image/mask pairs are too few for the ratios {list(ratios)}: {missing} would be empty. "
            "Add images or change --ratios."
        )
    datalist = {
        "name": f"{Path(images).resolve().name} + {Path(masks).resolve().name}",
        "description": "written by python -m lightseg.data from-folders",
        "source": {"images": str(Path(images).resolve()), "masks": str(Path(masks).resolve())},
        "dataset_dir": _rel(base, out.resolve().parent),
        "seed": seed,
        "ratios": list(ratios),
        "mask_threshold": mask_threshold,
        "unpaired": {"images": [p.name for p in lone_images], "masks": [p.name for p in lone_masks]},
        **sections,
    }
    if check:
        for section, entries in sections.items():
            if not entries:
                continue
            full = [{**e, "image": str(base / e["image"]), "label": str(base / e["label"])} for e in entries]
            validate_entries(full, in_channels, f"{section} split", mask_threshold=mask_threshold,
                             out_channels=out_channels)  # fmt: skip
    write_json(datalist, out)
    counts = {s: len(v) for s, v in sections.items()}
    logger.info("wrote %s: %s (seed %d, mask_threshold %s), files under %s", out, counts, seed, mask_threshold, base)
    return datalist

"""The machinery every dataset converter shares: reading, mask normalization, validation, writing, splits.

A converter lists the cases of an official release (:class:`RawCase`: an id, an image file, the mask files to
merge, the official part it belongs to) and says how to split them; :func:`convert` then

1. validates the listing: duplicated ids, images without masks and masks without images (``extra`` files),
   unreadable files, image/mask size mismatches, empty masks where the dataset has none;
2. writes ``images/<id>.png`` (RGB or grayscale, original resolution) and ``masks/<id>.png`` (uint8 0/1, same
   size; several masks or instance labels merged; polygons rasterized), or 2D NIfTI with the pixel spacing for
   DICOM sources;
3. writes ``datalist.json``: Decathlon ``training``/``validation``/``testing`` lists with paths relative to the
   output folder, and a record of the source, the counts, the seed and the ratios.

Re-running is idempotent: cases whose two outputs exist are not rewritten (``overwrite=True`` forces it) and the
datalist is the same. Splits are a pure function of the sorted case ids, the ratios and the seed
(:func:`lightseg.data.split_ids`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightseg.data.datalist import SECTIONS, split_ids, write_json
from lightseg.data.io import DatalistError
from lightseg.utils import atomic_path

__all__ = [
    "Converter",
    "RawCase",
    "convert",
    "make_datalist",
    "official_then_ratio_split",
    "ratio_split",
    "read_array",
]

logger = logging.getLogger(__name__)


@dataclass
class RawCase:
    """One case of an official release.

    Attributes:
        case_id: unique id (becomes the output file name).
        image: the image file.
        masks: mask files merged into one binary mask (empty list: an image without annotation is an error).
        part: the official part (``"train"``, ``"test"`` ...) when the release has one, else None.
        extra: other files to carry into the datalist under the given key (e.g. DRIVE's field-of-view mask).
    """

    case_id: str
    image: Path
    masks: list[Path]
    part: str | None = None
    extra: dict[str, Path] = field(default_factory=dict)


@dataclass
class Converter:
    """How to read one dataset's official layout.

    Attributes:
        name: the dataset name used on the command line and for ``data_lists/<name>.json``.
        description: one line with the source and the split.
        scan: ``raw folder -> (cases, stray files)``; stray files are those that match no case (extra masks).
        split: ``(cases, seed) -> {section: [ids]}``.
        ratios: the ratios recorded with the split.
        mask_rule: ``"threshold"`` (> 127: JPEG/0-255 masks) or ``"nonzero"`` (> 0: 0/1 masks, instance labels).
        allow_empty_masks: the dataset has images without foreground (BUSI's normal class).
        read_mask: optional reader returning a 2D array for one mask file (polygons, contours).
        load_case: optional reader of a whole case: ``(image, mask, pixel spacing (row, column))`` (DICOM sources).
        suffix: output format: ``".png"`` or ``".nii.gz"`` (2D NIfTI keeping the pixel spacing).
        labels: multi-class converters: the label names, background first (``{"0": "background", ...}``);
            masks are then label maps 0..N-1 (train with ``--out_channels N --labels [...]``).
        mask_label: multi-class converters: ``(case, mask index) -> label value`` of each mask file of a case
            (later masks win where they overlap); or ``split_mask`` for a release that stores several classes
            in one file.
        split_mask: ``(case, mask index, binary mask) -> label map`` for masks holding several classes.
    """

    name: str
    description: str
    scan: Callable[[Path], tuple[list[RawCase], list[Path]]]
    split: Callable[[list[RawCase], int], dict[str, list[str]]]
    ratios: dict[str, float] | str
    mask_rule: str = "threshold"
    allow_empty_masks: bool = False
    read_mask: Callable[[Path, tuple[int, int]], np.ndarray] | None = None
    load_case: Callable[[RawCase], tuple[np.ndarray, np.ndarray, tuple[float, float]]] | None = None
    suffix: str = ".png"
    labels: dict[str, str] | None = None
    mask_label: Callable[[RawCase, int], int] | None = None
    split_mask: Callable[[RawCase, int, np.ndarray], np.ndarray] | None = None


def read_array(path: Path) -> np.ndarray:
    """Pixels of a 2D image file as ``(H, W)`` or ``(H, W, C)``; Pillow first, ITK for TIFFs it cannot open
    (some CVC-ClinicDB frames). Raises :class:`DatalistError` naming the file."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatalistError(f"{path} does not exist.")
    try:
        with Image.open(path) as im:
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("I;16", "I;16B", "I"):
                return np.asarray(im).astype(np.int32)
            return np.asarray(im)
    except (UnidentifiedImageError, OSError) as pil_error:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise DatalistError(f"{path} is not a readable image: {pil_error}") from pil_error
        return _read_itk(path, pil_error)


def _read_itk(path: Path, pil_error: Exception) -> np.ndarray:
    """ITK's reader with its default pixel type, then as a float vector image (multi-channel float TIFFs)."""
    import itk

    try:
        return np.asarray(itk.imread(str(path)))
    except Exception:  # noqa: BLE001 (ITK raises RuntimeError or TemplateTypeError for unwrapped pixel types)
        pass
    try:
        reader = itk.ImageFileReader[itk.VectorImage[itk.F, 2]].New(FileName=str(path))
        reader.Update()
        return np.asarray(itk.array_from_image(reader.GetOutput()))
    except Exception as e:  # noqa: BLE001
        raise DatalistError(f"{path} is not a readable image (Pillow: {pil_error}; ITK: {e})") from e


def binary_mask(array: np.ndarray, rule: str, path: Path) -> np.ndarray:
    """``(H, W)`` uint8 0/1 from a mask array: grayscale, RGB(A) (any colour channel, alpha ignored) or labels."""
    if array.ndim == 3:
        array = array[..., :3].max(axis=-1) if array.shape[-1] in (3, 4) else array[..., 0]
    if array.ndim != 2:
        raise DatalistError(f"mask {path} is not a 2D image (shape {list(array.shape)}).")
    if array.dtype == bool:  # 1-bit PNGs (CHASE_DB1)
        return array.astype(np.uint8)
    if rule == "threshold":  # 0/255 or noisy JPEG masks; 0/1 masks are taken as they are
        return (array > (127 if array.max() > 1 else 0)).astype(np.uint8)
    if rule == "nonzero":
        return (array > 0).astype(np.uint8)
    raise ValueError(f"unknown mask rule {rule!r}.")


def ratio_split(ratios: Sequence[float]) -> Callable[[list[RawCase], int], dict[str, list[str]]]:
    """Split all cases into training/validation/testing with ``ratios`` (pure function of ids and seed)."""

    def split(cases: list[RawCase], seed: int) -> dict[str, list[str]]:
        parts = split_ids([c.case_id for c in cases], ratios, seed)
        return dict(zip(SECTIONS, parts, strict=True))

    return split


def official_then_ratio_split(
    test_parts: Sequence[str], val_ratio: float
) -> Callable[[list[RawCase], int], dict[str, list[str]]]:
    """The official test part(s) as testing; the rest split ``1 - val_ratio : val_ratio`` into training and
    validation (``val_ratio = 0``: no validation)."""

    def split(cases: list[RawCase], seed: int) -> dict[str, list[str]]:
        test = sorted(c.case_id for c in cases if c.part in test_parts)
        rest = [c.case_id for c in cases if c.part not in test_parts]
        train, val = split_ids(rest, [1.0 - val_ratio, val_ratio], seed)
        return {"training": train, "validation": val, "testing": test}

    return split


def _validate_listing(converter: Converter, raw: Path, cases: list[RawCase], stray: list[Path]) -> None:
    if not cases:
        raise DatalistError(f"{raw}: no {converter.name} cases found; is this the official layout? {converter.description}")
    dup = sorted(i for i, n in Counter(c.case_id for c in cases).items() if n > 1)
    if dup:
        raise DatalistError(f"{raw}: duplicated case ids {dup[:10]}.")
    problems = []
    for c in cases:
        for p in [c.image, *c.masks, *c.extra.values()]:
            if not p.is_file():
                problems.append(f"{p} does not exist (case {c.case_id})")
        if not c.masks:
            problems.append(f"{c.image} has no mask")
    problems += [f"{p} matches no image (extra file)" for p in stray]
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise DatalistError(f"{raw}: " + "; ".join(problems[:10]) + more)


def _load_pixels(converter: Converter, case: RawCase) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HxW[x3], mask uint8 0/1 HxW) of a photograph-like case."""
    image = read_array(case.image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) / (hi - lo if hi > lo else 1.0) * 255).round().astype(np.uint8)
    h, w = image.shape[:2]
    if converter.read_mask is not None:
        return image, converter.read_mask(case.masks[0], (h, w))
    mask = np.zeros((h, w), np.uint8)
    for k, path in enumerate(case.masks):
        m = binary_mask(read_array(path), converter.mask_rule, path)
        if m.shape != (h, w):
            raise DatalistError(
                f"mask {path} is {m.shape[0]}x{m.shape[1]} but image {case.image} is {h}x{w} (case {case.case_id})."
            )
        if converter.split_mask is not None:
            labelled = converter.split_mask(case, k, m)
            mask[labelled > 0] = labelled[labelled > 0]
        elif converter.mask_label is not None:
            mask[m > 0] = converter.mask_label(case, k)
        else:
            mask |= m
    return image, mask


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, compress_level=1)


def _save_nifti(path: Path, array: np.ndarray, spacing: tuple[float, float]) -> None:
    """A (H, W) array as a 2D NIfTI indexed (x = column, y = row), as MONAI loads a PNG of the same image, with the
    pixel spacing (row, column) in the affine."""
    import nibabel as nib

    affine = np.diag([float(spacing[1]), float(spacing[0]), 1.0, 1.0])
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), affine), tmp)


def _write_case(converter: Converter, case: RawCase, out: Path, overwrite: bool) -> None:
    ext = converter.suffix
    image_rel, mask_rel = f"images/{case.case_id}{ext}", f"masks/{case.case_id}{ext}"
    extras = {key: f"{key}/{case.case_id}.png" for key in case.extra}
    outputs = [out / image_rel, out / mask_rel, *(out / v for v in extras.values())]
    if not overwrite and all(p.is_file() for p in outputs):
        return
    if converter.load_case is not None:
        image, mask, spacing = converter.load_case(case)
    else:
        (image, mask), spacing = _load_pixels(converter, case), None
    h, w = image.shape[:2]
    if not converter.allow_empty_masks and not mask.any():
        raise DatalistError(f"mask of case {case.case_id} ({', '.join(map(str, case.masks))}) is empty.")
    if ext == ".nii.gz":
        _save_nifti(out / image_rel, image, spacing or (1.0, 1.0))
        _save_nifti(out / mask_rel, mask, spacing or (1.0, 1.0))
    else:
        _save_png(out / image_rel, image)
        _save_png(out / mask_rel, mask)
    for key, src in case.extra.items():
        m = binary_mask(read_array(src), "threshold", src)
        if m.shape != (h, w):
            raise DatalistError(f"{key} {src} is {m.shape[0]}x{m.shape[1]} but image {case.image} is {h}x{w}.")
        _save_png(out / extras[key], m)


def make_datalist(converter: Converter, cases: list[RawCase], seed: int = 0) -> dict:
    """The datalist of ``cases`` (a pure function of their ids, the converter's split and the seed: it can be built
    from a list of known case ids without the files)."""
    sections = converter.split(cases, seed)
    extras = sorted({key for c in cases for key in c.extra})
    by_id = {c.case_id: c for c in cases}

    def entry(cid: str) -> dict:
        e = {"image": f"images/{cid}{converter.suffix}", "label": f"masks/{cid}{converter.suffix}"}
        e.update({key: f"{key}/{cid}.png" for key in extras if key in by_id[cid].extra})
        return e

    listed = [i for s in SECTIONS for i in sections[s]]
    if sorted(listed) != sorted(by_id):
        raise AssertionError(f"{converter.name}: the split does not cover every case exactly once.")
    return {
        "name": converter.name,
        "source": converter.description,
        "seed": seed,
        "ratios": converter.ratios,
        "counts": {s: len(sections[s]) for s in SECTIONS},
        **({"labels": converter.labels} if converter.labels else {}),
        **{s: [entry(i) for i in sections[s]] for s in SECTIONS},
    }


def convert(
    converter: Converter, raw: str | os.PathLike, out: str | os.PathLike, seed: int = 0, overwrite: bool = False,
    progress: bool = True,
) -> dict:  # fmt: skip
    """Convert the official release at ``raw`` into ``out``; returns the datalist (also written as
    ``out/datalist.json``). Raises :class:`DatalistError` naming the first problems found."""
    from tqdm import tqdm

    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise DatalistError(f"{raw} is not a folder (expected the official {converter.name} release).")
    cases, stray = converter.scan(raw)
    _validate_listing(converter, raw, cases, stray)
    datalist = make_datalist(converter, cases, seed)
    for case in tqdm(sorted(cases, key=lambda c: c.case_id), desc=converter.name, disable=not progress):
        _write_case(converter, case, out, overwrite)
    write_json(datalist, out / "datalist.json")
    logger.info("%s: %s written to %s", converter.name, datalist["counts"], out)
    return datalist

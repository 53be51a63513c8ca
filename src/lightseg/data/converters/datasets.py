"""Converters for the datasets of the four papers, from their official layouts (see each ``description``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from lightseg.data.converters.base import Converter, RawCase, official_then_ratio_split, ratio_split
from lightseg.data.datalist import split_ids
from lightseg.data.io import DatalistError

__all__ = [
    "CONVERTERS",
    "KNOWN_RELEASES",
    "STARE_LABELLED",
    "known_cases",
    "read_aperio_xml",
    "read_contour",
    "two_stage_split",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm")


def _files(folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    if not folder.is_dir():
        raise DatalistError(f"{folder} does not exist: not the official layout.")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in tuple(suffixes))


def _find_dir(raw: Path, name: str) -> Path:
    """``raw/name`` or the one folder called ``name`` below ``raw`` (releases are often unpacked one level deeper)."""
    if (raw / name).is_dir():
        return raw / name
    found = sorted(p for p in raw.rglob(name) if p.is_dir())
    if len(found) != 1:
        raise DatalistError(f"{raw}: expected one folder named {name!r}, found {len(found)}.")
    return found[0]


def _pair_by_stem(
    images: list[Path], masks: list[Path], mask_stem: Callable[[str], str], part: str | None = None
) -> tuple[list[RawCase], list[Path]]:
    """Cases of images whose mask has stem ``mask_stem(image stem)``; masks matching no image are stray."""
    by_stem = {p.stem: p for p in masks}
    cases, used = [], set()
    for image in images:
        stem = mask_stem(image.stem)
        mask = by_stem.get(stem)
        cases.append(RawCase(image.stem, image, [mask] if mask else [], part))
        if mask is not None:
            used.add(stem)
    return cases, [p for s, p in by_stem.items() if s not in used]


def two_stage_split(test_ratio: float, val_ratio: float) -> Callable[[list[RawCase], int], dict[str, list[str]]]:
    """LV-UNet's protocol: ``test_ratio`` of all cases for testing, then ``val_ratio`` of the rest for validation."""

    def split(cases: list[RawCase], seed: int) -> dict[str, list[str]]:
        rest, test = split_ids([c.case_id for c in cases], [1 - test_ratio, test_ratio], seed)
        train, val = split_ids(rest, [1 - val_ratio, val_ratio], seed)
        return {"training": train, "validation": val, "testing": test}

    return split


LV_UNET_SPLIT = {"test": 0.2, "validation_of_rest": 0.2}
LITENEXT_SPLIT = {"training": 0.7, "validation": 0.1, "testing": 0.2}


# ---------------------------------------------------------------- polyps
def _scan_kvasir(raw: Path) -> tuple[list[RawCase], list[Path]]:
    return _pair_by_stem(_files(raw / "images"), _files(raw / "masks"), lambda s: s)


def _scan_cvc_clinicdb(raw: Path) -> tuple[list[RawCase], list[Path]]:
    return _pair_by_stem(_files(_find_dir(raw, "Original")), _files(_find_dir(raw, "Ground Truth")), lambda s: s)


def _scan_cvc_colondb(raw: Path) -> tuple[list[RawCase], list[Path]]:
    return _pair_by_stem(_files(_find_dir(raw, "images")), _files(_find_dir(raw, "masks")), lambda s: s)


# ---------------------------------------------------------------- skin
def _scan_isic2016(raw: Path) -> tuple[list[RawCase], list[Path]]:
    cases, stray = [], []
    for part, folder in (("train", "Training"), ("test", "Test")):
        images = _files(_find_dir(raw, f"ISBI2016_ISIC_Part1_{folder}_Data"), (".jpg",))
        masks = _files(_find_dir(raw, f"ISBI2016_ISIC_Part1_{folder}_GroundTruth"), (".png",))
        c, s = _pair_by_stem(images, masks, lambda stem: f"{stem}_Segmentation", part)
        cases += c
        stray += s
    return cases, stray


def _scan_isic2018(raw: Path) -> tuple[list[RawCase], list[Path]]:
    images = _files(_find_dir(raw, "ISIC2018_Task1-2_Training_Input"), (".jpg",))
    masks = _files(_find_dir(raw, "ISIC2018_Task1_Training_GroundTruth"), (".png",))
    return _pair_by_stem(images, masks, lambda stem: f"{stem}_segmentation")


def _scan_ph2(raw: Path) -> tuple[list[RawCase], list[Path]]:
    root = _find_dir(raw, "PH2 Dataset images")
    cases = []
    for case in sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"IMD\d{3}", p.name)):
        cid = case.name
        cases.append(RawCase(cid, case / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp",
                             [case / f"{cid}_lesion" / f"{cid}_lesion.bmp"]))  # fmt: skip
    return cases, []


# ---------------------------------------------------------------- breast ultrasound
def _scan_busi(classes: tuple[str, ...]) -> Callable[[Path], tuple[list[RawCase], list[Path]]]:
    def scan(raw: Path) -> tuple[list[RawCase], list[Path]]:
        root = _find_dir(raw, "Dataset_BUSI_with_GT")
        cases, stray = [], []
        for cls in classes:
            files = _files(root / cls, (".png",))
            images = [p for p in files if "_mask" not in p.stem]
            masks = [p for p in files if "_mask" in p.stem]
            used = set()
            for image in images:
                own = [m for m in masks if re.fullmatch(re.escape(image.stem) + r"_mask(_\d+)?", m.stem)]
                used.update(own)
                cid = re.sub(r"\W+", "_", image.stem).strip("_")  # "benign (12)" -> "benign_12"
                cases.append(RawCase(cid, image, sorted(own), cls))
            stray += [m for m in masks if m not in used]
        return cases, stray

    return scan


def _busi_class(case: RawCase, index: int) -> int:
    return {"benign": 1, "malignant": 2}[case.part]


# ---------------------------------------------------------------- nuclei, glands
def _scan_dsb2018(raw: Path) -> tuple[list[RawCase], list[Path]]:
    """Official ``stage1_train/<id>/{images/<id>.png, masks/*.png}`` or the resized variant
    ``images/<id>.png`` + ``masks/0/<id>.png``."""
    if (raw / "stage1_train").is_dir() or not (raw / "images").is_dir():
        root = _find_dir(raw, "stage1_train")
        cases = []
        for case in sorted(p for p in root.iterdir() if p.is_dir()):
            cases.append(RawCase(case.name, case / "images" / f"{case.name}.png", _files(case / "masks", (".png",))))
        return cases, []
    return _pair_by_stem(_files(raw / "images"), _files(raw / "masks" / "0"), lambda s: s)


def _scan_glas(raw: Path) -> tuple[list[RawCase], list[Path]]:
    root = raw if any(raw.glob("train_*.bmp")) else _find_dir(raw, "Warwick QU Dataset (Released 2016_07_08)")
    files = _files(root, (".bmp",))
    images = [p for p in files if not p.stem.endswith("_anno") and re.match(r"(train|testA|testB)_\d+$", p.stem)]
    masks = [p for p in files if p.stem.endswith("_anno")]
    cases, stray = _pair_by_stem(images, masks, lambda s: f"{s}_anno")
    for c in cases:
        c.part = c.case_id.split("_")[0]
    return cases, stray


def _scan_monuseg(raw: Path) -> tuple[list[RawCase], list[Path]]:
    tifs = sorted(p for p in raw.rglob("TCGA-*.tif"))
    xmls = {p.stem: p for p in raw.rglob("TCGA-*.xml")}
    cases = []
    for tif in tifs:
        part = "test" if "test" in str(tif.relative_to(raw)).lower() else "train"
        xml = xmls.pop(tif.stem, None)
        cases.append(RawCase(tif.stem, tif, [xml] if xml else [], part))
    return cases, sorted(xmls.values())


def read_aperio_xml(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Rasterize every Region polygon (Regions/Region/Vertices/Vertex X, Y) of an Aperio XML file, filled."""
    import xml.etree.ElementTree as ET

    from PIL import Image, ImageDraw

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatalistError(f"annotation {path} is not valid XML: {e}") from e
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    regions = root.iter("Region")
    count = 0
    for region in regions:
        points = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
        if len(points) >= 3:
            draw.polygon(points, fill=1, outline=1)
            count += 1
    if count == 0:
        raise DatalistError(f"annotation {path} has no polygon (Regions/Region/Vertices/Vertex).")
    return np.asarray(canvas, dtype=np.uint8)


# ---------------------------------------------------------------- retina
def _scan_drive(raw: Path) -> tuple[list[RawCase], list[Path]]:
    cases = []
    for part, folder in (("train", "training"), ("test", "test")):
        for image in _files(raw / folder / "images", (".tif",)):
            n = image.stem.split("_")[0]
            cases.append(RawCase(f"{n}_{folder}", image, [raw / folder / "1st_manual" / f"{n}_manual1.gif"], part,
                                 {"fov": raw / folder / "mask" / f"{n}_{folder}_mask.gif"}))  # fmt: skip
    return cases, []


def _scan_chasedb1(raw: Path) -> tuple[list[RawCase], list[Path]]:
    images = [p for p in _files(raw, (".jpg",)) if re.fullmatch(r"Image_\d{2}[LR]", p.stem)]
    masks = [p for p in _files(raw, (".png",)) if p.stem.endswith("_1stHO")]
    cases, stray = _pair_by_stem(images, masks, lambda s: f"{s}_1stHO")
    for c in cases:  # the common protocol: the first 20 images (patients 01-10) train, the last 8 test
        c.part = "train" if int(c.case_id[6:8]) <= 10 else "test"
    return cases, stray


def _scan_stare(raw: Path) -> tuple[list[RawCase], list[Path]]:
    """The labelled images ``im<nnnn>.ppm`` with ``im<nnnn>.ah.ppm`` (Hoover); unlabelled images are skipped."""
    files = _files(raw, (".ppm",))
    images = [p for p in files if re.fullmatch(r"im\d{4}", p.stem)]
    labels = {p.stem[: -len(".ah")]: p for p in files if p.stem.endswith(".ah")}
    cases = [RawCase(i.stem, i, [labels[i.stem]]) for i in images if i.stem in labels]  # 20 of 400 labelled
    return cases, [p for s, p in labels.items() if s not in {i.stem for i in images}]


# ---------------------------------------------------------------- chest X-ray
def _scan_cxr(raw: Path) -> tuple[list[RawCase], list[Path]]:
    cases = []
    mc = [p for p in raw.rglob("MCUCXR_*.png") if p.parent.name == "CXR_png"]
    for image in sorted(mc):
        root = image.parent.parent / "ManualMask"
        cases.append(RawCase(image.stem, image, [root / "leftMask" / image.name, root / "rightMask" / image.name],
                             "montgomery"))  # fmt: skip
    for image in sorted(p for p in raw.rglob("CHNCXR_*.png") if p.parent.name == "CXR_png"):
        mask = image.parent.parent / "mask" / f"{image.stem}_mask.png"
        if mask.is_file():  # 566 of the 662 Shenzhen images have lung masks
            cases.append(RawCase(image.stem, image, [mask], "shenzhen"))
    if not mc:
        raise DatalistError(f"{raw}: no Montgomery images (MontgomerySet/CXR_png/MCUCXR_*.png) found.")
    return cases, []


def _cxr_lungs(case: RawCase, index: int, mask: np.ndarray) -> np.ndarray:
    """Left lung 1, right lung 2 (the patient's sides: the left lung is on the image's right).

    Montgomery stores each lung in its own file (``leftMask`` then ``rightMask``); Shenzhen stores both in one
    mask, split here at the column midway between the mask's leftmost and rightmost pixels."""
    if case.part == "montgomery":
        return mask.astype(np.uint8) * (1 if index == 0 else 2)
    cols = np.where(mask.any(axis=0))[0]
    labels = np.zeros(mask.shape, np.uint8)
    if cols.size:
        mid = (cols.min() + cols.max()) / 2
        x = np.arange(mask.shape[1])[None, :]
        labels[(mask > 0) & (x > mid)] = 1
        labels[(mask > 0) & (x <= mid)] = 2
    return labels


# ---------------------------------------------------------------- cardiac MRI (DICOM + expert contours)
_CONTOUR = re.compile(r"IM-(\d{4})-(\d{4})-(icontour|ocontour)-manual\.txt")


def _scan_sunnybrook(kind: str) -> Callable[[Path], tuple[list[RawCase], list[Path]]]:
    """One folder per patient under ``raw`` holding its cine DICOM series (``IM-0001-<frame>.dcm``, any depth) and
    its expert contours (``IM-0001-<frame>-{icontour,ocontour}-manual.txt``, any depth); ``kind`` selects the
    endocardium (``icontour``) or epicardium (``ocontour``) task. Case id: ``<patient>_<series>_<frame>``."""

    def scan(raw: Path) -> tuple[list[RawCase], list[Path]]:
        cases, stray = [], []
        for patient in sorted(p for p in raw.iterdir() if p.is_dir()):
            dicoms = {p.stem: p for p in patient.rglob("IM-*.dcm")}
            for contour in sorted(patient.rglob(f"IM-*-{kind}-manual.txt")):
                match = _CONTOUR.fullmatch(contour.name)
                if match is None:
                    continue
                series, frame = match.group(1), match.group(2)
                dicom = dicoms.get(f"IM-{series}-{frame}")
                if dicom is None:
                    stray.append(contour)
                    continue
                cases.append(RawCase(f"{patient.name}_{series}_{frame}", dicom, [contour], patient.name))
        return cases, stray

    return scan


def read_contour(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Fill the polygon of a Sunnybrook contour file ("x y" per line, x = column, y = row, in pixels)."""
    from PIL import Image, ImageDraw

    try:
        points = [tuple(float(v) for v in line.split()[:2]) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise DatalistError(f"contour {path} is not 'x y' numbers per line: {e}") from e
    if len(points) < 3:
        raise DatalistError(f"contour {path} has {len(points)} points; a polygon needs 3.")
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8)


def _load_sunnybrook(case: RawCase) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    import pydicom

    try:
        ds = pydicom.dcmread(str(case.image))
        image = np.asarray(ds.pixel_array)
    except Exception as e:  # noqa: BLE001 (pydicom raises many kinds)
        raise DatalistError(f"{case.image} is not a readable DICOM image: {e}") from e
    if image.ndim != 2:
        raise DatalistError(f"{case.image} is not a single 2D frame (shape {list(image.shape)}).")
    spacing = tuple(float(v) for v in getattr(ds, "PixelSpacing", (1.0, 1.0)))
    return image.astype(np.int16 if image.max() < 32768 else np.int32), read_contour(case.masks[0], image.shape), spacing


def _patient_split(ratios: tuple[float, float, float]) -> Callable[[list[RawCase], int], dict[str, list[str]]]:
    """Split by patient (the ``part`` of each case), so that no patient's frames are in two sections."""

    def split(cases: list[RawCase], seed: int) -> dict[str, list[str]]:
        patients = sorted({c.part for c in cases})
        parts = split_ids(patients, ratios, seed)
        return {s: sorted(c.case_id for c in cases if c.part in set(p)) for s, p in
                zip(("training", "validation", "testing"), parts, strict=True)}  # fmt: skip

    return split


CONVERTERS: dict[str, Converter] = {
    c.name: c
    for c in (
        Converter("kvasir_seg", "Kvasir-SEG: images/<id>.jpg, masks/<id>.jpg (1000); LV-UNet split: test 0.2, then "
                  "validation 0.2 of the rest", _scan_kvasir, two_stage_split(0.2, 0.2), LV_UNET_SPLIT),
        Converter("cvc_clinicdb", "CVC-ClinicDB: Original/<n>.tif, Ground Truth/<n>.tif (612); LV-UNet split",
                  _scan_cvc_clinicdb, two_stage_split(0.2, 0.2), LV_UNET_SPLIT),
        Converter("cvc_colondb", "CVC-ColonDB: images/<n>.png, masks/<n>.png (380); LV-UNet split",
                  _scan_cvc_colondb, two_stage_split(0.2, 0.2), LV_UNET_SPLIT),
        Converter("isic2016", "ISIC 2016 Part 1: 900 training + 379 official test; training split 8:2 into "
                  "train/validation (LV-UNet)", _scan_isic2016, official_then_ratio_split(("test",), 0.2),
                  {"testing": "official", "validation_of_training": 0.2}),
        Converter("isic2018", "ISIC 2018 Task 1 training set (2594); LiteNeXt split 70/10/20", _scan_isic2018,
                  ratio_split((0.7, 0.1, 0.2)), LITENEXT_SPLIT),
        Converter("ph2", "PH2 (200 dermoscopic images); LiteNeXt split 70/10/20", _scan_ph2,
                  ratio_split((0.7, 0.1, 0.2)), LITENEXT_SPLIT),
        Converter("busi", "BUSI, benign + malignant + normal (780; normal masks are empty); LV-UNet split",
                  _scan_busi(("benign", "malignant", "normal")), two_stage_split(0.2, 0.2), LV_UNET_SPLIT,
                  allow_empty_masks=True),
        Converter("busi_benign_malignant", "BUSI, benign + malignant only (647; CMUNeXt-XXS); LV-UNet protocol",
                  _scan_busi(("benign", "malignant")), two_stage_split(0.2, 0.2), LV_UNET_SPLIT),
        Converter("busi_3class", "BUSI, benign + malignant (647) as 3 classes: 0 background, 1 benign, 2 malignant "
                  "lesion; the busi_benign_malignant split", _scan_busi(("benign", "malignant")),
                  two_stage_split(0.2, 0.2), LV_UNET_SPLIT,
                  labels={"0": "background", "1": "benign", "2": "malignant"}, mask_label=_busi_class),
        Converter("dsb2018", "2018 Data Science Bowl stage1_train (670; instance masks merged); LiteNeXt split "
                  "70/10/20", _scan_dsb2018, ratio_split((0.7, 0.1, 0.2)), LITENEXT_SPLIT),
        Converter("glas", "GlaS (85 train + 60 testA + 20 testB; instance labels > 0); LiteNeXt split 70/10/20 of "
                  "all 165", _scan_glas, ratio_split((0.7, 0.1, 0.2)), LITENEXT_SPLIT, mask_rule="nonzero"),
        Converter("monuseg", "MoNuSeg (30 train + 14 test; Aperio XML polygons rasterized); official test, "
                  "validation 0.2 of training", _scan_monuseg, official_then_ratio_split(("test",), 0.2),
                  {"testing": "official", "validation_of_training": 0.2}, read_mask=read_aperio_xml),
        Converter("drive", "DRIVE (20 training + 20 official test; field-of-view masks carried as 'fov'); "
                  "validation 0.2 of training", _scan_drive, official_then_ratio_split(("test",), 0.2),
                  {"testing": "official", "validation_of_training": 0.2}),
        Converter("chasedb1", "CHASE_DB1 (28; first 20 train, last 8 test; 1st observer); validation 0.2 of "
                  "training", _scan_chasedb1, official_then_ratio_split(("test",), 0.2),
                  {"testing": "last 8", "validation_of_training": 0.2}),
        Converter("stare", "STARE (the 20 labelled images, Hoover labels .ah); 70/10/20", _scan_stare,
                  ratio_split((0.7, 0.1, 0.2)), LITENEXT_SPLIT, mask_rule="threshold"),
        Converter("sunnybrook_endo", "Sunnybrook Cardiac Data: endocardium (icontour) filled on the matching cine "
                  "DICOM frames, 2D NIfTI with pixel spacing; LiteNeXt split 8:1:1, by patient", _scan_sunnybrook(
                  "icontour"), _patient_split((0.8, 0.1, 0.1)), {"training": 0.8, "validation": 0.1, "testing": 0.1,
                  "unit": "patient"}, load_case=_load_sunnybrook, suffix=".nii.gz"),
        Converter("sunnybrook_epi", "Sunnybrook Cardiac Data: epicardium (ocontour) filled on the matching cine "
                  "DICOM frames, 2D NIfTI with pixel spacing; LiteNeXt split 8:1:1, by patient", _scan_sunnybrook(
                  "ocontour"), _patient_split((0.8, 0.1, 0.1)), {"training": 0.8, "validation": 0.1, "testing": 0.1,
                  "unit": "patient"}, load_case=_load_sunnybrook, suffix=".nii.gz"),
        Converter("chest_xray", "Shenzhen (566 with masks) for training/validation 0.8/0.2 (453/113), all 138 "
                  "Montgomery (left + right masks merged) for testing (LiteNeXt)", _scan_cxr,
                  official_then_ratio_split(("montgomery",), 0.2),
                  {"testing": "Montgomery", "validation_of_shenzhen": 0.2}),
        Converter("chest_xray_lungs", "chest_xray as 3 classes: 0 background, 1 left lung, 2 right lung (the "
                  "patient's sides; Shenzhen's two-lung masks split at their mid column); the chest_xray split",
                  _scan_cxr, official_then_ratio_split(("montgomery",), 0.2),
                  {"testing": "Montgomery", "validation_of_shenzhen": 0.2},
                  labels={"0": "background", "1": "left_lung", "2": "right_lung"}, split_mask=_cxr_lungs),
    )
}  # fmt: skip


# The 20 STARE images with vessel labels (Hoover et al.), by their official names.
STARE_LABELLED = (
    "im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081", "im0082", "im0139", "im0162",
    "im0163", "im0235", "im0236", "im0239", "im0240", "im0255", "im0291", "im0319", "im0324",
)  # fmt: skip
# Releases whose case ids are fixed by their official file names: their datalists can be written without the data.
KNOWN_RELEASES = ("busi", "busi_benign_malignant", "busi_3class", "chasedb1", "cvc_clinicdb", "drive", "glas", "stare")


def known_cases(name: str) -> list[RawCase]:
    """The case listing of a release in :data:`KNOWN_RELEASES`, from its official names (files not needed)."""
    p = Path("-")
    if name == "cvc_clinicdb":
        return [RawCase(str(i), p, [p]) for i in range(1, 613)]
    if name in ("busi", "busi_benign_malignant", "busi_3class"):
        classes = (("benign", 437), ("malignant", 210)) + ((("normal", 133),) if name == "busi" else ())
        return [RawCase(f"{c}_{i}", p, [p], c) for c, n in classes for i in range(1, n + 1)]
    if name == "glas":
        parts = (("train", 85), ("testA", 60), ("testB", 20))
        return [RawCase(f"{part}_{i}", p, [p], part) for part, n in parts for i in range(1, n + 1)]
    if name == "stare":
        return [RawCase(cid, p, [p]) for cid in STARE_LABELLED]
    if name == "drive":
        parts = (("train", "training", range(21, 41)), ("test", "test", range(1, 21)))
        return [RawCase(f"{n:02d}_{f}", p, [p], part, {"fov": p}) for part, f, r in parts for n in r]
    if name == "chasedb1":
        return [RawCase(f"Image_{n:02d}{e}", p, [p], "train" if n <= 10 else "test") for n in range(1, 15) for e in "LR"]
    raise KeyError(f"{name!r} is not a release with fixed case ids; those are {KNOWN_RELEASES}.")

"""Dataset converters on small fake trees in each official layout (file names, formats, bit depths), the real
copies in ../shared/data (slow), committed datalists, and bad layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightseg.data import DatalistError
from lightseg.data.__main__ import main as data_cli
from lightseg.data.converters import (
    CONVERTERS,
    KNOWN_RELEASES,
    STARE_LABELLED,
    known_cases,
    list_converters,
    make_datalist,
    prepare,
)

from .conftest import ROOT, SHARED

H, W = 24, 32


def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _blob(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A 0/1 rectangle at a seed-dependent place, never empty."""
    rng = np.random.default_rng(seed + 1000)
    y, x = int(rng.integers(2, h // 2)), int(rng.integers(2, w // 2))
    m = np.zeros((h, w), np.uint8)
    m[y : y + h // 3, x : x + w // 3] = 1
    return m


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    if mode:
        im = im.convert(mode)
    im.save(path, **kw)


def _read(path: Path) -> np.ndarray:
    """(H, W[, C]) pixels of a converted PNG, or of a 2D NIfTI stored (x = column, y = row)."""
    if path.name.endswith(".nii.gz"):
        import nibabel as nib

        return np.asarray(nib.load(path).dataobj).T
    return np.asarray(Image.open(path))


# ---------------------------------------------------------------- fake official layouts
def fake_kvasir(root: Path, n: int = 10) -> None:
    for i in range(n):
        cid = f"cju{i:04d}abc"
        _save(root / "images" / f"{cid}.jpg", _rgb(i), quality=95)
        _save(root / "masks" / f"{cid}.jpg", np.stack([_blob(i) * 255] * 3, -1), quality=90)  # JPEG: noisy 0/255


def fake_cvc_clinicdb(root: Path, n: int = 10) -> None:
    for i in range(1, n + 1):
        _save(root / "Original" / f"{i}.tif", _rgb(i))
        _save(root / "Ground Truth" / f"{i}.tif", np.stack([_blob(i) * 255] * 3, -1))


def fake_cvc_colondb(root: Path, n: int = 10) -> None:
    for i in range(1, n + 1):
        _save(root / "images" / f"{i}.png", _rgb(i))
        _save(root / "masks" / f"{i}.png", _blob(i) * 255)


def fake_isic2016(root: Path) -> None:
    for part, n, base in (("Training", 8, 0), ("Test", 4, 100)):
        for i in range(n):
            cid = f"ISIC_{base + i:07d}"
            _save(root / f"ISBI2016_ISIC_Part1_{part}_Data" / f"{cid}.jpg", _rgb(base + i))
            _save(root / f"ISBI2016_ISIC_Part1_{part}_GroundTruth" / f"{cid}_Segmentation.png", _blob(i) * 255)


def fake_isic2018(root: Path, n: int = 10) -> None:
    for i in range(n):
        cid = f"ISIC_{i:07d}"
        _save(root / "ISIC2018_Task1-2_Training_Input" / f"{cid}.jpg", _rgb(i))
        _save(root / "ISIC2018_Task1_Training_GroundTruth" / f"{cid}_segmentation.png", _blob(i) * 255)


def fake_ph2(root: Path, n: int = 10) -> None:
    for i in range(1, n + 1):
        cid = f"IMD{i:03d}"
        case = root / "PH2Dataset" / "PH2 Dataset images" / cid
        _save(case / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp", _rgb(i))
        _save(case / f"{cid}_lesion" / f"{cid}_lesion.bmp", _blob(i) * 255)


def fake_busi(root: Path) -> None:
    base = root / "Dataset_BUSI_with_GT"
    for cls, n in (("benign", 5), ("malignant", 3), ("normal", 2)):
        for i in range(1, n + 1):
            _save(base / cls / f"{cls} ({i}).png", np.stack([_rgb(i)[..., 0]] * 3, -1))
            mask = np.zeros((H, W), np.uint8) if cls == "normal" else _blob(i)
            _save(base / cls / f"{cls} ({i})_mask.png", mask * 255)
    second = np.zeros((H, W), np.uint8)
    second[-4:, -4:] = 255
    _save(base / "benign" / "benign (2)_mask_1.png", second)  # a second lesion: merged


def fake_dsb2018(root: Path, n: int = 10) -> None:
    for i in range(n):
        cid = f"{i:02d}" + "f" * 62
        case = root / "stage1_train" / cid
        rgba = np.concatenate([_rgb(i), np.full((H, W, 1), 255, np.uint8)], -1)
        _save(case / "images" / f"{cid}.png", rgba)  # RGBA, as the release
        for k in range(2):  # one mask per nucleus
            m = np.zeros((H, W), np.uint8)
            m[2 + 10 * k : 6 + 10 * k, 3 : 9 + i] = 255
            _save(case / "masks" / f"{k:04d}{cid[:8]}.png", m)


def fake_glas(root: Path) -> None:
    folder = root / "Warwick QU Dataset (Released 2016_07_08)"
    for part, n in (("train", 5), ("testA", 3), ("testB", 2)):
        for i in range(1, n + 1):
            _save(folder / f"{part}_{i}.bmp", _rgb(i))
            labels = np.zeros((H, W), np.uint8)
            labels[2:8, 2:8] = 1
            labels[12:20, 10:20] = 2  # instance labels
            _save(folder / f"{part}_{i}_anno.bmp", labels)
    (folder / "Grade.csv").write_text("name,grade\n")


def _aperio_xml(polygons: list[list[tuple[int, int]]]) -> str:
    regions = "".join(
        "<Region><Vertices>" + "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in poly) + "</Vertices></Region>"
        for poly in polygons
    )
    return f'<?xml version="1.0"?><Annotations><Annotation><Regions>{regions}</Regions></Annotation></Annotations>'


def fake_monuseg(root: Path) -> None:
    for folder, n, base in (("MoNuSeg 2018 Training Data", 4, 0), ("MoNuSegTestData", 2, 50)):
        for i in range(n):
            cid = f"TCGA-{base + i:02d}-0000"
            tif = root / folder / ("Tissue Images" if "Training" in folder else "") / f"{cid}.tif"
            xml = root / folder / ("Annotations" if "Training" in folder else "") / f"{cid}.xml"
            _save(tif, _rgb(i))
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(_aperio_xml([[(2, 2), (10, 2), (10, 8), (2, 8)], [(15, 12), (25, 12), (20, 20)]]))


def fake_drive(root: Path) -> None:
    for folder, numbers in (("training", range(21, 25)), ("test", range(1, 4))):
        for n in numbers:
            _save(root / folder / "images" / f"{n:02d}_{folder}.tif", _rgb(n))
            _save(root / folder / "1st_manual" / f"{n:02d}_manual1.gif", _blob(n) * 255)
            fov = np.zeros((H, W), np.uint8)
            fov[1:-1, 1:-1] = 255
            _save(root / folder / "mask" / f"{n:02d}_{folder}_mask.gif", fov)


def fake_chasedb1(root: Path) -> None:
    for p in range(1, 15):
        for eye in "LR":
            cid = f"Image_{p:02d}{eye}"
            _save(root / f"{cid}.jpg", _rgb(p))
            _save(root / f"{cid}_1stHO.png", (_blob(p) > 0), mode="1")  # 1-bit, as the release
            _save(root / f"{cid}_2ndHO.png", (_blob(p + 1) > 0), mode="1")


def fake_stare(root: Path) -> None:
    for k, cid in enumerate(STARE_LABELLED):
        _save(root / f"{cid}.ppm", _rgb(k))
        _save(root / f"{cid}.ah.ppm", np.stack([_blob(k) * 255] * 3, -1))
    _save(root / "im0006.ppm", _rgb(99))  # unlabelled images are ignored


def fake_chest_xray(root: Path) -> None:
    mc = root / "MontgomerySet"
    for i in range(1, 5):
        name = f"MCUCXR_{i:04d}_{i % 2}.png"
        _save(mc / "CXR_png" / name, _rgb(i)[..., 0])
        left, right = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
        left[4:20, 2:12], right[4:20, 18:30] = 255, 255
        _save(mc / "ManualMask" / "leftMask" / name, left)
        _save(mc / "ManualMask" / "rightMask" / name, right)
    sz = root / "ChinaSet_AllFiles"
    for i in range(1, 13):
        name = f"CHNCXR_{i:04d}_{i % 2}"
        _save(sz / "CXR_png" / f"{name}.png", _rgb(i)[..., 0])
        if i <= 10:  # two Shenzhen images without masks: left out, as in the paper
            _save(sz / "mask" / f"{name}_mask.png", _blob(i) * 255)


def fake_sunnybrook(root: Path, patients: int = 10) -> None:
    from .dicom_utils import write_dicom

    for p in range(1, patients + 1):
        patient = root / f"SC-HF-I-{p:02d}"
        (patient / "DICOM").mkdir(parents=True)
        for frame in (20, 40, 60):  # frame 60 has no contour: not a case
            pixels = _rgb(p * 100 + frame)[..., 0].astype(np.uint16) * 16
            write_dicom(patient / "DICOM" / f"IM-0001-{frame:04d}.dcm", pixels, spacing=(0.5, 0.7))
        contours = patient / "contours-manual" / "IRCCI-expert"
        contours.mkdir(parents=True)
        for frame in (20, 40):
            (contours / f"IM-0001-{frame:04d}-icontour-manual.txt").write_text("4.0 2.0\n12.0 2.0\n12.0 8.0\n4.0 8.0\n")
            (contours / f"IM-0001-{frame:04d}-ocontour-manual.txt").write_text("3 2\n20 2\n20 15\n3 15\n")


# dataset -> (fake tree, expected counts training/validation/testing)
FAKES = {
    "kvasir_seg": (fake_kvasir, (6, 2, 2)),
    "cvc_clinicdb": (fake_cvc_clinicdb, (6, 2, 2)),
    "cvc_colondb": (fake_cvc_colondb, (6, 2, 2)),
    "isic2016": (fake_isic2016, (6, 2, 4)),
    "isic2018": (fake_isic2018, (7, 1, 2)),
    "ph2": (fake_ph2, (7, 1, 2)),
    "busi": (fake_busi, (6, 2, 2)),
    "busi_benign_malignant": (fake_busi, (5, 1, 2)),
    "busi_3class": (fake_busi, (5, 1, 2)),
    "dsb2018": (fake_dsb2018, (7, 1, 2)),
    "glas": (fake_glas, (7, 1, 2)),
    "monuseg": (fake_monuseg, (3, 1, 2)),
    "drive": (fake_drive, (3, 1, 3)),
    "chasedb1": (fake_chasedb1, (16, 4, 8)),
    "stare": (fake_stare, (14, 2, 4)),
    "chest_xray": (fake_chest_xray, (8, 2, 4)),
    "chest_xray_lungs": (fake_chest_xray, (8, 2, 4)),
    "sunnybrook_endo": (fake_sunnybrook, (16, 2, 2)),
    "sunnybrook_epi": (fake_sunnybrook, (16, 2, 2)),
}


def test_every_converter_has_a_fake_tree():
    assert sorted(FAKES) == list_converters()


@pytest.mark.parametrize("name", sorted(FAKES))
def test_convert_fake_official_tree(name, tmp_path):
    make, counts = FAKES[name]
    raw, out = tmp_path / "raw", tmp_path / "out"
    make(raw)
    datalist = prepare(name, raw, out, progress=False)
    assert tuple(datalist["counts"][s] for s in ("training", "validation", "testing")) == counts
    assert datalist["seed"] == 0 and datalist["source"] and datalist["ratios"]
    assert json.loads((out / "datalist.json").read_text()) == datalist
    ids = []
    for section in ("training", "validation", "testing"):
        for entry in datalist[section]:
            image, mask = _read(out / entry["image"]), _read(out / entry["label"])
            assert image.shape[:2] == mask.shape == (H, W), entry
            assert image.dtype == (np.int16 if name.startswith("sunnybrook") else np.uint8), entry
            assert image.ndim == 2 or image.shape[2] == 3  # RGBA dropped to RGB
            values = {0, 1, 2} if "labels" in datalist else {0, 1}
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= values, entry
            assert mask.any() or name == "busi", entry
            ids.append(Path(entry["image"]).stem)
    assert len(ids) == len(set(ids)) == sum(counts)

    # idempotent: a second run writes nothing new and returns the same datalist
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "datalist.json"}
    assert prepare(name, raw, out, progress=False) == datalist
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    # the split depends on the seed only through the split function
    assert prepare(name, raw, tmp_path / "seed1", seed=1, progress=False)["counts"] == datalist["counts"]


def test_merges_and_special_formats(tmp_path):
    """BUSI's _mask_1 merged; DSB2018 instances merged and RGBA dropped; GlaS labels > 0; MoNuSeg polygons filled;
    DRIVE's field of view carried; CHASE_DB1's 1-bit masks; chest X-ray left + right lungs."""
    for name in ("busi", "dsb2018", "glas", "monuseg", "drive", "chasedb1", "chest_xray"):
        FAKES[name][0](tmp_path / name)
    prepare("busi", tmp_path / "busi", tmp_path / "o_busi", progress=False)
    merged = np.asarray(Image.open(tmp_path / "o_busi" / "masks" / "benign_2.png"))
    corner = np.zeros((H, W), np.uint8)
    corner[-4:, -4:] = 1
    assert (merged == (_blob(2) | corner)).all()
    normal = np.asarray(Image.open(tmp_path / "o_busi" / "masks" / "normal_1.png"))
    assert not normal.any()

    prepare("dsb2018", tmp_path / "dsb2018", tmp_path / "o_dsb", progress=False)
    cid = "03" + "f" * 62
    m = np.asarray(Image.open(tmp_path / "o_dsb" / "masks" / f"{cid}.png"))
    assert m[2:6, 3:12].all() and m[12:16, 3:12].all() and m.sum() == 2 * 4 * 9
    assert np.asarray(Image.open(tmp_path / "o_dsb" / "images" / f"{cid}.png")).shape == (H, W, 3)

    prepare("glas", tmp_path / "glas", tmp_path / "o_glas", progress=False)
    assert np.asarray(Image.open(tmp_path / "o_glas" / "masks" / "testA_1.png")).sum() == 36 + 80

    prepare("monuseg", tmp_path / "monuseg", tmp_path / "o_monuseg", progress=False)
    poly = np.asarray(Image.open(tmp_path / "o_monuseg" / "masks" / "TCGA-50-0000.png"))
    assert poly[2:9, 2:11].all() and poly[0, 0] == 0 and poly[13, 20] == 1

    dl = prepare("drive", tmp_path / "drive", tmp_path / "o_drive", progress=False)
    assert {e["image"] for e in dl["testing"]} == {f"images/{n:02d}_test.png" for n in (1, 2, 3)}
    fov = np.asarray(Image.open(tmp_path / "o_drive" / dl["testing"][0]["fov"]))
    assert fov.sum() == (H - 2) * (W - 2) and set(np.unique(fov)) == {0, 1}

    dl = prepare("chasedb1", tmp_path / "chasedb1", tmp_path / "o_chase", progress=False)
    assert sorted(Path(e["image"]).stem for e in dl["testing"]) == [
        f"Image_{p}{e}" for p in (11, 12, 13, 14) for e in "LR"
    ]

    dl = prepare("chest_xray", tmp_path / "chest_xray", tmp_path / "o_cxr", progress=False)
    assert all(Path(e["image"]).stem.startswith("MCUCXR") for e in dl["testing"])
    lungs = np.asarray(Image.open(tmp_path / "o_cxr" / dl["testing"][0]["label"]))
    assert lungs[4:20, 2:12].all() and lungs[4:20, 18:30].all() and lungs.sum() == 16 * 10 + 16 * 12


def test_sunnybrook_contours_filled_on_dicom_frames_with_spacing(tmp_path):
    import nibabel as nib

    fake_sunnybrook(tmp_path / "raw", patients=3)
    for task, rows, cols in (
        ("sunnybrook_endo", slice(2, 9), slice(4, 13)),
        ("sunnybrook_epi", slice(2, 16), slice(3, 21)),
    ):
        dl = prepare(task, tmp_path / "raw", tmp_path / task, seed=0, progress=False)
        entries = [e for s in ("training", "validation", "testing") for e in dl[s]]
        assert sorted(Path(e["image"]).name for e in entries)[0] == "SC-HF-I-01_0001_0020.nii.gz"
        patients = {s: {Path(e["image"]).name[:10] for e in dl[s]} for s in ("training", "validation", "testing")}
        assert not (patients["training"] & patients["testing"]) and not (patients["training"] & patients["validation"])
        label = nib.load(tmp_path / task / entries[0]["label"])
        assert label.header.get_zooms()[:2] == pytest.approx((0.7, 0.5))  # x = column spacing, y = row spacing
        mask = np.asarray(label.dataobj).T
        expected = np.zeros((H, W), np.uint8)
        expected[rows, cols] = 1
        assert (mask == expected).all(), task
        image = np.asarray(nib.load(tmp_path / task / entries[0]["image"]).dataobj).T
        assert (image == _rgb(100 + 20)[..., 0].astype(np.int16) * 16).all()  # pixel values kept


# ---------------------------------------------------------------- bad layouts
def test_bad_layouts_fail_clearly(tmp_path):
    raw = tmp_path / "raw"
    fake_kvasir(raw, n=4)
    ids = sorted(p.stem for p in (raw / "images").iterdir())

    with pytest.raises(DatalistError, match=r"no kvasir_seg cases|does not exist"):
        prepare("kvasir_seg", tmp_path / "raw" / "images", tmp_path / "o1", progress=False)  # wrong folder
    (raw / "masks" / f"{ids[0]}.jpg").rename(tmp_path / "moved.jpg")
    with pytest.raises(DatalistError, match=rf"{ids[0]}.jpg has no mask"):
        prepare("kvasir_seg", raw, tmp_path / "o2", progress=False)
    (tmp_path / "moved.jpg").rename(raw / "masks" / f"{ids[0]}.jpg")
    shutil.copy(raw / "masks" / f"{ids[0]}.jpg", raw / "masks" / "orphan.jpg")
    with pytest.raises(DatalistError, match=r"orphan\.jpg matches no image"):
        prepare("kvasir_seg", raw, tmp_path / "o3", progress=False)
    (raw / "masks" / "orphan.jpg").unlink()
    (raw / "images" / f"{ids[1]}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatalistError, match=rf"{ids[1]}.jpg is not a readable image"):
        prepare("kvasir_seg", raw, tmp_path / "o4", progress=False)
    _save(raw / "images" / f"{ids[1]}.jpg", _rgb(1, 30, 30))
    with pytest.raises(DatalistError, match=r"is 24x32 but image .* is 30x30"):
        prepare("kvasir_seg", raw, tmp_path / "o5", progress=False)
    _save(raw / "images" / f"{ids[1]}.jpg", _rgb(1))
    _save(raw / "masks" / f"{ids[2]}.jpg", np.zeros((H, W), np.uint8))
    with pytest.raises(DatalistError, match=rf"mask of case {ids[2]} .* is empty"):
        prepare("kvasir_seg", raw, tmp_path / "o6", progress=False)

    with pytest.raises(DatalistError, match="unknown dataset 'kvasir'"):
        prepare("kvasir", raw, tmp_path / "o7")
    with pytest.raises(DatalistError, match="is not a folder"):
        prepare("kvasir_seg", tmp_path / "absent", tmp_path / "o8")


def test_tiff_pillow_cannot_open_is_read_with_itk(tmp_path):
    """CVC-ClinicDB ships some TIFFs Pillow cannot open: a 3-channel float TIFF stands in for them."""
    import itk
    from PIL import UnidentifiedImageError

    raw = tmp_path / "raw"
    fake_cvc_clinicdb(raw, n=5)
    frame = _rgb(3).astype(np.float32)
    itk.imwrite(itk.image_from_array(frame, is_vector=True), str(raw / "Original" / "3.tif"))
    with pytest.raises(UnidentifiedImageError):
        Image.open(raw / "Original" / "3.tif")
    prepare("cvc_clinicdb", raw, tmp_path / "out", progress=False)
    written = np.asarray(Image.open(tmp_path / "out" / "images" / "3.png"))
    assert written.shape == (H, W, 3) and np.corrcoef(written.ravel(), frame.ravel())[0, 1] > 0.99


def test_monuseg_image_without_annotation_fails(tmp_path):
    fake_monuseg(tmp_path / "raw")
    next((tmp_path / "raw").rglob("TCGA-01-0000.xml")).unlink()
    with pytest.raises(DatalistError, match=r"TCGA-01-0000\.tif has no mask"):
        prepare("monuseg", tmp_path / "raw", tmp_path / "out", progress=False)


def test_duplicated_ids_fail(tmp_path):
    raw = tmp_path / "raw"
    fake_monuseg(raw)
    shutil.copytree(raw / "MoNuSegTestData", raw / "MoNuSegTestData copy")
    with pytest.raises(DatalistError, match="duplicated case ids"):
        prepare("monuseg", raw, tmp_path / "out", progress=False)


def test_cli_prepare(tmp_path):
    fake_isic2018(tmp_path / "raw", n=5)
    listing = tmp_path / "lists" / "isic2018.json"
    code = data_cli(["prepare", "isic2018", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                     "--datalist", str(listing), "--no-progress"])  # fmt: skip
    assert code == 0 and json.loads(listing.read_text()) == json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert data_cli(["prepare", "isic2018", "--raw", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2


# ---------------------------------------------------------------- committed datalists
@pytest.mark.parametrize("name", sorted(KNOWN_RELEASES))
def test_committed_datalists_of_fixed_releases_reproduce(name):
    committed = ROOT / "data_lists" / f"{name}.json"
    assert committed.read_text() == json.dumps(make_datalist(CONVERTERS[name], known_cases(name)), indent=4) + "\n"


REAL = {  # dataset -> (folder under ../shared/data, total cases)
    "kvasir_seg": ("Kvasir-SEG", 1000),
    "drive": ("DRIVE", 40),
    "chasedb1": ("CHASEDB1", 28),
    "dsb2018": ("DSB2018/dsb2018_96", 670),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_datasets_convert_and_reproduce_the_committed_datalists(name, tmp_path):
    folder, total = REAL[name]
    raw = SHARED / "data" / folder
    if not raw.is_dir():
        pytest.skip(f"{raw} is absent: the real {name} copy is only on the project's machines")
    datalist = prepare(name, raw, tmp_path / name, progress=False)
    assert sum(datalist["counts"].values()) == total
    committed = (ROOT / "data_lists" / f"{name}.json").read_text()
    assert committed == json.dumps(datalist, indent=4) + "\n"
    rng = np.random.default_rng(0)
    entries = [e for s in ("training", "validation", "testing") for e in datalist[s]]
    for entry in rng.choice(entries, size=min(25, len(entries)), replace=False):
        image = Image.open(tmp_path / name / entry["image"])
        mask = np.asarray(Image.open(tmp_path / name / entry["label"]))
        assert (image.height, image.width) == mask.shape and set(np.unique(mask)) <= {0, 1} and mask.any()


# ---------------------------------------------------------------- training on a prepared dataset, benchmark script
@pytest.mark.slow
def test_benchmark_trains_a_bundle_on_a_prepared_dataset(tmp_path):
    """A converted (fake) Kvasir-SEG through --dataset_dir/--datalist: two seeds, JSON and Markdown written."""
    import subprocess
    import sys

    fake_kvasir(tmp_path / "raw", n=10)
    prepare("kvasir_seg", tmp_path / "raw", tmp_path / "prepared", progress=False)
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--bundle", "cmunext_xxs", "--dataset_dir", str(tmp_path / "prepared"),
         "--datalist", str(tmp_path / "prepared" / "datalist.json"), "--epochs", "1", "--image_size", "32", "32",
         "--batch_size", "2", "--seeds", "0", "1", "--out", str(tmp_path / "results"),
         "--override", "num_workers=0", "--override", "use_mlflow=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    bench = json.loads((tmp_path / "results" / "benchmark.json").read_text())
    assert [r["seed"] for r in bench["runs"]] == [0, 1] and bench["runs"][0]["test_images"] == 2
    for kind in ("mean", "pooled"):
        for m in ("iou", "dice", "precision", "recall"):
            assert 0.0 <= bench["summary"][kind][m]["mean"] <= 1.0 and bench["summary"][kind][m]["std"] >= 0.0
    assert len(bench["runs"][0]["metrics"]["per_image"]["dice"]) == 2
    table = (tmp_path / "results" / "benchmark.md").read_text()
    assert "| dice |" in table and "+-" in table
    assert (tmp_path / "results" / "seed_1" / "models" / "model.pt").is_file()
    training = bench["runs"][0]["training"]
    assert training["epochs_completed"] == 1 and training["best_model_epoch"] == 1
    assert 0.0 <= training["best_model_metric"] <= 1.0 and "best validation" in table

    # --reuse: finished seeds are not trained again (an interrupted benchmark resumes)
    again = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--bundle", "cmunext_xxs", "--dataset_dir", str(tmp_path / "prepared"),
         "--datalist", str(tmp_path / "prepared" / "datalist.json"), "--epochs", "1", "--image_size", "32", "32",
         "--seeds", "0", "1", "--out", str(tmp_path / "results"), "--reuse"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0 and again.stderr.count("reusing the finished run") == 2, again.stderr[-3000:]
    assert json.loads((tmp_path / "results" / "benchmark.json").read_text())["summary"] == bench["summary"]

    # --time_budget instead of --epochs: the budget, the time used and why it stopped are recorded
    budget = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--bundle", "cmunext_xxs", "--dataset_dir", str(tmp_path / "prepared"),
         "--datalist", str(tmp_path / "prepared" / "datalist.json"), "--time_budget", "0.1", "--image_size", "32", "32",
         "--batch_size", "2", "--out", str(tmp_path / "budget"), "--override", "num_workers=0",
         "--override", "use_mlflow=false", "--override", "lr_schedule=cosine"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert budget.returncode == 0, budget.stderr[-4000:]
    result = json.loads((tmp_path / "budget" / "benchmark.json").read_text())
    assert result["settings"]["overrides"] == {"num_workers": 0, "use_mlflow": False, "lr_schedule": "cosine",
                                               "time_budget": 0.1}  # fmt: skip
    training = result["runs"][0]["training"]
    assert training["time_budget"] == 0.1 and training["time_budget_stopped_by"] == "budget", training
    assert training["epochs_completed"] >= 1 and 0 < training["time_budget_elapsed_s"] < 6 + 10, training
    assert "0.1 minutes" in (tmp_path / "budget" / "benchmark.md").read_text()


def test_multi_class_converters_write_label_maps(tmp_path):
    """busi_3class: benign 1, malignant 2; chest_xray_lungs: left lung 1, right lung 2 (Montgomery's own files,
    Shenzhen's two-lung mask split at its mid column); the datalists name the labels."""
    fake_busi(tmp_path / "busi")
    dl = prepare("busi_3class", tmp_path / "busi", tmp_path / "o_busi", progress=False)
    assert dl["labels"] == {"0": "background", "1": "benign", "2": "malignant"}
    benign = np.asarray(Image.open(tmp_path / "o_busi" / "masks" / "benign_2.png"))
    malignant = np.asarray(Image.open(tmp_path / "o_busi" / "masks" / "malignant_1.png"))
    assert set(np.unique(benign)) == {0, 1} and set(np.unique(malignant)) == {0, 2}
    binary = np.asarray(Image.open(tmp_path / "o_busi" / "masks" / "benign_2.png"))
    prepare("busi_benign_malignant", tmp_path / "busi", tmp_path / "o_bin", progress=False)
    assert ((binary > 0) == (np.asarray(Image.open(tmp_path / "o_bin" / "masks" / "benign_2.png")) > 0)).all()

    fake_chest_xray(tmp_path / "cxr")
    dl = prepare("chest_xray_lungs", tmp_path / "cxr", tmp_path / "o_cxr", progress=False)
    assert dl["labels"]["1"] == "left_lung"
    mc = np.asarray(Image.open(tmp_path / "o_cxr" / "masks" / "MCUCXR_0001_1.png"))
    assert (mc[4:20, 2:12] == 1).all() and (mc[4:20, 18:30] == 2).all() and set(np.unique(mc)) == {0, 1, 2}
    sz = np.asarray(Image.open(tmp_path / "o_cxr" / "masks" / "CHNCXR_0003_1.png"))
    cols = np.where(sz.any(0))[0]
    mid = (cols.min() + cols.max()) / 2
    assert set(np.unique(sz[:, : int(np.floor(mid)) + 1])) <= {0, 2} and set(np.unique(sz[:, int(mid) + 1 :])) <= {0, 1}

"""Demo data, datalists, seeded splits, header reading, the 2D input fixes, and every bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image

from lightseg.data import (
    DatalistError,
    list_images,
    load_datalist,
    make_demo_datalist,
    read_header,
    split_ids,
    write_json,
)
from lightseg.data.synthetic import MODALITIES, generate_case, generate_dataset
from lightseg.transforms import PrepareImageLabeld

from .conftest import ROOT, make_tiny_dataset
from .dicom_utils import write_dicom


def chain_text(excinfo) -> str:
    """The messages of an exception and of its causes (MONAI wraps transform errors in a RuntimeError)."""
    texts, e = [], excinfo.value
    while e is not None:
        texts.append(str(e))
        e = e.__cause__
    return " | ".join(texts)


# ---------------------------------------------------------------- synthetic data
@pytest.mark.parametrize("modality", MODALITIES)
def test_synthetic_is_deterministic_and_realistic_shaped(modality):
    a_img, a_mask = generate_case(modality, seed=3, index=7)
    b_img, b_mask = generate_case(modality, seed=3, index=7)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert a_img.ndim == (3 if modality == "dermoscopy" else 2)
    assert a_img.dtype == np.uint8 and a_mask.dtype == np.uint8
    assert set(np.unique(a_mask)) <= {0, 255} and a_mask.any()
    assert 200 <= a_img.shape[0] <= 700 and 200 <= a_img.shape[1] <= 700
    other, _ = generate_case(modality, seed=4, index=7)
    assert other.shape != a_img.shape or not np.array_equal(other, a_img)


def test_synthetic_sizes_vary_and_are_non_square():
    shapes = {generate_case("ultrasound", 0, i, 200, 700)[0].shape for i in range(6)}
    assert len(shapes) == 6 and any(h != w for h, w in shapes)


def test_lesion_is_darker_than_surroundings():
    img, mask = generate_case("dermoscopy", 0, 1)
    lum = img.mean(-1)
    assert lum[mask > 0].mean() < lum[mask == 0].mean()
    us, us_mask = generate_case("ultrasound", 0, 1)
    assert us[us_mask > 0].mean() < us[(us_mask == 0) & (us > 0)].mean()  # hypoechoic


# ---------------------------------------------------------------- splits and datalists
def test_split_is_a_pure_function_of_sorted_ids_seed_and_ratios():
    ids = [f"case{i}" for i in range(20)]
    a = split_ids(ids, (0.7, 0.15, 0.15), seed=1)
    b = split_ids(list(reversed(ids)), (0.7, 0.15, 0.15), seed=1)
    assert a == b
    assert [len(p) for p in a] == [14, 3, 3]
    assert sorted(i for part in a for i in part) == sorted(ids)
    assert split_ids(ids, (0.7, 0.15, 0.15), seed=2) != a


def test_split_rejects_bad_input():
    with pytest.raises(DatalistError, match="duplicated"):
        split_ids(["a", "a", "b"], (0.5, 0.5), 0)
    with pytest.raises(DatalistError, match="sum to 1"):
        split_ids(["a", "b"], (0.5, 0.6), 0)


def test_committed_demo_datalist_reproduces():
    committed = json.loads((ROOT / "data_lists" / "demo.json").read_text())
    assert committed == json.loads(json.dumps(make_demo_datalist()))
    assert (ROOT / "data_lists" / "demo.json").read_text() == json.dumps(committed, indent=4) + "\n"


def test_demo_data_created_on_first_use(tmp_path):
    datalist = make_demo_datalist(per_modality=3, ratios=(0.34, 0.33, 0.33), min_size=64, max_size=96)
    path = tmp_path / "demo.json"
    write_json(datalist, path)
    entries = load_datalist(path, "training", tmp_path / "demo_data")
    assert len(entries) == len(datalist["training"]) and all(Path(e["image"]).is_file() for e in entries)
    first = Path(entries[0]["image"]).read_bytes()
    Path(entries[0]["image"]).unlink()
    load_datalist(path, "validation", tmp_path / "demo_data")  # regenerates the missing file, identically
    assert Path(entries[0]["image"]).read_bytes() == first


def test_generate_dataset_writes_pngs(tmp_path):
    cases = [{"image": "i/a.png", "label": "m/a.png", "modality": "dermoscopy", "index": 0}]
    generate_dataset(tmp_path, cases, seed=0, min_size=50, max_size=60, progress=False)
    img = np.array(Image.open(tmp_path / "i/a.png"))
    assert img.shape[2] == 3 and 50 <= img.shape[0] <= 60


# ---------------------------------------------------------------- headers of every format
@pytest.fixture
def formats(tmp_path):
    a = np.zeros((40, 64), np.uint8)
    a[5:15, 40:60] = 255
    files = {}
    for name, arr in {
        "gray.png": a,
        "rgba.png": np.stack([a, a, a, np.full_like(a, 255)], -1),
        "rgb.jpg": np.stack([a] * 3, -1),
        "rgb.bmp": np.stack([a] * 3, -1),
        "rgb.tif": np.stack([a] * 3, -1),
    }.items():
        Image.fromarray(arr).save(tmp_path / name)
        files[name] = tmp_path / name
    nib.save(nib.Nifti1Image(a.T.astype(np.float32), np.diag([0.5, 0.7, 1, 1])), tmp_path / "slice.nii.gz")
    nib.save(nib.Nifti1Image(a.T[..., None].astype(np.float32), np.eye(4)), tmp_path / "slice3d.nii.gz")
    write_dicom(tmp_path / "frame.dcm", a.astype(np.uint16) * 16)
    files.update({n: tmp_path / n for n in ("slice.nii.gz", "slice3d.nii.gz", "frame.dcm")})
    return files


def test_read_header_every_format(formats):
    expected_channels = {"gray.png": 1, "rgba.png": 4, "rgb.jpg": 3, "rgb.bmp": 3, "rgb.tif": 3}
    for name, path in formats.items():
        header = read_header(path)
        assert header.spatial_shape == (40, 64), name
        assert header.channels == expected_channels.get(name, 1), name


def test_read_header_errors(tmp_path):
    with pytest.raises(DatalistError, match="does not exist"):
        read_header(tmp_path / "nope.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatalistError, match=r"cannot read image file .*broken\.png"):
        read_header(tmp_path / "broken.png")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    with pytest.raises(DatalistError, match="not a 2D image"):
        read_header(tmp_path / "vol.nii.gz")


def test_list_images_folder_and_datalist(formats, tiny_dataset):
    folder = Path(next(iter(formats.values()))).parent
    names = [Path(e["image"]).name for e in list_images(str(folder))]
    assert names == sorted(names) and "frame.dcm" in names and "slice.nii.gz" in names
    data, datalist = tiny_dataset
    assert len(list_images(str(datalist), "testing", str(data))) == 3
    with pytest.raises(DatalistError, match="neither a folder"):
        list_images(str(folder / "missing"))


# ---------------------------------------------------------------- 2D loading fixes
def _load(image: Path, label: Path | None = None, **kwargs):
    keys = ["image", "label"] if label is not None else ["image"]
    chain = Compose(
        [
            LoadImaged(keys=keys, image_only=True, reader=["PydicomReader"]),
            EnsureChannelFirstd(keys=keys),
            PrepareImageLabeld(keys=("image", "label"), **kwargs),
        ]
    )
    return chain({"image": str(image), **({"label": str(label)} if label is not None else {})})


def test_mixed_channels_become_rgb_and_masks_binary(formats, tmp_path):
    mask = np.zeros((40, 64), np.uint8)
    mask[5:15, 40:60] = 1
    Image.fromarray(mask).save(tmp_path / "m01.png")
    Image.fromarray(mask * 255).save(tmp_path / "m255.png")
    Image.fromarray(np.stack([mask * 255] * 3 + [np.full_like(mask, 255)], -1)).save(tmp_path / "mrgba.png")
    ref = None
    for name in ("gray.png", "rgba.png", "rgb.bmp", "rgb.tif", "slice.nii.gz", "slice3d.nii.gz", "frame.dcm"):
        for m in ("m01.png", "m255.png", "mrgba.png"):
            d = _load(formats[name], tmp_path / m)
            assert d["image"].shape == (3, 64, 40), name
            assert d["label"].shape == (1, 64, 40)
            assert set(torch.unique(d["label"]).tolist()) == {0.0, 1.0}
            if ref is None:
                ref = d["label"]
            torch.testing.assert_close(d["label"], ref)  # same orientation for every mask encoding
            # the bright block of the image sits where the mask is, whatever the file format
            assert d["image"][0][d["label"][0] > 0].mean() > d["image"][0][d["label"][0] == 0].mean()


def test_grayscale_network_input(formats):
    assert _load(formats["rgb.bmp"], in_channels=1)["image"].shape == (1, 64, 40)
    assert _load(formats["gray.png"], in_channels=1)["image"].shape == (1, 64, 40)


def test_bad_mask_values_and_threshold(formats, tmp_path):
    Image.fromarray(np.full((40, 64), 128, np.uint8)).save(tmp_path / "grey_mask.png")
    with pytest.raises(Exception) as e:
        _load(formats["gray.png"], tmp_path / "grey_mask.png")
    assert re.search(r"grey_mask\.png has values \{128\}; expected \{0, 1\} or \{0, 255\}", chain_text(e))
    jpeg_like = np.zeros((40, 64), np.uint8)
    jpeg_like[5:15, 40:60] = 250
    jpeg_like[0, 0] = 3
    Image.fromarray(jpeg_like).save(tmp_path / "lossy.png")
    d = _load(formats["gray.png"], tmp_path / "lossy.png", mask_threshold=127)
    assert d["label"].sum() == 200


def test_mask_size_mismatch_names_both_files(formats, tmp_path):
    Image.fromarray(np.zeros((41, 64), np.uint8)).save(tmp_path / "short.png")
    with pytest.raises(Exception) as e:
        _load(formats["gray.png"], tmp_path / "short.png")
    assert re.search(r"mask .*short\.png is 41 x 64 but image .*gray\.png is 40 x 64", chain_text(e))


def test_wrong_channel_count(tmp_path):
    arr = np.zeros((5, 16, 16), np.float32)  # a 5-component NIfTI vector image
    nib.save(nib.Nifti1Image(arr.transpose(1, 2, 0)[:, :, None, None, :], np.eye(4)), tmp_path / "five.nii.gz")
    with pytest.raises(Exception) as e:
        _load(tmp_path / "five.nii.gz")
    assert re.search(r"five\.nii\.gz has 5 channels", chain_text(e))


# ---------------------------------------------------------------- datalist pre-flight errors
def _datalist(tmp_path: Path, entries: list[dict], key: str = "training") -> Path:
    path = tmp_path / "list.json"
    path.write_text(json.dumps({key: entries}))
    return path


def test_preflight_errors(tmp_path, formats):
    root = Path(next(iter(formats.values()))).parent
    with pytest.raises(DatalistError, match=r"datalist .*absent\.json does not exist"):
        load_datalist(tmp_path / "absent.json", "training", root)
    ok = {"image": "gray.png", "label": "gray.png"}
    with pytest.raises(DatalistError, match=r"dataset_dir .*nowhere does not exist"):
        load_datalist(_datalist(tmp_path, [ok]), "training", tmp_path / "nowhere")
    with pytest.raises(DatalistError, match="no entries in 'training'"):
        load_datalist(_datalist(tmp_path, []), "training", root)
    with pytest.raises(DatalistError, match="no entries in 'validation'"):
        load_datalist(_datalist(tmp_path, [ok]), "validation", root)
    with pytest.raises(DatalistError, match=r"label file .*lost\.png does not exist"):
        load_datalist(_datalist(tmp_path, [{"image": "gray.png", "label": "lost.png"}]), "training", root)
    (root / "junk.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatalistError, match=r"cannot read image file .*junk\.png"):
        load_datalist(_datalist(tmp_path, [{"image": "junk.png", "label": "gray.png"}]), "training", root)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(root / "small_mask.png")
    with pytest.raises(DatalistError, match=r"small_mask\.png is 30 x 30 but image .*gray\.png is 40 x 64"):
        load_datalist(_datalist(tmp_path, [{"image": "gray.png", "label": "small_mask.png"}]), "training", root)
    Image.fromarray(np.full((40, 64), 7, np.uint8)).save(root / "sevens.png")
    with pytest.raises(DatalistError, match=r"mask .*sevens\.png has values \{7\}"):
        load_datalist(_datalist(tmp_path, [{"image": "gray.png", "label": "sevens.png"}]), "training", root)
    assert load_datalist(
        _datalist(tmp_path, [{"image": "gray.png", "label": "sevens.png"}]), "training", root, mask_threshold=5
    )
    with pytest.raises(DatalistError, match="in_channels must be 1 or 3"):
        load_datalist(_datalist(tmp_path, [ok]), "training", root, in_channels=2)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatalistError, match="not valid JSON"):
        load_datalist(tmp_path / "bad.json", "training", root)


def test_tiny_dataset_loads(tiny_dataset):
    data, datalist = tiny_dataset
    assert len(load_datalist(datalist, "training", data)) == 6
    assert make_tiny_dataset(data.parent / "again").read_text() == datalist.read_text()


# ---------------------------------------------------------------- command line
def test_cli_check_and_split(tiny_dataset, tmp_path, capsys):
    from lightseg.data.__main__ import main

    data, datalist = tiny_dataset
    assert main(["check", "--datalist", str(datalist), "--dataset_dir", str(data)]) == 0
    assert main(["check", "--datalist", str(datalist), "--dataset_dir", str(tmp_path / "none")]) == 2
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"c{i}" for i in range(10)))
    capsys.readouterr()
    assert main(["split", "--ids", str(ids), "--ratios", "0.8", "0.2", "--seed", "1"]) == 0
    parts = json.loads(capsys.readouterr().out)["parts"]
    assert parts == split_ids([f"c{i}" for i in range(10)], (0.8, 0.2), 1)


def test_cli_demo(tmp_path):
    from lightseg.data.__main__ import main

    listing = tmp_path / "demo.json"
    write_json(make_demo_datalist(per_modality=2, ratios=(0.5, 0.5, 0.0), min_size=40, max_size=50), listing)
    assert main(["demo", "--datalist", str(listing), "--out", str(tmp_path / "d")]) == 0
    assert len(list((tmp_path / "d" / "images").glob("*.png"))) == 4

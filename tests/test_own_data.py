"""Your own folder to a trusted model: from-folders datalists, the stricter checks, run folders that never
overwrite each other, settings that travel with the model, and inference that survives bad files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.data import DatalistError, load_datalist, validate_entries
from lightseg.data.folders import choose_mask_threshold, datalist_from_folders, pair_files
from lightseg.data.io import check_image_file
from lightseg.runs import RunError, check_run, latest_resumable_run, promote, run_name
from lightseg.settings import read_settings, report_differences, trained, write_settings
from lightseg.transforms.prepare import binarize_mask
from tests.conftest import BUNDLES, ROOT, bundle_config


def _ellipse(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
    mask = ((yy - cy) / (0.3 * h)) ** 2 + ((xx - cx) / (0.25 * w)) ** 2 <= 1
    img = np.clip(rng.normal(60, 10, (h, w)) + 120 * mask, 0, 255).astype(np.uint8)
    return np.stack([img, img, img], -1), mask


def make_folder_pair(root: Path, n: int = 30, mask_ext: str = ".jpg", seed: int = 0) -> tuple[Path, Path]:
    """``images/`` (JPEG) and ``masks/`` (JPEG by default: lossy 0/255) of ``n`` cases of varied sizes."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(n):
        img, mask = _ellipse(int(rng.integers(48, 96)), int(rng.integers(48, 96)), rng)
        Image.fromarray(img).save(images / f"case {i:02d}.jpg", quality=90)
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"case {i:02d}{mask_ext}", quality=75)
    return images, masks


def write_multiframe_dicom(path: Path, frames: int = 5) -> Path:
    """A DICOM with ``frames`` frames of 16 x 16 (what some ultrasound and cine MRI exports are)."""
    import pydicom

    from tests.dicom_utils import write_dicom

    write_dicom(path, np.zeros((16, 16), np.uint16))
    ds = pydicom.dcmread(str(path))
    ds.NumberOfFrames = frames
    ds.PixelData = np.zeros((frames, 16, 16), np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _text(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- pairing and from-folders


def test_pairing_by_name_with_mask_suffixes_reports_unpaired(tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    for name in ("a.jpg", "b.png", "c.png", "lonely.png"):
        Image.new("RGB", (16, 16)).save(tmp_path / "im" / name)
    for name in ("a.png", "b_mask.png", "c_mask.png", "c_Segmentation.png", "orphan.png"):
        Image.new("L", (16, 16)).save(tmp_path / "gt" / name)
    with pytest.raises(DatalistError, match=r"both pair with case 'c'"):
        pair_files(tmp_path / "im", tmp_path / "gt")
    (tmp_path / "gt" / "c_mask.png").unlink()
    pairs, lone_images, lone_masks = pair_files(tmp_path / "im", tmp_path / "gt")
    assert {k: (i.name, m.name) for k, (i, m) in pairs.items()} == {
        "a": ("a.jpg", "a.png"), "b": ("b.png", "b_mask.png"), "c": ("c.png", "c_Segmentation.png")}  # fmt: skip
    assert [p.name for p in lone_images] == ["lonely.png"] and [p.name for p in lone_masks] == ["orphan.png"]
    Image.new("RGB", (16, 16)).save(tmp_path / "im" / "a.png")
    with pytest.raises(DatalistError, match=r"a\.jpg and .*a\.png have the same case id 'a'"):
        pair_files(tmp_path / "im", tmp_path / "gt")


def test_from_folders_cli_writes_a_seeded_datalist_and_the_next_command(tmp_path):
    images, masks = make_folder_pair(tmp_path / "mine", n=20)
    Image.new("RGB", (32, 32)).save(images / "no mask here.png")
    out = tmp_path / "lists" / "mine.json"
    proc = _run(["-m", "lightseg.data", "from-folders", "--images", str(images), "--masks", str(masks),
                 "--out", str(out), "--seed", "3"], cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "1 images without a mask (left out): no mask here.png" in proc.stderr
    assert f"configs/train.json --datalist {out}" in proc.stdout
    content = json.loads(out.read_text())
    assert content["mask_threshold"] == 127.0  # JPEG masks
    assert content["seed"] == 3 and content["ratios"] == [0.7, 0.1, 0.2]
    assert [len(content[s]) for s in ("training", "validation", "testing")] == [14, 2, 4]
    assert content["dataset_dir"] == "../mine" and content["unpaired"]["images"] == ["no mask here.png"]
    again = tmp_path / "again.json"
    datalist_from_folders(images, masks, again, seed=3)
    assert {s: json.loads(again.read_text())[s] for s in ("training", "testing")} == {
        s: content[s] for s in ("training", "testing")}  # fmt: skip
    # the datalist alone is enough for the checks: dataset_dir and mask_threshold are read from it
    from lightseg.bundles import datalist_value, default_dataset_dir

    assert default_dataset_dir("bundles/x", out) == str((tmp_path / "mine").resolve())
    entries = load_datalist(out, "training", default_dataset_dir("x", out),
                            mask_threshold=datalist_value(out, "mask_threshold"))  # fmt: skip
    assert len(entries) == 14
    proc = _run(["-m", "lightseg.data", "check", "--datalist", str(out)], cwd=tmp_path)
    assert proc.returncode == 0 and "training: 14 entries OK (0 with an empty mask)" in proc.stderr, proc.stderr


def test_choose_mask_threshold(tmp_path):
    exact, lossy, classes = tmp_path / "exact.png", tmp_path / "lossy.jpg", tmp_path / "classes.png"
    m = np.zeros((20, 20), np.uint8)
    m[5:15, 5:15] = 255
    Image.fromarray(m).save(exact)
    Image.fromarray(m).save(lossy, quality=60)
    m[5:10, 5:10] = 1
    m[10:15, 10:15] = 2
    m[m == 255] = 3
    Image.fromarray(m).save(classes)
    assert choose_mask_threshold([exact]) is None
    assert choose_mask_threshold([exact, lossy]) == 127.0
    with pytest.raises(DatalistError, match=r"classes\.png has values \[0, 1, 2, 3\].*--out_channels 4"):
        choose_mask_threshold([classes])


# ---------------------------------------------------------------- the stricter check


def _mask(tmp_path: Path, name: str, array: np.ndarray, mode: str | None = None) -> str:
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def _entry(tmp_path: Path, label: str, size=(20, 20)) -> dict:
    image = tmp_path / "img.png"
    if not image.is_file():
        Image.new("RGB", size[::-1], (90, 90, 90)).save(image)
    return {"image": str(image), "label": label}


def test_threshold_that_empties_01_masks_says_which_to_use(tmp_path):
    m = np.zeros((20, 20), np.uint8)
    m[5:15, 5:15] = 1
    entry = _entry(tmp_path, _mask(tmp_path, "zero_one.png", m))
    validate_entries([entry])  # no threshold: {0, 1} is fine
    with pytest.raises(DatalistError, match=r"zero_one\.png has foreground value 1 but mask_threshold 127 makes it "
                       r"empty.*--mask_threshold 0\.5, or leave it unset"):  # fmt: skip
        validate_entries([entry], mask_threshold=127)
    proc = _run(["-m", "lightseg.data", "check", "--datalist", _datalist(tmp_path, [entry]), "--dataset_dir",
                 str(tmp_path), "--mask_threshold", "127"], cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "makes it empty" in proc.stderr and "entries OK" not in proc.stderr


def _datalist(tmp_path: Path, entries: list[dict]) -> str:
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": entries}))
    return str(path)


def test_label_in_the_alpha_channel_is_read(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[5:15, 5:15, 3] = 255  # RGB all zero, the label painted into the transparency
    path = _mask(tmp_path, "alpha.png", rgba, "RGBA")
    y = torch.as_tensor(rgba).permute(2, 1, 0)  # channel first, as MONAI loads PNGs
    assert int(binarize_mask(y, name=path).sum()) == 100
    assert validate_entries([_entry(tmp_path, path)]) == 0  # not empty
    opaque = rgba.copy()
    opaque[..., 3] = 255
    opaque[5:15, 5:15, 0] = 255  # an ordinary RGBA mask: alpha constant, label in the colour channels
    assert int(binarize_mask(torch.as_tensor(opaque).permute(2, 1, 0)).sum()) == 100


def test_empty_masks_logged_and_an_empty_split_is_an_error(tmp_path, caplog):
    m = np.zeros((20, 20), np.uint8)
    empty = _entry(tmp_path, _mask(tmp_path, "empty.png", m))
    m[2:6, 2:6] = 255
    full = _entry(tmp_path, _mask(tmp_path, "full.png", m))
    with caplog.at_level("WARNING"):
        assert validate_entries([empty, full], where="training split") == 1
    assert "1 of 2 masks are empty (no foreground)" in caplog.text and "empty.png" in caplog.text
    with pytest.raises(DatalistError, match=r"training split: all 1 masks are empty"):
        validate_entries([empty], where="training split")


def test_several_foreground_values_name_the_values_and_out_channels(tmp_path):
    m = np.zeros((20, 20), np.uint8)
    m[2:6, 2:6], m[8:12, 8:12] = 1, 2
    with pytest.raises(DatalistError, match=r"has values \{0, 1, 2\}.*2 foreground values.*--out_channels 3"):
        validate_entries([_entry(tmp_path, _mask(tmp_path, "two.png", m))])


def test_multi_frame_and_tiny_images_are_refused(tmp_path):
    frames = [Image.new("L", (20, 20), v) for v in (0, 128, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(DatalistError, match=r"anim\.gif has 3 frames"):
        validate_entries([{"image": str(tmp_path / "anim.gif")}])
    Image.new("RGB", (4, 30)).save(tmp_path / "thin.png")
    with pytest.raises(DatalistError, match=r"thin\.png is 30 x 4 pixels .*at least 8 x 8"):
        validate_entries([{"image": str(tmp_path / "thin.png")}])
    multi = write_multiframe_dicom(tmp_path / "five.dcm")
    with pytest.raises(DatalistError, match=r"five\.dcm is a multi-frame DICOM \(5 frames\)"):
        check_image_file(multi)


# ---------------------------------------------------------------- run folders and settings (units)


def test_run_name_check_run_and_promote(tmp_path):
    runs, models = tmp_path / "runs", tmp_path / "bundle" / "models"
    assert run_name(runs, resume=False).startswith("run_")
    with pytest.raises(RunError, match=r"--resume true: checkpoint .*a/checkpoints/checkpoint\.pt does not exist"):
        check_run(runs / "a" / "models", runs / "a" / "checkpoints", models, resume=True, runs_dir=runs)
    (runs / "a" / "checkpoints").mkdir(parents=True)
    (runs / "a" / "checkpoints" / "checkpoint.pt").write_bytes(b"x")
    assert latest_resumable_run(runs) == "a" and run_name(runs, resume=True) == "a"
    with pytest.raises(RunError, match=r"holds the checkpoint of an earlier run.*--resume true"):
        check_run(runs / "a" / "models", runs / "a" / "checkpoints", models, resume=False)
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    with pytest.raises(RunError, match=r"bundle model folder .*a_file/models is not writable"):
        check_run(runs / "b" / "models", runs / "b" / "checkpoints", blocked / "models")

    # promotion keeps what it replaces: an unknown model goes to runs/previous_*, an export of a known run's
    # model goes back to that run's folder
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(b"shipped")
    first = runs / "first" / "models"
    first.mkdir(parents=True)
    (first / "model.pt").write_bytes(b"first")
    write_settings(first / "model.pt", {"run_dir": str(first.parent), "network_name": "cmunext_xxs"})
    promote(first, models, runs)
    assert (models / "model.pt").read_bytes() == b"first" and read_settings(models)["network_name"] == "cmunext_xxs"
    assert [p.read_bytes() for p in runs.glob("previous_*/models/model.pt")] == [b"shipped"]
    (models / "model.ts").write_bytes(b"export of first")
    second = runs / "second" / "models"
    second.mkdir(parents=True)
    (second / "model.pt").write_bytes(b"second")
    promote(second, models, runs)
    assert (models / "model.pt").read_bytes() == b"second" and not (models / "model.ts").exists()
    assert (first / "model.ts").read_bytes() == b"export of first" and (first / "model.pt").read_bytes() == b"first"


def test_trained_settings_and_overrides_logged(tmp_path, caplog):
    ckpt = tmp_path / "model.pt"
    assert trained(ckpt, "image_size", [256, 256]) == [256, 256]  # no settings: the default
    write_settings(ckpt, {"image_size": [64, 64], "network_name": "mininet", "dataset_dir": str(tmp_path)})
    assert trained(ckpt, "image_size", [256, 256]) == [64, 64]
    with caplog.at_level("WARNING"):
        differ = report_differences(ckpt, {"image_size": (64, 64), "network_name": "lvunet",
                                           "dataset_dir": str(tmp_path) + "/"})  # fmt: skip
    assert differ == ["network_name"]
    assert "network_name is 'lvunet' here but the model was trained with 'mininet'" in caplog.text


# ---------------------------------------------------------------- bundles end to end


def _bundle_copy(tmp_path: Path, name: str = "cmunext_xxs") -> Path:
    """A bundle folder of its own (configs, metadata), so that runs/ and models/ are written under tmp_path."""
    root = tmp_path / "bundles" / name
    shutil.copytree(BUNDLES / name, root, ignore=shutil.ignore_patterns("runs", "eval", "*.pt", "*.ts", "data"))
    return root


def _monai(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return _run(["-m", "monai.bundle", "run", *args], cwd=cwd, timeout=timeout)


TINY = ["--epochs", "2", "--image_size", "[32,32]", "--batch_size", "4", "--num_workers", "0",
        "--progress_bar", "false"]  # fmt: skip


@pytest.mark.slow
def test_own_folder_to_model_with_nothing_repeated(tmp_path):
    """The README's "Train on your own data", top to bottom: from-folders, train, evaluate, infer."""
    work = tmp_path / "work"
    bundle = _bundle_copy(work)
    images, _ = make_folder_pair(work / "mydata", n=24)
    t0 = time.time()
    proc = _run(["-m", "lightseg.data", "from-folders", "--images", "mydata/images", "--masks", "mydata/masks",
                 "--out", "mydata/datalist.json"], cwd=work)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    command = proc.stdout.strip().splitlines()[-1].split()
    assert command[:4] == ["python", "-m", "monai.bundle", "run"]
    proc = _run([*command[1:], *TINY], cwd=work)  # the printed command, with a tiny schedule
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (bundle / "runs").iterdir()]
    assert len(runs) == 1
    settings = read_settings(bundle / "models")
    assert settings["image_size"] == [32, 32] and settings["mask_threshold"] == 127.0
    assert settings["dataset_dir"] == str((work / "mydata").resolve()) and settings["status"] == "FINISHED"
    assert settings["mlflow_run_id"] and settings["run_dir"] == str(runs[0].resolve())
    assert (bundle / "models" / "model.pt").read_bytes() == (runs[0] / "models" / "model.pt").read_bytes()

    configs = bundle_config(bundle, "train.json", "evaluate.json")
    proc = _monai(work, "evaluating", "--config_file", configs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "using the training settings saved with the model" in _text(proc)
    assert "here but the model was trained with" not in _text(proc)  # nothing overridden
    rows = (bundle / "eval" / "mean_dice_raw.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 5  # header + the 5 test cases of the from-folders split (24 * 0.2)
    assert not list((bundle / "runs").glob("run_*/eval"))  # evaluating creates no run folder
    assert len(list((bundle / "runs").iterdir())) == 1
    report = bundle / "eval" / "report"
    for name in ("report.html", "report.png", "dice_hist.png", "learning_curves.png", "per_image.csv"):
        assert (report / name).is_file(), name
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=settings["tracking_uri"]).get_run(settings["mlflow_run_id"])
    assert "test_mean_dice" in run.data.metrics and "test_mean_iou" in run.data.metrics

    new = work / "new images"
    new.mkdir()
    for p in sorted(images.iterdir())[:3]:
        shutil.copy(p, new / p.name)
    proc = _monai(work, "inferring", "--config_file", str(bundle / "configs" / "inference.json"),
                  "--input", str(new), "--output_dir", str(work / "masks out"), "--overlay", "true")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for p in sorted(new.iterdir()):
        mask = Image.open(work / "masks out" / f"{p.stem}_seg.png")
        assert mask.size == Image.open(p).size
        assert Image.open(work / "masks out" / f"{p.stem}_overlay.png").size == mask.size
    # an explicit override still wins, with one line saying it differs from the training
    proc = _monai(work, "inferring", "--config_file", str(bundle / "configs" / "inference.json"),
                  "--input", str(new), "--output_dir", str(work / "at64"), "--image_size", "[64,64]")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "image_size is [64, 64] here but the model was trained with [32, 32]" in _text(proc)
    print(f"own data: from-folders + train + evaluate + infer in {time.time() - t0:.0f} s")


@pytest.mark.slow
def test_two_trainings_in_a_row_and_resume_without_checkpoint(tmp_path, tiny_dataset):
    data, datalist = tiny_dataset
    work = tmp_path / "work"
    bundle = _bundle_copy(work)
    args = ["training", "--config_file", str(bundle / "configs" / "train.json"), "--datalist", str(datalist),
            "--dataset_dir", str(data), *TINY, "--use_mlflow", "false"]  # fmt: skip
    first = _monai(work, *args, "--run_name", "first")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _monai(work, *args, "--run_name", "second", "--epochs", "1")
    assert second.returncode == 0, second.stderr[-3000:]
    for name in ("first", "second"):
        assert (bundle / "runs" / name / "models" / "model.pt").is_file()
        assert (bundle / "runs" / name / "checkpoints" / "checkpoint.pt").is_file()
    assert read_settings(bundle / "models")["run_name"] == "second"
    assert (bundle / "models" / "model.pt").read_bytes() == (bundle / "runs/second/models/model.pt").read_bytes()
    # the same run name again without --resume would overwrite its checkpoint: refused
    again = _monai(work, *args, "--run_name", "first")
    assert again.returncode != 0 and "holds the checkpoint of an earlier run" in _text(again)
    # --resume true with no checkpoint anywhere: an error naming the path, nothing trained
    empty = _bundle_copy(tmp_path / "empty")
    proc = _monai(tmp_path / "empty", "training", "--config_file", str(empty / "configs" / "train.json"),
                  "--datalist", str(datalist), "--dataset_dir", str(data), *TINY, "--resume", "true")  # fmt: skip
    assert proc.returncode != 0
    text = _text(proc)
    assert "--resume true: checkpoint" in text and "does not exist" in text and str(empty / "runs") in text
    assert "Epoch[1]" not in text
    # --resume true alone continues the latest run folder with a checkpoint
    proc = _monai(work, *args[:-2], "--epochs", "3", "--resume", "true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {bundle / 'runs' / 'second' / 'checkpoints' / 'checkpoint.pt'} at epoch 1" in _text(proc)
    assert read_settings(bundle / "runs" / "second" / "models")["resumed_at_epoch"] == 1


@pytest.mark.slow
def test_inference_on_a_folder_with_bad_files(tmp_path):
    work = tmp_path / "work"
    bundle = _bundle_copy(work)
    torch.manual_seed(0)
    from lightseg import create_network

    torch.save(create_network("cmunext_xxs").state_dict(), bundle / "models" / "model.pt")
    folder = work / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(_ellipse(40 + 7 * i, 50, rng)[0]).save(folder / f"good{i}.png")
    (folder / "zero.png").write_bytes(b"")
    good = (folder / "good0.png").read_bytes()
    Image.fromarray(_ellipse(60, 60, rng)[0]).save(folder / "truncated.jpg")
    (folder / "truncated.jpg").write_bytes((folder / "truncated.jpg").read_bytes()[:600])
    Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")
    frames = [Image.new("L", (30, 30), v) for v in (0, 99, 200)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    write_multiframe_dicom(folder / "five_frames.dcm")
    assert good  # the good files are untouched by the bad ones
    out = work / "out"
    proc = _monai(work, "inferring", "--config_file", str(bundle / "configs" / "inference.json"),
                  "--input", str(folder), "--output_dir", str(out), "--image_size", "[32,32]")  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["good0_seg.png", "good1_seg.png", "good2_seg.png"]
    summary = _text(proc)[_text(proc).index("inference finished: 3 file(s) written, 5 failed") :]
    for name, reason in (("zero.png", "cannot read image file"), ("truncated.jpg", "runcated"),
                         ("one_pixel.png", "is 1 x 1 pixels"), ("animated.gif", "has 3 frames"),
                         ("five_frames.dcm", "multi-frame DICOM (5 frames)")):  # fmt: skip
        line = next(x for x in summary.splitlines() if name in x)
        assert reason in line, line
    assert "Traceback" not in _text(proc)
    # an output folder that cannot be written: one message naming it, before any model runs
    blocked = work / "a_file"
    blocked.write_text("")
    proc = _monai(work, "inferring", "--config_file", str(bundle / "configs" / "inference.json"),
                  "--input", str(folder), "--output_dir", str(blocked / "sub"))  # fmt: skip
    assert proc.returncode != 0 and f"cannot write the masks to {blocked / 'sub'}" in _text(proc)


def test_bundle_configs_read_the_settings(tmp_path):
    """inference.json and evaluate.json take the network and preprocessing from settings.json by default."""
    from monai.bundle import ConfigParser

    for kind, keys in (("inference.json", ["image_size", "network_name"]), ("evaluate.json", ["datalist"])):
        files = [str(BUNDLES / "mininet" / "configs" / f) for f in (["train.json"] if kind == "evaluate.json" else [])]
        parser = ConfigParser()
        parser.read_config([*files, str(BUNDLES / "mininet" / "configs" / kind)])
        parser["bundle_root"] = str(BUNDLES / "mininet")
        parser["ckpt_path"] = str(tmp_path / "model.pt")
        defaults = {k: parser.get_parsed_content(k) for k in keys}
        write_settings(tmp_path / "model.pt", {"image_size": [48, 48], "network_name": "mininet_paper_counts",
                                               "datalist": "/data/mine.json"})  # fmt: skip
        parser.parse(reset=True)
        parser["bundle_root"] = str(BUNDLES / "mininet")
        parser["ckpt_path"] = str(tmp_path / "model.pt")
        for key in keys:
            assert parser.get_parsed_content(key) == read_settings(tmp_path)[key] != defaults[key]
        (tmp_path / "settings.json").unlink()
    assert ROOT.is_dir()


# ---------------------------------------------------------------- what held well stays so


class _Payload:
    """Unpickling this runs code: it creates the file ``marker`` (a stand-in for anything worse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    import pickle

    with open(path, "wb") as f:
        pickle.dump({"network": _Payload(marker)}, f)
    return path


def test_code_executing_pickles_are_refused_on_every_load_path(tmp_path):
    from ignite.engine import Engine

    from lightseg import create_network
    from lightseg.export import load_bundle_network
    from lightseg.handlers import ResumableCheckpoint
    from lightseg.networks.pretrained import load_mobilenet_v3_encoder

    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "model.pt", marker)
    with pytest.raises(Exception, match=r"Weights only load failed|weights_only"):
        load_bundle_network(BUNDLES / "cmunext_xxs", evil)
    resume = ResumableCheckpoint(tmp_path, {"network": create_network("cmunext_xxs")}, filename="model.pt")
    engine = Engine(lambda e, b: None)
    resume.attach(engine)
    with pytest.raises(Exception, match=r"Weights only load failed|weights_only"):
        engine.run([0], max_epochs=1)
    with pytest.raises(Exception, match=r"Weights only load failed|weights_only"):
        load_mobilenet_v3_encoder(create_network("lvunet"), evil, download=False, check_hash=False)
    assert not marker.exists()


def test_datalist_values_are_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    entry = {"image": f"$__import__('pathlib').Path('{marker}').touch()", "label": "@x"}
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [entry]}))
    with pytest.raises(DatalistError, match=r"image file .*\$__import__.* does not exist"):
        load_datalist(path, "training", tmp_path)
    assert not marker.exists()


@pytest.mark.slow
def test_inference_on_awkward_but_valid_files(tmp_path):
    """16-bit PNG, RGBA, gray and RGB mixed, non-ASCII names with spaces, odd sizes, an 8000 x 8000 image, and a
    model file that would run code when unpickled (refused by the inference's checkpoint loader)."""
    work = tmp_path / "work"
    bundle = _bundle_copy(work)
    from lightseg import create_network

    torch.manual_seed(0)
    torch.save(create_network("cmunext_xxs").state_dict(), bundle / "models" / "model.pt")
    folder = work / "Bilder für Ärztin"
    folder.mkdir()
    rng = np.random.default_rng(1)
    img, _ = _ellipse(37, 53, rng)
    Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(folder / "sixteen bit.png")
    Image.fromarray(np.dstack([img, np.full(img.shape[:2], 200, np.uint8)]), "RGBA").save(folder / "rgba ñ.png")
    Image.fromarray(img[..., 0]).save(folder / "gray.png")
    Image.fromarray(img).save(folder / "rgb.jpg")
    Image.new("L", (8000, 8000), 90).save(folder / "huge.png")
    out = work / "out"
    proc = _monai(work, "inferring", "--config_file", str(bundle / "configs" / "inference.json"),
                  "--input", str(folder), "--output_dir", str(out), "--image_size", "[32,32]")  # fmt: skip
    assert proc.returncode == 0, _text(proc)[-3000:]
    for p in folder.iterdir():
        assert Image.open(out / f"{p.stem}_seg.png").size == Image.open(p).size, p.name
    marker = tmp_path / "pwned"
    _evil_checkpoint(bundle / "models" / "model.pt", marker)
    proc = _monai(work, "inferring", "--config_file", str(bundle / "configs" / "inference.json"),
                  "--input", str(folder), "--output_dir", str(work / "out2"), "--image_size", "[32,32]")  # fmt: skip
    assert proc.returncode != 0 and not marker.exists()
    assert "Weights only load failed" in _text(proc) or "weights_only" in _text(proc)

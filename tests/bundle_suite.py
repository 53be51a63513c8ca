"""One test suite for every bundle, through MONAI's own bundle tooling: zoo checks, train -> evaluate -> infer,
MLflow (local store and a real server), resume after a killed run, torchrun on CPU, bad input, and inference on
every supported file format, and the 1-channel and 3-class paths. tests/test_bundles.py makes one subclass per
folder in bundles/."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import (
    BUNDLES,
    ROOT,
    SCHEMA,
    SCHEMA_MD5,
    _cli,
    bundle_config,
    make_tiny_dataset,
    run_bundle,
    tiny_overrides,
)
from .dicom_utils import write_dicom

REQUIRED_FILES = [
    "LICENSE",
    "large_files.yml",
    "configs/metadata.json",
    "configs/inference.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
]


def _epoch(trainer_state: dict) -> int:
    """Completed epochs in an Ignite trainer state_dict (it stores the iteration and the epoch length)."""
    return trainer_state["iteration"] // trainer_state["epoch_length"]


def _ok(result: subprocess.CompletedProcess) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    return out


def _network_with_statistics(name: str, seed: int) -> torch.nn.Module:
    """A network as if trained: random weights and non-trivial BatchNorm statistics."""
    from lightseg import create_network

    torch.manual_seed(seed)
    net = create_network(name)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


def mlflow_run(out: Path, experiment: str):
    """(client, the only run) of ``experiment`` in the SQLite store a bundle run wrote under ``out``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'eval' / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BundleSuite:
    """Integration tests of one bundle; subclasses set the attributes below."""

    bundle: str = ""
    network_name: str = ""
    image_size: tuple[int, int] = (32, 32)  # tiny training size, a multiple of the network's divisor
    other_model_file: str = "model_final.pt"  # written next to model.pt
    deployed_params: int = 0  # parameters of the exported model.ts
    extra_overrides: dict = {}  # e.g. {"pretrained": "none"}
    bundles_dir: Path = BUNDLES

    @property
    def ref(self) -> str:
        """What run_bundle takes: the name for bundles/<name>, else the bundle folder's path."""
        return self.bundle if self.bundles_dir == BUNDLES else str(self.bundles_dir / self.bundle)

    @property
    def configs(self) -> Path:
        return self.bundles_dir / self.bundle / "configs"

    def overrides(self, out: Path, data: Path, datalist: Path, **extra) -> dict:
        return tiny_overrides(
            out,
            data,
            datalist,
            bundle=self.bundle,
            bundles_dir=self.bundles_dir,
            **{"image_size": list(self.image_size), **self.extra_overrides, **extra},
        )

    def test_required_files_and_changelog(self):
        for rel in REQUIRED_FILES:
            assert (self.bundles_dir / self.bundle / rel).is_file(), rel
        meta = json.loads((self.configs / "metadata.json").read_text())
        assert meta["version"] in meta["changelog"]
        assert next(iter(meta["changelog"])) == meta["version"]
        assert len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"]) == 2
        assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}

    def test_configs_are_zoo_formatted_and_relative(self):
        names = sorted(p.name for p in self.configs.glob("*.json"))
        assert len(names) == 5, names
        for name in names:
            text = (self.configs / name).read_text()
            assert text == json.dumps(json.loads(text), indent=4) + "\n", name
            assert "/work/" not in text and '"/' not in text, name  # no absolute paths

    @pytest.mark.skipif(not SCHEMA.is_file(), reason="schema copy in ../shared/schemas not present")
    def test_verify_metadata(self):
        from monai.bundle import verify_metadata

        verify_metadata(meta_file=str(self.configs / "metadata.json"), filepath=str(SCHEMA), hash_val=SCHEMA_MD5)

    def test_verify_net_in_out(self):
        from monai.bundle import verify_net_in_out

        verify_net_in_out(
            net_id="network_def",
            meta_file=str(self.configs / "metadata.json"),
            config_file=str(self.configs / "inference.json"),
            n=4,
            any=16,
        )

    def test_properties(self):
        from monai.bundle import ConfigWorkflow

        for config, kind in (("train.json", "train"), ("inference.json", "infer")):
            wf = ConfigWorkflow(
                config_file=str(self.configs / config),
                meta_file=str(self.configs / "metadata.json"),
                logging_file=str(self.configs / "logging.conf"),
                workflow_type=kind,
            )
            wf.initialize()
            assert not wf.check_properties(), wf.check_properties()

    def test_ckpt_export_scripted_equals_eager(self, tmp_path):
        """ckpt_export (TorchScript script, not trace) of a plain state_dict, with the configs embedded."""
        net = _network_with_statistics(self.network_name, seed=0).eval()
        ckpt = tmp_path / "model.pt"
        torch.save(net.state_dict(), ckpt)
        assert set(torch.load(ckpt, weights_only=True)) == set(net.state_dict())
        ts = tmp_path / "model.ts"
        result = subprocess.run(
            [sys.executable, "-m", "monai.bundle", "ckpt_export", "--net_id", "network_def", "--filepath", str(ts),
             "--ckpt_file", str(ckpt), "--meta_file", str(self.configs / "metadata.json"),
             "--config_file", str(self.configs / "inference.json")],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        _ok(result)
        extra = {"metadata.json": "", "inference.json": ""}
        loaded = torch.jit.load(str(ts), _extra_files=extra)
        assert json.loads(extra["metadata.json"])["version"] and json.loads(extra["inference.json"])["network_def"]
        x = torch.randn(2, 3, net.divisor, 2 * net.divisor)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x))

    def test_deployment_export_equals_eager(self, tmp_path):
        """scripts/export_bundle.py: the shipped model.ts (deployment form where the network has one)."""
        from lightseg.export import export_torchscript, is_fusible

        net = _network_with_statistics(self.network_name, seed=1)
        if is_fusible(net):
            from lightseg.networks import set_deep_training_slope

            set_deep_training_slope(net, 1.0)  # a model at the end of deep training
        torch.save(net.state_dict(), tmp_path / "model.pt")
        diff = export_torchscript(self.bundles_dir / self.bundle, tmp_path / "model.ts", ckpt=tmp_path / "model.pt")
        assert diff < 1e-5
        extra = {"metadata.json": "", "inference.json": ""}
        loaded = torch.jit.load(str(tmp_path / "model.ts"), _extra_files=extra)
        assert json.loads(extra["inference.json"])["network_name"] == self.network_name
        params = sum(p.numel() for p in loaded.parameters())
        assert params == self.deployed_params

    @pytest.mark.slow
    def test_train_evaluate_infer_and_mlflow(self, tiny_dataset, tmp_path):
        data, datalist = tiny_dataset
        out = tmp_path / "run"
        base = self.overrides(out, data, datalist)
        log = _ok(run_bundle(self.ref, ("train.json",), run_id="training", epochs=2, **base))
        assert "Epoch[2] Metrics" in log
        state = torch.load(out / "models" / "model.pt", weights_only=True)
        assert "head.weight" in state and not any(k.startswith("module.") for k in state)
        assert (out / "models" / self.other_model_file).is_file()
        ckpt = torch.load(out / "checkpoints" / "checkpoint.pt", weights_only=True)
        assert _epoch(ckpt["trainer"]) == 2 and {"network", "optimizer", "lr_scheduler"} <= set(ckpt)

        # MLflow: the run, its hyperparameters, per-iteration loss, per-epoch metrics and the checkpoint
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{out / 'eval' / 'mlruns.db'}")
        experiment = client.get_experiment_by_name(self.network_name)
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 1
        run = runs[0]
        assert run.data.params["epochs"] == "2" and run.data.params["network"] == self.network_name
        iterations = 2 * 3  # 6 training images, batch 2
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == iterations
        ious = client.get_metric_history(run.info.run_id, "val_mean_iou")
        assert [m.step for m in ious] == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model.pt", "train.json", "metadata.json"} <= artifacts

        # evaluate: every metric, per image and pooled, with per-image CSVs and a summary
        log = _ok(run_bundle(self.ref, ("train.json", "evaluate.json"), run_id="evaluating", **base))
        assert "mean_iou" in log
        summary = (out / "eval" / "metrics.csv").read_text()
        for name in ("iou", "dice", "precision", "recall", "specificity", "accuracy", "aac", "auc"):
            assert f"mean_{name}" in summary and f"pooled_{name}" in summary
        with open(out / "eval" / "mean_dice_raw.csv") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        assert len(rows) == 1 + 3  # header + 3 testing images

        # infer on the testing split: masks at the original size, values 0/255
        _ok(run_bundle(self.ref, ("inference.json",), **{k: v for k, v in base.items() if k != "batch_size"}))
        for entry in json.loads(datalist.read_text())["testing"]:
            image = Image.open(data / entry["image"])
            name = Path(entry["image"]).stem
            mask = np.array(Image.open(out / "eval" / f"{name}_seg.png"))
            assert mask.shape == (image.height, image.width) and set(np.unique(mask)) <= {0, 255}

    @pytest.mark.slow
    def test_resume_after_killed_run(self, tiny_dataset, tmp_path):
        data, datalist = tiny_dataset
        out = tmp_path / "run"
        base = self.overrides(out, data, datalist, batch_size=1, run_name="interrupted")
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", bundle_config(self.ref, "train.json"),
               "--logging_file", str(self.configs / "logging.conf"), "--epochs", "200"]  # fmt: skip
        for k, v in base.items():
            cmd += [f"--{k}", _cli(v)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpt = out / "checkpoints" / "checkpoint.pt"
        deadline = time.time() + 300
        while time.time() < deadline and not (
            ckpt.is_file() and _epoch(torch.load(ckpt, weights_only=True)["trainer"]) >= 2
        ):
            time.sleep(0.2)
        time.sleep(0.3)  # into the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        killed_at = _epoch(torch.load(ckpt, weights_only=True)["trainer"])
        assert 2 <= killed_at < 200

        target = killed_at + 2
        log = _ok(run_bundle(self.ref, ("train.json",), epochs=target, resume=True, **base))
        assert f"resumed from {ckpt} at epoch {killed_at}" in log
        assert "Epoch[1] Metrics" not in log and f"Epoch[{target}] Metrics" in log
        final = torch.load(ckpt, weights_only=True)
        assert _epoch(final["trainer"]) == target
        assert final["optimizer"]["state"]  # Adam moments carried over
        assert final["trainer"]["best_model_epoch"] >= 1

        # MLflow: the resumed run continues the killed one (same run name): one run with every epoch
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{out / 'eval' / 'mlruns.db'}")
        runs = client.search_runs([client.get_experiment_by_name(self.network_name).experiment_id])
        assert len(runs) == 1 and runs[0].info.run_name == "interrupted"
        assert runs[0].info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_mean_iou")]
        assert steps[-2:] == [killed_at + 1, killed_at + 2] and steps[0] == 1

    @pytest.mark.slow
    def test_torchrun_two_cpu_processes(self, tiny_dataset, tmp_path):
        data, datalist = tiny_dataset
        out = tmp_path / "ddp"
        configs = bundle_config(self.ref, "train.json", "multi_gpu_train.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
               "-m", "monai.bundle", "run", "--config_file", configs,
               "--logging_file", str(self.configs / "logging.conf"), "--epochs", "2"]  # fmt: skip
        for k, v in self.overrides(out, data, datalist).items():
            cmd += [f"--{k}", _cli(v)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
        log = _ok(result)
        assert "Epoch[2] Metrics" in log
        state = torch.load(out / "models" / "model.pt", weights_only=True)
        assert not any(k.startswith("module.") for k in state)

    @pytest.mark.slow
    def test_bad_input_stops_before_training(self, tiny_dataset, tmp_path):
        data, datalist = tiny_dataset
        content = json.loads(datalist.read_text())
        content["training"][1]["label"] = "masks/missing.png"
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        result = run_bundle(self.ref, ("train.json",), epochs=1, **self.overrides(tmp_path / "run", data, bad))
        assert result.returncode != 0
        out = result.stdout + result.stderr
        assert "masks/missing.png does not exist" in out and "[training][1]" in out
        assert "Epoch[1]" not in out

    @pytest.mark.slow
    def test_inference_keeps_size_and_orientation_for_every_format(self, tmp_path):
        """A fixed 1x1 convolution marks bright pixels; the written masks must put the asymmetric bright block
        exactly where it is in each input (PNG gray/RGBA, JPEG, TIFF, BMP, 2D NIfTI, single-frame DICOM)."""
        h, w = 45, 70
        a = np.full((h, w), 20, np.uint8)
        a[5:15, 44:64] = 235  # top-right block
        inputs = tmp_path / "in"
        inputs.mkdir()
        Image.fromarray(a).save(inputs / "gray.png")
        Image.fromarray(np.stack([a, a, a, np.full_like(a, 255)], -1)).save(inputs / "rgba.png")
        Image.fromarray(np.stack([a] * 3, -1)).save(inputs / "photo.jpg", quality=98)
        Image.fromarray(np.stack([a] * 3, -1)).save(inputs / "scan.tif")
        Image.fromarray(np.stack([a] * 3, -1)).save(inputs / "bitmap.bmp")
        nib.save(nib.Nifti1Image(a.T.astype(np.float32), np.diag([0.5, 0.7, 1, 1])), inputs / "slice.nii.gz")
        write_dicom(inputs / "frame.dcm", a.astype(np.uint16) * 16)

        net_def = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 1, "kernel_size": 1}
        models = tmp_path / "models"
        models.mkdir()
        torch.save({"weight": torch.ones(1, 3, 1, 1), "bias": torch.zeros(1)}, models / "model.pt")
        out = tmp_path / "out"
        log = _ok(
            run_bundle(
                self.ref,
                ("inference.json",),
                bundle_root=str(self.bundles_dir / self.bundle),
                input=str(inputs),
                ckpt_dir=str(models),
                output_dir=str(out),
                image_size=[64, 64],
                network_def={"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 1, "kernel_size": 1},
            )
        )
        assert "Iteration: [7/7]" in log  # the folder's progress bar
        expected = np.zeros((h, w), bool)
        expected[5:15, 44:64] = True
        for stem in ("gray", "rgba", "photo", "scan", "bitmap", "slice", "frame"):
            mask = np.array(Image.open(out / f"{stem}_seg.png")) > 0
            assert mask.shape == (h, w), stem
            # bilinear resizing moves the block edge by at most one pixel
            assert (mask ^ expected).sum() <= 2 * (10 + 20) + 4, stem
            ys, xs = np.nonzero(mask)
            assert 4 <= ys.min() <= 6 and 13 <= ys.max() <= 15 and 43 <= xs.min() <= 45 and 62 <= xs.max() <= 64, stem

        # NIfTI in, NIfTI out: same grid, spacing and orientation as the input
        nifti_only = tmp_path / "nifti_in"
        nifti_only.mkdir()
        (inputs / "slice.nii.gz").rename(nifti_only / "slice.nii.gz")
        log = _ok(
            run_bundle(
                self.ref, ("inference.json",), bundle_root=str(self.bundles_dir / self.bundle), input=str(nifti_only),
                ckpt_dir=str(models), output_dir=str(tmp_path / "nifti_out"), image_size=[64, 64],
                output_ext=".nii.gz", output_scale=None, network_def=net_def, progress_bar=False,
            )
        )  # fmt: skip
        assert "Iteration: [" not in log
        written = nib.load(tmp_path / "nifti_out" / "slice_seg.nii.gz")
        assert written.shape == (w, h) and written.header.get_zooms() == pytest.approx((0.5, 0.7))
        np.testing.assert_allclose(written.affine, nib.load(nifti_only / "slice.nii.gz").affine, atol=1e-6)
        data = np.asarray(written.dataobj)
        assert set(np.unique(data)) == {0, 1} and ((data.T > 0) ^ expected).sum() <= 2 * (10 + 20) + 4

    @pytest.mark.slow
    def test_tracking_to_an_mlflow_server(self, tiny_dataset, tmp_path):
        import shutil
        import urllib.request

        data, datalist = tiny_dataset
        port = _free_port()
        mlflow_cli = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
        server = subprocess.Popen(
            [mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", str(tmp_path / "server_artifacts")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        uri = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    if time.time() > deadline or server.poll() is not None:
                        raise RuntimeError("mlflow server did not start") from None
                    time.sleep(0.5)
            overrides = self.overrides(tmp_path / "run", data, datalist, tracking_uri=uri, run_name="server-run")
            _ok(run_bundle(self.ref, ("train.json",), run_id="training", epochs=1, **overrides))
            assert not (tmp_path / "run" / "eval" / "mlruns.db").exists()

            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            run = client.search_runs([client.get_experiment_by_name(self.network_name).experiment_id])[0]
            assert run.info.run_name == "server-run" and run.info.status == "FINISHED"
            assert client.get_metric_history(run.info.run_id, "val_mean_iou")
            assert "model.pt" in {a.path for a in client.list_artifacts(run.info.run_id)}
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    @pytest.mark.slow
    @pytest.mark.parametrize("variant", ["gray", "3class"])
    def test_gray_and_three_class_runs(self, variant, tmp_path):
        """--in_channels 1 and --out_channels 3 end to end: train, evaluate, infer, export, zoo check."""
        from monai.bundle import verify_net_in_out

        from lightseg.bundles import network_metadata
        from lightseg.data.datalist import make_demo_datalist, write_json
        from lightseg.export import export_torchscript

        data = tmp_path / "data"
        if variant == "gray":
            datalist = make_tiny_dataset(data)  # RGB and grayscale mixed: RGB is converted to luminance
            settings = {"in_channels": 1, "out_channels": 1}
        else:
            datalist = data / "datalist.json"
            write_json(make_demo_datalist(per_modality=6, classes=3, min_size=40, max_size=90), datalist)
            settings = {"in_channels": 3, "out_channels": 3, "labels": ["background", "lesion", "nodule"]}
        out = tmp_path / "run"
        base = self.overrides(out, data, datalist, **settings)
        log = _ok(run_bundle(self.ref, ("train.json",), run_id="training", epochs=2, **base))
        assert "Epoch[2] Metrics" in log
        state = torch.load(out / "models" / "model.pt", weights_only=True)

        _ok(run_bundle(self.ref, ("train.json", "evaluate.json"), run_id="evaluating", **base))
        summary = (out / "eval" / "metrics.csv").read_text()
        assert "mean_dice" in summary and "pooled_iou" in summary
        if variant == "3class":
            for label in ("lesion", "nodule"):
                assert f"mean_dice_{label}" in summary and f"mean_iou_{label}" in summary
            with open(out / "eval" / "mean_dice_raw.csv") as f:
                header = next(csv.reader(f))
            assert header[1:3] == ["class0", "class1"], header  # one column per foreground class

        _ok(run_bundle(self.ref, ("inference.json",), **{k: v for k, v in base.items() if k != "batch_size"}))
        allowed = {0, 1, 2} if variant == "3class" else {0, 255}
        for entry in json.loads(datalist.read_text())["testing"]:
            image = Image.open(data / entry["image"])
            mask = np.array(Image.open(out / "eval" / f"{Path(entry['image']).stem}_seg.png"))
            assert mask.shape == (image.height, image.width) and set(np.unique(mask)) <= allowed

        # export with the trained settings embedded; metadata describes the trained channels and labels
        exported = {k: v for k, v in settings.items() if k != "labels"}
        diff = export_torchscript(
            self.bundles_dir / self.bundle, tmp_path / "model.ts", ckpt=out / "models" / "model.pt",
            overrides={**exported, **({"labels": settings["labels"]} if "labels" in settings else {})},
        )  # fmt: skip
        assert diff < 1e-4
        extra = {"metadata.json": "", "inference.json": ""}
        torch.jit.load(str(tmp_path / "model.ts"), _extra_files=extra)
        embedded, meta = json.loads(extra["inference.json"]), json.loads(extra["metadata.json"])
        assert (
            embedded["in_channels"] == settings["in_channels"] and embedded["out_channels"] == settings["out_channels"]
        )
        fmt = meta["network_data_format"]
        assert fmt["inputs"]["image"]["num_channels"] == settings["in_channels"]
        assert fmt["outputs"]["pred"]["num_channels"] == settings["out_channels"]
        if variant == "3class":
            assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion", "2": "nodule"}

        # zoo check with the trained settings' metadata
        meta_file = tmp_path / "metadata.json"
        meta_file.write_text(json.dumps(network_metadata(self.configs / "metadata.json", **settings)))
        verify_net_in_out(
            net_id="network_def", meta_file=str(meta_file), config_file=str(self.configs / "inference.json"),
            n=2, any=16, in_channels=settings["in_channels"], out_channels=settings["out_channels"],
        )  # fmt: skip
        assert state  # the trained weights were a plain state_dict

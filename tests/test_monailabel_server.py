"""The REAL MONAI Label 0.8.5 server (stock monaibundle app) serving, fine-tuning and re-serving all four bundles
(issue 14, ../shared/BUNDLE_CONTRACT.md section 5).

MONAI Label lives in its own environment (``scripts/label_env.sh``, built once and cached by a hash of its
requirement files, about 2 minutes cold). The server is started with ``python -m lightseg.label serve`` on a free
port of 127.0.0.1 and stopped by PID. Everything goes through real HTTP calls:

- ``/info``: every bundle is a 2D segmentation model with the label ``lesion`` and has a trainer;
- ``/infer`` on an RGB JPEG, a grayscale PNG and a 2D NIfTI: a mask of the input's size, values {0, 1}, a PNG
  for the JPEG input; a probe bundle (a bundle's configs with a 1x1 convolution whose right answer is known) on
  an image with an off-centre block proves the orientation (a flip or transpose would not match);
- ``PUT /datastore/label`` for four images, then ``POST /train/<bundle>`` (one epoch, the asynchronous path, as
  the UI does); then ``models/model.pt`` changed, the network training started from equals the previous
  ``model.pt`` (recorded by an extra STARTED handler in the test's copy of train.json, which runs after the
  ``CheckpointLoader`` MONAI Label prepends), and the next ``/infer`` gives exactly the masks the new weights give
  when the bundle's own inference.json is run here.

Weights: untrained networks built from each bundle's own ``network_def`` with a seed different from the bundle's
(``set_determinism(seed=0)``), so that "started from random weights" cannot pass for "started from model.pt";
LV-UNet's blocks get the deep-training slope 1 (finished deep training, as a trained model.pt has) so that it is
served fused. The test's bundle copies train at 128x128 (LV-UNet's minimum), batch 2, without MLflow.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import BUNDLE_NAMES, BUNDLES, ROOT

logger = logging.getLogger(__name__)

NAMES = tuple(BUNDLE_NAMES)  # every folder in bundles/
PROBE = "probe"
IMAGE_SIZE = [128, 128]
H, W = 45, 70
BLOCK = (slice(5, 15), slice(44, 64))  # rows, columns: off-centre, so flips and transposes fail
STARTED_FROM = "started_from.pt"

pytestmark = pytest.mark.slow
requests = pytest.importorskip("requests")


def _label_python() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "label_env.sh"), "--python"], capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, f"scripts/label_env.sh failed:\n{done.stderr[-4000:]}"
    return done.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seeded_weights(name: str, config: dict, seed: int) -> dict:
    from monai.bundle import ConfigParser

    from lightseg.networks import set_deep_training_slope

    torch.manual_seed(seed)
    parser = ConfigParser(copy.deepcopy(config))
    net = parser.get_parsed_content("network_def")
    if name == "lvunet":
        set_deep_training_slope(net, 1.0)
    return net.state_dict()


def _seeded_module(name: str, bundle_dir: Path) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    return parser.get_parsed_content("network_def")


def _write(path: Path, config: dict) -> None:
    path.write_text(json.dumps(config, indent=4) + "\n")


def _make_bundles(root: Path, noise: Path) -> Path:
    """Copies of the four bundles (small, fast, instrumented) and the probe bundle, with weights."""
    out = root / "bundles"
    for name in NAMES:
        shutil.copytree(
            BUNDLES / name, out / name, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval", "checkpoints")
        )
        configs = out / name / "configs"
        train = json.loads((configs / "train.json").read_text())
        train.update(image_size=IMAGE_SIZE, batch_size=2, num_workers=0, use_mlflow=False, progress_bar=False)
        # record what the network holds when training starts, after MONAI Label's CheckpointLoader has run
        train["run"] = [
            "$@train#trainer.add_event_handler(ignite.engine.Events.STARTED, lambda engine: torch.save("
            f"@network.state_dict(), @bundle_root + '/{STARTED_FROM}'))",
            *train["run"],
        ]
        _write(configs / "train.json", train)
        infer = json.loads((configs / "inference.json").read_text())
        infer["image_size"] = IMAGE_SIZE
        _write(configs / "inference.json", infer)
        (out / name / "models").mkdir(exist_ok=True)
        weights = _centre_head_bias(out / name, _seeded_weights(name, train, seed=1234), noise)
        torch.save(weights, out / name / "models" / "model.pt")

    # the probe: cmunext_xxs's configs with a 1x1 convolution summing the normalized channels (> 0 on bright pixels)
    shutil.copytree(out / "cmunext_xxs", out / PROBE)
    configs = out / PROBE / "configs"
    net_def = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 1, "kernel_size": 1}
    for file in ("inference.json", "train.json"):
        config = json.loads((configs / file).read_text())
        config["network_def"] = net_def
        _write(configs / file, config)
    probe = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        probe.weight.fill_(1.0)
        probe.bias.zero_()
    torch.save(probe.state_dict(), out / PROBE / "models" / "model.pt")
    return out


def _block_image() -> np.ndarray:
    a = np.full((H, W), 20, np.uint8)
    a[BLOCK] = 235
    return a


def _make_inputs(root: Path) -> dict[str, Path]:
    import nibabel as nib

    root.mkdir(parents=True, exist_ok=True)
    gray = _block_image()
    inputs = {"jpg": root / "rgb.jpg", "png": root / "gray.png", "nii": root / "slice.nii.gz"}
    Image.fromarray(np.stack([gray] * 3, -1)).save(inputs["jpg"], quality=95)
    Image.fromarray(gray).save(inputs["png"])
    # NIfTI: axis 0 is x (the PNG's columns), axis 1 is y (rows), as MONAI reads both formats
    nib.save(nib.Nifti1Image(gray.T.astype(np.float32)[..., None], np.eye(4)), inputs["nii"])
    rng = np.random.default_rng(0)
    inputs["noise"] = root / "noise.png"
    Image.fromarray(rng.integers(0, 256, (96, 112, 3), dtype=np.uint8)).save(inputs["noise"])
    return inputs


def _make_studies(studies: Path) -> list[tuple[str, np.ndarray]]:
    """Four RGB images in the datastore, with their disk masks (returned, uploaded later as labels)."""
    studies.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = []
    yy, xx = np.mgrid[:96, :128]
    for i in range(4):
        cy, cx, r = rng.integers(30, 66), rng.integers(30, 98), rng.integers(12, 25)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8) + mask[..., None] * 150
        Image.fromarray(image.astype(np.uint8)).save(studies / f"case{i}.png")
        out.append((f"case{i}", mask))
    return out


def _read_mask(content: bytes, kind: str, tmp: Path) -> np.ndarray:
    """The returned mask as (rows, columns) of the input."""
    if kind == "nii":
        import nibabel as nib

        path = tmp / "mask.nii.gz"
        path.write_bytes(content)
        return np.asarray(nib.load(path).dataobj).squeeze().T
    return np.asarray(Image.open(io.BytesIO(content)))


class Server:
    def __init__(self, python: str, bundles_dir: Path, app: Path, studies: Path, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        names = ",".join((*NAMES, PROBE))
        cmd = [python, "-m", "lightseg.label", "serve", "--bundles", names, "--bundles-dir", str(bundles_dir)]
        cmd += ["--app", str(app), "--studies", str(studies), "--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
        env.pop("VIRTUAL_ENV", None)
        self._log_file = open(log, "w")  # closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=app.parent)

    def tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def wait_ready(self, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"the server exited ({self.proc.returncode}):\n{self.tail()}"
            try:
                r = requests.get(f"{self.url}/info/", timeout=5)
                if r.status_code == 200:
                    return r.json()
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise AssertionError(f"the server did not answer /info within {timeout} s:\n{self.tail()}")

    def infer(self, model: str, path: Path) -> tuple[requests.Response, float]:
        start = time.perf_counter()
        with open(path, "rb") as f:
            r = requests.post(f"{self.url}/infer/{model}", params={"output": "image"}, files={"file": f}, timeout=300)
        elapsed = time.perf_counter() - start
        assert r.status_code == 200, f"/infer/{model} on {path.name}: HTTP {r.status_code} {r.text[:500]}"
        return r, elapsed

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log_file.close()


def _run_bundle(bundle_dir: Path, weights: dict, path: Path, post: bool = True):
    """What the bundle's own inference.json gives for ``path`` with ``weights``, run here the way MONAI Label runs
    it (LoadImaged(image_only=False), SaveImaged dropped, ``network_def`` + ``load_state_dict``): the mask as
    (rows, columns), or the logits when ``post`` is false."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    parser["device"] = "cpu"
    pre = parser.get_parsed_content("preprocessing")
    for t in pre.transforms:
        if type(t).__name__ == "LoadImaged":
            t._loader.image_only = False
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(weights, strict=False)
    net.eval()
    data = pre({"image": str(path)})
    with torch.no_grad():
        data["pred"] = net(data["image"][None])[0]
    if not post:
        return data["pred"]
    chain = [t for t in parser.get_parsed_content("postprocessing").transforms if type(t).__name__ != "SaveImaged"]
    return np.asarray(Compose(chain)(data)["pred"]).T  # MONAI's (W, H) -> rows, columns


def _reference_mask(bundle_dir: Path, weights: dict, path: Path) -> np.ndarray:
    return _run_bundle(bundle_dir, weights, path)


def _centre_head_bias(bundle_dir: Path, weights: dict, path: Path) -> dict:
    """Shift the output bias so that the median logit on ``path`` is 0: about half the pixels are foreground and
    many lie close to the threshold, so masks are informative and any change of the weights shows in them (an
    untrained network otherwise gives an all-0 or all-1 mask)."""
    key = [k for k, v in weights.items() if k.endswith("bias") and tuple(v.shape) == (1,)][-1]
    logits = _run_bundle(bundle_dir, weights, path, post=False)
    weights = dict(weights)
    weights[key] = weights[key] - float(torch.as_tensor(logits).median())
    return weights


def _mismatch(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a != b).mean())


def _wait_training(server: Server, task_id: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=10)
        if r.status_code == 200:
            status = [t for t in r.json() if t.get("id") == task_id]
            assert status, f"training task {task_id} is not in GET /train/?all=true: {r.text[:500]}"
            if status[0].get("status") in ("DONE", "ERROR", "STOPPED"):
                return status[0]
        time.sleep(2)
    raise AssertionError(f"training did not finish within {timeout} s:\n{server.tail()}")


def test_monailabel_serves_finetunes_and_reserves_all_bundles(tmp_path):
    t0 = time.perf_counter()
    python = _label_python()
    logger.info("MONAI Label environment ready in %.1f s: %s", time.perf_counter() - t0, python)
    inputs = _make_inputs(tmp_path / "inputs")
    bundles_dir = _make_bundles(tmp_path, inputs["noise"])
    studies = _make_studies(tmp_path / "studies")
    app = tmp_path / "app"
    server = Server(python, bundles_dir, app, tmp_path / "studies", tmp_path / "server.log")
    timings: dict[str, list[float]] = {}
    try:
        info = server.wait_ready()
        logger.info("server up after %.1f s", time.perf_counter() - t0)

        # /info: 2D segmentation with the bundle's label, and a trainer
        for name in (*NAMES, PROBE):
            model = info["models"].get(name)
            assert model is not None, f"{name} not in /info models: {sorted(info['models'])}\n{server.tail()}"
            assert model["type"] == "segmentation" and model["dimension"] == 2, model
            assert model["labels"] == {"lesion": 1}, model["labels"]
            assert model["config"]["model_filename"] == ["model.pt"], "only loadable weights may be offered"
            assert name in info["trainers"], sorted(info["trainers"])

        # the probe: exact masks, in the input's orientation, for the three formats
        expected = np.zeros((H, W), np.uint8)
        expected[BLOCK] = 1
        for kind in ("jpg", "png", "nii"):
            r, _ = server.infer(PROBE, inputs[kind])
            mask = _read_mask(r.content, kind, tmp_path)
            assert mask.shape == (H, W), (kind, mask.shape)
            np.testing.assert_array_equal(mask, expected, err_msg=f"probe mask for {kind} is not the block")
            assert not np.array_equal(mask[::-1], expected) and not np.array_equal(mask[:, ::-1], expected)
        assert r.content[:4] != b"\x89PNG"  # NIfTI in, NIfTI out

        # every bundle: size, values, PNG for JPEG, and pixel-identical to the bundle run here
        for name in NAMES:
            timings[name] = []
            weights = torch.load(bundles_dir / name / "models" / "model.pt", weights_only=True)
            for kind in ("jpg", "png", "nii"):
                r, elapsed = server.infer(name, inputs[kind])
                timings[name].append(elapsed)
                mask = _read_mask(r.content, kind, tmp_path)
                assert mask.shape == (H, W), (name, kind, mask.shape)
                assert set(np.unique(mask)) <= {0, 1}, (name, kind, np.unique(mask))
                if kind == "jpg":
                    assert r.content[:8] == b"\x89PNG\r\n\x1a\n", f"{name}: JPEG input did not give a PNG mask"
                    assert r.headers["content-disposition"].endswith('.png"'), r.headers["content-disposition"]
                reference = _reference_mask(bundles_dir / name, weights, inputs[kind])
                # pixel-identical up to logits within float error of the threshold (numpy 1.26 there, 2.x here)
                assert _mismatch(mask, reference) <= 0.002, (name, kind, _mismatch(mask, reference))
        log = server.tail(10**7)
        assert "LV-UNet fused on load: 934,545 parameters -> 513,585" in log, "LV-UNet was not served fused"

        # labels for the four datastore images
        for image_id, mask in studies:
            buffer = io.BytesIO()
            Image.fromarray(mask * 255).save(buffer, format="PNG")  # 0/255, as viewers save them
            r = requests.put(
                f"{server.url}/datastore/label",
                params={"image": image_id, "tag": "final"},
                files={"label": (f"{image_id}.png", buffer.getvalue(), "image/png")},
                timeout=60,
            )
            assert r.status_code == 200, f"PUT /datastore/label {image_id}: {r.status_code} {r.text[:300]}"
        listing = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()
        labelled = [i for i, o in listing["objects"].items() if "final" in o.get("labels", {})]
        assert sorted(labelled) == [i for i, _ in studies], listing

        # fine-tune each bundle for one epoch from its model.pt, then re-serve
        for name in NAMES:
            served = app / "model" / name
            before = torch.load(served / "models" / "model.pt", weights_only=True)
            old_mask = _reference_mask(served, before, inputs["noise"])
            request = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "pretrained": True, "multi_gpu": False}
            r = requests.post(f"{server.url}/train/{name}", json=request, timeout=60)
            assert r.status_code == 200, f"/train/{name}: {r.status_code} {r.text[:500]}"
            t_train = time.perf_counter()
            status = _wait_training(server, r.json()["id"])
            logger.info("%s: /train (1 epoch) took %.1f s", name, time.perf_counter() - t_train)
            assert status["status"] == "DONE", f"{name} training: {status}\n{server.tail()}"

            after = torch.load(served / "models" / "model.pt", weights_only=True)
            assert set(after) == set(before), f"{name}: model.pt keys changed"
            changed = [k for k in before if not torch.equal(before[k], after[k])]
            assert changed, f"{name}: model.pt did not change after /train"

            # MONAI Label offers every models/*.pt as a model file: the resume checkpoint must be elsewhere (in the
            # training's run folder, whose model was promoted to models/ when it finished)
            offered = sorted(p.name for p in (served / "models").glob("*.pt"))
            assert "checkpoint.pt" not in offered and list((served / "runs").glob("*/checkpoints/checkpoint.pt")), (
                offered
            )
            assert (served / "models" / "settings.json").is_file()
            for extra in offered:  # whatever is offered loads into network_def completely
                missing = _seeded_module(name, served).load_state_dict(
                    torch.load(served / "models" / extra, weights_only=True), strict=False
                )
                assert not missing.missing_keys and not missing.unexpected_keys, (name, extra, missing)

            started = torch.load(served / STARTED_FROM, weights_only=True)
            if name == "litenext":  # the SeRP wrapper: the network under model.*, the EMA target from its encoder
                for k, v in before.items():
                    assert torch.equal(started[f"model.{k}"], v), (
                        f"litenext: training did not start from model.pt ({k})"
                    )
                for k, v in started.items():
                    if k.startswith("target_encoder."):
                        assert torch.equal(v, before["encoder." + k[len("target_encoder.") :]]), k
            else:
                for k, v in before.items():
                    assert torch.equal(started[k], v), f"{name}: training did not start from model.pt ({k})"

            r, elapsed = server.infer(name, inputs["noise"])
            mask = _read_mask(r.content, "png", tmp_path)
            new_mask = _reference_mask(served, after, inputs["noise"])
            assert _mismatch(new_mask, old_mask) > 0.01, f"{name}: one epoch hardly changed the mask: inconclusive"
            assert _mismatch(mask, new_mask) <= 0.002, f"{name}: /infer after /train is not the new weights' mask"
            assert _mismatch(mask, old_mask) > 0.01, f"{name}: /infer after /train still uses the old weights"
        log = server.tail(10**7)
        assert "PRETRAINED WEIGHTS NOT LOADED" not in log and "downloading" not in log.lower()
    finally:
        server.stop()
        for name, values in timings.items():
            logger.info("%s: /infer %s s", name, ", ".join(f"{v:.2f}" for v in values))
        logger.info("total %.1f s", time.perf_counter() - t0)
    assert server.proc.returncode is not None

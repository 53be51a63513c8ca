"""Shared fixtures: repository paths, tiny on-disk datasets, and a runner for bundle configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundles"
SHARED = ROOT.parent / "shared"
SCHEMA = SHARED / "schemas" / "meta_schema_20220324.json"
SCHEMA_MD5 = "662135097106b71067cd1fc657f8720f"
# Every bundle folder is tested: a new bundle is covered without editing a test.
BUNDLE_NAMES = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


def write_case(root: Path, name: str, h: int, w: int, rgb: bool, rng: np.random.Generator) -> dict:
    """An image with a bright ellipse on a dark noisy background, and its 0/255 mask."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    mask = ((yy - cy) / (0.25 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2 <= 1
    base = rng.normal(60, 10, (h, w)) + 120 * mask
    img = np.clip(np.stack([base, base * 0.9, base * 0.8], -1) if rgb else base, 0, 255).astype(np.uint8)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / "images" / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    return {"image": f"images/{name}.png", "label": f"masks/{name}.png"}


def make_tiny_dataset(root: Path, n_train: int = 6, n_val: int = 3, n_test: int = 3, seed: int = 0) -> Path:
    """A small mixed RGB/grayscale dataset of varied non-square sizes, with a datalist; returns the datalist."""
    rng = np.random.default_rng(seed)
    sections = {"training": n_train, "validation": n_val, "testing": n_test}
    datalist: dict = {"description": "tiny test dataset"}
    i = 0
    for section, n in sections.items():
        datalist[section] = []
        for _ in range(n):
            h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            datalist[section].append(write_case(root, f"case{i:02d}", h, w, rgb=bool(i % 2), rng=rng))
            i += 1
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist, indent=4) + "\n")
    return path


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """(dataset_dir, datalist path) of a freshly written tiny dataset."""
    data = tmp_path / "data"
    return data, make_tiny_dataset(data)


def bundle_dir(bundle: str | Path) -> Path:
    """A bundle's folder: ``bundles/<name>``, or the path itself when given a path (a bundle rendered elsewhere)."""
    path = Path(bundle)
    return path if path.is_absolute() else BUNDLES / bundle


def bundle_config(bundle: str | Path, *names: str) -> str:
    files = [str(bundle_dir(bundle) / "configs" / n) for n in names]
    return files[0] if len(files) == 1 else json.dumps(files)


def _cli(value) -> str:
    """A command-line value for ``python -m monai.bundle run`` (fire parses Python literals)."""
    if isinstance(value, str):
        return value
    return repr(value) if value is None or isinstance(value, bool) else json.dumps(value)


def run_bundle(
    bundle: str,
    configs: tuple[str, ...],
    cwd: Path = ROOT,
    timeout: int = 900,
    run_id: str | None = None,
    env: dict | None = None,
    **overrides,
):
    """Run ``python -m monai.bundle run [run_id]`` in a subprocess; returns the CompletedProcess (never raises)."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", *([run_id] if run_id else [])]
    cmd += ["--config_file", bundle_config(bundle, *configs)]
    cmd += ["--meta_file", str(bundle_dir(bundle) / "configs" / "metadata.json")]
    cmd += ["--logging_file", str(bundle_dir(bundle) / "configs" / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", _cli(value)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def tiny_overrides(
    out: Path, data: Path, datalist: Path, bundle: str = "cmunext_xxs", bundles_dir: Path = BUNDLES, **extra
) -> dict:
    """Overrides that make a bundle train in seconds on the tiny dataset, writing under ``out``."""
    return {
        "bundle_root": str(bundles_dir / bundle),
        "runs_dir": str(out / "runs"),
        "ckpt_dir": str(out / "models"),
        "checkpoint_dir": str(out / "checkpoints"),
        "models_dir": str(out / "models"),  # the run writes where the bundle's model would be promoted to
        "output_dir": str(out / "eval"),
        "dataset_dir": str(data),
        "datalist": str(datalist),
        "image_size": [32, 32],
        "batch_size": 2,
        "num_workers": 0,
        "progress_bar": "false",  # as typed on a command line: fire passes the string, configs must cope
        **extra,
    }


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False, help="also run the tests marked slow (as CI does)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow") or config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="slow integration test: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

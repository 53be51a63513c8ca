#!/usr/bin/env python
"""End-to-end MONAI Deploy timings per bundle (file in -> mask file out), as quoted in docs/monaideploy.md.

    python scripts/deploy_timing.py [--repeats 3] [--n_images 10] [--size 384 512]

Run in the main environment: it exports each bundle's network (random weights: the time does not depend on them;
LV-UNet fused) and runs, in the deploy environment of scripts/deploy_env.sh,
  * the CLI once per repeat on one RGB PNG: ``python -m lightseg.deploy image -i one.png -o out -m model.ts``
    (a new process: imports, Holoscan start, model load, inference, PNG written);
  * the CLI once per repeat on one single-frame monochrome DICOM (``dicom``: DICOM SEG + PNG written);
  * the image app once on a folder of ``n_images`` PNGs (seconds per image with the start-up shared).
Reports medians as a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
logger = logging.getLogger("deploy_timing")
BUNDLES = ("cmunext_xxs", "litenext", "lvunet", "mininet")


def _timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n_images", type=int, default=10)
    parser.add_argument("--size", type=int, nargs=2, default=(384, 512), help="rows columns of the inputs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from monai.bundle import ConfigParser
    from tests.deploy_inputs import scene, write_dicom, write_image

    from lightseg.export import export_torchscript
    from lightseg.networks.blocks.vanilla import set_deep_training_slope

    env_dir = subprocess.run(
        ["bash", str(ROOT / "scripts" / "deploy_env.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    python = str(Path(env_dir) / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    h, w = args.size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one, many, dcm = tmp / "one", tmp / "many", tmp / "dcm"
        for d in (one, many, dcm):
            d.mkdir()
        write_image(one / "image.png", scene(h, w, rgb=True))
        for i in range(args.n_images):
            write_image(many / f"image{i:02d}.png", scene(h, w, rgb=True, seed=i))
        write_dicom(dcm / "image.dcm", scene(h, w, rgb=False))
        for bundle in BUNDLES:
            cfg = ConfigParser()
            cfg.read_config(str(ROOT / "bundles" / bundle / "configs" / "inference.json"))
            cfg["bundle_root"] = str(ROOT / "bundles" / bundle)
            torch.manual_seed(0)
            net = cfg.get_parsed_content("network_def")
            set_deep_training_slope(net, 1.0)
            torch.save(net.state_dict(), tmp / f"{bundle}.pt")
            model = tmp / bundle / "model.ts"
            export_torchscript(ROOT / "bundles" / bundle, model, ckpt=tmp / f"{bundle}.pt")
            base = [python, "-m", "lightseg.deploy"]
            png_t = [
                _timed([*base, "image", "-i", str(one), "-o", str(tmp / "o1"), "-m", str(model)], env)
                for _ in range(args.repeats)
            ]
            dcm_t = [
                _timed([*base, "dicom", "-i", str(dcm), "-o", str(tmp / f"o2{r}"), "-m", str(model)], env)
                for r in range(args.repeats)
            ]
            many_t = [
                _timed([*base, "image", "-i", str(many), "-o", str(tmp / "o3"), "-m", str(model)], env) / args.n_images
                for _ in range(args.repeats)
            ]
            assert (tmp / "o1" / "image_seg.png").is_file() and any((tmp / "o20").glob("*.dcm"))
            row = [statistics.median(t) for t in (png_t, dcm_t, many_t)]
            logger.info("%s: %s", bundle, ", ".join(f"{x:.2f}" for x in row))
            rows.append((bundle, *row))
    lines = [
        f"| bundle | PNG {h}x{w} -> PNG mask, one process (s) | DICOM {h}x{w} -> SEG + PNG, one process (s) | "
        f"{args.n_images} PNGs in one run (s per image) |",
        "|---|---|---|---|",
        *(f"| {bundle} | {a:.2f} | {b:.2f} | {c:.2f} |" for bundle, a, b, c in rows),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

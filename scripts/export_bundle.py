#!/usr/bin/env python
"""Export a trained bundle to TorchScript (models/model.ts, used by MONAI Label and MONAI Deploy) and/or ONNX.

    python scripts/export_bundle.py bundles/cmunext_xxs                       # models/model.ts
    python scripts/export_bundle.py bundles/cmunext_xxs --format onnx         # models/model.onnx
    python scripts/export_bundle.py bundles/cmunext_xxs --ckpt models/model_final.pt --format all
    python scripts/export_bundle.py bundles/mininet --network_name mininet_paper_counts   # a trained variant

Each export is compared with the eager model before the command succeeds.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lightseg.export import export_onnx, export_torchscript, load_bundle_network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle folder, e.g. bundles/cmunext_xxs")
    parser.add_argument("--ckpt", default=None, help="state_dict to export (default: <bundle>/models/model.pt)")
    parser.add_argument("--format", choices=("torchscript", "onnx", "all"), default="torchscript")
    parser.add_argument("--out_dir", default=None, help="default: <bundle>/models")
    parser.add_argument("--network_name", default=None, help="the --network_name the model was trained with")
    parser.add_argument("--in_channels", type=int, default=None, help="the --in_channels it was trained with")
    parser.add_argument("--out_channels", type=int, default=None, help="the --out_channels it was trained with")
    parser.add_argument("--image_size", type=int, nargs=2, default=(256, 256), help="example size for ONNX")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    bundle = Path(args.bundle)
    overrides = {k: getattr(args, k) for k in ("network_name", "in_channels", "out_channels")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    out_dir = Path(args.out_dir) if args.out_dir else bundle / "models"
    if args.format in ("torchscript", "all"):
        export_torchscript(bundle, out_dir / "model.ts", ckpt=args.ckpt, overrides=overrides)
    if args.format in ("onnx", "all"):
        net = load_bundle_network(bundle, args.ckpt, overrides=overrides)
        export_onnx(net, out_dir / "model.onnx", example_shape=(1, net.in_channels, *args.image_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m lightseg.export <bundle_dir> --format torchscript|onnx|onnx-int8|torch-export``.

    python -m lightseg.export bundles/cmunext_xxs                          # models/model.ts
    python -m lightseg.export bundles/cmunext_xxs --format onnx            # models/model.onnx
    python -m lightseg.export bundles/cmunext_xxs --format onnx-int8 --calib_split training --calib_count 32
    python -m lightseg.export bundles/lvunet --format torch-export         # models/model.pt2 (fused form)
    python -m lightseg.export bundles/mininet --network_name mininet_paper_counts   # a trained variant

Each export is compared with the eager model before it is written (nothing is written when the check fails);
a JSON with the check's result, the checkpoint's SHA-256 and the bundle metadata is written beside the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from lightseg.export import DEFAULT_FILES, FORMATS, INT8_MIN_AGREEMENT, export_bundle


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lightseg.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle folder, e.g. bundles/cmunext_xxs")
    parser.add_argument("--format", choices=(*FORMATS, "all"), default="torchscript")
    parser.add_argument("--ckpt", default=None, help="state_dict to export (default: <bundle>/models/model.pt)")
    parser.add_argument(
        "--out", default=None, help=f"output file (default: <bundle>/models/ + {', '.join(DEFAULT_FILES.values())})"
    )
    parser.add_argument("--out_dir", default=None, help="folder for the default file names (default: <bundle>/models)")
    parser.add_argument("--calib_split", default="training", help="datalist split the INT8 calibration reads")
    parser.add_argument("--calib_count", type=int, default=32, help="number of INT8 calibration images")
    parser.add_argument("--min_agreement", type=float, default=INT8_MIN_AGREEMENT, help="INT8 Dice agreement gate")
    parser.add_argument("--datalist", default=None, help="datalist for INT8 calibration (default: the bundle's)")
    parser.add_argument("--dataset_dir", default=None, help="its image folder (default: the bundle's)")
    parser.add_argument("--image_size", type=int, nargs=2, default=None, help="inference size (default: the config's)")
    parser.add_argument("--network_name", default=None, help="the --network_name the model was trained with")
    parser.add_argument("--in_channels", type=int, default=None, help="the --in_channels it was trained with")
    parser.add_argument("--out_channels", type=int, default=None, help="the --out_channels it was trained with")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pathlib import Path

    formats = FORMATS if args.format == "all" else (args.format,)
    if args.out and len(formats) > 1:
        raise SystemExit("--out names one file: use --out_dir with --format all.")
    overrides = {k: getattr(args, k) for k in ("network_name", "in_channels", "out_channels")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.bundle) / "models"
    for fmt in formats:
        out = Path(args.out) if args.out else out_dir / DEFAULT_FILES[fmt]
        report = export_bundle(
            args.bundle, fmt, ckpt=args.ckpt, out=out, calib_split=args.calib_split, calib_count=args.calib_count,
            overrides=overrides, image_size=args.image_size, min_agreement=args.min_agreement,
            datalist=args.datalist, dataset_dir=args.dataset_dir,
        )  # fmt: skip
        summary = {k: report[k] for k in ("format", "file", "max_abs_diff", "agreement") if k in report}
        print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

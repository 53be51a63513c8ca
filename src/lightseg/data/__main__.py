"""Command line for lightseg's data tools.

    python -m lightseg.data demo  [--datalist data_lists/demo.json] [--out data/demo]
    python -m lightseg.data from-folders --images my/images --masks my/masks --out my/datalist.json
    python -m lightseg.data check --datalist my.json [--dataset_dir /data/mine] [--mask_threshold 127]
    python -m lightseg.data split --ids ids.txt --ratios 0.7 0.15 0.15 --seed 0
    python -m lightseg.data prepare kvasir_seg --raw /data/Kvasir-SEG --out data/kvasir_seg [--datalist data_lists/kvasir_seg.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lightseg.data.datalist import (
    SECTIONS,
    ensure_demo_data,
    load_datalist,
    make_demo_datalist,
    split_ids,
    validate_entries,
    write_json,
)
from lightseg.data.io import DatalistError

logger = logging.getLogger("lightseg.data")


def _demo(args: argparse.Namespace) -> int:
    datalist = Path(args.datalist)
    if args.regenerate_datalist or not datalist.is_file():
        write_json(make_demo_datalist(per_modality=args.per_modality, seed=args.seed), datalist)
        logger.info("wrote %s", datalist)
    written = ensure_demo_data(datalist, args.out)
    logger.info("demo data in %s is %s", args.out, "generated" if written else "already complete")
    return 0


def _check(args: argparse.Namespace) -> int:
    content = json.loads(Path(args.datalist).read_text()) if Path(args.datalist).is_file() else {}
    sections = args.sections or [s for s in SECTIONS if content.get(s)]
    if not sections:
        raise DatalistError(f"datalist {args.datalist} does not exist or has none of the sections {SECTIONS}.")
    if args.dataset_dir is None:
        from lightseg.bundles import datalist_value, default_dataset_dir

        recorded = datalist_value(args.datalist, "dataset_dir")
        args.dataset_dir = default_dataset_dir(".", args.datalist) if recorded else str(Path(args.datalist).parent)
    if args.mask_threshold is None:
        from lightseg.bundles import datalist_value

        args.mask_threshold = datalist_value(args.datalist, "mask_threshold")
    for section in sections:
        entries = load_datalist(args.datalist, section, args.dataset_dir, in_channels=args.in_channels,
                                mask_threshold=args.mask_threshold, out_channels=args.out_channels, validate=False)  # fmt: skip
        empty = validate_entries(entries, args.in_channels, f"{args.datalist} [{section}]",
                                 mask_threshold=args.mask_threshold, out_channels=args.out_channels)  # fmt: skip
        logger.info("%s: %d entries OK (%d with an empty mask)", section, len(entries), empty)
    return 0


def _from_folders(args: argparse.Namespace) -> int:
    from lightseg.data.folders import datalist_from_folders

    threshold = args.mask_threshold
    if threshold not in ("auto", None):
        threshold = None if str(threshold).lower() in ("none", "null") else float(threshold)
    datalist_from_folders(args.images, args.masks, args.out, ratios=args.ratios, seed=args.seed,
                          mask_threshold=threshold, in_channels=args.in_channels, out_channels=args.out_channels)  # fmt: skip
    extra = f" --out_channels {args.out_channels}" if args.out_channels != 1 else ""
    extra += f" --in_channels {args.in_channels}" if args.in_channels != 3 else ""
    sys.stdout.write(
        "next, train (any bundle: cmunext_xxs, lvunet, litenext, mininet):\n"
        f"  python -m monai.bundle run training --config_file bundles/{args.bundle}/configs/train.json "
        f"--datalist {args.out}{extra}\n"
    )
    return 0


def _split(args: argparse.Namespace) -> int:
    ids = [line.strip() for line in Path(args.ids).read_text().splitlines() if line.strip()]
    parts = split_ids(ids, args.ratios, args.seed)
    json.dump({"seed": args.seed, "ratios": args.ratios, "parts": parts}, sys.stdout, indent=4)
    sys.stdout.write("\n")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from lightseg.data.converters import prepare

    datalist = prepare(args.dataset, args.raw, args.out, seed=args.seed, overwrite=args.overwrite,
                       progress=not args.no_progress)  # fmt: skip
    if args.datalist:
        write_json(datalist, args.datalist)
        logger.info("wrote %s", args.datalist)
    logger.info("%s: %s; train with --dataset_dir %s --datalist %s", args.dataset, datalist["counts"], args.out,
                args.datalist or Path(args.out) / "datalist.json")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightseg.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate the synthetic demo dataset described by a demo datalist")
    demo.add_argument("--datalist", default="data_lists/demo.json")
    demo.add_argument("--out", default="data/demo", help="dataset folder (the bundles' dataset_dir)")
    demo.add_argument("--regenerate-datalist", action="store_true", help="rewrite the datalist first")
    demo.add_argument("--per-modality", type=int, default=80)
    demo.add_argument("--seed", type=int, default=20240601)
    demo.set_defaults(func=_demo)

    check = sub.add_parser("check", help="validate a datalist and its files (sizes, channels, mask values)")
    check.add_argument("--datalist", required=True)
    check.add_argument("--dataset_dir", default=None, help="default: the one the datalist records, else its folder")
    check.add_argument("--sections", nargs="*", choices=SECTIONS)
    check.add_argument("--in_channels", type=int, default=3, choices=(1, 3))
    check.add_argument("--mask_threshold", type=float, default=None)
    check.add_argument("--out_channels", type=int, default=1, help="1: binary masks; N >= 2: label maps 0..N-1")
    check.set_defaults(func=_check)

    folders = sub.add_parser("from-folders", help="pair an images folder with a masks folder into a seeded datalist")
    folders.add_argument("--images", required=True, help="folder of images")
    folders.add_argument("--masks", required=True, help="folder of masks, same file names (a _mask suffix is fine)")
    folders.add_argument("--out", required=True, help="the datalist JSON to write")
    folders.add_argument("--ratios", type=float, nargs=3, default=[0.7, 0.1, 0.2], metavar=("TRAIN", "VAL", "TEST"))
    folders.add_argument("--seed", type=int, default=0)
    folders.add_argument("--mask_threshold", default="auto",
                         help="auto (default: 127 for lossy/JPEG masks, none for masks stored as 0/1 or 0/255), "
                         "a number (labels are mask > threshold), or none")  # fmt: skip
    folders.add_argument("--in_channels", type=int, default=3, choices=(1, 3))
    folders.add_argument("--out_channels", type=int, default=1, help="1: binary masks; N >= 2: label maps 0..N-1")
    folders.add_argument("--bundle", default="cmunext_xxs", help="the bundle named in the printed training command")
    folders.set_defaults(func=_from_folders)

    split = sub.add_parser("split", help="seeded split of case ids (one per line) into parts")
    split.add_argument("--ids", required=True)
    split.add_argument("--ratios", type=float, nargs="+", default=[0.7, 0.15, 0.15])
    split.add_argument("--seed", type=int, default=0)
    split.set_defaults(func=_split)

    from lightseg.data.converters import list_converters

    prep = sub.add_parser("prepare", help="convert a public dataset from its official layout, with its paper split")
    prep.add_argument("dataset", choices=list_converters())
    prep.add_argument("--raw", required=True, help="the official release folder, as downloaded and unpacked")
    prep.add_argument("--out", required=True, help="output folder (images/, masks/, datalist.json)")
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--datalist", default=None, help="also write the datalist here (e.g. data_lists/<name>.json)")
    prep.add_argument("--overwrite", action="store_true", help="rewrite cases whose outputs exist")
    prep.add_argument("--no-progress", action="store_true")
    prep.set_defaults(func=_prepare)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("monai").setLevel(logging.WARNING)  # readers log every format they try
    try:
        return args.func(args)
    except DatalistError as e:
        logger.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())

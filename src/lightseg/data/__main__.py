"""Command line for lightseg's data tools.

    python -m lightseg.data demo  [--datalist data_lists/demo.json] [--out data/demo]
    python -m lightseg.data check --datalist my.json --dataset_dir /data/mine [--mask_threshold 127]
    python -m lightseg.data split --ids ids.txt --ratios 0.7 0.15 0.15 --seed 0
    python -m lightseg.data prepare kvasir_seg --raw /data/Kvasir-SEG --out data/kvasir_seg [--datalist data_lists/kvasir_seg.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lightseg.data.datalist import SECTIONS, ensure_demo_data, load_datalist, make_demo_datalist, split_ids, write_json
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
    for section in sections:
        entries = load_datalist(
            args.datalist, section, args.dataset_dir, in_channels=args.in_channels, mask_threshold=args.mask_threshold
        )
        logger.info("%s: %d entries OK", section, len(entries))
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
    check.add_argument("--dataset_dir", required=True)
    check.add_argument("--sections", nargs="*", choices=SECTIONS)
    check.add_argument("--in_channels", type=int, default=3, choices=(1, 3))
    check.add_argument("--mask_threshold", type=float, default=None)
    check.set_defaults(func=_check)

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
    try:
        return args.func(args)
    except DatalistError as e:
        logger.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())

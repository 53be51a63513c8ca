#!/usr/bin/env python
"""Write the committed datalists under data_lists/.

    python scripts/make_datalists.py                                  # releases with fixed case ids (no data needed)
    python scripts/make_datalists.py --raw kvasir_seg=/data/Kvasir-SEG --raw drive=/data/DRIVE   # from copies

Releases with fixed official names (CVC-ClinicDB 1..612, BUSI, DRIVE, CHASE_DB1, GlaS, STARE's 20 labelled images)
are listed from their names; any other dataset is listed by scanning a copy of its official layout (nothing is
converted). The output equals what ``python -m lightseg.data prepare`` writes as ``datalist.json`` with seed 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lightseg.data.converters import CONVERTERS, KNOWN_RELEASES, known_cases, make_datalist
from lightseg.data.datalist import write_json

logger = logging.getLogger("make_datalists")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", action="append", default=[], metavar="NAME=FOLDER", help="scan a copy of a release")
    parser.add_argument("--out", default="data_lists")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    jobs = {name: None for name in KNOWN_RELEASES}
    for item in args.raw:
        name, _, folder = item.partition("=")
        if name not in CONVERTERS or not folder:
            parser.error(f"--raw expects NAME=FOLDER with NAME in {sorted(CONVERTERS)}, got {item!r}")
        jobs[name] = Path(folder)
    for name, raw in sorted(jobs.items()):
        converter = CONVERTERS[name]
        cases = known_cases(name) if raw is None else converter.scan(raw)[0]
        datalist = make_datalist(converter, cases, args.seed)
        write_json(datalist, Path(args.out) / f"{name}.json")
        logger.info("%s: %s -> %s", name, datalist["counts"], Path(args.out) / f"{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

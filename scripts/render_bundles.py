#!/usr/bin/env python
"""Render every bundle's configs from recipes/base and recipes/<bundle>.json (see lightseg.recipe).

python scripts/render_bundles.py           # rewrite bundles/<name>/configs/*.json, LICENSE, logging.conf
python scripts/render_bundles.py --check   # exit 1 and list the files that differ from their rendering
"""

from __future__ import annotations

import argparse
import logging
import sys

from lightseg.recipe import bundle_names, check_bundles, render_bundle, repo_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report files that differ from their rendering")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        stale = check_bundles()
        for path in stale:
            logging.error("differs from its rendering: %s", path)
        if stale:
            logging.error("run: python scripts/render_bundles.py")
        return 1 if stale else 0
    for name in bundle_names():
        render_bundle(name, out_dir=repo_root() / "bundles" / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

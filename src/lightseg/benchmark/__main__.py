"""``python -m lightseg.benchmark train|infer [options]``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {"train": "lightseg.benchmark.train", "infer": "lightseg.benchmark.infer"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m lightseg.benchmark {{{','.join(COMMANDS)}}} [--help]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())

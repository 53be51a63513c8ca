#!/usr/bin/env python
"""Print a Markdown table of every registered network: parameters and MACs in both conventions.

    python scripts/model_table.py [--size 256 256] [--in_channels 3] [--out_channels 1]

MAC conventions are described in :mod:`lightseg.profiling` (conv = convolutions and matrix products only;
thop = the papers' convention, which adds normalization and bilinear upsampling).
"""

from __future__ import annotations

import argparse
import logging
import sys

from lightseg import create_network, list_networks
from lightseg.profiling import profile


def table(size: tuple[int, int], in_channels: int, out_channels: int) -> str:
    rows = ["| network | params | conv GMACs | thop GMACs |", "|---|---:|---:|---:|"]
    for name in list_networks():
        net = create_network(name, in_channels=in_channels, out_channels=out_channels)
        if any(s % net.divisor for s in size):
            params = sum(p.numel() for p in net.parameters())
            rows.append(f"| {name} | {params:,} | needs multiples of {net.divisor} | |")
            continue
        c = profile(net, (1, in_channels, *size))
        rows.append(f"| {name} | {c.params:,} | {c.conv_macs / 1e9:.4f} | {c.thop_macs / 1e9:.4f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--in_channels", type=int, default=3)
    parser.add_argument("--out_channels", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    sys.stdout.write(table(tuple(args.size), args.in_channels, args.out_channels) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

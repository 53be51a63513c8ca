"""Time ``POST /infer/<model>`` on a running MONAI Label server (what docs/monailabel.md reports).

    python scripts/label_timing.py --url http://127.0.0.1:8000 --models cmunext_xxs,lvunet --image img.jpg --repeat 10

Each model gets one warm-up call (the first call loads the weights; LV-UNet is fused then), then ``--repeat``
timed calls asking for the mask file (``output=image``), as a viewer does. Prints one Markdown table row per
model: the median and the minimum wall-clock time of a call seen from the client, and the medians of the
server's own ``latencies`` (pre, infer, post, write) over 5 more calls asking for JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import urllib.request
import uuid
from pathlib import Path

logger = logging.getLogger("label_timing")


def _post(url: str, image: Path, timeout: float = 300) -> bytes:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{image.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + image.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # the URL the user gave
        return response.read()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    logger.info("| model | median /infer (s) | min (s) | server pre / infer / post / write (s) |")
    logger.info("|---|---|---|---|")
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        base = f"{args.url.rstrip('/')}/infer/{model}"
        _post(f"{base}?output=image", args.image)  # warm-up: loads (and for LV-UNet fuses) the weights
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            _post(f"{base}?output=image", args.image)
            times.append(time.perf_counter() - start)
        lats = [json.loads(_post(f"{base}?output=json", args.image)).get("latencies", {}) for _ in range(5)]
        keys = ("pre", "infer", "post", "write")
        server = " / ".join(f"{statistics.median(lat.get(k, float('nan')) for lat in lats):.2f}" for k in keys)
        logger.info("| %s | %.3f | %.3f | %s |", model, statistics.median(times), min(times), server)


if __name__ == "__main__":
    main()

"""Entry point of lightseg's MONAI Application Package (``python3 /opt/holoscan/app``).

lightseg is not on PyPI: the packager script (scripts/package_map.sh) puts our wheel, a pure-Python zip, next to
this file, and it is imported from there (zipimport). ``LIGHTSEG_APP`` picks the app: ``dicom`` (default: DICOM
in, DICOM SEG + PNG out) or ``image`` (PNG/JPEG/TIFF/BMP in, PNG masks out). Input, output and model folders come
from the MAP environment (HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH, HOLOSCAN_MODEL_PATH) or -i/-o/-m.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _use_bundled_wheel() -> None:
    wheels = sorted(HERE.glob("lightseg-*.whl"))
    if len(wheels) > 1:
        raise RuntimeError(f"several lightseg wheels in {HERE}: {[w.name for w in wheels]}")
    if wheels:
        sys.path.insert(0, str(wheels[0]))


if __name__ == "__main__":
    _use_bundled_wheel()
    from lightseg.deploy.__main__ import main

    sys.exit(main([os.environ.get("LIGHTSEG_APP", "dicom"), *sys.argv[1:]]))

#!/usr/bin/env python
"""Export a trained bundle: a thin caller of ``python -m lightseg.export`` (same options; see its --help).

python scripts/export_bundle.py bundles/cmunext_xxs                       # models/model.ts
python scripts/export_bundle.py bundles/cmunext_xxs --format onnx         # models/model.onnx
python scripts/export_bundle.py bundles/cmunext_xxs --ckpt models/model_final.pt --format all
python scripts/export_bundle.py bundles/mininet --network_name mininet_paper_counts   # a trained variant
"""

from __future__ import annotations

import sys

from lightseg.export.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

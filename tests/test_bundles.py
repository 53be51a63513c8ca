"""The shared bundle suite for EVERY folder in bundles/: a new bundle is covered without editing a test.

Bundle-specific facts the suite needs (a training size the network requires, the model file written beside
model.pt, overrides for offline tests) come from the ``tests`` section of ``recipes/<bundle>.json``; the rest
from the bundle's own configs.
"""

from __future__ import annotations

import json

from lightseg import create_network

from .bundle_suite import BundleSuite
from .conftest import BUNDLE_NAMES, BUNDLES, ROOT


def suite_for(name: str, bundles=BUNDLES, recipes=ROOT / "recipes") -> type:
    """A :class:`BundleSuite` subclass for bundle ``name``."""
    hints = json.loads((recipes / f"{name}.json").read_text()).get("tests", {})
    network_name = json.loads((bundles / name / "configs" / "train.json").read_text())["network_name"]
    deployed = hints.get("deployed_params") or sum(p.numel() for p in create_network(network_name).parameters())
    attrs = {
        "bundle": name,
        "bundles_dir": bundles,
        "network_name": network_name,
        "image_size": tuple(hints.get("image_size", (32, 32))),
        "other_model_file": hints.get("other_model_file", "model_final.pt"),
        "deployed_params": deployed,
        "extra_overrides": dict(hints.get("overrides", {})),
    }
    return type(f"TestBundle_{name}", (BundleSuite,), attrs)


for _name in BUNDLE_NAMES:
    globals()[f"TestBundle_{_name}"] = suite_for(_name)

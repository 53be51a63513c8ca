"""The cmunext_xxs bundle: the shared bundle suite."""

from __future__ import annotations

from .bundle_suite import BundleSuite


class TestCMUNeXtXXSBundle(BundleSuite):
    bundle = "cmunext_xxs"
    network_name = "cmunext_xxs"
    image_size = (32, 32)
    other_model_file = "model_final.pt"
    deployed_params = 40_837

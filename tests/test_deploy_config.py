"""Every bundle's ``deploy_postprocessing`` (selected by lightseg.deploy through the SDK's
``BundleConfigNames(postproc_name=...)``), checked in the main environment the way the SDK applies it: Load/Save
transforms dropped, then the SDK's own ``np.squeeze(pred, 0)``: the result must be rows-first uint8 at the
input's size. The real-SDK run is tests/test_monai_deploy_sdk.py (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, LoadImage
from PIL import Image

from .conftest import (
    BUNDLE_NAMES,
    BUNDLES,
)

EXPECTED = ["Activationsd", "Invertd", "AsDiscreted", "Transposed", "CastToTyped"]


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_deploy_postprocessing_sdk_style(tmp_path, bundle):
    import monai.transforms

    config = json.loads((BUNDLES / bundle / "configs" / "inference.json").read_text())
    items = config["deploy_postprocessing"]["transforms"]
    assert [t["_target_"] for t in items] == EXPECTED
    assert all(hasattr(monai.transforms, t["_target_"]) for t in items)
    assert items[3]["indices"] == [0, 2, 1] and items[2]["threshold"] == "$0.5 if @out_channels == 1 else None"
    h, w = 45, 70
    a = np.full((h, w), 20, np.uint8)
    a[5:15, 44:64] = 235
    Image.fromarray(a).save(tmp_path / "block.png")
    parser = ConfigParser(config)
    parser["bundle_root"] = str(BUNDLES / bundle)
    parser["image_size"] = [128, 128]
    keep = lambda ts: [t for t in ts if not any(x in type(t).__name__ for x in ("LoadImage", "SaveImage"))]  # noqa: E731
    pre = Compose(keep(parser.get_parsed_content("preprocessing").transforms))
    post = Compose(keep(parser.get_parsed_content("deploy_postprocessing").transforms))
    net = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.zero_()
    data = pre({"image": LoadImage(image_only=True)(str(tmp_path / "block.png"))})
    with torch.no_grad():
        data["pred"] = net(data["image"][None])[0]
    out = np.squeeze(np.asarray(post(data)["pred"]), 0)  # what MonaiBundleInferenceOperator does next
    assert out.dtype == np.uint8 and out.shape == (h, w)
    np.testing.assert_array_equal(out > 0, a > 127)

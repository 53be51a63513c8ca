"""How MONAI Label and MONAI Deploy consume inference.json (../shared/BUNDLE_CONTRACT.md sections 5-6),
reproduced without installing them: built-in transforms only, the postprocessing chain that ends in an
integer mask of the original size, and the configs embedded in the exported TorchScript file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, LoadImage
from PIL import Image

from .conftest import BUNDLES

BUNDLE_NAMES = ("cmunext_xxs", "litenext", "lvunet", "mininet")
EXPECTED_POST = ["Activationsd", "Invertd", "AsDiscreted", "SaveImaged", "SqueezeDimd", "CastToTyped", "Lambda"]


def _targets(items: list[dict]) -> list[str]:
    return [t["_target_"] for t in items]


@pytest.fixture(params=BUNDLE_NAMES)
def bundle(request) -> str:
    return request.param


def _configs(bundle: str):
    return BUNDLES / bundle / "configs"


def test_only_monai_builtin_transforms_in_pre_and_post(bundle):
    import monai.transforms

    config = json.loads((_configs(bundle) / "inference.json").read_text())
    for section in ("preprocessing", "postprocessing"):
        for target in _targets(config[section]["transforms"]):
            assert "." not in target and hasattr(monai.transforms, target), target
    text = json.dumps(config["preprocessing"]) + json.dumps(config["postprocessing"])
    assert "lightseg" not in text


def test_postprocessing_chain_is_the_label_and_deploy_one(bundle):
    config = json.loads((_configs(bundle) / "inference.json").read_text())
    post = config["postprocessing"]["transforms"]
    assert _targets(post) == EXPECTED_POST
    assert post[0]["sigmoid"] is True
    assert post[1]["keys"] == "pred" and post[1]["orig_keys"] == "image"
    assert post[2]["threshold"] == 0.5
    assert post[4]["dim"] == 0
    result_extension = ConfigParser({"f": post[6]["func"]}).get_parsed_content("f")
    assert result_extension({"image_path": "/s/a.JPG"})["result_extension"] == ".png"  # not a lossy JPEG mask
    assert result_extension({"image_path": "/s/a.jpg", "result_extension": ".nrrd"})["result_extension"] == ".nrrd"
    assert "result_extension" not in result_extension({"image_path": "/s/a.nii.gz"})
    assert "result_extension" not in result_extension({"pred": 1})  # standalone runs and MONAI Deploy
    meta = json.loads((_configs(bundle) / "metadata.json").read_text())
    assert set(meta["network_data_format"]["inputs"]) == {"image"}
    assert set(meta["network_data_format"]["outputs"]) == {"pred"}


def _bright_block_image(tmp_path, h=45, w=70):
    a = np.full((h, w), 20, np.uint8)
    a[5:15, 44:64] = 235
    path = tmp_path / "us.png"
    Image.fromarray(a).save(path)
    expected = np.zeros((h, w), bool)
    expected[5:15, 44:64] = True
    return path, expected


def _parser(bundle: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(_configs(bundle) / "inference.json"))
    parser["bundle_root"] = str(BUNDLES / bundle)
    parser["device"] = "cpu"  # MONAI Label passes the device as a string
    parser["image_size"] = [64, 64]
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _marker_net() -> torch.nn.Module:
    """A 1x1 convolution that marks bright pixels: a stand-in model whose right answer is known."""
    net = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.zero_()
    return net.eval()


def test_monai_label_style_inference(tmp_path, bundle):
    """MONAI Label: LoadImaged(image_only=False), SaveImaged stripped; the last transform yields (W, H) uint8."""
    path, expected = _bright_block_image(tmp_path)
    parser = _parser(bundle)
    pre = parser.get_parsed_content("preprocessing")
    for t in pre.transforms:
        if type(t).__name__ == "LoadImaged":
            t._loader.image_only = False
    post_items = [t for t in parser.get_parsed_content("postprocessing").transforms if type(t).__name__ != "SaveImaged"]
    data = pre({"image": str(path)})
    with torch.no_grad():
        data["pred"] = _marker_net()(data["image"][None])[0]
    out = Compose(post_items)(data)
    mask = np.asarray(out["pred"])
    assert mask.dtype == np.uint8 and mask.shape == (70, 45)  # MONAI's (W, H) order, no channel
    np.testing.assert_array_equal(mask.T > 0, expected)


def test_monai_deploy_style_inference_from_exported_torchscript(tmp_path, bundle):
    """MONAI Deploy: model.ts from ckpt_export carries extra/inference.json; Load/Save transforms are dropped."""
    from monai.bundle import ckpt_export

    path, expected = _bright_block_image(tmp_path)
    torch.save(_marker_net().state_dict(), tmp_path / "model.pt")
    ts = tmp_path / "model.ts"
    net_def = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 1, "kernel_size": 1}
    ckpt_export(
        net_id="network_def", filepath=str(ts), ckpt_file=str(tmp_path / "model.pt"),
        meta_file=str(_configs(bundle) / "metadata.json"), config_file=str(_configs(bundle) / "inference.json"),
        bundle_root=str(BUNDLES / bundle), network_def=net_def,
    )  # fmt: skip
    extra = {"inference.json": "", "metadata.json": ""}
    model = torch.jit.load(str(ts), _extra_files=extra)
    embedded = json.loads(extra["inference.json"])
    parser = ConfigParser(embedded)
    parser["image_size"] = [64, 64]
    keep = lambda ts_: [t for t in ts_ if not type(t).__name__.startswith(("LoadImage", "SaveImage"))]  # noqa: E731
    pre = Compose(keep(parser.get_parsed_content("preprocessing").transforms))
    post = Compose(keep(parser.get_parsed_content("postprocessing").transforms))
    image = LoadImage(image_only=True, ensure_channel_first=False)(str(path))  # the app's own loader
    data = pre({"image": image})
    with torch.no_grad():
        data["pred"] = model(data["image"][None])[0]
    mask = np.asarray(post(data)["pred"])
    assert mask.shape == (70, 45) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask.T > 0, expected)  # the app transposes MONAI's (W, H) back


def test_default_inference_size_is_network_compatible(bundle):
    """The configured size must be accepted by the network (its divisor)."""
    parser = ConfigParser()
    parser.read_config(str(_configs(bundle) / "inference.json"))
    parser["bundle_root"] = str(BUNDLES / bundle)
    size = parser.get_parsed_content("image_size")
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, *size)).shape == (1, 1, *size)

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

from .conftest import BUNDLE_NAMES, BUNDLES

# (in_channels, out_channels): RGB binary (the default), grayscale binary, RGB 3-class
VARIANTS = {"rgb": (3, 1), "gray": (1, 1), "3class": (3, 3)}
EXPECTED_POST = ["Activationsd", "Invertd", "AsDiscreted", "SaveImaged", "SqueezeDimd", "CastToTyped", "Lambda"]


def _targets(items: list[dict]) -> list[str]:
    return [t["_target_"] for t in items]


@pytest.fixture(params=BUNDLE_NAMES)
def bundle(request) -> str:
    return request.param


@pytest.fixture(params=list(VARIANTS))
def variant(request) -> tuple[int, int]:
    return VARIANTS[request.param]


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


def test_postprocessing_chain_is_the_label_and_deploy_one(bundle, variant):
    config = json.loads((_configs(bundle) / "inference.json").read_text())
    post = config["postprocessing"]["transforms"]
    assert _targets(post) == EXPECTED_POST
    assert post[1]["keys"] == "pred" and post[1]["orig_keys"] == "image"
    assert post[4]["dim"] == 0
    parsed = _parser(bundle, in_channels=variant[0], out_channels=variant[1]).get_parsed_content("postprocessing")
    act, discrete = parsed.transforms[0], parsed.transforms[2]
    binary = variant[1] == 1
    assert tuple(act.sigmoid) == (binary,) and tuple(act.softmax) == (not binary,)
    assert tuple(discrete.argmax) == (not binary,) and tuple(discrete.threshold) == ((0.5 if binary else None),)
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


def _marker_net(in_channels: int = 3, out_channels: int = 1) -> torch.nn.Module:
    """A 1x1 convolution that marks bright pixels: a stand-in model whose right answer is known.

    Binary: the logit is the sum of the normalized channels. N classes: class 1 scores +sum, the background
    -sum, the others 0, so bright pixels are class 1 and dark ones background."""
    net = torch.nn.Conv2d(in_channels, out_channels, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        if out_channels == 1:
            net.weight.fill_(1.0)
        else:
            net.weight[0].fill_(-1.0)
            net.weight[1].fill_(1.0)
    return net.eval()


def test_monai_label_style_inference(tmp_path, bundle, variant):
    """MONAI Label: LoadImaged(image_only=False), SaveImaged stripped; the last transform yields (W, H) uint8."""
    path, expected = _bright_block_image(tmp_path)
    parser = _parser(bundle, in_channels=variant[0], out_channels=variant[1])
    pre = parser.get_parsed_content("preprocessing")
    for t in pre.transforms:
        if type(t).__name__ == "LoadImaged":
            t._loader.image_only = False
    post_items = [t for t in parser.get_parsed_content("postprocessing").transforms if type(t).__name__ != "SaveImaged"]
    data = pre({"image": str(path)})
    with torch.no_grad():
        assert data["image"].shape[0] == variant[0]
        data["pred"] = _marker_net(*variant)(data["image"][None])[0]
    out = Compose(post_items)(data)
    mask = np.asarray(out["pred"])
    assert mask.dtype == np.uint8 and mask.shape == (70, 45)  # MONAI's (W, H) order, no channel
    np.testing.assert_array_equal(mask.T, expected.astype(np.uint8))  # label values 0/1 (class 1 for 3 classes)


def test_rgb_input_to_a_gray_model_is_converted(tmp_path, bundle):
    """A 1-channel model gets the luminance of RGB(A) files; grayscale files are not forced to RGB."""
    path, _ = _bright_block_image(tmp_path)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([np.asarray(Image.open(path))] * 3 + [np.full((45, 70), 255, np.uint8)], -1)).save(rgb)
    pre = _parser(bundle, in_channels=1).get_parsed_content("preprocessing")
    gray, colour = pre({"image": str(path)})["image"], pre({"image": str(rgb)})["image"]
    assert gray.shape[0] == 1 and colour.shape[0] == 1
    torch.testing.assert_close(colour, gray, atol=1e-4, rtol=0)


def test_monai_deploy_style_inference_from_exported_torchscript(tmp_path, bundle, variant):
    """MONAI Deploy: model.ts from ckpt_export carries extra/inference.json; Load/Save transforms are dropped."""
    from monai.bundle import ckpt_export

    path, expected = _bright_block_image(tmp_path)
    torch.save(_marker_net(*variant).state_dict(), tmp_path / "model.pt")
    ts = tmp_path / "model.ts"
    net_def = {"_target_": "torch.nn.Conv2d", "in_channels": variant[0], "out_channels": variant[1], "kernel_size": 1}
    # the trained channel counts are embedded in the archive's config, as lightseg.export writes it
    config = json.loads((_configs(bundle) / "inference.json").read_text())
    config.update(in_channels=variant[0], out_channels=variant[1], network_def=net_def)
    (tmp_path / "inference.json").write_text(json.dumps(config, indent=4))
    ckpt_export(
        net_id="network_def", filepath=str(ts), ckpt_file=str(tmp_path / "model.pt"),
        meta_file=str(_configs(bundle) / "metadata.json"), config_file=str(tmp_path / "inference.json"),
        bundle_root=str(BUNDLES / bundle),
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
    np.testing.assert_array_equal(mask.T, expected.astype(np.uint8))  # the app transposes MONAI's (W, H) back


def test_default_inference_size_is_network_compatible(bundle, variant):
    """The configured size must be accepted by the network (its divisor), for every channel/class setting."""
    parser = ConfigParser()
    parser.read_config(str(_configs(bundle) / "inference.json"))
    parser["bundle_root"] = str(BUNDLES / bundle)
    parser["in_channels"], parser["out_channels"] = variant
    size = parser.get_parsed_content("image_size")
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        assert net(torch.zeros(1, variant[0], *size)).shape == (1, variant[1], *size)

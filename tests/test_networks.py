"""Networks: exact parameter counts, shapes (odd sizes too), gradients, TorchScript, registry, MAC counts."""

from __future__ import annotations

import pytest
import torch

from lightseg import create_network, list_networks
from lightseg.networks import CMUNeXt, network_defaults
from lightseg.profiling import count_macs, profile

# Published / reference counts for 3 -> 1 channels (../shared/reference/reference_counts.json).
EXPECTED_PARAMS = {
    "cmunext_xxs": 40_837,
    "cmunext_xxs_table2": 48_393,
    "cmunext": 3_149_185,
    "cmunext_s": 417_505,
    "cmunext_l": 8_286_721,
    "lvunet": 934_545,
    "litenext": 711_201,  # the paper's 0.71 M, 7x7 depthwise kernels
    "litenext_k3": 701_601,  # the authors' code default (3x3)
    "mininet": 38_193,  # the literal reading of the paper's equations
    "mininet_paper_counts": 36_657,  # the paper's trainable count (RGB input)
    "mininet_paper_counts_gray": 36_657,  # the paper's trainable count (1-channel input)
}
# BatchNorm running-stat elements measured on the reference XXS (bn_buffer_elems).
EXPECTED_BN_BUFFERS = {"cmunext_xxs": 2_004, "mininet_paper_counts": 1_028, "mininet_paper_counts_gray": 1_028}
SMALL = [n for n in list_networks() if n != "cmunext_l"]


def test_every_registered_network_has_an_expected_count():
    """A new registered network fails here until its exact count is written down above."""
    assert set(EXPECTED_PARAMS) == set(list_networks())


def test_unknown_name_lists_valid_ones():
    with pytest.raises(KeyError, match="cmunext_xxs"):
        create_network("cmunext_xxxs")


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_exact_parameter_count(name):
    net = create_network(name)
    assert sum(p.numel() for p in net.parameters()) == EXPECTED_PARAMS[name]
    if name in EXPECTED_BN_BUFFERS:
        running = sum(b.numel() for n, b in net.named_buffers() if "running" in n)
        assert running == EXPECTED_BN_BUFFERS[name]


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("factors", [(1, 1), (3, 5), (2, 1)])
def test_output_shape_any_multiple_of_the_divisor(name, factors):
    net = create_network(name).eval()
    hw = tuple(f * net.divisor for f in factors)  # odd multiples included
    with torch.no_grad():
        out = net(torch.randn(2, net.in_channels, *hw))
    assert out.shape == (2, 1, *hw)


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("out_channels", [1, 2, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_any_in_and_out_channels(name, in_channels, out_channels):
    net = create_network(name, in_channels=in_channels, out_channels=out_channels).eval()
    with torch.no_grad():
        out = net(torch.randn(1, in_channels, net.divisor, 2 * net.divisor))
    assert out.shape == (1, out_channels, net.divisor, 2 * net.divisor)


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL)
def test_onnx_export_equals_eager(name, tmp_path):
    """Every network exports to ONNX (dynamic batch and spatial axes), checked with ONNX Runtime."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from lightseg.export import export_onnx, is_fusible
    from lightseg.networks import set_deep_training_slope

    torch.manual_seed(0)
    net = create_network(name).eval()
    if is_fusible(net):
        set_deep_training_slope(net, 1.0)  # exported in deployment form, as at the end of deep training
    d = net.divisor
    diff = export_onnx(net, tmp_path / "net.onnx", example_shape=(2, net.in_channels, d, d),
                       check_shapes=[(1, net.in_channels, d, 2 * d), (3, net.in_channels, 2 * d, d)])  # fmt: skip
    assert diff < 1e-4 and (tmp_path / "net.onnx").is_file()


@pytest.mark.parametrize("hw", [(272, 208), (48, 80)])
def test_cmunext_odd_multiples_of_16(hw):
    with torch.no_grad():
        assert create_network("cmunext_xxs").eval()(torch.randn(1, 3, *hw)).shape == (1, 1, *hw)


@pytest.mark.parametrize("hw", [(50, 64), (64, 40), (17, 17)])
def test_sizes_not_divisible_by_16_are_refused_clearly(hw):
    net = create_network("cmunext_xxs").eval()
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 3, *hw))


def test_any_number_of_channels():
    net = create_network("cmunext_xxs", in_channels=1, out_channels=4).eval()
    assert net(torch.randn(1, 1, 32, 48)).shape == (1, 4, 32, 48)


@pytest.mark.parametrize("name", SMALL)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    net = create_network(name).train()
    out = net(torch.randn(2, net.in_channels, 2 * net.divisor, 2 * net.divisor))
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


@pytest.mark.parametrize("name", SMALL)
def test_torchscript_round_trip(name, tmp_path):
    torch.manual_seed(0)
    net = create_network(name).eval()
    scripted = torch.jit.script(net)
    path = tmp_path / "net.ts"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(1, net.in_channels, net.divisor, 3 * net.divisor)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_variant_defaults_and_overrides():
    d = network_defaults("cmunext_xxs")
    assert d["channels"] == (8, 10, 12, 16, 24) and d["depths"] == (3, 1, 1, 1, 2)
    assert d["kernel_sizes"] == (3, 3, 7, 7, 9) and d["fusion"] == "add" and d["act"] == "hardswish"
    assert network_defaults("cmunext_xxs_table2")["depths"] == (3, 1, 1, 2, 3)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"spatial_dims": 3}, "2D"),
        ({"channels": (8, 16), "depths": (1,), "kernel_sizes": (3, 3)}, "same length"),
        ({"fusion": "mul"}, "fusion"),
        ({"upsample": "bicubic"}, "upsample"),
        ({"kernel_sizes": (3, 3, 4, 7, 7)}, "odd"),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        CMUNeXt(**kwargs)


def test_macs_match_reference_counters():
    """conv MACs equal the reference hook count; thop-convention MACs equal the authors' table (468.165M)."""
    xxs = profile(create_network("cmunext_xxs"))
    assert xxs.conv_macs == 382_132_224
    assert xxs.thop_macs == 468_164_608
    assert profile(create_network("cmunext_xxs_table2")).thop_macs == 472_195_072
    assert count_macs(create_network("cmunext_xxs"), (1, 3, 256, 256)) == 382_132_224


@pytest.mark.parametrize(
    "name, thop", [("cmunext", 7_417_733_120), ("cmunext_s", 1_090_109_440), ("cmunext_l", 17_183_211_520)]
)
def test_original_family_thop_calibration(name, thop):
    assert profile(create_network(name)).thop_macs == thop


def test_model_table_script():
    import subprocess
    import sys

    from .conftest import ROOT

    out = subprocess.run(
        [sys.executable, "scripts/model_table.py", "--size", "64", "64"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "| cmunext_xxs | 40,837 |" in out.stdout and out.stdout.count("\n") == 2 + len(list_networks())

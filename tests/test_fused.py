"""The fused BatchNorm + activation kernel computes what the modules compute (values, gradients, running statistics),
in both layouts, for every activation and every network; it steps aside where it does not apply."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from lightseg.networks import create_network, fused

ACTS = [None, nn.ReLU(), nn.Hardswish(), nn.GELU()]
NETWORKS = ["cmunext_xxs", "lvunet", "mininet", "mininet_paper_counts", "litenext"]


def close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal within ``tol`` relative to the tensor's scale (float32 sums of ~1e4 terms differ by rounding)."""
    scale = max(1.0, expected.abs().max().item())
    diff = (actual - expected).abs().max().item()
    assert diff <= tol * scale, f"max abs diff {diff:.3g} > {tol:g} x {scale:.3g}"


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not fused.available():
        pytest.fail(f"the fused kernel did not build on this machine: {fused.kernel_state()}")
    fused.set_enabled(True)
    yield
    fused.set_enabled(True)


def _reference(x, bn, act, act_first):
    a = act if act is not None else nn.Identity()
    return bn(a(x)) if act_first else a(bn(x))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("act", ACTS, ids=["identity", "relu", "hardswish", "gelu"])
@pytest.mark.parametrize("act_first", [True, False])
def test_bn_act_equals_modules_in_training_and_eval(channels_last, act, act_first):
    torch.manual_seed(0)
    channels = 12
    x = torch.randn(3, channels, 17, 19) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bn_ref = nn.BatchNorm2d(channels)
    nn.init.normal_(bn_ref.weight)
    nn.init.normal_(bn_ref.bias)
    bn_fused = copy.deepcopy(bn_ref)
    x_ref, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    for _ in range(2):  # two steps: running statistics accumulate
        y_ref = _reference(x_ref, bn_ref, act, act_first)
        y_fused = fused.bn_act(x_fused, bn_fused, act, act_first)
        grad = torch.randn_like(y_ref)
        y_ref.backward(grad)
        y_fused.backward(grad)
    close(y_fused, y_ref)
    close(x_fused.grad, x_ref.grad)
    close(bn_fused.weight.grad, bn_ref.weight.grad)
    close(bn_fused.bias.grad, bn_ref.bias.grad)
    close(bn_fused.running_mean, bn_ref.running_mean)
    close(bn_fused.running_var, bn_ref.running_var)
    assert bn_fused.num_batches_tracked.item() == bn_ref.num_batches_tracked.item() == 2
    bn_ref.eval()
    bn_fused.eval()
    with torch.no_grad():
        close(fused.bn_act(x, bn_fused, act, act_first), _reference(x, bn_ref, act, act_first))


def test_bn_act_momentum_none_and_no_running_stats():
    torch.manual_seed(1)
    x = torch.randn(4, 6, 9, 9)
    for kwargs in ({"momentum": None}, {"track_running_stats": False}):
        bn_ref = nn.BatchNorm2d(6, **kwargs)
        bn_fused = copy.deepcopy(bn_ref)
        for _ in range(3):
            close(fused.bn_act(x, bn_fused, nn.ReLU()), bn_ref(nn.ReLU()(x)))
        if bn_ref.running_mean is not None:
            close(bn_fused.running_mean, bn_ref.running_mean)
            close(bn_fused.running_var, bn_ref.running_var)
        bn_ref.eval()
        bn_fused.eval()
        close(fused.bn_act(x, bn_fused, nn.ReLU()), bn_ref(nn.ReLU()(x)))


def _train_step(net, x, y, channels_last):
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out = net(x)
    loss = nn.functional.binary_cross_entropy_with_logits(out, y)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    return out.detach(), grads, {k: v.clone() for k, v in net.state_dict().items()}


def _error(actual: torch.Tensor, truth: torch.Tensor) -> float:
    return (actual.double() - truth).abs().max().item() / max(1.0, truth.abs().max().item())


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", NETWORKS)
def test_networks_train_and_infer_the_same_with_and_without_the_kernel(name, channels_last):
    """A training step (output, every gradient, every state_dict entry after it) with the kernel against the same step
    through the modules in float64: within 1e-5, or, where the network's own float32 modules are farther than that
    from float64 (BatchNorm over LV-UNet's few deepest pixels amplifies rounding), no farther than twice their error."""
    torch.manual_seed(0)
    net = create_network(name, in_channels=3, out_channels=1).train()
    batch, size = (4, 256) if name == "lvunet" else (2, 64)
    x = torch.randn(batch, 3, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    fused.set_enabled(False)
    truth = _train_step(copy.deepcopy(net).double(), x.double(), y.double(), channels_last)
    ref = _train_step(copy.deepcopy(net), x, y, channels_last)
    fused.set_enabled(True)
    got = _train_step(copy.deepcopy(net), x, y, channels_last)

    def check(a, r, t, what):
        bound = max(1e-5, 2 * _error(r, t))
        assert _error(a, t) <= bound, f"{what}: {_error(a, t):.3g} from float64, modules {_error(r, t):.3g}"

    check(got[0], ref[0], truth[0], "output")
    assert got[1].keys() == truth[1].keys()
    for key in truth[1]:
        check(got[1][key], ref[1][key], truth[1][key], f"grad {key}")
    assert list(got[2]) == list(truth[2]) == list(net.state_dict())  # same keys: checkpoints are interchangeable
    for key in truth[2]:
        check(got[2][key], ref[2][key], truth[2][key].double(), key)
    net.eval()
    with torch.no_grad():
        fused.set_enabled(False)
        expected = net(x)
        fused.set_enabled(True)
        close(net(x), expected)


def test_a_checkpoint_trained_with_the_kernel_loads_without_it(tmp_path):
    torch.manual_seed(0)
    net = create_network("cmunext_xxs", in_channels=3, out_channels=1).train()
    _train_step(net, torch.randn(2, 3, 32, 32), torch.ones(2, 1, 32, 32), False)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    fused.set_enabled(False)
    try:
        other = create_network("cmunext_xxs", in_channels=3, out_channels=1)
        other.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
        other.eval()
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            ref = other(x)
    finally:
        fused.set_enabled(True)
    net.eval()
    with torch.no_grad():
        close(net(x), ref)


def test_torchscript_and_hooks_take_the_reference_path():
    torch.manual_seed(0)
    net = create_network("cmunext_xxs", in_channels=3, out_channels=1).eval()
    x = torch.randn(1, 3, 32, 32)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        close(scripted(x), net(x))
    seen = []
    bn = net.stem[1]
    handle = bn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    assert seen == [torch.Size([1, 8, 32, 32])]


def test_switched_off_or_unavailable_uses_the_modules(monkeypatch, caplog):
    x = torch.randn(2, 4, 8, 8)
    bn = nn.BatchNorm2d(4)
    calls = []
    monkeypatch.setattr(fused._BNAct, "apply", lambda *a: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    fused.set_enabled(False)
    fused.bn_act(x, bn, nn.ReLU())
    fused.set_enabled(True)
    fused.bn_act(x.double(), nn.BatchNorm2d(4).double(), nn.ReLU())  # float64: not the kernel's
    fused.bn_act(x, bn, nn.SiLU())  # an activation the kernel does not implement
    assert calls == []
    # a failing build: one warning, then the modules
    monkeypatch.setattr(fused, "_ext", None)
    monkeypatch.setattr(fused, "_tried", False)
    import torch.utils.cpp_extension as cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with caplog.at_level(logging.WARNING, logger="lightseg.networks.fused"):
        assert fused.available() is False
        assert fused.available() is False
        out = fused.bn_act(x, bn, nn.ReLU())
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    assert "no C++ compiler" in fused.kernel_state()["reason"]
    assert calls == [] and out.shape == x.shape


@pytest.mark.slow
@pytest.mark.parametrize(
    "switches",
    [
        {"fused_kernels": False, "tune_allocator": False, "channels_last": False},
        {"fused_kernels": True, "tune_allocator": True, "channels_last": True, "bf16": True},
    ],
    ids=["reference", "all-on"],
)
def test_bundle_trains_with_the_speed_switches_and_records_them(tiny_dataset, tmp_path, switches):
    """The switches are top-level overrides of every bundle, and MLflow records them; a model trained with them
    loads into the plain network."""
    from mlflow.tracking import MlflowClient

    from .conftest import run_bundle, tiny_overrides

    data, datalist = tiny_dataset
    out = tmp_path / "run"
    result = run_bundle("mininet", ("train.json",), epochs=2, **tiny_overrides(out, data, datalist), **switches)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'eval' / 'mlruns.db'}")
    run = client.search_runs([client.get_experiment_by_name("mininet").experiment_id])[0]
    for key, value in switches.items():
        assert run.data.params[key] == str(value), (key, run.data.params.get(key))
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    net = create_network("mininet", in_channels=3, out_channels=1)
    net.load_state_dict(state, strict=True)

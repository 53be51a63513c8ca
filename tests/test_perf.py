"""lightseg.perf: the speed switches (channels_last, torch.compile with its fallback, bf16 autocast, allocator)."""

from __future__ import annotations

import copy
import ctypes
import logging
import types

import pytest
import torch

from lightseg import perf
from lightseg.networks import create_network


def _net_with_statistics(name: str = "cmunext_xxs", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = create_network(name, in_channels=3, out_channels=1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lightseg.perf" and r.levelno >= logging.WARNING]


@pytest.fixture(autouse=True)
def _fresh_log_once(monkeypatch):
    monkeypatch.setattr(perf, "_logged", set())


class _Tiny(torch.nn.Module):
    """A user-written forward (what Dynamo captures)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError("expects 3 channels")
        return self.b(torch.nn.functional.gelu(self.a(x)))


def test_channels_last_same_function_same_module():
    ref = _net_with_statistics().eval()
    net = copy.deepcopy(ref)
    params = [id(p) for p in net.parameters()]
    keys = list(net.state_dict())
    out = perf.prepare_network(net, channels_last=True, compile=False)
    assert out is net and [id(p) for p in out.parameters()] == params and list(out.state_dict()) == keys
    assert any(p.dim() == 4 and not p.is_contiguous() for p in out.parameters())  # really converted
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in out.parameters() if p.dim() == 4)
    x = torch.randn(2, 3, 64, 64)  # NCHW, as MONAI's prepare_batch gives it
    with torch.no_grad():
        got, want = out(x), ref(x)
    assert got.is_contiguous(memory_format=torch.channels_last)  # the format propagates from the weights
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert perf.speed_settings(out) == {"channels_last": True, "compile": None, "status": "eager", "first_call_s": None}


def test_channels_last_training_step_same_function_fp64():
    """Train mode (batch statistics) and gradients: equal in fp64, where rounding is not amplified by BatchNorm."""
    ref = _net_with_statistics("mininet").double().train()
    net = perf.prepare_network(copy.deepcopy(ref), channels_last="true")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    outs = []
    for model in (ref, net):
        y = model(x)
        y.square().mean().backward()
        outs.append((y.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=1e-5)
    for g_cl, g_ref in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(g_cl, g_ref, rtol=1e-6, atol=1e-8)


def test_compile_refused_at_compile_time_returns_eager_and_logs_once(monkeypatch, caplog):
    monkeypatch.setattr(perf, "compiler_available", lambda: (True, "g++"))

    def broken(*args, **kwargs):
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr(torch, "compile", broken)
    ref = _Tiny()
    net = copy.deepcopy(ref)
    with caplog.at_level(logging.WARNING, logger="lightseg.perf"):
        out = perf.prepare_network(net, compile=True)
    assert out is net and net._compiled_call_impl is None
    assert len(_warnings(caplog)) == 1 and "inductor exploded" in _warnings(caplog)[0]
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(out(x), ref(x))
    assert perf.speed_settings(out)["status"] == "eager (compilation failed)"


def test_compile_failing_at_first_call_falls_back_once(monkeypatch, caplog):
    monkeypatch.setattr(perf, "compiler_available", lambda: (True, "g++"))
    calls = []

    def fake_compile(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(kwargs)
            raise torch._dynamo.exc.BackendCompilerFailed(lambda *a: None, RuntimeError("no cc1plus"))

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    ref = _Tiny()
    net = perf.prepare_network(copy.deepcopy(ref), compile="max-autotune")
    assert perf.speed_settings(net)["status"] == "compile pending (first call)"
    assert perf.speed_settings(copy.deepcopy(net))["status"].startswith("eager (a copy")
    x = torch.randn(2, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="lightseg.perf"):
        for _ in range(3):
            torch.testing.assert_close(net(x), ref(x))
    assert calls == [{"mode": "max-autotune"}]  # tried once, eager from then on
    assert len(_warnings(caplog)) == 1
    info = perf.speed_settings(net)
    assert info["status"] == "eager (compilation failed)" and info["compile"] == "max-autotune"
    assert info["first_call_s"] is None and "BackendCompilerFailed" in info["error"]


def test_compile_first_call_error_of_the_network_itself_is_raised(monkeypatch):
    """A bad input is not a compilation failure: the eager error is raised, not hidden by the fallback."""
    monkeypatch.setattr(perf, "compiler_available", lambda: (True, "g++"))

    def fake_compile(fn, **kwargs):
        return fn  # "compiled" = the eager call: it fails the same way

    monkeypatch.setattr(torch, "compile", fake_compile)
    net = perf.prepare_network(_Tiny(), compile=True)
    with pytest.raises(ValueError, match="3 channels"):
        net(torch.randn(1, 2, 8, 8))


def test_no_compiler_returns_eager_and_logs_once(monkeypatch, caplog):
    monkeypatch.setattr(perf, "compiler_available", lambda: (False, "no C++ compiler for Inductor (not found)"))
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("must not compile without a compiler"))
    with caplog.at_level(logging.WARNING, logger="lightseg.perf"):
        nets = [perf.prepare_network(_Tiny(), compile="true") for _ in range(2)]
    assert all(n._compiled_call_impl is None for n in nets)
    assert len(_warnings(caplog)) == 1 and "no C++ compiler" in _warnings(caplog)[0]
    assert perf.speed_settings(nets[0])["status"].startswith("eager (no C++ compiler")


def test_compile_off_values():
    for value in (False, "false", "0", None):
        net = perf.prepare_network(_Tiny(), compile=value)
        assert net._compiled_call_impl is None and perf.speed_settings(net)["compile"] is None
    with pytest.raises(ValueError):
        perf.prepare_network(_Tiny(), compile="sometimes")


@pytest.mark.skipif(not perf.compiler_available()[0], reason="no C++ compiler for Inductor")
def test_real_compile_equals_eager_and_keeps_state_dict():
    torch.manual_seed(0)
    ref = torch.nn.Sequential(_Tiny(), torch.nn.Sigmoid())  # torch.nn's own forward at the top: still compiled
    net = copy.deepcopy(ref)
    keys = list(net.state_dict())
    out = perf.prepare_network(net, compile=True)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(out(x), ref(x), rtol=1e-5, atol=1e-6)
    info = perf.speed_settings(out)
    assert info["status"] == "compiled" and info["first_call_s"] > 0
    assert out is net and list(out.state_dict()) == keys
    out(x).sum().backward()  # the backward graph compiles too
    assert all(p.grad is not None for p in out.parameters())


def test_autocast_refused_without_native_bf16(monkeypatch, caplog):
    monkeypatch.setattr(perf, "_cpu_flags", lambda: {"fpu", "avx2", "avx512f"})
    assert perf.bf16_supported("cpu")[0] is False
    with caplog.at_level(logging.INFO, logger="lightseg.perf"):
        for _ in range(2):
            with perf.autocast(True) as on:
                assert on is False and not torch.is_autocast_enabled("cpu")
                assert (torch.randn(4, 4) @ torch.randn(4, 4)).dtype == torch.float32
    assert len(_warnings(caplog)) == 1 and "refused" in _warnings(caplog)[0]


def test_autocast_on_with_native_bf16_and_off_when_disabled(monkeypatch, caplog):
    monkeypatch.setattr(perf, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    with perf.autocast("true") as on:
        assert on is True and torch.is_autocast_enabled("cpu")
        assert (torch.randn(4, 4) @ torch.randn(4, 4)).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    caplog.clear()  # the "on" line above is captured too where an earlier test set lightseg's level to INFO
    with caplog.at_level(logging.INFO, logger="lightseg.perf"), perf.autocast(False) as on:
        assert on is False and not torch.is_autocast_enabled("cpu")
    assert not [r for r in caplog.records if r.name == "lightseg.perf"]  # disabled: silent


def test_bf16_probe_without_cpuinfo(monkeypatch):
    monkeypatch.setattr(perf, "_cpu_flags", lambda: None)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert perf.bf16_supported()[0] is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert perf.bf16_supported()[0] is True


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

        def mallopt(param: int, value: int) -> int:
            self.calls.append((param, value))
            return 1

        self.mallopt = mallopt


@pytest.fixture
def fake_libc(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(perf, "_state", {"tuned": False, "reason": "not requested"})
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    return libc


def test_tune_allocator_idempotent(fake_libc):
    assert perf.tune_allocator() is True
    first = list(fake_libc.calls)
    assert first == [(perf._M_MMAP_MAX, 0), (perf._M_TRIM_THRESHOLD, perf._TRIM_THRESHOLD)]
    assert perf.tune_allocator(True) is True and perf.tune_allocator("true") is True
    assert fake_libc.calls == first  # set once
    assert perf.allocator_state() == {"tuned": True, "reason": "glibc mallopt"}
    assert perf.tune_allocator(False) is True  # already in effect in this process: cannot be undone, says so
    assert fake_libc.calls == first


def test_tune_allocator_disabled_leaves_the_allocator_alone(fake_libc):
    assert perf.tune_allocator(enable=False) is False
    assert perf.tune_allocator("false") is False
    assert fake_libc.calls == []
    assert perf.allocator_state() == {"tuned": False, "reason": "disabled"}


def test_tune_allocator_preloaded_and_non_glibc(fake_libc, monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert perf.tune_allocator() is False and perf.allocator_state()["reason"] == "jemalloc preloaded"
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: types.SimpleNamespace())  # no mallopt (musl, macOS)
    assert perf.tune_allocator() is False and perf.allocator_state()["reason"] == "no glibc mallopt"
    assert fake_libc.calls == []


def test_autocast_inferer_returns_float32_and_is_simple_when_off():
    from lightseg.perf import AutocastInferer, bf16_supported

    net = torch.nn.Conv2d(3, 2, 3, padding=1)
    x = torch.randn(1, 3, 8, 8)
    off = AutocastInferer(False)(x, net)
    assert torch.equal(off, net(x))
    on = AutocastInferer(True)(x, net)
    assert on.dtype == torch.float32 and on.shape == off.shape
    if bf16_supported("cpu")[0]:
        assert not torch.equal(on, off) and (on - off).abs().max() < 0.05  # computed in bf16, close to fp32

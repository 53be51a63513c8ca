"""Fused BatchNorm + activation for the CPU: the same function as the blocks' separate modules, fewer passes.

The papers write ``conv -> act -> BN`` (CMUNeXt), ``conv -> BN -> act`` (CMUNeXt, MobileNetV3) and ``conv -> BN``
(Mini-Net, LV-UNet). Eager PyTorch runs each piece as its own full-resolution kernel, and on a CPU these networks
spend about half of a training step there (BatchNorm's training kernels read their input three to four times, and
the activation is stored for the backward pass). :func:`bn_act` computes the same function with a C++ kernel
(``csrc/norm_act.cpp``, built once per machine with the compiler PyTorch's extensions use) that makes two passes
forward and two backward and recomputes the activation instead of storing it. In eval mode it is one pass, used
once a training has loaded the kernel (validation): inference alone never starts a compilation.

The modules and their ``state_dict`` stay exactly as they are: the blocks (:class:`NormActSequential`) call
:func:`bn_act` with their own ``nn.BatchNorm2d`` and activation modules, so checkpoints are interchangeable with and
without the kernel. The reference path (the modules one after the other) runs instead whenever the kernel does not
apply: kernel switched off (``LIGHTSEG_FUSED=0``, :func:`set_enabled`, the bundles' ``--fused_kernels false``), no
C++ compiler (one warning, once), TorchScript, tracing, ``torch.compile``/``torch.export``/ONNX export, modules
with forward hooks, non-float32 or non-CPU tensors, autocast, layouts other than NCHW or channels_last, and
activations the kernel does not implement. Equality with the reference within 1e-5 (values, gradients and running
statistics, both layouts, every activation, every network) is tested in ``tests/test_fused.py``.

A LayerNorm-over-channels + GELU kernel for LiteNeXt was written and measured too and dropped: it was slower than
PyTorch's own LayerNorm on channels_last tensors, where the reference's permutes cost nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import torch
from torch import nn

__all__ = ["NormActSequential", "available", "bn_act", "enabled", "kernel_state", "set_enabled"]

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("csrc") / "norm_act.cpp"
_lock = threading.Lock()
_state: dict = {"enabled": os.environ.get("LIGHTSEG_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")}
_ext = None
_tried = False

_IDENTITY, _RELU, _HARDSWISH, _GELU = 0, 1, 2, 3


def set_enabled(flag: bool) -> None:
    """Switch the fused kernels on or off for this process (the bundles' ``--fused_kernels``)."""
    _state["enabled"] = bool(flag)


def enabled() -> bool:
    """Whether the fused kernels are switched on (they may still be unavailable, see :func:`available`)."""
    return bool(_state["enabled"])


def kernel_state() -> dict:
    """``{"enabled", "available", "reason"}`` for logs and MLflow params (does not build the kernel)."""
    return {"enabled": enabled(), "available": _ext is not None, "reason": _state.get("reason", "not built yet")}


def _build_name() -> str:
    """Extension name keyed by the source and the CPU (the kernel is built with -march=native)."""
    digest = hashlib.sha1(_SOURCE.read_bytes())
    try:
        with open("/proc/cpuinfo") as f:
            digest.update(next((line for line in f if line.startswith("flags")), "").encode())
    except OSError:
        pass
    digest.update(torch.__version__.encode())
    return f"lightseg_norm_act_{digest.hexdigest()[:12]}"


def available() -> bool:
    """Build (once per machine, cached by PyTorch) and load the kernel; False, with one warning, when that fails."""
    global _ext, _tried
    if _ext is not None or _tried:
        return _ext is not None
    with _lock:
        if _tried:
            return _ext is not None
        _tried = True
        try:
            from torch.utils import cpp_extension

            flags = ["-O3", "-fopenmp", "-march=native", "-fno-math-errno"]
            _ext = cpp_extension.load(
                name=_build_name(),
                sources=[str(_SOURCE)],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
            _state["reason"] = "built"
        except Exception as exc:  # no compiler, no headers, a failing build: the reference path is correct too
            _state["reason"] = f"unavailable: {type(exc).__name__}: {str(exc).strip().splitlines()[-1:] or ''}"
            logger.warning(
                "fused norm-act kernels unavailable (%s); the networks run their reference PyTorch modules, which "
                "compute the same result more slowly. Set LIGHTSEG_FUSED=0 to skip the attempt.",
                _state["reason"],
            )
    return _ext is not None


def act_code(act: nn.Module) -> int | None:
    """The kernel's code for an activation module, or None when the kernel does not implement it."""
    if isinstance(act, nn.Identity):
        return _IDENTITY
    if isinstance(act, nn.ReLU):
        return _RELU
    if isinstance(act, nn.Hardswish):
        return _HARDSWISH
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return _GELU
    return None


def _layout(x: torch.Tensor) -> bool | None:
    """True for channels_last, False for NCHW contiguous, None otherwise (a channel count of 1 is both: NCHW)."""
    if x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    return None


def _hooked(*modules: nn.Module | None) -> bool:
    """Whether forward hooks would see these modules (MAC counters, feature extractors): they then run as modules."""
    from torch.nn.modules import module as _module

    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    return any(m is not None and (m._forward_hooks or m._forward_pre_hooks) for m in modules)


def _usable(x: torch.Tensor) -> bool:
    if not enabled() or torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu" or x.numel() == 0:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return _layout(x) is not None and available()


class _BNAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, act, pre, pixel):
        y, mean, invstd, var = _ext.bn_act_forward(x, weight, bias, eps, act, pre, pixel)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.flags = (act, pre, pixel)
        return y, mean, var

    @staticmethod
    def backward(ctx, gy, _gmean, _gvar):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        act, pre, pixel = ctx.flags
        gx, gw, gb = _ext.bn_act_backward(gy, x, weight, bias, mean, invstd, act, pre, pixel)
        return gx, gw, gb, None, None, None, None


def _update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """What ``nn.BatchNorm2d`` does to its buffers in training mode, given the batch's mean and biased variance."""
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if bn.running_mean is None:
        return
    if bn.momentum is None:  # cumulative moving average
        factor = 1.0 / float(bn.num_batches_tracked)
    else:
        factor = bn.momentum
    with torch.no_grad():
        bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        bn.running_var.mul_(1 - factor).add_(var * (n / max(n - 1, 1)), alpha=factor)


def bn_act(x: torch.Tensor, bn: nn.Module, act: nn.Module | None = None, act_first: bool = True) -> torch.Tensor:
    """``bn(act(x))`` (``act_first``) or ``act(bn(x))``, through the fused kernel where it applies.

    ``act=None`` is a plain BatchNorm. ``bn`` must be an ``nn.BatchNorm2d``; its running statistics and
    ``num_batches_tracked`` are updated exactly as the module's own forward would.
    """
    code = _IDENTITY if act is None else act_code(act)
    batch_stats = bn.training or getattr(bn, "running_mean", None) is None
    # Only training builds the kernel; inference uses it once it is loaded (validation during a training), so that
    # a server's first request never waits for a compilation.
    if (
        code is not None
        and isinstance(bn, nn.BatchNorm2d)
        and bn.affine
        and (batch_stats or _ext is not None)
        and not _hooked(bn, act)
        and _usable(x)
    ):
        pixel = bool(_layout(x))
        n = x.numel() // x.shape[1]
        if batch_stats:  # batch statistics (n == 1: the module raises its own error)
            if n > 1:
                y, mean, var = _BNAct.apply(x, bn.weight, bn.bias, bn.eps, code, act_first, pixel)
                if bn.training and bn.track_running_stats:
                    _update_running_stats(bn, mean.detach(), var.detach(), n)
                return y
        elif not torch.is_grad_enabled() or not (x.requires_grad or bn.weight.requires_grad):
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            return _ext.affine_act(x, scale.contiguous(), shift.contiguous(), code, act_first, pixel)
    if act is None:
        return bn(x)
    return bn(act(x)) if act_first else act(bn(x))


class NormActSequential(nn.Sequential):
    """``nn.Sequential`` of ``(conv, BatchNorm2d[, act])`` or, with ``act_first``, ``(conv, act, BatchNorm2d)``
    whose forward runs the normalization and activation through :func:`bn_act`.

    Same children, same ``state_dict`` keys (``0``, ``1``, ``2``) and the same function as the plain sequence, which
    TorchScript compiles (the fused call is skipped there).
    """

    act_first: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            for module in self:
                x = module(x)
            return x
        return self._fused_forward(x)

    @torch.jit.unused
    def _fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self) == 2:
            return bn_act(self[0](x), self[1], None)
        if len(self) != 3:
            return super().forward(x)
        if self.act_first:
            return bn_act(self[0](x), self[2], self[1], act_first=True)
        return bn_act(self[0](x), self[1], self[2], act_first=False)

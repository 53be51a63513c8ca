"""Run-time speed settings shared by training, inference and the benchmarks.

``tune_allocator()`` keeps freed memory inside the process. On glibc systems PyTorch's eager CPU ops allocate
and free activation-sized blocks on every call; glibc serves blocks above ``M_MMAP_THRESHOLD`` with ``mmap`` and
returns them (and trims the heap) on free, so each forward pass page-faults its activations in again. Setting
``M_MMAP_MAX = 0`` (never mmap) and a high ``M_TRIM_THRESHOLD`` (never trim) removes that cost; see
``../shared/reference/cpu_speed.md`` (1.3-2.7x at batch 1 on the project's CPUs). It is a no-op, with one debug
line, where glibc's ``mallopt`` is not available (macOS, Windows, musl) or when a caching allocator (jemalloc,
tcmalloc) is preloaded.

The other speed switches, one piece of code for the bundles and for ``python -m lightseg.benchmark train``:

- :func:`prepare_network`: ``channels_last`` (NHWC) weights and ``torch.compile`` (Inductor) of the module IN
  PLACE (as ``nn.Module.compile`` does: the module, its parameters and its ``state_dict`` keys stay the same, so
  optimizers built on it and checkpoints keep working). Without a C++ compiler, or when compiling fails (when
  the module is compiled or at its first call), one warning line and the eager module. The first call's wall
  time, compilation included, is in :func:`speed_settings`.
- :func:`autocast`: bf16 autocast, entered only where the CPU computes bf16 natively (AVX-512-BF16 or AMX on
  x86, the ``bf16`` feature on Arm); elsewhere one log line and fp32 (emulated bf16 is slower than fp32).

What ``channels_last`` does with the NCHW batches MONAI's ``prepare_batch`` gives (measured on the four lightseg
networks, torch 2.13, CPU): converting the MODULE is enough. A convolution whose weight is channels_last returns
a channels_last output even for an NCHW input (oneDNN takes the weight's format), and the following element-wise
ops, norms and convolutions keep it: every activation with more than one channel is channels_last, except the
output of LiteNeXt's GCF block (its own reshapes; the next convolution converts back). Converting the input too
gives bit-identical outputs, so no input transform is needed. The function is the same: eval-mode outputs agree
with the NCHW module within 1e-7 (fp32); train-mode (batch-statistics) outputs of randomly initialized networks
differ by up to ~1e-3 in fp32, rounding amplified by BatchNorm over near-constant channels, and agree to 1e-10 in
fp64 (tests/test_perf.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = [
    "AutocastInferer",
    "allocator_state",
    "autocast",
    "bf16_supported",
    "compiler_available",
    "prepare_network",
    "speed_settings",
    "tune_allocator",
]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 1 << 30  # 1 GiB: keep up to that much freed memory in the heap
_state: dict = {"tuned": False, "reason": "not requested"}


def _preloaded_allocator() -> str | None:
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return name
    return None


def tune_allocator(enable: bool = True) -> bool:
    """Make glibc keep freed memory in the process (idempotent). Returns whether the setting is in effect.

    ``enable=False`` leaves the allocator untouched (the bundles' ``--tune_allocator false``); a setting already
    made in this process cannot be undone, and then stays reported as in effect.
    """
    if not _as_bool(enable):
        if _state["tuned"]:
            logger.debug("allocator: already tuned in this process, cannot be undone")
            return True
        _state.update(tuned=False, reason="disabled")
        return False
    if _state["tuned"]:
        return True
    preloaded = _preloaded_allocator()
    if preloaded:
        _state.update(tuned=False, reason=f"{preloaded} preloaded")
        logger.debug("allocator: %s is preloaded, glibc settings not needed", preloaded)
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _state.update(tuned=False, reason="no glibc mallopt")
        logger.debug("allocator: glibc mallopt not available, left unchanged")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    _state.update(tuned=ok, reason="glibc mallopt" if ok else "mallopt refused")
    logger.debug("allocator: %s", _state["reason"])
    return ok


def allocator_state() -> dict:
    """``{"tuned": bool, "reason": str}``: what :func:`tune_allocator` did (for logs and MLflow params)."""
    return dict(_state)


# --------------------------------------------------------------------------------------------------- helpers


def _as_bool(value: object) -> bool:
    from lightseg.utils import as_bool

    return as_bool(value)


_logged: set[str] = set()


def _log_once(key: str, level: int, message: str, *args: object) -> None:
    """Log ``message`` the first time ``key`` is seen in this process (a switch refused at every call would
    otherwise flood the log)."""
    if key in _logged:
        return
    _logged.add(key)
    logger.log(level, message, *args)


# ------------------------------------------------------------------------------------------------ bf16 autocast


def _cpu_flags() -> set[str] | None:
    """The CPU feature flags of /proc/cpuinfo (x86 ``flags``, Arm ``Features``); None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def bf16_supported(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and why (for the log and MLflow).

    CPU: the ``avx512_bf16`` or ``amx_bf16`` flag (x86) or ``bf16`` (Arm) in /proc/cpuinfo, else PyTorch's own
    probe where it has one. ``torch.backends.cpu.get_cpu_capability()`` is not enough: it says ``AVX512`` on
    CPUs with and without AVX-512-BF16. CUDA: ``torch.cuda.is_bf16_supported()``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "cuda bf16" if ok else "this GPU has no bf16"
    if device.type != "cpu":
        return False, f"bf16 autocast not handled on {device.type}"
    flags = _cpu_flags()
    if flags is not None:
        found = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
        return (
            (True, "cpu " + "+".join(found)) if found else (False, "the CPU has no native bf16 (no AVX-512-BF16, AMX)")
        )
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(p() for p in probes if p is not None):
        return True, "cpu bf16 (torch probe)"
    return False, "native bf16 not detected on this CPU"


@contextmanager
def autocast(enabled: object, device: str | torch.device = "cpu") -> Iterator[bool]:
    """bf16 autocast on ``device`` when ``enabled`` and the device computes bf16 natively; yields whether it is on.

    Refused (one log line per process, then fp32) where :func:`bf16_supported` says no. Use around the forward
    pass and the loss; the backward pass follows the forward's dtypes.
    """
    if not _as_bool(enabled):
        yield False
        return
    device = torch.device(device)
    ok, why = bf16_supported(device)
    if not ok:
        _log_once(f"autocast:{device.type}", logging.WARNING, "bf16 autocast refused: %s; running fp32", why)
        yield False
        return
    _log_once(f"autocast-on:{device.type}", logging.INFO, "bf16 autocast on (%s)", why)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield True


# ----------------------------------------------------------------------------------- channels_last and compile

_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _compile_mode(compile: object) -> str | None:
    """None (no compilation) or the ``torch.compile`` mode of ``compile`` (a bool, "true"/"false" or a mode)."""
    if isinstance(compile, str) and compile.strip().lower() in _COMPILE_MODES:
        return compile.strip().lower()
    try:
        return "default" if _as_bool(compile) else None
    except ValueError:
        raise ValueError(
            f"compile must be true/false or a torch.compile mode {_COMPILE_MODES}, got {compile!r}."
        ) from None


def compiler_available() -> tuple[bool, str]:
    """Whether Inductor finds the C++ compiler it needs for CPU code (``torch._inductor.cpp_builder``), and
    which one, or why not."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return True, str(get_cpp_compiler())
    except Exception as e:  # InvalidCxxCompiler, an import error on a stripped build, ...
        return False, f"no C++ compiler for Inductor ({type(e).__name__}: {str(e).strip()[:120] or 'not found'})"


def _compile_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import TorchDynamoException

        errors.append(TorchDynamoException)
    except ImportError:
        pass
    try:
        from torch._inductor.exc import CppCompileError

        errors.append(CppCompileError)
    except ImportError:
        pass
    return tuple(errors)


class _CompiledCall:
    """A module's compiled ``__call__`` that falls back to eager when compiling fails, and times its first call.

    At the first call any exception is checked against the eager module: if eager succeeds, compiling was what
    failed (one warning, eager from then on); if eager fails too, the eager error is raised (the input or the
    network is wrong). Later calls (recompilations for a new shape) fall back on Dynamo/Inductor errors only.
    """

    def __init__(self, module: nn.Module, compiled, info: dict) -> None:
        self.module = module
        self.compiled = compiled
        self.info = info

    def _fallback(self, error: BaseException, args, kwargs):
        self.module._compiled_call_impl = None  # nn.Module.__call__ runs the eager forward from now on
        result = self.module._call_impl(*args, **kwargs)  # raises here when the network itself is at fault
        self.info.update(status="eager (compilation failed)", error=f"{type(error).__name__}: {str(error)[:300]}")
        logger.warning(
            "torch.compile of %s failed (%s: %s); running eager",
            type(self.module).__name__,
            type(error).__name__,
            str(error).strip().splitlines()[0][:200] if str(error).strip() else "",
        )
        return result

    def __call__(self, *args, **kwargs):
        if self.info["first_call_s"] is None:
            start = time.perf_counter()
            try:
                result = self.compiled(*args, **kwargs)
            except Exception as e:
                return self._fallback(e, args, kwargs)
            self.info.update(first_call_s=time.perf_counter() - start, status="compiled")
            return result
        try:
            return self.compiled(*args, **kwargs)
        except _compile_errors() as e:
            return self._fallback(e, args, kwargs)


def _inlined_call(net: nn.Module):
    """``net``'s call through a frame of this file, for ``torch.compile``.

    ``nn.Module.compile()`` compiles ``net._call_impl``, a frame of torch/nn that Dynamo skips: it then captures
    only a user-written ``forward``, and nothing at all for a module whose ``forward`` is torch.nn's own
    (``nn.Sequential``, measured on torch 2.13: no graph, no error). Dynamo traces this frame and inlines the
    call, hooks included (what ``torch.compile(module)`` does for torch.nn modules).
    """

    def call(*args, **kwargs):
        return net._call_impl(*args, **kwargs)

    return call


def prepare_network(net: nn.Module, channels_last: object = False, compile: object = False) -> nn.Module:
    """Apply the speed switches to ``net`` in place and return it.

    Args:
        net: the module to train or run (a lightseg network, a training wrapper such as SeRP, a MONAI network).
        channels_last: convert its 4-D parameters and buffers to channels_last (see the module docstring: NCHW
            inputs need no conversion).
        compile: False, True (``torch.compile`` default mode), or a mode name ("reduce-overhead",
            "max-autotune", ...); strings "true"/"false" as from a command line. Compiled in place, where
            ``nn.Module.compile`` puts it (the same module object and ``state_dict`` keys); without a C++ compiler,
            or when compiling fails, one warning line and the eager module (a failure at the first call reruns
            that call eagerly). Compilation happens at the first call (the
            forward; the backward graph at the first backward): :func:`speed_settings` reports that call's time.
    """
    info = {"channels_last": _as_bool(channels_last), "compile": None, "status": "eager", "first_call_s": None}
    if info["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    mode = _compile_mode(compile)
    if mode is not None:
        info["compile"] = mode
        ok, detail = compiler_available()
        if not ok:
            info["status"] = f"eager ({detail})"
            _log_once("compile:no-compiler", logging.WARNING, "torch.compile off: %s; running eager", detail)
        else:
            try:
                compiled = torch.compile(_inlined_call(net), mode=mode)
                net._compiled_call_impl = _CompiledCall(net, compiled, info)  # what nn.Module.compile sets
                info["status"] = "compile pending (first call)"
            except Exception as e:
                net._compiled_call_impl = None
                info.update(status="eager (compilation failed)", error=f"{type(e).__name__}: {str(e)[:300]}")
                logger.warning("torch.compile of %s failed (%s: %s); running eager", type(net).__name__,
                               type(e).__name__, str(e)[:200])  # fmt: skip
    net._lightseg_speed = info
    return net


def speed_settings(net: nn.Module) -> dict:
    """What :func:`prepare_network` did to ``net``: ``channels_last``, ``compile`` (the mode asked for or None),
    ``status`` ("eager", "compiled", "compile pending (first call)" or "eager (<why>)") and ``first_call_s`` (the
    first compiled call's wall time, compilation included). Empty for a module it never saw."""
    info = dict(getattr(net, "_lightseg_speed", {}))
    if info.get("compile") and not info["status"].startswith("eager") and net._compiled_call_impl is None:
        info["status"] = "eager (a copy: torch does not copy the compiled call)"  # nn.Module.__getstate__ drops it
    return info


class AutocastInferer:
    """The training inferer with bf16 autocast: ``network(inputs)`` under :func:`autocast`, output back to float32.

    MONAI's trainers autocast only on CUDA (``amp=True``); this is the bundles' ``--bf16`` on a CPU (and on a GPU:
    ``device`` is where the network runs). The network, its ``state_dict`` and the loss (computed in float32 on the
    returned output) are untouched. ``enabled=False`` is MONAI's ``SimpleInferer``.
    """

    def __init__(self, enabled: object = False, device: str | torch.device = "cpu") -> None:
        self.enabled = _as_bool(enabled)
        self.device = torch.device(device)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs):
        with autocast(self.enabled, self.device) as on:
            out = network(inputs, *args, **kwargs)
        if on and isinstance(out, torch.Tensor) and out.is_floating_point():
            out = out.float()
        return out

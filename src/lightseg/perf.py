"""Run-time speed settings shared by training, inference and the benchmarks.

``tune_allocator()`` keeps freed memory inside the process. On glibc systems PyTorch's eager CPU ops allocate
and free activation-sized blocks on every call; glibc serves blocks above ``M_MMAP_THRESHOLD`` with ``mmap`` and
returns them (and trims the heap) on free, so each forward pass page-faults its activations in again. Setting
``M_MMAP_MAX = 0`` (never mmap) and a high ``M_TRIM_THRESHOLD`` (never trim) removes that cost; see
``../shared/reference/cpu_speed.md`` (1.3-2.7x at batch 1 on the project's CPUs). It is a no-op, with one debug
line, where glibc's ``mallopt`` is not available (macOS, Windows, musl) or when a caching allocator (jemalloc,
tcmalloc) is preloaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["allocator_state", "tune_allocator"]

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

    ``enable=False`` leaves the allocator untouched (the bundles' ``--tune_allocator false``).
    """
    if not enable:
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

"""Holoscan's one native requirement on a machine without CUDA: ``libcudart.so.13``.

Holoscan (and therefore the MONAI Deploy App SDK, and, once the SDK is installed, ``import monai`` itself) loads the
CUDA runtime library even when it only schedules CPU work. :func:`preload_cudart` finds it (the system loader's
path, then the ``nvidia-cuda-runtime`` wheel's ``nvidia/cu13/lib``) and loads it with ``RTLD_GLOBAL`` so that
Holoscan's own ``dlopen`` finds it by its soname; when it is nowhere, it raises :class:`CudartMissingError` naming
the fix. Only the standard library is imported here.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CUDART", "CudartMissingError", "cudart_candidates", "preload_cudart", "sdk_installed"]

logger = logging.getLogger(__name__)

CUDART = "libcudart.so.13"
FIX = (
    "pip install nvidia-cuda-runtime==13.0.96 (the deploy environment of scripts/deploy_env.sh has it), or put the "
    "folder holding libcudart.so.13 (<site-packages>/nvidia/cu13/lib) on LD_LIBRARY_PATH"
)
_loaded: str | None = None


class CudartMissingError(ImportError):
    """``libcudart.so.13`` cannot be loaded: Holoscan (MONAI Deploy) cannot start, even on CPU."""


def sdk_installed() -> bool:
    """Whether the MONAI Deploy App SDK is installed (checked from package metadata, without importing it)."""
    from importlib import metadata

    try:
        metadata.distribution("monai-deploy-app-sdk")
    except metadata.PackageNotFoundError:
        return False
    return True


def cudart_candidates(site_dirs: Sequence[str] | None = None) -> list[str]:
    """Where to look, in order: the soname itself (system loader, LD_LIBRARY_PATH), then the pip wheel's copy."""
    if site_dirs is None:
        import site

        site_dirs = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    found = [str(Path(d) / "nvidia" / "cu13" / "lib" / CUDART) for d in site_dirs if d]
    return [CUDART, *dict.fromkeys(p for p in found if os.path.isfile(p))]


def preload_cudart(candidates: Sequence[str] | None = None) -> str:
    """Load ``libcudart.so.13`` globally (once); returns what was loaded. Raises :class:`CudartMissingError`."""
    global _loaded
    if _loaded is not None and candidates is None:
        return _loaded
    tried = []
    for candidate in cudart_candidates() if candidates is None else candidates:
        try:
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            tried.append(f"{candidate} ({e})")
            continue
        logger.debug("loaded %s", candidate)
        if candidates is None:
            _loaded = candidate
        return candidate
    raise CudartMissingError(
        f"Holoscan (MONAI Deploy App SDK) needs {CUDART} even on CPU and it could not be loaded; tried: "
        f"{'; '.join(tried) or 'nothing'}. Fix: {FIX}."
    )

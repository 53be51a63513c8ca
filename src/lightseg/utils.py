"""Small helpers shared by configs and handlers."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["as_bool", "atomic_path", "ensure_writable"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", "none", ""}


def as_bool(value: object) -> bool:
    """A boolean from a bool, a number or a string such as ``"false"``.

    ``python -m monai.bundle run --use_mlflow false`` passes the *string* ``"false"`` (fire only parses
    ``False``), which is truthy in Python; configs and handlers read their flags through this function.

    Raises:
        ValueError: for a string that is not a recognised boolean.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"not a boolean: {value!r} (use true/false).")
    return bool(value)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write ``path`` atomically: yields a temporary path with the SAME file name (in a hidden folder beside
    ``path``), which replaces ``path`` when the block succeeds; on an exception nothing is written.

    The same name matters: writers pick the format from the suffix (PNG, ``.nii.gz``), and a TorchScript archive
    takes its root folder from the file's stem (MONAI Deploy looks for ``<stem>/extra/...`` inside it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp = folder / path.name
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} (for {path}).")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and write (then remove) a probe file in it: permissions, read-only mounts and a file in
    the way all show up here, before any work is done. Raises the ``OSError`` of the failing step."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_test_{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
    return path

"""Inference on a folder, one file at a time: a bad file is reported and skipped, never the end of the run.

``inference.json`` passes its inputs through :meth:`InputReport.usable` (each file is opened and fully decoded
first: missing, empty, truncated, too small, multi-frame and unreadable files are reported in one line each and
left out), wraps the evaluator's postprocessing with :meth:`InputReport.guard` (a file whose mask cannot be
computed or written is reported and the others go on), and ends with :meth:`InputReport.finish`, which logs a
summary and exits with status 1 when any file failed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["InputReport", "check_output_dir"]

logger = logging.getLogger(__name__)


def check_output_dir(folder: str | os.PathLike) -> str:
    """Create ``folder`` and check that files can be written there, before any model runs.

    Raises:
        PermissionError / OSError: naming the folder and ``--output_dir``.
    """
    from lightseg.utils import ensure_writable

    path = Path(folder)
    try:
        ensure_writable(path)
    except OSError as e:
        raise type(e)(
            f"cannot write the masks to {path} ({e.strerror or e}): pass --output_dir <a writable folder>."
        ) from None
    return str(path)


def _name_of(data: dict) -> str:
    image = data.get("image") if isinstance(data, dict) else None
    meta = getattr(image, "meta", None) or {}
    name = meta.get("filename_or_obj") or (data.get("image_path") if isinstance(data, dict) else None)
    return str(name or "<unknown input>")


def _reason(error: BaseException) -> str:
    """The innermost message of an exception chain (MONAI wraps transform errors in several layers)."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    inner = seen[-1]
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[-1] if text else ''}".strip(": ")


class InputReport:
    """Collects, per input file, whether its mask was written; see the module docstring."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}
        self.done = 0

    def fail(self, name: str, reason: str) -> None:
        self.failed[name] = reason
        logger.error("skipped: %s", reason if name in reason else f"{name}: {reason}")

    def usable(self, entries: Sequence[dict], decode: bool = True) -> list[dict]:
        """The entries whose image file passes :func:`lightseg.data.io.check_image_file`; the others are reported.

        Raises:
            lightseg.data.DatalistError: when no input is usable (listing why, for the first files).
        """
        from lightseg.data.io import DatalistError, check_image_file

        good = []
        for entry in entries:
            try:
                check_image_file(entry["image"], decode=decode)
                good.append(entry)
            except DatalistError as e:
                self.fail(str(entry["image"]), str(e))
        if not good:
            shown = "; ".join(f"{k}: {v}" for k, v in list(self.failed.items())[:5])
            raise DatalistError(f"none of the {len(entries)} inputs can be read: {shown}")
        return good

    def guard(self, transform: Callable) -> Callable:
        """``transform`` applied to one item; an exception is reported with the item's file and the item is
        passed on unprocessed (nothing is written for it)."""

        def guarded(data):
            try:
                out = transform(data)
            except Exception as e:
                self.fail(_name_of(data), _reason(e))
                return data
            self.done += 1
            return out

        guarded.transform = transform  # what it wraps, for introspection
        return guarded

    def finish(self) -> int:
        """Log the summary; exit with status 1 when any input failed."""
        if not self.failed:
            logger.info("inference finished: %d file(s) written, none failed", self.done)
            return 0
        logger.error(
            "inference finished: %d file(s) written, %d failed:\n%s",
            self.done,
            len(self.failed),
            "\n".join(f"  {reason if name in reason else f'{name}: {reason}'}" for name, reason in self.failed.items()),
        )
        raise SystemExit(1)

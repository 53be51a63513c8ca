"""Data: synthetic demo data, Decathlon datalists, seeded splits and pre-flight checks.

Command line: ``python -m lightseg.data --help``.
"""

from __future__ import annotations

from lightseg.data.datalist import (
    ensure_demo_data,
    load_datalist,
    make_demo_datalist,
    split_ids,
    validate_entries,
    write_json,
)
from lightseg.data.io import DatalistError, Header, read_header

__all__ = [
    "DatalistError",
    "Header",
    "ensure_demo_data",
    "list_images",
    "load_datalist",
    "make_demo_datalist",
    "read_header",
    "split_ids",
    "validate_entries",
    "write_json",
]


def list_images(
    source: str, key: str = "testing", base_dir: str | None = None, in_channels: int | None = None
) -> list[dict]:
    """Inference inputs: every supported image file in a folder (sorted), or one section of a datalist.

    A folder is searched non-recursively; files whose name contains ``_seg`` (our own outputs) are skipped.
    With ``in_channels`` 1 the colour files among them are logged (inference converts them to grayscale).
    Raises :class:`DatalistError` when the folder or datalist does not exist or yields no image.
    """
    entries = _list_images(source, key, base_dir)
    if in_channels is not None and int(in_channels) == 1:
        _log_colour_inputs(entries)
    return entries


def _log_colour_inputs(entries: list[dict]) -> None:
    import logging

    from lightseg.data.io import read_header

    colour = []
    for entry in entries:
        try:
            if read_header(entry["image"]).channels >= 3:
                colour.append(entry["image"])
        except DatalistError:
            continue  # unreadable files fail with their own message when loaded
    if colour:
        shown = ", ".join(str(c) for c in colour[:5]) + (f" and {len(colour) - 5} more" if len(colour) > 5 else "")
        logging.getLogger("lightseg.data").info(
            "the model takes 1 channel: %d RGB(A) input(s) are converted to grayscale (luminance): %s",
            len(colour),
            shown,
        )


def _list_images(source: str, key: str = "testing", base_dir: str | None = None) -> list[dict]:
    from pathlib import Path

    from lightseg.data.io import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES

    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        return [{"image": e["image"]} for e in load_datalist(path, key, base_dir, validate=False)]
    if not path.is_dir():
        raise DatalistError(f"input {source} is neither a folder nor a datalist JSON file.")
    suffixes = PIL_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.name.lower().endswith(suffixes) and "_seg." not in p.name and not p.name.startswith(".")
    )
    if not files:
        raise DatalistError(f"no image files ({', '.join(suffixes)}) in folder {source}.")
    return [{"image": str(p)} for p in files]

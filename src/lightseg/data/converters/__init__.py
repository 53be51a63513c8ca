"""Dataset converters: official release layout -> normalized images, 0/1 masks and a seeded datalist.

    python -m lightseg.data prepare kvasir_seg --raw /data/Kvasir-SEG --out data/kvasir_seg

``list_converters()`` names the supported datasets; ``prepare(name, raw, out)`` runs one.
"""

from __future__ import annotations

import os

from lightseg.data.converters.base import Converter, RawCase, convert, make_datalist, read_array
from lightseg.data.converters.datasets import (
    CONVERTERS,
    KNOWN_RELEASES,
    STARE_LABELLED,
    known_cases,
    read_aperio_xml,
    two_stage_split,
)
from lightseg.data.io import DatalistError

__all__ = [
    "CONVERTERS",
    "KNOWN_RELEASES",
    "STARE_LABELLED",
    "Converter",
    "RawCase",
    "convert",
    "known_cases",
    "list_converters",
    "make_datalist",
    "prepare",
    "read_aperio_xml",
    "read_array",
    "two_stage_split",
]


def list_converters() -> list[str]:
    """Names accepted by :func:`prepare`."""
    return sorted(CONVERTERS)


def prepare(
    name: str, raw: str | os.PathLike, out: str | os.PathLike, seed: int = 0, overwrite: bool = False,
    progress: bool = True,
) -> dict:  # fmt: skip
    """Convert dataset ``name`` from its official layout at ``raw`` into ``out`` (see :func:`convert`)."""
    if name not in CONVERTERS:
        raise DatalistError(f"unknown dataset {name!r}; available: {', '.join(list_converters())}.")
    return convert(CONVERTERS[name], raw, out, seed=seed, overwrite=overwrite, progress=progress)

"""Reading image headers without decoding pixels, for quick pre-flight checks of a whole datalist.

Spatial shapes are reported as (height, width) in the file's row/column order, whatever library reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DICOM_SUFFIXES",
    "MIN_IMAGE_SIZE",
    "NIFTI_SUFFIXES",
    "PIL_SUFFIXES",
    "DatalistError",
    "Header",
    "check_image_file",
    "read_header",
]

# the smallest image (height and width, pixels) training, evaluation and inference accept
MIN_IMAGE_SIZE = 8

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")


class DatalistError(ValueError):
    """A datalist or the files it names cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Header:
    spatial_shape: tuple[int, int]
    channels: int


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _pil_header(path: Path) -> Header:
    from PIL import Image

    with Image.open(path) as im:
        frames = int(getattr(im, "n_frames", 1) or 1)
        if frames > 1:
            raise DatalistError(
                f"{path} has {frames} frames (an animated or multi-page image); only its first frame would be read. "
                "Save each frame as its own image file and list those."
            )
        bands = len(im.getbands())
        if im.mode == "P":  # palette images become RGB(A) when loaded
            bands = 4 if "transparency" in im.info else 3
        return Header((im.height, im.width), bands)


def _itk_header(path: Path) -> Header:
    import itk

    reader = itk.ImageFileReader.New(FileName=str(path))
    reader.UpdateOutputInformation()
    io = reader.GetImageIO()
    dims = [io.GetDimensions(i) for i in range(io.GetNumberOfDimensions())]
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    if len(dims) != 2:
        raise DatalistError(f"{path} is not a 2D image (dimensions {dims}).")
    return Header((dims[1], dims[0]), io.GetNumberOfComponents())


def read_header(path: str | os.PathLike) -> Header:
    """Spatial shape (H, W) and channel count of a 2D image file.

    Supports PNG/JPEG/BMP/GIF/TIFF/PPM (Pillow, with ITK for TIFFs Pillow cannot open), 2D NIfTI (a trailing
    singleton dimension is allowed) and single-frame DICOM. Raises :class:`DatalistError` naming the file when
    it does not exist, cannot be read, or is not 2D.
    """
    path = Path(path)
    if not path.is_file():
        raise DatalistError(f"image file {path} does not exist.")
    suffix = _suffix(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            shape = list(nib.load(str(path)).shape)
            channels = 1
            if len(shape) == 5 and shape[3] == 1:  # NIfTI vector images keep components in dimension 5
                channels = shape.pop()
                shape.pop()
            while len(shape) > 2 and shape[-1] == 1:
                shape.pop()
            if len(shape) != 2:
                raise DatalistError(f"{path} is not a 2D image (NIfTI shape {nib.load(str(path)).shape}).")
            # NIfTI stores (x, y): x runs along image columns
            return Header((int(shape[1]), int(shape[0])), channels)
        if suffix in DICOM_SUFFIXES:
            import pydicom

            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            if frames != 1:
                raise DatalistError(f"{path} is a multi-frame DICOM ({frames} frames); use single-frame files.")
            return Header((int(ds.Rows), int(ds.Columns)), int(getattr(ds, "SamplesPerPixel", 1)))
        if suffix in PIL_SUFFIXES:
            try:
                return _pil_header(path)
            except Exception:
                if suffix not in (".tif", ".tiff"):
                    raise
                return _itk_header(path)
        return _itk_header(path)
    except DatalistError:
        raise
    except Exception as e:
        raise DatalistError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e


def check_image_file(path: str | os.PathLike, decode: bool = True) -> Header:
    """Everything :func:`read_header` checks, plus a minimum size of :data:`MIN_IMAGE_SIZE` pixels and, with
    ``decode``, a full decode of Pillow-read files (a truncated JPEG or PNG only fails when its pixels are read).

    Raises:
        DatalistError: naming the file and the problem.
    """
    header = read_header(path)
    if min(header.spatial_shape) < MIN_IMAGE_SIZE:
        raise DatalistError(
            f"{path} is {header.spatial_shape[0]} x {header.spatial_shape[1]} pixels (height x width); images must "
            f"be at least {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}."
        )
    if decode and _suffix(Path(path)) in PIL_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
        except Exception as e:
            if _suffix(Path(path)) in (".tif", ".tiff"):
                return header  # read with ITK (see read_header)
            raise DatalistError(f"cannot decode image file {path}: {type(e).__name__}: {e}") from None
    return header

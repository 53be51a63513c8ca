"""MONAI Deploy operators for 2D images: image-file loading, single-frame DICOM adaptation, PNG mask writing.

Both loaders hand the bundle operator an SDK :class:`~monai.deploy.core.Image` holding exactly what MONAI's
``LoadImage`` returns for the same file (the same reader, array, spacing and affine: MONAI's (W, H[, C]) order),
with ``spacing`` and ``original_affine`` in its metadata, so that ``MonaiBundleInferenceOperator`` passes it on
unchanged and the bundle's own preprocessing (``LoadImage`` dropped) sees what ``monai.bundle run`` would see.
The bundle's ``deploy_postprocessing`` ends with a rows-first uint8 mask, which :class:`PNGMaskWriterOperator`
writes at the input's size and orientation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from monai.deploy.core import ConditionType, Fragment, Image, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series_selection import StudySelectedSeries

__all__ = [
    "IMAGE_SUFFIXES",
    "DICOMImageAdapterOperator",
    "ImageFileLoaderOperator",
    "PNGMaskWriterOperator",
    "list_image_files",
    "to_sdk_image",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_image_files(path: str | Path) -> list[Path]:
    """One image file, or the image files of a folder (sorted, non-recursive; our ``*_seg.*`` outputs skipped)."""
    path = Path(path)
    if path.is_file():
        if not path.name.lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(f"{path} is not a {'/'.join(IMAGE_SUFFIXES)} file.")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input {path} does not exist.")
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file()
        and p.name.lower().endswith(IMAGE_SUFFIXES)
        and "_seg." not in p.name
        and "_overlay." not in p.name
    )
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}.")
    return files


def to_sdk_image(img) -> Image:
    """An SDK Image of a MONAI ``MetaTensor`` from ``LoadImage``: numpy data, plain metadata with ``spacing`` and
    ``original_affine`` (so the bundle operator does not re-interpret it as a DICOM volume)."""
    from monai.utils import MetaKeys

    meta = {}
    for key, value in dict(img.meta).items():
        meta[key] = value.detach().cpu().numpy() if hasattr(value, "detach") else value
    affine = np.asarray(img.affine.detach().cpu().numpy() if hasattr(img.affine, "detach") else img.affine)
    meta[MetaKeys.AFFINE] = affine
    meta.setdefault(MetaKeys.ORIGINAL_AFFINE, affine.copy())
    meta.setdefault("spacing", np.sqrt((affine[:-1, :-1] ** 2).sum(axis=0)))
    return Image(np.asarray(img.detach().cpu().numpy()), metadata=meta)


class ImageFileLoaderOperator(Operator):
    """Emits one image (PNG/JPEG/TIFF/BMP, grayscale or RGB[A]) per tick on port ``image``.

    Give it a ``CountCondition`` of ``len(files)``. Files are read with MONAI's ``LoadImage`` (Pillow for
    PNG/JPEG/BMP, ITK for TIFF), as the bundle's ``LoadImaged`` reads them in ``monai.bundle run``.
    """

    def __init__(self, fragment: Fragment, *args, files: list[Path], **kwargs):
        self.files = [Path(f) for f in files]
        self._next = 0
        self.output_name = "image"
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.output(self.output_name)

    def compute(self, op_input, op_output, context):
        from monai.transforms import LoadImage

        if self._next >= len(self.files):
            raise RuntimeError(f"{self.name}: scheduled more often than there are files ({len(self.files)})")
        path = self.files[self._next]
        self._next += 1
        try:
            img = LoadImage(image_only=True)(str(path))
        except Exception as e:
            raise RuntimeError(f"cannot read image {path}: {e}") from e
        logger.info("loaded %s: %s", path, tuple(img.shape))
        op_output.emit(to_sdk_image(img), self.output_name)


class DICOMImageAdapterOperator(Operator):
    """Selected single-frame DICOM series -> SDK Image with spacing and affine (monochrome or RGB).

    The SDK's ``DICOMSeriesToVolumeOperator`` gives a single-frame series no affine and reads monochrome only;
    this reads the instance's file with MONAI's ``LoadImage`` and ``PydicomReader`` (the reader the bundles'
    ``LoadImaged`` uses), so the array, spacing and affine are those ``monai.bundle run`` sees; for colour
    (RGB, YBR) instances it marks the last axis as channels, which PydicomReader leaves unmarked. A SEG
    needs consistent spatial attributes in its source: an instance with ``PixelSpacing`` but no
    ``SliceThickness`` (common in secondary captures) gets ``SliceThickness`` 1.0 in memory, otherwise highdicom
    writes a SEG it cannot read back.
    """

    def __init__(self, fragment: Fragment, *args, **kwargs):
        self.input_name = "study_selected_series_list"
        self.output_name = "image"
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input(self.input_name)
        spec.output(self.output_name).condition(ConditionType.NONE)

    def compute(self, op_input, op_output, context):
        from monai.transforms import LoadImage

        selected = op_input.receive(self.input_name)
        if not selected or not isinstance(selected[0], StudySelectedSeries) or not selected[0].selected_series:
            raise ValueError("no DICOM series was selected: the input holds no image series.")
        series = selected[0].selected_series[0].series
        instances = series.get_sop_instances()
        if len(instances) != 1:
            raise ValueError(
                f"series {series.SeriesInstanceUID} has {len(instances)} instances: the 2D apps take a single-frame "
                "series (one image)."
            )
        ds = instances[0].get_native_sop_instance()
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise ValueError(f"{getattr(ds, 'filename', 'the instance')} is multi-frame: the 2D apps take one frame.")
        if "PixelSpacing" in ds and "SliceThickness" not in ds:
            ds.SliceThickness = 1.0
        source = getattr(ds, "filename", None)
        if not source or not Path(str(source)).is_file():
            raise ValueError(f"instance {ds.SOPInstanceUID} has no file on disk to read the pixels from.")
        try:
            img = LoadImage(image_only=True, reader="PydicomReader")(str(source))
        except Exception as e:
            raise RuntimeError(f"cannot read DICOM {source}: {e}") from e
        if int(ds.SamplesPerPixel) > 1 and img.ndim == 3:
            # PydicomReader leaves the channel dimension of colour DICOM unmarked (NaN): EnsureChannelFirst would
            # then add a leading one and keep the samples as a spatial axis
            img.meta["original_channel_dim"] = -1
        logger.info(
            "DICOM %s (%s, %s samples/pixel): %s", source, ds.PhotometricInterpretation, ds.SamplesPerPixel,
            tuple(img.shape),
        )  # fmt: skip
        op_output.emit(to_sdk_image(img), self.output_name)


class PNGMaskWriterOperator(Operator):
    """Writes the mask Image on port ``seg_image`` as ``<output>/<input stem>_seg.png`` (uint8, ``scale``: 255 for
    0/255, 1 for 0/1), with an optional ``<stem>_overlay.png`` (the input with the mask in red).

    The mask must be rows-first (the bundles' ``deploy_postprocessing`` transposes MONAI's (W, H)); its shape must
    equal the input's rows x columns, which is checked.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: Path, scale: int = 255, overlay: bool = False, **kw):
        if scale not in (1, 255):
            raise ValueError(f"scale must be 1 or 255, not {scale}")
        self.output_folder = Path(output_folder)
        self.scale = scale
        self.overlay = overlay
        self.input_name = "seg_image"
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kw)

    def setup(self, spec: OperatorSpec):
        spec.input(self.input_name)

    def compute(self, op_input, op_output, context):
        from PIL import Image as PILImage

        seg = op_input.receive(self.input_name)
        mask = np.asarray(seg.asnumpy() if isinstance(seg, Image) else seg)
        meta = seg.metadata() if isinstance(seg, Image) else {}
        if mask.ndim != 2:
            raise ValueError(f"expected a 2D mask, got shape {mask.shape}: is deploy_postprocessing selected?")
        source = str(meta.get("filename_or_obj", "") or "image")
        shape = meta.get("spatial_shape")
        if shape is not None and tuple(int(s) for s in np.asarray(shape)[:2])[::-1] != mask.shape:
            raise ValueError(f"mask shape {mask.shape} is not the rows x columns of {source} (W, H = {shape})")
        stem = Path(source).name
        for suffix in (".nii.gz", *IMAGE_SUFFIXES, ".dcm", ".dicom"):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        self.output_folder.mkdir(parents=True, exist_ok=True)
        out = self.output_folder / f"{stem}_seg.png"
        PILImage.fromarray(((mask > 0) * self.scale).astype(np.uint8)).save(out)
        self.written.append(out)
        logger.info("wrote %s (%d x %d, %d foreground pixels)", out, *mask.shape, int((mask > 0).sum()))
        if self.overlay:
            self._write_overlay(source, mask > 0, self.output_folder / f"{stem}_overlay.png")

    @staticmethod
    def _write_overlay(source: str, mask: np.ndarray, out: Path) -> None:
        from PIL import Image as PILImage

        try:
            if source.lower().endswith((".dcm", ".dicom")):
                import pydicom

                pixels = np.asarray(pydicom.dcmread(source).pixel_array, dtype=np.float64)
                pixels = (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1e-8) * 255
                base = PILImage.fromarray(pixels.astype(np.uint8)).convert("RGB")
            else:
                base = PILImage.open(source).convert("RGB")
        except Exception as e:  # the mask itself is written; the overlay is a convenience
            logger.warning("no overlay for %s: %s", source, e)
            return
        rgb = np.asarray(base).astype(np.float64)
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * np.array([255.0, 0.0, 0.0])
        PILImage.fromarray(rgb.astype(np.uint8)).save(out)
        logger.info("wrote %s", out)

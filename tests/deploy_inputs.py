"""Inputs for the MONAI Deploy tests: single-frame DICOM (monochrome, RGB), PNG and JPEG files of odd sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def scene(h: int, w: int, rgb: bool, seed: int = 0) -> np.ndarray:
    """An asymmetric scene: a bright block in the top-right quadrant, an ellipse, noise (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.normal(50, 12, (h, w))
    base += 140 * ((((yy - 0.6 * h) / (0.2 * h)) ** 2 + ((xx - 0.35 * w) / (0.15 * w)) ** 2) <= 1)
    base[h // 10 : h // 3, (3 * w) // 5 : (9 * w) // 10] = 240
    img = np.clip(base, 0, 255)
    if rgb:
        img = np.stack([img, img * 0.8 + 20, img * 0.6], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_dicom(
    path: Path, pixels: np.ndarray, spacing: tuple[float, float] = (0.5, 0.7), frame_of_reference: str | None = None
) -> Path:
    """A single-frame secondary capture: MONOCHROME2 (2D ``pixels``, stored as 12 bits) or RGB (H x W x 3 uint8),
    with PixelSpacing, a frame of reference and patient position/orientation."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.PatientID = "lightseg-test"
    ds.PatientName = "Test^Deploy"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.StudyDate, ds.StudyTime = "20261202", "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "lightseg"
    ds.FrameOfReferenceUID = frame_of_reference or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PatientPosition = "HFS"
    ds.PixelSpacing = list(spacing)
    ds.Rows, ds.Columns = pixels.shape[:2]
    if pixels.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = pixels.astype(np.uint8).tobytes()
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelData = (pixels.astype(np.uint16) * 16).tobytes()
    ds.PixelRepresentation = 0
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_image(path: Path, pixels: np.ndarray) -> Path:
    kwargs = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(pixels).save(path, **kwargs)
    return path

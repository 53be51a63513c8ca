"""The two MONAI Deploy applications: DICOM in -> DICOM SEG + PNG out, and image file(s) in -> PNG mask(s) out.

Both run the bundle with the SDK's ``MonaiBundleInferenceOperator`` on the TorchScript file given with ``-m``;
its embedded ``inference.json`` supplies the preprocessing and the ``deploy_postprocessing`` (selected with
``BundleConfigNames(postproc_name=...)``). Run in-process as ``App([prog, prog, "-i", in, "-o", out, "-m",
model]).run()``: Holoscan's ``Application`` and the SDK's argument parser each drop one leading item.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lightseg.deploy.runtime import preload_cudart

preload_cudart()

from monai.deploy.conditions import CountCondition  # noqa: E402
from monai.deploy.core import Application, IOType  # noqa: E402
from monai.deploy.core.domain import Image  # noqa: E402
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator  # noqa: E402
from monai.deploy.operators.dicom_seg_writer_operator import (  # noqa: E402
    DICOMSegmentationWriterOperator,
    SegmentDescription,
)
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator  # noqa: E402
from monai.deploy.operators.monai_bundle_inference_operator import (  # noqa: E402
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
)

from lightseg.deploy.operators import (  # noqa: E402
    DICOMImageAdapterOperator,
    ImageFileLoaderOperator,
    PNGMaskWriterOperator,
    list_image_files,
)
from lightseg.export import read_embedded_configs  # noqa: E402

__all__ = ["POSTPROC_NAME", "SELECTION_RULES", "DicomSegApp", "ImageSegApp", "bundle_info", "segment_descriptions"]

logger = logging.getLogger(__name__)

POSTPROC_NAME = "deploy_postprocessing"
CONFIG_NAMES = BundleConfigNames(postproc_name=POSTPROC_NAME, config_names="inference")
# any series with a modality: the adapter then insists on a single-frame instance
SELECTION_RULES = '{"selections": [{"name": "2D image", "conditions": {"Modality": "(?i).+"}}]}'


def bundle_info(model_path: str | Path) -> dict:
    """metadata.json and inference.json embedded in the bundle's TorchScript file, checked for what the apps need.

    Raises ``ValueError`` naming the file when ``deploy_postprocessing`` is absent: the SDK would silently apply no
    postprocessing at all.
    """
    path = Path(model_path)
    if path.is_dir():
        candidates = sorted(path.glob("*.ts")) + sorted(path.glob("*/model.ts"))
        if len(candidates) != 1:
            raise FileNotFoundError(f"-m {path}: give the bundle's model.ts (found {[str(c) for c in candidates]})")
        path = candidates[0]
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist: export it with scripts/export_bundle.py.")
    configs = read_embedded_configs(path)
    if POSTPROC_NAME not in configs["inference.json"]:
        raise ValueError(
            f"{path}: its embedded inference.json has no {POSTPROC_NAME!r}; MONAI Deploy would silently run with no "
            "postprocessing. Re-export it with scripts/export_bundle.py from a bundle whose inference.json has it."
        )
    return {"path": path, "metadata": configs["metadata.json"], "inference": configs["inference.json"]}


def segment_descriptions(metadata: dict) -> list[SegmentDescription]:
    """One SEG segment per foreground class of ``network_data_format.outputs.pred.channel_def``."""
    from pydicom.sr.codedict import codes

    channel_def = metadata["network_data_format"]["outputs"]["pred"].get("channel_def") or {"1": "foreground"}
    labels = [name for key, name in sorted(channel_def.items(), key=lambda kv: int(kv[0])) if int(key) > 0]
    return [
        SegmentDescription(
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_name=metadata.get("name", "lightseg"),
            algorithm_family=codes.DCM.ArtificialIntelligence,
            algorithm_version=str(metadata.get("version", "0")),
        )
        for label in labels
    ]


def _bundle_operator(app: Application, app_context, info: dict) -> MonaiBundleInferenceOperator:
    return MonaiBundleInferenceOperator(
        app,
        input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
        output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
        app_context=app_context,
        bundle_config_names=CONFIG_NAMES,
        bundle_path=str(info["path"]),
        name="bundle_inference",
    )


class DicomSegApp(Application):
    """DICOM folder (one single-frame series, monochrome or RGB) -> DICOM SEG (+ ``<stem>_seg.png``)."""

    png_scale = 255

    def compose(self):
        app_context = Application.init_app_context(self.argv)
        info = bundle_info(app_context.model_path)
        out = Path(app_context.output_path)
        loader = DICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=Path(app_context.input_path), name="dicom_loader"
        )
        selector = DICOMSeriesSelectorOperator(self, rules=SELECTION_RULES, name="series_selector")
        adapter = DICOMImageAdapterOperator(self, name="single_frame_adapter")
        bundle = _bundle_operator(self, app_context, info)
        seg_writer = DICOMSegmentationWriterOperator(
            self,
            segment_descriptions=segment_descriptions(info["metadata"]),
            output_folder=out,
            omit_empty_frames=False,
            name="dicom_seg_writer",
        )
        png_writer = PNGMaskWriterOperator(self, output_folder=out, scale=self.png_scale, name="png_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, adapter, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(adapter, bundle, {("image", "image")})
        self.add_flow(bundle, seg_writer, {("pred", "seg_image")})
        self.add_flow(selector, seg_writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(bundle, png_writer, {("pred", "seg_image")})
        logger.info("DICOM app: %s -> %s with %s", app_context.input_path, out, info["path"])


class ImageSegApp(Application):
    """PNG/JPEG/TIFF/BMP file or folder -> ``<stem>_seg.png`` masks (0/255, or 0/1 with ``png_scale = 1``)."""

    png_scale = 255
    overlay = False

    def compose(self):
        app_context = Application.init_app_context(self.argv)
        info = bundle_info(app_context.model_path)
        files = list_image_files(app_context.input_path)
        out = Path(app_context.output_path)
        loader = ImageFileLoaderOperator(self, CountCondition(self, len(files)), files=files, name="image_loader")
        bundle = _bundle_operator(self, app_context, info)
        writer = PNGMaskWriterOperator(
            self, output_folder=out, scale=self.png_scale, overlay=self.overlay, name="png_writer"
        )
        self.add_flow(loader, bundle, {("image", "image")})
        self.add_flow(bundle, writer, {("pred", "seg_image")})
        logger.info(
            "image app: %d file(s) from %s -> %s with %s", len(files), app_context.input_path, out, info["path"]
        )

"""Runs lightseg's MONAI Deploy apps in-process with the real SDK; executed by the deploy environment's Python.

    <deploy python> tests/deploy_driver.py plan.json results.json

``plan.json``: {"runs": [{"app": "image"|"dicom", "input": ..., "output": ..., "model": ..., "scale": 255,
"overlay": false, "key": ...}], "missing_postproc_model": path or null}. Each run is one ``App([...]).run()``;
its wall time (file in -> mask file out, including the app's start and model load) goes to ``results.json``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback


def read_seg(input_dir: str, output_dir: str) -> dict:
    """The DICOM SEG written to ``output_dir``, read back with pydicom and ``highdicom.seg.segread`` (both live in
    the deploy environment only); its pixels for segment 1 go to ``<output_dir>/seg_pixels.npy``."""
    from pathlib import Path

    import highdicom as hd
    import numpy as np
    import pydicom

    segs = sorted(Path(output_dir).glob("*.dcm"))
    if len(segs) != 1:
        return {"error": f"{output_dir}: expected one DICOM SEG, found {[s.name for s in segs]}"}
    source = pydicom.dcmread(next(Path(input_dir).glob("*.dcm")))
    ds = pydicom.dcmread(segs[0])
    seg = hd.seg.segread(segs[0])
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source.SOPInstanceUID], segment_numbers=[1])
    np.save(Path(output_dir) / "seg_pixels.npy", np.asarray(pixels[0, ..., 0]))
    return {
        "error": None,
        "modality": ds.Modality,
        "rows_columns": [int(ds.Rows), int(ds.Columns)],
        "source_rows_columns": [int(source.Rows), int(source.Columns)],
        "frame_of_reference_matches": ds.FrameOfReferenceUID == source.FrameOfReferenceUID,
        "study_matches": ds.StudyInstanceUID == source.StudyInstanceUID,
        "segment_labels": [str(s.SegmentLabel) for s in seg.SegmentSequence],
        "algorithm_names": [str(s.SegmentAlgorithmName) for s in seg.SegmentSequence],
        "segread_type": type(seg).__name__,
    }


def main(plan_file: str, results_file: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from lightseg.deploy import apps

    plan = json.loads(open(plan_file).read())
    results: dict = {"runs": {}, "sdk": {}}
    from importlib import metadata

    import holoscan

    results["sdk"] = {
        "holoscan": holoscan.__version__,
        "monai-deploy-app-sdk": metadata.version("monai-deploy-app-sdk"),
        "highdicom": metadata.version("highdicom"),
    }
    for run in plan["runs"]:
        cls = apps.DicomSegApp if run["app"] == "dicom" else apps.ImageSegApp
        app = cls(["driver", "driver", "-i", run["input"], "-o", run["output"], "-m", run["model"], "-l", "WARN"])
        app.png_scale = run.get("scale", 255)
        app.overlay = run.get("overlay", False)
        start = time.perf_counter()
        try:
            app.run()
            error = None
        except Exception:
            error = traceback.format_exc()
        results["runs"][run["key"]] = {"seconds": time.perf_counter() - start, "error": error}
        logging.info("%s: %.2f s%s", run["key"], results["runs"][run["key"]]["seconds"], " FAILED" if error else "")
    results["segs"] = {
        k: read_seg(r["input"], r["output"]) for r in plan["runs"] if r["app"] == "dicom" for k in [r["key"]]
    }
    if plan.get("missing_postproc_model"):
        try:
            apps.bundle_info(plan["missing_postproc_model"])
            results["missing_postproc_error"] = None
        except ValueError as e:
            results["missing_postproc_error"] = str(e)
    with open(results_file, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

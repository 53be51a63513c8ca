"""MONAI Deploy applications for lightseg bundles (MONAI Deploy App SDK 4.0 on Holoscan, CPU is enough).

Two applications, run with ``python -m lightseg.deploy`` in the deploy environment (``scripts/deploy_env.sh``)::

    python -m lightseg.deploy dicom -i dicom_folder -o out -m bundles/lvunet/models/model.ts   # DICOM SEG + PNG
    python -m lightseg.deploy image -i images_or_file -o out -m bundles/lvunet/models/model.ts # PNG masks
    python -m lightseg.deploy check                                                           # the runtime

The bundle is the TorchScript file given with ``-m`` (``scripts/export_bundle.py`` writes it, with the bundle's
``metadata.json`` and ``inference.json`` embedded). Importing this package (or ``lightseg``) never imports the SDK:
the operators live in :mod:`lightseg.deploy.operators` and the applications in :mod:`lightseg.deploy.apps`.
"""

from __future__ import annotations

from lightseg.deploy.runtime import CudartMissingError, preload_cudart

__all__ = ["CudartMissingError", "preload_cudart"]

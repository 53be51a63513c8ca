"""``python -m lightseg.deploy {dicom,image,check} ...`` (in the deploy environment, scripts/deploy_env.sh).

    python -m lightseg.deploy dicom -i dicom_dir -o out -m bundles/lvunet/models/model.ts
    python -m lightseg.deploy image -i photo.png -o out -m bundles/cmunext_xxs/models/model.ts [--scale 1] [--overlay]
    python -m lightseg.deploy check

The arguments after the application name are the SDK's own (``-i/--input``, ``-o/--output``, ``-m/--model``,
``-l/--log-level``); ``--scale`` (255 or 1) and ``--overlay`` apply to the PNG masks.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightseg.deploy",
        description="lightseg's MONAI Deploy apps; arguments not listed here go to the SDK (-i, -o, -m, -l).",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", choices=("dicom", "image", "check"))
    parser.add_argument("--scale", type=int, choices=(1, 255), default=255, help="PNG mask values: 0/255 or 0/1")
    parser.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png (image app)")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.app == "check":
        from lightseg.deploy.runtime import preload_cudart

        loaded = preload_cudart()
        from importlib import metadata

        import holoscan

        logging.getLogger("lightseg.deploy").info(
            "runtime ok: %s, holoscan %s, monai-deploy-app-sdk %s", loaded, holoscan.__version__,
            metadata.version("monai-deploy-app-sdk"),
        )  # fmt: skip
        return 0
    from lightseg.deploy import apps

    cls = apps.DicomSegApp if args.app == "dicom" else apps.ImageSegApp
    app = cls([f"lightseg.deploy.{args.app}", f"lightseg.deploy.{args.app}", *rest])
    app.png_scale = args.scale
    app.overlay = args.overlay
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

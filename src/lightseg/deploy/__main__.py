"""``python -m lightseg.deploy {dicom,image,check} ...`` (in the deploy environment, scripts/deploy_env.sh).

    python -m lightseg.deploy dicom -i dicom_dir -o out -m bundles/lvunet/models/model.ts
    python -m lightseg.deploy image -i photo.png -o out -m bundles/cmunext_xxs/models/model.ts [--scale 1] [--overlay]
    python -m lightseg.deploy check

The arguments after the application name are the SDK's own (``-i/--input``, ``-o/--output``, ``-m/--model``,
``-l/--log-level``); ``--scale`` (255 or 1) and ``--overlay`` apply to the PNG masks.
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("dicom", "image", "check"):
        print(__doc__)  # noqa: T201 - usage text on the command line
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command, rest = argv[0], argv[1:]
    if command == "check":
        from lightseg.deploy.runtime import preload_cudart

        loaded = preload_cudart()
        import holoscan
        import monai.deploy

        logging.getLogger("lightseg.deploy").info(
            "runtime ok: %s, holoscan %s, monai-deploy-app-sdk %s", loaded, holoscan.__version__,
            getattr(monai.deploy, "__version__", "?"),
        )  # fmt: skip
        return 0
    scale = 255
    overlay = False
    if "--scale" in rest:
        i = rest.index("--scale")
        scale = int(rest[i + 1])
        del rest[i : i + 2]
    if "--overlay" in rest:
        rest.remove("--overlay")
        overlay = True
    from lightseg.deploy import apps

    cls = apps.DicomSegApp if command == "dicom" else apps.ImageSegApp
    app = cls([f"lightseg.deploy.{command}", f"lightseg.deploy.{command}", *rest])
    app.png_scale = scale
    app.overlay = overlay
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

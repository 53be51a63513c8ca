"""Serve lightseg bundles with MONAI Label's stock ``monaibundle`` app, offline, on the loopback interface.

    python -m lightseg.label serve --bundles cmunext_xxs,lvunet --studies ~/images [--port 8000] [--app DIR]
    python -m lightseg.label prepare --bundles cmunext_xxs --app DIR      # set up the app only, do not start

Run it with the python of MONAI Label's own environment (``scripts/label_env.sh``; see ``docs/monailabel.md``):
MONAI Label needs pydicom 2.4.4 and numpy < 2, so it cannot share lightseg's main environment.

What it does:

1. the app: ``monailabel apps --download --name monaibundle`` (the app ships in the monailabel wheel, no network)
   into ``--app`` unless it is already there;
2. the bundles: each ``<bundles-dir>/<name>`` is copied to ``<app>/model/<name>`` (configs, docs, license,
   ``models/*.pt`` and the ``settings.json`` of their training). Weights already in the app
   (``<app>/model/<name>/models/``, e.g. fine-tuned there by MONAI Label's /train) are kept
   unless ``--overwrite-models``;
3. the server: ``monailabel start_server`` replaces this process (same PID: stop it with SIGTERM/SIGINT), with
   ``--conf models <names>``, ``--conf zoo_source github`` (the default zoo source contacts the internet at
   start-up even for local bundles and fails offline; with ``github`` local bundles are used as they are) and
   ``--conf sam2 false``; the server and its training subprocesses import lightseg from this checkout
   (``PYTHONPATH``).

MONAI Label has no authentication by default: the server listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "prepare_app", "server_command", "server_env"]

logger = logging.getLogger("lightseg.label")

# MONAI Label's monaibundle app gives a bundle a special inference type from its folder name.
_RESERVED_WORDS = ("deepedit", "deepgrow", "detection", "classification")
_BUNDLE_PARTS = ("configs", "docs", "LICENSE", "large_files.yml")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_bundles_dir() -> Path:
    """The ``bundles/`` folder of this checkout (``src/lightseg/label.py`` -> ``<repo>/bundles``), else ./bundles."""
    repo = Path(__file__).resolve().parents[2] / "bundles"
    return repo if repo.is_dir() else Path.cwd() / "bundles"


def _check_names(names: Sequence[str], bundles_dir: Path) -> None:
    if not names:
        raise SystemExit("no bundles given: pass --bundles name[,name...]")
    for name in names:
        lowered = name.lower()
        bad = [w for w in _RESERVED_WORDS if w in lowered]
        if bad:
            raise SystemExit(
                f"bundle folder name {name!r} contains {bad[0]!r}: MONAI Label's monaibundle app would treat it as a "
                f"{bad[0]} model; rename the folder."
            )
        if not (bundles_dir / name / "configs" / "inference.json").is_file():
            raise SystemExit(f"{bundles_dir / name / 'configs' / 'inference.json'} not found: is {name!r} a bundle?")


def _download_app(app: Path, python: str) -> None:
    """``monailabel apps --download --name monaibundle`` into ``app`` (from the installed wheel, offline)."""
    app.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=app.parent, prefix=".monaibundle-") as tmp:
        cmd = [python, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output", tmp]
        logger.info("getting the monaibundle app: %s", " ".join(cmd))
        done = subprocess.run(cmd, capture_output=True, text=True)
        src = Path(tmp) / "monaibundle"
        if done.returncode != 0 or not (src / "main.py").is_file():
            raise SystemExit(
                f"`{' '.join(cmd)}` failed (exit {done.returncode}); is monailabel installed in {python}?\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        shutil.move(str(src), str(app))


def prepare_app(
    app: str | os.PathLike,
    bundles: Sequence[str],
    bundles_dir: str | os.PathLike | None = None,
    overwrite_models: bool = False,
    python: str = sys.executable,
) -> Path:
    """Set up the monaibundle app at ``app`` with ``bundles`` copied from ``bundles_dir``; returns the app path."""
    app = Path(app).expanduser().resolve()
    bundles_dir = Path(bundles_dir).expanduser().resolve() if bundles_dir else default_bundles_dir()
    _check_names(bundles, bundles_dir)
    if not (app / "main.py").is_file():
        if app.exists() and any(app.iterdir()):
            raise SystemExit(f"{app} exists but is not a MONAI Label app (no main.py): pass another --app folder")
        if app.exists():
            app.rmdir()
        _download_app(app, python)
    for name in bundles:
        src, dst = bundles_dir / name, app / "model" / name
        dst.mkdir(parents=True, exist_ok=True)
        for part in _BUNDLE_PARTS:
            if (src / part).is_dir():
                shutil.copytree(src / part, dst / part, dirs_exist_ok=True)
            elif (src / part).is_file():
                shutil.copy2(src / part, dst / part)
        (dst / "models").mkdir(exist_ok=True)
        # settings.json: the network and preprocessing the model was trained with (inference.json reads it)
        model_files = [*sorted((src / "models").glob("*.pt")), *sorted((src / "models").glob("*.ts"))]
        for weights in model_files + sorted((src / "models").glob("settings.json")):
            target = dst / "models" / weights.name
            if target.exists() and not overwrite_models:
                logger.info(
                    "%s: keeping the app's %s (fine-tuned there?); --overwrite-models replaces it", name, target
                )
                continue
            shutil.copy2(weights, target)
        if not (dst / "models" / "model.pt").is_file() and not (dst / "models" / "model.ts").is_file():
            logger.warning(
                "%s: no %s: MONAI Label will not offer it for inference until a model.pt exists (train the bundle "
                "first, or copy its weights there)",
                name,
                dst / "models" / "model.pt",
            )
        logger.info("bundle %s -> %s", src, dst)
    return app


def server_command(
    app: Path, studies: Path, bundles: Sequence[str], host: str, port: int, python: str = sys.executable, extra=()
) -> list[str]:
    cmd = [python, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies)]
    cmd += ["--host", host, "--port", str(port)]
    cmd += ["--conf", "models", ",".join(bundles), "--conf", "zoo_source", "github", "--conf", "sam2", "false"]
    for key, value in extra:
        cmd += ["--conf", key, value]
    return cmd


def server_env(base: dict | None = None) -> dict:
    """The environment for the server: lightseg importable (this checkout's ``src`` on ``PYTHONPATH``)."""
    env = dict(os.environ if base is None else base)
    src = str(Path(__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in paths:
        env["PYTHONPATH"] = os.pathsep.join([src, *paths])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lightseg.label", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "prepare"):
        p = sub.add_parser(name, help="set up the app and start MONAI Label" if name == "serve" else "set up only")
        p.add_argument("--bundles", required=True, help="comma-separated bundle names, e.g. cmunext_xxs,lvunet")
        p.add_argument("--app", default="lightseg_label_app", help="the monaibundle app folder (created if missing)")
        p.add_argument("--bundles-dir", default=None, help=f"where the bundles are (default: {default_bundles_dir()})")
        p.add_argument("--overwrite-models", action="store_true", help="replace weights already in the app")
        if name == "serve":
            p.add_argument("--studies", required=True, help="folder of images (the datastore; created if missing)")
            p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
            p.add_argument("--port", type=int, default=8000)
            p.add_argument(
                "--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="more app --conf"
            )
            p.add_argument("--dry-run", action="store_true", help="print the server command instead of running it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    bundles = [b.strip() for b in args.bundles.split(",") if b.strip()]
    app = prepare_app(args.app, bundles, args.bundles_dir, args.overwrite_models)
    if args.command == "prepare":
        logger.info("app ready: %s", app)
        return 0
    studies = Path(args.studies).expanduser().resolve()
    studies.mkdir(parents=True, exist_ok=True)
    if args.host not in LOOPBACK:
        logger.warning(
            "MONAI Label listens on %s: reachable from other machines, WITHOUT authentication by default", args.host
        )
    cmd = server_command(app, studies, bundles, args.host, args.port, extra=args.conf)
    if args.dry_run:
        logger.info("server command: %s", " ".join(cmd))
        return 0
    logger.info("starting MONAI Label on http://%s:%d (this process becomes the server): %s", args.host, args.port, cmd)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, server_env())
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

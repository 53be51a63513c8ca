"""Check the MLflow tracking store once, before training, so that a dead server fails fast with a clear message.

Without it, MLflow's HTTP client retries a refused connection for minutes (7 retries with backoff factor 2 by
default: 281 s measured against ``http://127.0.0.1:9``) and then fails before epoch 1 with no hint.
:func:`check_tracking` (called in ``train.json``'s ``initialize``, after :func:`lightseg.cli.check_command_line`)
reaches an ``http(s)`` server once with a short timeout and raises :class:`TrackingError` naming the URI and
``--use_mlflow false``; it also shortens MLflow's own retries for the rest of the run (unless the user set the
``MLFLOW_HTTP_REQUEST_*`` variables). For a local ``sqlite:`` or ``file:`` store it checks that the folder is
writable.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from lightseg.utils import as_bool

__all__ = ["MLFLOW_RETRY_DEFAULTS", "TrackingError", "check_tracking"]

logger = logging.getLogger(__name__)

# MLflow's HTTP client settings for the run once the server answered: a transient outage is still retried
# (3 retries, 1-2-4 s apart) but a server that went away fails in under a minute instead of several.
MLFLOW_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached or written."""


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        # sqlite:///relative.db, sqlite:////abs/path.db
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        return Path(unquote(path)) if path and path != ":memory:" else None
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri:
        return Path(uri)
    return None


def _writable_ancestor(path: Path) -> tuple[Path, bool]:
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder, folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def check_tracking(uri: str, use_mlflow=True, timeout: float = 5.0) -> None:
    """Check that the MLflow store at ``uri`` can be used; a no-op when ``use_mlflow`` is false.

    ``http(s)``: one request to ``<uri>/health`` with ``timeout`` seconds; any HTTP answer (even an error status,
    e.g. behind an authenticating proxy) counts as reachable. ``sqlite:``/``file:``/a path: the folder (or its
    nearest existing parent) must be writable.

    Raises:
        TrackingError: naming the URI and the fix (``--use_mlflow false``, or another ``--tracking_uri``).
    """
    if not as_bool(use_mlflow):
        return
    uri = str(uri)
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("http", "https"):
        for key, value in MLFLOW_RETRY_DEFAULTS.items():
            os.environ.setdefault(key, value)
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                response.read(64)
        except urllib.error.HTTPError:
            pass  # the server answered
        except (TimeoutError, urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"MLflow tracking server {uri} is not reachable ({reason}, {timeout:g} s timeout): start it, pass "
                "another --tracking_uri (the default is a SQLite file in output_dir), or --use_mlflow false to "
                "train without tracking."
            ) from None
        logger.info("MLflow tracking server %s answered", uri)
        return
    path = _local_path(uri)
    if path is not None:
        folder, ok = _writable_ancestor(path.expanduser())
        if not ok:
            raise TrackingError(
                f"MLflow store {uri}: {folder} is not a writable folder: pass --output_dir (or --tracking_uri) "
                "on a writable disk, or --use_mlflow false to train without tracking."
            )

"""Inference backends behind one ``torch.nn.Module``: eager PyTorch, TorchScript, ONNX Runtime (fp32 and INT8)
and ``torch.export`` programs, selected by the bundles' ``--backend`` (inference.json, evaluate.json).

:class:`BackendNetwork` wraps the eager network (a submodule, so MONAI's ``CheckpointLoader`` with
``load_dict {"model": @network}`` still loads ``model.pt`` into it: ``state_dict``/``load_state_dict``
delegate) and runs ``forward`` through the chosen export in ``<ckpt_dir>/`` (file names of
:data:`lightseg.export.DEFAULT_FILES`). MONAI's evaluator, inferer, pre- and postprocessing are unchanged: the
output is a tensor on the input's device, with the input's metadata when the input is a ``MetaTensor``.

An export older than the checkpoint (``model.pt``), or whose JSON records another checkpoint's SHA-256, is
*stale*: ``"auto"`` skips it with a log line; an explicitly requested stale or missing export raises
:class:`BackendError` naming the file and the command that rebuilds it. ``"auto"`` takes the first present and
fresh export in :data:`AUTO_ORDER` (fp32 backends only: INT8 masks are not identical to eager), falling back to
eager with one log line. The order is measured: ONNX Runtime was the fastest backend for 11 of 12 networks in
``../shared/reference/cpu_speed.md``, and ONNX Runtime or torch.export led for the bundles in
``python -m lightseg.benchmark infer`` (README "Inference speed"; a shared machine, so its ratios are noisy);
TorchScript rarely beat eager.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["AUTO_ORDER", "BACKENDS", "BACKEND_FILES", "BackendError", "BackendNetwork", "export_status"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "torchscript", "onnxruntime", "onnxruntime-int8", "torch-export")
# backend -> export format (lightseg.export) and default file in <ckpt_dir>
_FORMATS = {"torchscript": "torchscript", "onnxruntime": "onnx", "onnxruntime-int8": "onnx-int8",
            "torch-export": "torch-export"}  # fmt: skip
BACKEND_FILES = {"torchscript": "model.ts", "onnxruntime": "model.onnx", "onnxruntime-int8": "model_int8.onnx",
                 "torch-export": "model.pt2"}  # fmt: skip
AUTO_ORDER = ("onnxruntime", "torch-export", "torchscript")


class BackendError(RuntimeError):
    """A requested backend cannot run (missing or stale export, missing package)."""


def export_status(export: str | os.PathLike, ckpt: str | os.PathLike | None) -> str | None:
    """``None`` when ``export`` can be used with the checkpoint ``ckpt``, else why not (missing, stale).

    Stale: the export is older than the checkpoint, or its ``<export>.json`` records another checkpoint SHA-256.
    Without a checkpoint file (a folder that ships only exports) nothing can be compared and the export is used.
    """
    export = Path(export)
    if not export.is_file():
        return f"{export} does not exist"
    if ckpt is None or not Path(ckpt).is_file():
        return None
    ckpt = Path(ckpt)
    if export.stat().st_mtime < ckpt.stat().st_mtime:
        return f"{export} is older than {ckpt} (stale)"
    sidecar = export.with_name(export.name + ".json")
    if sidecar.is_file():
        try:
            recorded = json.loads(sidecar.read_text()).get("checkpoint_sha256")
        except (OSError, ValueError):
            recorded = None
        if recorded:
            from lightseg.export import file_sha256

            if recorded != file_sha256(ckpt):
                return f"{export} was built from another checkpoint than {ckpt} ({sidecar.name}: sha256 differs)"
    return None


def _export_command(backend: str, ckpt_dir: Path) -> str:
    bundle = ckpt_dir.parent if ckpt_dir.name == "models" else ckpt_dir
    return f"python -m lightseg.export {bundle} --format {_FORMATS[backend]} --out {ckpt_dir / BACKEND_FILES[backend]}"


class BackendNetwork(nn.Module):
    """``network`` (the eager model) run through an export of it.

    Args:
        backend: one of :data:`BACKENDS`; ``"auto"`` = the first fresh export in :data:`AUTO_ORDER`, else eager.
            On a CUDA model ``"auto"`` is eager (the exports here run on the CPU).
        ckpt_dir: folder of the exports (the bundle's ``models/``).
        network: the eager network; the checkpoint is loaded into it (``load_state_dict`` delegates).
        threads: intra-op threads for ONNX Runtime sessions (``torch.set_num_threads`` for the PyTorch backends);
            ``None`` keeps the defaults.
        ckpt_path: the checkpoint the exports must have been built from (default ``<ckpt_dir>/model.pt``).
        files: file names per backend, to override :data:`BACKEND_FILES`.
    """

    def __init__(
        self,
        backend: str = "auto",
        ckpt_dir: str | os.PathLike | None = None,
        network: nn.Module | None = None,
        threads: int | str | None = None,
        ckpt_path: str | os.PathLike | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        backend = str(backend or "auto").strip().lower()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)} (--backend).")
        if network is None and backend in ("auto", "eager"):
            raise ValueError("BackendNetwork needs the eager network (network=...) for the eager backend.")
        self.network = network
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else Path("models")
        self.ckpt_path = Path(ckpt_path) if ckpt_path is not None else self.ckpt_dir / "model.pt"
        self.threads = None if threads in (None, "", "none", "None", "null") else int(threads)
        self.files = {**BACKEND_FILES, **(files or {})}
        self.requested = backend
        self.backend = self._resolve(backend)
        self._run: Callable[[torch.Tensor], torch.Tensor] | None = None

    # --- selection -----------------------------------------------------------------------------------------
    def _on_cuda(self) -> bool:
        param = next(self.network.parameters(), None) if self.network is not None else None
        return param is not None and param.device.type == "cuda"

    def _resolve(self, backend: str) -> str:
        if backend == "eager":
            return "eager"
        if backend == "auto":
            if self._on_cuda():
                logger.info("backend auto: eager (the network is on CUDA; the exports run on the CPU)")
                return "eager"
            reasons = []
            for candidate in AUTO_ORDER:
                problem = export_status(self.ckpt_dir / self.files[candidate], self.ckpt_path)
                if problem is None and _available(candidate):
                    logger.info("backend auto: %s (%s)", candidate, self.ckpt_dir / self.files[candidate])
                    return candidate
                reasons.append(f"{candidate}: {problem or 'package not installed'}")
            logger.info("backend auto: eager (no usable export in %s; %s)", self.ckpt_dir, "; ".join(reasons))
            return "eager"
        problem = export_status(self.ckpt_dir / self.files[backend], self.ckpt_path)
        if problem:
            command = _export_command(backend, self.ckpt_dir)
            raise BackendError(f"backend {backend}: {problem}; build it with `{command}`.")
        if not _available(backend):
            raise BackendError(f"backend {backend} needs onnxruntime: pip install 'lightseg[onnx]'.")
        logger.info("backend %s: %s", backend, self.ckpt_dir / self.files[backend])
        return backend

    # --- delegation to the eager network ---------------------------------------------------------------------
    def state_dict(self, *args, **kwargs):
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping, strict: bool = True, assign: bool = False):
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            network = self._modules.get("network")
            if network is not None and name in ("in_channels", "out_channels", "divisor", "deployed"):
                return getattr(network, name)
            raise

    # --- running -------------------------------------------------------------------------------------------
    def _build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        path = str(self.ckpt_dir / self.files[self.backend])
        if self.threads and self.backend in ("torchscript", "torch-export"):
            torch.set_num_threads(self.threads)
        if self.backend == "torchscript":
            module = torch.jit.load(path, map_location="cpu").eval()
            return lambda x: module(x)
        if self.backend == "torch-export":
            module = torch.export.load(path).module()
            return lambda x: module(x)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

        return run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "eager":
            return self.network(x)
        if self._run is None:  # sessions are created once, on the first call
            self._run = self._build()
        from monai.data import MetaTensor

        plain = x.as_tensor() if isinstance(x, MetaTensor) else x
        with torch.no_grad():
            out = self._run(plain.detach().to("cpu", torch.float32).contiguous())
        out = out.to(x.device)
        if isinstance(x, MetaTensor):  # as an eager op would: the input's metadata on the output
            out = MetaTensor.update_meta([MetaTensor(out)], torch.Tensor.clone, (x,), {})[0]
        return out

    def extra_repr(self) -> str:
        return f"backend={self.backend!r} (requested {self.requested!r}), ckpt_dir={str(self.ckpt_dir)!r}"


def _available(backend: str) -> bool:
    if backend.startswith("onnxruntime"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
    return True

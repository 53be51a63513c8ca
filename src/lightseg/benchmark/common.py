"""Pieces shared by ``benchmark train`` and ``benchmark infer``: isolated runs, statistics, controls, machine limits."""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "CONTROLS",
    "build_model",
    "machine_limits",
    "run_isolated",
    "summarize_times",
    "time_calls",
    "write_json",
]

logger = logging.getLogger(__name__)

# MONAI networks measured in the same run as the bundles (the controls); built without weights.
CONTROLS: dict[str, tuple[str, dict]] = {
    "monai_unet": (
        "UNet",
        {"spatial_dims": 2, "channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2},
    ),
    "monai_segresnet": ("SegResNet", {"spatial_dims": 2, "init_filters": 8}),
    "monai_attentionunet": (
        "AttentionUnet",
        {"spatial_dims": 2, "channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2)},
    ),
    "monai_flexibleunet": (
        "FlexibleUNet",
        {"spatial_dims": 2, "backbone": "efficientnet-b0", "pretrained": False},
    ),
}


def build_model(name: str, in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """A MONAI control from :data:`CONTROLS` or a registered lightseg network, on CPU, with fresh weights."""
    torch.manual_seed(0)
    if name in CONTROLS:
        import monai.networks.nets as nets

        cls, kwargs = CONTROLS[name]
        return getattr(nets, cls)(in_channels=in_channels, out_channels=out_channels, **kwargs)
    from lightseg.networks import create_network

    return create_network(name, in_channels=in_channels, out_channels=out_channels)


def time_calls(fn: Callable[[], object], steps: int, warmup: int = 2) -> list[float]:
    """Wall seconds of ``steps`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summarize_times(times: Sequence[float]) -> dict:
    """Median, min and max in milliseconds."""
    return {
        "median_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "max_ms": 1000 * max(times),
        "n": len(times),
    }


def run_isolated(target: str, kwargs: dict, threads: int = 2, timeout: float = 900, env: dict | None = None) -> dict:
    """Call ``module:function(**kwargs)`` in a fresh Python process and return its (JSON) result.

    The child gets ``threads`` intra-op threads (``OMP_NUM_THREADS`` and ``torch.set_num_threads``); its result is
    the last stdout line. A failing child raises ``RuntimeError`` with the tail of its stderr.
    """
    module, function = target.split(":")
    code = (
        "import json, sys, torch\n"
        f"torch.set_num_threads({int(threads)})\n"
        f"from {module} import {function} as f\n"
        "print(json.dumps(f(**json.loads(sys.argv[1]))))\n"
    )
    child_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{target}({kwargs}) failed in its own process (exit {result.returncode}):\n{tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine_limits(seconds: float = 1.0) -> dict:
    """GEMM throughput (fp32 and bf16, GFLOP/s, through ``torch.mm``), fp32 1x1-convolution throughput (oneDNN, the
    engine of PyTorch's convolutions; ``conv_fp32_gflops``) and copy bandwidth (GB/s), in this process."""

    def gflops(dtype: torch.dtype) -> float | None:
        n = 1024
        try:
            a = torch.randn(n, n).to(dtype)
            b = torch.randn(n, n).to(dtype)
            torch.mm(a, b)
        except RuntimeError:
            return None
        return 2 * n**3 / _best_call_seconds(lambda: torch.mm(a, b), seconds) / 1e9

    def conv_gflops() -> float:  # oneDNN's fp32 peak: a 1x1 convolution is a GEMM that PyTorch runs through it
        x = torch.randn(1, 512, 64, 64).contiguous(memory_format=torch.channels_last)
        w = torch.randn(512, 512, 1, 1).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w)
            return 2 * 512 * 512 * 64 * 64 / _best_call_seconds(lambda: torch.nn.functional.conv2d(x, w), seconds) / 1e9

    src = torch.empty(64 * 1024 * 1024 // 4)  # 64 MiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return {
        "gemm_fp32_gflops": gflops(torch.float32),
        "gemm_bf16_gflops": gflops(torch.bfloat16),
        "conv_fp32_gflops": conv_gflops(),
        "copy_gbps": 2 * src.numel() * 4 / best / 1e9,  # read + write
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
    }


def _best_call_seconds(fn: Callable[[], object], seconds: float) -> float:
    """The fastest single call of ``fn`` within ``seconds`` of repeated calls: a peak is the best case, and on a
    shared machine the mean would measure the neighbours."""
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` atomically as indented JSON."""
    from lightseg.utils import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, default=str)

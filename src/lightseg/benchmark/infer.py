"""``python -m lightseg.benchmark infer``: the inference speed table of the bundles and of MONAI's networks.

For every network (the four bundles, LV-UNet in its training and deployment forms, and the MONAI controls of
:data:`lightseg.benchmark.common.CONTROLS`) and every backend of :mod:`lightseg.backends`:

- parameters and MACs (``conv_macs`` of :mod:`lightseg.profiling`: convolution and matrix-product
  multiply-accumulates, bias, norms and activations excluded);
- batch-1 latency (median of ``--steps`` calls after warm-up, with min/max; best of ``--passes`` passes) and
  batch-8 throughput, each (network, backend) in a fresh process;
- the batch-8 roofline fraction: ``2 * MACs / time`` against the fp32 convolution (oneDNN) peak measured in the
  same run;
- END-TO-END latency per image for each bundle's fastest backend: the bundle's own inference.json (read PNG ->
  preprocess -> model -> postprocess -> write the mask at the original size), median time between consecutive
  images on 384x288 PNGs.

Exports are built once per network in their own process (the bundles' through :func:`lightseg.export.export_bundle`
from a random-weight model.pt; the controls' with the same exporters) and run through
:class:`lightseg.backends.BackendNetwork`, i.e. exactly what ``--backend`` runs. Weights are random: speed does
not depend on them (INT8 agreement figures on random weights are reported but mean little).

Writes ``infer.json``, ``infer.md`` and ``infer.png`` (batch-1 latency of the best backend against GMACs, and
end-to-end latency) under ``--out``. ``--accuracy`` adds the test Dice of trained bundles (the ``benchmark.json``
that ``scripts/benchmark.py`` writes, e.g. the Kvasir-SEG 15-minute runs): a latency-vs-Dice panel in the plot and a
table; ``--from_json`` redraws the table and plot of an earlier run with it, without measuring again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from lightseg.benchmark.common import (
    CONTROLS,
    build_model,
    run_isolated,
    summarize_times,
    time_calls,
    write_json,
)

__all__ = ["BUNDLE_MODELS", "main", "measure", "measure_end_to_end", "prepare", "read_accuracy"]

logger = logging.getLogger(__name__)

# table row -> (bundle folder or None, network name, form)
BUNDLE_MODELS: dict[str, tuple[str, str, str]] = {
    "cmunext_xxs": ("cmunext_xxs", "cmunext_xxs", "as trained"),
    "lvunet": ("lvunet", "lvunet", "deployment"),
    "lvunet_train": ("lvunet", "lvunet", "training"),
    "litenext": ("litenext", "litenext", "as trained"),
    "mininet": ("mininet", "mininet", "as trained"),
}
BACKENDS = ("eager", "torchscript", "onnxruntime", "onnxruntime-int8", "torch-export")
_FILES = {"torchscript": "model.ts", "onnx": "model.onnx", "onnx-int8": "model_int8.onnx", "torch-export": "model.pt2"}
_BACKEND_FORMATS = {"torchscript": "torchscript", "onnxruntime": "onnx", "onnxruntime-int8": "onnx-int8",
                    "torch-export": "torch-export"}  # fmt: skip
_REPO = Path(__file__).resolve().parents[3]


def _network(row: str) -> torch.nn.Module:
    """The eval-mode network of a table row (LV-UNet with deep training finished, so that it can be fused)."""
    name = BUNDLE_MODELS[row][1] if row in BUNDLE_MODELS else row
    net = build_model(name).eval()
    if name == "lvunet":
        from lightseg.networks.blocks.vanilla import set_deep_training_slope

        set_deep_training_slope(net, 1.0)
    return net


def _write_images(folder: Path, count: int, size: tuple[int, int] = (288, 384), seed: int = 0) -> Path:
    """``count`` demo-like RGB PNGs of ``size`` (H, W) with masks and a datalist (training/validation/testing)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    entries = []
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
        mask = ((yy - cy) / (0.25 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2 <= 1
        base = rng.normal(60, 10, (h, w)) + 120 * mask
        img = np.clip(np.stack([base, base * 0.9, base * 0.8], -1), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / "images" / f"case{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"case{i:03d}.png")
        entries.append({"image": f"images/case{i:03d}.png", "label": f"masks/case{i:03d}.png"})
    third = max(1, count // 3)
    datalist = {"training": entries[:third], "validation": entries[third : 2 * third], "testing": entries[2 * third :]}
    path = folder / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2))
    return path


def row_size(row: str, size: int) -> int:
    """``size`` rounded up to what the network takes: a multiple of its divisor, and for LV-UNet (divisor 128) at
    least 256, the smallest size its torch.export program accepts."""
    divisor = int(getattr(_network(row), "divisor", 16))
    side = -(-int(size) // divisor) * divisor
    return max(side, 2 * divisor) if divisor >= 64 else side


def prepare(row: str, folder: str, size: int = 256, data: str | None = None, formats: list | None = None) -> dict:
    """Build every export of ``row`` into ``folder`` (model.pt first, so that the exports are fresh); return the
    counts (params, MACs) and what each export reported (or why it failed)."""
    from lightseg.export import export_bundle, is_fusible
    from lightseg.profiling import profile

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    size = row_size(row, size)
    net = _network(row)
    result: dict = {"row": row, "exports": {}}
    bundle, _, form = BUNDLE_MODELS.get(row, (None, row, "as built"))
    deployed = net
    if row == "lvunet":
        from lightseg.networks import reparameterize_model

        deployed = reparameterize_model(net)
    result.update(profile(deployed, (1, 3, size, size)).as_dict(), form=form, size=size)
    torch.save(net.state_dict(), out / "model.pt")
    time.sleep(0.01)  # exports strictly newer than model.pt
    for fmt in formats if formats is not None else list(_FILES):
        start = time.perf_counter()
        try:
            if bundle is not None and row != "lvunet_train":
                datalist = Path(data) / "datalist.json" if data else None
                report = export_bundle(
                    _REPO / "bundles" / bundle, fmt, ckpt=out / "model.pt", out=out / _FILES[fmt],
                    image_size=(size, size), min_agreement=0.0, calib_count=8,
                    datalist=str(datalist) if datalist else None, dataset_dir=data,
                )  # fmt: skip
                entry = {k: report[k] for k in ("max_abs_diff", "agreement") if k in report}
            else:
                deploy = is_fusible(net) and form != "training"
                entry = _export_generic(net, fmt, out / _FILES[fmt], size, deploy=deploy)
            entry["seconds"] = round(time.perf_counter() - start, 1)
            result["exports"][fmt] = entry
        except Exception as e:  # a network that an exporter cannot handle is reported, not fatal
            logger.warning("%s: %s export failed: %s", row, fmt, e)
            result["exports"][fmt] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    return result


def _export_generic(net: torch.nn.Module, fmt: str, path: Path, size: int, deploy: bool) -> dict:
    """The exporters of :mod:`lightseg.export` applied to a network that is not a bundle (MONAI controls, LV-UNet's
    training form). INT8 calibration: 8 N(0, 1) inputs (what normalized images look like); agreement measured on
    8 others."""
    from lightseg.export import (
        _check,
        _export_dims,
        compare,
        export_onnx,
        mask_agreement,
    )
    from lightseg.utils import atomic_path

    shape = (1, 3, size, size)
    if fmt == "torchscript":
        with atomic_path(path) as tmp:
            torch.jit.save(torch.jit.script(net), str(tmp))
            diff, scale = compare(net, torch.jit.load(str(tmp)), [shape])
            _check("TorchScript", path, diff, scale, 1e-4, 1e-5)
        return {"max_abs_diff": diff}
    if fmt == "onnx":
        return {"max_abs_diff": export_onnx(net, path, example_shape=shape, check_shapes=[shape], deploy=deploy)}
    if fmt == "torch-export":
        from lightseg.networks import reparameterize_model

        exported = reparameterize_model(net) if deploy else net
        _, dynamic = _export_dims(net)
        with atomic_path(path) as tmp:
            torch.export.save(torch.export.export(exported, (torch.zeros(2, 3, size, size),), dynamic_shapes=dynamic),
                              str(tmp))  # fmt: skip
            diff, scale = compare(net, torch.export.load(str(tmp)).module(), [shape])
            _check("torch.export", path, diff, scale, 1e-4, 1e-5)
        return {"max_abs_diff": diff}
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    gen = torch.Generator().manual_seed(0)
    calib = [torch.randn(*shape, generator=gen).numpy() for _ in range(8)]
    check = [torch.randn(*shape, generator=gen).numpy() for _ in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"image": item}

    with tempfile.TemporaryDirectory() as tmpdir, atomic_path(path) as tmp:
        fp32 = path.with_name(_FILES["onnx"])  # built just before from the same weights, when asked for
        if not fp32.is_file():
            fp32 = Path(tmpdir) / "fp32.onnx"
            export_onnx(net, fp32, example_shape=shape, check_shapes=[shape], deploy=deploy)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_static(str(fp32), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
        finally:
            root.setLevel(level)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            ref = [net(torch.from_numpy(x)).numpy() for x in check]
        got = [session.run(None, {"image": x})[0] for x in check]
    return {"agreement": {"random_inputs": mask_agreement(ref, got, 1)}}


def measure(
    row: str, folder: str, backend: str, size: int = 256, steps: int = 20, passes: int = 3, batch: int = 8,
    threads: int = 2, tune: bool = True,
) -> dict:  # fmt: skip
    """Batch-1 latency and batch-``batch`` throughput of ``row`` through ``BackendNetwork(backend)`` (run in a
    fresh process by :func:`main`). Best of ``passes``: the pass with the lowest median."""
    from lightseg.backends import BackendNetwork
    from lightseg.perf import allocator_state, tune_allocator

    tune_allocator(tune)
    size = row_size(row, size)
    net = _network(row)
    net.load_state_dict(torch.load(Path(folder) / "model.pt", weights_only=True))
    if row == "lvunet" and backend == "eager":  # the bundle's eager path runs the fused form
        from lightseg.networks import reparameterize_model

        net = reparameterize_model(net)
    wrapped = BackendNetwork(backend, folder, network=net.eval(), threads=threads)
    result: dict = {"row": row, "backend": backend, "threads": torch.get_num_threads(), "allocator": allocator_state()}
    for key, n, count, warmup in (("batch1", 1, steps, 4), (f"batch{batch}", batch, max(3, steps // 4), 2)):
        x = torch.randn(n, 3, size, size)
        best = None
        with torch.no_grad():
            for _ in range(passes):
                # TorchScript's profiling executor optimizes after its first calls: warm up past them
                stats = summarize_times(time_calls(lambda x=x: wrapped(x), count, warmup=warmup))
                if best is None or stats["median_ms"] < best["median_ms"]:
                    best = stats
        best["images_per_s"] = 1000 * n / best["median_ms"]
        result[key] = best
    return result


def measure_end_to_end(
    row: str, folder: str, backend: str, data: str, size: int = 256, passes: int = 3, threads: int = 2
) -> dict:
    """Per-image latency of the bundle's inference.json (read -> preprocess -> model -> postprocess -> write at
    the original size) through ``backend``: median time between consecutive completed images, best of
    ``passes`` runs over the datalist's testing images (the first run, which creates the sessions, is extra)."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    from lightseg.perf import tune_allocator

    tune_allocator(True)
    size = row_size(row, size)
    bundle = _REPO / "bundles" / BUNDLE_MODELS[row][0]
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    out_tmp = tempfile.TemporaryDirectory(prefix="e2e_")  # the masks are counted, then removed with it
    out_dir = out_tmp.name
    overrides = {
        "bundle_root": str(bundle), "ckpt_dir": folder, "datalist": str(Path(data) / "datalist.json"),
        "dataset_dir": data, "output_dir": out_dir, "image_size": [size, size], "backend": backend,
        "backend_threads": threads, "postprocessing#transforms#3#print_log": False,
    }  # fmt: skip
    for key, value in overrides.items():
        parser[key] = value
    evaluator = parser.get_parsed_content("evaluator")
    stamps: list[float] = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps.append(time.perf_counter()))
    evaluator.add_event_handler(Events.STARTED, lambda e: stamps.append(time.perf_counter()))
    evaluator.run()  # warm-up: sessions, first-call costs
    from monai.handlers import CheckpointLoader

    for handler in parser.get_parsed_content("handlers"):  # loaded once (LV-UNet is fused after loading)
        if isinstance(handler, CheckpointLoader):
            evaluator.remove_event_handler(handler, Events.STARTED)
    best = None
    for _ in range(passes):
        stamps.clear()
        evaluator.run()
        intervals = [b - a for a, b in itertools.pairwise(stamps)]
        stats = summarize_times(intervals)
        if best is None or stats["median_ms"] < best["median_ms"]:
            best = stats
    masks = sorted(Path(out_dir).glob("*_seg.png"))
    from PIL import Image

    result = {
        "row": row, "backend": evaluator.network.backend, "per_image": best, "images": len(masks),
        "input_size": list(Image.open(Path(data) / "images" / "case000.png").size),
        "mask_size": list(Image.open(masks[0]).size) if masks else None,
    }  # fmt: skip
    out_tmp.cleanup()
    return result


def _best_backend(rows: dict, row: str) -> tuple[str, dict] | None:
    """The fp32 backend with the lowest batch-1 median (INT8 is reported but not chosen: its masks differ)."""
    candidates = [(b, r) for b, r in rows.get(row, {}).items() if "batch1" in r and b != "onnxruntime-int8"]
    candidates = [(b, r) for b, r in candidates if not b.endswith("(glibc default)")]
    return min(candidates, key=lambda br: br[1]["batch1"]["median_ms"]) if candidates else None


def read_accuracy(paths: list[str]) -> dict:
    """Test-split scores of trained bundles from ``scripts/benchmark.py``'s ``benchmark.json`` files, keyed by the
    table row (LV-UNet: its deployment form, which computes the same function as the trained one)."""
    accuracy: dict = {}
    for path in paths:
        try:
            result = json.loads(Path(path).read_text())
            settings, summary = result["settings"], result["summary"]
            row = settings["bundle"]
            accuracy[row] = {
                "dice": summary["mean"]["dice"]["mean"], "iou": summary["mean"]["iou"]["mean"],
                "seeds": settings["seeds"], "datalist": settings["datalist"],
                "dataset": Path(settings["dataset_dir"]).name,
                "image_size": settings["image_size"], "budget": settings["overrides"].get("time_budget"),
                "epochs": settings.get("epochs"), "source": str(path),
            }  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a benchmark.json of scripts/benchmark.py ({type(e).__name__}: {e})") from e
        if row not in BUNDLE_MODELS:
            raise ValueError(f"{path}: bundle {settings['bundle']!r} is not a row of the table")
    return accuracy


def _accuracy_rows(payload: dict) -> list[tuple[str, dict, str, float]]:
    """(row, accuracy, best backend, its batch-1 median ms) for the rows with both."""
    rows = []
    for row, acc in payload.get("accuracy", {}).items():
        best = _best_backend(payload["results"], row)
        if best:
            rows.append((row, acc, best[0], best[1]["batch1"]["median_ms"]))
    return rows


def _markdown(payload: dict) -> str:
    limits = payload["machine"]
    backends = payload["backends"]
    lines = [
        f"Input 1x3x{payload['size']}x{payload['size']}, {payload['threads']} threads, "
        f"median of {payload['steps']} calls (batch 8: {max(3, payload['steps'] // 4)}), best of {payload['passes']} "
        f"passes, each configuration in a fresh process. MACs: conv_macs (convolutions + matrix products, bias, "
        f"norms and activations excluded). Machine: {limits['cpu']}; fp32 conv peak {limits['conv_fp32_gflops']:.0f} "
        f"GFLOP/s (oneDNN), GEMM fp32 {limits['gemm_fp32_gflops']:.0f} / bf16 {limits['gemm_bf16_gflops'] or 0:.0f} "
        f"GFLOP/s (torch.mm), copy {limits['copy_gbps']:.1f} GB/s.",
        "",
        "Batch-1 latency, median ms (min-max):",
        "",
        "| network | params | GMAC | " + " | ".join(backends) + " | best | batch-8 img/s (best) | roofline b8 |",
        "|---|---|---|" + "---|" * len(backends) + "---|---|---|",
    ]
    for row, info in payload["models"].items():
        cells = []
        for b in backends:
            r = payload["results"].get(row, {}).get(b)
            if r and "batch1" in r:
                s = r["batch1"]
                cells.append(f"{s['median_ms']:.1f} ({s['min_ms']:.1f}-{s['max_ms']:.1f})")
            else:
                cells.append("-" if r is None else "failed")
        best = _best_backend(payload["results"], row)
        if best:
            b, r = best
            b8 = r[f"batch{payload['batch']}"]
            roof = payload["roofline"].get(row)
            tail = f"{b} | {b8['images_per_s']:.1f} | {100 * roof:.1f} %" if roof is not None else f"{b} | - | -"
        else:
            tail = "- | - | -"
        head = f"| {row} | {info['params']:,} | {info['conv_macs'] / 1e9:.2f} | "
        lines.append(head + " | ".join(cells) + f" | {tail} |")
    if payload.get("end_to_end"):
        lines += [
            "",
            "End-to-end per image (384x288 PNG -> mask PNG at 384x288; bundle inference.json):",
            "",
            "| bundle | backend | end-to-end ms (min-max) | model-only ms | ratio |",
            "|---|---|---|---|---|",
        ]
        for row, e in payload["end_to_end"].items():
            if "per_image" not in e:
                lines.append(f"| {row} | failed | - | - | - |")
                continue
            model_ms = payload["results"][row][e["backend"]]["batch1"]["median_ms"]
            s = e["per_image"]
            lines.append(f"| {row} | {e['backend']} | {s['median_ms']:.1f} ({s['min_ms']:.1f}-{s['max_ms']:.1f}) | "
                         f"{model_ms:.1f} | {s['median_ms'] / model_ms:.2f} |")  # fmt: skip
    acc_rows = _accuracy_rows(payload)
    if acc_rows:
        lines += [
            "",
            "Accuracy and latency (test split of each run's datalist, per-image mean over seeds; latency of the best "
            "fp32 backend above, batch 1):",
            "",
            "| bundle | test Dice | test IoU | trained | best backend | batch-1 ms |",
            "|---|---|---|---|---|---|",
        ]
        for row, acc, backend, ms in acc_rows:
            budget = f"{acc['budget']:g} min" if acc.get("budget") else f"{acc.get('epochs')} epochs"
            trained = f"{acc['dataset']}, {budget} at {'x'.join(map(str, acc['image_size']))}"
            lines.append(f"| {row} | {acc['dice']:.3f} | {acc['iou']:.3f} | {trained} | {backend} | {ms:.1f} |")
    int8 = []
    for row in payload["models"]:
        agreement = payload["exports"].get(row, {}).get("onnx-int8", {}).get("agreement")
        if agreement:
            int8.append(f"{row} " + ", ".join(f"{k} {v['dice']:.3f}" for k, v in agreement.items()))
    if int8:
        lines += ["", "INT8 Dice agreement with eager (random weights): " + "; ".join(int8) + "."]
    return "\n".join(lines) + "\n"


def _plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc_rows = _accuracy_rows(payload)
    fig, axes = plt.subplots(1, 3 if acc_rows else 2, figsize=(18 if acc_rows else 12, 4.5))
    ax = axes[0]
    for row, info in payload["models"].items():
        best = _best_backend(payload["results"], row)
        if not best:
            continue
        ms = best[1]["batch1"]["median_ms"]
        control = row in CONTROLS
        ax.scatter(info["conv_macs"] / 1e9, ms, marker="s" if control else "o", color="gray" if control else "C0")
        ax.annotate(f"{row} ({best[0]})", (info["conv_macs"] / 1e9, ms), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel(f"GMAC (conv_macs, 1x3x{payload['size']}x{payload['size']})")
    ax.set_ylabel("batch-1 latency, best backend (ms)")
    ax.set_title("Model-only latency (blue: bundles, gray: MONAI)")
    ax.set_yscale("log")
    ax = axes[1]
    e2e = {r: e for r, e in payload.get("end_to_end", {}).items() if "per_image" in e}
    names = list(e2e)
    model_ms = [payload["results"][r][e2e[r]["backend"]]["batch1"]["median_ms"] for r in names]
    total_ms = [e2e[r]["per_image"]["median_ms"] for r in names]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], model_ms, 0.4, label="model only (256x256)")
    ax.bar([x + 0.2 for x in xs], total_ms, 0.4, label="end to end (384x288 PNG)")
    ax.set_xticks(list(xs), [f"{r}\n{e2e[r]['backend']}" for r in names], fontsize=7)
    ax.set_ylabel("ms per image")
    ax.set_title("End-to-end vs model-only, best backend")
    ax.legend(fontsize=8)
    if acc_rows:
        ax = axes[2]
        for row, acc, backend, ms in acc_rows:
            ax.scatter(ms, acc["dice"], color="C0")
            ax.annotate(f"{row} ({backend})", (ms, acc["dice"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        sources = sorted({acc["dataset"] for _, acc, _, _ in acc_rows})
        ax.set_xlabel("batch-1 latency, best backend (ms)")
        ax.set_ylabel("test Dice (per-image mean)")
        ax.set_title(f"Latency vs Dice ({', '.join(sources)})")
    fig.suptitle(f"{payload['threads']} threads, {payload['date']}", fontsize=9)
    fig.tight_layout()
    from lightseg.utils import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _write(payload: dict, out: Path, started: float | None) -> str:
    """Write infer.json, infer.md and infer.png; return the Markdown. ``started``: the measurement's start time
    (None when redrawing an earlier run, whose duration is kept)."""
    if started is not None:
        payload["seconds"] = round(time.time() - started, 1)
    write_json(out / "infer.json", payload)
    table = _markdown(payload)
    (out / "infer.md").write_text(table)
    _plot(payload, out / "infer.png")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightseg.benchmark infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="*", default=list(BUNDLE_MODELS), help="rows of the bundles' networks")
    parser.add_argument("--controls", nargs="*", default=list(CONTROLS), help="MONAI networks measured alongside")
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--size", type=int, default=256, help="square input side")
    parser.add_argument("--steps", type=int, default=20, help="timed calls per pass at batch 1 (batch 8: steps/4)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--e2e_images", type=int, default=12, help="384x288 PNGs for the end-to-end latency (0: none)")
    parser.add_argument("--no_untuned", action="store_true", help="skip eager without the allocator setting")
    parser.add_argument("--untuned_controls", action="store_true", help="eager without it for the controls too")
    parser.add_argument("--out", default="benchmark_results/infer", help="folder for infer.json/.md/.png")
    parser.add_argument(
        "--accuracy", nargs="*", default=[], metavar="BENCHMARK_JSON",
        help="benchmark.json files of scripts/benchmark.py: test Dice for a latency-vs-Dice panel",
    )  # fmt: skip
    parser.add_argument(
        "--from_json", metavar="INFER_JSON",
        help="measure nothing: redraw infer.md/.png under --out from this infer.json (with --accuracy)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        accuracy = read_accuracy(args.accuracy)
    except ValueError as e:
        parser.error(str(e))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        try:
            payload = json.loads(Path(args.from_json).read_text())
        except (OSError, ValueError) as e:
            parser.error(f"--from_json {args.from_json}: {e}")
        payload.setdefault("accuracy", {}).update(accuracy)
        for row in accuracy:
            if row not in payload["results"]:
                logger.warning("%s: in --accuracy but not measured in %s", row, args.from_json)
        table = _write(payload, out, None)
        print(table)
        logger.info("redrew infer.md and infer.png in %s from %s", out, args.from_json)
        return 0
    # bundles and controls alternate, so that a run cut short still compares them (results are written per row)
    rows = [r for pair in itertools.zip_longest(args.bundles, args.controls) for r in pair if r is not None]
    for row in rows:
        if row not in BUNDLE_MODELS and row not in CONTROLS:
            parser.error(f"unknown network {row!r}: choose from {', '.join([*BUNDLE_MODELS, *CONTROLS])}")
    started = time.time()
    payload: dict = {
        "command": "python -m lightseg.benchmark infer " + " ".join(argv if argv is not None else []),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "size": args.size, "steps": args.steps, "passes": args.passes, "batch": args.batch, "threads": args.threads,
        "backends": [*args.backends, *([] if args.no_untuned or "eager" not in args.backends else
                                         ["eager (glibc default)"])],
        "macs_convention": "conv_macs: convolution + matrix-product multiply-accumulates (lightseg.profiling)",
        "models": {}, "exports": {}, "results": {}, "end_to_end": {}, "roofline": {}, "accuracy": accuracy,
    }  # fmt: skip
    payload["machine"] = run_isolated("lightseg.benchmark.common:machine_limits", {}, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="lightseg_infer_") as work:
        data = Path(work) / "data"
        _write_images(data, max(3 * 3, args.e2e_images + 6))
        for row in rows:
            folder = str(Path(work) / row)
            logger.info("%s: exports", row)
            formats = [_BACKEND_FORMATS[b] for b in args.backends if b in _BACKEND_FORMATS]
            prep = run_isolated("lightseg.benchmark.infer:prepare", {"row": row, "folder": folder, "size": args.size,
                                "data": str(data), "formats": formats}, threads=args.threads)  # fmt: skip
            payload["exports"][row] = prep.pop("exports")
            payload["models"][row] = prep
            payload["results"][row] = {}
            for backend in payload["backends"]:
                fmt = _BACKEND_FORMATS.get(backend)
                if fmt and "error" in payload["exports"][row].get(fmt, {}):
                    payload["results"][row][backend] = {"error": "export failed"}
                    continue
                untuned = backend.endswith("(glibc default)")
                if untuned and row not in args.bundles and not args.untuned_controls:
                    continue
                kwargs = {"row": row, "folder": folder, "backend": "eager" if untuned else backend, "size": args.size,
                          "steps": args.steps, "passes": args.passes, "batch": args.batch, "threads": args.threads,
                          "tune": not untuned}  # fmt: skip
                try:
                    payload["results"][row][backend] = run_isolated(
                        "lightseg.benchmark.infer:measure", kwargs, threads=args.threads
                    )
                    logger.info("%s %s: %.1f ms", row, backend, payload["results"][row][backend]["batch1"]["median_ms"])
                except RuntimeError as e:
                    logger.warning("%s %s failed: %s", row, backend, e)
                    payload["results"][row][backend] = {"error": str(e)[-500:]}
            best = _best_backend(payload["results"], row)
            if best:
                b8 = best[1][f"batch{args.batch}"]
                flops = 2 * prep["conv_macs"] * b8["images_per_s"]
                payload["roofline"][row] = flops / 1e9 / payload["machine"]["conv_fp32_gflops"]
            if best and row in args.bundles and row != "lvunet_train" and args.e2e_images:
                try:
                    payload["end_to_end"][row] = run_isolated(
                        "lightseg.benchmark.infer:measure_end_to_end",
                        {"row": row, "folder": folder, "backend": best[0], "data": str(data), "size": args.size,
                         "passes": args.passes, "threads": args.threads},
                        threads=args.threads,
                    )  # fmt: skip
                except RuntimeError as e:
                    logger.warning("%s end to end failed: %s", row, e)
                    payload["end_to_end"][row] = {"error": str(e)[-500:]}
            _write(payload, out, started)  # after every row: a run cut short keeps what it measured
    table = _write(payload, out, started)
    print(table)
    logger.info("wrote infer.json, infer.md, infer.png in %s (%.0f s)", out, payload["seconds"])
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))

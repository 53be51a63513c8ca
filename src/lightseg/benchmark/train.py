"""``python -m lightseg.benchmark train``: training speed of the bundles against MONAI's UNet, in the same run.

One training STEP per configuration (network x variant): ``zero_grad``, forward, the bundle's loss, backward, the
bundle's optimizer step, and what the bundle does after every step (the SeRP target update of LiteNeXt). The
network, the loss and the optimizer are built from the bundle's ``configs/train.json`` with MONAI's
``ConfigParser`` (``network``, the trainer's ``loss_function``, ``optimizer``, ``prepare_batch``): what the bundle
trains, SeRP wrapper and weak view included. The controls (``CONTROLS`` of :mod:`lightseg.benchmark.common`,
MONAI UNet and SegResNet by default) train with ``BCEDiceLoss`` + Adam (lr 1e-3).

Inputs are random (N(0, 1) images, binary masks; a flipped copy as LiteNeXt's weak view) at ``--batch`` x 3 x
``--size`` x ``--size``. Each configuration runs in a fresh process with ``--threads`` threads: ``--warmup``
steps (the first one timed apart: it includes compilation), then the median of ``--steps`` steps; best of
``--passes`` passes, the models interleaved pass by pass (pass 1: every configuration, pass 2: every
configuration...), so that drift of the machine hits all alike. Only same-run ratios mean anything.

Variants (``--variants``, comma-separated; each is a configuration measured in the same run): ``eager`` (no
switch: glibc's default allocator, the networks' reference modules), or switches joined by ``+``: ``alloc``
(:func:`lightseg.perf.tune_allocator`), ``fused`` (the fused BatchNorm + activation kernel of
:mod:`lightseg.networks.fused`; without it the modules run one after the other),
``cl`` (channels_last), ``bf16`` (:func:`lightseg.perf.autocast`, refused with a log line on CPUs without native
bf16), ``compile`` (``torch.compile``; its compile time is reported apart and excluded from the median). These are
the switches of :mod:`lightseg.perf`, the code the bundles use.

Peak memory: ``ru_maxrss`` of the child (the imported libraries included, about 0.6 GB) and its increase over the
resident size just before the first step (the training step's own memory: activations, gradients, optimizer state,
and with ``alloc`` what the allocator keeps).

``--epoch``: END-TO-END epoch time through each bundle instead (``python -m monai.bundle run training`` with
``--epochs``, data loading, validation, MLflow and checkpoints included) on the demo data (generated beforehand,
outside the timing) or ``--dataset_dir``/``--datalist`` (Kvasir-SEG, say); wall time of the whole command and the
per-epoch train / validation times from the trainer's log. Outputs go to a temporary folder: the bundle's
``models/`` and ``runs/`` are not touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lightseg.benchmark.common import CONTROLS, build_model, run_isolated, summarize_times, write_json

__all__ = [
    "BUNDLES",
    "DEFAULT_CONTROLS",
    "DEFAULT_VARIANTS",
    "SWITCHES",
    "build_training",
    "main",
    "measure",
    "measure_epoch",
    "network_name",
    "parse_variant",
]

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[3]
BUNDLES = ("cmunext_xxs", "lvunet", "litenext", "mininet")
DEFAULT_CONTROLS = ("monai_unet", "monai_segresnet")
SWITCHES = ("alloc", "fused", "cl", "bf16", "compile")
DEFAULT_VARIANTS = ("eager", "alloc", "alloc+fused", "alloc+cl", "alloc+cl+fused")
REFERENCE = "monai_unet"  # the ratio column divides by this row, same variant, same run


def _bundle_dir(bundle: str) -> Path:
    return _REPO / "bundles" / bundle


def network_name(bundle: str) -> str:
    """The network a bundle trains: ``network_name`` of its ``configs/train.json``."""
    return json.loads((_bundle_dir(bundle) / "configs" / "train.json").read_text())["network_name"]


def parse_variant(name: str) -> dict[str, bool]:
    """``"alloc+cl"`` -> ``{"alloc": True, "cl": True, "bf16": False, "compile": False}``; ``"eager"``: none."""
    parts = [p.strip() for p in str(name).split("+") if p.strip()]
    if parts == ["eager"]:
        parts = []
    unknown = [p for p in parts if p not in SWITCHES]
    if unknown or not str(name).strip():
        raise ValueError(f"unknown variant {name!r}: 'eager' or switches {'+'.join(SWITCHES)} joined by '+'.")
    return {s: s in parts for s in SWITCHES}


def _count(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def build_training(row: str) -> dict:
    """The training objects of a table row, on CPU, seeded: ``network`` (what the trainer calls), ``loss``,
    ``optimizer``, ``extra_keys`` (batch keys the trainer's ``prepare_batch`` passes to the network: weak views),
    ``prepare_batch``, ``after_step`` (called after each optimizer step, or None), ``params`` (the network alone,
    what ``model.pt`` holds), ``trained_params`` and ``step`` (a description for the table)."""
    torch.manual_seed(0)
    if row in CONTROLS:
        from monai.engines import default_prepare_batch

        from lightseg.losses import BCEDiceLoss

        net = build_model(row)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        return {
            "network": net, "loss": BCEDiceLoss(), "optimizer": optimizer, "extra_keys": [],
            "prepare_batch": default_prepare_batch, "after_step": None, "params": _count(net),
            "trained_params": _count(net, trainable=True), "network_name": CONTROLS[row][0],
            "step": "BCEDiceLoss + Adam (lr 0.001)",
        }  # fmt: skip
    if row not in BUNDLES:
        raise ValueError(f"unknown row {row!r}: a bundle {BUNDLES} or a control {tuple(CONTROLS)}.")
    from monai.bundle import ConfigParser
    from monai.engines import default_prepare_batch

    parser = ConfigParser()
    parser.read_config(str(_bundle_dir(row) / "configs" / "train.json"))
    parser["bundle_root"] = str(_bundle_dir(row))
    parser["device"] = "$torch.device('cpu')"
    trainer = parser["train"]["trainer"]
    net = parser.get_parsed_content("network")
    loss = parser.get_parsed_content(str(trainer["loss_function"]).lstrip("@"))
    optimizer = parser.get_parsed_content("optimizer")
    prepare_batch = parser.get_parsed_content("train#trainer#prepare_batch") if "prepare_batch" in trainer else None
    prepare_batch = prepare_batch or default_prepare_batch
    keys = getattr(prepare_batch, "extra_keys", None) or []
    extra_keys = list(keys.values()) if isinstance(keys, dict) else [keys] if isinstance(keys, str) else list(keys)
    bare = parser.get_parsed_content("network_def")
    after_step = getattr(net, "update_target", None)  # SeRP: lightseg.handlers.EMAUpdate at ITERATION_COMPLETED
    lr = optimizer.param_groups[0]["lr"]
    step = f"{type(loss).__name__} + {type(optimizer).__name__} (lr {lr:g})"
    if net is not bare:
        step = f"{type(net).__name__}({type(bare).__name__}) wrapper, weak view, EMA target update; " + step
    return {
        "network": net, "loss": loss, "optimizer": optimizer, "extra_keys": extra_keys, "prepare_batch": prepare_batch,
        "after_step": after_step, "params": _count(bare), "trained_params": _count(net, trainable=True),
        "network_name": parser["network_name"], "step": step,
    }  # fmt: skip


def _rss_mb() -> float | None:
    """Resident set size of this process now (MB), from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def measure(row: str, variant: str, size: int = 256, batch: int = 8, steps: int = 10, warmup: int = 3) -> dict:
    """Time ``steps`` training steps of ``row`` under ``variant`` after ``warmup`` steps (run in a fresh process by
    :func:`main`). Returns the per-step statistics, the first step's time, memory and what the switches did."""
    from lightseg.networks import fused
    from lightseg.perf import allocator_state, autocast, prepare_network, speed_settings, tune_allocator

    switches = parse_variant(variant)
    tune_allocator(switches["alloc"])  # before the model and its activations are allocated
    fused.set_enabled(switches["fused"])
    if switches["fused"] and not fused.available():
        raise RuntimeError(f"the fused kernel is not available here: {fused.kernel_state()['reason']}")
    setup = build_training(row)
    net = prepare_network(setup["network"], channels_last=switches["cl"], compile=switches["compile"]).train()
    loss_fn, optimizer, after_step = setup["loss"], setup["optimizer"], setup["after_step"]
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(batch, 3, size, size, generator=gen)
    label = (torch.rand(batch, 1, size, size, generator=gen) > 0.7).float()
    batchdata = {"image": image, "label": label, **{k: image.flip(-1) for k in setup["extra_keys"]}}
    prepared = setup["prepare_batch"](batchdata, torch.device("cpu"))
    inputs, targets = prepared[0], prepared[1]
    args, kwargs = (tuple(prepared[2]), dict(prepared[3])) if len(prepared) == 4 else ((), {})
    losses: list[float] = []
    bf16_on: list[bool] = []

    def step() -> None:  # monai.engines.SupervisedTrainer._iteration, then the ITERATION_COMPLETED handlers
        optimizer.zero_grad(set_to_none=False)
        with autocast(switches["bf16"]) as on:
            loss = loss_fn(net(inputs, *args, **kwargs), targets).mean()
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        losses.append(float(loss.detach()))
        bf16_on.append(on)

    rss_start = _rss_mb()
    warmup_s = []
    for _ in range(max(1, warmup)):
        start = time.perf_counter()
        step()
        warmup_s.append(time.perf_counter() - start)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    stats = summarize_times(times)
    peak = _peak_rss_mb()
    result = {
        "row": row, "variant": variant, "switches": switches, "size": size, "batch": batch,
        "step": stats, "ms_per_image": stats["median_ms"] / batch, "min_ms_per_image": stats["min_ms"] / batch,
        "max_ms_per_image": stats["max_ms"] / batch, "images_per_s": 1000 * batch / stats["median_ms"],
        "first_step_s": warmup_s[0], "warmup_s": warmup_s,
        "compile_s": max(0.0, warmup_s[0] - stats["median_ms"] / 1000) if switches["compile"] else None,
        "peak_rss_mb": peak, "rss_start_mb": rss_start,
        "rss_increase_mb": None if rss_start is None else peak - rss_start,
        "loss_first": losses[0], "loss_last": losses[-1], "finite": all(math.isfinite(v) for v in losses),
        "allocator": allocator_state(), "speed": speed_settings(net), "bf16": bool(bf16_on and bf16_on[-1]),
        "threads": torch.get_num_threads(),
        "loss_terms": dict(getattr(loss_fn, "last_terms", None) or {}),  # LiteNeXt: mwl, dice and serp
        "describe": {k: setup[k] for k in ("network_name", "params", "trained_params", "step")},
    }  # fmt: skip
    return result


def _best(passes: list[dict]) -> dict | None:
    """The pass with the lowest median (a shared machine only ever slows a pass down); peak memory: the largest."""
    ok = [p for p in passes if "step" in p]
    if not ok:
        return None
    best = dict(min(ok, key=lambda p: p["step"]["median_ms"]))
    best["peak_rss_mb"] = max(p["peak_rss_mb"] for p in ok)
    increases = [p["rss_increase_mb"] for p in ok if p.get("rss_increase_mb") is not None]
    best["rss_increase_mb"] = max(increases) if increases else None
    compile_s = [p["compile_s"] for p in ok if p.get("compile_s") is not None]
    best["compile_s"] = min(compile_s) if compile_s else None
    return best


def _summaries(payload: dict) -> None:
    """``summary[row][variant]``: the best pass and the ratio to MONAI UNet in the same variant."""
    payload["summary"] = {}
    for row, by_variant in payload["results"].items():
        payload["summary"][row] = {}
        for variant, passes in by_variant.items():
            best = _best(passes)
            if best is None:
                payload["summary"][row][variant] = {"error": next((p["error"] for p in passes if "error" in p), "")}
                continue
            ref = _best(payload["results"].get(REFERENCE, {}).get(variant, []))
            best["ratio_to_monai_unet"] = best["ms_per_image"] / ref["ms_per_image"] if ref else None
            best["passes_measured"] = len([p for p in passes if "step" in p])
            payload["summary"][row][variant] = best


def _markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [
        f"Training step (zero_grad, forward, the bundle's loss, backward, optimizer step) at batch {payload['batch']}, "
        f"{payload['size']}x{payload['size']}, {payload['threads']} threads; median of {payload['steps']} steps after "
        f"{payload['warmup']} warm-up steps, best of {payload['passes']} passes, each configuration in a fresh "
        f"process, models interleaved pass by pass. {payload['date']}, torch {payload['torch']}, "
        f"monai {payload['monai']}. "
        f"Machine: {m.get('cpu')}; fp32 conv peak {m.get('conv_fp32_gflops') or 0:.0f} GFLOP/s, copy "
        f"{m.get('copy_gbps') or 0:.1f} GB/s.",
        "",
        "| network | params | variant | ms/img median (min-max) | img/s | x MONAI UNet | peak MB (+ in steps) | "
        "first step s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in payload["variants"]:
        for row in payload["results"]:  # every row asked for, failed ones included
            info = payload["rows"].get(row, {"network_name": "?", "params": 0})
            s = payload["summary"].get(row, {}).get(variant)
            name = f"{row} ({info['network_name']})" if row in BUNDLES else row
            if s is None:
                continue
            if "error" in s:
                lines.append(f"| {name} | {info.get('params', 0):,} | {variant} | failed | - | - | - | - |")
                continue
            ratio = f"{s['ratio_to_monai_unet']:.2f}" if s.get("ratio_to_monai_unet") is not None else "-"
            inc = f" (+{s['rss_increase_mb']:.0f})" if s.get("rss_increase_mb") is not None else ""
            first = f"{s['first_step_s']:.1f}"
            if s.get("compile_s") is not None:
                first += f" (compile {s['compile_s']:.1f}; {s['speed'].get('status', '')})"
            if s["switches"]["bf16"] and not s["bf16"]:
                first += " (bf16 refused)"
            lines.append(
                f"| {name} | {info['params']:,} | {variant} | {s['ms_per_image']:.1f} ({s['min_ms_per_image']:.1f}-"
                f"{s['max_ms_per_image']:.1f}) | {s['images_per_s']:.1f} | {ratio} | {s['peak_rss_mb']:.0f}{inc} | "
                f"{first} |"
            )
    lines += ["", "Training step timed per network:"]
    lines += [f"- {row}: {info['step']}" for row, info in payload["rows"].items() if "step" in info]
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    import monai

    return {"torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version()}


def _command(argv: list[str] | None) -> str:
    return "python -m lightseg.benchmark train " + " ".join(sys.argv[1:] if argv is None else argv)


# ---------------------------------------------------------------------------------------------- end-to-end epoch

_TAKEN = r"Time taken: (\d+):(\d+):([\d.]+)"
_EPOCH_LINE = re.compile(r"ignite\.engine\.engine\.(\w+) - INFO - Epoch\[(\d+)\] Complete\. " + _TAKEN)
_RUN_LINE = re.compile(r"ignite\.engine\.engine\.(\w+) - INFO - Engine run (?:finished|complete)\. " + _TAKEN)


def _seconds(h: str, m: str, s: str) -> float:
    return 3600 * int(h) + 60 * int(m) + float(s)


def parse_epoch_log(text: str) -> dict:
    """Per-epoch times from a bundle run's log (Ignite's "Epoch[N] Complete. Time taken" lines): the trainer's
    epoch (its EPOCH_COMPLETED handlers, validation included), the evaluator's (validation), and their difference
    (training alone); the trainer's whole run."""
    trainer: dict[int, float] = {}
    evaluator: dict[int, float] = {}
    for engine, epoch, h, m, s in _EPOCH_LINE.findall(text):
        target = trainer if engine.endswith("Trainer") else evaluator if engine.endswith("Evaluator") else None
        if target is not None:
            target[int(epoch)] = _seconds(h, m, s)
    runs = [(e, _seconds(h, m, s)) for e, h, m, s in _RUN_LINE.findall(text)]
    epochs = sorted(trainer)
    return {
        "epoch_s": [trainer[e] for e in epochs],
        "validation_s": [evaluator.get(e) for e in epochs],
        "train_s": [trainer[e] - evaluator.get(e, 0.0) for e in epochs],
        "trainer_run_s": next((t for e, t in reversed(runs) if e.endswith("Trainer")), None),
    }


def _cli_value(value: object) -> str:
    if isinstance(value, str):
        return value
    return repr(value) if value is None or isinstance(value, bool) else json.dumps(value)


def measure_epoch(
    bundle: str,
    out_dir: str | os.PathLike,
    epochs: int = 1,
    dataset_dir: str | None = None,
    datalist: str | None = None,
    overrides: dict | None = None,
    threads: int = 2,
    timeout: float = 7200,
) -> dict:
    """Run ``python -m monai.bundle run training`` of ``bundle`` for ``epochs`` epochs with its outputs under
    ``out_dir`` (``runs_dir``, ``models_dir``, ``output_dir``; no promotion) and return the wall time of the command,
    the per-epoch times of its log (:func:`parse_epoch_log`) and what its ``settings.json`` recorded."""
    out = Path(out_dir)
    configs = _bundle_dir(bundle) / "configs"
    values = {
        "epochs": int(epochs), "runs_dir": str(out / "runs"), "models_dir": str(out / "models"),
        "output_dir": str(out / "eval"), "promote": "false", "progress_bar": "false",
        **({"dataset_dir": dataset_dir} if dataset_dir else {}), **({"datalist": datalist} if datalist else {}),
        **(overrides or {}),
    }  # fmt: skip
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(configs / "train.json"),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf")]  # fmt: skip
    for key, value in values.items():
        cmd += [f"--{key}", _cli_value(value)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=_REPO, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - start
    log = result.stdout + result.stderr
    entry: dict = {"bundle": bundle, "epochs": int(epochs), "overrides": values, "wall_s": wall,
                   "returncode": result.returncode, **parse_epoch_log(log)}  # fmt: skip
    if result.returncode != 0:
        entry["error"] = "\n".join(log.strip().splitlines()[-15:])
        return entry
    settings = sorted((out / "runs").glob("*/models/settings.json"))
    if settings:
        recorded = json.loads(settings[-1].read_text())
        keys = ("started", "finished", "epochs_completed", "image_size", "network_name", "best_model_metric")
        entry["settings"] = {k: recorded.get(k) for k in keys}
    if entry["trainer_run_s"] is not None:
        entry["startup_s"] = wall - entry["trainer_run_s"]  # imports, data caching, MLflow set-up, exit
    return entry


def _epoch_markdown(payload: dict) -> str:
    lines = [
        f"End-to-end training through the bundle (`python -m monai.bundle run training --epochs {payload['epochs']}`, "
        f"{payload['threads']} threads, data: {payload['data']}); {payload['date']}, torch {payload['torch']}.",
        "",
        "| bundle | wall s | startup s | epoch s (train + validation) | train s per epoch |",
        "|---|---|---|---|---|",
    ]
    for bundle, runs in payload["results"].items():
        for e in runs:
            if "error" in e:
                lines.append(f"| {bundle} | failed (exit {e['returncode']}) | - | - | - |")
                continue
            startup = f"{e['startup_s']:.1f}" if e.get("startup_s") is not None else "-"
            epochs = ", ".join(f"{t:.1f}" for t in e["epoch_s"]) or "-"
            train = ", ".join(f"{t:.1f}" for t in e["train_s"]) or "-"
            lines.append(f"| {bundle} | {e['wall_s']:.1f} | {startup} | {epochs} | {train} |")
    return "\n".join(lines) + "\n"


def _run_epoch_mode(args: argparse.Namespace, argv: list[str] | None) -> int:
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        overrides[key] = value
    if not args.dataset_dir and not args.datalist:
        from lightseg.data.datalist import ensure_demo_data

        start = time.perf_counter()
        if ensure_demo_data(_REPO / "data_lists" / "demo.json", _REPO / "data" / "demo"):
            logger.info("demo data generated in %.0f s (not timed)", time.perf_counter() - start)
        data = "demo (data_lists/demo.json)"
    else:
        data = f"{args.datalist or 'default datalist'} in {args.dataset_dir or 'default dataset_dir'}"
    payload: dict = {
        "mode": "epoch", "command": _command(argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **_versions(), "epochs": args.epochs, "threads": args.threads, "passes": args.passes or 1, "data": data,
        "overrides": overrides, "results": {},
    }  # fmt: skip
    out = Path(args.out or "results/bench_train_epoch.json")
    with tempfile.TemporaryDirectory(prefix="lightseg_epoch_") as work:
        for p in range(payload["passes"]):
            for bundle in args.bundles:
                logger.info("pass %d: %s, %d epoch(s) through the bundle", p + 1, bundle, args.epochs)
                entry = measure_epoch(bundle, Path(work) / f"{bundle}_{p}", epochs=args.epochs,
                                      dataset_dir=args.dataset_dir, datalist=args.datalist, overrides=overrides,
                                      threads=args.threads)  # fmt: skip
                if "error" in entry:
                    logger.warning("%s failed:\n%s", bundle, entry["error"])
                payload["results"].setdefault(bundle, []).append(entry)
                write_json(out, payload)
    print(_epoch_markdown(payload))
    logger.info("wrote %s", out)
    return 0 if all("error" not in e for runs in payload["results"].values() for e in runs) else 1


# ----------------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightseg.benchmark train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="*", default=list(BUNDLES), choices=BUNDLES)
    parser.add_argument("--controls", nargs="*", default=list(DEFAULT_CONTROLS), choices=list(CONTROLS),
                        help="MONAI networks measured alongside (the ratio column needs monai_unet)")  # fmt: skip
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated: eager, or alloc, fused, cl, bf16, compile joined by '+'")  # fmt: skip
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="square input side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (the first is reported apart)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per pass (the median is reported)")
    parser.add_argument("--passes", type=int, default=None, help="best of (default 3; 1 with --epoch)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration process")
    parser.add_argument("--out", default=None, help="JSON file (default results/bench_train.json; with --epoch "
                        "results/bench_train_epoch.json)")  # fmt: skip
    group = parser.add_argument_group("end-to-end epoch mode")
    group.add_argument("--epoch", action="store_true", help="time whole epochs through the bundles instead of steps")
    group.add_argument("--epochs", type=int, default=1)
    group.add_argument("--dataset_dir", default=None, help="data other than the demo (Kvasir-SEG: see the README)")
    group.add_argument("--datalist", default=None)
    group.add_argument("--set", action="append", metavar="KEY=VALUE", help="a bundle override (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.epoch:
        return _run_epoch_mode(args, argv)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        try:
            parse_variant(v)
        except ValueError as e:
            parser.error(str(e))
    passes = args.passes or 3
    rows = [*args.bundles, *args.controls]
    out = Path(args.out or "results/bench_train.json")
    payload: dict = {
        "mode": "step", "command": _command(argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **_versions(), "size": args.size, "batch": args.batch, "threads": args.threads, "warmup": args.warmup,
        "steps": args.steps, "passes": passes, "variants": variants, "reference": REFERENCE,
        "rows": {}, "results": {row: {v: [] for v in variants} for row in rows}, "summary": {},
    }  # fmt: skip
    started = time.time()
    payload["machine"] = run_isolated("lightseg.benchmark.common:machine_limits", {}, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="lightseg_bench_train_") as work:
        for p in range(passes):
            for row in rows:
                for variant in variants:
                    kwargs = {"row": row, "variant": variant, "size": args.size, "batch": args.batch,
                              "steps": args.steps, "warmup": args.warmup}  # fmt: skip
                    # a cold Inductor cache per process: every pass measures the same compilation
                    env = {"TORCHINDUCTOR_CACHE_DIR": str(Path(work) / f"inductor_{row}_{variant}_{p}")}
                    try:
                        result = run_isolated("lightseg.benchmark.train:measure", kwargs, threads=args.threads,
                                              timeout=args.timeout, env=env)  # fmt: skip
                        logger.info("pass %d %s %s: %.1f ms/img", p + 1, row, variant, result["ms_per_image"])
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        logger.warning("pass %d %s %s failed: %s", p + 1, row, variant, e)
                        result = {"error": str(e)[-1500:]}
                    if "describe" in result:
                        payload["rows"].setdefault(row, {"kind": "bundle" if row in BUNDLES else "control",
                                                         **result.pop("describe")})  # fmt: skip
                    payload["results"][row][variant].append(result)
            _summaries(payload)
            payload["seconds"] = round(time.time() - started, 1)
            write_json(out, payload)  # after every pass: a run cut short keeps what it measured
    print(_markdown(payload))
    logger.info("wrote %s (%.0f s)", out, payload["seconds"])
    failed = [f"{r} {v}" for r, by in payload["summary"].items() for v, s in by.items() if "error" in s]
    if failed:
        logger.warning("failed in every pass: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

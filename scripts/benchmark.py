#!/usr/bin/env python
"""Train a bundle on a prepared dataset with an epoch or time budget, evaluate it on the test split, write the figures.

    python scripts/benchmark.py --bundle cmunext_xxs --dataset_dir data/kvasir_seg \\
        --datalist data_lists/kvasir_seg.json --epochs 20 --image_size 128 128 --seeds 0 1 2 --out results/kvasir
    python scripts/benchmark.py --bundle lvunet --dataset_dir data/kvasir_seg \\
        --datalist data_lists/kvasir_seg.json --time_budget 15 --image_size 128 128 --out results/kvasir15

For every seed it runs ``monai.bundle run training`` then ``run evaluating`` (the bundle's own configs, selection on
the validation split, metrics on the held-out testing split), each in its own process and output folder, and
writes ``benchmark.json`` (settings, wall times, per-image and pooled IoU, Dice, precision and recall for each seed,
mean and standard deviation over seeds, and the per-image values) and ``benchmark.md`` (a Markdown table).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("benchmark")
ROOT = Path(__file__).resolve().parent.parent
METRICS = ("iou", "dice", "precision", "recall")


def _bundle_cmd(bundle: str, configs: list[str], run_id: str, overrides: dict) -> list[str]:
    files = [str(ROOT / "bundles" / bundle / "configs" / c) for c in configs]
    config = files[0] if len(files) == 1 else json.dumps(files)
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config,
           "--logging_file", str(ROOT / "bundles" / bundle / "configs" / "logging.conf")]  # fmt: skip
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return cmd


def _run(cmd: list[str], log_file: Path) -> float:
    start = time.perf_counter()
    with open(log_file, "w") as log:
        result = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed (exit {result.returncode}); see {log_file}")
    return time.perf_counter() - start


def read_metrics(eval_dir: Path) -> dict:
    """Per-image means and pooled values from the evaluation's ``metrics.csv``, and the per-image values."""
    with open(eval_dir / "metrics.csv") as f:
        summary = {row[0]: float(row[1]) for row in csv.reader(f) if row}
    result = {
        "mean": {m: summary[f"mean_{m}"] for m in METRICS},
        "pooled": {m: summary[f"pooled_{m}"] for m in METRICS},
    }
    per_image = {}
    for m in METRICS:
        with open(eval_dir / f"mean_{m}_raw.csv") as f:
            rows = list(csv.reader(f))[1:]  # filename, class values..., mean
        per_image[m] = {Path(r[0]).name: float(r[-1]) for r in rows if r}
    result["per_image"] = per_image
    return result


TRAINING_KEYS = ("epochs_completed", "best_model_metric", "best_model_epoch", "time_budget", "time_budget_elapsed_s",
                 "time_budget_stopped_by", "epochs_reached")  # fmt: skip


def read_training(models_dir: Path) -> dict:
    """What the training recorded in its ``settings.json``: epochs, the best validation metric and its epoch, and
    with ``--time_budget`` the budget, the time it used and why it stopped."""
    path = models_dir / "settings.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    return {k: settings[k] for k in TRAINING_KEYS if k in settings}


def summarize(runs: list[dict]) -> dict:
    """Mean and (sample) standard deviation over seeds of every per-image-mean and pooled metric."""
    out = {}
    for kind in ("mean", "pooled"):
        out[kind] = {}
        for m in METRICS:
            values = [r["metrics"][kind][m] for r in runs]
            out[kind][m] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
    return out


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"{s['bundle']} on {s['datalist']}: "
        + (
            f"{s['overrides']['time_budget']:g} minutes"
            if s["overrides"].get("time_budget")
            else f"{s['epochs']} epochs"
        )
        + f" at {s['image_size'][0]}x{s['image_size'][1]}, "
        f"seeds {s['seeds']}, test split of {result['runs'][0]['test_images']} images",
        "",
        "| metric | per-image mean | pooled over pixels |",
        "|---|---|---|",
    ]
    for m in METRICS:
        a, b = result["summary"]["mean"][m], result["summary"]["pooled"][m]
        pm = len(s["seeds"]) > 1
        lines.append(
            f"| {m} | {a['mean']:.4f}" + (f" +- {a['std']:.4f}" if pm else "") + f" | {b['mean']:.4f}"
            + (f" +- {b['std']:.4f}" if pm else "") + " |"
        )  # fmt: skip
    times = ", ".join(f"{r['train_seconds']:.0f} s" for r in result["runs"])
    lines += ["", f"training wall time per seed: {times}"]
    for r in result["runs"]:
        t = r.get("training", {})
        if "best_model_metric" in t:
            lines.append(
                f"seed {r['seed']}: {t.get('epochs_completed', '?')} epochs, best validation "
                f"{t['best_model_metric']:.4f} at epoch {t.get('best_model_epoch', '?')}"
                + (f", budget {t['time_budget']:g} min ({t.get('time_budget_elapsed_s', 0):.0f} s used, stopped by "
                   f"{t.get('time_budget_stopped_by', '?')})" if t.get("time_budget") else "")
            )  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, choices=sorted(p.name for p in (ROOT / "bundles").iterdir()))
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--epochs", type=int, help="the epoch budget (with --time_budget: the most epochs)")
    parser.add_argument("--time_budget", type=float, help="train for this many minutes (the bundle's --time_budget)")
    parser.add_argument("--image_size", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="extra bundle override (a JSON value, or a plain string)",
    )
    parser.add_argument("--reuse", action="store_true", help="keep the seeds already evaluated in --out (resume)")
    args = parser.parse_args(argv)
    if args.epochs is None and args.time_budget is None:
        parser.error("give --epochs, --time_budget or both")
    if args.epochs is None:
        args.epochs = 100_000  # the budget decides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    extra = {}
    for item in args.override:
        key, _, value = item.partition("=")
        try:
            extra[key] = json.loads(value)
        except json.JSONDecodeError:  # a plain word: lr_schedule=cosine
            extra[key] = value
    if args.time_budget is not None:
        extra["time_budget"] = args.time_budget
    runs = []
    for seed in args.seeds:
        run_dir = out / f"seed_{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        common = {
            "bundle_root": str(ROOT / "bundles" / args.bundle), "dataset_dir": str(Path(args.dataset_dir).resolve()),
            "datalist": str(Path(args.datalist).resolve()), "ckpt_dir": str(run_dir / "models"),
            "models_dir": str(run_dir / "models"), "runs_dir": str(run_dir / "runs"),
            "image_size": list(args.image_size), "seed": seed, "progress_bar": "false", **extra,
        }  # fmt: skip
        done = run_dir / "train_seconds.txt"
        if args.reuse and done.is_file() and (run_dir / "eval" / "metrics.csv").is_file():
            logger.info("seed %d: reusing the finished run in %s", seed, run_dir)
            train_s = float(done.read_text())
        else:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a new run, not a resumed one
            train = {**common, "epochs": args.epochs, "batch_size": args.batch_size,
                     "output_dir": str(run_dir / "train")}  # fmt: skip
            logger.info("seed %d: training %s for %d epochs", seed, args.bundle, args.epochs)
            train_s = _run(_bundle_cmd(args.bundle, ["train.json"], "training", train), run_dir / "train.log")
            done.write_text(f"{train_s:.1f}\n")
            logger.info("seed %d: evaluating on the testing split", seed)
            evaluate = {**common, "output_dir": str(run_dir / "eval")}
            _run(
                _bundle_cmd(args.bundle, ["train.json", "evaluate.json"], "evaluating", evaluate), run_dir / "eval.log"
            )
        metrics = read_metrics(run_dir / "eval")
        training = read_training(run_dir / "models")
        runs.append({"seed": seed, "train_seconds": train_s, "training": training, "metrics": metrics,
                     "test_images": len(metrics["per_image"]["dice"])})  # fmt: skip
        logger.info("seed %d: test IoU %.4f, Dice %.4f (pooled %.4f) in %.0f s; %s", seed, metrics["mean"]["iou"],
                    metrics["mean"]["dice"], metrics["pooled"]["dice"], train_s, training)  # fmt: skip
    result = {
        "settings": {"bundle": args.bundle, "dataset_dir": args.dataset_dir, "datalist": args.datalist,
                     "epochs": args.epochs, "image_size": list(args.image_size), "batch_size": args.batch_size,
                     "seeds": args.seeds, "overrides": extra, "cpu_count": os.cpu_count()},
        "runs": runs,
        "summary": summarize(runs),
    }  # fmt: skip
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (out / "benchmark.md").write_text(table)
    logger.info("wrote %s and %s\n%s", out / "benchmark.json", out / "benchmark.md", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

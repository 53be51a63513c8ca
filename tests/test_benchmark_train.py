"""``python -m lightseg.benchmark train``: what it times (the bundle's own step), its JSON and table, the epoch mode.

Timings are not tested (shared machines); the fields, the same-run ratio and what each configuration ran are.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lightseg.benchmark import train as bench

from .conftest import BUNDLE_NAMES, ROOT, make_tiny_dataset

EXPECTED = {  # bundle -> (network, optimizer, learning rate) as in its configs/train.json
    "cmunext_xxs": ("cmunext_xxs", torch.optim.Adam, 1e-3),
    "lvunet": ("lvunet", torch.optim.Adam, 1e-3),
    "litenext": ("litenext", torch.optim.NAdam, 1e-4),
    "mininet": ("mininet", torch.optim.Adam, 1e-4),
}


def test_parse_variant():
    none = {"alloc": False, "fused": False, "cl": False, "bf16": False, "compile": False}
    assert bench.parse_variant("eager") == none
    assert bench.parse_variant("alloc+cl+bf16") == {**none, "alloc": True, "cl": True, "bf16": True}
    assert bench.parse_variant("alloc+fused")["fused"] is True
    assert bench.parse_variant("alloc+compile")["compile"] is True
    for bad in ("", "fast", "alloc+eager", "alloc+cl+jit"):
        with pytest.raises(ValueError, match="variant"):
            bench.parse_variant(bad)


def test_network_names_from_the_bundles():
    assert {b: bench.network_name(b) for b in bench.BUNDLES} == {b: e[0] for b, e in EXPECTED.items()}
    assert sorted(bench.BUNDLES) == BUNDLE_NAMES  # every bundle folder is benchmarked


@pytest.mark.parametrize("bundle", list(EXPECTED))
def test_build_training_is_what_the_bundle_trains(bundle):
    from lightseg.networks import create_network

    name, optimizer, lr = EXPECTED[bundle]
    setup = bench.build_training(bundle)
    assert type(setup["optimizer"]) is optimizer and setup["optimizer"].param_groups[0]["lr"] == pytest.approx(lr)
    assert setup["params"] == sum(p.numel() for p in create_network(name).parameters())
    trained = {id(p) for g in setup["optimizer"].param_groups for p in g["params"]}
    assert trained == {id(p) for p in setup["network"].parameters() if p.requires_grad}  # the optimizer trains it
    if bundle == "litenext":  # SeRP: the wrapper is trained, with its weak view and EMA target update
        from lightseg.losses import LiteNeXtLoss
        from lightseg.training import SeRP

        assert isinstance(setup["network"], SeRP) and isinstance(setup["loss"], LiteNeXtLoss)
        assert setup["extra_keys"] == ["image_weak"] and setup["after_step"] is not None
        assert setup["loss"].serp_source is setup["network"]
        assert setup["trained_params"] > setup["params"]
    else:
        assert setup["extra_keys"] == [] and setup["after_step"] is None
        assert setup["trained_params"] == setup["params"]


def test_measure_in_process_litenext_includes_serp():
    from lightseg.networks import fused

    was = fused.enabled()
    try:
        result = bench.measure("litenext", "cl", size=32, batch=2, steps=2, warmup=1)
    finally:
        fused.set_enabled(was)  # measure() sets the switch for its (normally fresh) process
    assert result["step"]["n"] == 2 and result["ms_per_image"] > 0 and result["images_per_s"] > 0
    assert result["finite"] and set(result["loss_terms"]) == {"mwl", "dice", "serp"}  # SeRP term computed
    assert result["speed"]["channels_last"] is True and result["speed"]["compile"] is None
    assert result["switches"] == {"alloc": False, "fused": False, "cl": True, "bf16": False, "compile": False}
    assert result["compile_s"] is None and result["first_step_s"] > 0
    assert result["peak_rss_mb"] >= result["rss_start_mb"] > 0


def test_parse_epoch_log():
    log = "\n".join(
        [
            "2026-01-01 10:00:00,000 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[1] Complete. "
            "Time taken: 00:00:02.500",
            "2026-01-01 10:00:00,000 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[1] Complete. "
            "Time taken: 00:01:10.000",
            "2026-01-01 10:00:00,000 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[2] Complete. "
            "Time taken: 00:00:02.000",
            "2026-01-01 10:00:00,000 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[2] Complete. "
            "Time taken: 00:01:00.000",
            "2026-01-01 10:00:00,000 - ignite.engine.engine.SupervisedTrainer - INFO - Engine run finished. "
            "Time taken: 01:02:03.500",
        ]
    )
    parsed = bench.parse_epoch_log(log)
    assert parsed["epoch_s"] == [70.0, 60.0] and parsed["validation_s"] == [2.5, 2.0]
    assert parsed["train_s"] == [67.5, 58.0] and parsed["trainer_run_s"] == 3723.5


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lightseg.benchmark", "train", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_benchmark_train_tiny(tmp_path):
    out = tmp_path / "bench_train.json"
    result = _run(["--bundles", "mininet", "--controls", "monai_unet", "--variants", "eager,alloc+cl+fused",
                   "--size", "32", "--batch", "2", "--steps", "2", "--warmup", "1", "--passes", "1", "--threads", "1",
                   "--out", str(out)])  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    payload = json.loads(out.read_text())
    for key in ("command", "date", "torch", "monai", "machine", "size", "batch", "steps", "passes", "threads"):
        assert key in payload, key
    assert payload["machine"]["conv_fp32_gflops"] > 0 and payload["torch"] == torch.__version__
    assert (payload["size"], payload["batch"], payload["steps"], payload["passes"]) == (32, 2, 2, 1)
    assert payload["variants"] == ["eager", "alloc+cl+fused"] and set(payload["rows"]) == {"mininet", "monai_unet"}
    assert payload["rows"]["mininet"]["network_name"] == "mininet" and payload["rows"]["mininet"]["params"] > 0
    assert "AlphaWeightedLoss + Adam" in payload["rows"]["mininet"]["step"]
    for row in ("mininet", "monai_unet"):
        for variant in payload["variants"]:
            assert len(payload["results"][row][variant]) == 1
            s = payload["summary"][row][variant]
            assert s["step"]["n"] == 2 and s["peak_rss_mb"] > 0 and s["rss_increase_mb"] is not None
            assert s["ms_per_image"] == pytest.approx(s["step"]["median_ms"] / 2)
            unet = payload["summary"]["monai_unet"][variant]["ms_per_image"]
            assert s["ratio_to_monai_unet"] == pytest.approx(s["ms_per_image"] / unet)
    tuned = payload["summary"]["mininet"]["alloc+cl+fused"]
    assert tuned["switches"]["fused"] is True and payload["summary"]["mininet"]["eager"]["switches"]["fused"] is False
    assert tuned["speed"]["channels_last"] is True and tuned["allocator"]["reason"] != "disabled"
    assert payload["summary"]["mininet"]["eager"]["allocator"] == {"tuned": False, "reason": "disabled"}
    assert "| mininet (mininet) |" in result.stdout and "| monai_unet |" in result.stdout
    assert str(out) in result.stderr  # the log line saying where the JSON went


@pytest.mark.slow
def test_benchmark_train_epoch_mode_tiny(tmp_path):
    data = tmp_path / "data"
    datalist = make_tiny_dataset(data)
    models = sorted(p.name for p in (ROOT / "bundles" / "cmunext_xxs" / "models").iterdir())
    out = tmp_path / "epoch.json"
    result = _run(["--epoch", "--bundles", "cmunext_xxs", "--epochs", "2", "--dataset_dir", str(data), "--datalist",
                   str(datalist), "--set", "image_size=[32,32]", "--set", "batch_size=2", "--set", "num_workers=0",
                   "--threads", "1", "--out", str(out)])  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    payload = json.loads(out.read_text())
    assert payload["mode"] == "epoch" and payload["epochs"] == 2 and payload["overrides"]["image_size"] == "[32,32]"
    (entry,) = payload["results"]["cmunext_xxs"]
    assert entry["returncode"] == 0 and entry["wall_s"] > entry["trainer_run_s"] > 0
    assert len(entry["epoch_s"]) == 2 and all(t > 0 for t in entry["train_s"])
    assert all(v is not None and 0 < v < e for v, e in zip(entry["validation_s"], entry["epoch_s"], strict=True))
    assert entry["settings"]["epochs_completed"] == 2 and entry["settings"]["image_size"] == [32, 32]
    assert sorted(p.name for p in (ROOT / "bundles" / "cmunext_xxs" / "models").iterdir()) == models  # not promoted
    assert "| cmunext_xxs |" in result.stdout


def _fake(row: str, variant: str, median_ms: float, compile_s: float | None = None) -> dict:
    return {
        "row": row, "variant": variant, "switches": bench.parse_variant(variant),
        "step": {"median_ms": median_ms, "min_ms": median_ms, "max_ms": median_ms, "n": 2},
        "ms_per_image": median_ms / 2, "min_ms_per_image": median_ms / 2, "max_ms_per_image": median_ms / 2,
        "images_per_s": 2000 / median_ms, "first_step_s": 1.0 + (compile_s or 0), "compile_s": compile_s,
        "peak_rss_mb": 700.0, "rss_increase_mb": 50.0, "speed": {"status": "compiled" if compile_s else "eager"},
        "bf16": False,
    }  # fmt: skip


def test_summary_best_pass_same_run_ratio_and_failures():
    payload = {
        "batch": 2, "size": 32, "threads": 1, "steps": 2, "warmup": 1, "passes": 2, "date": "today", "torch": "t",
        "monai": "m", "machine": {"cpu": "cpu", "conv_fp32_gflops": 1.0, "copy_gbps": 1.0},
        "variants": ["eager", "alloc+compile"],
        "rows": {"mininet": {"network_name": "mininet", "params": 10, "step": "AlphaWeightedLoss + Adam"},
                 "monai_unet": {"network_name": "UNet", "params": 20, "step": "BCEDiceLoss + Adam"}},
        "results": {
            "mininet": {"eager": [_fake("mininet", "eager", 30.0), _fake("mininet", "eager", 20.0)],
                        "alloc+compile": [_fake("mininet", "alloc+compile", 10.0, compile_s=60.0)]},
            "monai_unet": {"eager": [_fake("monai_unet", "eager", 40.0), _fake("monai_unet", "eager", 50.0)],
                           "alloc+compile": [{"error": "boom"}]},
            "lvunet": {"eager": [{"error": "out of memory"}], "alloc+compile": [{"error": "out of memory"}]},
        },
    }  # fmt: skip
    bench._summaries(payload)
    s = payload["summary"]
    assert s["mininet"]["eager"]["step"]["median_ms"] == 20.0  # best pass
    assert s["mininet"]["eager"]["ratio_to_monai_unet"] == pytest.approx(10.0 / 20.0)  # same variant's best UNet
    assert s["mininet"]["alloc+compile"]["ratio_to_monai_unet"] is None  # UNet failed in that variant
    assert s["monai_unet"]["alloc+compile"] == {"error": "boom"}
    table = bench._markdown(payload)
    assert "| mininet (mininet) | 10 | eager | 10.0 (10.0-10.0) | 100.0 | 0.50 | 700 (+50) | 1.0 |" in table
    assert "compile 60.0; compiled" in table
    assert "| lvunet (?) | 0 | eager | failed |" in table and "| monai_unet | 20 | alloc+compile | failed |" in table

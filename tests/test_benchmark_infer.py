"""``python -m lightseg.benchmark infer`` on a tiny configuration: valid JSON, Markdown table and PNG plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")


def test_accuracy_file_that_is_not_a_benchmark_result_is_refused_before_measuring(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"dice": 0.8}))
    cmd = [sys.executable, "-m", "lightseg.benchmark", "infer", "--accuracy", str(bad), "--out", str(tmp_path / "o")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and f"{bad}: not a benchmark.json of scripts/benchmark.py" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_benchmark_infer_tiny(tmp_path):
    from lightseg.data.converters import prepare

    from .test_converters import fake_kvasir

    # a real scripts/benchmark.py result (1 epoch on a fake Kvasir-SEG) for the latency-vs-Dice panel
    fake_kvasir(tmp_path / "raw", n=10)
    prepare("kvasir_seg", tmp_path / "raw", tmp_path / "prepared", progress=False)
    trained = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--bundle", "mininet", "--dataset_dir", str(tmp_path / "prepared"),
         "--datalist", str(tmp_path / "prepared" / "datalist.json"), "--epochs", "1", "--image_size", "32", "32",
         "--batch_size", "2", "--seeds", "0", "--out", str(tmp_path / "trained"),
         "--override", "num_workers=0", "--override", "use_mlflow=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-4000:]
    accuracy = tmp_path / "trained" / "benchmark.json"
    dice = json.loads(accuracy.read_text())["summary"]["mean"]["dice"]["mean"]

    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "lightseg.benchmark", "infer", "--bundles", "mininet", "--controls", "monai_segresnet",
           "--backends", "eager", "onnxruntime", "--size", "32", "--steps", "2", "--passes", "1",
           "--e2e_images", "3", "--threads", "1", "--out", str(out), "--accuracy", str(accuracy)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    payload = json.loads((out / "infer.json").read_text())
    assert set(payload["accuracy"]) == {"mininet"} and payload["accuracy"]["mininet"]["dice"] == dice
    assert set(payload["models"]) == {"mininet", "monai_segresnet"}
    assert payload["backends"] == ["eager", "onnxruntime", "eager (glibc default)"]
    for row in ("mininet", "monai_segresnet"):
        assert payload["models"][row]["params"] > 0 and payload["models"][row]["conv_macs"] > 0
        measured = [b for b in payload["backends"] if row == "mininet" or "glibc" not in b]  # untuned: bundles only
        assert sorted(payload["results"][row]) == sorted(measured)
        for backend in measured:
            stats = payload["results"][row][backend]
            assert stats["batch1"]["n"] == 2 and 0 < stats["batch1"]["min_ms"] <= stats["batch1"]["median_ms"]
            assert stats["batch8"]["images_per_s"] > 0
        # 2 * MACs * batch-8 images/s over the conv peak of the same run (not bounded by 1 on a shared machine)
        best = min(
            (b for b in payload["backends"] if "glibc" not in b),
            key=lambda b: payload["results"][row][b]["batch1"]["median_ms"],
        )
        achieved = 2 * payload["models"][row]["conv_macs"] * payload["results"][row][best]["batch8"]["images_per_s"]
        assert payload["roofline"][row] == pytest.approx(achieved / 1e9 / payload["machine"]["conv_fp32_gflops"])
    e2e = payload["end_to_end"]["mininet"]
    assert e2e["backend"] in ("eager", "onnxruntime") and e2e["images"] >= 3
    assert e2e["mask_size"] == e2e["input_size"] == [384, 288]  # the mask is written at the original size
    assert "monai_segresnet" not in payload["end_to_end"]
    machine = payload["machine"]
    assert machine["gemm_fp32_gflops"] > 0 and machine["conv_fp32_gflops"] > 0 and machine["copy_gbps"] > 0
    table = (out / "infer.md").read_text()
    assert "| mininet |" in table and "| monai_segresnet |" in table and "End-to-end" in table
    assert (out / "infer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| mininet |" in result.stdout
    assert "Accuracy and latency" in table and f"| mininet | {dice:.3f} |" in table

    # --from_json: the table and plot again from the JSON, nothing measured (no process per configuration)
    again = subprocess.run(
        [sys.executable, "-m", "lightseg.benchmark", "infer", "--from_json", str(out / "infer.json"),
         "--out", str(tmp_path / "redrawn")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-4000:]
    assert (tmp_path / "redrawn" / "infer.md").read_text() == table
    assert (tmp_path / "redrawn" / "infer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

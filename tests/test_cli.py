"""Command-line hygiene: checked override keys, --help that runs nothing, one short error message."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightseg import cli
from lightseg.cli import CommandLineError, ImageSizeError, check_image_size, check_override_keys, override_keys
from lightseg.networks import create_network

from .conftest import BUNDLES, make_tiny_dataset, run_bundle, tiny_overrides

CONFIGS = BUNDLES / "cmunext_xxs" / "configs"
TRAIN = str(CONFIGS / "train.json")


def _argv(*args: str) -> list[str]:
    return ["monai/bundle/__main__.py", "run", "training", "--config_file", TRAIN, *args]


def test_override_keys_parsing():
    argv = _argv("--epochs", "2", "--image_size=[32,32]", "--debug", "--meta_file", "m.json", "--resume", "true")
    assert override_keys(argv) == {"epochs": "2", "image_size": "[32,32]", "debug": True, "resume": "true"}
    # MONAI's own run() arguments are never overrides
    argv = _argv("--logging_file", "x.conf", "--run_id", "training", "--tracking", "mlflow", "--args_file", "a.json")
    assert override_keys(argv) == {}


def test_override_keys_from_args_file(tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": TRAIN, "epoch": 3}))
    assert override_keys(["x", "run", "--args_file", str(args), "--epochs", "1"]) == {"epoch": 3, "epochs": "1"}


def test_typo_is_an_error_naming_the_key():
    with pytest.raises(CommandLineError) as err:
        check_override_keys(["epoch"], [TRAIN])
    msg = str(err.value)
    assert "--epoch" in msg and "--epochs" in msg and "train.json" in msg and "--strict_overrides false" in msg


def test_valid_keys_and_paths_pass():
    keys = [
        "epochs",
        "image_size",
        "train#dataloader#shuffle",  # a#b path that resolves
        "validate#dataset#cache_rate",
        "train::handlers::0::interval",  # MONAI's other separator, into a list
        "network_def#channels",  # a new keyword of a _target_ component
        "strict_overrides",
        "debug",
    ]
    assert check_override_keys(keys, [TRAIN]) == []


def test_unknown_path_is_an_error():
    with pytest.raises(CommandLineError, match=r"--train#dataloadr#shuffle.*--train#dataloader#shuffle"):
        check_override_keys(["train#dataloadr#shuffle"], [TRAIN])
    with pytest.raises(CommandLineError, match="epochs#x"):  # a literal value has no children
        check_override_keys(["epochs#x"], [TRAIN])


def test_overlay_only_keys_count():
    files = [TRAIN, str(CONFIGS / "multi_gpu_train.json")]
    assert check_override_keys(["train#sampler#shuffle", "validate#sampler"], files) == []
    evaluate = [TRAIN, str(CONFIGS / "evaluate.json")]
    assert check_override_keys(["eval_split"], evaluate) == []
    with pytest.raises(CommandLineError):  # without the overlay (and no sibling configs to fall back on)
        check_override_keys(["train#sampler"], [TRAIN], siblings=[])


def test_key_of_another_config_of_the_bundle_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="lightseg.cli"):
        unknown = check_override_keys(["epochs", "checkpoint_dir"], [str(CONFIGS / "inference.json")])
    assert unknown == ["epochs", "checkpoint_dir"]
    assert "--epochs is not used by inference.json" in caplog.text
    with pytest.raises(CommandLineError, match=r"--epoch: not an option of inference\.json"):
        check_override_keys(["epoch"], [str(CONFIGS / "inference.json")])


def test_not_strict_warns(caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger="lightseg.cli"):
        assert check_override_keys(["epoch"], [TRAIN], strict=False) == ["epoch"]
    assert "--epochs" in caplog.text
    monkeypatch.setattr(cli, "install_excepthook", lambda debug=False: None)
    with pytest.raises(CommandLineError):
        cli.check_command_line(_argv("--epoch", "2"))
    cli.check_command_line(_argv("--epoch", "2"), strict="false")
    monkeypatch.setenv("LIGHTSEG_STRICT_OVERRIDES", "0")
    cli.check_command_line(_argv("--epoch", "2"))


def test_host_programs_are_left_alone(monkeypatch):
    """MONAI Label / Deploy run bundles in-process: their own argv is not checked, their excepthook stays."""
    hook = sys.excepthook
    cli.check_command_line(["/x/monailabel/main.py", "start_server", "--app", "a", "--studies", "s", "--help"])
    cli.check_command_line(["pytest", "tests", "--epoch", "2"])
    assert sys.excepthook is hook
    assert cli.is_bundle_command_line(_argv())


def test_help_text_lists_options_with_defaults():
    text = cli.format_help([TRAIN])
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  --")}
    assert "300" in lines["--epochs"] and "number of training epochs" in lines["--epochs"]
    assert "[256, 256]" in lines["--image_size"] and "--strict_overrides" in lines and "--debug" in lines
    assert "--train" not in lines and "--imports" not in lines and "--initialize" not in lines
    text = cli.format_help([TRAIN, str(CONFIGS / "evaluate.json")])
    assert "--eval_split" in text and "train.json, evaluate.json" in text
    assert "--input " in cli.format_help([str(CONFIGS / "inference.json")])


def test_help_exits_zero(monkeypatch, capsys):
    monkeypatch.setattr(cli, "install_excepthook", lambda debug=False: None)
    for flag in ("--help", "-h"):
        with pytest.raises(SystemExit) as done:
            cli.check_command_line(_argv("--epochs", "1", flag))
        assert done.value.code == 0
        assert "--epochs" in capsys.readouterr().out


def test_root_cause_skips_monai_wrappers():
    try:
        try:
            try:
                raise FileNotFoundError("data/x.png")
            except FileNotFoundError as inner:
                raise ValueError("image data/x.png cannot be read: fix the datalist") from inner
        except ValueError as mid:
            raise RuntimeError("Failed to evaluate ConfigExpression: ...") from mid
    except RuntimeError as outer:
        assert isinstance(cli.root_cause(outer), FileNotFoundError)  # innermost, none raised by lightseg
        msg = cli.short_message(outer, Path("/tmp/log.txt"))
    assert msg.startswith("lightseg: FileNotFoundError: data/x.png") and "/tmp/log.txt" in msg
    assert "--debug true" in msg and len(msg.splitlines()) <= 4


def test_excepthook_prints_short_and_logs_full(tmp_path, monkeypatch, capsys):
    log = tmp_path / "err.log"
    monkeypatch.setenv("LIGHTSEG_ERROR_LOG", str(log))
    monkeypatch.delenv("LIGHTSEG_DEBUG", raising=False)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(cli, "_installed", {})
    cli.install_excepthook()
    for exc in (ValueError("bad value in data/a.png"), KeyboardInterrupt()):
        try:
            raise exc
        except BaseException as e:
            sys.excepthook(type(e), e, e.__traceback__)
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.splitlines()) <= 4 and str(log) in err
        assert "Traceback" in log.read_text()
    assert "lightseg: interrupted" in err


def test_check_image_size():
    net = create_network("cmunext_xxs")
    assert check_image_size([32, 64], net) == [32, 64]
    assert check_image_size("[32, 64]", net) == [32, 64]
    with pytest.raises(ImageSizeError, match=r"divisible by 16.*96, 112") as err:
        check_image_size([100, 64], net)
    assert '--image_size "[96,64]"' in str(err.value)
    with pytest.raises(ImageSizeError, match=r"give two sizes \[H, W\].*\[96,96\].*\[112,112\]"):
        check_image_size(100, net)


# ---------------------------------------------------------------------------------------------------------------
# end to end: python -m monai.bundle run ...


def _ours(stderr: str) -> list[str]:
    """The lines the short-error hook wrote (MONAI's own config warnings come before)."""
    lines = stderr.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("lightseg: ")), len(lines))
    return lines[start:]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_data")
    return root, make_tiny_dataset(root, n_train=2, n_val=1, n_test=1)


def test_help_runs_nothing(tmp_path):
    """--help after the config file prints the options and exits 0: no demo data, no MLflow store."""
    bundle = tmp_path / "bundles" / "cmunext_xxs"
    shutil.copytree(BUNDLES / "cmunext_xxs", bundle, ignore=shutil.ignore_patterns("eval", "models", "data"))
    config = bundle / "configs" / "train.json"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(config), "--help"]
    cmd += ["--epochs", "1"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--epochs" in result.stdout and "number of training epochs" in result.stdout
    assert not (bundle / "eval").exists() and not list(tmp_path.rglob("mlruns.db"))
    assert not (bundle / "data").exists()
    assert "Epoch[" not in result.stdout


def test_typo_fails_before_training(tmp_path, data):
    root, datalist = data
    out = tmp_path / "run"
    result = run_bundle("cmunext_xxs", ("train.json",), epoch=2, **tiny_overrides(out, root, datalist))
    assert result.returncode != 0
    ours = _ours(result.stderr)
    assert ours and "--epoch: not an option of train.json (did you mean --epochs?)" in ours[0], result.stderr
    assert len(ours) <= 3 and "Traceback" not in result.stderr
    assert not (out / "models").exists() and "Epoch[" not in result.stdout


@pytest.mark.parametrize("what", ["dataset_dir", "datalist"])
def test_bad_path_is_one_short_message(tmp_path, data, what):
    root, datalist = data
    overrides = tiny_overrides(tmp_path / "run", root, datalist, use_mlflow=False, epochs=1)
    overrides[what] = str(tmp_path / "does_not_exist" / ("x.json" if what == "datalist" else ""))
    result = run_bundle("cmunext_xxs", ("train.json",), **overrides)
    assert result.returncode != 0
    ours = _ours(result.stderr)
    assert ours and str(tmp_path / "does_not_exist") in ours[0], result.stderr[-3000:]
    assert len(ours) <= 5 and len(result.stderr.splitlines()) <= 8 and "Traceback" not in result.stderr
    log = Path(ours[-1].split("full traceback in ", 1)[1].split(";", 1)[0])
    assert "Traceback" in log.read_text() and "Failed to evaluate" in log.read_text()


def test_debug_prints_the_full_traceback(tmp_path, data):
    root, datalist = data
    overrides = tiny_overrides(tmp_path / "run", root, datalist, use_mlflow=False, debug=True)
    overrides["dataset_dir"] = str(tmp_path / "does_not_exist")
    result = run_bundle("cmunext_xxs", ("train.json",), **overrides)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr and "Failed to evaluate" in result.stderr
    assert str(tmp_path / "does_not_exist") in result.stderr


def test_image_size_checked_early(tmp_path, data):
    root, datalist = data
    overrides = tiny_overrides(tmp_path / "run", root, datalist, use_mlflow=False)
    overrides["image_size"] = 100
    result = run_bundle("cmunext_xxs", ("train.json",), **overrides)
    assert result.returncode != 0
    ours = _ours(result.stderr)
    assert ours and "ImageSizeError: image_size 100" in ours[0] and "[96,96]" in ours[0], result.stderr[-3000:]
    assert "CacheDataset" not in result.stdout and "Loading dataset" not in result.stdout  # before any data


def test_rendered_configs_call_the_checks_first():
    for bundle in sorted(p for p in BUNDLES.iterdir() if (p / "configs" / "train.json").is_file()):
        for name in ("train.json", "inference.json", "evaluate.json"):
            config = json.loads((bundle / "configs" / name).read_text())
            first = config["initialize"][0]
            assert first.startswith("$lightseg.cli.check_command_line("), (bundle.name, name)
        handlers = json.loads((bundle / "configs" / "train.json").read_text())["train"]["handlers"]
        targets = [h.get("_target_") for h in handlers]
        assert targets[targets.index("MLFlowHandler") + 1] == "lightseg.handlers.MLflowRunStatus", bundle.name

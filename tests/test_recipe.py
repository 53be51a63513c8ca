"""Configs rendered from one recipe: the committed files equal their rendering, the merge follows MONAI's
semantics, and a new bundle costs an overlay, metadata and a README (checked with a throwaway bundle)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from lightseg.bundles import BundleRootError, find_bundle_root
from lightseg.recipe import bundle_names, check_bundles, render_bundle, render_config

from .conftest import BUNDLE_NAMES, BUNDLES, ROOT, make_tiny_dataset, run_bundle, tiny_overrides


def test_committed_configs_equal_their_rendering():
    assert check_bundles() == [], "run: python scripts/render_bundles.py"


def test_every_bundle_folder_has_an_overlay_and_is_tested():
    assert bundle_names() == BUNDLE_NAMES


def test_merge_follows_monai_semantics(tmp_path):
    base = {"a": {"b": 1, "c": [1]}, "lst": [1, {"_extend_": "more"}, 3], "extend": {"more": []}}
    overlay = {"a#b": 2, "+a#c": [2], "+extend#more": ["x", "y"], "new": True}
    rendered = render_config(base, overlay)
    assert rendered == {"a": {"b": 2, "c": [1, 2]}, "lst": [1, "x", "y", 3], "new": True}
    # the same as MONAI's own multi-file merge (without the extension lists)
    (tmp_path / "base.json").write_text(json.dumps({"a": {"b": 1, "c": [1]}}))
    (tmp_path / "over.json").write_text(json.dumps({"a#b": 2, "+a#c": [2], "new": True}))
    monai = ConfigParser.load_config_files([tmp_path / "base.json", tmp_path / "over.json"])
    assert monai == render_config({"a": {"b": 1, "c": [1]}}, {"a#b": 2, "+a#c": [2], "new": True})


@pytest.mark.parametrize(
    "overlay, message",
    [({"lst#0": 5}, "reaches into a list"), ({"+missing": [1]}, "nothing to append"), ({"x#y": 1}, "not a dict id")],
)
def test_overlay_errors_are_clear(overlay, message):
    with pytest.raises(KeyError, match=message):
        render_config({"lst": [1]}, overlay)


def test_multi_gpu_appends_to_initialize():
    for name in BUNDLE_NAMES:
        config = json.loads((BUNDLES / name / "configs" / "multi_gpu_train.json").read_text())
        assert "initialize" not in config and "+initialize" in config
        train = ConfigParser.load_config_files(
            [BUNDLES / name / "configs" / "train.json", BUNDLES / name / "configs" / "multi_gpu_train.json"]
        )
        base = json.loads((BUNDLES / name / "configs" / "train.json").read_text())["initialize"]
        assert train["initialize"][: len(base)] == base  # e.g. LV-UNet's pretrained step is kept


def test_bundle_root_from_argv_cwd_or_error(tmp_path):
    cfg = str(BUNDLES / "lvunet" / "configs" / "train.json")
    assert find_bundle_root("lvunet", argv=["x", "--config_file", cfg], cwd=tmp_path) == str(BUNDLES / "lvunet")
    assert find_bundle_root("lvunet", argv=["x", f"--config_file=['{cfg}', 'b.json']"], cwd=tmp_path) == str(
        BUNDLES / "lvunet"
    )
    assert find_bundle_root("lvunet", argv=["x"], cwd=ROOT) == "bundles/lvunet"
    assert find_bundle_root("lvunet", argv=["x"], cwd=BUNDLES / "lvunet") == "."
    with pytest.raises(BundleRootError, match="--bundle_root"):
        find_bundle_root("lvunet", argv=["x", "--config_file", "elsewhere/train.json"], cwd=tmp_path)
    # a host program with no config file on its command line (MONAI Deploy's bundle operator): the settings
    # lookup falls back to the defaults, anything that needs the bundle's files still stops
    from lightseg.bundles import UNKNOWN_ROOT, default_dataset_dir

    assert find_bundle_root("lvunet", argv=["x"], cwd=tmp_path) == UNKNOWN_ROOT
    with pytest.raises(BundleRootError, match="--bundle_root"):
        default_dataset_dir(UNKNOWN_ROOT)


def test_from_another_working_directory_with_an_absolute_config(tmp_path):
    """The bundle root (hence the demo data) follows --config_file, not the working directory."""
    import subprocess
    import sys

    cfg = BUNDLES / "cmunext_xxs" / "configs" / "train.json"
    code = (
        "import sys; from monai.bundle import ConfigParser; p = ConfigParser(); p.read_config(sys.argv[2]); "
        "print(p.get_parsed_content('bundle_root')); print(p.get_parsed_content('datalist'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--config_file", str(cfg)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root, datalist = result.stdout.strip().splitlines()[-2:]
    assert root == str(BUNDLES / "cmunext_xxs")
    assert Path(datalist).resolve() == (ROOT / "data_lists" / "demo.json").resolve()
    # a config copied out of its bundle, and no bundle to be found: the error names --bundle_root
    shutil.copy(cfg, tmp_path / "train.json")
    result = subprocess.run(
        [sys.executable, "-c", code, "--config_file", "train.json"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode != 0 and "--bundle_root" in result.stderr


def test_standalone_bundle_falls_back_to_its_own_demo_datalist(tmp_path):
    shutil.copytree(BUNDLES / "mininet", tmp_path / "mininet", ignore=shutil.ignore_patterns("models", "eval"))
    parser = ConfigParser()
    parser.read_config(str(tmp_path / "mininet" / "configs" / "train.json"))
    parser["bundle_root"] = str(tmp_path / "mininet")
    datalist = parser.get_parsed_content("datalist")
    assert datalist == str(tmp_path / "mininet" / "data" / "demo" / "datalist.json")
    content = json.loads((tmp_path / "mininet" / "data" / "demo" / "datalist.json").read_text())
    assert content["synthetic"] and content["training"]
    assert parser.get_parsed_content("dataset_dir") == str(tmp_path / "mininet" / "data" / "demo")


@pytest.mark.slow
def test_a_fifth_bundle_costs_an_overlay_metadata_and_a_readme(tmp_path):
    """The README's recipe for a new architecture, followed with a registered CMUNeXt variant in a temp dir."""
    from monai.bundle import verify_metadata, verify_net_in_out

    from .bundle_suite import _ok
    from .conftest import SCHEMA, SCHEMA_MD5

    recipes, bundles = tmp_path / "recipes", tmp_path / "bundles"
    shutil.copytree(ROOT / "recipes", recipes)
    overlay = {"train": {"bundle_name": "cmunext_s", "network_name": "cmunext_s"},
               "inference": {"bundle_name": "cmunext_s", "network_name": "cmunext_s"}}  # fmt: skip
    (recipes / "cmunext_s.json").write_text(json.dumps(overlay))
    new = bundles / "cmunext_s"
    shutil.copytree(BUNDLES / "cmunext_xxs", new, ignore=shutil.ignore_patterns("models", "eval", "configs"))
    (new / "configs").mkdir()
    meta = json.loads((BUNDLES / "cmunext_xxs" / "configs" / "metadata.json").read_text())
    meta["name"] = "CMUNeXt-S"
    (new / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
    (new / "docs" / "README.md").write_text("# CMUNeXt-S\n")
    files = render_bundle("cmunext_s", out_dir=new, recipes=recipes)
    assert all((new / rel).read_text() == text for rel, text in files.items())
    assert "cmunext_s" in bundle_names(recipes)

    if SCHEMA.is_file():
        verify_metadata(meta_file=str(new / "configs" / "metadata.json"), filepath=str(SCHEMA), hash_val=SCHEMA_MD5)
    verify_net_in_out(net_id="network_def", meta_file=str(new / "configs" / "metadata.json"),
                      config_file=str(new / "configs" / "inference.json"), n=2, any=16)  # fmt: skip
    data = tmp_path / "data"
    datalist = make_tiny_dataset(data)
    out = tmp_path / "run"
    log = _ok(run_bundle(str(new), ("train.json",), run_id="training", epochs=1,
                         **tiny_overrides(out, data, datalist, bundle="cmunext_s", bundles_dir=bundles)))  # fmt: skip
    assert "Epoch[1] Metrics" in log and (out / "models" / "model.pt").is_file()
    _ok(run_bundle(str(new), ("train.json", "evaluate.json"), run_id="evaluating",
                   **tiny_overrides(out, data, datalist, bundle="cmunext_s", bundles_dir=bundles)))  # fmt: skip
    assert "mean_iou" in (out / "eval" / "metrics.csv").read_text()

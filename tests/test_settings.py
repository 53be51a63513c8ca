"""settings.json beside model.pt: round trip, merge, clear errors."""

from __future__ import annotations

import pytest

from lightseg.settings import read_settings, settings_path, update_settings, write_settings


def test_round_trip_and_update(tmp_path):
    model = tmp_path / "models" / "model.pt"
    assert read_settings(model) is None
    write_settings(model, {"network_name": "lvunet", "image_size": [64, 64]})
    assert settings_path(model) == tmp_path / "models" / "settings.json"
    update_settings(tmp_path / "models", mlflow_run_id="abc")
    assert read_settings(model) == {"network_name": "lvunet", "image_size": [64, 64], "mlflow_run_id": "abc"}
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_bad_file_named(tmp_path, content):
    (tmp_path / "settings.json").write_text(content)
    with pytest.raises(ValueError, match=r"settings\.json"):
        read_settings(tmp_path / "model.pt")

from __future__ import annotations

import pytest

from lightseg.utils import as_bool


@pytest.mark.parametrize(
    "value, expected",
    [(True, True), (False, False), ("false", False), ("False", False), ("0", False), ("no", False),
     ("true", True), ("ON", True), (1, True)],
)  # fmt: skip
def test_as_bool(value, expected):
    assert as_bool(value) is expected


def test_as_bool_rejects_garbage():
    with pytest.raises(ValueError, match="not a boolean"):
        as_bool("maybe")


def test_atomic_path_keeps_the_name_and_writes_nothing_on_error(tmp_path):
    import pytest

    from lightseg.utils import atomic_path

    target = tmp_path / "sub" / "model.ts"
    with atomic_path(target) as tmp:
        assert tmp.name == "model.ts" and tmp.parent != target.parent
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.ts"]  # no temp folder left behind


def test_torchscript_archive_root_is_the_file_stem(tmp_path):
    """MONAI Deploy reads <root>/extra/inference.json from the archive, <root> being the file's stem."""
    import zipfile

    import torch

    from lightseg.export import export_torchscript
    from lightseg.networks import create_network

    from .conftest import BUNDLES

    torch.save(create_network("cmunext_xxs").state_dict(), tmp_path / "model.pt")
    export_torchscript(BUNDLES / "cmunext_xxs", tmp_path / "model.ts", ckpt=tmp_path / "model.pt")
    names = zipfile.ZipFile(tmp_path / "model.ts").namelist()
    assert {n.split("/")[0] for n in names} == {"model"}
    assert "model/extra/inference.json" in names and "model/extra/metadata.json" in names

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

"""Small helpers shared by configs and handlers."""

from __future__ import annotations

__all__ = ["as_bool"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", "none", ""}


def as_bool(value: object) -> bool:
    """A boolean from a bool, a number or a string such as ``"false"``.

    ``python -m monai.bundle run --use_mlflow false`` passes the *string* ``"false"`` (fire only parses
    ``False``), which is truthy in Python; configs and handlers read their flags through this function.

    Raises:
        ValueError: for a string that is not a recognised boolean.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"not a boolean: {value!r} (use true/false).")
    return bool(value)

"""One recipe, four bundles: render each bundle's configs from a shared base and a small per-bundle overlay.

``recipes/base/`` holds the complete recipe (``train.json``, ``inference.json``, ``evaluate.json``,
``multi_gpu_train.json``, plus ``logging.conf`` and ``LICENSE``); ``recipes/<bundle>.json`` holds only what that
bundle's paper makes different, one section per config file::

    {"train": {...}, "inference": {...}, "evaluate": {...}, "multi_gpu_train": {...}, "tests": {...}}

(``tests`` holds hints for the shared test suite, e.g. a training size the network needs; it is not rendered.)

Each section is merged onto the base file with MONAI's own semantics (``ConfigParser.load_config_files``): a
key replaces, ``a#b#c`` reaches into nested dicts, ``+key`` appends to a list or merges into a dict. The base
also exposes *named extension lists*: an item ``{"_extend_": "train_handlers"}`` inside a list is replaced, at
render time, by the items of ``extend#train_handlers`` (empty unless an overlay appends to it with
``"+extend#train_handlers": [...]``), so an overlay never replaces a whole list and never overrides by index.

The rendered files are complete and self-contained (MONAI Label, the Model Zoo tools and ``ckpt_export`` read one
bundle folder on its own), written with ``json.dumps(indent=4)``. ``python scripts/render_bundles.py`` rewrites
them; ``--check`` (and a test) fails when a committed file differs from its rendering.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

__all__ = ["CONFIG_FILES", "COPIED_FILES", "bundle_names", "check_bundles", "render_bundle", "render_config"]

logger = logging.getLogger(__name__)

CONFIG_FILES = ("train", "inference", "evaluate", "multi_gpu_train")
COPIED_FILES = {"logging.conf": "configs/logging.conf", "LICENSE": "LICENSE"}
EXTEND_KEY = "_extend_"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def bundle_names(recipes: str | Path | None = None) -> list[str]:
    """The bundles that have an overlay in ``recipes/`` (sorted)."""
    recipes = Path(recipes or repo_root() / "recipes")
    return sorted(p.stem for p in recipes.glob("*.json"))


def _merge(base: dict, overlay: dict) -> dict:
    """``overlay`` onto ``base`` with MONAI's merge semantics (``ConfigParser.load_config_files`` + ``merge_kv``).

    A key that exists literally in ``base`` is used as it is (``evaluate.json`` and ``multi_gpu_train.json`` are
    themselves overlays whose keys are ``#`` paths into ``train.json``); otherwise ``a#b#c`` (or ``a::b::c``)
    reaches into nested dicts. ``+key`` extends a list or updates a dict and must name an existing id. Paths
    through lists (overriding by index) are refused.
    """
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if key == "_desc_":
            continue
        plus = key.startswith("+")
        path = key[1:] if plus else key
        parent, leaf = out, path
        if path not in out:
            parts = path.replace("::", "#").split("#")
            for part in parts[:-1]:
                if not isinstance(parent, dict) or part not in parent:
                    raise KeyError(f"overlay key {key!r}: {part!r} is not a dict id of the base.")
                parent = parent[part]
            leaf = parts[-1]
            if not isinstance(parent, dict):
                raise KeyError(f"overlay key {key!r} reaches into a list: use a named extension list instead.")
        value = copy.deepcopy(value)
        if not plus:
            parent[leaf] = value
        elif leaf not in parent:
            raise KeyError(f"overlay key {key!r}: {path!r} is not in the base, nothing to append to.")
        elif isinstance(parent[leaf], list) and isinstance(value, list):
            parent[leaf].extend(value)
        elif isinstance(parent[leaf], dict) and isinstance(value, dict):
            parent[leaf].update(value)
        else:
            raise TypeError(f"overlay key {key!r}: '+' needs a list onto a list or a dict onto a dict.")
    return out


def _splice(node, extend: dict, used: set):
    if isinstance(node, dict):
        return {k: _splice(v, extend, used) for k, v in node.items()}
    if isinstance(node, list):
        out = []
        for item in node:
            if isinstance(item, dict) and set(item) == {EXTEND_KEY}:
                name = item[EXTEND_KEY]
                if name not in extend:
                    raise KeyError(f"extension list {name!r} is not declared in the base's 'extend' section.")
                used.add(name)
                out.extend(_splice(v, extend, used) for v in extend[name])
            else:
                out.append(_splice(item, extend, used))
        return out
    return node


def render_config(base: dict, overlay: dict) -> dict:
    """Merge ``overlay`` onto ``base`` and splice the named extension lists; returns a new dict."""
    merged = _merge(base, overlay)
    extend = merged.pop("extend", {})
    used: set = set()
    rendered = _splice(merged, extend, used)
    unused = [k for k, v in extend.items() if v and k not in used]
    if unused:
        raise KeyError(f"extension lists {unused} have items but no place in the base.")
    return rendered


def _from_training(config: dict, defaults: dict, keys) -> dict:
    """Make each of ``keys`` default to the value saved with the trained model (:func:`lightseg.settings.trained`),
    falling back to its value in ``defaults`` (the rendered config that defines it): settings travel with the
    model, and an explicit override still replaces the whole expression."""
    out = dict(config)
    for key in keys:
        if key not in defaults:
            raise KeyError(f"setting {key!r} that travels with the model is not defined by the config.")
        value = defaults[key]
        fallback = value[1:] if isinstance(value, str) and value.startswith("$") else repr(value)
        out[key] = f"$lightseg.settings.trained(@ckpt_path, {key!r}, {fallback})"
    return out


def _dump(config: dict) -> str:
    return json.dumps(config, indent=4) + "\n"


def render_bundle(name: str, out_dir: str | Path | None = None, recipes: str | Path | None = None) -> dict[str, str]:
    """Render bundle ``name``'s generated files; returns ``{relative path: text}`` and writes them under ``out_dir``.

    ``out_dir`` defaults to nothing written; pass the bundle folder (``bundles/<name>``) to update it.
    """
    recipes = Path(recipes or repo_root() / "recipes")
    overlay_file = recipes / f"{name}.json"
    if not overlay_file.is_file():
        raise FileNotFoundError(f"no overlay {overlay_file} for bundle {name!r}.")
    overlay = json.loads(overlay_file.read_text())
    unknown = set(overlay) - set(CONFIG_FILES) - {"_desc_", "tests"}  # "tests": hints for the test suite only
    if unknown:
        raise KeyError(f"{overlay_file}: unknown sections {sorted(unknown)}; expected {list(CONFIG_FILES)}.")
    from lightseg.settings import EVALUATION_KEYS, INFERENCE_KEYS

    rendered = {
        kind: render_config(json.loads((recipes / "base" / f"{kind}.json").read_text()), overlay.get(kind, {}))
        for kind in CONFIG_FILES
    }
    rendered["inference"] = _from_training(rendered["inference"], rendered["inference"], INFERENCE_KEYS)
    rendered["evaluate"] = _from_training(rendered["evaluate"], rendered["train"], EVALUATION_KEYS)
    files: dict[str, str] = {f"configs/{kind}.json": _dump(rendered[kind]) for kind in CONFIG_FILES}
    for src, dst in COPIED_FILES.items():
        files[dst] = (recipes / "base" / src).read_text()
    if out_dir is not None:
        out = Path(out_dir)
        for rel, text in files.items():
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
                logger.info("wrote %s", path)
    return files


def check_bundles(bundles_dir: str | Path | None = None, recipes: str | Path | None = None) -> list[str]:
    """Files under ``bundles/`` that differ from their rendering (empty when all agree)."""
    bundles_dir = Path(bundles_dir or repo_root() / "bundles")
    stale = []
    for name in bundle_names(recipes):
        for rel, text in render_bundle(name, recipes=recipes).items():
            path = bundles_dir / name / rel
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
    return stale

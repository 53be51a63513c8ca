#!/usr/bin/env bash
# Build (or reuse) MONAI Label 0.8.5's own virtual environment for lightseg and print its path.
#
#   scripts/label_env.sh            # prints the venv folder, e.g. ~/.cache/lightseg/label-1a2b3c4d5e6f
#   scripts/label_env.sh --python   # prints its python
#
# The venv lives at ${LIGHTSEG_CACHE:-$HOME/.cache/lightseg}/label-<hash>, <hash> being a hash of the files that
# define it (requirements-label.txt, constraints-label.txt, setup.cfg, this script, the torchvision stand-in): an
# unchanged definition reuses the venv, a changed one builds a new one. MONAI Label needs pydicom 2.4.4 and
# numpy < 2 (pydicom-seg), so it cannot share lightseg's main environment.
#
# Contents: torch 2.13.0 (CPU wheel on this machine), monailabel 0.8.5 installed --no-deps with its runtime
# requirements (requirements-label.txt), lightseg's own requirements, and a torchvision STAND-IN
# (scripts/label_env/torchvision_standin: exposes only torchvision.utils.make_grid/save_image, which raise if
# called) because monailabel/transform/post.py imports torchvision.utils at import time. lightseg itself is NOT
# installed (the venv is shared by every checkout): run it with PYTHONPATH=<checkout>/src, as
# `python -m lightseg.label serve` and tests/test_monailabel_server.py do.
# Progress goes to stderr; the last line on stdout is the path.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LIGHTSEG_CACHE:-$HOME/.cache/lightseg}"
python="${LIGHTSEG_LABEL_BASE_PYTHON:-python3}"
standin="$repo/scripts/label_env/torchvision_standin"

cd "$repo"
hash="$( (cat requirements-label.txt constraints-label.txt setup.cfg scripts/label_env.sh \
    "$standin/pyproject.toml" "$standin/torchvision/__init__.py" "$standin/torchvision/utils.py";
    "$python" -c 'import sys; print(sys.version_info[:2])') | sha256sum | cut -c1-12)"
venv="$cache/label-$hash"

print_result() {
    if [[ "${1:-}" == "--python" ]]; then echo "$venv/bin/python"; else echo "$venv"; fi
}

mkdir -p "$cache"
exec 9>"$cache/label-$hash.lock"
flock 9
if [[ -f "$venv/.lightseg-complete" ]]; then
    print_result "${1:-}"
    exit 0
fi

echo "label_env: building $venv (a few minutes)" >&2
start=$(date +%s)
rm -rf "$venv"
trap 'echo "label_env: build FAILED, removing $venv" >&2; rm -rf "$venv"' ERR
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$repo/constraints-label.txt")
{
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" -r "$repo/requirements-label.txt"
    "${pip[@]}" --no-deps monailabel==0.8.5
    "${pip[@]}" --no-deps "$standin"
    # lightseg's requirements, then lightseg itself out again (see the header). pip then reports that monailabel
    # "requires sam2, which is not installed": expected, sam2 is left out on purpose (see requirements-label.txt).
    "${pip[@]}" "$repo"
    "$venv/bin/python" -m pip uninstall -q -y lightseg
} 1>&2
"$venv/bin/python" - <<'PY' 1>&2
import numpy, pydicom, torch, monai, monailabel, torchvision
assert getattr(torchvision, "STANDIN", False), "the real torchvision got installed"
print(f"label_env: monailabel {monailabel.__version__}, monai {monai.__version__}, torch {torch.__version__}, "
      f"numpy {numpy.__version__}, pydicom {pydicom.__version__}")
PY
trap - ERR
touch "$venv/.lightseg-complete"
echo "label_env: built in $(( $(date +%s) - start )) s" >&2
print_result "${1:-}"

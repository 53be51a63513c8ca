#!/usr/bin/env bash
# Build (or reuse) the MONAI Deploy environment and print its folder on stdout (everything else goes to stderr).
#
#   scripts/deploy_env.sh              # -> ${LIGHTSEG_CACHE:-$HOME/.cache/lightseg}/deploy-<hash>
#   "$(scripts/deploy_env.sh)/bin/python" -m lightseg.deploy image -i in.png -o out -m bundles/lvunet/models/model.ts
#
# The environment holds the MONAI Deploy App SDK 4.0.0, Holoscan 4.6.0 (CPU is enough), highdicom, the CUDA runtime
# library Holoscan loads even without a GPU (nvidia-cuda-runtime) and lightseg itself (installed without its
# dependencies: the SDK's tritonclient needs protobuf < 7, which constraints.txt excludes). It is cached by a hash
# of deploy/requirements-env.txt, constraints-deploy.txt and pyproject.toml; lightseg is installed editable, so code
# changes need no rebuild. A half-built environment is never reused (the `.complete` marker is written last, after
# `python -m lightseg.deploy check` passed); concurrent callers wait on a lock. LIGHTSEG_DEPLOY_REBUILD=1 forces a
# rebuild.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
files=("$root/deploy/requirements-env.txt" "$root/constraints-deploy.txt" "$root/pyproject.toml")
for f in "${files[@]}"; do
    [[ -f "$f" ]] || { echo "deploy_env.sh: missing $f" >&2; exit 2; }
done
hash="$(cat "${files[@]}" | sha256sum | cut -c1-12)"
cache="${LIGHTSEG_CACHE:-$HOME/.cache/lightseg}"
env_dir="$cache/deploy-$hash"
python="${PYTHON:-python3}"

mkdir -p "$cache"
exec 9>"$cache/.deploy-$hash.lock"
flock 9
if [[ -x "$env_dir/bin/python" && -f "$env_dir/.complete" && "${LIGHTSEG_DEPLOY_REBUILD:-0}" != 1 ]]; then
    # reuse; make sure lightseg points at this checkout (an editable install from another worktree would not)
    if ! "$env_dir/bin/python" -c "import lightseg, sys; sys.exit(not lightseg.__file__.startswith('$root/'))" \
        2>/dev/null; then
        echo "deploy_env.sh: pointing $env_dir at $root" >&2
        "$env_dir/bin/python" -m pip install -q --no-deps -e "$root" >&2
    fi
    echo "$env_dir"
    exit 0
fi

start=$SECONDS
tmp="$(mktemp -d "$cache/.deploy-$hash.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "deploy_env.sh: building $env_dir (about a minute with a warm pip cache)" >&2
rm -rf "$env_dir"  # built in place: venv scripts record their path
"$python" -m venv "$env_dir"
{
    "$env_dir/bin/python" -m pip install -q --upgrade "pip>=24"
    "$env_dir/bin/python" -m pip install -q -c "$root/constraints-deploy.txt" -r "$root/deploy/requirements-env.txt"
    "$env_dir/bin/python" -m pip install -q --no-deps -e "$root"
} >&2
"$env_dir/bin/python" -m pip freeze --exclude-editable >"$tmp/freeze.txt"
cp "$tmp/freeze.txt" "$env_dir/freeze.txt"
"$env_dir/bin/python" -m lightseg.deploy check >&2
touch "$env_dir/.complete"
echo "deploy_env.sh: built $env_dir in $((SECONDS - start)) s" >&2
echo "$env_dir"

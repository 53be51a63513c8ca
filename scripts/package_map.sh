#!/usr/bin/env bash
# Package a bundle as a MONAI Application Package (MAP) with `monai-deploy package` (holoscan-cli 4.2.0).
#
#   scripts/package_map.sh bundles/lvunet/models/model.ts [output_dir] [tag]
#
# 1. builds (or reuses) the packager environment ${LIGHTSEG_CACHE:-$HOME/.cache/lightseg}/package-<hash>
#    (deploy/requirements-package.txt; the MONAI Deploy App SDK is added without dependencies, for its version);
# 2. builds lightseg's wheel and stages deploy/app/ with it (lightseg is not on PyPI: the MAP's app folder carries
#    the wheel and deploy/app/__main__.py imports it from there);
# 3. runs
#      monai-deploy package <staged app> -c deploy/app.yaml -m <model.ts> -t <tag> --platform x86_64 \
#          --source deploy/artifacts.json -o <output_dir> -l DEBUG
#    (--source: a local artifacts manifest for Holoscan 4.6.0, which the packager otherwise downloads);
# 4. copies what the packager rendered (app.json, pkg.json, requirements.txt, Dockerfile, from its DEBUG log) and
#    the staged app to <output_dir>/rendered/.
# Without a Docker daemon the packager stops at `docker buildx`: the script then exits 3 after step 4 (the
# rendering is complete); with Docker it builds the image and exits with the packager's status.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="${1:?usage: scripts/package_map.sh <model.ts> [output_dir] [tag]}"
out="${2:-$root/dist/map}"
tag="${3:-lightseg-$(basename "$(dirname "$(dirname "$(realpath "$model")")")"):0.1.0}"
[[ -f "$model" ]] || { echo "package_map.sh: model $model does not exist (scripts/export_bundle.py writes it)" >&2; exit 2; }
req="$root/deploy/requirements-package.txt"
hash="$(cat "$req" "$root/constraints-deploy.txt" | sha256sum | cut -c1-12)"
cache="${LIGHTSEG_CACHE:-$HOME/.cache/lightseg}"
env_dir="$cache/package-$hash"
if [[ ! -f "$env_dir/.complete" ]]; then
    echo "package_map.sh: building the packager environment $env_dir" >&2
    rm -rf "$env_dir"
    "${PYTHON:-python3}" -m venv "$env_dir"
    {
        "$env_dir/bin/python" -m pip install -q -r "$req"
        "$env_dir/bin/python" -m pip install -q --no-deps "monai-deploy-app-sdk==4.0.0"
    } >&2
    touch "$env_dir/.complete"
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$out/stage"
rm -rf "$stage" "$out/rendered"
mkdir -p "$stage/app" "$stage/models" "$out/rendered"
cp "$root"/deploy/app/__main__.py "$root"/deploy/app/requirements.txt "$stage/app/"
"$env_dir/bin/python" -m pip wheel -q --no-deps -w "$stage/app" "$root" >&2
cp "$model" "$stage/models/model.ts"
log="$out/package.log"
set +e
PATH="$env_dir/bin:$PATH" "$env_dir/bin/monai-deploy" package "$stage/app" -c "$root/deploy/app.yaml" \
    -m "$stage/models/model.ts" -t "$tag" --platform x86_64 --source "$root/deploy/artifacts.json" -o "$out" \
    -l DEBUG >"$log" 2>&1
rc=$?
set -e
"$env_dir/bin/python" - "$log" "$out/rendered" <<'PY'
import re
import sys
from pathlib import Path

log, dest = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
sections = {"app.json": "app.json", "pkg.json": "pkg.json", "requirements.txt": "requirements.txt",
            "Dockerfile": "Dockerfile"}
for name, file in sections.items():
    m = re.search(rf"=+ Begin {re.escape(name)} =+\n(.*?)\n[^\n]*=+ End {re.escape(name)} =+", log, re.S)
    if m:
        text = m.group(1)
        if name == "requirements.txt":  # logged one line per requirement, after a logger prefix
            text = "\n".join(re.sub(r"^\[[^]]*\] \[\w+\] \([^)]*\) -", "", line).strip() for line in text.splitlines())
        (dest / file).write_text(text.strip() + "\n")
print(" ".join(sorted(p.name for p in dest.iterdir())))
PY
cp -r "$stage/app" "$out/rendered/app"
if [[ $rc -ne 0 ]] && grep -q "docker buildx\|Cannot connect to the Docker daemon\|docker.*not found" "$log"; then
    echo "package_map.sh: rendered the MAP into $out/rendered; stopped at the Docker build (no usable Docker)" >&2
    exit 3
fi
[[ $rc -eq 0 ]] || { echo "package_map.sh: monai-deploy package failed ($rc), see $log" >&2; tail -20 "$log" >&2; }
exit $rc

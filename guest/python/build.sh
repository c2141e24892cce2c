#!/usr/bin/env bash
# Builds the Python hello (app.py) into a wasi:http component with
# componentize-py, against wit/ (wasi:http/proxy@0.2.12): the one beside this
# script in a folder `wasmlet new --lang python` made, else the repository's.
#
#   guest/python/build.sh [OUT.wasm]     default: target/guests/hello-python.wasm
#   ./build.sh [OUT.wasm]                (in a `wasmlet new` folder) default: app.wasm
#
# componentize-py is installed, pinned, into a virtualenv under
# ${WASMLET_TOOLS_DIR:-~/.cache/wasmlet/tools} the first time. A build is
# cached under ${WASMLET_GUEST_CACHE:-~/.cache/wasmlet/guests}, keyed by the
# sha256 of its inputs (this script, app.py, wit/), so a re-run (or a fresh
# clone on the same machine) copies it instead of building again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# In a folder `wasmlet new` made, wit/ is beside this script and the
# component goes there too; in the repository, wit/ is two folders up.
if [[ -d $here/wit ]]; then
  wit=$here/wit
  out=${1:-$here/app.wasm}
else
  wit=$root/wit
  out=${1:-$root/target/guests/hello-python.wasm}
fi

COMPONENTIZE_PY_VERSION=0.25.1
tools=${WASMLET_TOOLS_DIR:-$HOME/.cache/wasmlet/tools}
cache=${WASMLET_GUEST_CACHE:-$HOME/.cache/wasmlet/guests}
venv=$tools/componentize-py-$COMPONENTIZE_PY_VERSION

key=$( (cat "$0" "$here/app.py"; find "$wit" -type f -name '*.wit' | sort | xargs cat) | sha256sum | cut -c1-16)
cached=$cache/hello-python-$key.wasm
mkdir -p "$(dirname "$out")" "$cache"
if [[ -f $cached ]]; then
  cp "$cached" "$out"
  exit 0
fi

if [[ ! -x $venv/bin/componentize-py ]]; then
  echo "build: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

echo "build: componentize-py $COMPONENTIZE_PY_VERSION: $here/app.py -> $out" >&2
tmp=$(mktemp "$cache/.hello-python-XXXXXX")
trap 'rm -f "$tmp"' EXIT
(cd "$here" && "$venv/bin/componentize-py" --wit-path "$wit" --world wasmlet:handler/handler \
  componentize app --output "$tmp" >&2)
chmod 0644 "$tmp"
mv "$tmp" "$cached"
cp "$cached" "$out"

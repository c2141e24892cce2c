#!/usr/bin/env bash
# Pushes a component with oras-py, an OCI client independent of wasmlet's,
# so the tests cannot pass with a layout that only wasmlet reads and writes.
#
#   scripts/oras-push.sh FILE HOST:PORT/REPOSITORY:TAG LAYER_MEDIA_TYPE
#
# Plain HTTP (the tests' loopback registry). Prints the manifest digest.
# oras is installed once into a venv under ${WASMLET_TOOLS_DIR:-~/.cache/wasmlet/tools}.
set -euo pipefail
ORAS_VERSION=0.2.43
file=${1:?usage: oras-push.sh FILE HOST:PORT/REPO:TAG LAYER_MEDIA_TYPE}
target=${2:?usage: oras-push.sh FILE HOST:PORT/REPO:TAG LAYER_MEDIA_TYPE}
media_type=${3:?usage: oras-push.sh FILE HOST:PORT/REPO:TAG LAYER_MEDIA_TYPE}
tools=${WASMLET_TOOLS_DIR:-$HOME/.cache/wasmlet/tools}
venv=$tools/oras-$ORAS_VERSION
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import oras' 2>/dev/null; then
  echo "oras-push: installing oras $ORAS_VERSION into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "oras==$ORAS_VERSION"
fi
exec "$venv/bin/python" "$(dirname "$0")/oras_push.py" "$file" "$target" "$media_type"

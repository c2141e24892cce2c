#!/usr/bin/env bash
# Builds the JavaScript hello (app.js) into a wasi:http component with
# componentize-js (SpiderMonkey, through StarlingMonkey), against wit/: the
# one beside this script in a folder `wasmlet new --lang javascript` made,
# else the repository's.
#
#   guest/javascript/build.sh [OUT.wasm]  default: target/guests/hello-javascript.wasm
#   ./build.sh [OUT.wasm]                 (in a `wasmlet new` folder) default: app.wasm
#
# StarlingMonkey is built against wasi:http 0.2.10 and exports
# `wasi:http/incoming-handler@0.2.10`, so the component is built against a
# copy of wit/ with its 0.2.12 versions (and `@since` gates) rewritten to
# 0.2.10; a 0.2.12 host serves 0.2.10 components. componentize-js is
# installed, pinned, under ${WASMLET_TOOLS_DIR:-~/.cache/wasmlet/tools} the
# first time, and builds are cached under
# ${WASMLET_GUEST_CACHE:-~/.cache/wasmlet/guests}, keyed by the sha256 of
# their inputs (this script, app.js, wit/).
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
  out=${1:-$root/target/guests/hello-javascript.wasm}
fi

COMPONENTIZE_JS_VERSION=0.23.0
WASI_VERSION=0.2.10
tools=${WASMLET_TOOLS_DIR:-$HOME/.cache/wasmlet/tools}
cache=${WASMLET_GUEST_CACHE:-$HOME/.cache/wasmlet/guests}
prefix=$tools/componentize-js-$COMPONENTIZE_JS_VERSION

key=$( (cat "$0" "$here/app.js"; find "$wit" -type f -name '*.wit' | sort | xargs cat) | sha256sum | cut -c1-16)
cached=$cache/hello-javascript-$key.wasm
mkdir -p "$(dirname "$out")" "$cache"
if [[ -f $cached ]]; then
  cp "$cached" "$out"
  exit 0
fi

bin=$prefix/node_modules/.bin/componentize-js
if [[ ! -x $bin ]]; then
  if [[ -x $root/scripts/need-command.sh ]]; then
    "$root/scripts/need-command.sh" npm npm
  elif ! command -v npm >/dev/null 2>&1; then
    echo "build: npm not found: install Node.js (with npm), then run this again" >&2
    exit 1
  fi
  echo "build: installing componentize-js $COMPONENTIZE_JS_VERSION into $prefix" >&2
  rm -rf "$prefix"
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --prefix "$prefix" \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$wit" "$work/wit"
# Only wasi 0.2.1x versions: wit/ also holds wasi:keyvalue@0.2.0-draft and
# wasi:config@0.2.0-rc.1 (in deps/ folders), which must stay as they are.
sed -i "s/@0\.2\.1[0-9]\b/@$WASI_VERSION/g; s/version = 0\.2\.1[1-9]/version = $WASI_VERSION/g" \
  "$work"/wit/*.wit "$work"/wit/deps/*.wit

echo "build: componentize-js $COMPONENTIZE_JS_VERSION: $here/app.js -> $out" >&2
"$bin" "$here/app.js" --wit "$work/wit" --world-name handler --out "$work/hello.wasm" >&2
tmp=$(mktemp "$cache/.hello-javascript-XXXXXX")
mv "$work/hello.wasm" "$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$cached"
cp "$cached" "$out"

#!/usr/bin/env bash
# Put a handler component where the kustomize ConfigMap generator reads it (k8s/handlers/hello.wasm,
# next to k8s/handlers/wasmlet.toml), before `kubectl kustomize` / `kubectl apply -k`.
#
#   scripts/k8s-handlers.sh                 build the hello component (if needed) and copy it there
#   scripts/k8s-handlers.sh NEW.wasm        copy NEW.wasm there instead (a handler swap)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=$root/k8s/handlers/hello.wasm
src=${1:-}

if [[ -z $src ]]; then
  src=$root/target/wasm32-wasip2/release/hello.wasm
  if [[ ! -f $src ]]; then
    echo "k8s-handlers: building the hello component" >&2
    (cd "$root" && cargo build --quiet --release --locked -p hello --target wasm32-wasip2)
  fi
fi
[[ -f $src ]] || { echo "k8s-handlers: $src: no such file" >&2; exit 1; }
# Refuse anything that is not a wasm binary: the ConfigMap would carry it to every replica.
[[ $(head -c 4 "$src" | od -An -tx1 | tr -d ' \n') == 0061736d ]] ||
  { echo "k8s-handlers: $src: not a WebAssembly binary" >&2; exit 1; }
if ! cmp -s "$src" "$dest"; then
  cp "$src" "$dest.tmp" && mv "$dest.tmp" "$dest"
fi
echo "k8s-handlers: $dest ($(wc -c <"$dest") bytes, sha256 $(sha256sum "$dest" | cut -c1-12))"

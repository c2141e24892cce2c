#!/usr/bin/env bash
# Cold start to the first 200 of one component served from a file and from a registry,
# side by side (bench/coldstart.py: interleaved rounds, medians):
#   file-fresh   the file, empty --cache-dir (compile)
#   oci-fresh    oci://…@sha256 from a loopback docker-registry, empty --cache-dir (pull + compile)
#   file-warm    the file, warm compile cache
#   oci-warm     the pinned reference with manifest, layer and compiled code cached (no request)
#
#   bench/oci-coldstart.sh [COMPONENT.wasm] [RUNS]     (default: the Python hello, 5 runs)
#
# Uses target/release/wasmlet (WASMLET= overrides); installs docker-registry if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${WASMLET:-target/release/wasmlet}
wasm=${1:-$(ls target/release/build/test-programs-artifacts-*/out/guests/hello_python.wasm | head -n 1)}
runs=${2:-5}
scripts/need-command.sh docker-registry docker-registry
work=$(mktemp -d)
registry_pid=
cleanup() { [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 bench/coldstart.py ports 1)
addr=127.0.0.1:$port
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$work/registry" "$addr" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
python3 bench/coldstart.py wait "http://$addr/v2/" --timeout 20
digest=$("$bin" push "$wasm" "oci://$addr/bench/hello:1" --insecure-registry "$addr")
printf '[[route]]\npath = "/..."\ncomponent = "oci://%s/bench/hello@%s"\n' "$addr" "$digest" > "$work/oci.toml"
echo "component: $wasm ($(stat -c %s "$wasm") bytes), pushed as $digest"

listen=(--listen '127.0.0.1:{port}' --admin-listen '127.0.0.1:{admin}' --no-watch)
add_case() { python3 bench/coldstart.py case --cases "$work/cases.jsonl" "$@"; }
add_case --label file-fresh --fresh-dir "$work/c1" -- "$bin" serve "$wasm" --cache-dir "$work/c1" "${listen[@]}"
add_case --label oci-fresh --fresh-dir "$work/c2" -- "$bin" serve --config "$work/oci.toml" --cache-dir "$work/c2" \
  --insecure-registry "$addr" "${listen[@]}"
add_case --label file-warm --prime 1 -- "$bin" serve "$wasm" --cache-dir "$work/c3" "${listen[@]}"
add_case --label oci-warm --prime 1 -- "$bin" serve --config "$work/oci.toml" --cache-dir "$work/c4" \
  --insecure-registry "$addr" "${listen[@]}"
python3 bench/coldstart.py measure --cases "$work/cases.jsonl" --runs "$runs" --log "$work/log" --out "$work/out.jsonl"
python3 - "$work/out.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["label"], []).extend(r["ms"] if isinstance(r["ms"], list) else [r["ms"]])
for label, ms in by.items():
    print(f"{label:11s} median {statistics.median(ms):8.1f} ms  runs {sorted(round(m, 1) for m in ms)}")
PY

#!/usr/bin/env bash
# What the pool's per-component room costs hello: the same binary with its
# defaults (room for 32 core instances, 4 memories, 16 tables per instance)
# against the pool it had before (8 core instances, 2 memories, 8 tables),
# interleaved: cold start from a warm cache, idle RSS, and requests/s.
#
#   bench/pool_cost.sh WASMLET HELLO.wasm [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
wasmlet=${1:?usage: pool_cost.sh WASMLET HELLO.wasm [ROUNDS]}
wasm=${2:?usage: pool_cost.sh WASMLET HELLO.wasm [ROUNDS]}
rounds=${3:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
old=(--max-core-instances-per-component 8 --max-memories-per-component 2 --max-tables-per-component 8)
serve=("$wasmlet" serve "$wasm" --listen '127.0.0.1:{port}' --admin-listen '127.0.0.1:{admin}' --cache-dir "$work/cache")
python3 bench/coldstart.py case --cases "$work/cases" --label "defaults" --prime 1 --env RUST_LOG=warn -- "${serve[@]}"
python3 bench/coldstart.py case --cases "$work/cases" --label "old pool" --prime 1 --env RUST_LOG=warn -- "${serve[@]}" "${old[@]}"
python3 bench/coldstart.py measure --cases "$work/cases" --runs "$rounds" --out "$work/cold.jsonl"
python3 - "$work/cold.jsonl" <<'PY'
import json, statistics, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    print(f"cold start, {row['label']}: median {statistics.median(row['ms']):.2f} ms over {len(row['ms'])}")
PY
readarray -t ports < <(python3 bench/coldstart.py ports 4)
RUST_LOG=warn "$wasmlet" serve "$wasm" --listen "127.0.0.1:${ports[0]}" --admin-listen "127.0.0.1:${ports[1]}" --cache-dir "$work/cache" & a=$!
RUST_LOG=warn "$wasmlet" serve "$wasm" --listen "127.0.0.1:${ports[2]}" --admin-listen "127.0.0.1:${ports[3]}" --cache-dir "$work/cache" "${old[@]}" & b=$!
trap 'kill $a $b 2>/dev/null; rm -rf "$work"' EXIT
python3 bench/coldstart.py wait "http://127.0.0.1:${ports[0]}/"
python3 bench/coldstart.py wait "http://127.0.0.1:${ports[2]}/"
sleep 1
echo "idle RSS: defaults $(awk '/VmRSS/ {print $2}' /proc/$a/status) KiB, old pool $(awk '/VmRSS/ {print $2}' /proc/$b/status) KiB"
for r in 1 2 3; do
  for side in defaults:${ports[0]} old:${ports[2]}; do
    echo "req/s at 64 connections, ${side%%:*}, run $r: $(wrk -t2 -c64 -d10s "http://127.0.0.1:${side##*:}/" | awk '/^Requests\/sec/ {print $2}')"
  done
done

#!/usr/bin/env bash
# Two builds of wasmlet side by side on the same component: the check that a
# change to the engine or the request path does not slow the fresh-instance
# path (issue 18: component-model-async must not cost the 0.2 path).
#
#   bench/compare-builds.sh BEFORE_BINARY AFTER_BINARY [COMPONENT]
#
# Runs bench/cpu-per-request.sh on each binary in turn, ROUNDS times
# (default 5), interleaved (before, after, before, ...), and prints each run
# and the medians of requests/s and CPU microseconds per request, with the
# after/before ratios. COMPONENT defaults to the Rust hello.
# Environment: ROUNDS, CONNS (default 64), DURATION seconds (default 8),
# SERVE_ARGS (more `wasmlet serve` flags for both, e.g. reuse counts).
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: compare-builds.sh BEFORE_BINARY AFTER_BINARY [COMPONENT]}
after=${2:?usage: compare-builds.sh BEFORE_BINARY AFTER_BINARY [COMPONENT]}
component=${3:-target/wasm32-wasip2/release/hello.wasm}
rounds=${ROUNDS:-5}
[[ -f $component ]] || cargo build --release -p hello --target wasm32-wasip2 >&2
port=$(python3 bench/coldstart.py ports 2 | tr '\n' ' ')
read -r public admin <<<"$port"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((r = 1; r <= rounds; r++)); do
  for which in before after; do
    binary=${!which}
    line=$(RUST_LOG=warn bench/cpu-per-request.sh "http://127.0.0.1:$public/" -- \
      "$binary" serve "$component" --listen "127.0.0.1:$public" --admin-listen "127.0.0.1:$admin" ${SERVE_ARGS:-})
    echo "round $r $which: $line"
    echo "$which $line" >>"$results"
  done
done
python3 - "$results" <<'PY'
import re, statistics, sys
runs = {"before": [], "after": []}
for line in open(sys.argv[1]):
    which, rest = line.split(" ", 1)
    rps = float(re.search(r"req/s ([0-9,]+)", rest).group(1).replace(",", ""))
    us = float(re.search(r"([0-9.]+) us CPU per request", rest).group(1))
    runs[which].append((rps, us))
med = {k: (statistics.median(r for r, _ in v), statistics.median(u for _, u in v)) for k, v in runs.items()}
for k in ("before", "after"):
    print(f"{k:6}: median {med[k][0]:,.0f} req/s, {med[k][1]:.1f} us CPU per request ({len(runs[k])} runs)")
print(f"after/before: req/s {med['after'][0] / med['before'][0]:.3f}, CPU per request {med['after'][1] / med['before'][1]:.3f}")
PY

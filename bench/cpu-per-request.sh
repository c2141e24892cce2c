#!/usr/bin/env bash
# CPU time a server spends per request under wrk load: the number to watch
# when optimising the request path, since on a shared 2-core VM requests/s
# drifts with the neighbours while CPU per request moves much less.
#
#   bench/cpu-per-request.sh URL -- SERVER COMMAND...
#   bench/cpu-per-request.sh http://127.0.0.1:5000/ -- target/release/wasmlet serve hello.wasm
#
# Starts the server, waits for URL to answer, warms up for 2 s, then runs
# wrk (2 threads) and reads the server's user+system CPU ticks from
# /proc/PID/stat before and after. Prints requests/s, p99, the server's CPU
# use and its CPU microseconds per request. Stops the server it started.
#
# Environment: CONNS (default 64), DURATION seconds (default 8).
set -euo pipefail
url=${1:?usage: cpu-per-request.sh URL -- SERVER COMMAND...}
shift
[[ ${1:-} == -- ]] || { echo "cpu-per-request: expected -- before the server command" >&2; exit 2; }
shift
conns=${CONNS:-64}
duration=${DURATION:-8}
"$(dirname "$0")/../scripts/need-command.sh" wrk wrk

"$@" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
python3 "$(dirname "$0")/coldstart.py" wait "$url" --timeout 30

ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
wrk -t2 -c"$conns" -d2s "$url" >/dev/null
before=$(ticks)
out=$(wrk -t2 -c"$conns" -d"${duration}s" --latency "$url")
after=$(ticks)
rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
hz=$(getconf CLK_TCK)
python3 - "$rps" "$before" "$after" "$hz" "$duration" "$p99" <<'EOF'
import sys
rps, before, after, hz, duration, p99 = sys.argv[1:]
cpu_s = (float(after) - float(before)) / float(hz)
requests = float(rps) * float(duration)
print(f"req/s {float(rps):,.0f}  p99 {p99}  server CPU {cpu_s / float(duration) * 100:.0f}%  "
      f"{cpu_s / requests * 1e6:.1f} us CPU per request")
EOF

#!/usr/bin/env bash
# The key-value pair (issue 28): the Rust visit counter (guest/counter,
# `hello-counter`, GET /count: one atomics.increment on the store named "",
# which wasmlet maps to the route's `default` store) under wasmlet with the
# `memory` backend against `wasmtime serve -Scli -Skeyvalue` given wasmlet's
# pooling-allocator settings (the same POOLING_FLAGS as bench/run.sh, read
# from it), and beside them wasmlet with the embedded `file` backend (the
# default store, --data-dir in a fresh temporary folder) and the `redis`
# backend (Debian's redis-server on a free loopback port, no persistence,
# started and stopped by this script). All on loopback, driven by wrk,
# servers interleaved (a b c d a b c d ...), medians over the repeats.
#
#   bench/kv.sh                                     # about 4 minutes after the build
#
# bench/run.sh ends with it (BENCH_KV=0 there leaves it out).
#   BENCH_DURATION=5 BENCH_REPEATS=3 bench/kv.sh
#
# Before the load, every server is asked GET /count twice: wasmlet must
# answer "Hello World! I have been seen N times." with N growing by one, and
# wasmtime serve the same text (its -Skeyvalue store is made afresh for each
# request, so its N stays 1: see the report). After the load the count must
# have grown by what wrk completed (plus at most the requests in flight when
# a run stopped): a benchmark of error pages would be worthless.
#
# Two baselines ride along (BENCH_KV_BASELINES=0 leaves them out): GET / on
# the same wasmlet and wasmtime serve processes, the same component answering
# "Hello World!" without opening a store, so the store's cost on each host
# shows.
#
# Reports requests/s and p50/p99 latency (wrk --latency) per server, the
# ratios and issue 28's targets; the markdown goes to stdout and to
# bench/results/kv.md.
#
# Environment:
#   BENCH_DURATION     seconds per measured wrk run            (default 10)
#   BENCH_WARMUP       seconds of warm-up per server and count (default 2)
#   BENCH_REPEATS      measured runs per server and count      (default 3)
#   BENCH_CONNECTIONS  connection counts                       (default 64)
#   BENCH_THREADS      wrk threads, at most one per connection (default 2)
#   BENCH_PROFILE      cargo profile of the host               (default dist)
#   BENCH_KV_BASELINES 1: also GET / without a store           (default 1)
#   BENCH_BUILD=0      skip the cargo builds: use the host and component already built
#   BENCH_KV_OUT       report file                             (default bench/results/kv.md)
#   BENCH_NOTE         a line put at the top of the report
#   BENCH_KEEP=1       keep the raw wrk output and logs (the path is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
REPEATS=${BENCH_REPEATS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
PROFILE=${BENCH_PROFILE:-dist}
BASELINES=${BENCH_KV_BASELINES:-1}
OUT=${BENCH_KV_OUT:-bench/results/kv.md}
for val in "$DURATION" "$REPEATS" "$THREADS" $CONNECTIONS; do
  [[ $val =~ ^[1-9][0-9]*$ ]] || { echo "bench: expected a positive integer, got '$val'" >&2; exit 2; }
done
[[ $WARMUP =~ ^[0-9]+$ ]] || { echo "bench: BENCH_WARMUP must be an integer, got '$WARMUP'" >&2; exit 2; }
[[ $BASELINES =~ ^[01]$ ]] || { echo "bench: BENCH_KV_BASELINES must be 0 or 1, got '$BASELINES'" >&2; exit 2; }
scripts/need-command.sh wrk wrk
scripts/need-command.sh redis-server redis-server

log() { echo "bench: $*" >&2; }

# wasmtime serve gets exactly bench/run.sh's POOLING_FLAGS (wasmlet's pool and
# limits at its default flags; a unit test in host/src/wasm/engine.rs keeps
# that copy equal to the engine's), read from there rather than copied.
pooling=$(sed -n '/^POOLING_FLAGS=($/,/^)$/p' bench/run.sh)
[[ -n $pooling ]] || { echo "bench: no POOLING_FLAGS=( ... ) array in bench/run.sh" >&2; exit 1; }
eval "$pooling"
((${#POOLING_FLAGS[@]} > 0))

# --- build --------------------------------------------------------------------
if [[ ${BENCH_BUILD:-1} != 0 ]]; then
  log "installing tools if missing (wasm32-wasip2 target, wasmtime CLI)"
  scripts/setup-tools.sh >&2
  log "building the host ($PROFILE profile; dist: LTO, minutes) and hello_counter.wasm"
  cargo build --profile "$PROFILE" --locked -p wasmlet >&2
  cargo build --release --locked -p hello-counter --target wasm32-wasip2 >&2
fi
TARGET=$(cargo metadata --format-version 1 --no-deps --offline | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
WASMLET=$TARGET/$PROFILE/wasmlet
WASM=$TARGET/wasm32-wasip2/release/hello_counter.wasm
WASMTIME=${WASMTIME:-${CARGO_HOME:-$HOME/.cargo}/bin/wasmtime}

# --- processes ----------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wasmlet-bench-kv.XXXXXX")
mkdir -p "$WORK/wrk" "$WORK/warm"
declare -A PID=()
cleanup() {
  local rc=$?
  local pid
  for pid in "${PID[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PID[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ ${BENCH_KEEP:-} == 1 ]]; then log "raw results kept in $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

readarray -t PORTS < <(python3 bench/coldstart.py ports 8)
# Server processes, and the load cases (a URL on one of them).
declare -A URL=(
  [wasmlet-memory]=http://127.0.0.1:${PORTS[0]}/count
  [wasmtime-kv]=http://127.0.0.1:${PORTS[2]}/count
  [wasmlet-file]=http://127.0.0.1:${PORTS[3]}/count
  [wasmlet-redis]=http://127.0.0.1:${PORTS[5]}/count
  [wasmlet-nostore]=http://127.0.0.1:${PORTS[0]}/
  [wasmtime-nostore]=http://127.0.0.1:${PORTS[2]}/
)
declare -A SERVER=([wasmlet-memory]=wasmlet-memory [wasmtime-kv]=wasmtime-kv [wasmlet-file]=wasmlet-file
  [wasmlet-redis]=wasmlet-redis [wasmlet-nostore]=wasmlet-memory [wasmtime-nostore]=wasmtime-kv)
COUNTERS=(wasmlet-memory wasmtime-kv wasmlet-file wasmlet-redis)
ORDER=("${COUNTERS[@]}")
if [[ $BASELINES == 1 ]]; then ORDER+=(wasmlet-nostore wasmtime-nostore); fi
REDIS_PORT=${PORTS[7]}

# Commands are recorded with the scratch directory shown as $WORK and paths
# in the repository relative to it.
show() { local s; s=$(printf '%q ' "$@"); s=${s% }; s=${s//$WORK/\$WORK}; echo "${s//$ROOT\//}"; }

start() { # KEY LABEL CMD...
  local key=$1 label=$2
  shift 2
  printf '%s\t%s\t%s\n' "$key" "$label" "$(show "$@")" >>"$WORK/commands.tsv"
  "$@" >"$WORK/$key.log" 2>&1 &
  PID[$key]=$!
}

alive() {
  kill -0 "${PID[$1]}" 2>/dev/null || { log "$1 died; its log:"; cat "$WORK/$1.log" >&2; exit 1; }
}

# One manifest per wasmlet server: the counter on every path, granted the
# `default` store, declared as BACKEND (none: the embedded `file` default).
manifest() { # DIR [STORE-TOML]
  mkdir -p "$1"
  cp "$WASM" "$1/hello_counter.wasm"
  {
    if [[ -n ${2:-} ]]; then printf '[key_value_store.default]\n%s\n\n' "$2"; fi
    printf '[[route]]\npath = "/..."\ncomponent = "hello_counter.wasm"\nkey_value_stores = ["default"]\n'
  } >"$1/wasmlet.toml"
}

# --- metadata -----------------------------------------------------------------
{
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'note\t%s\n' "${BENCH_NOTE:-}"
  printf 'cpu\t%s\n' "$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'kernel\t%s\n' "$(uname -srm)"
  printf 'mem\t%s\n' "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf 'loadavg\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  dirty=$(git status --porcelain -- host guest 2>/dev/null | head -c1 || true)
  printf 'wasmlet\t%s, commit %s%s\n' "$("$WASMLET" --version)" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "${dirty:+ + uncommitted changes}"
  printf 'wasmtime\t%s\n' "$("$WASMTIME" --version)"
  printf 'redis\t%s\n' "$(redis-server --version | cut -d' ' -f1-3)"
  printf 'rustc\t%s\n' "$(rustc --version)"
  printf 'wrk\t%s\n' "$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2 || true)"
  printf 'profile\t%s\n' "$PROFILE"
  printf 'duration\t%s\nwarmup\t%s\nrepeats\t%s\nthreads\t%s\n' "$DURATION" "$WARMUP" "$REPEATS" "$THREADS"
  inv=""
  for v in BENCH_PROFILE BENCH_BUILD BENCH_DURATION BENCH_WARMUP BENCH_REPEATS BENCH_CONNECTIONS BENCH_THREADS BENCH_KV_BASELINES; do
    if [[ -n ${!v:-} ]]; then inv+="$v=$(printf '%q' "${!v}") "; fi
  done
  printf 'invocation\t%sbench/kv.sh\n' "$inv"
  printf 'wrk_cmd\twrk -t min(CONNS,%s) -c CONNS -d %ss --timeout 10s --latency URL\n' "$THREADS" "$DURATION"
} >"$WORK/meta.tsv"
if others=$(pgrep -x wrk); then
  log "warning: other wrk processes are running (${others//$'\n'/ }); the numbers will be disturbed"
fi

# --- servers ------------------------------------------------------------------
log "starting redis-server and the servers"
mkdir -m 700 "$WORK/redis" "$WORK/data"
start redis "redis-server (loopback, no persistence)" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
  --save '' --appendonly no --dir "$WORK/redis"
manifest "$WORK/memory" 'type = "memory"'
manifest "$WORK/file"
manifest "$WORK/redis-route" "$(printf 'type = "redis"\nurl = "redis://127.0.0.1:%s/0"' "$REDIS_PORT")"
# Started one after the other: the first compiles into --cache-dir, the others load it.
start wasmlet-memory "wasmlet, memory store" env RUST_LOG=warn "$WASMLET" serve --config "$WORK/memory/wasmlet.toml" \
  --no-watch --listen "127.0.0.1:${PORTS[0]}" --admin-listen "127.0.0.1:${PORTS[1]}" --cache-dir "$WORK/cache"
python3 bench/coldstart.py wait "${URL[wasmlet-nostore]}" --timeout 120 || { cat "$WORK/wasmlet-memory.log" >&2; exit 1; }
start wasmlet-file "wasmlet, file store (embedded default)" env RUST_LOG=warn "$WASMLET" serve \
  --config "$WORK/file/wasmlet.toml" --data-dir "$WORK/data" \
  --no-watch --listen "127.0.0.1:${PORTS[3]}" --admin-listen "127.0.0.1:${PORTS[4]}" --cache-dir "$WORK/cache"
start wasmlet-redis "wasmlet, redis store (loopback)" env RUST_LOG=warn "$WASMLET" serve --config "$WORK/redis-route/wasmlet.toml" \
  --no-watch --listen "127.0.0.1:${PORTS[5]}" --admin-listen "127.0.0.1:${PORTS[6]}" --cache-dir "$WORK/cache"
# $XDG_CACHE_HOME only keeps wasmtime's (default-on) cache out of the user's.
start wasmtime-kv "wasmtime serve -Skeyvalue (pooling as wasmlet)" env "XDG_CACHE_HOME=$WORK/xdg" \
  "$WASMTIME" serve -Scli -Skeyvalue "${POOLING_FLAGS[@]}" --addr "127.0.0.1:${PORTS[2]}" "$WASM"
for key in "${COUNTERS[@]}"; do
  python3 bench/coldstart.py wait "${URL[$key]%count}" --timeout 120 || { cat "$WORK/$key.log" >&2; exit 1; }
done

# --- does it count? -------------------------------------------------------------
# GET /count twice on each server: status 200 and the counter's sentence; N
# grows by one on wasmlet. Prints N of the second answer.
count_of() { # KEY -> N
  local body
  body=$(curl -sS --max-time 10 -w '\n%{http_code}' "${URL[$1]}") || { log "$1: GET /count failed"; exit 1; }
  local code=${body##*$'\n'} text=${body%$'\n'*}
  if [[ $code != 200 || ! $text =~ ^Hello\ World!\ I\ have\ been\ seen\ ([0-9]+)\ times\.$ ]]; then
    log "$1: GET /count answered $code: $text"
    cat "$WORK/${SERVER[$1]}.log" >&2
    exit 1
  fi
  echo "${BASH_REMATCH[1]}"
}
for key in "${COUNTERS[@]}"; do
  n1=$(count_of "$key")
  n2=$(count_of "$key")
  grows=no
  if ((n2 == n1 + 1)); then grows=yes; fi
  if [[ $key == wasmlet-* && $grows != yes ]]; then
    log "$key: the counter does not count ($n1, then $n2)"
    exit 1
  fi
  printf '%s\tbefore\t%s\t%s\t%s\n' "$key" "$n1" "$n2" "$grows" >>"$WORK/counts.tsv"
  log "$key: GET /count answered N = $n1, then $n2"
done
if [[ $BASELINES == 1 ]]; then
  for key in wasmlet-nostore wasmtime-nostore; do
    text=$(curl -sS --max-time 10 "${URL[$key]}")
    [[ $text == "Hello World!" ]] || { log "$key: GET / answered: $text"; exit 1; }
  done
fi

# --- load ---------------------------------------------------------------------
for c in $CONNECTIONS; do
  t=$((c < THREADS ? c : THREADS))
  if ((WARMUP > 0)); then
    log "$c connections: warm-up ${WARMUP}s each"
    for key in "${ORDER[@]}"; do
      wrk -t"$t" -c"$c" -d"${WARMUP}s" --timeout 10s "${URL[$key]}" >"$WORK/warm/$key-c$c.txt"
      alive "${SERVER[$key]}"
    done
  fi
  for ((r = 1; r <= REPEATS; r++)); do
    for key in "${ORDER[@]}"; do
      f=$WORK/wrk/$key-c$c-r$r.txt
      wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 10s --latency "${URL[$key]}" >"$f"
      alive "${SERVER[$key]}"
      alive redis
      log "$c connections, repeat $r, $key: $(awk '/^Requests\/sec/ { print $2 }' "$f") req/s"
    done
  done
done
printf 'loadavg_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/meta.tsv"
sleep 1 # requests cut off when wrk stopped finish
for key in "${COUNTERS[@]}"; do
  printf '%s\tafter\t%s\n' "$key" "$(count_of "$key")" >>"$WORK/counts.tsv"
done

# --- report -------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
python3 bench/kv_report.py "$WORK" >"$WORK/report.md"
cp "$WORK/report.md" "$OUT"
cat "$WORK/report.md"
log "report written to $OUT"

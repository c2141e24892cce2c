#!/usr/bin/env bash
# Side-by-side benchmark: wasmlet serving hello.wasm against `wasmtime serve`
# (default flags, and with wasmlet's pooling allocator settings) and a native
# hyper hello world, all on loopback, driven by wrk. Then the same pair with
# instance reuse (docs/reuse.md): wasmlet and pooled `wasmtime serve`, both
# with --max-instance-reuse-count $BENCH_REUSE and the default 1 s idle timeout.
#
#   bench/run.sh                                    # full run (about 10 minutes)
#   BENCH_DURATION=2 BENCH_REPEATS=1 bench/run.sh   # quick smoke run
#
# Reports requests/s and p50/p99 latency per connection count (medians over
# the repeats, servers interleaved a b c d a b c d ...), cold start (spawn to
# first 200, cases interleaved likewise) with an empty and a warm compiled
# cache, idle and peak RSS, and the wasmlet ratios; the markdown goes to stdout
# and to bench/results/latest.md. Then the Python and JavaScript hellos
# (guest/python, guest/javascript) against `wasmtime serve` on the same
# components: requests/s at 16 and 64 connections, cold starts from an empty
# and a warm cache, and memory (bench/toolchains.py; about 15 minutes more;
# bench/results/toolchains.md). Last, the key-value pair (bench/kv.sh: the
# visit counter on wasmlet's stores against `wasmtime serve -Skeyvalue`;
# about 4 minutes; bench/results/kv.md).
#
# Environment:
#   BENCH_DURATION     seconds per measured wrk run            (default 10)
#   BENCH_WARMUP       seconds of warm-up per server and count (default 2)
#   BENCH_REPEATS      measured runs per server and count      (default 3)
#   BENCH_CONNECTIONS  connection counts                       (default "1 16 64 256")
#   BENCH_THREADS      wrk threads, at most one per connection (default 2)
#   BENCH_COLD_RUNS    cold-start rounds (one start per case)  (default 15)
#   BENCH_PROFILE      cargo profile of the host and native-hello (default dist)
#   BENCH_REUSE        --max-instance-reuse-count of the reuse pair (default 1000)
#   BENCH_OUT          report file                             (default bench/results/latest.md)
#   BENCH_NOTE         a line put at the top of the report
#   BENCH_KEEP=1       keep the raw wrk output and logs (the path is printed)
#   BENCH_TOOLCHAINS=0 skip the Python and JavaScript part
#   BENCH_TOOLCHAINS_OUT  its report (default bench/results/toolchains.md)
#   BENCH_KV=0         skip the key-value pair (bench/kv.sh; its own knobs apply,
#                      its connection count is BENCH_KV_CONNECTIONS, default 64)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
REPEATS=${BENCH_REPEATS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-"1 16 64 256"}
THREADS=${BENCH_THREADS:-2}
COLD_RUNS=${BENCH_COLD_RUNS:-15}
OUT=${BENCH_OUT:-bench/results/latest.md}
REUSE=${BENCH_REUSE:-1000}
# The p3 pair: wasmtime serve -Sp3's own defaults, given to both explicitly.
P3_REUSE=${BENCH_P3_REUSE:-128}
P3_CONCURRENT=${BENCH_P3_CONCURRENT:-16}
PROFILE=${BENCH_PROFILE:-dist}
for val in "$REUSE" "$P3_REUSE" "$P3_CONCURRENT" "$DURATION" "$REPEATS" "$THREADS" "$COLD_RUNS" $CONNECTIONS; do
  [[ $val =~ ^[1-9][0-9]*$ ]] || { echo "bench: expected a positive integer, got '$val'" >&2; exit 2; }
done
[[ $WARMUP =~ ^[0-9]+$ ]] || { echo "bench: BENCH_WARMUP must be an integer, got '$WARMUP'" >&2; exit 2; }
scripts/need-command.sh wrk wrk

log() { echo "bench: $*" >&2; }

# --- build --------------------------------------------------------------------
log "installing tools if missing (wasm32-wasip2 target, wasmtime CLI)"
scripts/setup-tools.sh >&2
# The host as the image ships it (the `dist` profile: fat LTO), and the native
# reference built the same way.
log "building the host and native-hello ($PROFILE profile; dist: LTO, minutes), and hello.wasm"
cargo build --profile "$PROFILE" -p wasmlet -p native-hello >&2
cargo build --release -p hello --target wasm32-wasip2 >&2
# The wasi:http 0.3 hello: the p3 fixture answers `GET /` with Hello World!.
cargo build --release -p test-programs --bin p3 --target wasm32-wasip2 >&2
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
WASMLET=$TARGET/$PROFILE/wasmlet
NATIVE=$TARGET/$PROFILE/native-hello
WASM=$TARGET/wasm32-wasip2/release/hello.wasm
WASM_P3=$TARGET/wasm32-wasip2/release/p3.wasm
WASMTIME=${WASMTIME:-${CARGO_HOME:-$HOME/.cargo}/bin/wasmtime}

# --- wasmtime serve with wasmlet's engine settings ----------------------------
# wasmlet's pool and per-request limits at its default flags (--max-in-flight
# 512, --max-memory 128MiB, --request-timeout 20s), exactly as
# wasmtime_serve_flags in host/src/wasm/engine.rs renders them; a unit test there
# fails when this list and the engine differ. The pool: 512 + 64 + 64 (idle, for reuse) component
# instances with room for 32 core instances, 4 memories and 16 tables of
# 20,000 elements each, 512 + 4 + 64 fiber stacks, memory kept resident 2 MiB and tables 64 KiB, the rest
# decommitted at once, PAGEMAP_SCAN where the kernel has it. Then epoch
# interruption at 20 s and a 128 MiB memory limit per store.
POOLING_FLAGS=(
  -O pooling-allocator=y
  -O pooling-total-component-instances=640
  -O pooling-total-core-instances=20480
  -O pooling-total-memories=2560
  -O pooling-total-tables=10240
  -O pooling-total-stacks=580
  -O pooling-max-memories-per-component=4
  -O pooling-max-tables-per-component=16
  -O pooling-max-core-instances-per-component=32
  -O pooling-table-elements=20000
  -O pooling-max-memory-size=134217728
  -O pooling-memory-keep-resident=2097152
  -O pooling-table-keep-resident=65536
  -O pooling-decommit-batch-size=1
  -O pooling-pagemap-scan=auto
  -W timeout=20000ms
  -W max-memory-size=134217728
)

# --- processes ----------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wasmlet-bench.XXXXXX")
mkdir -p "$WORK/wrk"
declare -A PID=() IDLE=()
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

readarray -t PORTS < <(python3 bench/coldstart.py ports 11)
declare -A URL=(
  [wasmlet]=http://127.0.0.1:${PORTS[0]}/
  [wasmtime]=http://127.0.0.1:${PORTS[2]}/
  [wasmtime-pool]=http://127.0.0.1:${PORTS[3]}/
  [native]=http://127.0.0.1:${PORTS[4]}/
  [wasmlet-reuse]=http://127.0.0.1:${PORTS[5]}/
  [wasmtime-reuse]=http://127.0.0.1:${PORTS[7]}/
  [wasmlet-p3]=http://127.0.0.1:${PORTS[8]}/
  [wasmtime-p3]=http://127.0.0.1:${PORTS[10]}/
)
ORDER=(wasmlet wasmtime wasmtime-pool native wasmlet-reuse wasmtime-reuse wasmlet-p3 wasmtime-p3)

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

proc_kib() { # PID FIELD -> KiB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
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
  printf 'rustc\t%s\n' "$(rustc --version)"
  printf 'hyper\t%s\n' "$(awk '/^name = "hyper"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)"
  printf 'wrk\t%s\n' "$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2 || true)"
  printf 'profile\t%s\n' "$PROFILE"
  printf 'duration\t%s\nwarmup\t%s\nrepeats\t%s\nthreads\t%s\ncold_runs\t%s\n' "$DURATION" "$WARMUP" "$REPEATS" "$THREADS" "$COLD_RUNS"
  inv=""
  for v in BENCH_PROFILE BENCH_REUSE BENCH_P3_REUSE BENCH_P3_CONCURRENT BENCH_DURATION BENCH_WARMUP BENCH_REPEATS BENCH_CONNECTIONS BENCH_THREADS BENCH_COLD_RUNS; do
    if [[ -n ${!v:-} ]]; then inv+="$v=$(printf '%q' "${!v}") "; fi
  done
  printf 'invocation\t%sbench/run.sh\n' "$inv"
  printf 'wrk_cmd\twrk -t min(CONNS,%s) -c CONNS -d %ss --timeout 10s --latency URL\n' "$THREADS" "$DURATION"
} >"$WORK/meta.tsv"

# --- cold start (nothing else running) ----------------------------------------
if others=$(pgrep -x wrk); then
  log "warning: other wrk processes are running ($(echo $others)); the numbers will be disturbed"
fi
log "cold start: $COLD_RUNS rounds, each starting every case once"
cold() { python3 bench/coldstart.py case --cases "$WORK/cold-cases.jsonl" "$@"; }
WASMLET_COLD=("$WASMLET" serve "$WASM" --listen '127.0.0.1:{port}' --admin-listen '127.0.0.1:{admin}')
WASMTIME_COLD=("$WASMTIME" serve -Scli --addr '127.0.0.1:{port}' "$WASM")
cold --label "wasmlet | empty" --env RUST_LOG=warn --fresh-dir "$WORK/cache-empty" -- "${WASMLET_COLD[@]}" --cache-dir "$WORK/cache-empty"
cold --label "wasmlet | warm" --env RUST_LOG=warn --prime 1 -- "${WASMLET_COLD[@]}" --cache-dir "$WORK/cache-warm"
cold --label "wasmtime serve | none (-C cache=n)" -- \
  "$WASMTIME" serve -Scli -C cache=n --addr '127.0.0.1:{port}' "$WASM"
cold --label "wasmtime serve | empty (default cache config)" --fresh-dir "$WORK/xdg-empty" --env "XDG_CACHE_HOME=$WORK/xdg-empty" -- "${WASMTIME_COLD[@]}"
cold --label "wasmtime serve | warm" --prime 1 --env "XDG_CACHE_HOME=$WORK/xdg-warm" -- "${WASMTIME_COLD[@]}"
cold --label "wasmtime serve (pooling as wasmlet) | warm" --prime 1 --env "XDG_CACHE_HOME=$WORK/xdg-pool" -- \
  "$WASMTIME" serve -Scli "${POOLING_FLAGS[@]}" --addr '127.0.0.1:{port}' "$WASM"
cold --label "native hyper | n/a" -- "$NATIVE" '127.0.0.1:{port}'
python3 bench/coldstart.py measure --cases "$WORK/cold-cases.jsonl" --runs "$COLD_RUNS" \
  --log "$WORK/cold.log" --out "$WORK/cold.jsonl"
# The reported commands show the scratch directory as $WORK, repository paths relative.
sed -i "s|$WORK|\$WORK|g; s|$ROOT/||g" "$WORK/cold.jsonl"

# --- servers ------------------------------------------------------------------
log "starting the servers"
start wasmlet "wasmlet" env RUST_LOG=warn "$WASMLET" serve "$WASM" \
  --listen "127.0.0.1:${PORTS[0]}" --admin-listen "127.0.0.1:${PORTS[1]}" --cache-dir "$WORK/cache-warm"
# $XDG_CACHE_HOME only keeps wasmtime's (default-on) cache out of the user's.
start wasmtime "wasmtime serve (default)" env "XDG_CACHE_HOME=$WORK/xdg-warm" \
  "$WASMTIME" serve -Scli --addr "127.0.0.1:${PORTS[2]}" "$WASM"
start wasmtime-pool "wasmtime serve (pooling as wasmlet)" env "XDG_CACHE_HOME=$WORK/xdg-pool" \
  "$WASMTIME" serve -Scli "${POOLING_FLAGS[@]}" --addr "127.0.0.1:${PORTS[3]}" "$WASM"
start native "native hyper" "$NATIVE" "127.0.0.1:${PORTS[4]}"
start wasmlet-reuse "wasmlet (reuse $REUSE)" env RUST_LOG=warn "$WASMLET" serve "$WASM" \
  --listen "127.0.0.1:${PORTS[5]}" --admin-listen "127.0.0.1:${PORTS[6]}" --cache-dir "$WORK/cache-warm" \
  --max-instance-reuse-count "$REUSE"
start wasmtime-reuse "wasmtime serve (pooling as wasmlet, reuse $REUSE)" env "XDG_CACHE_HOME=$WORK/xdg-pool" \
  "$WASMTIME" serve -Scli "${POOLING_FLAGS[@]}" --max-instance-reuse-count "$REUSE" --addr "127.0.0.1:${PORTS[7]}" "$WASM"
P3_FLAGS=(--max-instance-reuse-count "$P3_REUSE" --max-instance-concurrent-reuse-count "$P3_CONCURRENT")
start wasmlet-p3 "wasmlet (p3, reuse $P3_REUSE, $P3_CONCURRENT at once)" env RUST_LOG=warn "$WASMLET" serve "$WASM_P3" \
  --listen "127.0.0.1:${PORTS[8]}" --admin-listen "127.0.0.1:${PORTS[9]}" --cache-dir "$WORK/cache-warm" "${P3_FLAGS[@]}"
start wasmtime-p3 "wasmtime serve -Sp3 (pooling as wasmlet, same reuse)" env "XDG_CACHE_HOME=$WORK/xdg-pool" \
  "$WASMTIME" serve -Scli -Sp3 "${POOLING_FLAGS[@]}" "${P3_FLAGS[@]}" --addr "127.0.0.1:${PORTS[10]}" "$WASM_P3"
for key in "${ORDER[@]}"; do
  python3 bench/coldstart.py wait "${URL[$key]}" --timeout 120 || { cat "$WORK/$key.log" >&2; exit 1; }
done
sleep 1
for key in "${ORDER[@]}"; do IDLE[$key]=$(proc_kib "${PID[$key]}" VmRSS); done

# --- load ---------------------------------------------------------------------
alive() {
  kill -0 "${PID[$1]}" 2>/dev/null || { log "$1 died; its log:"; cat "$WORK/$1.log" >&2; exit 1; }
}
for c in $CONNECTIONS; do
  t=$((c < THREADS ? c : THREADS))
  if ((WARMUP > 0)); then
    log "$c connections: warm-up ${WARMUP}s each"
    for key in "${ORDER[@]}"; do
      wrk -t"$t" -c"$c" -d"${WARMUP}s" --timeout 10s "${URL[$key]}" >/dev/null
      alive "$key"
    done
  fi
  for ((r = 1; r <= REPEATS; r++)); do
    for key in "${ORDER[@]}"; do
      f=$WORK/wrk/$key-c$c-r$r.txt
      wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 10s --latency "${URL[$key]}" >"$f"
      alive "$key"
      log "$c connections, repeat $r, $key: $(awk '/^Requests\/sec/ { print $2 }' "$f") req/s"
    done
  done
done

for key in "${ORDER[@]}"; do
  printf '%s\t%s\t%s\n' "$key" "${IDLE[$key]}" "$(proc_kib "${PID[$key]}" VmHWM)" >>"$WORK/rss.tsv"
done
printf 'loadavg_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/meta.tsv"

# --- report -------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
python3 bench/report.py "$WORK" >"$WORK/report.md"
cp "$WORK/report.md" "$OUT"
cat "$WORK/report.md"
log "report written to $OUT"

# --- Python and JavaScript ----------------------------------------------------
if [[ ${BENCH_TOOLCHAINS:-1} == 1 ]]; then
  log "Python and JavaScript hellos: building them (pinned toolchains, cached)"
  guest/python/build.sh "$WORK/hello-python.wasm"
  guest/javascript/build.sh "$WORK/hello-javascript.wasm"
  BENCH_CONNECTIONS="16 64" python3 bench/toolchains.py --wasmlet "$WASMLET" --wasmtime "$WASMTIME" \
    --component python="$WORK/hello-python.wasm" --component javascript="$WORK/hello-javascript.wasm" \
    --out "${BENCH_TOOLCHAINS_OUT:-bench/results/toolchains.md}"
fi

# --- key-value stores ---------------------------------------------------------
if [[ ${BENCH_KV:-1} == 1 ]]; then
  log "the key-value pair: bench/kv.sh"
  BENCH_CONNECTIONS=${BENCH_KV_CONNECTIONS:-64} bench/kv.sh
fi

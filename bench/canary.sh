#!/usr/bin/env bash
# The canary's cost on the request path, side by side in one run: hello on a plain route, with a
# canary (weight 10, no rollback policy), and with a canary and a rollback policy (a lock per
# request for the window). wrk on loopback, interleaved, ROUNDS × DURATION each; prints medians.
#   bench/canary.sh            (release build; ROUNDS=3 DURATION=5s CONNECTIONS=50)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${ROUNDS:-3} duration=${DURATION:-5s} connections=${CONNECTIONS:-50}
cargo build --release -p wasmlet --quiet
cargo build --release -p hello --target wasm32-wasip2 --quiet
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
cp target/wasm32-wasip2/release/hello.wasm "$tmp/hello.wasm"
cp "$tmp/hello.wasm" "$tmp/hello-v2.wasm"
route='[[route]]\npath = "/..."\ncomponent = "hello.wasm"\n'
canary='canary = { component = "hello-v2.wasm", weight = 10 }\n'
rollback='rollback = { max_error_rate = 0.05, min_requests = 200, window = "1m" }\n'
declare -A port
i=0
for case in plain canary rollback; do
  mkdir -p "$tmp/$case"; cp "$tmp"/hello*.wasm "$tmp/$case/"
  case $case in
    plain) printf "$route" ;;
    canary) printf "$route$canary" ;;
    rollback) printf "$route$canary$rollback" ;;
  esac >"$tmp/$case/wasmlet.toml"
  port[$case]=$((18080 + i)); i=$((i + 1))
  RUST_LOG=warn target/release/wasmlet serve --config "$tmp/$case/wasmlet.toml" --no-watch \
    --listen "127.0.0.1:${port[$case]}" --admin-listen "127.0.0.1:$((19080 + i))" &
  pids+=($!)
done
for case in plain canary rollback; do
  until curl -sf "http://127.0.0.1:${port[$case]}/" >/dev/null; do sleep 0.1; done
done
for r in $(seq "$rounds"); do
  for case in plain canary rollback; do
    rps=$(wrk -t2 -c"$connections" -d"$duration" "http://127.0.0.1:${port[$case]}/" | awk '/Requests\/sec/ {print $2}')
    echo "$case $rps" | tee -a "$tmp/results"
  done
done
echo "medians over $rounds rounds of $duration, $connections connections:"
for case in plain canary rollback; do
  awk -v c="$case" '$1 == c {print $2}' "$tmp/results" | sort -n | awk -v c="$case" '{a[NR]=$1} END {printf "%-9s %8.0f req/s\n", c, a[int((NR+1)/2)]}'
done

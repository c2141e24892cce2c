#!/usr/bin/env bash
# HTTP/2 against HTTP/1.1, and TLS against clear text, for the same hello handler, side by side in
# one run: one wasmlet in clear text (HTTP/1.1 and h2c on one port) and one with --tls-cert
# (HTTP/1.1 or h2 by ALPN), each loaded in turn, interleaved, ROUNDS × DURATION, medians:
#   h1       wrk    -c CONNECTIONS                    http://
#   h2c      h2load -c CONNECTIONS -m STREAMS         http://   (prior knowledge)
#   h1+tls   wrk    -c CONNECTIONS                    https://
#   h2+tls   h2load -c CONNECTIONS -m STREAMS         https://  (ALPN h2)
# Every connection is kept alive: handshakes are not what is measured.
#   bench/http2.sh     (ROUNDS=3 DURATION=10 CONNECTIONS=64 STREAMS=4 PROFILE=release; PROFILE=dist
#                       is what the image ships)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${ROUNDS:-3} duration=${DURATION:-10} connections=${CONNECTIONS:-64} streams=${STREAMS:-4}
profile=${PROFILE:-release}
scripts/need-command.sh wrk wrk
scripts/need-command.sh h2load nghttp2-client
scripts/need-command.sh openssl openssl
cargo build --locked --profile "$profile" -p wasmlet --quiet
cargo build --locked --release -p hello --target wasm32-wasip2 --quiet
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
bin=target/$profile/wasmlet
hello=target/wasm32-wasip2/release/hello.wasm
RUST_LOG=warn "$bin" serve "$hello" --no-watch --listen 127.0.0.1:18180 --admin-listen 127.0.0.1:19180 &
pids+=($!)
RUST_LOG=warn "$bin" serve "$hello" --no-watch --listen 127.0.0.1:18181 --admin-listen 127.0.0.1:19181 \
  --tls-cert "$tmp/tls.crt" --tls-key "$tmp/tls.key" &
pids+=($!)
until curl -sf http://127.0.0.1:18180/ >/dev/null; do sleep 0.1; done
until curl -sfk https://127.0.0.1:18181/ >/dev/null; do sleep 0.1; done

wrk_rps() { wrk -t2 -c"$connections" -d"${duration}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
h2load_rps() { # h2load's "finished in Xs, N req/s"; says so on stderr when requests failed
  h2load -t2 -c"$connections" -m"$streams" -D"$duration" "$1" 2>/dev/null | awk '
    /^finished in/ {gsub(",", "", $4); rps = $4}
    /^requests:/ {failed = $10}
    /^status codes:/ {bad = $5 + $7 + $9}
    END {if (failed + bad > 0) printf "h2load: %d failed, %d not 2xx\n", failed, bad > "/dev/stderr"; print rps}'
}
cases=(h1 h2c h1+tls h2+tls)
for r in $(seq "$rounds"); do
  for case in "${cases[@]}"; do
    case $case in
      h1) rps=$(wrk_rps http://127.0.0.1:18180/) ;;
      h2c) rps=$(h2load_rps http://127.0.0.1:18180/) ;;
      h1+tls) rps=$(wrk_rps https://127.0.0.1:18181/) ;;
      h2+tls) rps=$(h2load_rps https://127.0.0.1:18181/) ;;
    esac
    echo "round $r: $case $rps req/s" >&2
    echo "$case $rps" >>"$tmp/results"
  done
done
median() { awk -v c="$1" '$1 == c {print $2}' "$tmp/results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "medians of $rounds interleaved rounds of ${duration}s, $connections connections ($profile build):"
for case in "${cases[@]}"; do printf '%-7s %8.0f req/s\n' "$case" "$(median "$case")"; done
awk -v h1="$(median h1)" -v h2="$(median h2c)" -v t1="$(median h1+tls)" -v t2="$(median h2+tls)" 'BEGIN {
  printf "HTTP/2 / HTTP/1.1: %.2f clear, %.2f TLS (target >= 1)\n", h2 / h1, t2 / t1
  printf "TLS cost: %.1f%% HTTP/1.1, %.1f%% HTTP/2 (target <= 15%%)\n", 100 * (1 - t1 / h1), 100 * (1 - t2 / h2)
}'

#!/usr/bin/env bash
# Quickstart: builds the hello component and the host, then serves hello on
# http://127.0.0.1:5000/ (extra arguments go to `wasmlet serve`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-tools.sh --no-wasmtime
cargo build --release --locked -p hello --target wasm32-wasip2
cargo build --release --locked -p wasmlet
exec target/release/wasmlet serve target/wasm32-wasip2/release/hello.wasm "$@"

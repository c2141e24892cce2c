#!/usr/bin/env bash
# Installs what the build and the tests need, reusing whatever is present:
# the wasm32-wasip2 target, the reference `wasmtime` CLI (same version as the
# host's wasmtime crate) and the Python packages the tests use (Prometheus
# parser, grpcio, h2, opentelemetry-proto).
set -euo pipefail
cd "$(dirname "$0")/.."

WASMTIME_VERSION=48.0.8

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

wasmtime_bin="${CARGO_HOME:-$HOME/.cargo}/bin/wasmtime"
if [[ "${1:-}" != "--no-wasmtime" ]]; then
  if [[ -x "$wasmtime_bin" ]] && "$wasmtime_bin" --version | grep -q " $WASMTIME_VERSION"; then
    :
  else
    echo "setup: installing wasmtime-cli $WASMTIME_VERSION (about 10 minutes, once)"
    cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --quiet
  fi
fi

if ! python3 -c 'import grpc; assert grpc.__version__ == "1.85.4"' 2>/dev/null; then
  echo "setup: installing the Python grpcio 1.85.4 (a real gRPC client for the tests)"
  python3 -m pip install --quiet --disable-pip-version-check grpcio==1.85.4
fi
if ! python3 -c 'import h2; assert h2.__version__ == "4.4.1"' 2>/dev/null; then
  echo "setup: installing the Python h2 4.4.1 (hyperframe, hpack: HTTP/2 attacks for the tests)"
  python3 -m pip install --quiet --disable-pip-version-check h2==4.4.1
fi
if ! python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
  echo "setup: installing the Python opentelemetry-proto 1.45.2 (an OTLP receiver for the tests)"
  python3 -m pip install --quiet --disable-pip-version-check opentelemetry-proto==1.45.2
fi
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  echo "setup: installing the Python prometheus-client (exposition parser for the tests)"
  python3 -m pip install --quiet --disable-pip-version-check prometheus-client
fi

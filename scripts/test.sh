#!/usr/bin/env bash
# The whole test suite: links in the docs, the layering of host/src, formatting,
# lints, unit and black-box tests (with parity against `wasmtime serve`),
# Kubernetes manifests, and the container tests (Docker image, 3 replicas
# behind a virtual IP).
#
#   scripts/test.sh          everything (what CI runs)
#   scripts/test.sh --fast   skip the Kubernetes and container tests
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
[[ "${1:-}" == "--fast" ]] && fast=1

scripts/setup-tools.sh

echo "== links and anchors in the docs"
scripts/check-links.py

echo "== layers: no import cycle, no import running up (ARCHITECTURE.md)"
scripts/check-layers.py --self-test
scripts/check-layers.py

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -p wasmlet -p test-programs-artifacts -- -D warnings
cargo clippy --locked -p hello -p hello-counter -p test-programs --target wasm32-wasip2 -- -D warnings

echo "== unit and black-box tests"
cargo test --release --locked -p wasmlet -p test-programs-artifacts

if [[ $fast == 0 ]]; then
  echo "== Kubernetes manifests"
  scripts/k8s-validate.sh
  echo "== container image and 3 replicas"
  scripts/container-test.sh
fi

# The wasmlet image: the host binary plus a default handler set (the hello component and its
# manifest) at /app/handlers, which a volume (the Kubernetes ConfigMap) may replace.
#
#   docker build -t wasmlet .
#   docker run --rm -p 5000:5000 --read-only --tmpfs /var/cache/wasmlet wasmlet
#   curl http://127.0.0.1:5000/        # Hello World!
#
# Built against the public images: rust:1.95-bookworm (the official Rust image) to compile,
# debian:bookworm-slim to run. Everything is built `--locked` from the committed Cargo.lock; the
# host with the `dist` profile (fat LTO, see Cargo.toml), which is what `bench/run.sh` measures.

FROM rust:1.95-bookworm AS toolchain
WORKDIR /src
# Build with the image's own toolchain ($RUST_VERSION, set by the official image) rather than the
# moving `stable` channel that rust-toolchain.toml names: no second toolchain download, and the
# compiler is pinned by the image tag. Add the one target rust-toolchain.toml asks for.
RUN rustup override set "$RUST_VERSION" \
 && rustup target add wasm32-wasip2

# The workspace's manifests with each crate's target roots (src/lib.rs, src/main.rs, src/bin/*,
# build.rs, any `path = "….rs"`) replaced by stubs, so that the dependency layer below is rebuilt
# only when a Cargo.toml or Cargo.lock changes, not when a source file is edited or added
# (what cargo-chef does).
FROM toolchain AS planner
COPY . .
RUN set -eu; mkdir -p /skeleton; \
    cp Cargo.toml Cargo.lock /skeleton/; \
    if [ -d .cargo ]; then cp -r .cargo /skeleton/; fi; \
    find . -path ./target -prune -o -type f -name Cargo.toml -print | while read -r manifest; do \
      dir=$(dirname "$manifest"); \
      mkdir -p "/skeleton/$dir"; cp "$manifest" "/skeleton/$manifest"; \
      { ls "$dir"/src/lib.rs "$dir"/src/main.rs "$dir"/build.rs "$dir"/src/bin/*.rs \
           "$dir"/src/bin/*/main.rs 2>/dev/null || true; \
        sed -n 's/^ *path *= *"\([^"]*\.rs\)".*/\1/p' "$manifest" | sed "s|^|$dir/|"; \
      } | while read -r src; do \
        mkdir -p "/skeleton/$(dirname "$src")"; \
        printf '%s\n' '//! Stub (Dockerfile dependency layer).' '#![allow(dead_code)]' 'fn main() {}' \
          > "/skeleton/$src"; \
      done; \
    done; \
    find /skeleton -type f | sort

FROM toolchain AS builder
COPY --from=planner /skeleton/ ./
RUN cargo build --profile dist --locked -p wasmlet \
 && cargo build --release --locked -p hello --target wasm32-wasip2
COPY . .
# The stubs were compiled after the real sources were last modified: touch the real ones so cargo
# rebuilds the workspace's own crates (dependencies stay cached).
RUN find . -path ./target -prune -o -type f -name '*.rs' -exec touch {} + \
 && cargo build --profile dist --locked -p wasmlet \
 && cargo build --release --locked -p hello --target wasm32-wasip2 \
 && mkdir -p /out/usr/local/bin /out/app/handlers \
 && objcopy --strip-debug target/dist/wasmlet /out/usr/local/bin/wasmlet \
 && cp target/wasm32-wasip2/release/hello.wasm k8s/handlers/wasmlet.toml /out/app/handlers/

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="wasmlet" \
      org.opencontainers.image.description="Serverless-style host for wasi:http WebAssembly components" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ /
# The system's CA roots, for handlers pulled from registries over HTTPS (`oci://`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The compiled-component cache. The root filesystem may be read-only (Kubernetes mounts an
# emptyDir here, `docker run` a --tmpfs); without a writable cache the host still runs, it just
# compiles at every start. The host uses a folder of its own inside it (created private to its
# user), because an emptyDir or a --tmpfs mount point is writable by others, and a cache others can
# write to is disabled (its entries are native code the host runs).
#
# The key-value data dir (the `file` stores, one redb file each): a volume, so that the count of a
# handler on the embedded default store survives the container (`docker run` makes an anonymous
# volume unless one is named with -v; Kubernetes mounts an emptyDir, k8s/base/deployment.yaml).
# As with the cache, the host creates the data folder inside it itself, private to its user. State
# that several replicas share belongs in Redis (`type = "redis"`, k8s/redis/).
RUN mkdir -p /var/cache/wasmlet /var/lib/wasmlet \
 && chown 65532:65532 /var/cache/wasmlet /var/lib/wasmlet
VOLUME ["/var/lib/wasmlet"]
WORKDIR /app
ENV WASMLET_LISTEN=0.0.0.0:5000 \
    WASMLET_ADMIN_LISTEN=0.0.0.0:9090 \
    WASMLET_LOG_FORMAT=json \
    WASMLET_CACHE_DIR=/var/cache/wasmlet/components \
    WASMLET_DATA_DIR=/var/lib/wasmlet/data
# Numeric, so Kubernetes' runAsNonRoot can verify it (65532 is distroless' "nonroot").
USER 65532:65532
# 5000: the handlers (the seed's port). 9090: admin (/healthz, /readyz, /metrics, /handlers).
EXPOSE 5000 9090
ENTRYPOINT ["/usr/local/bin/wasmlet"]
CMD ["serve", "--config", "/app/handlers/wasmlet.toml"]

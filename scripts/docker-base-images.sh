#!/usr/bin/env bash
# Fabricate, locally, the two public base images the Dockerfile names, for machines that cannot
# pull from a registry. The Dockerfile itself stays the one a user builds against the real images.
#
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm, trimmed like the official slim
#                          image (no docs, man pages or locales), then `docker import`.
#   rust:1.95-bookworm     that base + gcc, libc6-dev, ca-certificates (what the official image has
#                          for linking) + this machine's Rust toolchain laid out like the official
#                          image (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo,
#                          RUST_VERSION, toolchain named after the version), + this machine's CA
#                          bundle so cargo can reach crates.io from inside a build.
#
# Images that already exist are reused; FORCE=1 rebuilds them. Needs a running engine
# (scripts/docker-engine.sh start).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
runtime_tag=${RUNTIME_BASE:-debian:bookworm-slim}
builder_tag=${BUILDER_BASE:-rust:1.95-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=${BASE_IMAGES_WORKDIR:-/var/tmp/wasmlet-base-images}
force=${FORCE:-0}

have_image() { [[ $force != 1 ]] && docker image inspect "$1" >/dev/null 2>&1; }

make_runtime_base() {
  if have_image "$runtime_tag"; then
    echo "base-images: reusing $runtime_tag"
    return
  fi
  "$here/need-command.sh" debootstrap debootstrap
  local root=$work/bookworm-rootfs
  rm -rf "$root"
  mkdir -p "$root"
  echo "base-images: debootstrap --variant=minbase bookworm (a few minutes)"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

  # What the official slim image does (debuerreotype-slimify): keep docs, man pages and locales
  # out, now and for packages installed later; copyright files stay.
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
CFG
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{groff,info,linda,lintian,man}/* "$root"/var/cache/apt/*.bin \
    "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  printf 'APT::Install-Recommends "false";\n' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"

  tar --numeric-owner -C "$root" -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - "$runtime_tag" >/dev/null
  rm -rf "$root"
  echo "base-images: created $runtime_tag ($(docker image inspect -f '{{.Size}}' "$runtime_tag" | numfmt --to=iec))"
}

make_builder_base() {
  if have_image "$builder_tag"; then
    echo "base-images: reusing $builder_tag"
    return
  fi
  local rustc_path toolchain version host ctx
  rustc_path=$(rustup which rustc)
  toolchain=$(readlink -f "$(dirname "$rustc_path")/..")
  version=$("$rustc_path" --version | awk '{print $2}')
  host=$("$rustc_path" -vV | awk '/^host:/ {print $2}')
  [[ -d $toolchain/lib/rustlib/wasm32-wasip2 ]] || rustup target add wasm32-wasip2
  echo "base-images: $builder_tag from $runtime_tag + rustc $version ($toolchain)"

  ctx=$work/builder-context
  rm -rf "$ctx"
  mkdir -p "$ctx/rustup/toolchains" "$ctx/cargo/bin"
  # Hard links when possible: the toolchain is 1.5 GB, most of it docs that are left out.
  cp -al "$toolchain" "$ctx/rustup/toolchains/$version-$host" 2>/dev/null ||
    cp -a "$toolchain" "$ctx/rustup/toolchains/$version-$host"
  rm -rf "$ctx/rustup/toolchains/$version-$host/share/doc"
  cp "$(command -v rustup)" "$ctx/cargo/bin/rustup"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$version-$host" \
    >"$ctx/rustup/settings.toml"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $runtime_tag
ENV RUSTUP_HOME=/usr/local/rustup \\
    CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$version
RUN apt-get update \\
 && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates git pkg-config make \\
 && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
RUN cd /usr/local/cargo/bin \\
 && for p in cargo rustc rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver rust-gdb rust-lldb; do ln -s rustup "\$p"; done \\
 && chmod -R a+w /usr/local/rustup /usr/local/cargo \\
 && rustup --version && cargo --version && rustc --version
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q --network host -t "$builder_tag" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "base-images: created $builder_tag ($(docker image inspect -f '{{.Size}}' "$builder_tag" | numfmt --to=iec))"
}

mkdir -p "$work"
make_runtime_base
make_builder_base

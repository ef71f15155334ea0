#!/usr/bin/env bash
# scripts/setup.sh — install what oxblob needs on Debian 12 (run as root). Idempotent: packages
# already installed are left alone, and apt-get runs only when something is missing.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config   # C toolchain for the RocksDB glue and -sys crates
    fio                          # reference benchmark (bench/bdev-vs-fio.sh, FUSE verify tests)
    fuse3 libfuse3-dev           # FUSE mount
    librocksdb-dev rocksdb-tools # RocksDB headers and db_bench for the plugin
    qemu-utils libnbd-bin nbdkit # NBD clients and reference server
    jq util-linux                # scripts; losetup, fallocate
)

log() { echo "setup: $*"; }

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg -s "$p" 2>/dev/null || true)
    if [[ $status != *"Status: install ok installed"* ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    SUDO=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || { log "need root (or sudo) to install packages" >&2; exit 1; }
        SUDO=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update </dev/null
    "${SUDO[@]}" apt-get install -y "${missing[@]}" </dev/null
else
    log "all ${#PACKAGES[@]} Debian packages present"
fi

if ! command -v cargo >/dev/null; then
    log "cargo not found: install a stable Rust toolchain (1.85 or newer) first" >&2
    exit 1
fi

if cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest present"
else
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest </dev/null
fi

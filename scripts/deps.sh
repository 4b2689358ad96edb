#!/usr/bin/env bash
# Install what building and testing need, on a fresh Debian machine (as root). Idempotent and
# quick when everything is already there.
set -euo pipefail

packages=(
    build-essential pkg-config       # cc for ring
    python3-grpcio python3-grpc-tools # wire-compatibility test with a gRPC stack not ours
    util-linux passwd procps         # setpriv, useradd, ps
    systemd                          # systemd-socket-activate, systemd-analyze, busctl
    dbus polkitd                     # the helper's tests: a real system bus and polkitd
    man-db                           # the man page tests read the generated pages with man
    fish                             # the fish completion test runs fish's own completion
    libfaketime                      # a daemon whose clock is set back while it runs
    strace                           # what the daemon syncs before it acknowledges a change
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps: missing packages ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "deps: cargo not found; install a Rust toolchain (rustup) >= 1.88" >&2
    exit 1
fi

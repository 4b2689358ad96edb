#!/usr/bin/env bash
# Performance figures of the multipass service, each against a floor measured in the same run
# (docs/PERFORMANCE.md says what each one means and records the latest results).
#
#   scripts/bench.sh            the full benchmark: release build, a few minutes on 2 cores
#   scripts/bench.sh --smoke    seconds, with the debug build (as scripts/test.sh leaves it):
#                               fails if the harness breaks, never on a missed target
#   scripts/bench.sh --only latency,connect,cli,cold,throughput,scale,passphrase
#
# Needs systemd-socket-activate (package systemd) for the cold-start figure. Root is not needed:
# the bench trusts its own client certificate before starting the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
profile=release
for arg in "$@"; do
    [[ $arg == --smoke ]] && profile=debug
done

if [[ $profile == release ]]; then
    cargo build --release --workspace --locked
else
    # A no-op after scripts/test.sh's own `cargo build --workspace`.
    cargo build --workspace --locked --quiet
fi

exec "$target_dir/$profile/multipass-bench" "$@"

#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the process tests with real users and
# real sockets (they need root; under CI=true they fail rather than skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

# A clean run gains nothing from incremental compilation, and its files cost gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
disk() { echo "   disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free, target/ $(du -sh target 2>/dev/null | cut -f1)"; }

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build"
cargo build --workspace --locked

disk
echo "== model check of the admission protocol: states explored, each property, broken variants caught"
model_tests=(the_admission_protocol_holds_in_every_interleaving
    deciding_the_first_client_outside_the_lock_is_caught setting_the_socket_from_the_write_is_caught
    setting_the_socket_from_a_stale_read_is_caught)
cargo test --workspace --locked --test admission_model -- --nocapture --test-threads=1
echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}" \
    $(printf -- '--skip %s ' "${model_tests[@]}")

echo "== the process tests as an unprivileged user: root-only tests ignored, never passed"
./scripts/unprivileged-tests.sh

disk
# The parsers that read what others wrote, fuzzed for FUZZ_SECONDS each (default 60; longer by
# hand: scripts/fuzz.sh 3600).
echo "== fuzz"
./scripts/fuzz.sh "${FUZZ_SECONDS:-60}"

disk
echo "== benchmark smoke run (the harness must run; its timings are not judged here)"
./scripts/bench.sh --smoke

disk
echo "== Debian packages (lintian-clean) and system tests under real systemd"
./scripts/build-deb.sh
./tests/system/run.sh
disk

#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the process tests with real users and
# real sockets (they need root; under CI=true they fail rather than skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build"
cargo build --workspace --locked

echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
./scripts/bench.sh --smoke # the benchmark harness still runs; its timings are not judged here

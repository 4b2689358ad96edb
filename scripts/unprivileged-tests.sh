#!/usr/bin/env bash
# Checks that the process tests say what they ran: run by an unprivileged user, every root-only
# test (kind `[root]`) is reported ignored, none passed; with CI=true it fails instead. Needs root
# (to switch to the user `nobody`) and the test binaries built (`cargo test --workspace --no-run`).
set -euo pipefail
cd "$(dirname "$0")/.."

user="${UNPRIVILEGED_USER:-nobody}"
if [[ $(id -u) -ne 0 ]]; then
    echo "unprivileged-tests: run as root (it runs the tests as $user)" >&2
    exit 1
fi

# The process tests' executables, from cargo itself rather than guessed from file names.
mapfile -t binaries < <(
    cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
        grep '#multipass-system-tests@' |
        grep '"kind":\["test"\]' |
        grep -o '"executable":"[^"]*"' |
        sed 's/^"executable":"//; s/"$//' || true
)
if ((${#binaries[@]} == 0)); then
    echo "unprivileged-tests: no process-test executables found" >&2
    exit 1
fi

# A copy the user can read, wherever the build directory lives.
scratch=$(mktemp -d /tmp/unprivileged-tests.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
chmod 0755 "$scratch"

as_user() { (cd "$scratch" && runuser -u "$user" -- env -u CI "$@"); }

failures=0 total_root=0 total_files=0
for binary in "${binaries[@]}"; do
    name=$(basename "$binary" | sed 's/-[0-9a-f]*$//')
    copy="$scratch/$name"
    install -m 0755 "$binary" "$copy"
    root_tests=$(as_user "$copy" --list | grep -c '^\[root\] .*: test$' || true)
    if ((root_tests == 0)); then
        rm -f "$copy"
        continue
    fi
    total_files=$((total_files + 1)) total_root=$((total_root + root_tests))
    # `[root]` selects exactly the root-only tests (libtest-mimic matches the kind too).
    out=$(as_user "$copy" '[root]' 2>&1) || true
    expected="test result: ok. 0 passed; 0 failed; $root_tests ignored;"
    if ! grep -qF "$expected" <<<"$out"; then
        echo "FAIL: $name as $user: expected '$expected'" >&2
        echo "$out" >&2
        failures=$((failures + 1))
    fi
    # Under CI=true the same tests fail rather than skip.
    if out=$(cd "$scratch" && runuser -u "$user" -- env CI=true "$copy" '[root]' 2>&1); then
        echo "FAIL: $name as $user with CI=true exited 0" >&2
        echo "$out" >&2
        failures=$((failures + 1))
    elif ! grep -qF "0 passed; $root_tests failed; 0 ignored;" <<<"$out"; then
        echo "FAIL: $name as $user with CI=true: expected all $root_tests to fail" >&2
        echo "$out" >&2
        failures=$((failures + 1))
    fi
    rm -f "$copy"
done

echo "unprivileged-tests: as $user, $total_root root-only tests in $total_files files: ignored" \
    "(0 passed); with CI=true: failed"
if ((failures)); then
    echo "unprivileged-tests: $failures check(s) failed" >&2
    exit 1
fi

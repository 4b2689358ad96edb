#!/usr/bin/env bash
# Fuzz the parsers that read what others wrote: the trust store, the settings file,
# stored passphrase hashes, the certificate check the helper applies to a caller's input, and the
# enrollment-token file with the token a client presents.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s each, all five)
#
# FUZZ_JOBS targets run at once (default 2, one per core of the CI machine). Needs cargo-fuzz
# (installed here from crates.io if missing) and libFuzzer's nightly compiler flags, which the
# stable toolchain accepts with RUSTC_BOOTSTRAP=1. Each target starts from the seeds in
# fuzz/seeds/ (copied: the checked-in seeds stay as they are; the growing corpus lives in
# fuzz/target/corpus/) with the dictionaries in fuzz/dict/. A crash or a failed property stops
# the script with the reproducer's path (fuzz/artifacts/TARGET/); `cargo fuzz run TARGET FILE`
# replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(trust_store settings passphrase_hash single_certificate token_file)
fi
jobs="${FUZZ_JOBS:-2}"

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo install cargo-fuzz"
    start=$(date +%s)
    cargo install cargo-fuzz --locked
    echo "   installed in $(($(date +%s) - start)) s"
fi

dict_of() {
    case "$1" in
        trust_store | single_certificate) echo fuzz/dict/pem.dict ;;
        settings | passphrase_hash) echo fuzz/dict/ini.dict ;;
        token_file) echo fuzz/dict/tokens.dict ;;
    esac
}

echo "== cargo fuzz build"
start=$(date +%s)
cargo fuzz build --release
echo "   built in $(($(date +%s) - start)) s"

# One target: its log in fuzz/target/fuzz-TARGET.log, its exit status in .status.
run_one() {
    local target="$1" corpus="fuzz/target/corpus/$1" log="fuzz/target/fuzz-$1.log"
    mkdir -p "$corpus"
    cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
    local status=0
    cargo fuzz run --release "$target" "$corpus" -- \
        -max_total_time="$seconds" -dict="$(dict_of "$target")" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    echo "$status" >"$log.status"
}

echo "== cargo fuzz run: ${targets[*]} (${seconds} s each, ${jobs} at a time)"
start=$(date +%s)
running=0
for target in "${targets[@]}"; do
    run_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
echo "   ran in $(($(date +%s) - start)) s"
# The token_file target's scratch files (one directory per fuzzer process).
rm -rf /dev/shm/multipass-fuzz-tokens-* "${TMPDIR:-/tmp}"/multipass-fuzz-tokens-*

failed=0
for target in "${targets[@]}"; do
    log="fuzz/target/fuzz-$target.log"
    status=$(cat "$log.status" 2>/dev/null || echo 1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
    echo "   $target: exit $status, ${runs:-?} runs, peak RSS ${rss:-?} MB, corpus $(ls "fuzz/target/corpus/$target" | wc -l) inputs"
    if [ "$status" -ne 0 ]; then
        failed=1
        grep -A30 'panicked\|ERROR: libFuzzer' "$log" | head -40 >&2 || tail -40 "$log" >&2
        echo "fuzz target $target failed; reproducer in fuzz/artifacts/$target/ (log: $log)" >&2
    fi
done
exit "$failed"

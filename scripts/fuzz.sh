#!/usr/bin/env bash
# Fuzz the parsers that read what others wrote (issue 7): the trust store, the settings file,
# stored passphrase hashes, and the certificate check the helper applies to a caller's input.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s each, all four)
#
# Needs cargo-fuzz (installed here if missing, from crates.io) and libFuzzer's nightly compiler
# flags, which the stable toolchain accepts with RUSTC_BOOTSTRAP=1. Each target starts from the
# seeds in fuzz/seeds/ (copied, so the checked-in seeds stay as they are) and the dictionaries in
# fuzz/dict/. A crash or a failed property stops the script with the reproducer's path
# (fuzz/artifacts/TARGET/); `cargo fuzz run TARGET FILE` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(trust_store settings passphrase_hash single_certificate)
fi

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo install cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

dict_of() {
    case "$1" in
        trust_store | single_certificate) echo fuzz/dict/pem.dict ;;
        settings | passphrase_hash) echo fuzz/dict/ini.dict ;;
    esac
}

echo "== cargo fuzz build"
cargo fuzz build --release

for target in "${targets[@]}"; do
    corpus="fuzz/target/corpus/$target"
    mkdir -p "$corpus"
    cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
    echo "== cargo fuzz run $target (${seconds} s)"
    log="fuzz/target/fuzz-$target.log"
    start=$(date +%s)
    set +e
    cargo fuzz run --release "$target" "$corpus" -- \
        -max_total_time="$seconds" -dict="$(dict_of "$target")" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|thread .* panicked)|Test unit written' "$log" || true
    echo "   $target: $(( $(date +%s) - start )) s, exit $status, corpus $(ls "$corpus" | wc -l) inputs"
    if [ "$status" -ne 0 ]; then
        grep -A30 'panicked' "$log" | head -40 >&2 || tail -40 "$log" >&2
        echo "fuzz target $target failed; reproducer in fuzz/artifacts/$target/ (log: $log)" >&2
        exit "$status"
    fi
done

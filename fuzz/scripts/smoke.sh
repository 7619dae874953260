#!/usr/bin/env bash
# Fuzz smoke test for CI: builds every cargo-fuzz target and runs each for a few seconds, starting
# from its committed seeds and saved regressions. Fails on any crash, panic, leak or hang.
#
#   fuzz/scripts/smoke.sh [TOTAL_SECONDS]    (default 180, shared equally by the targets)
#
# Cost: about 3 minutes to build on 2 cores (once cargo-fuzz is installed, itself about a minute),
# then TOTAL_SECONDS in all, whatever the number of targets listed by `cargo fuzz list`.
set -euo pipefail

total="${1:-180}"
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$fuzz_dir"

# cargo-fuzz passes nightly-only flags (-Zsanitizer, ...); this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

mapfile -t targets < <(cargo fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "smoke: no fuzz targets found" >&2
    exit 1
fi

secs=$(( total / ${#targets[@]} ))
(( secs >= 5 )) || secs=5

echo "smoke: building ${targets[*]} (then ${secs}s each)"
cargo fuzz build

log_dir="$(mktemp -d)"
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "regressions/$t"
    echo "smoke: running $t for ${secs}s"
    # New inputs go to corpus/$t (git keeps only seed-*); regressions/$t is replayed read-only.
    # -timeout turns a hang on one input into a failure instead of a stalled CI job.
    if cargo fuzz run "$t" "corpus/$t" "regressions/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log_dir/$t.log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log_dir/$t.log" || true
        grep -E '^#[0-9]+' "$log_dir/$t.log" | tail -n 1 || true
    else
        cat "$log_dir/$t.log"
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "smoke: FAILED: ${failed[*]} (crash inputs are under fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "smoke: ${#targets[@]} passed, 0 failed"

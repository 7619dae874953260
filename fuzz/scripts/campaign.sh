#!/usr/bin/env bash
# Long fuzz campaign: runs each target (or the ones named) for SECONDS, one after another, from its
# corpus and regressions, and prints one markdown row per target for the table in fuzz/README.md.
#
#   fuzz/scripts/campaign.sh SECONDS [TARGET...]     logs go to fuzz/campaign-logs/ (git-ignored)
set -euo pipefail

secs="${1:?usage: campaign.sh SECONDS [TARGET...]}"
shift
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$fuzz_dir"
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
cargo fuzz build
logs="$fuzz_dir/campaign-logs"
mkdir -p "$logs"

for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "regressions/$t"
    start_cov="$(cargo fuzz run "$t" "corpus/$t" "regressions/$t" -- -runs=0 2>&1 \
        | grep -oE 'INITED cov: [0-9]+ ft: [0-9]+' | tail -n1 || true)"
    status=ok
    cargo fuzz run "$t" "corpus/$t" "regressions/$t" -- -max_total_time="$secs" -timeout=10 \
        -print_final_stats=1 >"$logs/$t.log" 2>&1 || status=crash
    last="$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -n1)"
    execs="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$logs/$t.log" | grep -oE '[0-9]+$' || echo '?')"
    took="$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$logs/$t.log" | grep -oE '[0-9]+ second' | grep -oE '[0-9]+' || echo "$secs")"
    echo "| \`$t\` | $took | $execs | ${start_cov:-?} | ${last} | $status |"
done

#!/usr/bin/env bash
# Run each test tier (a make target) in turn, keep going after a failure, and
# print one summary.  A tier that skips says so on a line "SKIP <tier>: why".
# Logs: build/logs/<tier>.log.
#
# Usage: tools/run-tiers.sh TIER...
set -uo pipefail

log_dir=build/logs
mkdir -p "$log_dir"

passed=() failed=() skipped=()
summary=()
for tier in "$@"; do
    echo "=== $tier"
    started=$SECONDS
    make --no-print-directory "$tier" 2>&1 | tee "$log_dir/$tier.log"
    status=${PIPESTATUS[0]}
    elapsed=$((SECONDS - started))
    if [ "$status" -ne 0 ]; then
        failed+=("$tier"); outcome=FAILED
    elif grep -q "^SKIP $tier:" "$log_dir/$tier.log"; then
        skipped+=("$tier"); outcome=skipped
    else
        passed+=("$tier"); outcome=passed
    fi
    summary+=("$(printf '%-16s %-8s %5ds' "$tier" "$outcome" "$elapsed")")
done

echo
echo "=== summary (logs in $log_dir/)"
printf '%s\n' "${summary[@]}"
echo "tiers: ${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[ "${#failed[@]}" -eq 0 ]

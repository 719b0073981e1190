#!/usr/bin/env bash
# scripts/demo, the README's first command, run against this build: it must finish, say what it did, and leave
# nothing behind.
#   test_demo.sh BUILD_DIR
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$1
out=$(mktemp -t idevs-demo-test.XXXXXX)
trap 'rm -f "$out"' EXIT
passed=0 failed=0
check() { if eval "$2"; then passed=$((passed + 1)); echo "ok - $1"; else failed=$((failed + 1)); echo "not ok - $1"; fi; }

before=$(ls -d /tmp/idevs-demo.* 2>/dev/null | sort)
IDEVS_DEMO_BUILD=$build timeout 240 bash "$root/scripts/demo" --sales 16 --rate 0 >"$out" 2>&1
status=$?
check "the demo exits 0" '[ "$status" -eq 0 ]'
for step in "1. The operator" "4. mosquitto starts" "5. taxi and messaging verify" "7. Which sales qualified" \
            "8. The bookings taxi stored" "9. The messages messaging queued" "10. The broker's counters" \
            "11. What the broker saw"; do
  check "it shows '$step'" 'grep -qF "$step" "$out"'
done
check "it finds no customer data on the wire, in the log or in the persistence file" \
  '[ "$(grep -c "none found" "$out")" -eq 3 ]'
check "it ends with its summary" 'grep -q "done:.* 16 sales, .* no plaintext crossed the broker" "$out"'
after=$(ls -d /tmp/idevs-demo.* 2>/dev/null | sort)
check "it removed its temporary directory" '[ "$before" = "$after" ]'
[ "$failed" -eq 0 ] || tail -40 "$out" | sed 's/^/    /'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

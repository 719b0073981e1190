#!/usr/bin/env bash
# scripts/demo, the README's first command, run against this build: it must finish, say what it did, and leave
# nothing behind. What it prints is checked against a store database seeded as the demo seeds its own (the same
# seed gives the same sales): rides for the sales of $150.00 or more, points for every sale (its whole dollars),
# each process's counters, and no customer data anywhere it searched.
#   test_demo.sh BUILD_DIR
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/tests/casestudy/lib.sh"
build=$1 sales=16
tmp=$(mktemp -d -t idevs-demo-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out.txt
passed=0 failed=0
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; } # description, shell condition
section() { awk -v head="$1. " 'index($0, head) == 1 { on = 1; next } /^[0-9]+\. / { on = 0 } on' "$out"; } # N
row() { section "$1" | awk -v name="$2" '$1 == name { $1 = ""; print substr($0, 2) }'; } # N NAME: the rest of its row

before=$(ls -d /tmp/idevs-demo.* 2>/dev/null | sort)
IDEVS_DEMO_BUILD=$build timeout 240 bash "$root/scripts/demo" --sales $sales --rate 0 >"$tmp/raw.txt" 2>&1
status=$?
sed 's/\x1b\[[0-9;]*m//g' "$tmp/raw.txt" >"$out" # without its colours
check "the demo exits 0" '[ "$status" -eq 0 ]'
for step in "1. The operator" "4. mosquitto starts" "5. taxi and messaging verify" "7. Which sales qualified" \
            "8. The bookings taxi stored" "9. The messages messaging queued" "10. The awards points stored" \
            "11. The broker's counters" "12. What the broker saw"; do
  check "it shows '$step'" 'grep -q "^$step" "$out"'
done

# What the demo's store holds, from a database seeded the same way.
"$build/services/store/store" seed --db "$tmp/store.sqlite" --sales $sales >/dev/null
cents="CAST(replace(total, '.', '') AS INTEGER)"
qualifying=$(sqlite3 -readonly "$tmp/store.sqlite" "SELECT count(*) FROM sales WHERE $cents >= 15000")
earning=$(sqlite3 -readonly "$tmp/store.sqlite" "SELECT count(*) FROM sales WHERE $cents >= 100")
ct_points_table "$tmp/store.sqlite" >"$tmp/totals.txt"
customers=$(($(wc -l <"$tmp/totals.txt") - 2))
check "the reference data set has rides to book and points to award" '[ "$qualifying" -gt 0 ] && [ "$earning" -gt 0 ]'

# Both processes on one broker, each certified and verified by its own services.
for p in rewards loyalty; do
  check "the plugin certifies the $p compartment" \
    'grep -q "idevs: '"'$p'"': compartment certified; certificate on '"'idevs/$p/certificate'"'" "$out"'
  measurement=$(section 3 | awk -v p="$p" '$1 == p { print $2 }')
  check "$p's certificate carries the measurement the demo expects for it" \
    '[ -n "$measurement" ] && section 4 | grep -A4 "^    certificate of /CN=$p$" | grep -qx "      measurement: $measurement"'
done
check "two plugin_opt_descriptor lines, one broker" '[ "$(grep -c "^    plugin_opt_descriptor .*/\(rewards\|loyalty\)\.json$" "$out")" -eq 2 ]'
check "taxi and messaging verify rewards, points verifies loyalty" \
  'grep -q "^    taxi: verified the compartment of '"'rewards'"'" "$out" &&
   grep -q "^    messaging: verified the compartment of '"'rewards'"'" "$out" &&
   grep -q "^    points: verified the compartment of '"'loyalty'"'" "$out"'
check "the store verifies both and publishes each sale to both" \
  '[ "$(section 6 | grep -c "^    verified the compartment of '"'"'\(rewards\|loyalty\)'"'"'")" -eq 2 ] &&
   section 6 | grep -qE "^    published S-[0-9]+ total [0-9.]+ rewards [0-9a-f-]{36} loyalty [0-9a-f-]{36}$"'

# rewards as before: a ride and a confirmation for each qualifying sale.
check "$qualifying of $sales sales qualify for a ride, all $earning of \$1.00 or more earn points" \
  'section 7 | grep -q "^    \.\.\. $qualifying of $sales sales qualify for a ride; $earning earn points$"'
check "taxi booked every qualifying sale" 'grep -q "^8\. .*($qualifying of $qualifying)$" "$out"'
check "messaging queued a confirmation for each" 'grep -q "^9\. .*($qualifying of $qualifying)$" "$out"'

# loyalty: an award per sale, its whole dollars, and each customer's total.
check "points stored an award for every sale of \$1.00 or more" 'grep -q "^10\. .*($earning of $earning)" "$out"'
section 10 | awk -F '│' 'NF == 5 && $2 ~ /S-/ { gsub(/ /, ""); print $2, $3, $4 }' >"$tmp/awards.txt"
sqlite3 -readonly -separator ' ' "$tmp/store.sqlite" "SELECT sale_id, customer_id, $cents / 100 FROM sales" >"$tmp/expected-awards.txt"
check "the awards shown are ids and points only, each its sale's customer and whole dollars" \
  'section 10 | grep -qE "│ +sale_id +│ +customer_id +│ +points +│" && [ -s "$tmp/awards.txt" ] &&
   ! grep -vxFf "$tmp/expected-awards.txt" "$tmp/awards.txt" >/dev/null'
section 10 | sed -n 's/^    \(customer \|C-\|total (\)/\1/p' >"$tmp/shown-totals.txt"
check "points totals: its header and sum as the store's database says, every customer shown right" \
  '[ "$(head -n 1 "$tmp/shown-totals.txt")" = "$(head -n 1 "$tmp/totals.txt")" ] &&
   [ "$(tail -n 1 "$tmp/shown-totals.txt")" = "$(tail -n 1 "$tmp/totals.txt")" ] &&
   [ "$(wc -l <"$tmp/shown-totals.txt")" -ge 3 ] && ! grep -vxFf "$tmp/totals.txt" "$tmp/shown-totals.txt" >/dev/null'
check "the demo checked every award and total against its store's database" \
  'section 10 | grep -q "against the store'"'"'s database: $earning of $earning awards .*; $customers of $customers customers'"'"' totals are right;"'

# The counters of each process and their totals: sales and ride responses in, rides, confirmations and awards out.
expect_row() { # name rewards loyalty totals
  check "counter $1: rewards $2, loyalty $3, totals $4" "[ \"\$(row 11 $1)\" = '$2 $3 $4' ]"
}
check "the counters have a column per process and the totals" 'section 11 | grep -qE "^ +rewards +loyalty +totals$"'
for name in received routed done/ok; do
  expect_row "$name" $((sales + qualifying)) $sales $((2 * sales + qualifying))
done
expect_row emitted $((2 * qualifying)) "$earning" $((2 * qualifying + earning))
expect_row done/failed 0 0 0
expect_row restarts 0 0 0
expect_row processes - - 2
check "nothing was rejected" '! section 11 | grep -q "^    rejected/"'

check "it finds no customer data on the wire, in the log, in the persistence file or in the points database" \
  '[ "$(section 12 | grep -c "none found$")" -ge 4 ] && section 12 | grep -q "^    the points database .*none found$" &&
   ! section 12 | grep -q FOUND'
total_points=$(tail -n 1 "$tmp/totals.txt" | awk '{ print $(NF - 1) }')
check "it ends with its summary" \
  'grep -q "^done: $sales sales, $qualifying qualified, $qualifying rides booked, $qualifying confirmations queued; $earning awards, $total_points points; no plaintext crossed the broker\.$" "$out"'
after=$(ls -d /tmp/idevs-demo.* 2>/dev/null | sort)
check "it removed its temporary directory" '[ "$before" = "$after" ]'
[ "$failed" -eq 0 ] || tail -60 "$out" | sed 's/^/    /'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# The loyalty process against real brokers (docs/CASESTUDY.md, "The second process: loyalty"), with the helpers
# scripts/demo uses (scripts/lib/casestudy.sh):
#   1. a mosquitto with mosquitto_idevs.so and ONE process, loyalty, behind a recording relay; the points
#      service verifies it; the store publishes SALES sales to it; the points database holds exactly the
#      expected total per customer and nothing of the customers but their ids; the same sales published again
#      are stored once;
#   2. a mosquitto with both processes, loyalty and rewards: one store run publishes each sale to both, with
#      each process's own policy after its --process, marks a sale published only when both acknowledged it,
#      and publishes a sale again only to the process that lacks it.
#   test_loyalty.sh BUILD_DIR [SALES]
set -u
here=$(cd "$(dirname "$0")" && pwd)
IDEVS_ROOT=$(cd "$here/../.." && pwd)
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
source "$here/lib.sh"
build=$1 sales=${2:-60} fanout_sales=20
ct_begin loyalty
equal() { # what, got, expected
  if [ "$2" = "$3" ]; then ok "$1"; else
    printf 'got:\n%s\nexpected:\n%s\n' "$2" "$3" >"$work/equal.txt"; not_ok "$1" "$work/equal.txt"; fi
}
wait_verified() { wait_for_regex "$CS_WORK/$1.log" '^verified' 150; } # name: its log has the "verified" line, within 15 s
counter() { sed -n "s|^$1 ||p" "$2"; } # name, counters file

# Each customer's points as the store's own database says they should be: whole units of each total.
expected_totals() { # store database
  sqlite3 -readonly "$1" "SELECT customer_id || ' ' || sum(CAST(replace(total, '.', '') AS INTEGER) / 100) ||
    ' points from ' || count(*) || ' sales' FROM sales WHERE CAST(replace(total, '.', '') AS INTEGER) >= 100
    GROUP BY customer_id ORDER BY customer_id"
}
totals_in() { # points database
  sqlite3 -readonly "$1" "SELECT customer_id || ' ' || points || ' points from ' || awards || ' sales'
    FROM totals ORDER BY customer_id"
}

cs_init "$build" "$work" || bail "the case study's programs are built"
CS_LOGIC=$CS_BUILD/services/loyalty/libloyalty.so CS_DESCRIPTOR=$work/loyalty.json CS_PROCESS=loyalty
POINTS=$CS_POINTS
[ -e "$CS_LOGIC" ] && [ -e "$POINTS" ] || bail "libloyalty.so and points are built"

# ---- 1. a broker with one process: loyalty ----
cs_make_pki || bail "the operator makes the PKI"
"$CS_CA" service "$CS_PKI" points >"$work/ca.log" 2>&1 && ok "idevs-ca makes the points identity" ||
  not_ok "idevs-ca makes the points identity" "$work/ca.log"
"$CS_STORE" seed --db "$work/store.sqlite" --sales "$sales" >"$work/seed.log" 2>&1 ||
  bail "the store seeds its database" "$work/seed.log"
"$IDEVS_ROOT/services/loyalty/make_descriptor" --pki "$CS_PKI" --logic "$CS_LOGIC" --ca-tool "$CS_CA" \
  --out "$CS_DESCRIPTOR" 2>"$work/descriptor.err" || bail "the loyalty descriptor is written" "$work/descriptor.err"
cs_write_conf
cs_start_broker && ok "a broker starts with the loyalty process and retains its certificate" ||
  { cat "$work/broker/stdout.log" >>"$work/broker/mosquitto.log" 2>/dev/null; bail "the broker starts" "$work/broker/mosquitto.log"; }
"$CS_CA" show "$work/certificate.pem" | grep -q "measurement: $(cs_expected_measurement)" &&
  ok "its measurement is the one idevs-ca measure computes for libloyalty.so and its descriptor" ||
  not_ok "its measurement is the one idevs-ca measure computes"
cs_start_tap && ok "the recording relay runs" || bail "the recording relay runs"
loyalty_port=$CS_TAP_PORT
mapfile -t points_conn < <(cs_conn points)
mapfile -t store_loyalty_conn < <(cs_conn store)

cs_start_service points "$POINTS" run --db "$work/points.sqlite" "${points_conn[@]}"
points_pid=${CS_SERVICE_PIDS[-1]}
wait_verified points && ok "points verifies the loyalty compartment and subscribes" ||
  not_ok "points verifies the loyalty compartment and subscribes" "$work/points.log"

if timeout 120 "$CS_STORE" run --db "$work/store.sqlite" "${store_loyalty_conn[@]}" >"$work/store.log" 2>&1; then
  ok "the store publishes its $sales sales to loyalty"
else
  not_ok "the store publishes its $sales sales to loyalty" "$work/store.log"
fi
equal "it prints one line per sale with its message id" "$(grep -cE '^published S-[0-9]+ total [0-9.]+ message [0-9a-f-]{36}$' "$work/store.log")" "$sales"
equal "it records each publication to loyalty" \
  "$(sqlite3 -readonly "$work/store.sqlite" "SELECT count(*) FROM publications p JOIN sales s USING (sale_id)
     WHERE p.process = 'loyalty' AND p.message_id = s.message_id AND s.published_at IS NOT NULL")" "$sales"
expected=$(expected_totals "$work/store.sqlite")
awards=$(sqlite3 -readonly "$work/store.sqlite" "SELECT count(*) FROM sales WHERE CAST(replace(total, '.', '') AS INTEGER) >= 100")
got=$(cs_wait_for "$work/points.sqlite" "SELECT count(*) FROM awards" "$awards" 60)
equal "points stored one award per sale" "$got" "$awards"
equal "each customer's total is the sum of the whole units of their sales" "$(totals_in "$work/points.sqlite")" "$expected"
equal "each award is the whole units of its sale's total, for its sale's customer" \
  "$(sqlite3 -readonly "$work/points.sqlite" "ATTACH 'file:$work/store.sqlite?mode=ro' AS store;
     SELECT count(*) FROM awards a JOIN store.sales s USING (sale_id) WHERE a.customer_id = s.customer_id
       AND a.points = CAST(replace(s.total, '.', '') AS INTEGER) / 100 AND a.provenance = s.message_id")" "$awards"
equal "points totals prints the same totals and their sum" "$("$POINTS" totals --db "$work/points.sqlite")" \
  "$(ct_points_table "$work/store.sqlite")"
first=$(sqlite3 -readonly "$work/store.sqlite" "SELECT customer_id FROM sales ORDER BY sale_id LIMIT 1")
equal "points totals --customer prints one customer's" \
  "$("$POINTS" totals --db "$work/points.sqlite" --customer "$first")" "$(ct_points_table "$work/store.sqlite" "$first")"

# Nothing is published twice; a sale the store publishes again (a new envelope) is stored once.
"$CS_STORE" run --db "$work/store.sqlite" "${store_loyalty_conn[@]}" >"$work/store-again.log" 2>&1
equal "a second store run finds nothing left to publish" "$(tail -n 1 "$work/store-again.log")" \
  "no unpublished sales in $work/store.sqlite"
again="'S-000001', 'S-000002', 'S-000003'"
forget_three() {
  sqlite3 "$work/store.sqlite" "UPDATE sales SET published_at = NULL WHERE sale_id IN ($again);
    DELETE FROM publications WHERE sale_id IN ($again)"
}
# The store forgets it published three sales, its outbox does not: they were receipted, nothing goes again.
first_ids=$(grep -E '^published S-00000[123] ' "$work/store.log" | awk '{print $6}')
forget_three
"$CS_STORE" run --db "$work/store.sqlite" "${store_loyalty_conn[@]}" >"$work/store-outbox.log" 2>&1
equal "the store marks the three again from its outbox's receipts, with their first message ids" \
  "$(grep '^published' "$work/store-outbox.log" | awk '{print $6}')" "$first_ids"
sleep 1.5 # one more metrics interval
equal "the compartment received nothing more" "$(counter received <(cs_counters))" "$sales"
# Its outbox lost too: a new stream, new envelopes; points holds each sale once all the same.
forget_three
rm -f "$work/store.sqlite.loyalty.outbox" "$work/store.sqlite.loyalty.outbox-wal" "$work/store.sqlite.loyalty.outbox-shm"
"$CS_STORE" run --db "$work/store.sqlite" "${store_loyalty_conn[@]}" >"$work/store-again.log" 2>&1
equal "the store publishes three sales again" "$(grep -c '^published' "$work/store-again.log")" 3
for _ in $(seq 100); do [ "$(grep -c '^already awarded' "$work/points.log")" -ge 3 ] && break; sleep 0.1; done
equal "points stores them once: 'already awarded'" "$(grep -c '^already awarded' "$work/points.log")" 3
equal "the totals are unchanged" "$(totals_in "$work/points.sqlite")" "$expected"
sleep 1.5 # one more metrics interval
cs_counters >"$work/counters.txt"
equal "the broker counts every sale in and every award out" \
  "$(counter received "$work/counters.txt") $(counter emitted "$work/counters.txt")" \
  "$((sales + 3)) $((awards + 3))"
equal "nothing was rejected" "$(grep '^rejected' "$work/counters.txt" | awk '$2 != 0' | wc -l)" 0

# ---- 2. loyalty next to rewards on one broker: one store run publishes each sale to both ----
cs_stop_pid "$points_pid" # the first points database is done; this part gets its own
grep -q "^points: $((awards + 3)) messages, $awards awarded, 3 already awarded, 0 refused" "$work/points.log" &&
  ok "points stops cleanly and counts what it did" || not_ok "points stops cleanly and counts what it did" "$work/points.log"
cs_stop_pid "$CS_TAP_PID"; CS_TAP_PID=
cs_stop_pid "$CS_BROKER_PID" # it writes its persistence file, searched below
CS_WORK=$work/both CS_PORT= CS_TAP_PORT= CS_BROKER_PID=
mkdir -p "$CS_WORK"
rewards_descriptor=$CS_WORK/rewards.json
"$IDEVS_ROOT/services/rewards/make_descriptor" --pki "$CS_PKI" --logic "$CS_BUILD/services/rewards/librewards.so" \
  --ca-tool "$CS_CA" --out "$rewards_descriptor" 2>"$work/descriptor.err" ||
  bail "the rewards descriptor is written" "$work/descriptor.err"
cs_write_conf "plugin_opt_descriptor $rewards_descriptor" # a second process under the one plugin line
cs_start_broker && timeout 10 mosquitto_sub -p "$CS_PORT" -t idevs/rewards/certificate -C 1 -W 10 >/dev/null &&
  ok "a broker starts with loyalty and rewards and retains both certificates" ||
  bail "the broker with both processes starts" "$CS_WORK/broker/mosquitto.log"
mapfile -t points_conn < <(cs_conn points)
mapfile -t store_loyalty_conn < <(cs_conn store)
CS_PROCESS=rewards CS_LOGIC=$CS_BUILD/services/rewards/librewards.so CS_DESCRIPTOR=$rewards_descriptor
mapfile -t store_rewards_conn < <(cs_conn store) # measurement and descriptor of rewards: its own policy
cs_start_service points2 "$POINTS" run --db "$work/points2.sqlite" "${points_conn[@]}"
wait_verified points2 || not_ok "points verifies the loyalty compartment of this broker" "$CS_WORK/points2.log"

"$CS_STORE" seed --db "$work/store2.sqlite" --sales "$fanout_sales" --seed 2 >/dev/null
# cs_conn prints --pki and --name before --process: shared by both; the rest after each --process is its own.
fanout=("$CS_STORE" run --db "$work/store2.sqlite" "${store_rewards_conn[@]}" "${store_loyalty_conn[@]}")
if timeout 120 "${fanout[@]}" >"$work/store2.log" 2>&1; then
  ok "one store run publishes $fanout_sales sales to rewards and loyalty"
else
  not_ok "one store run publishes $fanout_sales sales to rewards and loyalty" "$work/store2.log"
fi
equal "it verifies both compartments" "$(grep -c "^verified the compartment of '\(rewards\|loyalty\)'" "$work/store2.log")" 2
equal "it prints each sale with both message ids" \
  "$(grep -cE '^published S-[0-9]+ total [0-9.]+ rewards [0-9a-f-]{36} loyalty [0-9a-f-]{36}$' "$work/store2.log")" "$fanout_sales"
equal "each sale has a publication per process, and its message_id is rewards'" \
  "$(sqlite3 -readonly "$work/store2.sqlite" "SELECT p.process, count(*) FROM publications p JOIN sales s USING (sale_id)
     WHERE s.published_at IS NOT NULL AND (p.process = 'loyalty' OR p.message_id = s.message_id)
     GROUP BY p.process ORDER BY p.process")" "$(printf 'loyalty|%s\nrewards|%s' "$fanout_sales" "$fanout_sales")"
expected2=$(expected_totals "$work/store2.sqlite")
awards2=$(sqlite3 -readonly "$work/store2.sqlite" "SELECT count(*) FROM sales WHERE CAST(replace(total, '.', '') AS INTEGER) >= 100")
cs_wait_for "$work/points2.sqlite" "SELECT count(*) FROM awards" "$awards2" 60 >/dev/null
equal "points holds the expected totals of the second store" "$(totals_in "$work/points2.sqlite")" "$expected2"

# Loyalty's publications of two sales are lost: the next run publishes those to loyalty only.
lost="'S-000004', 'S-000005'"
sqlite3 "$work/store2.sqlite" "UPDATE sales SET published_at = NULL WHERE sale_id IN ($lost);
  DELETE FROM publications WHERE process = 'loyalty' AND sale_id IN ($lost)"
rm -f "$work/store2.sqlite.loyalty.outbox" "$work/store2.sqlite.loyalty.outbox-wal" "$work/store2.sqlite.loyalty.outbox-shm"
before=$(grep -E '^published S-00000[45] ' "$work/store2.log" | awk '{print $6}')
"${fanout[@]}" >"$work/store2-again.log" 2>&1
equal "a second run publishes the two sales again" "$(grep -c '^published' "$work/store2-again.log")" 2
equal "with the rewards envelopes of the first run: rewards gets nothing twice" \
  "$(grep '^published' "$work/store2-again.log" | awk '{print $6}')" "$before"
for _ in $(seq 100); do [ "$(grep -c '^already awarded' "$CS_WORK/points2.log")" -ge 2 ] && break; sleep 0.1; done
equal "points stores them once" "$(grep -c '^already awarded' "$CS_WORK/points2.log")" 2
equal "the totals are unchanged" "$(totals_in "$work/points2.sqlite")" "$expected2"
sleep 1.5
equal "the rewards compartment received each sale once" "$(counter received <(cs_counters))" "$fanout_sales"

# ---- what the points service and the brokers hold ----
cs_stop_all # the broker writes its persistence file on the way out
ct_private_dbs points points2
python3 - "$IDEVS_ROOT" "$work" >"$work/leaks.txt" 2>&1 <<'PY'
import os, sqlite3, sys
sys.path.insert(0, os.path.join(sys.argv[1], "scripts", "lib"))
import leak_search
work = sys.argv[2]
secrets = leak_search.customer_secrets(work)  # store.sqlite
store2 = sqlite3.connect(f"file:{work}/store2.sqlite?mode=ro", uri=True)
for row in store2.execute("SELECT name, phone, address FROM customers"):
    secrets.update(row)
print(f"{'ok' if len(secrets) >= 30 else 'not ok'} - the stores' customers give {len(secrets)} names, phone numbers "
      "and addresses to search for")
for name in ("points.sqlite", "points.sqlite-wal", "points2.sqlite", "points2.sqlite-wal"):
    path = f"{work}/{name}"
    data = open(path, "rb").read() if os.path.exists(path) else b""
    found = sorted(s for s in secrets if s.encode() in data)
    print(f"{'not ok' if found else 'ok'} - no customer name, phone number or address in {name} ({len(data)} bytes)")
for label, size, found in leak_search.search(work, secrets):
    print(f"{'ok' if size and not found else 'not ok'} - no customer name, phone number or address in {label} "
          f"of the loyalty broker ({size} bytes)")
for label, size, found in leak_search.search(work + "/both", secrets):
    if size is not None or "traffic" not in label:  # no recording relay in front of that one
        print(f"{'ok' if size and not found else 'not ok'} - no customer name, phone number or address in {label} "
              f"of the broker with both processes ({size} bytes)")
PY
ct_count "$work/leaks.txt"
ct_end

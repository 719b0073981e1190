#!/usr/bin/env bash
# The case study end to end, as scripts/demo runs it: a real mosquitto with mosquitto_idevs.so and the rewards
# compartment, the store, taxi and messaging services over a recording relay; then the databases, the
# traffic, the broker's log and persistence file, and its counters are checked (check_run.py).
#   test_casestudy.sh BUILD_DIR [SALES]
set -u
here=$(cd "$(dirname "$0")" && pwd)
IDEVS_ROOT=$(cd "$here/../.." && pwd)
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
source "$here/lib.sh"
build=$1 sales=${2:-60}
ct_begin casestudy

cs_init "$build" "$work" || bail "the case study's programs are built"
cs_make_pki || bail "the operator makes the PKI"
"$CS_STORE" seed --db "$work/store.sqlite" --sales "$sales" >"$work/seed.log" 2>&1 || bail "the store seeds its database" "$work/seed.log"
cs_write_descriptor 2>"$work/descriptor.err" || bail "the rewards descriptor is written" "$work/descriptor.err"
cs_write_conf
cs_start_broker && ok "the broker starts with the plugin and retains the compartment's certificate" ||
  { cat "$work/broker/stdout.log" >>"$work/broker/mosquitto.log" 2>/dev/null; bail "the broker starts" "$work/broker/mosquitto.log"; }
if "$CS_CA" show "$work/certificate.pem" | grep -q "measurement: $(cs_expected_measurement)"; then
  ok "its measurement is the one idevs-ca measure computes from the host program, logic and descriptor"
else
  not_ok "its measurement is the one idevs-ca measure computes"
fi
cs_start_tap && ok "the recording relay runs" || bail "the recording relay runs"

mapfile -t taxi_conn < <(cs_conn taxi)
mapfile -t messaging_conn < <(cs_conn messaging)
mapfile -t store_conn < <(cs_conn store)
cs_start_service taxi "$CS_TAXI" --db "$work/taxi.sqlite" "${taxi_conn[@]}"
taxi_pid=${CS_SERVICE_PIDS[-1]}
cs_start_service messaging "$CS_MESSAGING" --db "$work/messaging.sqlite" "${messaging_conn[@]}"
messaging_pid=${CS_SERVICE_PIDS[-1]}
# Requests published before taxi subscribes would reach nobody: the store starts once both have verified.
for name in taxi messaging; do
  for _ in $(seq 150); do grep -q '^verified' "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
  grep -q '^verified' "$work/$name.log" && ok "$name verifies the compartment and subscribes" ||
    not_ok "$name verifies the compartment and subscribes" "$work/$name.log"
done

if timeout 120 "$CS_STORE" run --db "$work/store.sqlite" --rate 0 "${store_conn[@]}" >"$work/store.log" 2>&1; then
  ok "the store verifies the compartment and publishes its $sales sales"
else
  not_ok "the store verifies the compartment and publishes its sales" "$work/store.log"
fi
qualifying=$(sqlite3 -readonly "$work/store.sqlite" \
  "SELECT count(*) FROM sales WHERE CAST(replace(total, '.', '') AS INTEGER) >= 15000")
got=$(cs_wait_for "$work/taxi.sqlite" "SELECT count(*) FROM bookings" "$qualifying" 60)
[ "$got" = "$qualifying" ] && ok "taxi booked $qualifying rides" || not_ok "taxi booked $qualifying rides (got '$got')" "$work/taxi.log"
got=$(cs_wait_for "$work/messaging.sqlite" "SELECT count(*) FROM outbox" "$qualifying" 60)
[ "$got" = "$qualifying" ] && ok "messaging queued $qualifying confirmations" ||
  not_ok "messaging queued $qualifying confirmations (got '$got')" "$work/messaging.log"
sleep 1.5 # one more metrics interval, so the counters include the last deliveries
cs_counters >"$work/counters.txt"

ct_private_dbs store taxi messaging

# The services end cleanly on SIGTERM.
for name in taxi messaging; do
  pid_var=${name}_pid
  kill "${!pid_var}" 2>/dev/null
  status=0
  for _ in $(seq 50); do kill -0 "${!pid_var}" 2>/dev/null || break; sleep 0.1; done
  wait "${!pid_var}" 2>/dev/null || status=$?
  [ "$status" -eq 0 ] && ok "$name stops cleanly on SIGTERM" || not_ok "$name stops cleanly on SIGTERM (status $status)" "$work/$name.log"
done
cs_stop_all # the broker writes its persistence file on the way out

python3 "$here/check_run.py" "$work" "$sales" >"$work/check.out" 2>&1
ct_count "$work/check.out"
ct_end

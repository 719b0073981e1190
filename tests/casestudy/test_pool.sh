#!/usr/bin/env bash
# The case study through a pool: rewards with process.instances 2 on one broker (docs/DEPLOYMENT.md), the run of
# test_casestudy.sh with 200 sales published at 50 a second, one of the two compartments killed with SIGKILL
# about a second into it. Then check_run.py's checks (every qualifying sale booked and confirmed once, nothing
# else), and check_pool.py's: the $SYS counters of the pool, both instances at work in the recording relay's
# streams, each sale's partition its customer's alone; here, that each instance's retained certificate is its
# own (its own evidence) of the same keys, and that no service refused an envelope of the process.
#   test_pool.sh BUILD_DIR [SALES]
set -u
here=$(cd "$(dirname "$0")" && pwd)
IDEVS_ROOT=$(cd "$here/../.." && pwd)
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
source "$here/lib.sh"
build=$1 sales=${2:-200}
ct_begin pool
need_tools pgrep
CS_INSTANCES=2 CT_STORE_RATE=50

# The broker was started by this test: its children running idevs-compartment are this run's instances. One of
# them is killed, once; the launcher starts it again.
ct_during_store() {
  local found
  sleep 1
  mapfile -t found < <(pgrep -P "$CS_BROKER_PID" -x -f idevs-compartment) # the name each instance runs under
  echo "compartments ${found[*]}" >"$work/kill.txt"
  [ ${#found[@]} -gt 0 ] && kill -9 "${found[0]}" || return 0
  echo "killed ${found[0]} with $(sqlite3 -readonly "$work/store.sqlite" \
    "SELECT count(*) FROM sales WHERE published_at IS NOT NULL") of $sales sales published" >>"$work/kill.txt"
}

# Each instance's retained certificate, read while the broker is up.
ct_before_stop() {
  local n
  for n in 0 1; do
    timeout 5 mosquitto_sub -h 127.0.0.1 -p "$CS_PORT" -t "idevs/$CS_PROCESS/instance/$n/certificate" -C 1 -W 2 \
      --retained-only >"$work/instance$n.pem" 2>/dev/null
  done
}

ct_casestudy "$build" "$sales" "$work/streams"

if grep -Eq '^compartments [0-9]+ [0-9]+$' "$work/kill.txt" &&
   grep -Eq "^killed [0-9]+ with [0-9]+ of $sales " "$work/kill.txt" && ! grep -q " with $sales of " "$work/kill.txt"; then
  ok "two compartments ran under the broker, one killed with SIGKILL while the store published ($(tail -1 "$work/kill.txt"))"
else
  not_ok "two compartments ran under the broker; one was killed while the store published" "$work/kill.txt"
fi

python3 "$here/check_run.py" "$work" "$sales" --killed >"$work/check.out" 2>&1
ct_count "$work/check.out"
python3 "$here/check_pool.py" "$work" >"$work/pool.out" 2>&1
ct_count "$work/pool.out"

# What a certificate shows of its keys and of itself (idevs-ca show).
keys() { "$CS_CA" show "$1" | grep -E '^(signing|agreement) key'; }
digest() { "$CS_CA" show "$1" | sed -n 's/^certificate SHA-256: \([0-9a-f]*\).*/\1/p'; }
pin=(--allow-process-backend-insecure --measurement "$(cs_expected_measurement)" --descriptor "$CS_DESCRIPTOR")
for n in 0 1; do
  "$CS_CA" verify --ca "$CS_PKI/ca.crt" "$work/instance$n.pem" "${pin[@]}" >"$work/verify$n.txt" 2>&1 &&
    ok "idevs/rewards/instance/$n/certificate is retained and verifies with the measurement and descriptor pinned" ||
    not_ok "idevs/rewards/instance/$n/certificate is retained and verifies" "$work/verify$n.txt"
done
if [ -n "$(keys "$work/instance0.pem")" ] && [ "$(keys "$work/instance0.pem")" = "$(keys "$work/instance1.pem")" ] &&
   [ "$(digest "$work/instance0.pem")" != "$(digest "$work/instance1.pem")" ]; then
  ok "the two instances' certificates differ (each its own evidence) and certify the same public keys"
else
  { keys "$work/instance0.pem"; digest "$work/instance0.pem"; keys "$work/instance1.pem"; digest "$work/instance1.pem"
  } >"$work/certs.txt" 2>&1
  not_ok "the two instances' certificates differ and certify the same public keys" "$work/certs.txt"
fi

# The services' "refused:" lines (services/common/app.c): a receiver that could not take a second instance would
# refuse its envelopes as cert_digest_mismatch, epoch_conflict or unknown_sender.
refusals=$(grep -h ': refused: ' "$work/taxi.log" "$work/messaging.log" "$work/store.log")
[ -z "$refusals" ] && ok "no service refused an envelope of either instance (no 'refused:' line in their logs)" ||
  { echo "$refusals" >"$work/refusals.txt"; not_ok "no service refused an envelope of either instance" "$work/refusals.txt"; }
ct_end

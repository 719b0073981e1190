#!/usr/bin/env bash
# The compartment's certificate renewed while it runs (enclave-bridge/launcher/certify.c, proto/envelope.c's
# renewal rule, services/lib/verify.c), against a real mosquitto with mosquitto_idevs.so and the echo logic,
# the broker under libfaketime:
#   the broker (whose launcher decides the renewal and signs) reads its wall clock from a faketime timestamp
#   file the test moves 6 days ahead; the compartment (started from a sealed memfd with an empty environment)
#   and the services keep the real clock. A publisher (store) and a subscriber (sink) stay connected through
#   the renewal: the retained certificate becomes a new one for the same keys, with the same notBefore and a
#   later notAfter; both services verify it; a message published before, during and after the renewal each
#   reach the sink; no service starts or accepts a new key epoch for it; the broker logs the renewal and
#   counts it in $SYS/broker/idevs/echo/certificate_renewals; nothing is rejected.
#   test_renewal.sh PLUGIN.so IDEVS_CA IDEVS_COMPARTMENT ECHO_LOGIC.so IDEVS_SUB SERVICE_CLIENT
set -u
plugin=$1 ca_tool=$2 compartment=$3 echo_logic=$4 idevs_sub=$5 service_client=$6
env_tool=
source "$(dirname "$0")/../broker/lib.sh"
broker_no_leaks=1
broker_ready_topic=idevs/echo/certificate
if [ "$asan" -eq 1 ]; then
  # libfaketime and the AddressSanitizer runtime preloaded together hang every program at its start (here even
  # timeout(1)); the renewal runs under ASan in tests/unit/test_launcher.c and test_compartment.c.
  echo "# skipped: the broker under libfaketime with an ASan-built plugin (the two preloads deadlock at start)"
  finish
fi
faketime_lib=
for f in /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 /usr/lib/*/faketime/libfaketime.so.1; do
  [ -e "$f" ] && { faketime_lib=$f; break; }
done
[ -n "$faketime_lib" ] || bail "libfaketime is installed (Debian package libfaketime)"

clock=$work/faketime
echo "+0" >"$clock"
write_conf "$work/broker.conf" "$work/echo.json" "plugin_opt_metrics_interval_s 1"
# The broker's wall clock only: its monotonic clock (keepalives, the launcher's timers) stays real, and the file is
# read again every second.
if start_broker "$work/broker.conf" env "LD_PRELOAD=${preload:+$preload:}$faketime_lib" \
     "FAKETIME_TIMESTAMP_FILE=$clock" FAKETIME_CACHE_DURATION=1 FAKETIME_DONT_FAKE_MONOTONIC=1; then
  ok "the broker starts under libfaketime with the plugin and the echo logic"
else
  bail "the broker starts under libfaketime" "$work/broker.conf.log" "$work/broker.conf.out"
fi
fetch_chain "$work/c0.pem" || bail "the compartment's certificate is retained"
dates() { openssl x509 -in "$1" -noout -"$2" | cut -d= -f2- | xargs -I{} date -u -d {} +%s; }
fingerprint() { openssl x509 -in "$1" -noout -fingerprint -sha256; }
pubkey() { openssl x509 -in "$1" -noout -pubkey; }

common=(-p "$port" --process echo --policy allow-process-backend-insecure --start-timeout 8000)
wait_subscribed() { wait_for_regex "$work/broker.conf.log" "^[0-9]+: $1 [0-2] $2\$" 200; }
background "$work/sink.out" "$work/sink.err" "$idevs_sub" --pki "$pki" --name sink "${common[@]}" -i sink -v \
  -C 3 -W 55
sink_pid=$last_pid
wait_subscribed sink "$out_topic" || bail "the sink verifies the compartment and subscribes" "$work/sink.err"

# The store, driven line by line through a FIFO; its answers in store.out.
mkfifo "$work/store.in"
"$service_client" renewal --pki "$pki" --name store "${common[@]}" -i store <"$work/store.in" >"$work/store.out" \
  2>"$work/store.err" &
store_pid=$!
bg_pids+=("$store_pid")
exec 7>"$work/store.in"
ask() { # COMMAND EXPECTED-REGEX: sends a command; its answer (the next line, within 40 s) matches
  local before _ answer
  before=$(wc -l <"$work/store.out")
  echo "$1" >&7
  for _ in $(seq 400); do
    [ "$(wc -l <"$work/store.out")" -gt "$before" ] && break
    sleep 0.1
  done
  answer=$(sed -n "$((before + 1))p" "$work/store.out")
  grep -qE "$2" <<<"$answer" || { echo "    $1: got '$answer'" >>"$work/store.err"; return 1; }
}
wait_for_line "$work/store.out" started 200 || bail "the store starts" "$work/store.err" "$work/store.out"
check "a message published before the renewal is acknowledged" ask "pub before the renewal" '^published$'

# Six days later, by the broker's clock: two thirds of the default 7 days are past.
echo "+6d" >"$clock"
check "a message published while the renewal is due is acknowledged" ask "pub during the renewal" '^published$'
check "the broker logs the renewal, naming the new notAfter" \
  wait_for_regex "$work/broker.conf.log" "compartment 'echo' .*certificate renewed for the same keys, valid until [0-9T:Z-]+ \(renewal 1\)" 300
check "the store verifies the new certificate" ask "wait-certificates 2" '^certificates 2$'
check "a message published after the renewal is acknowledged" ask "pub after the renewal" '^published$'
ask stats '^certificates ' >/dev/null
check "... the store started one key epoch in all, accepted one of the compartment (its receipts), and verified two certificates" \
  grep -qx "certificates 2 epochs_started 1 epochs_accepted 1 refused 0" "$work/store.out"

fetch_chain "$work/c1.pem" || not_ok "the renewed certificate is retained"
check "the retained certificate is a new one" bash -c "[ '$(fingerprint "$work/c0.pem")' != '$(fingerprint "$work/c1.pem")' ]"
equal "... for the same keys" "$(pubkey "$work/c1.pem")" "$(pubkey "$work/c0.pem")"
equal "... with the same notBefore" "$(dates "$work/c1.pem" startdate)" "$(dates "$work/c0.pem" startdate)"
check "... and a notAfter about 6 days later" \
  test $(( $(dates "$work/c1.pem" enddate) - $(dates "$work/c0.pem" enddate) )) -ge $((6 * 86400 - 600))

wait_pid "$sink_pid" 300
equal "the sink received the three messages, in order" "$(grep -c 'the renewal' "$work/sink.out")" 3
check "... verified two certificates and accepted one key epoch of the compartment, rejecting nothing" \
  grep -q "delivered 3, duplicates 0, rejected 0, certificates verified 2, key epochs accepted 1$" "$work/sink.err"
counters "$work/counters.txt"
equal "\$SYS counts one certificate renewal" "$(counter certificate_renewals "$work/counters.txt")" 1
equal "... no restart" "$(counter restarts "$work/counters.txt")" 0
check "... and no rejection" bash -c "! grep -q '^rejected/' '$work/counters.txt'"
exec 7>&-
wait_pid "$store_pid" 100 || stop_pid "$store_pid" 50
stop_broker
finish

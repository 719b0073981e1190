#!/usr/bin/env bash
# Inputs during the restart backoff (enclave-bridge/launcher/supervise.c), in a real broker with the real
# compartment: the compartment is killed (kill -9) while its restarts cannot succeed (sealing.key made
# group-readable, which the launcher refuses: "could not be started", then a longer backoff each time), so that
# whatever is published meanwhile arrives with no compartment to take it, however fast the machine. 20 sales
# published at QoS 1 then are all queued (queued_while_down 20, queue_depth 20, none dropped), the restart line
# says how many wait; once sealing.key is private again the next restart succeeds and every sale comes out
# exactly once, in order, from a compartment with the same keys.
#   test_backoff.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"

write_conf "$work/backoff.conf" "$work/echo.json" "plugin_opt_metrics_interval_s 1"
log=$work/backoff.conf.log
start_broker "$work/backoff.conf" || bail "the broker starts" "$log"
fetch_chain "$work/chain.pem" || bail "the certificate is retained"
key=$work/state/echo/sealing.key
check "the process's sealing.key is private (600)" test "$(stat -c %a "$key" 2>/dev/null)" = 600

n=20
peer collect --key "$pki/sink.key" --cert "$pki/sink.crt" --from "$work/chain.pem" --topic "$out_topic" \
  --count "$n" --timeout-s 50 >"$work/got" 2>"$work/collect.err" &
collect_pid=$!
bg_pids+=("$collect_pid")
wait_for_line "$work/got" ready 100 || bail "the receiver subscribes" "$work/collect.err"

chmod 640 "$key"
old_pid=$(pgrep -P "$broker_pid" | head -1)
kill -9 "$old_pid"
what="with sealing.key group-readable, the restart fails and is tried again after the backoff"
if wait_for_text "$log" "could not be started" 100; then ok "$what"; else bail "$what" "$log"; fi
check "... naming sealing.key" grep -q "could not be started: .*sealing.key" "$log"
check "store publishes $n sales at QoS 1 while no compartment runs" \
  peer send --key "$pki/store.key" --cert "$pki/store.crt" --id idevs-store --to "$work/chain.pem" \
  --topic "$in_topic" --count "$n" --prefix sale-
counters "$work/c1"
equal "queued_while_down counts every sale, queue_depth holds them, nothing was done or dropped" \
  "$(counter queued_while_down "$work/c1") $(counter queue_depth "$work/c1") $(counter done/ok "$work/c1") $(counter rejected/queue_full "$work/c1")" \
  "$n $n 0 absent"
check "the restart line says how many deliveries wait" \
  wait_for_regex "$log" "restarting in [0-9]+ ms; $n queued deliveries wait for it \\(queue $n/64" 400
check "no compartment runs meanwhile" bash -c "! pgrep -P $broker_pid >/dev/null"

chmod 600 "$key"
wait "$collect_pid"
printf 'sale-%s\n' $(seq "$n") >"$work/want"
grep -v '^ready$' "$work/got" >"$work/lines"
check "once a restart succeeds, every sale comes out exactly once, in order" diff "$work/want" "$work/lines"
check "the compartment kept its keys (restored from the sealed blob)" grep -q "keys restored" "$log"
counters "$work/c2"
equal "done/ok, done/failed and queue_depth" \
  "$(counter done/ok "$work/c2") $(counter done/failed "$work/c2") $(counter queue_depth "$work/c2")" "$n 0 0"
restarts=$(counter restarts "$work/c2")
check "restarts counts every attempt, the failed ones too ($restarts)" test "${restarts/absent/0}" -ge 2
new_pid=$(pgrep -P "$broker_pid" | head -1)
stop_broker
check "the broker stops and leaves no compartment behind" bash -c "! kill -0 ${new_pid:-0} 2>/dev/null"
sanitizer_check "$work/backoff.conf"
finish

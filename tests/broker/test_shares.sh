#!/usr/bin/env bash
# Queue shares (enclave-bridge/launcher/shares.c) in a real broker with the real compartment: one anonymous client
# publishing envelopes that copy the clear header of a real one of store's (the keyless gate passes them) cannot
# starve store. With queue_depth 64 and two services that send (store, sink): a client holds 32 at most, envelopes
# naming store 48. In each of three rounds the compartment is stopped (SIGSTOP, so that nothing drains and the
# outcome does not depend on the machine's speed), a flooder publishes 100 such envelopes (32 are queued, the rest
# refused as queue_client_share), then store publishes 15 real sales at QoS 1; once continued, every sale comes out
# exactly once. In the first round a captured real envelope is also published 100 times by another client (each a
# replay of the one queued: a copy takes one slot), and a third client's flood naming store finds store's share
# used (queue_sender_share). The counters and the log (rate-limited, client ids made printable) say so.
#   test_shares.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"

# A long event timeout: a compartment stopped while a round is published must not be killed for it.
sed 's/"event_timeout_ms": 2000/"event_timeout_ms": 60000/' "$work/echo.json" >"$work/shares.json"
policy=(--allow-process-backend-insecure --descriptor "$work/shares.json")
write_conf "$work/shares.conf" "$work/shares.json" "plugin_opt_metrics_interval_s 1" "plugin_opt_log_interval_s 2"
log=$work/shares.conf.log
start_broker "$work/shares.conf" || bail "the broker starts" "$log"
fetch_chain "$work/chain.pem" || bail "the certificate is retained"
compartment_pid=$(pgrep -P "$broker_pid" | head -1)
check "one compartment runs as the broker's child" test -n "$compartment_pid"

rounds=3 per_round=15 flood=100
peer collect --key "$pki/sink.key" --cert "$pki/sink.crt" --from "$work/chain.pem" --topic "$out_topic" \
  --count $((1 + rounds * per_round)) --timeout-s 50 >"$work/got" 2>"$work/collect.err" &
collect_pid=$!
bg_pids+=("$collect_pid")
wait_for_line "$work/got" ready 100 || bail "the receiver subscribes" "$work/collect.err"
seal store "captured sale" "$work/captured.env" || bail "store seals the envelope to capture" "$work/seal.err"

for r in $(seq "$rounds"); do
  kill -STOP "$compartment_pid"
  if [ "$r" -eq 1 ]; then
    pub -V mqttv5 -q 1 -i idevs-store -t "$in_topic" -f "$work/captured.env" || not_ok "store publishes a sale"
    check "round 1: another client publishes 100 copies of store's queued envelope" \
      peer raw --key "$pki/store.key" --cert "$pki/store.crt" --id idevs-copier --file "$work/captured.env" \
      --topic "$in_topic" --count "$flood"
  fi
  check "round $r: a flooder publishes $flood envelopes with a real clear header of store's" \
    peer junk --key "$pki/store.key" --cert "$pki/store.crt" --id idevs-flooder --to "$work/chain.pem" \
    --topic "$in_topic" --size 200 --count "$flood"
  check "round $r: store publishes $per_round sales at QoS 1 beside it" \
    peer send --key "$pki/store.key" --cert "$pki/store.crt" --id idevs-store --to "$work/chain.pem" \
    --topic "$in_topic" --count "$per_round" --prefix "sale-$r-"
  if [ "$r" -eq 1 ]; then
    check "round 1: a third client floods in store's name once store's share is used" \
      peer junk --key "$pki/store.key" --cert "$pki/store.crt" --id "idevs-flood'er-2" --to "$work/chain.pem" \
      --topic "$in_topic" --size 200 --count 50
  fi
  kill -CONT "$compartment_pid"
  wait_for_line "$work/got" "sale-$r-$per_round" 300 || not_ok "round $r: its last sale comes out" "$work/collect.err"
done
wait "$collect_pid"
{ echo "captured sale"; for r in $(seq "$rounds"); do printf "sale-$r-%s\n" $(seq "$per_round"); done; } >"$work/want"
grep -v '^ready$' "$work/got" >"$work/lines"
check "every sale of store's comes out, in order, each once, and nothing else" diff "$work/want" "$work/lines"

counters "$work/c"
equal "rejected/queue_client_share counts what the flooder published beyond its 32 in each round" \
  "$(counter rejected/queue_client_share "$work/c")" $((rounds * (flood - 32)))
equal "rejected/queue_sender_share counts the third client's flood in store's name" \
  "$(counter rejected/queue_sender_share "$work/c")" 50
equal "rejected/replay counts the 100 copies of the queued envelope" "$(counter rejected/replay "$work/c")" "$flood"
equal "nothing was refused as queue_full" "$(counter rejected/queue_full "$work/c")" absent
equal "done/ok: the captured sale and every sale; done/failed: the flooder's 32 per round" \
  "$(counter done/ok "$work/c") $(counter done/failed "$work/c")" "$((1 + rounds * per_round)) $((rounds * 32))"
equal "queue_depth and restarts are 0" "$(counter queue_depth "$work/c") $(counter restarts "$work/c")" "0 0"
check "the log names the flooder and queue_client_share" \
  grep -Eq "idevs: 'echo': envelope on '$in_topic' from client 'idevs-flooder' \([0-9]+ bytes\) dropped by the plugin: queue_client_share: " "$log"
check "... the third client, its id made printable, and queue_sender_share" \
  grep -Eq "from client 'idevs-flood\?er-2' \([0-9]+ bytes\) dropped by the plugin: queue_sender_share: " "$log"
check "... the copier and replay" grep -Eq "from client 'idevs-copier' .* dropped by the plugin: replay: " "$log"
check "... at a bounded rate: at most one line per reason and interval, then a sum" \
  test "$(grep -c 'dropped by the plugin: queue_client_share' "$log")" -le "$rounds"
check "no payload appears in the log" bash -c "! grep -aE 'sale-[0-9]|captured sale' '$log'"
stop_broker
check "the broker stops and leaves no compartment behind" bash -c "! kill -0 $compartment_pid 2>/dev/null"
sanitizer_check "$work/shares.conf"
finish

#!/usr/bin/env bash
# Large envelopes through mosquitto_idevs.so in a real broker (issue 15, item 7).
#  1. With limits.max_payload 16 MiB and the test descriptor's event_timeout_ms 2000 (plus 1 ms per 4 KiB of the
#     envelope, the launcher's allowance for the work inside the compartment), payloads of 1, 6 and 15 MiB
#     come out of the echo compartment, opened and whole, without a compartment restart: a frame in transit moves
#     within the poll budget on every MESSAGE and TICK, and the bytes it moves count as the compartment's
#     progress; then 6, 15 and 6 MiB back to back. How long each takes (publication to receipt) is printed, not
#     asserted.
#  2. With max_payload 4 MiB and plugin_opt_queue_bytes 16 MiB, a flood of junk envelopes that copy a real clear
#     header (the keyless gate passes them; the compartment cannot open them), from one client, is refused beyond
#     that client's half of the bound as queue_client_share (the queue's shares, docs/OPERATOR.md), and the broker's
#     resident memory (VmHWM, its peak, against VmRSS before the flood) grows by less
#     than twice the bound plus 32 MiB (the queue; the Deliver frames in the channel's send buffer, copies of
#     queued envelopes; the broker's own buffers for the messages it reads). Good traffic goes through afterwards.
#   test_large_payloads.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"

MiB=1048576
# descriptor FILE MAX_PAYLOAD: the echo descriptor with another limits.max_payload.
descriptor() {
  sed "s/\"max_payload\": 65536/\"max_payload\": $2/" "$work/echo.json" >"$1"
  grep -q "\"max_payload\": $2" "$1"
}
# collect_sizes TAG COUNT: a receiver (sink) of the output topic that prints "size B" per payload, in the
# background; ready when it returns.
collect_sizes() {
  peer collect --key "$pki/sink.key" --cert "$pki/sink.crt" --from "$work/chain.pem" --topic "$out_topic" \
    --count "$2" --timeout-s 50 --print size >"$work/$1.got" 2>"$work/$1.err" &
  collect_pid=$!
  bg_pids+=("$collect_pid")
  wait_for_line "$work/$1.got" ready 100
}
send_sized() { peer send --key "$pki/store.key" --cert "$pki/store.crt" --to "$work/chain.pem" --topic "$in_topic" --size "$1"; }
mem_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$broker_pid/status"; } # VmRSS or VmHWM, in kB

# ---- 1. 1, 6 and 15 MiB with max_payload 16 MiB ----
descriptor "$work/large.json" $((16 * MiB)) || bail "the 16 MiB descriptor is written"
policy=(--allow-process-backend-insecure --descriptor "$work/large.json")
write_conf "$work/large.conf" "$work/large.json" "plugin_opt_metrics_interval_s 1"
start_broker "$work/large.conf" || bail "the broker starts (max_payload 16 MiB)" "$work/large.conf.log"
fetch_chain "$work/chain.pem" || bail "the certificate is retained"
for mib in 1 6 15; do
  bytes=$((mib * MiB))
  collect_sizes "large$mib" 1 || bail "the receiver subscribes ($mib MiB)" "$work/large$mib.err"
  t0=$(date +%s%N)
  check "a $mib MiB payload is published" send_sized "$bytes"
  wait "$collect_pid"
  t1=$(date +%s%N)
  if grep -qx "size $bytes" "$work/large$mib.got"; then
    ok "the $mib MiB payload comes out whole"
    echo "# $mib MiB: $(( (t1 - t0) / 1000000 )) ms from publication to receipt"
  else
    cat "$work/large$mib.err" "$work/large.conf.log" >"$work/out" 2>/dev/null
    not_ok "the $mib MiB payload comes out whole" "$work/out"
  fi
done
# Back to back: the compartment gets the next input while its last output is still on its way out.
collect_sizes burst 3 || bail "the receiver subscribes (burst)" "$work/burst.err"
t0=$(date +%s%N)
check "6, 15 and 6 MiB payloads are published back to back" \
  bash -c "$(declare -f peer send_sized); $(declare -p port pki policy peer_exe work in_topic); send_sized $((6 * MiB)) && send_sized $((15 * MiB)) && send_sized $((6 * MiB))"
wait "$collect_pid"
t1=$(date +%s%N)
equal "the three come out whole, in order" "$(grep '^size' "$work/burst.got" | tr '\n' ' ')" \
  "size $((6 * MiB)) size $((15 * MiB)) size $((6 * MiB)) "
echo "# 6 + 15 + 6 MiB back to back: $(( (t1 - t0) / 1000000 )) ms from the first publication to the last receipt"
counters "$work/c1"
equal "done/ok and done/failed" "$(counter done/ok "$work/c1") $(counter done/failed "$work/c1")" "6 0"
equal "emitted counts the 6 outputs" "$(counter emitted "$work/c1")" 6
equal "no compartment restart" "$(counter restarts "$work/c1")" 0
check "the log tells of no kill" bash -c "! grep -Eq 'not answered within|was killed|gave up' '$work/large.conf.log'"
stop_broker

# ---- 2. a junk flood with max_payload 4 MiB and plugin_opt_queue_bytes 16 MiB ----
bound=$((16 * MiB))
descriptor "$work/junk.json" $((4 * MiB)) || bail "the 4 MiB descriptor is written"
policy=(--allow-process-backend-insecure --descriptor "$work/junk.json")
mkdir -m 700 "$work/state2"
write_conf "$work/junk.conf" "$work/junk.json" "-state_dir" "plugin_opt_state_dir $work/state2" \
  "plugin_opt_metrics_interval_s 1" "plugin_opt_queue_bytes $bound"
# AddressSanitizer keeps freed blocks in a quarantine (256 MB by default), which would show as growth: none
# for this broker, so that its peak is what it really holds.
[ "$asan" -eq 0 ] || export ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
start_broker "$work/junk.conf" || bail "the broker starts (queue_bytes 16 MiB)" "$work/junk.conf.log"
fetch_chain "$work/chain.pem" || bail "the certificate is retained"
# Warm-up: one good envelope of the flood's size, so that the baseline includes a steady compartment and buffers.
collect_sizes warm 1 || bail "the receiver subscribes (warm-up)" "$work/warm.err"
check "a good 3.8 MB payload goes through before the flood" send_sized 4000000
wait "$collect_pid"
rss_before=$(mem_kb VmRSS)
# The compartment is stopped during the flood, so that the queue fills whatever the machine's speed (a quick
# compartment would otherwise refuse the junk as fast as it comes); it goes on once continued.
compartment_pid=$(pgrep -P "$broker_pid" | head -1)
kill -STOP "$compartment_pid"
check "40 junk envelopes of 4 MB copying a real clear header are published" \
  peer junk --key "$pki/store.key" --cert "$pki/store.crt" --to "$work/chain.pem" --topic "$in_topic" \
  --size 4000000 --count 40
hwm_after=$(mem_kb VmHWM)
kill -CONT "$compartment_pid"
growth_mib=$(( (hwm_after - rss_before) / 1024 ))
limit_mib=$(( 2 * bound / MiB + 32 ))
echo "# broker VmRSS before the flood $((rss_before / 1024)) MiB, peak (VmHWM) after it $((hwm_after / 1024)) MiB: +$growth_mib MiB"
if [ "$growth_mib" -le "$limit_mib" ]; then ok "the broker's memory grows by at most $limit_mib MiB (+$growth_mib MiB)"; else
  echo "    grew by $growth_mib MiB" >"$work/out"; not_ok "the broker's memory grows by at most $limit_mib MiB" "$work/out"; fi
counters "$work/c2"
full=$(counter rejected/queue_client_share "$work/c2")
check "rejected/queue_client_share counts junk refused beyond the client's half of the bound ($full)" \
  test "${full/absent/0}" -gt 0
check "the log names queue_client_share" grep -q 'queue_client_share' "$work/junk.conf.log"
collect_sizes after 1 || bail "the receiver subscribes (after the flood)" "$work/after.err"
check "a good payload goes through after the flood" send_sized 1000
wait "$collect_pid"
check "... and comes out" grep -qx "size 1000" "$work/after.got"
counters "$work/c3"
equal "queue_depth and in_flight are 0 once the flood is processed" \
  "$(counter queue_depth "$work/c3") $(counter in_flight "$work/c3")" "0 0"
stop_broker
finish

#!/usr/bin/env bash
# The launcher's outbox (enclave-bridge/launcher/outbox.c) in a real broker, with the real compartment and a
# receiving service written with the library (idevs-sub), declared with "receipts": true:
#   - outputs published while the service is away without a session are lost by the broker; the outbox keeps
#     them and publishes them again until the service, started later, receipts them: it gets each once;
#   - outputs kept when the broker is killed with SIGKILL are read back from the state directory at its restart;
#     the restarted compartment has a new certificate, under which a receiver that knows only it cannot open the
#     copies sealed before: the compartment seals them anew (same ids) from what it kept, and the service, started
#     after the restart, gets each once;
#   - once receipted, nothing is kept and nothing more goes out.
#   test_outbox.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER IDEVS_SUB
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6 idevs_sub=$7
source "$(dirname "$0")/lib.sh"

write_descriptor "$work/outbox.json" 1 true
policy=(--allow-process-backend-insecure --descriptor "$work/outbox.json")
write_conf "$work/outbox.conf" "$work/outbox.json" "plugin_opt_metrics_interval_s 1"
log=$work/outbox.conf.log
start_broker "$work/outbox.conf" || bail "the broker starts" "$log"
fetch_chain "$work/chain.pem" || bail "the certificate is retained"

send() { # COUNT PREFIX: store's envelopes on the input topic, at QoS 1
  peer send --key "$pki/store.key" --cert "$pki/store.crt" --id idevs-store --to "$work/chain.pem" \
    --topic "$in_topic" --count "$1" --prefix "$2"
}
# wait_counter NAME VALUE: until the process's counter NAME is VALUE (20 s at most).
wait_counter() {
  local i
  for i in $(seq 40); do
    counters "$work/c"
    [ "$(counter "$1" "$work/c")" = "$2" ] && return 0
    sleep 0.5
  done
  return 1
}
# The sink, with the library: it verifies the compartment, receipts what it handled, and prints the payloads.
sink() { # COUNT OUT
  timeout 60 "$idevs_sub" --pki "$pki" --name sink -p "$port" --process echo --policy allow-process-backend-insecure \
    --policy "descriptor=$work/outbox.json" --start-timeout 8000 -i sink-outbox -C "$1" -W 30 >"$2" 2>"$2.err"
}

# ---- the service away, without a session ----
check "store publishes 5 while the sink is away" send 5 away-
check "the five outputs are kept until their receipts" wait_counter outbox 5
check "... and nothing was dropped" test "$(counter done/ok "$work/c")" = 5
sink 5 "$work/got-away"
check "the sink, started later, gets the five: published again, since the broker held them for nobody" \
  diff <(printf 'away-%s\n' 1 2 3 4 5) <(sed -E 's/^out [0-9a-f]{32} //' "$work/got-away" | sort -V)
check "its receipts end them: nothing is kept" wait_counter outbox 0
check "... its receipts were taken" test "$(counter receipts_in "$work/c")" != absent
resent=$(counter outbox_resent "$work/c")
check "outbox_resent counts the copies (${resent})" test "${resent/absent/0}" -ge 5
check "the log tells of no outbox trouble" bash -c "! grep -q 'cannot keep its outputs' '$log'"
state_files=$(find "$work/state/echo/outbox" -type f | wc -l)
equal "no file is left in the state directory's outbox" "$state_files" 0

# ---- once receipted, nothing more goes out ----
sub -i idevs-watch -t "$out_topic" -W 7 -F '%p' >"$work/after" 2>/dev/null
equal "nothing is published again in the 7 s after the receipts (the first copy would go after 5 s)" \
  "$(grep -c . "$work/after")" 0

# ---- kept across a broker restart ----
check "store publishes 3 more while the sink is away" send 3 restart-
check "the three are kept" wait_counter outbox 3
equal "... one private file each in the state directory" \
  "$(find "$work/state/echo/outbox" -type f -perm 600 | wc -l)" 3
kill -9 "$broker_pid"
wait "$broker_pid" 2>/dev/null
broker_pid=
mv "$log" "$log.1"
start_broker "$work/outbox.conf" || bail "the broker starts again on the same state directory" "$log"
ok "the broker starts again on the same state directory after SIGKILL"
check "it reads the three back and sends them again" \
  wait_for_text "$log" "has 3 output(s) waiting for their receipts" 100
sink 3 "$work/got-restart"
check "the sink, started after the restart, gets the three, each once: sealed anew under the new certificate" \
  diff <(printf 'restart-%s\n' 1 2 3) <(sed -E 's/^out [0-9a-f]{32} //' "$work/got-restart" | sort -V)
check "its receipts end them" wait_counter outbox 0
equal "no file is left" "$(find "$work/state/echo/outbox" -type f | wc -l)" 0

stop_broker
sanitizer_check "$work/outbox.conf"
finish

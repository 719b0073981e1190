#!/usr/bin/env bash
# Rejections (plugin/rejections.c, the launcher's gate) in a real broker: forged, replayed, malformed, misaddressed, wrong-version
# and wrongly-sent envelopes are each counted under their $SYS counter and dropped while the good ones between
# them all come out; the log names each reason once per interval and sums up floods; a request goes out with
# MQTT 5 response topic and correlation data and its answer comes back through the compartment; killing the
# compartment (kill -9) mid-stream loses no accepted message; the counters have the expected values; an envelope
# captured from the wire and processed once is refused when published again after the compartment was killed,
# and after the broker was restarted on the same state directory (the launcher's replay record); the logic's
# refusals with a declared code are counted per code, per process and in total, and logged, rate-limited per
# code, with the topic and client and never the payload.
#   test_rejections.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"

log_interval=2
write_conf "$work/traffic.conf" "$work/echo.json" "plugin_opt_metrics_interval_s 1" \
  "plugin_opt_log_interval_s $log_interval"
log=$work/traffic.conf.log
start_broker "$work/traffic.conf" || { cat "$work/traffic.conf.out" >>"$log" 2>/dev/null; bail "the broker starts" "$log"; }
fetch_chain "$work/chain.pem" || bail "the certificate is retained"

# collect TAG COUNT [LINGER_MS]: a receiver (sink) of the output topic in the background, ready when it returns.
collect() {
  local tag=$1 count=$2 linger=${3:-0}
  peer collect --key "$pki/sink.key" --cert "$pki/sink.crt" --from "$work/chain.pem" --topic "$out_topic" \
    --count "$count" --timeout-s 50 --linger-ms "$linger" >"$work/$tag.got" 2>"$work/$tag.err" &
  collect_pid=$!
  bg_pids+=("$collect_pid")
  wait_for_line "$work/$tag.got" ready 100
}
send_file() { pub -V mqttv5 -q 1 -i "$2" -t "${3:-$in_topic}" -f "$1"; } # FILE CLIENT_ID [TOPIC]
size_of() { stat -c %s "$1"; }
lines_of() { grep -v '^ready$' "$1"; }

# ---- good inputs with bad ones between them ----
# Sealed in publication order: each seal is a new key epoch of store's, and a receiver accepts only its
# current and previous epochs, and newer ones.
for name in good1 forged good2 good3 good4 good5 good6 fail good7; do
  text=${name/good/good-}
  seal store "$text" "$work/$name.env" || bail "store seals $text" "$work/seal.err"
done
seal sink "undeclared sender" "$work/undeclared.env" || bail "sink seals an input" "$work/seal.err"
"$env_tool" seal --key "$pki/store.key" --cert "$pki/store.crt" --ca "$pki/ca.crt" --to "$pki/sink.crt" \
  --topic "$in_topic" --in "$work/seal.in" --out "$work/misaddressed.env" 2>>"$work/seal.err" ||
  bail "store seals an envelope to sink" "$work/seal.err"
# forged: the last byte (the AEAD tag's) flipped
python3 - "$work/forged.env" <<'PY'
import sys
b = bytearray(open(sys.argv[1], 'rb').read()); b[-1] ^= 0x01; open(sys.argv[1], 'wb').write(b)
PY
# wrong version: the first field, version (08 02), set to 3; and to 1, the old format, refused as old_version
cp "$work/good1.env" "$work/version.env"
check "a sealed envelope starts with version 2 (08 02)" test "$(head -c 2 "$work/version.env" | od -An -tx1 | tr -d ' ')" = 0802
printf '\x08\x03' | dd of="$work/version.env" conv=notrunc status=none
cp "$work/good1.env" "$work/old.env"
printf '\x08\x01' | dd of="$work/old.env" conv=notrunc status=none
# malformed: 300 pseudo-random bytes, the same every run
openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -nosalt -in /dev/zero 2>/dev/null | head -c 300 >"$work/malformed.env"
check "the malformed input is not an envelope" bash -c "! '$env_tool' inspect --in '$work/malformed.env'"

collect mixed 7 1500 || bail "the receiver subscribes" "$work/mixed.err"
send_file "$work/good1.env" idevs-store &&
  send_file "$work/forged.env" idevs-forger &&
  send_file "$work/good2.env" idevs-store &&
  send_file "$work/good2.env" idevs-replayer &&
  pub -d -V mqttv5 -q 1 -i idevs-junk -t "$in_topic" -f "$work/malformed.env" >"$work/puback-malformed" 2>&1 &&
  send_file "$work/good3.env" idevs-store &&
  send_file "$work/misaddressed.env" idevs-misaddresser &&
  send_file "$work/good4.env" idevs-store &&
  send_file "$work/version.env" idevs-versioner &&
  send_file "$work/old.env" idevs-oldie &&
  send_file "$work/good5.env" idevs-store &&
  send_file "$work/undeclared.env" idevs-sink-as-store &&
  send_file "$work/good6.env" idevs-store &&
  send_file "$work/fail.env" idevs-failer &&
  send_file "$work/good7.env" idevs-store || not_ok "every input is published"
wait "$collect_pid"
printf 'good-%s\n' 1 2 3 4 5 6 7 >"$work/mixed.want"
lines_of "$work/mixed.got" >"$work/mixed.lines"
check "every good input between the bad ones comes out, in order, and nothing else" diff "$work/mixed.want" "$work/mixed.lines"
check "a v5 publisher of a malformed input still gets a success reason code (0 or 16)" \
  grep -Eq 'received PUBACK \(Mid: [0-9]+, RC:(0|16)\)' "$work/puback-malformed"

# log lines: one per reason, naming topic, client and size
line_for() { # description, client, file, by, reason
  local re="idevs: 'echo': envelope on '$in_topic' from client '$2' \($(size_of "$3") bytes\) dropped by $4: $5: "
  check "$1" grep -Eq "$re" "$log"
}
line_for "forged: dropped by the compartment, logged as decrypt" idevs-forger "$work/forged.env" \
  "the compartment \(delivery [0-9]+\)" decrypt
# The replay right behind its original is refused by the launcher's replay record when the original was done by
# then (the usual case: the plugin waits plugin_opt_poll_budget_ms for it), else by the compartment's window.
line_for "replayed: dropped by the plugin or the compartment, logged as replay" idevs-replayer "$work/good2.env" \
  "(the plugin|the compartment \(delivery [0-9]+\))" replay
replay_by_plugin=0
grep -q "from client 'idevs-replayer' .* dropped by the plugin: replay" "$log" && replay_by_plugin=1
line_for "malformed: dropped by the plugin, logged as malformed" idevs-junk "$work/malformed.env" "the plugin" malformed
line_for "misaddressed: dropped by the plugin, logged as wrong_recipient" idevs-misaddresser "$work/misaddressed.env" \
  "the plugin" wrong_recipient
line_for "wrong version: dropped by the plugin, logged as version" idevs-versioner "$work/version.env" "the plugin" version
line_for "version 1: dropped by the plugin, logged as old_version" idevs-oldie "$work/old.env" "the plugin" old_version
line_for "an undeclared sender: dropped by the plugin, logged as sender_not_allowed" idevs-sink-as-store \
  "$work/undeclared.env" "the plugin" sender_not_allowed
line_for "a logic error: logged as logic" idevs-failer "$work/fail.env" "the compartment \(delivery [0-9]+\)" logic
check "no payload appears in the log" bash -c "! grep -aE 'good-[0-9]|forged|undeclared sender' '$log'"

counters "$work/c1"
equal "received counts every input on the input topic" "$(counter received "$work/c1")" 15
equal "routed counts those that reached the compartment (7 good, forged, fail, and the replay unless the plugin refused it)" \
  "$(counter routed "$work/c1")" $((10 - replay_by_plugin))
equal "rejected/decrypt counts the forged input" "$(counter rejected/decrypt "$work/c1")" 1
equal "rejected/replay counts the replayed input" "$(counter rejected/replay "$work/c1")" 1
equal "rejected/malformed counts the malformed input" "$(counter rejected/malformed "$work/c1")" 1
equal "rejected/wrong_recipient counts the misaddressed input" "$(counter rejected/wrong_recipient "$work/c1")" 1
equal "rejected/version counts the wrong version" "$(counter rejected/version "$work/c1")" 1
equal "rejected/old_version counts the version 1 envelope" "$(counter rejected/old_version "$work/c1")" 1
equal "rejected/sender_not_allowed counts the undeclared sender" "$(counter rejected/sender_not_allowed "$work/c1")" 1
equal "rejected/logic counts the logic error" "$(counter rejected/logic "$work/c1")" 1
equal "a reason never seen is not published" "$(counter rejected/queue_full "$work/c1")" absent
equal "done/ok and done/failed" "$(counter done/ok "$work/c1") $(counter done/failed "$work/c1")" "7 $((3 - replay_by_plugin))"
equal "emitted counts the 7 outputs" "$(counter emitted "$work/c1")" 7
equal "queue_depth, in_flight and restarts are 0" \
  "$(counter queue_depth "$work/c1") $(counter in_flight "$work/c1") $(counter restarts "$work/c1")" "0 0 0"

# ---- floods: one line per reason per interval, then how many more ----
malformed_lines() { grep -c "dropped by the plugin: malformed" "$log"; }
replay_lines() { grep -Ec "dropped by (the plugin|the compartment \(delivery [0-9]+\)): replay" "$log"; }
before_malformed=$(malformed_lines) before_replay=$(replay_lines)
peer raw --key "$pki/store.key" --cert "$pki/store.crt" --id idevs-flooder --file "$work/malformed.env" \
  --topic "$in_topic" --count 30 2>"$work/flood.err" || not_ok "30 malformed envelopes are published" "$work/flood.err"
peer raw --key "$pki/store.key" --cert "$pki/store.crt" --id idevs-replay-flooder --file "$work/good7.env" \
  --topic "$in_topic" --count 20 2>"$work/flood.err" || not_ok "20 replays are published" "$work/flood.err"
sleep 0.5
equal "a flood of 30 malformed envelopes logs one line at first" "$(( $(malformed_lines) - before_malformed ))" 1
equal "a flood of 20 replays logs one line at first" "$(( $(replay_lines) - before_replay ))" 1
check "... refused by the plugin (the launcher's replay record), not sent to the compartment" \
  grep -q "from client 'idevs-replay-flooder' .* dropped by the plugin: replay" "$log"
sleep $((log_interval + 1))
check "... then one line with how many more malformed ones were dropped" grep -q \
  "idevs: 'echo': 29 more envelope(s) dropped for malformed in the last $log_interval s; the last on '$in_topic' from client 'idevs-flooder' ($(size_of "$work/malformed.env") bytes)" "$log"
check "... and how many more replays" grep -q \
  "idevs: 'echo': 19 more envelope(s) dropped for replay in the last $log_interval s; the last on '$in_topic' from client 'idevs-replay-flooder' ($(size_of "$work/good7.env") bytes)" "$log"
# The publisher's own second copy (a QoS 2 retransmission with DUP, a QoS 1 one after a reconnection) is a
# duplicate, not a replay attack: refused all the same, counted and logged under its own reason.
send_file "$work/good7.env" idevs-store
check "the publisher's own second copy of an envelope is refused as a duplicate, not as a replay" \
  grep -Eq "from client 'idevs-store' .* dropped by the plugin: duplicate" "$log"
equal "malformed: 3 log lines in all for 31 envelopes" "$(grep -c "idevs: .*malformed" "$log")" 3

# ---- request and response through the broker ----
peer respond --key "$pki/sink.key" --cert "$pki/sink.crt" --from "$work/chain.pem" --topic "$req_topic" --count 1 --timeout-s 30 \
  >"$work/respond.got" 2>"$work/respond.err" &
respond_pid=$!
bg_pids+=("$respond_pid")
wait_for_line "$work/respond.got" ready 100 || not_ok "the responder subscribes" "$work/respond.err"
collect answer 1 || not_ok "the receiver subscribes" "$work/answer.err"
peer send --key "$pki/store.key" --cert "$pki/store.crt" --to "$work/chain.pem" --topic "$in_topic" \
  --payload "ask:hello" 2>"$work/ask.err" || not_ok "store sends ask:hello" "$work/ask.err"
wait "$respond_pid"
check "sink receives the request on $req_topic with a response topic and correlation data, and answers" \
  grep -q "1 answered" "$work/respond.err"
wait "$collect_pid"
check "the answer comes back through the compartment: answer:re:hello" grep -qx "answer:re:hello" "$work/answer.got"

# ---- killing the compartment mid-stream ----
old_pid=$(pgrep -P "$broker_pid")
check "one compartment runs as the broker's child" test "$(echo "$old_pid" | wc -w)" -eq 1
cp "$work/chain.pem" "$work/chain-before.pem"
collect stream 50 1000 || not_ok "the receiver subscribes" "$work/stream.err"
peer send --key "$pki/store.key" --cert "$pki/store.crt" --to "$work/chain.pem" --topic "$in_topic" \
  --count 50 --prefix stream- --interval-ms 20 2>"$work/stream-send.err" &
send_pid=$!
bg_pids+=("$send_pid")
sleep 0.4
kill -9 "$old_pid"
if wait "$send_pid"; then ok "all 50 inputs are acknowledged while the compartment is killed"; else
  not_ok "all 50 inputs are acknowledged while the compartment is killed" "$work/stream-send.err"; fi
wait "$collect_pid"
printf 'stream-%s\n' $(seq 50) >"$work/stream.want"
lines_of "$work/stream.got" >"$work/stream.lines"
check "all 50 outputs arrive, each once, none lost to the kill" diff "$work/stream.want" "$work/stream.lines"
new_pid=$(pgrep -P "$broker_pid")
check "a new compartment runs" test -n "$new_pid" -a "$new_pid" != "$old_pid"
fetch_chain "$work/chain-after.pem"
check "its certificate is published again" bash -c "! cmp -s '$work/chain-before.pem' '$work/chain-after.pem'"
check "... and verifies against the operator CA under the descriptor" \
  "$ca_tool" verify --ca "$pki/ca.crt" "$work/chain-after.pem" "${policy[@]}"
check "the log says the compartment was killed by a signal" grep -q "idevs: .*killed by signal 9" "$log"

counters "$work/c2"
# 15 + 30 malformed + 20 replays + the duplicate + ask + its answer + 50; replays and duplicate never reach the
# compartment
equal "received after everything" "$(counter received "$work/c2")" 118
equal "routed after everything" "$(counter routed "$work/c2")" $((62 - replay_by_plugin))
equal "emitted: 7 + the request + the answer + 50" "$(counter emitted "$work/c2")" 59
equal "done/ok and done/failed after everything" "$(counter done/ok "$work/c2") $(counter done/failed "$work/c2")" \
  "59 $((3 - replay_by_plugin))"
equal "rejected/malformed and rejected/replay after the floods" \
  "$(counter rejected/malformed "$work/c2") $(counter rejected/replay "$work/c2")" "31 21"
equal "rejected/duplicate counts the publisher's own second copy" "$(counter rejected/duplicate "$work/c2")" 1
equal "restarts counts the killed compartment" "$(counter restarts "$work/c2")" 1
equal "queue_depth and in_flight are back to 0" "$(counter queue_depth "$work/c2") $(counter in_flight "$work/c2")" "0 0"
equal "nothing failed to publish" "$(counter publish_failed "$work/c2")" 0

# ---- replay after a compartment restart ----
# A restarted compartment has its keys back and empty replay windows: only the launcher's record stops an
# envelope captured from the wire from being processed a second time (a second taxi booking).
# wait_new_chain OLD NEW: until the retained certificate differs from OLD (a new compartment was certified).
wait_new_chain() {
  for _ in $(seq 100); do
    fetch_chain "$2" && ! cmp -s "$1" "$2" && return 0
    sleep 0.1
  done
  return 1
}
cp "$work/chain-after.pem" "$work/chain.pem"
seal store "captured" "$work/captured.env" || bail "store seals the envelope to capture" "$work/seal.err"
collect captured 1 || not_ok "the receiver subscribes" "$work/captured.err"
send_file "$work/captured.env" idevs-store
wait "$collect_pid"
check "the captured envelope is processed once" grep -qx captured "$work/captured.got"
killed_pid=$(pgrep -P "$broker_pid")
kill -9 "$killed_pid"
check "a new compartment is certified after kill -9" wait_new_chain "$work/chain.pem" "$work/chain-kill.pem"
seal store "fresh after the kill" "$work/fresh1.env" || bail "store seals a fresh envelope" "$work/seal.err"
collect replay1 1 1500 || not_ok "the receiver subscribes" "$work/replay1.err"
send_file "$work/captured.env" idevs-replayer-after-kill
send_file "$work/fresh1.env" idevs-store
wait "$collect_pid"
printf 'fresh after the kill\n' >"$work/replay1.want"
lines_of "$work/replay1.got" >"$work/replay1.lines"
check "after kill -9, the captured envelope published again gives no output; a fresh one comes out" \
  diff "$work/replay1.want" "$work/replay1.lines"
counters "$work/c3"
equal "rejected/replay counts the captured envelope published again" "$(counter rejected/replay "$work/c3")" 22
equal "received and routed: both inputs arrived, only the fresh one was routed" \
  "$(counter received "$work/c3") $(counter routed "$work/c3")" "121 $((64 - replay_by_plugin))"
equal "restarts counts both kills" "$(counter restarts "$work/c3")" 2
last_pid=$(pgrep -P "$broker_pid")

stop_broker
check "the broker stops and leaves no compartment behind" bash -c "! kill -0 $last_pid 2>/dev/null"
sanitizer_check "$work/traffic.conf"
check "the replay record is in the state directory, private (600)" \
  test "$(stat -c %a "$work/state/echo/$program.replay" 2>/dev/null)" = 600

# ---- replay after a broker restart, same state directory ----
start_broker "$work/traffic.conf" || bail "the broker starts again" "$work/traffic.conf.out"
check "the restarted plugin's compartment is certified" fetch_chain "$work/chain.pem"
seal store "fresh after the broker restart" "$work/fresh2.env" || bail "store seals a fresh envelope" "$work/seal.err"
collect replay2 1 1500 || not_ok "the receiver subscribes" "$work/replay2.err"
send_file "$work/captured.env" idevs-replayer-after-restart
send_file "$work/fresh1.env" idevs-replayer-after-restart
send_file "$work/fresh2.env" idevs-store
wait "$collect_pid"
printf 'fresh after the broker restart\n' >"$work/replay2.want"
lines_of "$work/replay2.got" >"$work/replay2.lines"
check "after a broker restart, both envelopes done before it give no output; a fresh one comes out" \
  diff "$work/replay2.want" "$work/replay2.lines"
counters "$work/c4"
equal "the new broker counts both under rejected/replay" "$(counter rejected/replay "$work/c4")" 2
equal "... and routes only the fresh one" "$(counter received "$work/c4") $(counter routed "$work/c4")" "3 1"
check "the record was read without a warning" bash -c "! grep -q 'replay record' '$log'"

# ---- the logic's refusal codes (idevs_refuse; the descriptor declares not_a_sale and amount_out_of_range) ----
# refuse NAME CLIENT PAYLOAD: seals (a new epoch of store's each time: sent at once, in order) and publishes.
refuse() { seal store "$3" "$work/$1.env" && send_file "$work/$1.env" "$2"; }
refuse r1 idevs-refuser "refuse:not_a_sale" && refuse r2 idevs-refuser "refuse:not_a_sale" &&
  refuse r3 idevs-refuser "refuse:not_a_sale" && refuse r4 idevs-ranger "refuse:amount_out_of_range" &&
  refuse r5 idevs-chatter "refuse:Ana Lima +44 7700 900123" || not_ok "the refused inputs are published" "$work/seal.err"
counters "$work/c5"
equal "refused/not_a_sale counts the three refusals with that code" "$(counter refused/not_a_sale "$work/c5")" 3
equal "refused/amount_out_of_range counts its one" "$(counter refused/amount_out_of_range "$work/c5")" 1
equal "rejected/logic counts all five (the undeclared code is a plain logic error)" \
  "$(counter rejected/logic "$work/c5")" 5
sub -t '$SYS/broker/idevs/totals/refused/#' -v -W 1 2>/dev/null | sed 's|^\$SYS/broker/idevs/totals/||' >"$work/t5"
equal "totals/refused/not_a_sale sums the processes" "$(counter refused/not_a_sale "$work/t5")" 3
check "a refusal is logged with the process, topic, client, size and code" grep -Eq \
  "idevs: 'echo': envelope on '$in_topic' from client 'idevs-refuser' \($(size_of "$work/r1.env") bytes\) refused by the logic \(delivery [0-9]+\): not_a_sale$" "$log"
check "... each code with its own line" grep -Eq \
  "from client 'idevs-ranger' \($(size_of "$work/r4.env") bytes\) refused by the logic \(delivery [0-9]+\): amount_out_of_range$" "$log"
equal "... rate-limited per code: one line for the three not_a_sale at first" \
  "$(grep -c "refused by the logic (delivery [0-9]*): not_a_sale" "$log")" 1
sleep $((log_interval + 1))
check "... then how many more" grep -q \
  "idevs: 'echo': 2 more envelope(s) refused by the logic: not_a_sale in the last $log_interval s; the last on '$in_topic' from client 'idevs-refuser' ($(size_of "$work/r3.env") bytes)" "$log"
check "an undeclared code is no code: logged as a logic error" grep -Eq \
  "from client 'idevs-chatter' .* dropped by the compartment \(delivery [0-9]+\): logic: " "$log"
check "no payload of a refused input appears in the log" bash -c "! grep -aE 'refuse:|Ana Lima|7700 900123' '$log'"
restarted_pid=$(pgrep -P "$broker_pid")
stop_broker
check "the broker stops and leaves no compartment behind (after the restart)" \
  bash -c "! kill -0 $restarted_pid 2>/dev/null"
sanitizer_check "$work/traffic.conf"
finish

#!/usr/bin/env bash
# The service library and its tools against a real Mosquitto with mosquitto_idevs.so, the compartment and the
# echo logic (tests/logic/echo.c), on a free loopback port, with a PKI made by idevs-ca:
#   idevs-pub -> compartment -> idevs-sub prints exactly the payload; the library refuses a wrong measurement,
#   a compartment not opted in, another operator's CA, a service the deployment does not name; a request
#   answered with idevs-sub --respond comes back; idevs-sub --inspect prints headers and evidence and no
#   plaintext; a duplicate is delivered once; a subscriber survives a broker restart and verifies the new
#   compartment before it receives again; on a broker where anyone may write the retained topics (as through a
#   bridge), a certificate with anything but its chain, or a descriptor with control characters, is refused
#   and the sentence saying why holds no control character; the holding queue's byte limit counts correlation
#   data; a broker that drops every connection gets a few attempts with a growing backoff, not a loop; an input
#   published with a partition key carries its partition (idevs-partition), one without none, and a message
#   sent again from the outbox the same one; an outbox file of the schema before partitions still opens.
#   test_services.sh PLUGIN.so IDEVS_CA IDEVS_COMPARTMENT ECHO_LOGIC.so IDEVS_PUB IDEVS_SUB SERVICE_CLIENT
set -u
plugin=$1 ca_tool=$2 compartment=$3 echo_logic=$4 idevs_pub=$5 idevs_sub=$6 service_client=$7
env_tool= # (lib.sh's seal is not used here)
# tests/broker/lib.sh: the work directory, checks, the broker's start and stop (scripts/lib/broker.sh), a PKI with
# store and sink, and the echo logic's descriptor.
source "$(dirname "$0")/../broker/lib.sh"
# Only the broker (and the compartment it starts) run without leak detection.
broker_no_leaks=1
# The broker is ready once the compartment's certificate is retained.
broker_ready_topic=idevs/echo/certificate

# ---- PKI, descriptor, broker configuration ----
# A service the deployment does not name, and another operator.
other=$work/other
if ! { "$ca_tool" service "$pki" stranger && "$ca_tool" init "$other" --name another-operator &&
       "$ca_tool" service "$other" sink; } >"$work/pki.log" 2>&1; then
  bail "make the PKI" "$work/pki.log"
fi
# The request at QoS 2 (the output at 1). Padding chosen per entry: the input in blocks of 128 bytes (sealed by the
# library), the output not at all (by the compartment), the request and its answers in blocks of 4096.
write_descriptor "$work/echo.json" 2
# 1000 partitions (not the default 64): the library takes the number from the descriptor.
sed -i -e 's|"from": "store"}|"from": "store", "pad": 128}|' -e 's|"config": {}}|"config": {}, "partitions": 1000}|' -e 's|"to": "sink", "qos": 1}|"to": "sink", "qos": 1, "pad": "none"}|' \
  -e 's|"qos": 2}|"qos": 2, "pad": 4096}|' "$work/echo.json"
port=$(free_port)
conf=$work/broker.conf
cat >"$conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
log_dest file $work/broker.log
log_type all
plugin $plugin
plugin_opt_descriptor $work/echo.json
plugin_opt_authority_key $pki/authority.key
plugin_opt_authority_cert $pki/authority.crt
plugin_opt_operator_ca $pki/ca.crt
plugin_opt_state_dir $work/state
plugin_opt_compartment $compartment
plugin_opt_acl_others allow
CONF
if start_broker "$conf"; then ok "the broker starts with the plugin and the echo logic"; else
  bail "the broker starts with the plugin and the echo logic" "$work/broker.log" "$conf.out"
fi

service_options
# Waits until the broker has the subscription of client id $1 to topic $2, at any QoS (the library subscribes to
# the descriptor's topics once it has verified the compartment).
wait_subscribed() { wait_for_regex "$work/broker.log" "^[0-9]+: $1 [0-2] $2\$" 200; }

# ---- inspection without keys: headers and evidence, no plaintext ----
secret='inspect-me: Ana Lima, +44 7700 900123'
background "$work/inspect.out" "$work/inspect.err" "$idevs_sub" --inspect -p "$port" -i inspector \
  -t "$in_topic" -t "$out_topic" -C 2 -W 30
wait_subscribed inspector "$out_topic"
"$idevs_pub" "${store[@]}" -t events -m "$secret" >"$work/pub0.out" 2>&1 || not_ok "idevs-pub publishes for inspection" "$work/pub0.out"
wait_pid "$last_pid"
check "idevs-sub --inspect ends after -C 2 envelopes" test "$?" -eq 0
check "... prints version, suite, sender, recipient, message id, epoch, sequence, instance, provenance sealed" bash -c \
  "grep -q 'version 2, suite 1' '$work/inspect.out' && grep -q '  sender ' '$work/inspect.out' &&
   grep -q '  recipient ' '$work/inspect.out' && grep -q 'message id ' '$work/inspect.out' &&
   grep -q 'epoch ' '$work/inspect.out' && grep -q 'sequence   1' '$work/inspect.out' &&
   grep -q 'instance   0' '$work/inspect.out' && grep -q 'provenance: sealed in the ciphertext' '$work/inspect.out' &&
   ! grep -q 'provenance in the clear' '$work/inspect.out'"
check "... the input carries the store's chain (subject and uuid)" grep -q "uuid        $(uuid_of "$pki/store.crt")" "$work/inspect.out"
check "... the output carries the compartment's chain and evidence: backend, program, measurement, descriptor" bash -c \
  "grep -q 'evidence: backend process' '$work/inspect.out' && grep -q 'program $program' '$work/inspect.out' &&
   grep -Eq 'measurement [0-9a-f]{64}' '$work/inspect.out' &&
   grep -q \"descriptor  \$(sha256sum '$work/echo.json' | cut -d' ' -f1)\" '$work/inspect.out'"
# 'inspect-me...' is 37 bytes: the input's plaintext is 1 + 4 + 37 bytes, padded to 128; the output's 1 + 16 + 4 + 37.
check "... the input padded to the descriptor's block of 128, the output not padded" bash -c \
  "grep -q 'ciphertext: 144 bytes' '$work/inspect.out' && grep -q 'ciphertext: 74 bytes' '$work/inspect.out'"
check "... and never the plaintext" bash -c "! grep -aq -e 'inspect-me' -e 'Ana Lima' -e '7700 900' '$work/inspect.out'"

# ---- idevs-pub -> compartment -> idevs-sub prints exactly the payload ----
payload='confidential hello, 42'
background "$work/sub1.out" "$work/sub1.err" "$idevs_sub" "${sink[@]}" -i sink-plain -C 1 -W 30
sub_pid=$last_pid
wait_subscribed sink-plain "$out_topic" || not_ok "idevs-sub subscribes to the output after verifying" "$work/sub1.err"
"$idevs_pub" "${store[@]}" -t events -m "$payload" -v >"$work/pub1.out" 2>"$work/pub1.err"
check "idevs-pub exits 0 once the broker acknowledged" test "$?" -eq 0
check "idevs-pub -v prints the input's name and the message id" grep -Eqx 'events [0-9a-f]{32}' "$work/pub1.out"
wait_pid "$sub_pid"
check "idevs-sub -C 1 exits 0" test "$?" -eq 0
printf '%s\n' "$payload" >"$work/expected1"
check "idevs-sub prints exactly the payload" cmp "$work/expected1" "$work/sub1.out"
# The retained certificate and descriptor are subscribed once per connection: the broker sends each once.
check "the broker sent idevs-sub the retained certificate once and the descriptor once" bash -c \
  "[ \$(grep -c \"Sending PUBLISH to sink-plain .*'idevs/echo/certificate'\" '$work/broker.log') -eq 1 ] &&
   [ \$(grep -c \"Sending PUBLISH to sink-plain .*'idevs/echo/descriptor'\" '$work/broker.log') -eq 1 ]"

# -l: one envelope per line; -v on the subscriber prefixes name and message id.
background "$work/sub2.out" "$work/sub2.err" "$idevs_sub" "${sink[@]}" -i sink-lines -C 3 -W 30 -v
sub_pid=$last_pid
wait_subscribed sink-lines "$out_topic"
printf 'one\n\ntwo\nthree\n' | "$idevs_pub" "${store[@]}" -t events -l -v >"$work/pub2.out" 2>"$work/pub2.err"
check "idevs-pub -l publishes each non-blank line (3 ids)" test "$(grep -Ec '^events [0-9a-f]{32}$' "$work/pub2.out")" -eq 3
wait_pid "$sub_pid"
check "idevs-sub -v prints NAME MESSAGE_ID PAYLOAD for each" bash -c \
  "[ \"\$(sed -E 's/^out [0-9a-f]{32} //' '$work/sub2.out' | tr '\n' ,)\" = 'one,two,three,' ]"
check "... and reports the verified compartment on stderr" grep -q "compartment of 'echo' verified: urn:uuid:$program, backend process" "$work/sub2.err"

check "idevs-pub refuses an input this service does not send (unknown_input)" bash -c \
  "! '$idevs_pub' --pki '$pki' --name sink -p $port --process echo --policy allow-process-backend-insecure -t events -m x 2>'$work/e' && grep -q 'no input of that name' '$work/e'"

free=$(free_port)
check "no broker listening: idevs-pub says the broker refused the connection, not a file error" bash -c \
  "! '$idevs_pub' --pki '$pki' --name store -p $free --process echo --policy allow-process-backend-insecure -t events -m x 2>'$work/e' && grep -q 'cannot connect to the broker at 127.0.0.1:$free: Connection refused (broker)' '$work/e' && ! grep -q 'file' '$work/e'"

# ---- partitions (docs/PROTOCOL.md 8.5): idevs-pub --partition-key ----
# The partition of key $1, computed here apart from the library: SHA-256 of the label, program UUID and key.
partition_of() {
  python3 -c 'import hashlib, sys, uuid
h = hashlib.sha256(b"idevs partition v1" + uuid.UUID(sys.argv[1]).bytes + sys.argv[2].encode()).digest()
print(int.from_bytes(h[:4], "big") % 1000)' "$program" "$1"
}
# capture_properties FILE COUNT: the user properties of the next COUNT inputs, "[key:value]" a line.
capture_properties() {
  local id=cap-$(basename "$1")
  background "$1" "$1.err" mosquitto_sub -V 5 -h 127.0.0.1 -p "$port" -i "$id" -q 1 -t "$in_topic" -C "$2" -W 20 \
    -F '[%P]'
  wait_subscribed "$id" "$in_topic"
}
capture_properties "$work/props.out" 2
cap_pid=$last_pid
"$idevs_pub" "${store[@]}" -t events --partition-key C-0001 -m 'keyed' >"$work/pub-part.out" 2>&1
check "idevs-pub --partition-key publishes" test "$?" -eq 0
"$idevs_pub" "${store[@]}" -t events -m 'not keyed' >>"$work/pub-part.out" 2>&1
wait_pid "$cap_pid"
check "an input with a partition key carries idevs-partition, its partition of 1000" \
  test "$(sed -n 1p "$work/props.out")" = "[idevs-partition:$(partition_of C-0001)]"
check "... one without a partition key carries no user property" test "$(sed -n 2p "$work/props.out")" = "[]"
check "... and the key itself is nowhere in what the broker saw" bash -c "! grep -aq 'C-0001' '$work/broker.log'"

# ---- refusals: the library does not start ----
zero=0000000000000000000000000000000000000000000000000000000000000000
refusal() { # description, expected error name, expected text, options...
  local what=$1 err=$2 text=$3; shift 3
  "$service_client" start "$err" "$@" >"$work/client.out" 2>&1
  local rc=$?
  if [ "$rc" -eq 0 ] && grep -qF -- "$text" "$work/client.out"; then ok "$what"; else
    echo "    exit $rc; expected $err and: $text" >>"$work/client.out"; not_ok "$what" "$work/client.out"; fi
}
refusal "a wrong pinned measurement: measurement_mismatch, naming the measurement" measurement_mismatch \
  "measurement" --pki "$pki" --name sink "${common[@]}" --policy "measurement=$zero"
refusal "without opting in to the process backend: process_backend_not_opted_in" process_backend_not_opted_in \
  "'process' backend" --pki "$pki" --name sink -p "$port" --process echo --start-timeout 8000
refusal "another operator's CA: cert_untrusted, naming the pinned CA" cert_untrusted "pins operator CA" \
  --pki "$other" --name sink "${common[@]}"
refusal "this service's certificate against another CA: cert_untrusted before connecting" cert_untrusted \
  "does not verify against the operator CA" --key "$pki/sink.key" --cert "$pki/sink.crt" --ca "$other/ca.crt" "${common[@]}"
refusal "a service the deployment does not name: sender_not_allowed" sender_not_allowed \
  "is not among the services" --pki "$pki" --name stranger "${common[@]}"
refusal "a pinned descriptor digest that differs: descriptor_mismatch" descriptor_mismatch \
  "expects descriptor digest" --pki "$pki" --name sink "${common[@]}" --policy "descriptor-digest=$zero"
refusal "the right descriptor pinned by file, and the measurement: ok" ok "" --pki "$pki" --name sink "${common[@]}" \
  --policy "descriptor=$work/echo.json" --policy "program=$program"
refusal "a process no plugin serves: timeout, saying what did not arrive" timeout "neither the retained certificate" \
  --pki "$pki" --name sink -p "$port" --process nothing --start-timeout 1500
"$idevs_sub" "${sink[@]}" --policy "measurement=$zero" -C 1 -W 5 >/dev/null 2>"$work/sub-refused.err"
rc=$?
check "idevs-sub exits 1 and names measurement_mismatch" bash -c \
  "[ $rc -eq 1 ] && grep -q 'measurement_mismatch' '$work/sub-refused.err'"

# ---- hostile retained messages: a plain broker (no plugin), where any client writes the retained topics ----
plain_port=$(free_port)
cat >"$work/plain.conf" <<CONF
listener $plain_port 127.0.0.1
allow_anonymous true
CONF
(exec "$mosquitto" -c "$work/plain.conf") >"$work/plain.out" 2>&1 &
bg_pids+=("$!")
timeout 5 mosquitto_sub -h 127.0.0.1 -p "$port" -t idevs/echo/certificate -C 1 -N >"$work/retained.crt" 2>/dev/null
timeout 5 mosquitto_sub -h 127.0.0.1 -p "$port" -t idevs/echo/descriptor -C 1 -N >"$work/retained.json" 2>/dev/null
for _ in $(seq 50); do mosquitto_pub -h 127.0.0.1 -p "$plain_port" -t idevs/probe -n 2>/dev/null && break; sleep 0.1; done
plain_common=(--pki "$pki" --name sink -p "$plain_port" --process echo --policy allow-process-backend-insecure
              --start-timeout 4000)
retain() { # topic, file
  mosquitto_pub -h 127.0.0.1 -p "$plain_port" -t "$1" -r -f "$2"
}
retain idevs/echo/descriptor "$work/retained.json"
retain idevs/echo/certificate "$work/retained.crt"
refusal "a bridged broker with the genuine retained copies: ok" ok "" "${plain_common[@]}"
{ cat "$work/retained.crt"; printf 'trailing text\n'; } >"$work/hostile.crt"
retain idevs/echo/certificate "$work/hostile.crt"
refusal "a retained chain followed by text: cert_malformed" cert_malformed "text after certificate 2" \
  "${plain_common[@]}"
{ cat "$work/retained.crt"; sed -n '/BEGIN PRIVATE KEY/,/END PRIVATE KEY/p' "$pki/sink.key" | head -3;
  echo '-----END PRIVATE KEY-----'; } >"$work/hostile.crt"
retain idevs/echo/certificate "$work/hostile.crt"
refusal "a retained chain with another PEM block: cert_malformed" cert_malformed "'PRIVATE KEY' block" \
  "${plain_common[@]}"
{ cat "$work/retained.crt"; sed -n '/BEGIN/,$p' "$pki/authority.crt"; sed -n '/BEGIN/,$p' "$pki/authority.crt";
  sed -n '/BEGIN/,$p' "$pki/authority.crt"; } >"$work/hostile.crt"
retain idevs/echo/certificate "$work/hostile.crt"
refusal "a retained chain of 5 certificates: too_large, not the first 4" too_large "more than 4 certificate" \
  "${plain_common[@]}"
retain idevs/echo/certificate "$work/retained.crt"
printf '{"version": 1, "\\u001b]2;owned\\u0007\\u001b[2J\\nidevs-sub: compartment verified": 1}' >"$work/hostile.json"
retain idevs/echo/descriptor "$work/hostile.json"
refusal "a retained descriptor with a hostile key: config" config "not a valid deployment descriptor" \
  "${plain_common[@]}"
check "... and the sentence saying why holds no control character" bash -c \
  "! LC_ALL=C grep -aqP '[\\x00-\\x08\\x0b-\\x1f\\x7f]' '$work/client.out' &&
   ! grep -q '^idevs-sub: compartment verified' '$work/client.out'"

# ---- a request answered with --respond comes back ----
background "$work/sub3.out" "$work/sub3.err" "$idevs_sub" "${sink[@]}" -i sink-respond -C 2 -W 30 -v \
  --respond 'a taxi in 7 min'
sub_pid=$last_pid
wait_subscribed sink-respond "$req_topic"
"$idevs_pub" "${store[@]}" -t events -m 'ask:a ride home?' >"$work/pub3.out" 2>&1
wait_pid "$sub_pid"
check "idevs-sub --respond: the request arrives" grep -Eqx 'ask [0-9a-f]{32} a ride home\?' "$work/sub3.out"
check "... and the answer comes back through the compartment" grep -Eqx 'out [0-9a-f]{32} answer:a taxi in 7 min' "$work/sub3.out"
# The descriptor declares the request at QoS 2 and the output at QoS 1: the library subscribes to each at its
# declared QoS, so the request reaches it at QoS 2, and answers at the request's QoS.
check "the library subscribes to the request at its declared QoS 2 and to the output at 1" bash -c \
  "grep -Eq '^[0-9]+: sink-respond 2 $req_topic\$' '$work/broker.log' &&
   grep -Eq '^[0-9]+: sink-respond 1 $out_topic\$' '$work/broker.log'"
check "... the broker sends it the request at QoS 2" \
  grep -Eq "Sending PUBLISH to sink-respond \(d0, q2, r0, m[0-9]+, '$req_topic'" "$work/broker.log"
check "... and it publishes the answer at the request's QoS 2" \
  grep -Eq "Received PUBLISH from sink-respond \(d0, q2, r0, m[0-9]+, 'idevs/echo/resp/ask'" "$work/broker.log"
# At least 4096 bytes and less than 4096 more: one block, and the clear header and chain.
padded_4096() { # the broker's log line start, topic
  grep -Eq "$1 \(d0, q2, r0, m[0-9]+, '$2', \.\.\. \((4[0-9]{3}|5[0-9]{3}) bytes\)\)\$" "$work/broker.log"
}
check "the request padded to the descriptor's block of 4096" padded_4096 "Sending PUBLISH to sink-respond" "$req_topic"
check "... and so is the library's answer" padded_4096 "Received PUBLISH from sink-respond" "$resp_topic"
check "inputs, which the descriptor gives no QoS, are published at QoS 1" \
  grep -Eq "Received PUBLISH from [^ ]+ \(d0, q1, r0, m[0-9]+, '$in_topic'" "$work/broker.log"

# ---- duplicates: the same envelope is delivered once ----
timeout 30 mosquitto_sub -h 127.0.0.1 -p "$port" -i capture -q 1 -t "$out_topic" -C 1 -W 20 -N >"$work/captured.env" 2>/dev/null &
cap_pid=$!
bg_pids+=("$cap_pid")
wait_subscribed capture "$out_topic"
"$idevs_pub" "${store[@]}" -t events -m 'only once' >"$work/pub4.out" 2>&1
wait_pid "$cap_pid"
"$service_client" duplicate "$work/captured.env" "$out_topic" "${sink[@]}" >"$work/dup.out" 2>&1
count_tap duplicates "$work/dup.out"

# ---- limits: the holding queue, and reconnection to a broker that drops every connection ----
# Runs service_client; its "ok - " and "not ok - " lines are counted, prefixed with $1.
client_checks() { # prefix, service_client arguments...
  local prefix=$1; shift
  "$service_client" "$@" >"$work/client-checks.out" 2>&1
  count_tap "$prefix" "$work/client-checks.out"
}
client_checks "held" held
client_checks "reconnect" reconnect "${sink[@]}" -i sink-reconnect

# ---- the outbox: a service stopped before its receipts came sends again on its restart, handled once ----
# -C 4: a fourth output (one of the three run twice) would show; -W ends the wait.
background "$work/sub-outbox.out" "$work/sub-outbox.err" "$idevs_sub" "${sink[@]}" -i sink-outbox -C 4 -W 8
sub_pid=$last_pid
wait_subscribed sink-outbox "$out_topic"
client_checks "outbox (sent)" outbox-send 3 --partition-key C-0042 "${store[@]}" -i store-outbox \
  --outbox "$work/store.outbox"
check "the outbox file is private" bash -c "[ \"\$(stat -c %a '$work/store.outbox')\" = 600 ]"
kept=$(python3 -c "import sqlite3, sys
print(*sqlite3.connect(sys.argv[1]).execute('SELECT DISTINCT partition_number FROM idevs_outbox'))" "$work/store.outbox")
check "... and holds the partition, not the partition key" bash -c \
  "[ '$kept' = '($(partition_of C-0042),)' ] && ! grep -aq 'C-0042' '$work/store.outbox'"
capture_properties "$work/props-again.out" 3
cap_pid=$last_pid
client_checks "outbox (restarted)" outbox-resume 3 "${store[@]}" -i store-outbox --outbox "$work/store.outbox"
wait_pid "$cap_pid"
check "the three sent again from the outbox carry the partition they were first sent with" bash -c \
  "[ \"\$(sort -u '$work/props-again.out')\" = '[idevs-partition:$(partition_of C-0042)]' ] &&
   [ \"\$(wc -l <'$work/props-again.out')\" -eq 3 ]"
wait_pid "$sub_pid"
check "the sink gets each of the three once" bash -c \
  "[ \"\$(sort '$work/sub-outbox.out' | tr '\n' ,)\" = 'outbox 1,outbox 2,outbox 3,' ]"
# An outbox whose numbers went past 1024 (they never restart: the stream's numbers are never reused): a restarted
# service still sends what it holds. (It sent nothing again, whatever the receipts, while it took 1 for the lowest
# number not receipted.)
client_checks "outbox past number 1024 (sent)" outbox-send 3 "${store[@]}" -i store-outbox2 --outbox "$work/store2.outbox"
python3 - "$work/store2.outbox" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE idevs_outbox SET number = number + 2000")
db.execute("UPDATE sqlite_sequence SET seq = seq + 2000 WHERE name = 'idevs_outbox'")
db.commit()
PY
client_checks "outbox past number 1024 (restarted)" outbox-resume 3 "${store[@]}" -i store-outbox2 --outbox "$work/store2.outbox"
# An outbox file made before partitions (no partition_number column): it opens, gains the column, and what it
# holds goes again, without a partition.
client_checks "outbox of the former schema (sent)" outbox-send 2 "${store[@]}" -i store-outbox3 \
  --outbox "$work/store3.outbox"
python3 - "$work/store3.outbox" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("ALTER TABLE idevs_outbox DROP COLUMN partition_number")
db.commit()
PY
columns() { python3 -c "import sqlite3, sys; print(' '.join(r[1] for r in sqlite3.connect(sys.argv[1]).execute('PRAGMA table_info(idevs_outbox)')))" "$1"; }
check "... the file has the former schema" bash -c "! grep -qw partition_number <<<'$(columns "$work/store3.outbox")'"
client_checks "outbox of the former schema (restarted)" outbox-resume 2 "${store[@]}" -i store-outbox3 \
  --outbox "$work/store3.outbox"
check "... and gained the partition column" grep -qw partition_number <<<"$(columns "$work/store3.outbox")"

# ---- reconnection: the broker restarts under a running subscriber ----
background "$work/sub5.out" "$work/sub5.err" "$idevs_sub" "${sink[@]}" -i sink-restart -C 2 -W 50 -v
sub_pid=$last_pid
wait_subscribed sink-restart "$out_topic"
"$idevs_pub" "${store[@]}" -t events -m 'before the restart' >"$work/pub5.out" 2>&1
wait_for_regex "$work/sub5.out" 'before the restart' 200
check "the subscriber receives before the restart" grep -q 'before the restart' "$work/sub5.out"
stop_broker
sleep 0.5
mv "$work/broker.log" "$work/broker1.log"
if start_broker "$conf"; then ok "the broker starts again on the same port with the same state directory"; else
  not_ok "the broker starts again on the same port with the same state directory" "$work/broker.log" "$conf.out"; fi
wait_for_regex "$work/sub5.err" '\(certificate 2\)' 200
check "the subscriber reconnects and verifies the restarted compartment's new certificate" \
  grep -q "compartment of 'echo' verified: .*(certificate 2)" "$work/sub5.err"
wait_subscribed sink-restart "$out_topic"
"$idevs_pub" "${store[@]}" -t events -m 'after the restart' >"$work/pub6.out" 2>&1
check "idevs-pub publishes after the restart" test "$?" -eq 0
wait_pid "$sub_pid"
check "the subscriber receives after the restart and ends (-C 2)" test "$?" -eq 0
check "... both messages, in order" bash -c \
  "[ \"\$(sed -E 's/^out [0-9a-f]{32} //' '$work/sub5.out' | tr '\n' ,)\" = 'before the restart,after the restart,' ]"

# ---- the broker's log never holds the plaintext ----
check "no payload appears in the broker's log" bash -c \
  "! grep -aq -e 'confidential hello' -e 'inspect-me' -e 'a ride home' -e 'taxi in 7' -e 'before the restart' '$work/broker1.log' '$work/broker.log'"

stop_broker

# ---- a responder with receipts, killed after its effect and before its answer, answers the copy ----
# The library notes a request handled in its outbox file only once on_message returned (with the answer, in one
# transaction). Noted before, the copy the process sends again (5 s later) was taken for handled: receipted,
# never answered.
write_descriptor "$work/echo-receipts.json" 1 true
mkdir -m 700 "$work/state-receipts"
sed -e "s|$work/echo.json|$work/echo-receipts.json|" -e "s|$work/state\$|$work/state-receipts|" \
  -e "s|$work/broker.log|$work/broker-receipts.log|" "$conf" >"$work/receipts.conf"
if start_broker "$work/receipts.conf"; then ok "a broker with receipts for the sink starts"; else
  bail "a broker with receipts for the sink starts" "$work/broker-receipts.log" "$work/receipts.conf.out"; fi
crash_sink=("${sink[@]}" -i sink-crash --outbox "$work/sink-crash.outbox")
background "$work/crash.out" "$work/crash.err" "$service_client" answer-crash "$work/effects" "${crash_sink[@]}"
crash_pid=$last_pid
wait_for_line "$work/crash.out" ready 200
wait_for_regex "$work/broker-receipts.log" "^[0-9]+: sink-crash [0-2] $req_topic\$" 200
"$idevs_pub" "${store[@]}" -t events -m 'ask:a ride home?' >"$work/pub-crash.out" 2>&1
wait_pid "$crash_pid"
check "the responder stores its effect and is killed before it answers" \
  bash -c "[ \"\$(cat '$work/effects')\" = effect ]"
client_checks "answer after a crash" answer-resume "${crash_sink[@]}"
stop_broker
finish

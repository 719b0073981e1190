#!/usr/bin/env bash
# mosquitto_idevs.so in a real Mosquitto broker on a free loopback port: retained certificate and descriptor,
# a sealed input routed through the compartment (echo logic) to a sealed output, the guard on output topics,
# RELOAD (SIGHUP), and every kind of bad configuration stopping the broker at start with a message naming it.
# Traffic (rejections, requests, a killed compartment, counters) is test_rejections.sh; valgrind is
# test_plugin_valgrind.sh.
#   test_plugin.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"

# ---- a broker with the plugin ----
write_conf "$work/good.conf" "$work/echo.json"
if start_broker "$work/good.conf"; then ok "the broker starts with the plugin"; else
  cat "$work/good.conf.out" >>"$work/good.conf.log" 2>/dev/null; bail "the broker starts with the plugin" "$work/good.conf.log"; fi

sub -t idevs/echo/certificate -C 1 -W 5 >"$work/chain.pem" 2>"$work/sub.err"
check "the certificate chain is retained on idevs/echo/certificate" grep -q 'BEGIN CERTIFICATE' "$work/chain.pem"
openssl x509 -in "$work/chain.pem" -out "$work/compartment.crt" 2>/dev/null
check "it passes openssl verify against the operator CA" \
  openssl verify -CAfile "$pki/ca.crt" -untrusted "$pki/authority.crt" "$work/compartment.crt"
sub -t idevs/echo/descriptor -C 1 -W 5 -N >"$work/descriptor.got" 2>"$work/sub.err"
check "the descriptor is retained on idevs/echo/descriptor, byte for byte" cmp "$work/echo.json" "$work/descriptor.got"

check "idevs-ca verifies the compartment under the descriptor's digest" \
  "$ca_tool" verify --ca "$pki/ca.crt" "$work/chain.pem" "${policy[@]}"

# A sealed input yields a sealed output that the receiver opens.
printf 'confidential hello' >"$work/payload"
"$env_tool" seal --key "$pki/store.key" --cert "$pki/store.crt" --ca "$pki/ca.crt" --to "$work/chain.pem" \
  --topic "$in_topic" "${policy[@]}" --in "$work/payload" --out "$work/in.env" >"$work/out" 2>&1 ||
  not_ok "store seals an input for the compartment" "$work/out"
sub -t "$out_topic" -C 1 -W 8 -N >"$work/out.env" 2>"$work/sub.err" &
sub_pid=$!
sleep 0.3
pub -d -V mqttv5 -q 1 -t "$in_topic" -f "$work/in.env" >"$work/puback-in" 2>&1
check "an MQTT v5 QoS 1 publisher of the input gets a success reason code (0, or 16: no matching subscribers)" grep -Eq 'received PUBACK \(Mid: [0-9]+, RC:(0|16)\)' "$work/puback-in"
wait "$sub_pid"
check "a sealed output arrives on $out_topic" test -s "$work/out.env"
check "sink opens it to the payload" "$env_tool" open --key "$pki/sink.key" --cert "$pki/sink.crt" \
  --ca "$pki/ca.crt" --topic "$out_topic" "${policy[@]}" --in "$work/out.env" --out "$work/opened"
check "... which is the payload sent" cmp "$work/payload" "$work/opened"

# The guard: a client's publication on the output topic never reaches a subscriber.
sub -t "$out_topic" -C 1 -W 2 >"$work/forged.got" 2>/dev/null &
sub_pid=$!
sleep 0.3
pub -d -V mqttv5 -q 1 -t "$out_topic" -m forged >"$work/puback" 2>&1
pub -q 0 -t "$out_topic" -m forged >/dev/null 2>&1
wait "$sub_pid"
check "a client's publication on the output topic is refused" test ! -s "$work/forged.got"
check "... with 'not authorized' (135) to an MQTT v5 publisher" grep -q 'received PUBACK (Mid: [0-9]*, RC:135)' "$work/puback"
check "... and logged" grep -q "refused a publication by client .* on '$out_topic'" "$work/good.conf.log"
sub -t idevs/echo/certificate -C 1 -W 3 >"$work/chain2.pem" 2>/dev/null
pub -r -q 1 -t idevs/echo/certificate -m forged >/dev/null 2>&1
sub -t idevs/echo/certificate -C 1 -W 3 >"$work/chain3.pem" 2>/dev/null
check "a client cannot replace the retained certificate" cmp "$work/chain2.pem" "$work/chain3.pem"
# An ordinary topic is not affected by the guard.
sub -t other/topic -C 1 -W 3 >"$work/other.got" 2>/dev/null &
sub_pid=$!
sleep 0.3
pub -q 1 -t other/topic -m plain >/dev/null 2>&1
wait "$sub_pid"
check "other topics pass as usual" grep -qx plain "$work/other.got"
children=$(pgrep -P "$broker_pid" | tr '\n' ' ')
check "the compartment runs as a child of the broker" test -n "$children"

# ---- RELOAD (SIGHUP) ----
# A subscriber already there receives the republished certificate (after the retained copy it got at first).
reload_and_watch() { # tag
  sub -t idevs/echo/certificate -t idevs/echo/descriptor -C 4 -W 8 -v >"$work/reload-$1.got" 2>/dev/null &
  local sub_pid=$!
  sleep 0.5
  kill -HUP "$broker_pid"
  wait "$sub_pid"
}
reload_and_watch same
check "on SIGHUP the certificate and descriptor are published again" \
  test "$(grep -c '^idevs/echo/certificate -----BEGIN' "$work/reload-same.got")" -eq 2 -a \
  "$(grep -c '^idevs/echo/descriptor {' "$work/reload-same.got")" -eq 2
check "... and the log says the descriptor is unchanged" grep -q "idevs: 'echo': reload: the descriptor is unchanged" "$work/good.conf.log"
cp "$work/echo.json" "$work/echo.json.orig"
printf ' \n' >>"$work/echo.json"
reload_and_watch changed
check "a changed descriptor is reported on SIGHUP: the compartment keeps the old one until a restart" \
  grep -q "idevs: 'echo': reload: the descriptor '$work/echo.json' changed (SHA-256 $(sha256sum "$work/echo.json" | cut -d' ' -f1), running $(sha256sum "$work/echo.json.orig" | cut -d' ' -f1)); the running compartment keeps the descriptor it was started with: restart the broker" "$work/good.conf.log"
sub -t idevs/echo/descriptor -C 1 -W 5 -N >"$work/descriptor.got" 2>/dev/null
check "... and the retained descriptor stays the one the compartment runs" cmp "$work/echo.json.orig" "$work/descriptor.got"
cp "$work/echo.json.orig" "$work/echo.json"
check "the broker still routes after the reloads" bash -c '
  "$1" collect --port "$2" --key "$3/sink.key" --cert "$3/sink.crt" --ca "$3/ca.crt" --allow-process-backend-insecure \
    --descriptor "$4" --from "$6/chain.pem" --topic "$5" --count 1 --timeout-s 10 >"$6/after-reload.got" &
  c=$!; for _ in $(seq 50); do grep -qx ready "$6/after-reload.got" && break; sleep 0.1; done
  "$1" send --port "$2" --key "$3/store.key" --cert "$3/store.crt" --ca "$3/ca.crt" --allow-process-backend-insecure \
    --descriptor "$4" --to "$6/chain.pem" --topic "$7" --payload after-reload || exit 1
  wait $c && grep -qx after-reload "$6/after-reload.got"' _ "$peer_exe" "$port" "$pki" "$work/echo.json" "$out_topic" "$work" "$in_topic"
stop_broker
check "the broker stops and leaves no compartment behind" bash -c "for c in $children; do ! kill -0 \$c 2>/dev/null || exit 1; done"
sanitizer_check "$work/good.conf"

# ---- bad configurations stop the broker at start ----
expect_refusal "an unknown plugin_opt stops the broker" "plugin_opt_colour: unknown option" "$work/echo.json" \
  "plugin_opt_colour blue"
expect_refusal "an option given twice stops the broker" "plugin_opt_poll_budget_ms: given twice" "$work/echo.json" \
  "plugin_opt_poll_budget_ms 1" "plugin_opt_poll_budget_ms 2"
expect_refusal "plugin_opt_join naming no process stops the broker, naming the line" \
  "plugin_opt_join rewards: no process of that name among the descriptors" "$work/echo.json" "plugin_opt_join rewards"
expect_refusal "plugin_opt_join twice for one process stops the broker" "plugin_opt_join: 'echo' given twice" \
  "$work/echo.json" "plugin_opt_join echo" "plugin_opt_join echo"
expect_refusal "a missing descriptor option stops the broker" "plugin_opt_descriptor: missing (required)" ""
expect_refusal "a missing authority key option stops the broker" "plugin_opt_authority_key: missing (required)" \
  "$work/echo.json" -authority_key
expect_refusal "a missing operator CA option stops the broker" "plugin_opt_operator_ca: missing (required)" \
  "$work/echo.json" -operator_ca
expect_refusal "a bad number stops the broker" "plugin_opt_poll_budget_ms: 'soon' is not a whole number from 0 to 100" \
  "$work/echo.json" "plugin_opt_poll_budget_ms soon"
expect_refusal "a number out of range stops the broker" "plugin_opt_log_interval_s: '0' is not a whole number from 1 to 3600" \
  "$work/echo.json" "plugin_opt_log_interval_s 0"
expect_refusal "a certificate renewal due after the certificate's end stops the broker" \
  "plugin_opt_certificate_renew_after_s: 3600 s is not before the end of the certificate's validity (3600 s)" \
  "$work/echo.json" "plugin_opt_certificate_validity_s 3600" "plugin_opt_certificate_renew_after_s 3600"
expect_refusal "a bad acl_others stops the broker" "plugin_opt_acl_others: 'deny' is neither 'allow' nor 'defer'" \
  "$work/echo.json" -acl_others "plugin_opt_acl_others deny"
# The guard never grants what another ACL source refuses: 'allow' beside an acl_file (or another plugin) stops
# the broker, naming the file and line of that source; 'defer' with no other source would refuse everyone
# everything, and stops it too. (Line 13: write_conf's twelve lines come first.)
: >"$work/acl_file"
expect_refusal "acl_others allow beside an acl_file stops the broker, naming the acl_file's line" \
  "plugin_opt_acl_others allow: the broker has another ACL source, acl_file $work/acl_file ($work/bad$((passed + failed)).conf line 13)" \
  "$work/echo.json" "acl_file $work/acl_file"
expect_refusal "acl_others allow beside another plugin stops the broker" \
  "plugin_opt_acl_others allow: the broker has another ACL source, plugin /usr/lib/no/such_plugin.so" \
  "$work/echo.json" "plugin /usr/lib/no/such_plugin.so"
expect_refusal "acl_others defer with no other ACL source stops the broker" \
  "plugin_opt_acl_others defer: idevs is the broker's only ACL source" \
  "$work/echo.json" -acl_others "plugin_opt_acl_others defer"
expect_refusal "a missing descriptor file stops the broker" "plugin_opt_descriptor: $work/missing.json: cannot open" \
  "$work/missing.json"
cp "$work/echo.json" "$work/unreadable.json"
chmod 000 "$work/unreadable.json"
expect_refusal "an unreadable descriptor stops the broker" "plugin_opt_descriptor: $work/unreadable.json: cannot open: Permission denied" \
  "$work/unreadable.json"
printf '{"version": 1, "process": {"name": "echo",,}}' >"$work/notjson.json"
expect_refusal "a descriptor that is not JSON stops the broker, naming the file" \
  "plugin_opt_descriptor: $work/notjson.json: (descriptor): not valid JSON (near byte" "$work/notjson.json"
sed 's/"qos": 1}],/"qos": 3}],/' "$work/echo.json" >"$work/badqos.json"
expect_refusal "a bad descriptor field stops the broker, naming file and field" \
  "$work/badqos.json: outputs[0].qos: 3 is out of range: 0 to 2" "$work/badqos.json"
sed 's/"event_timeout_ms": 2000}/"event_timeout_ms": 2000, "burst": 5}/' "$work/echo.json" >"$work/badkey.json"
expect_refusal "an unknown descriptor key stops the broker, naming its path" \
  "$work/badkey.json: limits: unknown key 'burst'" "$work/badkey.json"
expect_refusal "a missing authority key file stops the broker" \
  "plugin_opt_authority_key: '$work/nokey': No such file or directory" "$work/echo.json" -authority_key \
  "plugin_opt_authority_key $work/nokey"
expect_refusal "an authority key that is not the certificate's stops the broker" \
  "plugin_opt_authority_key: cannot load '$pki/store.key' with certificate '$pki/authority.crt'" "$work/echo.json" \
  -authority_key "plugin_opt_authority_key $pki/store.key"
expect_refusal "an authority certificate file without PEM stops the broker" \
  "plugin_opt_authority_cert: $work/echo.json: text before the first PEM block" "$work/echo.json" -authority_cert \
  "plugin_opt_authority_cert $work/echo.json"
"$ca_tool" init "$work/other-pki" --name other-ca >/dev/null
expect_refusal "an operator CA other than the descriptor's operator_ca_sha256 stops the broker" \
  "the operator CA certificate is not the one the descriptor pins (operator_ca_sha256)" "$work/echo.json" \
  -operator_ca "plugin_opt_operator_ca $work/other-pki/ca.crt"
cp "$compartment" "$work/compartment-noexec"
chmod 644 "$work/compartment-noexec"
expect_refusal "a compartment program that is not executable stops the broker" \
  "plugin_opt_compartment: '$work/compartment-noexec' is not executable" "$work/echo.json" -compartment \
  "plugin_opt_compartment $work/compartment-noexec"
expect_refusal "a compartment path that is a directory stops the broker" \
  "plugin_opt_compartment: '$work/state' is not a regular file" "$work/echo.json" -compartment \
  "plugin_opt_compartment $work/state"
expect_refusal "a missing state directory stops the broker" \
  "plugin_opt_state_dir: '$work/nostate': No such file or directory" "$work/echo.json" -state_dir \
  "plugin_opt_state_dir $work/nostate"
expect_refusal "a state directory that is a file stops the broker" \
  "plugin_opt_state_dir: '$work/echo.json' is not a directory" "$work/echo.json" -state_dir \
  "plugin_opt_state_dir $work/echo.json"
sed "s|\"topic\": \"$out_topic\"|\"topic\": \"idevs/echo/certificate\"|" "$work/echo.json" >"$work/clash.json"
expect_refusal "a descriptor using the certificate topic stops the broker" \
  "$work/clash.json: an output topic is 'idevs/echo/certificate', where the plugin publishes the certificate" \
  "$work/clash.json"

finish

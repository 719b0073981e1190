#!/usr/bin/env bash
# mosquitto_idevs.so in a real Mosquitto broker on a free loopback port: retained certificate and descriptor,
# a sealed input routed through the compartment (echo logic) to a sealed output, the guard on output topics,
# and bad configurations that stop the broker at start.
#   test_plugin.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so
set -u
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5
for tool in mosquitto mosquitto_pub mosquitto_sub openssl timeout python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool"; echo "0 passed, 1 failed"; exit 1; }
done
mosquitto=$(command -v mosquitto)
work=$(mktemp -d -t idevs-broker.XXXXXX)
broker_pid=
stop_broker() {
  if [ -n "$broker_pid" ]; then
    kill "$broker_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$broker_pid" 2>/dev/null
    wait "$broker_pid" 2>/dev/null
    broker_pid=
  fi
}
trap 'stop_broker; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

# An ASan-built plugin needs the sanitizer runtime in the (uninstrumented) broker.
preload=
if nm -D "$plugin" 2>/dev/null | grep -q ' U __asan_'; then
  preload=$(gcc -print-file-name=libasan.so)
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
fi

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; [ $# -gt 1 ] && [ -f "$2" ] && sed 's/^/    /' "$2" | tail -20; }
check() { # description, command...
  local what=$1; shift
  if "$@" >"$work/out" 2>&1; then ok "$what"; else not_ok "$what" "$work/out"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---- PKI and descriptor ----
pki=$work/pki
"$ca_tool" init "$pki" --name broker-test-ca >/dev/null && "$ca_tool" service "$pki" store >/dev/null &&
  "$ca_tool" service "$pki" sink >/dev/null || { echo "cannot make the PKI"; echo "0 passed, 1 failed"; exit 1; }
uuid_of() { "$ca_tool" show "$1" | sed -n 's/^name: urn:uuid://p'; }
ca_sha=$(openssl x509 -in "$pki/ca.crt" -outform DER | sha256sum | cut -d' ' -f1)
program=$(python3 -c 'import uuid; print(uuid.uuid4())')
in_topic=idevs/echo/in/events out_topic=idevs/echo/out/out
write_descriptor() { # file
  cat >"$1" <<JSON
{"version": 1,
 "process": {"name": "echo", "uuid": "$program", "logic": "$echo_logic", "config": {}},
 "operator_ca_sha256": "$ca_sha",
 "services": [{"name": "store", "uuid": "$(uuid_of "$pki/store.crt")", "certificate": "pki/store.crt"},
              {"name": "sink", "uuid": "$(uuid_of "$pki/sink.crt")", "certificate": "pki/sink.crt"}],
 "inputs": [{"name": "events", "topic": "$in_topic", "from": "store"}],
 "outputs": [{"name": "out", "topic": "$out_topic", "to": "sink", "qos": 1}],
 "requests": [{"name": "ask", "topic": "idevs/echo/req/ask", "response_topic": "idevs/echo/resp/ask",
               "to": "sink", "qos": 1}],
 "limits": {"max_payload": 65536, "queue_depth": 64, "event_timeout_ms": 2000}}
JSON
}
write_descriptor "$work/echo.json"
mkdir -m 700 "$work/state"

port=
write_conf() { # conf, descriptor, extra plugin_opt lines...
  local conf=$1 descriptor=$2; shift 2
  port=$(free_port)
  {
    echo "listener $port 127.0.0.1"
    echo "allow_anonymous true"
    echo "log_dest file $conf.log"
    echo "log_type all"
    echo "plugin $plugin"
    echo "plugin_opt_descriptor $descriptor"
    echo "plugin_opt_authority_key $pki/authority.key"
    echo "plugin_opt_authority_cert $pki/authority.crt"
    echo "plugin_opt_operator_ca $pki/ca.crt"
    echo "plugin_opt_state_dir $work/state"
    echo "plugin_opt_compartment $compartment"
    for line in "$@"; do echo "$line"; done
  } >"$conf"
}

# Started as root, mosquitto drops to its own user before it loads plugins: give it the work directory.
own_work() { if [ "$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then chown -R mosquitto "$work"; fi; }

# Starts the broker on conf and waits until it accepts connections (or exits).
start_broker() { # conf
  own_work
  (LD_PRELOAD=$preload exec "$mosquitto" -c "$1") >"$1.out" 2>&1 &
  broker_pid=$! # mosquitto itself (exec): the only pid stop_broker signals
  for _ in $(seq 100); do
    kill -0 "$broker_pid" 2>/dev/null || return 1
    timeout 2 mosquitto_sub -h 127.0.0.1 -p "$port" -t 'idevs/none' -E >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# ---- a broker with the plugin ----
write_conf "$work/good.conf" "$work/echo.json"
if start_broker "$work/good.conf"; then ok "the broker starts with the plugin"; else
  cat "$work/good.conf.out" >>"$work/good.conf.log" 2>/dev/null; not_ok "the broker starts with the plugin" "$work/good.conf.log"; echo "$passed passed, $failed failed"; exit 1; fi

sub() { timeout 10 mosquitto_sub -h 127.0.0.1 -p "$port" "$@"; }
pub() { timeout 10 mosquitto_pub -h 127.0.0.1 -p "$port" "$@"; }

sub -t idevs/echo/certificate -C 1 -W 5 >"$work/chain.pem" 2>"$work/sub.err"
check "the certificate chain is retained on idevs/echo/certificate" grep -q 'BEGIN CERTIFICATE' "$work/chain.pem"
openssl x509 -in "$work/chain.pem" -out "$work/compartment.crt" 2>/dev/null
check "it passes openssl verify against the operator CA" \
  openssl verify -CAfile "$pki/ca.crt" -untrusted "$pki/authority.crt" "$work/compartment.crt"
sub -t idevs/echo/descriptor -C 1 -W 5 -N >"$work/descriptor.got" 2>"$work/sub.err"
check "the descriptor is retained on idevs/echo/descriptor, byte for byte" cmp "$work/echo.json" "$work/descriptor.got"

policy=(--allow-process-backend-insecure --descriptor "$work/echo.json")
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
stop_broker
check "the broker stops and leaves no compartment behind" bash -c "for c in $children; do ! kill -0 \$c 2>/dev/null || exit 1; done"

# ---- bad configurations stop the broker at start ----
expect_refusal() { # description, expected log text, descriptor, extra plugin_opt lines...
  local what=$1 expected=$2 descriptor=$3; shift 3
  local conf=$work/bad$((passed + failed)).conf
  write_conf "$conf" "$descriptor" "$@"
  own_work
  timeout 20 bash -c 'LD_PRELOAD="$1" "$2" -c "$3" >"$3.out" 2>&1' _ "$preload" "$mosquitto" "$conf"
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -qF -- "$expected" "$conf.log"; then ok "$what"; else
    echo "    exit status $rc, expected a log line with: $expected" >"$work/out"
    cat "$conf.log" "$conf.out" >>"$work/out" 2>/dev/null
    not_ok "$what" "$work/out"
  fi
}
expect_refusal "an unknown plugin_opt stops the broker" "plugin_opt_colour: unknown option" "$work/echo.json" \
  "plugin_opt_colour blue"
sed 's/"qos": 1}],/"qos": 3}],/' "$work/echo.json" >"$work/badqos.json"
expect_refusal "a bad descriptor field stops the broker, naming file and field" \
  "$work/badqos.json: outputs[0].qos: 3 is out of range: 0 to 2" "$work/badqos.json"
expect_refusal "a missing descriptor stops the broker" "$work/missing.json" "$work/missing.json"
expect_refusal "a bad number stops the broker" "plugin_opt_poll_budget_ms: 'soon' is not a whole number" \
  "$work/echo.json" "plugin_opt_poll_budget_ms soon"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

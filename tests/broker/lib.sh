# Shared by the broker tests (sourced): a throw-away PKI and descriptor for the echo logic, mosquitto.conf
# files with the plugin on a free loopback port, and clients of that broker. The work directory, the checks
# ("ok - ..." / "not ok - ..." and the closing "N passed, M failed"), starting and stopping the broker by its pid
# and waiting for log lines come from scripts/lib/broker.sh.
#   Expects: plugin ca_tool env_tool compartment echo_logic set by the caller.
set -u
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/broker.sh"
need_tools mosquitto mosquitto_pub mosquitto_sub openssl timeout python3 pgrep
broker_begin broker
asan_preload "$plugin"
[ "$asan" -eq 0 ] || export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

# ---- PKI and descriptor ----
pki=$work/pki
"$ca_tool" init "$pki" --name broker-test-ca >/dev/null && "$ca_tool" service "$pki" store >/dev/null &&
  "$ca_tool" service "$pki" sink >/dev/null || { echo "cannot make the PKI"; echo "0 passed, 1 failed"; exit 1; }
uuid_of() { "$ca_tool" show "$1" | sed -n 's/^name: urn:uuid://p'; }
ca_sha=$(openssl x509 -in "$pki/ca.crt" -outform DER | sha256sum | cut -d' ' -f1)
program=$(python3 -c 'import uuid; print(uuid.uuid4())')
in_topic=idevs/echo/in/events out_topic=idevs/echo/out/out
req_topic=idevs/echo/req/ask resp_topic=idevs/echo/resp/ask
write_descriptor() { # FILE [REQUEST_QOS] [SINK_RECEIPTS: true or false]
  cat >"$1" <<JSON
{"version": 1,
 "process": {"name": "echo", "uuid": "$program", "logic": "$echo_logic", "config": {}},
 "operator_ca_sha256": "$ca_sha",
 "services": [{"name": "store", "uuid": "$(uuid_of "$pki/store.crt")", "certificate": "pki/store.crt", "receipts": true},
              {"name": "sink", "uuid": "$(uuid_of "$pki/sink.crt")", "certificate": "pki/sink.crt", "receipts": ${3:-false}}],
 "inputs": [{"name": "events", "topic": "$in_topic", "from": "store"}],
 "outputs": [{"name": "out", "topic": "$out_topic", "to": "sink", "qos": 1}],
 "requests": [{"name": "ask", "topic": "$req_topic", "response_topic": "$resp_topic",
               "to": "sink", "qos": ${2:-1}}],
 "refusals": ["not_a_sale", "amount_out_of_range"],
 "limits": {"max_payload": 65536, "queue_depth": 64, "event_timeout_ms": 2000}}
JSON
}
write_descriptor "$work/echo.json"
mkdir -m 700 "$work/state"
policy=(--allow-process-backend-insecure --descriptor "$work/echo.json")

# write_conf CONF DESCRIPTOR [LINE...]: the plugin's usual options, then the extra lines. A line "-NAME" leaves
# option plugin_opt_NAME out; DESCRIPTOR "" leaves plugin_opt_descriptor out.
port=
write_conf() {
  local conf=$1 descriptor=$2; shift 2
  local -A omit=()
  local extra=() line
  for line in "$@"; do
    case $line in -*) omit[${line#-}]=1 ;; *) extra+=("$line") ;; esac
  done
  port=$(free_port)
  {
    echo "listener $port 127.0.0.1"
    echo "allow_anonymous true"
    echo "log_dest file $conf.log"
    echo "log_type all"
    echo "plugin $plugin"
    [ -z "$descriptor" ] || echo "plugin_opt_descriptor $descriptor"
    [ -n "${omit[authority_key]:-}" ] || echo "plugin_opt_authority_key $pki/authority.key"
    [ -n "${omit[authority_cert]:-}" ] || echo "plugin_opt_authority_cert $pki/authority.crt"
    [ -n "${omit[operator_ca]:-}" ] || echo "plugin_opt_operator_ca $pki/ca.crt"
    [ -n "${omit[state_dir]:-}" ] || echo "plugin_opt_state_dir $work/state"
    [ -n "${omit[compartment]:-}" ] || echo "plugin_opt_compartment $compartment"
    [ -n "${omit[acl_others]:-}" ] || echo "plugin_opt_acl_others allow"
    for line in "${extra[@]}"; do echo "$line"; done
  } >"$conf"
}

# service_options: the options of the service tools (idevs-pub, idevs-sub, the service library's clients) for the
# echo process on this broker ($port), with the process backend allowed: common, and store and sink with their
# identities.
service_options() {
  common=(-p "$port" --process echo --policy allow-process-backend-insecure --start-timeout 8000)
  store=(--pki "$pki" --name store "${common[@]}")
  sink=(--pki "$pki" --name sink "${common[@]}")
}

sub() { timeout 20 mosquitto_sub -h 127.0.0.1 -p "$port" "${mqtt_auth[@]}" "$@"; }
pub() { timeout 20 mosquitto_pub -h 127.0.0.1 -p "$port" "${mqtt_auth[@]}" "$@"; }

# The compartment's certificate chain, from its retained topic.
fetch_chain() { sub -t idevs/echo/certificate -C 1 -W 5 >"$1" 2>/dev/null && grep -q 'BEGIN CERTIFICATE' "$1"; }

# seal AS PAYLOAD OUT [TO]: AS (store, sink) seals PAYLOAD to the compartment (or to the chain/cert TO) on the
# input topic (or $seal_topic).
seal() {
  local as=$1 payload=$2 out=$3 to=${4:-$work/chain.pem}
  printf '%s' "$payload" >"$work/seal.in"
  "$env_tool" seal --key "$pki/$as.key" --cert "$pki/$as.crt" --ca "$pki/ca.crt" --to "$to" \
    --topic "${seal_topic:-$in_topic}" "${policy[@]}" --in "$work/seal.in" --out "$out" 2>>"$work/seal.err"
}

# counters FILE: waits for a fresh publication of the $SYS counters (plugin_opt_metrics_interval_s 1) and
# writes "name value" lines; counter NAME FILE prints one value (or "absent").
counters() {
  sleep 2.2
  sub -t '$SYS/broker/idevs/echo/#' -v -W 1 2>/dev/null | sed 's|^\$SYS/broker/idevs/echo/||' >"$1"
  return 0
}
counter() { local v; v=$(awk -v n="$1" '$1 == n {v = $2} END {print v}' "$2"); echo "${v:-absent}"; }

# peer MODE ARGS...: the test client (broker_peer.c) on this broker.
peer() { local mode=$1; shift; timeout 60 "$peer_exe" "$mode" --port "$port" --ca "$pki/ca.crt" "${policy[@]}" "$@"; }

# roundtrip PROCESS PAYLOAD [DESCRIPTOR]: store sends PAYLOAD to the echo process PROCESS (its descriptor
# DESCRIPTOR, by default $work/procs/PROCESS.json) and sink receives it back from its output, opened.
roundtrip() {
  local name=$1 payload=$2 d=${3:-$work/procs/$1.json}
  sub -t "idevs/$name/certificate" -C 1 -W 5 >"$work/$name.chain.pem" 2>/dev/null || return 1
  local pol=(--allow-process-backend-insecure --descriptor "$d")
  timeout 30 "$peer_exe" collect --port "$port" --key "$pki/sink.key" --cert "$pki/sink.crt" --ca "$pki/ca.crt" \
    "${pol[@]}" --from "$work/$name.chain.pem" --topic "idevs/$name/out/out" --count 1 --timeout-s 15 \
    >"$work/$name.got" 2>&1 &
  local c=$!
  wait_for_line "$work/$name.got" ready 100 || { kill $c 2>/dev/null; return 1; }
  timeout 30 "$peer_exe" send --port "$port" --key "$pki/store.key" --cert "$pki/store.crt" --ca "$pki/ca.crt" \
    "${pol[@]}" --to "$work/$name.chain.pem" --topic "idevs/$name/in/events" --payload "$payload" >/dev/null 2>&1 ||
    { kill $c 2>/dev/null; return 1; }
  wait $c && grep -qx -- "$payload" "$work/$name.got"
}

# expect_refusal DESCRIPTION TEXT DESCRIPTOR [LINE...]: a broker with write_conf's configuration (DESCRIPTOR and
# the LINEs as there) stops at start, within 30 s (a broker that hangs fails), with a log line holding TEXT.
expect_refusal() {
  local what=$1 expected=$2 descriptor=$3; shift 3
  local conf=$work/bad$((passed + failed)).conf
  write_conf "$conf" "$descriptor" "$@"
  own_work
  timeout 30 bash -c 'LD_PRELOAD="$1" "$2" -c "$3" >"$3.out" 2>&1' _ "$preload" "$mosquitto" "$conf"
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -qF -- "$expected" "$conf.log"; then ok "$what"; else
    echo "    exit status $rc, expected a log line with: $expected" >"$work/out"
    cat "$conf.log" "$conf.out" >>"$work/out" 2>/dev/null
    not_ok "$what" "$work/out"
  fi
}

# echo_descriptor FILE NAME [UUID] [EVENT_TIMEOUT_MS]: an echo process NAME on topics idevs/NAME/...
echo_descriptor() {
  local file=$1 name=$2 uuid=${3:-$(python3 -c 'import uuid; print(uuid.uuid4())')} timeout_ms=${4:-2000}
  sed -e "s|\"name\": \"echo\", \"uuid\": \"$program\"|\"name\": \"$name\", \"uuid\": \"$uuid\"|" \
      -e "s|idevs/echo/|idevs/$name/|g" -e "s|\"certificate\": \"pki/|\"certificate\": \"$pki/|g" \
      -e "s|\"event_timeout_ms\": 2000|\"event_timeout_ms\": $timeout_ms|" "$work/echo.json" >"$file"
}

#!/usr/bin/env bash
# Services that must not lose what is sent to them (docs/OPERATOR.md, "Services that must not lose what is sent
# to them"), against a real Mosquitto with mosquitto_idevs.so and the echo logic, run with the configuration
# block of that page as it is written there:
#   - a service with a persistent session, stopped while 1,500 requests are sent to it, gets every one when it
#     comes back and answers each: they arrive while it starts, and the library holds them until its start has
#     completed (before, every answer failed with not_now and more than 1,024 were dropped);
#   - a client with another service's password asking for the service's client id does not take its session
#     over; anonymous clients and a wrong password are refused and, since the service's user name (its client
#     id) is not guessable, leave its session alone (Mosquitto 2.0.11 forgets a session when it refuses a
#     connection that asked for its client id);
#   - idevs-pub -f takes a file of exactly the largest payload (16 MiB) and refuses one byte more.
#   test_sessions.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so IDEVS_PUB IDEVS_SUB
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 idevs_pub=$6 idevs_sub=$7
source "$(dirname "$0")/../broker/lib.sh"
command -v mosquitto_passwd >/dev/null || bail "mosquitto_passwd is installed (mosquitto)"
requests=1500

# lib.sh's descriptor, with room for the backlog and the largest payload.
sed -e 's/"max_payload": 65536/"max_payload": 16777216/' -e 's/"queue_depth": 64/"queue_depth": 4096/' \
  "$work/echo.json" >"$work/sessions.json"

# ---- the configuration block of docs/OPERATOR.md, as written there ----
doc=$(dirname "$0")/../../docs/OPERATOR.md
# The block's text as tests/docs/run_examples.py reads it (which also runs it, with every other example).
python3 "$(dirname "$0")/../docs/run_examples.py" --extract "$doc" "service sessions configuration" >"$work/doc.block"
check "docs/OPERATOR.md has the service sessions configuration block" \
  grep -qx 'use_username_as_clientid true' "$work/doc.block"
mkdir -m 700 "$work/docstate" "$work/persist"
port=$(free_port)
sed -e "s|^listener 1883$|listener $port 127.0.0.1|" \
    -e "s|^password_file /etc/mosquitto/idevs.passwd$|password_file $work/idevs.passwd|" \
    -e "s|^persistence_location /var/lib/mosquitto/$|persistence_location $work/persist/|" \
    -e "s|^plugin /usr/local/lib/x86_64-linux-gnu/mosquitto/mosquitto_idevs.so$|plugin $plugin|" \
    -e "s|/etc/idevs/echo.json|$work/sessions.json|; s|/etc/idevs/pki/|$pki/|" \
    -e "s|^plugin_opt_state_dir /var/lib/idevs$|plugin_opt_state_dir $work/docstate|" \
    -e "s|^plugin_opt_compartment /usr/local/libexec/idevs/idevs-compartment$|plugin_opt_compartment $compartment|" \
    "$work/doc.block" >"$work/doc.conf"
printf 'log_dest file %s\nlog_type all\nplugin_opt_metrics_interval_s 1\n' "$work/doc.conf.log" >>"$work/doc.conf"
# User names, hence client ids, nobody can guess (docs/OPERATOR.md says why).
store_user=store-$(openssl rand -hex 8) sink_user=sink-$(openssl rand -hex 8)
mosquitto_passwd -c -b "$work/idevs.passwd" "$store_user" pw-store &&
  mosquitto_passwd -b "$work/idevs.passwd" "$sink_user" pw-sink &&
  mosquitto_passwd -b "$work/idevs.passwd" monitor pw-monitor || bail "mosquitto_passwd makes the password file"
chmod 600 "$work/idevs.passwd"
mqtt_auth=(-u monitor -P pw-monitor)
if start_broker "$work/doc.conf"; then ok "the broker starts with the configuration of docs/OPERATOR.md"; else
  cat "$work/doc.conf.out" >>"$work/doc.conf.log" 2>/dev/null
  bail "the broker starts with the configuration of docs/OPERATOR.md" "$work/doc.conf.log"; fi

common=(-p "$port" --process echo --policy allow-process-backend-insecure --start-timeout 8000)
store=(--pki "$pki" --name store "${common[@]}" -u "$store_user" -P pw-store)
sink=(--pki "$pki" --name sink "${common[@]}" -u "$sink_user" -P pw-sink -x 600)
wait_log() { wait_for_regex "$work/doc.conf.log" "$1" 300; } # regex: at most 30 s
answer='a taxi in 7 min'

# ---- the service subscribes once, with its session, then stops ----
timeout 60 "$idevs_sub" "${sink[@]}" -v --respond "$answer" -W 50 >"$work/sink1.out" 2>"$work/sink1.err" &
sink_pid=$!
bg_pids+=("$sink_pid")
check "the service's client id is its user name, and its session has the request topic" \
  wait_log "^[0-9]+: $sink_user 1 $req_topic\$"
kill -TERM "$sink_pid" 2>/dev/null
wait "$sink_pid" 2>/dev/null
check "... it disconnects, leaving its session to the broker" wait_log "^[0-9]+: Client $sink_user disconnected"

# ---- requests sent while it is away ----
seq "$requests" | sed 's/^/ask:ride /' >"$work/asks"
"$idevs_pub" "${store[@]}" -t events -l -W 60 <"$work/asks" >"$work/pub.out" 2>&1
check "the store publishes $requests events that each make a request to the absent service" test "$?" -eq 0
emitted() { sub -t '$SYS/broker/idevs/echo/emitted' -C 1 -W 3 2>/dev/null; }
for _ in $(seq 60); do [ "$(emitted)" = "$requests" ] && break; sleep 0.5; done
equal "... the compartment sent all $requests requests" "$(emitted)" "$requests"

# ---- nobody takes the session over ----
check "an anonymous client is refused" bash -c "! timeout 10 mosquitto_sub -h 127.0.0.1 -p $port -i sink -t x -E"
check "... also under the service's plain name as user name" \
  bash -c "! timeout 10 mosquitto_sub -h 127.0.0.1 -p $port -u sink -P pw-sink -t x -E"
# (Not tried: the service's own user name with a wrong password. Mosquitto 2.0.11 refuses it and then forgets
# the session, which is why that name must stay private.)
as_sink=$(grep -c " as $sink_user " "$work/doc.conf.log") as_store=$(grep -c " as $store_user " "$work/doc.conf.log")
timeout 10 mosquitto_sub -h 127.0.0.1 -p "$port" -u "$store_user" -P pw-store -i "$sink_user" -t x -E \
  >"$work/intruder.out" 2>&1
sleep 0.5
check "another service's user asking for the service's client id connects under its own, not the service's" \
  bash -c "[ \$(grep -c ' as $sink_user ' '$work/doc.conf.log') -eq $as_sink ] &&
           [ \$(grep -c ' as $store_user ' '$work/doc.conf.log') -gt $as_store ]"

# ---- the service comes back: everything queued arrives during its start, and is answered ----
timeout 120 "$idevs_sub" "${sink[@]}" -v --respond "$answer" -C $((2 * requests)) -W 90 \
  >"$work/sink2.out" 2>"$work/sink2.err"
rc=$?
equal "the service comes back and ends after its $requests requests and their $requests answers (-C)" "$rc" 0
equal "... it got every request queued for it" "$(grep -Ec '^ask [0-9a-f]{32} ride [0-9]+$' "$work/sink2.out")" "$requests"
equal "... each only once" "$(grep -E '^ask ' "$work/sink2.out" | cut -d' ' -f3- | sort -u | wc -l)" "$requests"
equal "... and its answer to each came back through the compartment" \
  "$(grep -Ecx "out [0-9a-f]{32} answer:$answer" "$work/sink2.out")" "$requests"
check "... no answer failed" bash -c "! grep -q 'cannot answer' '$work/sink2.err'"

# ---- idevs-pub -f: the largest payload is 16 MiB, exactly ----
sub -t idevs/echo/certificate -C 1 -W 5 >"$work/retained.crt" 2>/dev/null
sub -t idevs/echo/descriptor -C 1 -W 5 -N >"$work/retained.json" 2>/dev/null
stop_broker
plain_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$plain_port" >"$work/plain.conf"
(exec "$mosquitto" -c "$work/plain.conf") >"$work/plain.out" 2>&1 &
bg_pids+=("$!")
for _ in $(seq 50); do mosquitto_pub -h 127.0.0.1 -p "$plain_port" -t idevs/probe -n 2>/dev/null && break; sleep 0.1; done
# On this plain broker (no plugin) the genuine retained copies let a service verify and publish; nothing
# routes the envelope into a compartment.
mosquitto_pub -h 127.0.0.1 -p "$plain_port" -t idevs/echo/descriptor -r -f "$work/retained.json"
mosquitto_pub -h 127.0.0.1 -p "$plain_port" -t idevs/echo/certificate -r -f "$work/retained.crt"
head -c 16777216 /dev/zero | tr '\0' 'x' >"$work/big"
timeout 60 mosquitto_sub -h 127.0.0.1 -p "$plain_port" -t "$in_topic" -C 1 -W 50 -N >"$work/big.env" 2>/dev/null &
cap_pid=$!
bg_pids+=("$cap_pid")
sleep 0.5
plain=(--pki "$pki" --name store -p "$plain_port" --process echo --policy allow-process-backend-insecure
       --start-timeout 8000)
"$idevs_pub" "${plain[@]}" -t events -f "$work/big" -W 50 >"$work/big.out" 2>&1
check "idevs-pub -f publishes a file of exactly 16 MiB" test "$?" -eq 0
wait "$cap_pid"
check "... its envelope reaches a subscriber" test "$(stat -c %s "$work/big.env" 2>/dev/null || echo 0)" -gt 16777216
printf 'x' >>"$work/big"
"$idevs_pub" "${plain[@]}" -t events -f "$work/big" -W 10 >"$work/big1.out" 2>&1
rc=$?
check "... and refuses one byte more, saying so" bash -c "[ $rc -eq 1 ] && grep -q 'larger than 16777216 bytes' '$work/big1.out'"
finish

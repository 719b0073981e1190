#!/usr/bin/env bash
# Joining across real brokers (docs/SCALING.md, "Joining: one key pair on every host"): broker a runs the echo
# process with keys of its own; broker b, with its own state directory (its own sealing secret, as another host),
# has plugin_opt_join echo and a bridge to a that carries only idevs/echo/join/#, authenticated on a as the peer
# user "joiner" (a's guard lets only peers publish on the join topics; a client that tries is refused). b's compartment gets a's keys
# through the bridge: b then publishes a certificate of a's key pair, routes an input sealed to a's certificate,
# and a restart of b restores the keys without joining. A third broker c, whose descriptor differs by one byte
# (another measurement), is refused and keeps refusing inputs.
#   join_brokers.sh BUILD_DIR
build=$(cd "$1" && pwd)
source "$(dirname "$0")/lib.sh"

# pubkey PEM_FILE: the leaf's public key (Ed25519), one line.
pubkey() { openssl x509 -in "$1" -pubkey -noout 2>/dev/null | tr -d '\n'; }
# chain_of NAME FILE: broker NAME's retained certificate chain of the echo process.
chain_of() { scale_sub "$1" -t idevs/echo/certificate -C 1 -W 5 >"$2" 2>/dev/null && grep -q 'BEGIN CERTIFICATE' "$2"; }

mosquitto_passwd -b -c "$work/peers.passwd" joiner secret-j >/dev/null 2>&1 || bail "the peers' password file"
scale_conf a "password_file $work/peers.passwd" "plugin_opt_peer_user joiner" "plugin_opt_metrics_interval_s 1"
scale_conf b "plugin_opt_join echo" "plugin_opt_metrics_interval_s 1" "plugin_opt_peer_bridge local-b-a"
scale_bridge_options+=("remote_username joiner" "remote_password secret-j")
scale_bridge b a "idevs/echo/join/# both 1"
scale_start a b && scale_wait_bridges || bail "two brokers, b joining, bridge the join topics" "$work/b/mosquitto.conf.log"

blog=$work/b/mosquitto.conf.log alog=$work/a/mosquitto.conf.log
check "b starts joining, asking on idevs/echo/join/request" grep -q "'echo': joining: waiting for the process's keys" "$blog"
if wait_for_text "$blog" "joined; keys granted by an instance certified" 300; then
  ok "b's compartment takes the keys a's instance grants over the bridge"
else bail "b joins" "$blog" "$alog"; fi
# A client is no peer: its join request is refused by a's guard and reaches no compartment.
port=${scale_port[a]}
counters "$work/a0.counters"
pub -q 1 -t idevs/echo/join/request -m "not a peer" >/dev/null 2>&1
counters "$work/a1.counters"
equal "a client's publication on a join topic is refused by the guard" \
  "$(( $(counter guard_denied "$work/a1.counters") - $(counter guard_denied "$work/a0.counters") ))" "1"
check "a logs the grant" grep -q "granted the process's keys to a joining instance on 'idevs/echo/join/grant/" "$alog"
chain_of a "$work/a.pem" && chain_of b "$work/b.pem" || bail "both brokers publish the process's certificate" "$blog"
equal "b's certificate certifies a's key pair" "$(pubkey "$work/b.pem")" "$(pubkey "$work/a.pem")"
if ! cmp -s "$work/a.pem" "$work/b.pem"; then ok "... with b's own evidence (another certificate)"; else
  not_ok "b has its own certificate"; fi

# An input sealed to a's certificate, sent to b only (the bridge carries only the join topics): b opens it, and
# the sink opens b's output having verified b's chain under the same policy.
port=${scale_port[b]}
check "an envelope sealed to a's certificate is routed and opened on b" bash -c '
  "$1" collect --port "$2" --key "$3/sink.key" --cert "$3/sink.crt" --ca "$3/ca.crt" --allow-process-backend-insecure \
    --descriptor "$4" --from "$5/b.pem" --topic "$6" --count 1 --timeout-s 15 >"$5/b-out.got" &
  c=$!; for _ in $(seq 100); do grep -qx ready "$5/b-out.got" && break; sleep 0.1; done
  "$1" send --port "$2" --key "$3/store.key" --cert "$3/store.crt" --ca "$3/ca.crt" --allow-process-backend-insecure \
    --descriptor "$4" --to "$5/a.pem" --topic "$7" --payload sealed-to-a || exit 1
  wait $c && grep -qx sealed-to-a "$5/b-out.got"' _ "$peer_exe" "$port" "$pki" "$work/echo.json" "$work" \
  "$out_topic" "$in_topic"
counters "$work/b.counters"
equal "b's counters: joined 1, join_waiting 0" "$(counter joined "$work/b.counters") $(counter join_waiting "$work/b.counters")" "1 0"

# b restarts (another broker process on its host): the sealed keys open, no join.
scale_stop b
: >"$blog"
scale_start_one b || bail "b starts again" "$blog"
if wait_for_text "$blog" "keys restored" 100; then ok "b restarts from the keys it sealed"; else
  not_ok "b restores the keys" "$blog"; fi
check "... without joining again" bash -c "! grep -q 'joining:' '$blog'"
chain_of b "$work/b2.pem" || bail "b publishes its certificate after the restart" "$blog"
equal "... and the same key pair" "$(pubkey "$work/b2.pem")" "$(pubkey "$work/a.pem")"
scale_stop b

# c: the same descriptor with one more byte, so another measurement; it joins a and gets nothing.
cp "$work/echo.json" "$work/other.json" && printf '\n' >>"$work/other.json"
scale_descriptor=$work/other.json scale_conf c "plugin_opt_join echo" "plugin_opt_metrics_interval_s 1" \
  "plugin_opt_peer_bridge local-c-a"
scale_bridges=() # b's is gone
scale_bridge c a "idevs/echo/join/# both 1"
scale_start_one c && scale_wait_bridges || bail "c bridges the join topics to a" "$work/c/mosquitto.conf.log"
if wait_for_text "$alog" "refused a join: another measurement" 150; then
  ok "a refuses c, a joiner of another measurement"
else not_ok "a refuses c" "$alog"; fi
port=${scale_port[c]}
counters "$work/c.counters"
equal "c goes on waiting and has no grant" \
  "$(counter join_waiting "$work/c.counters") $(counter joined "$work/c.counters")" "1 0"
seal_topic=$in_topic seal store anything "$work/to-c.env" "$work/a.pem"
pub -t "$in_topic" -f "$work/to-c.env"
counters "$work/c.counters"
equal "c refuses inputs meanwhile (rejected/joining)" "$(counter rejected/joining "$work/c.counters")" 1
check "c publishes no certificate" bash -c "! timeout 5 mosquitto_sub -h 127.0.0.1 -p $port -t idevs/echo/certificate -C 1 -W 2 2>/dev/null | grep -q BEGIN"
scale_stop c
scale_stop a
finish

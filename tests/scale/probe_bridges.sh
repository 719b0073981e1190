#!/usr/bin/env bash
# What Mosquitto's bridges do with a plugin's messages, found on real brokers (2.0.11 on Debian 12) and checked
# again at every run: the multi-broker design (docs/SCALING.md, "Mosquitto bridges: what the plugin can rely
# on") stands on these facts, so a Mosquitto that behaves otherwise must fail here, not in production. Each
# "ok - " line states one fact. Brokers load bridge_probe.so (tests/scale/bridge_probe.c), which logs what a
# plugin sees of each MESSAGE and ACL_CHECK event, or the real mosquitto_idevs.so.
#   probe_bridges.sh BUILD_DIR
build=$(cd "$1" && pwd)
source "$(dirname "$0")/lib.sh"
probe=$build/tests/scale/bridge_probe.so
[ -f "$probe" ] || bail "bridge_probe.so is built ($probe)"
fmt='%t|%r|%P|%D|%R|%p' # topic|retained|user properties|correlation data|response topic|payload

# listen NAME ID SECONDS TOPIC...: a v5 subscriber with client id ID on broker NAME for SECONDS (output in
# $work/ID.got, one line a message in $fmt), returned once the broker has acknowledged its subscription.
listen() {
  local name=$1 id=$2 secs=$3; shift 3
  local topics=() t
  for t in "$@"; do topics+=(-t "$t"); done
  background "$work/$id.got" "$work/$id.err" mosquitto_sub -h 127.0.0.1 -p "${scale_port[$name]}" -V 5 -q 1 \
    -i "$id" -F "$fmt" -W "$secs" ${listen_max:+-C "$listen_max"} "${topics[@]}"
  wait_for_regex "$work/$name/mosquitto.conf.log" "Sending SUBACK to $id\$" 50
}
# lines FILE REGEX: how many lines of FILE match REGEX (0 when none, or no file).
lines() { grep -cE -- "$2" "$1" 2>/dev/null || true; }
# probe_log NAME: the bridge-probe lines of broker NAME's log.
probe_log() { grep -a 'bridge-probe: ' "$work/$1/mosquitto.conf.log"; }
# fresh NAME...: forgets the brokers and bridges of the previous experiment (stopped by then).
fresh() {
  local name
  for name in "$@"; do scale_stop "$name"; rm -rf "${work:?}/$name"; unset "scale_port[$name]"; done
  scale_bridges=()
}
pub5() { local name=$1; shift; scale_pub "$name" -V 5 -q 1 "$@"; }

# ---- 1, 2, 4: one bridge, a to b, in each direction; what each broker's plugin sees ----
# b denies writes on probe/out/denied, as the guard denies writes on protected topics.
scale_plain_conf a "plugin $probe"
scale_plain_conf b "plugin $probe" "plugin_opt_deny probe/out/denied"
scale_bridge a b "probe/out/# out 1" "probe/in/# in 1" "probe/both/# both 1" "probe/plugin/# out 1"
printf '%s\n' "remote_username ab-remote-user" "local_username ab-local-user" >>"$work/a/mosquitto.conf"
scale_start a b || bail "two brokers with bridge_probe.so start" "$work/a/mosquitto.conf.log"
scale_wait_bridges || bail "the bridge a to b connects" "$work/a/mosquitto.conf.log" "$work/b/mosquitto.conf.log"

listen a sub-a 6 'probe/#' && listen b sub-b 6 'probe/#' || bail "subscribers on a and b"
pub5 a -t probe/out/x -m out-x -D publish user-property idevs-partition 3 -D publish correlation-data c0ffee \
  -D publish response-topic probe/resp/a
pub5 b -t probe/in/y -m in-y -D publish user-property idevs-partition 4 -D publish correlation-data beef \
  -D publish response-topic probe/resp/b
pub5 a -t probe/both/a -m both-a
pub5 b -t probe/both/b -m both-b
pub5 a -t probe/out/denied -m denied
pub5 a -t probe/trigger -m trigger
pub5 a -t probe/out/ret -m retained-out -r
pub5 b -t probe/in/ret -m retained-in -r
wait_pid "${bg_pids[-2]}" 100; wait_pid "${bg_pids[-1]}" 100
probe_log a >"$work/a.probe"; probe_log b >"$work/b.probe"

equal "an 'out' topic: a message published on a reaches b's subscribers" "$(lines "$work/sub-b.got" '^probe/out/x\|')" 1
equal "an 'in' topic: a message published on b reaches a's subscribers" "$(lines "$work/sub-a.got" '^probe/in/y\|')" 1
# The remote end of a bridge is an ordinary client of that broker, named by the bridge's remote ids.
equal "the receiving end of an 'out' bridge asks ACL_CHECK (the guard) about each bridged PUBLISH, for the client remote_clientid with user remote_username and its address" \
  "$(lines "$work/b.probe" 'ACL_CHECK write topic=probe/out/x client=bridge-a-b user=ab-remote-user address=127\.0\.0\.1 ')" 1
equal "... and hands it to MESSAGE, for the same client, user and address" \
  "$(lines "$work/b.probe" 'MESSAGE topic=probe/out/x client=bridge-a-b user=ab-remote-user address=127\.0\.0\.1 ')" 1
equal "... and an ACL_CHECK refusal there drops the bridged message (b's subscribers never get it)" \
  "$(lines "$work/b.probe" 'ACL_CHECK write topic=probe/out/denied client=bridge-a-b .* answer=denied')/$(lines "$work/sub-b.got" '^probe/out/denied\|')" 1/0
# The end that holds the bridge sees its own bridge connection: no address, the local ids.
equal "a message arriving over the broker's own bridge ('in') reaches MESSAGE, for the client local_clientid with user local_username and no address" \
  "$(lines "$work/a.probe" 'MESSAGE topic=probe/in/y client=local-a-b user=ab-local-user address=- ')" 1
equal "... and never ACL_CHECK (Mosquitto allows every write of its own bridges)" \
  "$(lines "$work/a.probe" 'ACL_CHECK .* client=local-a-b ')" 0
equal "a 'both' topic: each side's subscribers get each message once (no echo over the bridge it came by)" \
  "$(lines "$work/sub-a.got" '^probe/both/')/$(lines "$work/sub-b.got" '^probe/both/')" 2/2
equal "user property idevs-partition crosses a v5 bridge, 'out' (seen by b's subscriber and b's plugin)" \
  "$(lines "$work/sub-b.got" '^probe/out/x\|.*idevs-partition:3')/$(lines "$work/b.probe" 'MESSAGE topic=probe/out/x .*partition=3$')" 1/1
equal "... and 'in' (seen by a's subscriber and a's plugin)" \
  "$(lines "$work/sub-a.got" '^probe/in/y\|.*idevs-partition:4')/$(lines "$work/a.probe" 'MESSAGE topic=probe/in/y .*partition=4$')" 1/1
equal "correlation data and response topic cross a v5 bridge, 'out' and 'in'" \
  "$(lines "$work/sub-b.got" '^probe/out/x\|0\|idevs-partition:3\|c0ffee\|probe/resp/a\|out-x$')/$(lines "$work/sub-a.got" '^probe/in/y\|0\|idevs-partition:4\|beef\|probe/resp/b\|in-y$')" 1/1
equal "the retain flag crosses a bridge ('out': b's plugin sees retain=1)" \
  "$(lines "$work/b.probe" 'MESSAGE topic=probe/out/ret .*retain=1 ')" 1
scale_sub b -V 5 -t probe/out/ret -t probe/in/ret -F "$fmt" -W 2 >"$work/late-b.got" 2>/dev/null
scale_sub a -V 5 -t probe/out/ret -t probe/in/ret -F "$fmt" -W 2 >"$work/late-a.got" 2>/dev/null
equal "a retained message crosses a bridge and is retained on the other broker too, 'out' and 'in' (a later subscriber gets it, retained)" \
  "$(lines "$work/late-b.got" '^probe/out/ret\|1\|')/$(lines "$work/late-a.got" '^probe/in/ret\|1\|')" 1/1
# 4: what a plugin publishes with no client (as idevs_routing_publish does) is an ordinary message for bridges.
equal "what a plugin publishes (mosquitto_broker_publish_copy and mosquitto_broker_publish, no client) crosses an 'out' bridge" \
  "$(lines "$work/sub-b.got" '^probe/plugin/copy\|0\|.*trigger$')/$(lines "$work/sub-b.got" '^probe/plugin/owned\|0\|.*trigger$')" 1/1
equal "... and reaches the receiving broker's MESSAGE as the bridge client's publication; the sending broker's MESSAGE never sees it" \
  "$(lines "$work/b.probe" 'MESSAGE topic=probe/plugin/(copy|owned) client=bridge-a-b ')/$(lines "$work/a.probe" 'MESSAGE topic=probe/plugin/')" 2/0

# A client id proves nothing: an ordinary client may connect with the bridge's local_clientid. It then takes the
# bridge's place in the broker's table of client ids (the bridge is thrown off and reconnects); the plugin still
# tells it apart by its address.
listen a sub-a2 10 'probe/in/#' || not_ok "a subscriber on a before the impostor"
timeout 10 mosquitto_pub -h 127.0.0.1 -p "${scale_port[a]}" -V 5 -q 1 -i local-a-b -t probe/in/spoof -m spoof
probe_log a >"$work/a.probe"
equal "a client connecting with the bridge's local_clientid is seen by MESSAGE with that id and its own address" \
  "$(lines "$work/a.probe" 'MESSAGE topic=probe/in/spoof client=local-a-b user=- address=127\.0\.0\.1 ')" 1
if wait_for_text "$work/a/mosquitto.conf.log" "Client local-a-b already connected, closing old connection." 20 &&
   wait_for_text "$work/b/mosquitto.conf.log" "Client bridge-a-b closed its connection." 50; then
  ok "... and throws the bridge off: the broker closes the bridge's connection ('Client local-a-b already connected, closing old connection.')"
else not_ok "an impostor of the bridge's local_clientid throws the bridge off" "$work/a/mosquitto.conf.log"; fi
# While it is off, the remote broker keeps nothing for it: Mosquitto 2.0.11 sends a v5 bridge's CONNECT with no
# session expiry interval (0), so "cleansession false" keeps no session on a v5 remote.
pub5 b -t probe/in/meanwhile -m meanwhile
wait_pid "$last_pid" 200
equal "... it reconnects (restart_timeout), but a QoS 1 message published on the remote while it was off never comes in ('in' over v5: no session kept on the remote)" \
  "$(lines "$work/b/mosquitto.conf.log" "New client connected from .* as bridge-a-b ")/$(lines "$work/sub-a2.got" '^probe/in/meanwhile\|')" 2/0
fresh a b

# ---- 3: loops and duplicates, per topology; one message published on the first broker, copies counted ----
# run_topology NAMES... -- BRIDGE_SPEC...: each BRIDGE_SPEC is FROM:TO[:v311 or :v311-noprivate] (default v5); every
# broker's subscriber on loop/# counts the copies of one message published on the first broker, for 3 s (a loop
# shows as many copies). Sets topology_got ("a:1 b:1 ...") and topology_max (the most copies on one broker).
run_topology() {
  local names=() name spec from to opts pids=() n saved=("${scale_bridge_options[@]}")
  topology_got= topology_max=0
  while [ "$1" != -- ]; do names+=("$1"); shift; done; shift
  for name in "${names[@]}"; do scale_plain_conf "$name"; done
  for spec in "$@"; do
    IFS=: read -r from to opts <<<"$spec"
    case ${opts:-v5} in
      v5) scale_bridge_options=("${saved[@]}") ;;
      v311) scale_bridge_options=("bridge_protocol_version mqttv311" "${saved[@]:1}" "try_private true") ;;
      v311-noprivate) scale_bridge_options=("bridge_protocol_version mqttv311" "${saved[@]:1}" "try_private false") ;;
    esac
    scale_bridge "$from" "$to" "loop/# both 1"
  done
  scale_bridge_options=("${saved[@]}")
  if scale_start "${names[@]}" && scale_wait_bridges; then
    # At most 1000 copies each: under a flood of copies mosquitto_sub 2.0.11 does not stop at -W, and a loop shows
    # as soon as a message comes more than twice.
    for name in "${names[@]}"; do listen_max=1000 listen "$name" "loop-$name" 3 'loop/#' && pids+=("$last_pid"); done
    pub5 "${names[0]}" -t loop/one -m one
    for n in "${pids[@]}"; do wait_pid "$n" 100 >/dev/null; done
    for name in "${names[@]}"; do
      n=$(lines "$work/loop-$name.got" '^loop/one\|')
      topology_got+="${topology_got:+ }$name:$n"
      [ "$n" -le "$topology_max" ] || topology_max=$n
    done
  else
    topology_got="the brokers did not start or bridge"
  fi
  fresh "${names[@]}"
}

# Trees of v5 bridges: no copy twice. The no-local subscription option (v5) keeps a message from going back over
# the bridge it came by, and a tree has no other way back.
run_topology h l1 l2 l3 -- l1:h l2:h l3:h
equal "hub and leaves (each leaf bridges 'both' to the hub, v5): a message published on the hub reaches every broker once" \
  "$topology_got" "h:1 l1:1 l2:1 l3:1"
run_topology l1 h l2 l3 -- l1:h l2:h l3:h
equal "hub and leaves (v5): a message published on a leaf reaches every broker once" "$topology_got" "l1:1 h:1 l2:1 l3:1"
run_topology a b c -- a:b b:c
equal "a chain a->b->c (each bridges 'both' to the next, v5): a message published at one end reaches every broker once" \
  "$topology_got" "a:1 b:1 c:1"
run_topology b a c -- a:b b:c
equal "a chain a->b->c (v5): a message published in the middle reaches every broker once" "$topology_got" "b:1 a:1 c:1"
# MQTT 3.1.1 bridges: try_private (the default) is what keeps the message from coming back.
run_topology a b -- a:b:v311
equal "one MQTT 3.1.1 bridge 'both' with try_private true: each broker gets the message once" "$topology_got" "a:1 b:1"
run_topology a b -- a:b:v311-noprivate
equal "one MQTT 3.1.1 bridge 'both' with try_private false: the message comes back once to the broker it was published on (a duplicate)" \
  "$topology_got" "a:2 b:1"
# Cycles: nothing in Mosquitto detects them.
run_topology a b -- a:b b:a
if [ "$topology_max" -gt 2 ]; then ok "two brokers each bridging 'both' to the other (v5) loop: one message, copies without end ($topology_got in 3 s, counted up to 1000)"
else not_ok "two brokers each bridging 'both' to the other loop ($topology_got)"; fi
run_topology a b c -- a:b b:c c:a
if [ "$topology_max" -gt 2 ]; then ok "a triangle of v5 bridges 'both' loops: one message, copies without end ($topology_got in 3 s, counted up to 1000)"
else not_ok "a triangle of v5 bridges 'both' loops ($topology_got)"; fi

# bridge_attempt_unsubscribe: a remote broker keeps a 3.1.1 bridge's subscriptions (cleansession false). A topic
# turned from 'in' to 'out' keeps coming in, unless the bridge unsubscribes (the default). A v5 bridge has no
# session on the remote to keep them in.
declare -A stale=()
for mode in "mqttv311 true" "mqttv311 false" "mqttv50 false"; do
  read -r version attempt <<<"$mode"
  scale_plain_conf a; scale_plain_conf b
  saved=("${scale_bridge_options[@]}")
  scale_bridge_options=("bridge_protocol_version $version" "${saved[@]:1}")
  scale_bridge a b "stale/# in 1"
  scale_bridge_options=("${saved[@]}")
  scale_start a b && scale_wait_bridges || not_ok "bridge_attempt_unsubscribe ($mode): the brokers bridge"
  scale_stop a
  sed -i "s|^topic stale/# in 1\$|topic stale/# out 1\nbridge_attempt_unsubscribe $attempt|" "$work/a/mosquitto.conf"
  port=${scale_port[a]}
  scale_start a || not_ok "bridge_attempt_unsubscribe ($mode): a starts again"
  for _ in $(seq 100); do
    [ "$(lines "$work/b/mosquitto.conf.log" "Sending CONNACK to bridge-a-b ")" -ge 2 ] && break; sleep 0.1
  done
  sleep 0.5
  listen a "stale-$attempt" 2 'stale/#'
  pub5 b -t stale/x -m stale
  wait_pid "$last_pid" 100
  stale[$mode]=$(lines "$work/stale-$attempt.got" '^stale/x\|')
  fresh a b
done
equal "a topic turned from 'in' to 'out' on a 3.1.1 bridge (cleansession false) stops coming in with bridge_attempt_unsubscribe true, and keeps coming in with false" \
  "${stale[mqttv311 true]}/${stale[mqttv311 false]}" 0/1
equal "... while on a v5 bridge it stops coming in even with false (the remote kept no session)" "${stale[mqttv50 false]}" 0

# ---- 5: the remote broker killed (kill -9) and restarted; QoS 1 messages for it wait on the bridge's side ----
# b keeps a persistent subscriber's session (autosaved each second); a's bridge (cleansession false) holds what
# is published on a while b is down.
scale_plain_conf a "persistence true" "persistence_location $work/a/"
scale_plain_conf b "persistence true" "persistence_location $work/b/" "autosave_interval 1"
scale_bridge a b "q/# out 1"
scale_start a b && scale_wait_bridges || not_ok "kill -9: the brokers bridge"
scale_sub b -V 5 -c -i keeper -q 1 -t 'q/#' -W 1 >/dev/null 2>&1
sleep 2.5 # b's autosave keeps keeper's subscription through kill -9
scale_stop b 9
for i in 1 2 3 4 5; do pub5 a -t "q/$i" -m "queued-$i"; done
port=${scale_port[b]}
scale_start b || not_ok "kill -9: b starts again on its port" "$work/b/mosquitto.conf.log"
for _ in $(seq 150); do
  [ "$(lines "$work/b/mosquitto.conf.log" "New client connected from .* as bridge-a-b ")" -ge 2 ] && break; sleep 0.1
done
sleep 1
scale_sub b -V 5 -c -i keeper -q 1 -t 'q/#' -W 3 -F "$fmt" >"$work/keeper.got" 2>/dev/null
equal "QoS 1 messages published while the remote broker was killed (kill -9) wait on the bridge (cleansession false) and are delivered after it restarts, each once, in order" \
  "$(grep -o 'queued-[0-9]' "$work/keeper.got" | tr '\n' ' ')" "queued-1 queued-2 queued-3 queued-4 queued-5 "
fresh a b

# ---- the real plugin: its retained certificate and descriptor over a bridge, and its guard today ----
scale_conf a
scale_plain_conf b "plugin $probe"
scale_bridge a b "idevs/# out 1"
scale_start a b && scale_wait_bridges || bail "a broker with mosquitto_idevs.so bridges to a plain one" "$work/a/mosquitto.conf.log"
sleep 0.5
scale_sub b -V 5 -t idevs/echo/certificate -t idevs/echo/descriptor -W 2 -F '%t|%r' >"$work/retained.got" 2>/dev/null
scale_sub b -t idevs/echo/certificate -C 1 -W 2 >"$work/b-chain.pem" 2>/dev/null
scale_sub a -t idevs/echo/certificate -C 1 -W 2 >"$work/a-chain.pem" 2>/dev/null
equal "the plugin's retained certificate and descriptor cross an 'out' bridge and are retained on the other broker" \
  "$(sort "$work/retained.got" | tr '\n' ' ')" "idevs/echo/certificate|1 idevs/echo/descriptor|1 "
if [ -s "$work/a-chain.pem" ] && cmp -s "$work/a-chain.pem" "$work/b-chain.pem"; then
  ok "... byte for byte the certificate chain the plugin published"
else not_ok "the bridged certificate chain is the plugin's"; fi
fresh a b

# Both brokers load the plugin for the same descriptor, bridged 'both': each guard refuses the other's retained
# certificate and descriptor, at ACL_CHECK on the bridge's remote end, at MESSAGE on the end that holds the bridge.
scale_conf a
scale_conf b
scale_bridge a b "idevs/# both 1"
scale_start a b && scale_wait_bridges || bail "two brokers with mosquitto_idevs.so bridge" "$work/a/mosquitto.conf.log"
if wait_for_text "$work/b/mosquitto.conf.log" "refused a publication by client 'bridge-a-b' on 'idevs/echo/" 50; then
  ok "today's guard refuses the peer's retained certificate and descriptor arriving over the peer's bridge (ACL_CHECK, client remote_clientid)"
else not_ok "today's guard refuses the peer's certificate at ACL_CHECK" "$work/b/mosquitto.conf.log"; fi
if wait_for_text "$work/a/mosquitto.conf.log" "client 'local-a-b' was allowed to publish on 'idevs/echo/" 50; then
  ok "... and drops it arriving over its own bridge (MESSAGE, client local_clientid; ACL_CHECK was never asked)"
else not_ok "today's guard drops the peer's certificate at MESSAGE" "$work/a/mosquitto.conf.log"; fi
fresh a b
finish

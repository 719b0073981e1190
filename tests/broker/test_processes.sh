#!/usr/bin/env bash
# Many integration processes on one broker (mosquitto_idevs.so loaded once, plugin_opt_descriptor repeated):
# 16 echo processes each with its own compartment, state, retained topics, routing and counters plus totals;
# conflicting descriptors and a second load of the plugin stopping the broker with a message naming the
# problem; the guard over every process's protected topics (its ACL arrangements: test_guard.sh); RELOAD
# adding and removing processes from plugin_opt_descriptor_dir; a hung process not holding up another's
# deliveries.
#   test_processes.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"
mkdir -p "$work/procs" "$work/dir"

# roundtrip NAME PAYLOAD (lib.sh): store seals PAYLOAD to process NAME ($work/procs/NAME.json), sink must
# receive it back from NAME's output.
sys() { sub -t "\$SYS/broker/idevs/$1" -C 1 -W 4 2>/dev/null; }

# ---- 16 processes ----
names=()
for i in $(seq -w 1 16); do names+=("p$i"); echo_descriptor "$work/procs/p$i.json" "p$i"; done
lines=()
for n in "${names[@]}"; do lines+=("plugin_opt_descriptor $work/procs/$n.json"); done
write_conf "$work/sixteen.conf" "" "${lines[@]}" "plugin_opt_metrics_interval_s 1"
if start_broker "$work/sixteen.conf"; then ok "the broker starts with 16 processes from one plugin line"; else
  bail "the broker starts with 16 processes from one plugin line" "$work/sixteen.conf.log"; fi
children=$(pgrep -P "$broker_pid" | tr '\n' ' ')
equal "16 compartments run, children of the broker" "$(echo $children | wc -w)" 16
certs=0
for n in "${names[@]}"; do
  sub -t "idevs/$n/certificate" -C 1 -W 5 2>/dev/null | grep -q 'BEGIN CERTIFICATE' && certs=$((certs + 1))
done
equal "each process's certificate is retained on idevs/<process>/certificate" "$certs" 16
routed=0
for n in "${names[@]}"; do roundtrip "$n" "hello $n" && routed=$((routed + 1)); done
equal "each process routes a sealed input to its own sealed output" "$routed" 16
states=0
for n in "${names[@]}"; do [ -f "$work/state/$n/sealing.key" ] && states=$((states + 1)); done
equal "each process keeps its state under <state_dir>/<process>/" "$states" 16
sleep 1.5
equal "each process has its counters under \$SYS/broker/idevs/<process>/ (p07 done/ok)" "$(sys p07/done/ok)" 1
equal "... and the totals under \$SYS/broker/idevs/totals/ (done/ok)" "$(sys totals/done/ok)" 16
equal "... with the number of processes" "$(sys totals/processes)" 16
# The guard covers every process's protected topics, the last one's as much as the first's.
for n in p01 p16; do
  sub -t "idevs/$n/out/out" -C 1 -W 2 >"$work/forged-$n.got" 2>/dev/null &
  s=$!; sleep 0.3
  pub -q 1 -t "idevs/$n/out/out" -m forged >/dev/null 2>&1
  pub -r -q 1 -t "idevs/$n/certificate" -m forged >/dev/null 2>&1
  wait $s
  check "a client's write on $n's output never reaches a subscriber" test ! -s "$work/forged-$n.got"
  check "... nor replaces its retained certificate" bash -c "timeout 5 mosquitto_sub -p $port -t idevs/$n/certificate -C 1 -W 3 | grep -q 'BEGIN CERTIFICATE'"
done
stop_broker
check "stopping the broker stops all 16 compartments" bash -c "for c in $children; do ! kill -0 \$c 2>/dev/null || exit 1; done"
sanitizer_check "$work/sixteen.conf"

# ---- what cannot share a broker ----
echo_descriptor "$work/procs/dupname.json" p01
expect_refusal "two descriptors with the same process name stop the broker, naming both files" \
  "$work/procs/p01.json and $work/procs/dupname.json both declare the process 'p01'" "" \
  "plugin_opt_descriptor $work/procs/p01.json" "plugin_opt_descriptor $work/procs/dupname.json"
echo_descriptor "$work/procs/dupuuid.json" other "$(sed -n 's/.*"uuid": "\([^"]*\)", "logic".*/\1/p' "$work/procs/p02.json")"
expect_refusal "two descriptors with the same program UUID stop the broker, naming both files" \
  "$work/procs/p02.json and $work/procs/dupuuid.json both declare the program UUID" "" \
  "plugin_opt_descriptor $work/procs/p02.json" "plugin_opt_descriptor $work/procs/dupuuid.json"
echo_descriptor "$work/procs/overlap.json" overlap
sed -i 's|idevs/overlap/in/events|idevs/p03/out/out|' "$work/procs/overlap.json"
expect_refusal "two descriptors sharing a topic stop the broker, naming both files and the topic" \
  "$work/procs/p03.json ('p03') and $work/procs/overlap.json ('overlap') both use the topic 'idevs/p03/out/out'" "" \
  "plugin_opt_descriptor $work/procs/p03.json" "plugin_opt_descriptor $work/procs/overlap.json"
echo_descriptor "$work/procs/totals.json" totals
expect_refusal "a process named 'totals' stops the broker: the name of the counters' totals" \
  "the process name 'totals' is reserved" "" "plugin_opt_descriptor $work/procs/totals.json"
# A second plugin line for the same file, or for a copy under another name.
plugin_lines() { # the usual plugin block for descriptor $1, as extra lines
  printf '%s\n' "plugin $2" "plugin_opt_descriptor $1" "plugin_opt_authority_key $pki/authority.key" \
    "plugin_opt_authority_cert $pki/authority.crt" "plugin_opt_operator_ca $pki/ca.crt" \
    "plugin_opt_state_dir $work/state" "plugin_opt_compartment $compartment" "plugin_opt_acl_others allow"
}
# (The first copy leaves plugin_opt_acl_others out: to it, a copy under another name is another plugin.)
cp "$plugin" "$work/mosquitto_idevs_copy.so"
for second in "$plugin" "$work/mosquitto_idevs_copy.so"; do
  mapfile -t more < <(plugin_lines "$work/procs/p05.json" "$second")
  expect_refusal "loading the plugin a second time ($(basename "$second")) stops the broker, saying to repeat plugin_opt_descriptor" \
    "mosquitto_idevs.so is already loaded in this broker: load it once, and repeat plugin_opt_descriptor" "" \
    "plugin_opt_descriptor $work/procs/p04.json" -acl_others "${more[@]}"
done

# ---- RELOAD: processes from plugin_opt_descriptor_dir come and go ----
echo_descriptor "$work/dir/d1.json" d1
echo_descriptor "$work/dir/d2.json" d2
cp "$work/dir/d1.json" "$work/procs/d1.json"; cp "$work/dir/d2.json" "$work/procs/d2.json"
write_conf "$work/dir.conf" "" "plugin_opt_descriptor_dir $work/dir"
start_broker "$work/dir.conf" || bail "the broker starts with plugin_opt_descriptor_dir" "$work/dir.conf.log"
check "d1 routes" roundtrip d1 "one"
check "d2 routes" roundtrip d2 "two"
echo_descriptor "$work/dir/d3.json" d3; cp "$work/dir/d3.json" "$work/procs/d3.json"
rm "$work/dir/d2.json"
printf ' \n' >>"$work/dir/d1.json"
kill -HUP "$broker_pid"
wait_started() { for _ in $(seq 100); do grep -q "$1" "$work/dir.conf.log" && return 0; sleep 0.1; done; return 1; }
check "SIGHUP starts the process of a new descriptor file" wait_started "'d3': reload: started from the new descriptor"
check "... which routes" roundtrip d3 "three"
check "... the process of a removed file stops after draining" wait_started "'d2': stopped and removed after its queue drained"
check "... its retained certificate is cleared" bash -c "! timeout 5 mosquitto_sub -p $port -t idevs/d2/certificate -C 1 -W 2 | grep -q ."
check "... a changed descriptor keeps running the measured version, with a warning" \
  grep -q "idevs: 'd1': reload: the descriptor '$work/dir/d1.json' changed" "$work/dir.conf.log"
check "... and still routes" roundtrip d1 "one again"
equal "... its compartment is gone: two run, d1's and d3's" "$(pgrep -P "$broker_pid" | wc -l)" 2
stop_broker

# ---- a hung process does not hold up another's deliveries ----
echo_descriptor "$work/procs/slow.json" slow "" 30000
echo_descriptor "$work/procs/fast.json" fast
write_conf "$work/hang.conf" "" "plugin_opt_descriptor $work/procs/slow.json" "plugin_opt_descriptor $work/procs/fast.json" \
  "plugin_opt_metrics_interval_s 1"
start_broker "$work/hang.conf" || bail "the broker starts (slow and fast)" "$work/hang.conf.log"
sub -t idevs/slow/certificate -C 1 -W 5 >"$work/slow.chain.pem" 2>/dev/null
slow_pid=$(pgrep -P "$broker_pid" | head -1)
kill -STOP "$slow_pid"
timeout 30 "$peer_exe" send --port "$port" --key "$pki/store.key" --cert "$pki/store.crt" --ca "$pki/ca.crt" \
  --allow-process-backend-insecure --descriptor "$work/procs/slow.json" --to "$work/slow.chain.pem" \
  --topic idevs/slow/in/events --count 50 >/dev/null 2>&1
fast_ok=0
for k in $(seq 10); do roundtrip fast "fast $k" && fast_ok=$((fast_ok + 1)); done
equal "while 'slow' is stopped with 50 deliveries waiting, 'fast' completes every round trip" "$fast_ok" 10
sleep 1.5
equal "... before 'slow' was ever killed or restarted (its event timeout is 30 s)" "$(sys slow/restarts)" 0
kill -CONT "$slow_pid"
stop_broker

# (docs/OPERATOR.md's two-process configuration: tests/docs/run_examples.py runs it as written there)
finish

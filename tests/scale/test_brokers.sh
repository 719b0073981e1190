#!/usr/bin/env bash
# The case study through three brokers (docs/SCALING.md, "A hub with leaf brokers"): a hub and two leaves, each
# leaf bridged to the hub with MQTT v5, every broker loading mosquitto_idevs.so for the same rewards descriptor
# (a pool of 2 compartments each), owning a third of its 64 partitions (plugin_opt_ownership), with its own
# instance numbers (plugin_opt_instance_base) and its own state directory. The hub lets the leaves' bridges
# through its guard by their authenticated user names (plugin_opt_peer_user, password_file), each leaf its own
# bridge (plugin_opt_peer_bridge). The store and messaging are clients of leaf a, the taxi service of the hub.
# While the store publishes 200 sales at 40 a second, one compartment of leaf b is killed with SIGKILL, then leaf b
# itself; its partitions move to the hub: the hub's ownership file gives it b's partitions and adopts b's state
# directory, and a RELOAD makes it so.
# Checks: every qualifying sale booked and confirmed exactly once, nothing else; each broker routed sales and
# refused others' as not_owner; the hub adopted b's replay record and took b's partitions; the peers' publications
# passed the guards; no service refused an envelope.
# With "balancer" (docs/SCALING.md, "Brokers behind a load balancer"), the same three brokers behind haproxy,
# and every service connects through it, to whichever broker it picks: those on leaf b connect again when it dies.
#   test_brokers.sh BUILD_DIR [hub|balancer] [SALES]
set -u
here=$(cd "$(dirname "$0")" && pwd)
IDEVS_ROOT=$(cd "$here/../.." && pwd)
build=$(cd "$1" && pwd) mode=${2:-hub} sales=${3:-200}
source "$here/lib.sh"
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
need_tools sqlite3 mosquitto_passwd
[ "$mode" = hub ] || need_tools haproxy

cs_init "$build" "$work/cs" || bail "the case study's programs are built"
cs_make_pki || bail "the operator makes the PKI"
"$CS_STORE" seed --db "$work/store.sqlite" --sales "$sales" >"$work/seed.log" 2>&1 || bail "the store seeds" "$work/seed.log"
CS_INSTANCES=2 cs_write_descriptor 2>"$work/descriptor.err" || bail "the descriptor is written" "$work/descriptor.err"

# Each broker's configuration is docs/SCALING.md's, as written there ("A hub with leaf brokers"), with this run's
# paths and ports: the hub's block, and the leaf block for a and, with b for a, for b.
declare -A owns=([a]=0-20 [b]=21-41 [hub]=42-63)
doc=$IDEVS_ROOT/docs/SCALING.md
extract() { python3 "$IDEVS_ROOT/tests/docs/run_examples.py" --extract "$doc" "$1"; }
extract "hub configuration" >"$work/hub.block" && extract "leaf configuration" >"$work/leaf.block" &&
  grep -q '^plugin_opt_peer_user bridge-b$' "$work/hub.block" && grep -q '^connection a-hub$' "$work/leaf.block" ||
  bail "docs/SCALING.md has the hub's and the leaves' configuration blocks"
for name in hub a b; do
  mkdir -p "$work/$name" && mkdir -p -m 700 "$work/$name/state"
  echo "rewards ${owns[$name]}" >"$work/$name/ownership"
  scale_port[$name]=$(free_port)
done
for name in hub a b; do
  block=$work/leaf.block base=0
  [ "$name" = hub ] && block=$work/hub.block
  [ "$name" = b ] && base=64
  sed -e "s|^listener 1883\$|listener ${scale_port[$name]} 127.0.0.1|" \
      -e "s|/usr/local/lib/x86_64-linux-gnu/mosquitto/mosquitto_idevs.so|$plugin|" \
      -e "s|/usr/local/libexec/idevs/idevs-compartment|$compartment|" \
      -e "s|/etc/idevs/rewards.json|$CS_DESCRIPTOR|; s|/etc/idevs/pki/|$CS_PKI/|" \
      -e "s|^plugin_opt_state_dir /var/lib/idevs\$|plugin_opt_state_dir $work/$name/state|" \
      -e "s|/etc/idevs/[a-z]*\.owners|$work/$name/ownership|; s|/etc/mosquitto/peers.passwd|$work/hub/passwd|" \
      -e "s|^address hub.example:1883\$|address 127.0.0.1:${scale_port[hub]}|" \
      -e "s|^plugin_opt_instance_base 0\$|plugin_opt_instance_base $base|" \
      -e "/^plugin_opt_peer_bridge\|^connection\|_clientid\|_username\|^remote_password/s/\ba\b/$name/g" \
      -e "/^remote_password/s/SECRET-A/secret-$name/" \
      "$block" >"$work/$name/mosquitto.conf"
  printf 'log_dest file %s\nlog_type all\nplugin_opt_metrics_interval_s 1\n' "$work/$name/mosquitto.conf.log" \
    >>"$work/$name/mosquitto.conf"
done
for leaf in a b; do
  grep -q "^remote_username bridge-$leaf\$" "$work/$leaf/mosquitto.conf" ||
    bail "leaf $leaf's configuration names its own bridge user" "$work/$leaf/mosquitto.conf"
  scale_bridges+=("$leaf hub bridge-$leaf-hub $(grep -c '^topic .* both ' "$work/$leaf/mosquitto.conf")")
done
mosquitto_passwd -b -c "$work/hub/passwd" bridge-a secret-a >/dev/null 2>&1 &&
  mosquitto_passwd -b "$work/hub/passwd" bridge-b secret-b >/dev/null 2>&1 || bail "the hub's password file"
own_work "$work"

# One key pair for the process on every broker: the hub makes it, each leaf joins (plugin_opt_join).
scale_start hub || bail "the hub starts" "$work/hub/mosquitto.conf.log"
wait_for_text "$work/hub/mosquitto.conf.log" "'rewards': compartment certified" 150 ||
  bail "the hub's compartments are certified" "$work/hub/mosquitto.conf.log"
scale_start a b || bail "the leaves start" "$work/a/mosquitto.conf.log" "$work/b/mosquitto.conf.log"
for leaf in a b; do
  wait_for_text "$work/$leaf/mosquitto.conf.log" "joined; keys granted by an instance certified" 300 &&
    wait_for_text "$work/$leaf/mosquitto.conf.log" "(logic 'rewards', keys restored)" 150 &&
    ok "leaf $leaf joins: the process's keys granted over the bridge" ||
    bail "leaf $leaf joins" "$work/$leaf/mosquitto.conf.log" "$work/hub/mosquitto.conf.log"
done
scale_wait_bridges || bail "both bridges are up" "$work/hub/mosquitto.conf.log"
ok "three brokers run the process, each leaf bridged to the hub"
for name in hub a b; do
  grep -q "'rewards': routes partitions ${owns[$name]}\$" "$work/$name/mosquitto.conf.log" &&
    ok "$name routes partitions ${owns[$name]} of rewards" ||
    not_ok "$name routes partitions ${owns[$name]}" "$work/$name/mosquitto.conf.log"
done

conn() { CS_PORT=${scale_port[$1]} cs_conn "$2"; } # BROKER SERVICE
if [ "$mode" = balancer ]; then
  # docs/SCALING.md's haproxy configuration, with this run's ports; every service connects through it.
  extract "balancer configuration" >"$work/haproxy.block" || bail "docs/SCALING.md has the balancer configuration"
  scale_port[lb]=$(free_port)
  sed -e "s|^  bind :1883\$|  bind 127.0.0.1:${scale_port[lb]}|" \
      -e "s|^  server \([a-z]*\) \1.example:1883 |  server \1 127.0.0.1:PORT_\1 |" "$work/haproxy.block" >"$work/haproxy.cfg"
  for name in hub a b; do sed -i "s|PORT_$name |${scale_port[$name]} |" "$work/haproxy.cfg"; done
  grep -q "^  server b 127.0.0.1:${scale_port[b]} " "$work/haproxy.cfg" || bail "the balancer has the three brokers" "$work/haproxy.cfg"
  haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
  bg_pids+=($!)
  for _ in $(seq 50); do mosquitto_sub -h 127.0.0.1 -p "${scale_port[lb]}" -t none -W 1 -E >/dev/null 2>&1 && break; sleep 0.1; done
  mosquitto_sub -h 127.0.0.1 -p "${scale_port[lb]}" -t none -W 1 -E >/dev/null 2>&1 &&
    ok "haproxy balances connections over the three brokers" || bail "haproxy runs" "$work/haproxy.log"
  conn() { CS_PORT=${scale_port[lb]} cs_conn "$2"; }
fi
mapfile -t taxi_conn < <(conn hub taxi)
mapfile -t messaging_conn < <(conn a messaging)
mapfile -t store_conn < <(conn a store)
cs_start_service taxi "$CS_TAXI" --db "$work/taxi.sqlite" "${taxi_conn[@]}"
taxi_pid=${CS_SERVICE_PIDS[-1]}
cs_start_service messaging "$CS_MESSAGING" --db "$work/messaging.sqlite" "${messaging_conn[@]}"
for name in taxi messaging; do
  wait_for_regex "$CS_WORK/$name.log" '^verified' 150 && ok "$name verifies the compartment and subscribes" ||
    not_ok "$name verifies the compartment and subscribes" "$CS_WORK/$name.log"
done

# During the run: a compartment of leaf b, then leaf b itself, killed.
(
  sleep 1
  victim=$(pgrep -P "${scale_pid[b]}" -x -f idevs-compartment | head -1)
  [ -n "$victim" ] && kill -9 "$victim" && echo "killed compartment $victim" >"$work/kills.txt"
  sleep 1.5
  kill -9 "${scale_pid[b]}" && echo "killed broker b ${scale_pid[b]}" >>"$work/kills.txt"
) &
killer=$!
timeout 180 "$CS_STORE" run --db "$work/store.sqlite" --rate 40 "${store_conn[@]}" >"$CS_WORK/store.log" 2>&1 &
store_pid=$!
bg_pids+=("$store_pid")
wait "$killer"
scale_pid[b]= # killed above
sleep 1
# b's partitions move to the hub, with b's replay record and kept outputs.
echo "rewards 21-63 adopt $work/b/state/rewards" >"$work/hub/ownership"
kill -HUP "${scale_pid[hub]}"
wait_for_text "$work/hub/mosquitto.conf.log" "'rewards': routes partitions 21-63" 100 &&
  grep -q "adopted the replay record and [0-9]* kept output(s) of '$work/b/state/rewards'" "$work/hub/mosquitto.conf.log" &&
  ok "a RELOAD moves leaf b's partitions to the hub, which adopts b's replay record and kept outputs" ||
  not_ok "a RELOAD moves leaf b's partitions to the hub" "$work/hub/mosquitto.conf.log"
grep -c killed "$work/kills.txt" 2>/dev/null | grep -qx 2 && ok "a compartment of leaf b, then leaf b, were killed with SIGKILL mid-run" ||
  not_ok "a compartment of leaf b, then leaf b, were killed mid-run" "$work/kills.txt"
wait_pid "$store_pid" 1800 >/dev/null && ok "the store publishes its $sales sales" || not_ok "the store publishes its sales" "$CS_WORK/store.log"

if [ "$mode" = balancer ]; then
  # A service the balancer had put on leaf b (its client connection in b's log) goes on through another broker.
  on_b=$(grep -E 'New client connected from 127.0.0.1:[0-9]+ as ' "$work/b/mosquitto.conf.log" | grep -vc ' as bridge-')
  [ "$on_b" -gt 0 ] && ok "the balancer had put $on_b service connection(s) on leaf b before it was killed" ||
    not_ok "the balancer put a service on leaf b" "$work/b/mosquitto.conf.log"
fi
qualifying=$(sqlite3 -readonly "$work/store.sqlite" \
  "SELECT count(*) FROM sales WHERE CAST(replace(total, '.', '') AS INTEGER) >= 15000")
got=$(cs_wait_for "$work/taxi.sqlite" "SELECT count(*) FROM bookings" "$qualifying" 90)
equal "taxi booked the $qualifying qualifying sales" "$got" "$qualifying"
got=$(cs_wait_for "$work/messaging.sqlite" "SELECT count(*) FROM outbox" "$qualifying" 60)
equal "messaging queued $qualifying confirmations" "$got" "$qualifying"
sleep 3 # the last receipts, and one more metrics interval

for name in hub a; do
  CS_PORT=${scale_port[$name]} cs_counters >"$work/$name.counters"
done
python3 - "$work" "$qualifying" "$sales" >"$work/check.out" 2>&1 <<'PY'
import re, sqlite3, sys
work, qualifying = sys.argv[1], int(sys.argv[2])
passed = failed = 0
def check(what, cond, detail=""):
    global passed, failed
    print(("ok - " if cond else "not ok - ") + what + ("" if cond else f": {detail}"))
    passed, failed = passed + bool(cond), failed + (not cond)
db = lambda n: sqlite3.connect(f"file:{work}/{n}.sqlite?mode=ro", uri=True)
sales = {r[0] for r in db("store").execute(
    "SELECT sale_id FROM sales WHERE CAST(replace(total, '.', '') AS INTEGER) >= 15000")}
refs = [r[0] for r in db("taxi").execute("SELECT booking_ref FROM bookings")]
check("every qualifying sale has exactly one booking, no other sale has one",
      sorted(refs) == sorted(sales), f"{len(refs)} bookings, {len(sales)} qualifying")
texts = [r[0] for r in db("messaging").execute("SELECT text FROM outbox")]
per = [ref for t in texts for ref in re.findall(r"S-\d+", t)]
check("every qualifying sale has exactly one confirmation, no other sale has one",
      sorted(per) == sorted(sales), f"{len(per)} confirmations")
undone = db("store").execute("SELECT count(*) FROM sales WHERE receipted_at IS NULL").fetchone()[0] \
    if "receipted_at" in [c[1] for c in db("store").execute("PRAGMA table_info(sales)")] else 0
counters = {}
for name in ("hub", "a"):
    counters[name] = dict(l.split(" ", 1) for l in open(f"{work}/{name}.counters").read().split("\n") if " " in l)
# Each broker sees every sale and answer (the bridges carry them everywhere) and routes only its own third: one
# that routed most of them would be processing the others' partitions too.
seen = int(sys.argv[3]) + qualifying
for name in ("hub", "a"):
    c = counters[name]
    check(f"{name} routed sales of its own partitions, and not most of all of them",
          0 < int(c.get("routed", "0")) < (0.8 if name == "hub" else 0.6) * seen, f"routed {c.get('routed')} of {seen} sales and answers")
    check(f"{name} refused the other brokers' sales as not_owner", int(c.get("rejected/not_owner", "0")) > 0, c)
    check(f"{name}'s compartments sent outputs", int(c.get("emitted", "0")) > 0, c.get("emitted"))
check("the hub let its peers' outputs, receipts and certificates through its guard",
      int(counters["hub"].get("from_peers", "0")) > 0, counters["hub"].get("from_peers"))
check("leaf a let what its bridge brought in through its guard", int(counters["a"].get("from_peers", "0")) > 0,
      counters["a"].get("from_peers"))
print(f"{passed} passed, {failed} failed")
PY
count_tap "run" "$work/check.out"
# No loop: each sale the store published on a crossed to the hub once and never came back to a (no-local).
count_log() { grep -cE "Received PUBLISH from $2 \\(.*'idevs/rewards/in/sales'" "$work/$1/mosquitto.conf.log"; }
from_store=$(count_log a 'store-[0-9]+') at_hub=$(count_log hub bridge-a-hub) back=$(count_log a local-a-hub)
[ "$from_store" -ge "$sales" ] && [ "$at_hub" = "$from_store" ] && [ "$back" = 0 ] &&
  ok "no bridge loop: the $from_store sale publications on a reached the hub once each, and none came back to a" ||
  { echo "store to a $from_store, a to the hub $at_hub, back to a $back" >"$work/loop.txt"
    not_ok "no bridge loop: each sale crossed to the hub once and none came back" "$work/loop.txt"; }
refusals=$(grep -h ': refused: ' "$CS_WORK/taxi.log" "$CS_WORK/messaging.log" "$CS_WORK/store.log")
[ -z "$refusals" ] && ok "no service refused an envelope of any broker's instances" ||
  { echo "$refusals" >"$work/refusals.txt"; not_ok "no service refused an envelope" "$work/refusals.txt"; }
cs_stop_all
for name in a b hub; do scale_stop "$name"; done
finish

#!/usr/bin/env bash
# The case study under chaos: a real mosquitto (persistence on) with mosquitto_idevs.so and the rewards
# compartment, the store, taxi and messaging, every one of them with receipts and a durable outbox
# (docs/PROTOCOL.md section 9). While the store publishes its sales, a loop kills with SIGKILL, at moments drawn
# from a seeded generator, one of: the broker (started again at once on the same configuration, persistence file
# and state directory, on the same port), the compartment (the plugin starts a new one by itself), taxi,
# messaging, the store (each started again on the same database and outbox). Then everything that is down is
# started again, the run waits until nothing is left to receipt, and check_chaos.py checks the effects (each
# qualifying sale booked once and confirmed once, no other sale booked or confirmed, every sale marked) and that
# the counters account for every copy that was sent again (its header says exactly what it compares).
#
#   test_chaos.sh BUILD_DIR
#
# Settings (environment):
#   CHAOS_SEED=N          repeat a run's schedule of kills and pauses (printed at the start)
#   CHAOS_TARGETS="..."   what may be killed, default "broker compartment taxi messaging store"
#   CHAOS_SALES=N         default 2000;  CHAOS_RATE=N  sales per second the store publishes, default 50
#   CHAOS_SECONDS=N       the chaos ends after N s (default 60), after CHAOS_MAX_KILLS kills (default 40), or
#                         once every sale is marked
#   CHAOS_QUIESCE=N       at most N s (default 120) for the restarted system to receipt everything
#   KEEP=1                keep the work directory (logs, databases, counters)
set -u
here=$(cd "$(dirname "$0")" && pwd)
IDEVS_ROOT=$(cd "$here/../.." && pwd)
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
source "$here/lib.sh"
build=$1
sales=${CHAOS_SALES:-2000} rate=${CHAOS_RATE:-50}
chaos_s=${CHAOS_SECONDS:-60} max_kills=${CHAOS_MAX_KILLS:-40} quiesce_s=${CHAOS_QUIESCE:-120}
read -r -a targets <<<"${CHAOS_TARGETS:-broker compartment taxi messaging store}"
seed=${CHAOS_SEED:-$(($(od -An -N4 -tu4 /dev/urandom) % 1000000))}
RANDOM=$seed
echo "# chaos seed $seed (CHAOS_SEED=$seed repeats this schedule), targets: ${targets[*]}"
ct_begin chaos
need_tools pgrep
for t in "${targets[@]}"; do
  case $t in broker | compartment | taxi | messaging | store) ;; *) bail "CHAOS_TARGETS: '$t' is not one of broker compartment taxi messaging store" ;; esac
done

# ---- the processes this test started, by pid: stopped at exit, whatever happens ----
declare -A pid=([taxi]= [messaging]= [store]=) kills=() self_exits=()
sys_pid= broker_gen=0 compartments=()
for t in broker compartment taxi messaging store; do kills[$t]=0 self_exits[$t]=0; done
chaos_cleanup() {
  local p
  for p in "${pid[@]}" "$sys_pid"; do [ -z "$p" ] || stop_pid "$p" 50; done
  CS_SERVICE_PIDS=()
  cs_stop_all
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap chaos_cleanup EXIT

cs_init "$build" "$work" || bail "the case study's programs are built"
cs_make_pki || bail "the operator makes the PKI"
"$CS_STORE" seed --db "$work/store.sqlite" --sales "$sales" >"$work/seed.log" 2>&1 ||
  bail "the store seeds its database with $sales sales" "$work/seed.log"
cs_write_descriptor 2>"$work/descriptor.err" || bail "the rewards descriptor is written" "$work/descriptor.err"
if python3 - "$CS_DESCRIPTOR" <<'PY'; then ok "the descriptor gives store, taxi and messaging receipts"; else bail "the descriptor gives store, taxi and messaging receipts"; fi
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if all(s.get("receipts") is True for s in d["services"]) and len(d["services"]) == 3 else 1)
PY
# Persistence on, written every second, so that the broker restarts from its file: the retained certificate and
# descriptor, the sessions. The plugin's state directory (replay record, outbox) is kept across restarts too.
cs_write_conf "autosave_interval 1"

# The plugin's counters restart from zero with each broker: a subscriber per broker records the live (not
# retained) publications, sys.GEN.txt, and each generation's last values are summed.
start_sys_capture() {
  broker_gen=$((broker_gen + 1))
  mosquitto_sub -h 127.0.0.1 -p "$CS_PORT" -t "\$SYS/broker/idevs/$CS_PROCESS/#" -F '%r %t %p' \
    >"$work/sys.$broker_gen.txt" 2>/dev/null &
  sys_pid=$!
}
start_broker_gen() {
  local _
  for _ in 1 2 3; do
    if cs_start_broker; then start_sys_capture; return 0; fi
    [ -z "$CS_BROKER_PID" ] || stop_pid "$CS_BROKER_PID" 50
    CS_BROKER_PID=
    sleep 0.5
  done
  return 1
}
start_broker_gen && ok "the broker starts with the plugin, persistence on" ||
  { cat "$work/broker/stdout.log" >>"$work/broker/mosquitto.log" 2>/dev/null; bail "the broker starts" "$work/broker/mosquitto.log"; }

mapfile -t taxi_conn < <(cs_conn taxi)
mapfile -t messaging_conn < <(cs_conn messaging)
mapfile -t store_conn < <(cs_conn store)
start() { # taxi|messaging|store: in the background, its output added to WORK/NAME.log
  local name=$1
  echo "=== started $(date +%T.%N)" >>"$work/$name.log"
  # exec: the pid recorded is the program's own, the one a kill must reach
  (case $name in
    taxi) exec "$CS_TAXI" --db "$work/taxi.sqlite" --outbox "$work/taxi.outbox" "${taxi_conn[@]}" ;;
    messaging) exec "$CS_MESSAGING" --db "$work/messaging.sqlite" --outbox "$work/messaging.outbox" "${messaging_conn[@]}" ;;
    store) exec "$CS_STORE" run --db "$work/store.sqlite" --rate "$rate" "${store_conn[@]}" ;;
  esac) >>"$work/$name.log" 2>&1 &
  pid[$name]=$!
}
unmarked() { sqlite3 -readonly "$work/store.sqlite" "SELECT count(*) FROM sales WHERE published_at IS NULL" 2>/dev/null || echo "?"; }
compartment_pid() { [ -n "$CS_BROKER_PID" ] && pgrep -P "$CS_BROKER_PID" | head -1; }

# A service that ended by itself (the store when it published everything, or gave up waiting for receipts; any
# service that could not verify while the broker was down) is reaped and, unless it is a store with nothing
# left, started again.
revive() {
  local name status
  for name in taxi messaging store; do
    [ -n "${pid[$name]}" ] && kill -0 "${pid[$name]}" 2>/dev/null && continue
    if [ -n "${pid[$name]}" ]; then
      status=0; wait "${pid[$name]}" 2>/dev/null || status=$?
      echo "=== exited by itself, status $status, $(date +%T.%N)" >>"$work/$name.log"
      pid[$name]=
      [ "$name" = store ] && [ "$status" -eq 0 ] || self_exits[$name]=$((self_exits[$name] + 1))
    fi
    if [ "$name" = store ] && [ "$(unmarked)" = 0 ]; then continue; fi
    start "$name"
  done
}

start taxi
start messaging
for name in taxi messaging; do
  wait_for_regex "$work/$name.log" '^verified' 150 && ok "$name verifies the compartment and subscribes" ||
    not_ok "$name verifies the compartment and subscribes" "$work/$name.log"
done
start store

# ---- the chaos ----
# SIGKILL one target at a time, every 1 to 4 s (drawn from the seeded RANDOM), for at most chaos_s seconds and
# max_kills kills, or until every sale is marked. A broker is killed right after its counters were published
# (within the next second), so that its generation's counters miss at most ~0.1 s of its work.
kill_broker() {
  local n _ c
  n=$(wc -l <"$work/sys.$broker_gen.txt")
  for _ in $(seq 15); do [ "$(wc -l <"$work/sys.$broker_gen.txt")" -gt "$n" ] && break; sleep 0.1; done
  sleep 0.1
  c=$(compartment_pid)
  kill -9 "$CS_BROKER_PID"; wait "$CS_BROKER_PID" 2>/dev/null
  echo "=== broker killed $(date +%T.%N)" >>"$work/broker/mosquitto.log"
  CS_BROKER_PID=
  stop_pid "$sys_pid" 10; sys_pid=
  [ -z "$c" ] || compartments+=("$c")
  sleep "0.$((RANDOM % 10))"
  start_broker_gen || { echo "# the broker did not start again"; return 1; }
}
kill_target() { # target: 0 when it was killed
  local t=$1 c
  case $t in
    broker) [ -n "$CS_BROKER_PID" ] || return 1; kill_broker ;;
    compartment)
      c=$(compartment_pid); [ -n "$c" ] || return 1
      compartments+=("$c"); kill -9 "$c" ;;
    taxi | messaging | store)
      [ -n "${pid[$t]}" ] && kill -0 "${pid[$t]}" 2>/dev/null || return 1
      kill -9 "${pid[$t]}"; wait "${pid[$t]}" 2>/dev/null
      echo "=== killed $(date +%T.%N)" >>"$work/$t.log"
      pid[$t]=
      sleep "0.$((RANDOM % 10))"
      start "$t" ;;
  esac
}
chaos_start=$SECONDS total_kills=0
echo "# chaos: at most $chaos_s s and $max_kills kills, targets ${targets[*]}"
while [ $((SECONDS - chaos_start)) -lt "$chaos_s" ] && [ "$total_kills" -lt "$max_kills" ]; do
  pause=$((10 + RANDOM % 31)) # tenths of a second
  for _ in $(seq $((pause / 2))); do revive; sleep 0.2; done
  [ "$(unmarked)" = 0 ] && break
  t=${targets[$((RANDOM % ${#targets[@]}))]}
  if kill_target "$t"; then
    kills[$t]=$((kills[$t] + 1)) total_kills=$((total_kills + 1))
    echo "# $((SECONDS - chaos_start)) s: killed $t ($(unmarked) sales not marked yet)"
  fi
done
echo "# chaos over after $((SECONDS - chaos_start)) s, $total_kills kills"

# ---- quiescence: everything up, until nothing is left to receipt ----
[ -n "$CS_BROKER_PID" ] || start_broker_gen
# Settled: every sale marked, the plugin keeps nothing unreceipted and queues nothing, the services' outboxes
# hold nothing unreceipted; twice in a row, 1 s apart (a broker just started shows its predecessor's retained
# counters until it publishes its own, within a second).
quiet_start=$SECONDS
settled=0 calm=0
while [ $((SECONDS - quiet_start)) -lt "$quiesce_s" ]; do
  revive
  calm_now=0
  if [ "$(unmarked)" = 0 ]; then
    cs_counters >"$work/counters.now" 2>/dev/null
    kept=$(sed -n 's/^outbox //p' "$work/counters.now") depth=$(sed -n 's/^queue_depth //p' "$work/counters.now")
    open=0
    for f in taxi messaging store.sqlite.rewards; do
      n=$(sqlite3 -readonly "$work/$f.outbox" "SELECT count(*) FROM idevs_outbox WHERE receipted = 0" 2>/dev/null || echo 0)
      open=$((open + n))
    done
    [ "$kept" = 0 ] && [ "$depth" = 0 ] && [ "$open" = 0 ] && calm_now=1
  fi
  if [ "$calm_now" = 1 ]; then calm=$((calm + 1)); else calm=0; fi
  [ "$calm" -ge 2 ] && { settled=1; break; }
  sleep 1
done
[ "$settled" = 1 ] && ok "everything is receipted within $quiesce_s s of the chaos's end ($((SECONDS - quiet_start)) s)" ||
  not_ok "everything is receipted within $quiesce_s s of the chaos's end (sales not marked: $(unmarked), kept by the plugin: ${kept:-?}, queued: ${depth:-?}, in the services' outboxes: ${open:-?})"
sleep 1.5 # one more metrics interval

# The services end on SIGTERM, printing their last counts; then the broker (its last counters recorded first).
for name in taxi messaging store; do
  [ -n "${pid[$name]}" ] || continue
  stop_pid "${pid[$name]}" 50; pid[$name]=
done
stop_pid "$sys_pid" 10; sys_pid=
[ -z "$(compartment_pid)" ] || compartments+=("$(compartment_pid)")
cs_stop_all

# No process of this run is left: no compartment of any of its brokers (nor a service: those were waited for).
left=()
for c in "${compartments[@]}"; do kill -0 "$c" 2>/dev/null && left+=("$c $(tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null)"); done
[ ${#left[@]} -eq 0 ] && ok "no compartment outlives its broker or its kill (${#compartments[@]} seen)" ||
  { printf '%s\n' "${left[@]}" >"$work/left.txt"; not_ok "no compartment outlives its broker or its kill" "$work/left.txt"; }

{
  for t in broker compartment taxi messaging store; do echo "kills $t ${kills[$t]}"; echo "self_exits $t ${self_exits[$t]}"; done
  echo "seed $seed"
} >"$work/chaos.txt"
python3 "$here/check_chaos.py" "$work" "$sales" >"$work/check.out" 2>&1
ct_count "$work/check.out"
ct_end

#!/usr/bin/env bash
# Routing (plugin/routing.c) in a real broker with two processes: an input reaches its own process only and its
# output leaves on that process's output only; a message on a topic no process declares passes through the
# broker untouched and is not counted; per-process counters count what each received and routed; with
# plugin_opt_poll_budget_ms 0 (no wait in MESSAGE) outputs still leave, at the broker's next loop.
#   test_routing.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"
mkdir -p "$work/procs"
echo_descriptor "$work/procs/r1.json" r1
echo_descriptor "$work/procs/r2.json" r2
# counters_of PROCESS FILE: the retained $SYS counters of PROCESS, one "name value" line each.
counters_of() { sub -t "\$SYS/broker/idevs/$1/#" -v -W 1 2>/dev/null | sed "s|^\\\$SYS/broker/idevs/$1/||" >"$2"; }

for budget in default 0; do
  opts=("plugin_opt_descriptor $work/procs/r1.json" "plugin_opt_descriptor $work/procs/r2.json"
        "plugin_opt_metrics_interval_s 1")
  [ "$budget" = default ] || opts+=("plugin_opt_poll_budget_ms $budget")
  write_conf "$work/routing-$budget.conf" "" "${opts[@]}"
  start_broker "$work/routing-$budget.conf" || bail "the broker starts (poll budget $budget)" "$work/routing-$budget.conf.log"
  # r2's output is watched while r1 gets an input: nothing may come out there.
  sub -t idevs/r2/out/out -C 1 -W 4 >"$work/r2-out-$budget.got" 2>/dev/null &
  watch=$!
  bg_pids+=("$watch")
  sleep 0.3
  check "poll budget $budget: an input for r1 comes back on r1's output" roundtrip r1 "to r1 ($budget)"
  wait "$watch"
  check "... and nothing leaves on r2's output" test ! -s "$work/r2-out-$budget.got"
  check "... r2's input is routed to r2" roundtrip r2 "to r2 ($budget)"
  # A topic no process declares, also under idevs/: the plugin leaves it to the broker.
  sub -t idevs/elsewhere/topic -C 1 -W 4 >"$work/other-$budget.got" 2>/dev/null &
  other=$!
  bg_pids+=("$other")
  sleep 0.3
  pub -q 1 -t idevs/elsewhere/topic -m "not an envelope" >/dev/null 2>&1
  wait "$other"
  check "... a message on a topic no process declares reaches its subscriber untouched" \
    grep -qx "not an envelope" "$work/other-$budget.got"
  sleep 1.5
  counters_of r1 "$work/r1-$budget.counters"
  counters_of r2 "$work/r2-$budget.counters"
  equal "... r1 counts one input received and routed" \
    "$(counter received "$work/r1-$budget.counters") $(counter routed "$work/r1-$budget.counters")" "1 1"
  equal "... r2 counts its own one, not r1's nor the other topic's" \
    "$(counter received "$work/r2-$budget.counters") $(counter routed "$work/r2-$budget.counters")" "1 1"
  stop_broker
  sanitizer_check "$work/routing-$budget.conf"
done
finish

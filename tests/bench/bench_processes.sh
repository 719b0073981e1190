#!/usr/bin/env bash
# Many integration processes on one broker (not a test: prints figures, asserts nothing). For 1, 2, 4, 8 and 16
# processes of the echo logic (tests/logic/echo.c) on one broker, repeated plugin_opt_descriptor lines under one
# plugin line, beside a second broker with one process that runs the whole time: bench_processes drives both in
# alternate rounds and reports medians (bench_processes.c).
#
# Throughput is closed loop: at most a fixed total window of messages (128 by default) is published and not yet
# back as a sealed output at the sink, spread round robin over the processes. Every configuration thus gets the
# same total offered load and shows how much of it it turns around; a fixed offered rate would only show that
# both keep up, so the ratio would be 1 by construction until one of them saturates. Latency (input published ->
# output received and opened) is measured at one fixed total rate, half of the one process's peak, spread evenly.
# Broker CPU per message is utime + stime of the broker (/proc/PID/stat) over its throughput rounds, divided by
# the messages (one input in, one output out). Memory: PSS and unique set size (Private_Clean + Private_Dirty of
# /proc/PID/smaps_rollup) of each compartment (a child of the broker, with its own children: the key holder and
# its logic process), averaged per compartment, after the runs.
# Each configuration: 7 rounds of 4000 messages a broker, but none started after 30 s once 3 are done (a loaded
# machine slows it down tenfold); then 4000 messages (or 4 s of them) a broker for latency. About a minute on a
# quiet 2-core machine, under 5 minutes on a loaded one. Targets (DESIGN.md, "Targets") are printed beside the
# figures, not asserted.
#
#   meson test -C build-release --benchmark processes -v
#   tests/bench/bench_processes.sh BUILD_DIR [bench_processes options: --rounds R --messages M --window W ...]
#   IDEVS_BENCH_PROCESSES="1 16" tests/bench/bench_processes.sh BUILD_DIR   (other configurations)
# Build the release tree first: meson setup build-release -Dbuildtype=release && ninja -C build-release
build=$(cd "${1:?usage: bench_processes.sh BUILD_DIR [bench_processes options]}" && pwd) || exit 2
shift
bench_name=bench_processes
configurations=${IDEVS_BENCH_PROCESSES:-1 2 4 8 16}
# The brokers, their descriptors and bench_processes's run; lib.sh's EXIT trap stops the broker and every pid in
# bg_pids.
source "$(dirname "$0")/bench_brokers.sh"

# tree PID: "PROCESSES PSS_KB USS_KB" summed over PID and its descendants (a compartment: its key holder and
# its logic process).
tree() {
  local c k p u n=1 pss uss
  read -r pss uss < <(awk '/^Pss:/ {p = $2} /^Private_(Clean|Dirty):/ {u += $2} END {print p + 0, u + 0}' \
    "/proc/$1/smaps_rollup" 2>/dev/null)
  for c in $(pgrep -P "$1"); do
    read -r k p u < <(tree "$c")
    n=$((n + k)) pss=$((pss + p)) uss=$((uss + u))
  done
  echo "$n ${pss:-0} ${uss:-0}"
}
# compartments PID: "COUNT PROCESSES PSS_KB USS_KB": the compartments among PID's children, the processes of
# each, and their PSS and unique set, per compartment on average.
compartments() {
  local c k n=0 procs=0 pss=0 uss=0 p u
  for c in $(pgrep -P "$1"); do
    read -r k p u < <(tree "$c")
    n=$((n + 1)) procs=$((procs + k)) pss=$((pss + p)) uss=$((uss + u))
  done
  if [ "$n" -gt 0 ]; then echo "$n $((procs / n)) $((pss / n)) $((uss / n))"; else echo "0 0 0 0"; fi
}
# uss PID: the unique set of one process, KB.
uss() { awk '/^Private_(Clean|Dirty):/ {u += $2} END {print u + 0}' "/proc/$1/smaps_rollup"; }
descriptor one "$work/one.json"
for k in $(seq 16); do descriptor "p$k" "$work/p$k.json"; done
broker one "$work/one.json" || exit 1
one_pid=$broker_pid one_port=$port
bg_pids+=("$one_pid") # stopped by lib.sh's cleanup should anything below fail
broker_pid=

echo "mosquitto $(mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version //p'), $(nproc) cores," \
  "$(basename "$build"); one broker with one process beside one with N, in this run"
results=()
for n in $configurations; do
  descs=()
  for k in $(seq 2 "$n"); do descs+=("$work/p$k.json"); done
  broker "n$n" "$work/p1.json" "${descs[@]}" || exit 1
  run_bench "$one_pid" "$one_port" "$broker_pid" "$port" --processes "$n" "$@" ||
    { echo "bench_processes: the run with $n process(es) failed" >&2; exit 1; }
  read -r count procs pss uss_avg < <(compartments "$broker_pid")
  broker_uss=$(uss "$broker_pid")
  echo "  memory: $count compartment(s) of $procs process(es) each; each compartment PSS $pss KB, unique" \
    "$uss_avg KB; broker unique $broker_uss KB (the one-process broker: $(uss "$one_pid") KB)"
  echo "  totals of the $n-process broker: $(totals '^(received|done/ok|emitted|rejected/.*)$')"
  results+=("$result compartments=$count pss_kb=$pss uss_kb=$uss_avg broker_uss_kb=$broker_uss")
  stop_broker
done

echo
echo "Throughput: outputs back at the sinks per second, closed loop, the same total window; ratio: median of the"
echo "rounds' ratios to one process in the same run. Latency (input published -> output opened) at half of one"
echo "process's peak in total; worst: the p99 of the slowest process. CPU: broker utime+stime per message."
echo "Memory: PSS and unique set (USS) of each compartment (all its processes), averaged; the N-process broker's"
echo "own unique set."
columns='%-5s %9s %9s %8s %7s %7s %7s %7s %7s %8s %8s %7s %10s %8s\n'
# shellcheck disable=SC2059
printf "$columns" procs aggregate one-proc ratio p50 p99 worst one-p50 one-p99 broker one-brk comp 'comp(<2MB)' broker
# shellcheck disable=SC2059
printf "$columns" '' 'msg/s' 'msg/s' '(>=0.90)' ms ms p99_ms ms ms 'us/msg' 'us/msg' 'PSS KB' 'USS KB' 'USS KB'
queueing_seen=
for r in "${results[@]}"; do
  read_result "$r"
  mark=
  [ "${row[queueing]}" = 1 ] && mark='*' queueing_seen=1
  # shellcheck disable=SC2059
  printf "$columns" "${row[processes]}" "${row[many_rate]}" "${row[one_rate]}" "${row[ratio]}" "${row[p50_ms]}$mark" \
    "${row[p99_ms]}$mark" "${row[worst_p99_ms]}$mark" "${row[one_p50_ms]}" "${row[one_p99_ms]}" "${row[cpu_us]}" \
    "${row[one_cpu_us]}" "${row[pss_kb]}" "${row[uss_kb]}" "${row[broker_uss_kb]}"
done
[ -z "$queueing_seen" ] || echo "* the N processes did not keep up with that latency rate: mostly queueing"
echo "targets (DESIGN.md): aggregate >= 0.9x of one process; each added compartment < 2 MB (2048 KB) unique"
broker_pid=$one_pid
stop_broker
bg_pids=()
echo "processes=${row[processes]} aggregate_ratio=${row[ratio]} added_uss_kb=${row[uss_kb]}"

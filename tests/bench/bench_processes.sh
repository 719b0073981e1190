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
plugin=$build/plugin/mosquitto_idevs.so
ca_tool=$build/certs/tool/idevs-ca
env_tool=$build/proto/tool/idevs-envelope
compartment=$build/enclave-bridge/compartment/idevs-compartment
echo_logic=$build/tests/logic/idevs_logic_echo.so
bench=$build/tests/bench/bench_processes
for f in "$plugin" "$ca_tool" "$compartment" "$echo_logic" "$bench"; do
  [ -e "$f" ] || { echo "bench_processes: $f is not built" >&2; exit 1; }
done
configurations=${IDEVS_BENCH_PROCESSES:-1 2 4 8 16}
# lib.sh: the PKI (store, sink), the echo descriptor, mosquitto.conf files, brokers started and stopped by pid;
# its EXIT trap stops the broker and every pid in bg_pids.
source "$(dirname "$0")/../broker/lib.sh"
trap 'exit 130' INT TERM

# One descriptor per process, from lib.sh's echo descriptor: its own name, program UUID and topics, and a queue
# deep enough for the whole window.
descriptor() { # NAME FILE
  sed -e "s/\"name\": \"echo\"/\"name\": \"$1\"/" -e "s|idevs/echo/|idevs/$1/|g" \
    -e "s/$program/$(cat /proc/sys/kernel/random/uuid)/" -e 's/"queue_depth": [0-9]*/"queue_depth": 1024/' \
    "$work/echo.json" >"$2"
}
# The same broker settings on both: no per-message logging, deep queues, no Nagle delay, counters every second.
common=("log_type error" "log_type warning" "max_queued_messages 100000" "set_tcp_nodelay true"
  "plugin_opt_metrics_interval_s 1")
# broker NAME DESCRIPTOR...: writes WORK/NAME.conf (state in WORK/state-NAME/<process>/) and starts it.
broker() {
  local name=$1 first=$2 d extra=(); shift 2
  for d in "$@"; do extra+=("plugin_opt_descriptor $d"); done
  mkdir -m 700 "$work/state-$name"
  write_conf "$work/$name.conf" "$first" -state_dir "plugin_opt_state_dir $work/state-$name" "${extra[@]}" \
    "${common[@]}"
  sed -i '/^log_type all$/d' "$work/$name.conf"
  start_broker "$work/$name.conf" && return 0
  echo "bench_processes: the broker with $(($# + 1)) process(es) does not start:" >&2
  tail -n 20 "$work/$name.conf.out" "$work/$name.conf.log" >&2
  return 1
}

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
# totals: the many broker's counters summed over its processes, at their next publication.
# shellcheck disable=SC2016 # the topic is literal
totals() {
  sleep 1.2
  sub -t '$SYS/broker/idevs/totals/#' -v -W 1 2>/dev/null | sed 's|^\$SYS/broker/idevs/totals/||' |
    awk '$1 == "received" || $1 == "done/ok" || $1 == "emitted" || $1 ~ /^rejected\// {v[$1] = $2}
         END {for (k in v) printf "%s%s %s", (n++ ? ", " : ""), k, v[k]; print ""}'
}
# read_result LINE: its "key=value" words into the associative array row.
declare -A row=()
read_result() { local w; row=(); for w in $1; do [[ $w == *=* ]] && row[${w%%=*}]=${w#*=}; done; }

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
  out=$(timeout 150 "$bench" --store-key "$pki/store.key" --store-cert "$pki/store.crt" --sink-key "$pki/sink.key" \
    --sink-cert "$pki/sink.crt" --ca "$pki/ca.crt" --one-port "$one_port" --one-pid "$one_pid" \
    --many-port "$port" --many-pid "$broker_pid" --processes "$n" "$@")
  status=$?
  grep -v '^result ' <<<"$out"
  result=$(grep '^result ' <<<"$out")
  if [ "$status" -ne 0 ] || [ -z "$result" ]; then
    echo "bench_processes: the run with $n process(es) failed" >&2
    exit 1
  fi
  read -r count procs pss uss_avg < <(compartments "$broker_pid")
  broker_uss=$(uss "$broker_pid")
  echo "  memory: $count compartment(s) of $procs process(es) each; each compartment PSS $pss KB, unique" \
    "$uss_avg KB; broker unique $broker_uss KB (the one-process broker: $(uss "$one_pid") KB)"
  echo "  totals of the $n-process broker: $(totals)"
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

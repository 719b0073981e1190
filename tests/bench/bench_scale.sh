#!/usr/bin/env bash
# A pool of compartments on one broker (not a test: prints figures, asserts nothing; issue 13, item 6). One echo
# process (tests/logic/echo.c) whose logic computes about 200 us per event ({"spin_us": 200}), run as 1, 2 and 4
# instances ("instances" in its descriptor, docs/SCALING.md), each beside a second broker with the same process
# as one instance that runs the whole time: bench_processes (bench_processes.c) drives both in alternate rounds,
# so that the speedup (the median of the rounds' ratios) compares the two under the same load of the machine.
#
# Inputs go either without a partition (to the least loaded instance) or, "keyed", with the idevs-partition
# property round robin over the 64 partitions (bench_processes --partitions 64), so over the instances by
# partition mod instances. Throughput is closed loop with a fixed total window (128 messages published and not
# yet back at the sink); latency (input published -> output opened) p50 and p99 at one fixed rate, half of the
# one-instance broker's peak. CPU per message: the broker (utime + stime), its compartments (each compartment
# with its key holder and logic process), and bench_processes itself (the store and sink clients), over the
# throughput rounds; their sum bounds what the cores can carry (cores x 1e6 / sum messages per second), and
# msg/s x sum is how many cores' worth of CPU they had: below the machine's cores, something other than CPU (or
# another load on the machine) held them back. Each compartment's part of their CPU over a run shows how evenly
# the instances were loaded.
#
# Then two brokers (docs/SCALING.md, "Several brokers"): the process as one instance on each of two brokers, x and
# y, y bridged to x with MQTT v5 (y's bridge authenticated as a peer of x), each owning half of the 64 partitions;
# the store and the sink are clients of x, so y's half crosses the bridge twice (input in, output back). Keyed
# inputs only (unkeyed ones are spread by message id the same way). Against the same 1-instance broker.
#
# Plain Mosquitto is not beside it: bench_processes seals every input to the compartment's certificate and
# opens what it emits, so it has nothing to drive on a broker without the plugin; the baseline is the plugin
# with one instance, in the same run.
#
# Each configuration: 5 rounds of 4000 messages a broker, none started after 20 s once 3 are done; then 4 s of
# latency. About 3 minutes on a 2-core machine.
#
#   meson test -C build-release --benchmark scale -v
#   tests/bench/bench_scale.sh BUILD_DIR [bench_processes options: --rounds R --messages M --window W ...]
#   IDEVS_BENCH_SCALE="1 2" IDEVS_BENCH_SPIN_US=500 tests/bench/bench_scale.sh BUILD_DIR   (other configurations;
#   IDEVS_BENCH_BRIDGED=0: not the two brokers)
#   IDEVS_BENCH_POLL_BUDGET_MS=0 tests/bench/bench_scale.sh BUILD_DIR   (plugin_opt_poll_budget_ms on both brokers:
#   how long the broker's thread waits for a compartment's outputs, docs/OPERATOR.md; default 2)
# Build the release tree first: meson setup build-release -Dbuildtype=release && ninja -C build-release
build=$(cd "${1:?usage: bench_scale.sh BUILD_DIR [bench_processes options]}" && pwd) || exit 2
shift
bench_name=bench_scale
configurations=${IDEVS_BENCH_SCALE:-1 2 4}
spin_us=${IDEVS_BENCH_SPIN_US:-200}
partitions=64 # the descriptor's default process.partitions
# The brokers, their descriptors and bench_processes's run; lib.sh's EXIT trap stops the broker and every pid in
# bg_pids.
source "$(dirname "$0")/bench_brokers.sh"
poll_budget=${IDEVS_BENCH_POLL_BUDGET_MS:-2}
common+=("plugin_opt_poll_budget_ms $poll_budget")

fields() { echo "\"config\": {\"spin_us\": $spin_us}, \"instances\": $1"; } # INSTANCES
# ticks PID: CPU clock ticks of PID and its descendants (a compartment: it, its key holder, its logic process).
ticks() {
  local c t
  t=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null)
  for c in $(pgrep -P "$1"); do t=$((t + $(ticks "$c"))); done
  echo "${t:-0}"
}
# ticks_of PID: ticks of each of PID's children (a broker's compartments), in start order.
ticks_of() { local c; for c in $(pgrep -P "$1"); do ticks "$c"; done; }
# shares PID BEFORE...: each compartment's part of all their CPU since BEFORE (what ticks_of PID printed then).
shares() {
  local pid=$1; shift
  ticks_of "$pid" | awk -v before="$*" 'BEGIN {split(before, b, " ")} {u[NR] = $1 - b[NR]; all += u[NR]}
    END {for (i = 1; i <= NR; i++) printf "%s%d%%", (i > 1 ? " " : ""), (all > 0 ? 100 * u[i] / all : 0); print ""}'
}

descriptor base "$work/base.json" "$(fields 1)"
broker base "$work/base.json" || exit 1
base_pid=$broker_pid base_port=$port
bg_pids+=("$base_pid") # stopped by lib.sh's cleanup should anything below fail
broker_pid=

load_start=$(load)
echo "mosquitto $(mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version //p'), $(nproc) cores," \
  "$(basename "$build"), load average $load_start; the echo logic at $spin_us us an event, poll budget" \
  "$poll_budget ms; one broker with K instances of the process beside one with 1 instance (\"one\" below)"
results=()
for k in $configurations; do
  descriptor "pool$k" "$work/pool$k.json" "$(fields "$k")"
  broker "k$k" "$work/pool$k.json" || exit 1
  modes=(unkeyed keyed)
  [ "$k" -gt 1 ] || modes=(unkeyed) # one instance: the partition chooses nothing
  for mode in "${modes[@]}"; do
    keyed=()
    [ "$mode" = unkeyed ] || keyed=(--partitions "$partitions")
    echo
    echo "== $k instance(s), inputs $mode"
    read -ra before < <(ticks_of "$broker_pid" | tr '\n' ' ')
    run_bench "$base_pid" "$base_port" "$broker_pid" "$port" --processes 1 --rounds 5 --seconds 20 "${keyed[@]}" \
      "$@" || { echo "bench_scale: the run with $k instance(s), $mode, failed" >&2; exit 1; }
    echo "  each compartment's part of their CPU in this run (start order): $(shares "$broker_pid" "${before[@]}")"
    echo "  totals of the $k-instance broker: $(totals '^(instances|instances_ready|partition_ignored|received|done/ok)$')"
    results+=("$result instances=$k inputs=$mode")
  done
  stop_broker
done

# Two bridged brokers, one instance each, half of the partitions each.
if [ "${IDEVS_BENCH_BRIDGED:-1}" = 1 ]; then
  descriptor bridged "$work/bridged.json" "$(fields 1)"
  mosquitto_passwd -b -c "$work/peers.passwd" bridge-y secret-y >/dev/null 2>&1 || exit 1
  echo "bridged 0-31" >"$work/x.owners"
  echo "bridged 32-63" >"$work/y.owners"
  saved=("${common[@]}")
  common+=("password_file $work/peers.passwd" "plugin_opt_ownership $work/x.owners" "plugin_opt_peer_user bridge-y")
  broker x "$work/bridged.json" || exit 1
  x_pid=$broker_pid x_port=$port
  bg_pids+=("$x_pid")
  # One key pair on both: y joins (docs/SCALING.md, "Joining").
  common=("${saved[@]}" "plugin_opt_ownership $work/y.owners" "plugin_opt_instance_base 64" "plugin_opt_join bridged"
          "plugin_opt_peer_bridge local-y-x" "connection y-x" "address 127.0.0.1:$x_port" "remote_clientid bridge-y-x"
          "local_clientid local-y-x" "remote_username bridge-y" "remote_password secret-y"
          "bridge_protocol_version mqttv50" "cleansession false" "notifications false")
  for t in in out req resp receipt instance join; do common+=("topic idevs/bridged/$t/# both 1"); done
  broker y "$work/bridged.json" || exit 1
  y_pid=$broker_pid
  bg_pids+=("$y_pid")
  common=("${saved[@]}")
  # y has joined and the bridge is up once y's instance certificate, which y's plugin retains, is on x.
  for _ in $(seq 150); do
    timeout 2 mosquitto_sub -p "$x_port" -t idevs/bridged/instance/64/certificate -C 1 -W 1 2>/dev/null |
      grep -q 'BEGIN CERTIFICATE' && break
    sleep 0.2
  done
  echo
  echo "== 2 bridged brokers, 1 instance each, inputs keyed"
  read -ra before_y < <(ticks "$y_pid")
  port=$x_port
  run_bench "$base_pid" "$base_port" "$x_pid" "$x_port" --processes 1 --rounds 5 --seconds 20 \
    --partitions "$partitions" "$@" || { echo "bench_scale: the run with two bridged brokers failed" >&2; exit 1; }
  echo "  broker y with its compartment: $(( ($(ticks "$y_pid") - before_y) * 10 )) ms of CPU over the run" \
    "(not in the columns below, which count x)"
  echo "  totals of broker x: $(totals '^(received|routed|rejected/not_owner|done/ok|from_peers)$')"
  results+=("$result instances=2br inputs=keyed")
  broker_pid=$y_pid
  stop_broker
  broker_pid=$x_pid
  stop_broker
fi
load_end=$(load)

echo
echo "Throughput: outputs back at the sink per second, closed loop, window 128; one: the 1-instance broker in the"
echo "same rounds; speedup: median of the rounds' ratios. Latency (input published -> output opened) at half of"
echo "the 1-instance peak. CPU per message (us): broker, compartments, client (store and sink), and their sum;"
echo "bound: $(nproc) cores x 1e6 / sum, what the cores could carry if nothing else ran; cores: msg/s x sum, the"
echo "cores' worth of CPU these processes had (the rest went to whatever else ran: see the load average)."
columns='%-4s %-8s %7s %7s %7s %6s %6s %7s %7s %6s %6s %6s %6s %5s\n'
# shellcheck disable=SC2059
printf "$columns" inst inputs 'msg/s' 'one' speedup p50 p99 'one p99' broker comp client sum bound cores
# shellcheck disable=SC2059
printf "$columns" '' '' '' 'msg/s' '' ms ms ms us us us us 'msg/s' ''
declare -A speedup=()
queueing_seen=
for r in "${results[@]}"; do
  read_result "$r"
  sum=$(awk -v a="${row[cpu_us]}" -v b="${row[comp_cpu_us]}" -v c="${row[client_cpu_us]}" 'BEGIN {print a + b + c}')
  bound=$(awk -v s="$sum" -v n="$(nproc)" 'BEGIN {printf "%.0f", (s > 0 ? n * 1e6 / s : 0)}')
  cores=$(awk -v s="$sum" -v r="${row[many_rate]}" 'BEGIN {printf "%.2f", r * s / 1e6}')
  mark=
  [ "${row[queueing]}" = 1 ] && mark='*' queueing_seen=1
  # shellcheck disable=SC2059
  printf "$columns" "${row[instances]}" "${row[inputs]}" "${row[many_rate]}" "${row[one_rate]}" "${row[ratio]}" \
    "${row[p50_ms]}$mark" "${row[p99_ms]}$mark" "${row[one_p99_ms]}" "${row[cpu_us]}" "${row[comp_cpu_us]}" \
    "${row[client_cpu_us]}" "$sum" "$bound" "$cores"
  speedup[${row[instances]}-${row[inputs]}]=${row[ratio]}
done
[ -z "$queueing_seen" ] || echo "* did not keep up with that latency rate: mostly queueing"
echo "plain Mosquitto: not run (bench_processes seals to the compartment and opens its outputs: nothing to drive on"
echo "  a broker without the plugin); the plugin with 1 instance, in the same rounds, is the baseline"
echo "2br: two bridged brokers of 1 instance each, half of the partitions each; the store and the sink on x"
echo "load average at the start $load_start, at the end $load_end"
broker_pid=$base_pid
stop_broker
bg_pids=()
for k in $configurations; do
  if [ "$k" -gt 1 ]; then echo "instances=$k speedup=${speedup[$k-unkeyed]} keyed_speedup=${speedup[$k-keyed]}"; fi
done
[ -z "${speedup[2br-keyed]:-}" ] || echo "brokers=2 speedup=${speedup[2br-keyed]}"


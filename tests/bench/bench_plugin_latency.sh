#!/usr/bin/env bash
# Latency through mosquitto_idevs.so (not a test): from an input's publication to the receipt of its output,
# one envelope at a time, with plugin_opt_poll_budget_ms 0 (outputs wait for the broker's next TICK), the
# default budget (the MESSAGE callback waits up to 2 ms for them) and 10 ms; each with the broker's
# set_tcp_nodelay false (Mosquitto's default: Nagle's algorithm holds small packets for the client's delayed ACK)
# and true. The client always sets TCP_NODELAY. Then the throughput: THROUGHPUT inputs (default 2000) published
# back to back by one client at QoS 1, from the first publication to the last output received (default budget,
# set_tcp_nodelay true). Every output waits for the replay record that holds its input to be written (fsync of
# the file and the directory), so the state directory's file system counts: it is printed (the work directory,
# under $TMPDIR). Run on an optimized build:
#   meson test -C build --benchmark plugin-latency -v
#   bash tests/bench/bench_plugin_latency.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so \
#        BROKER_PEER [COUNT [THROUGHPUT]]
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6 count=${7:-300} throughput=${8:-2000}
source "$(dirname "$0")/../broker/lib.sh"
echo "# state directory $work/state on $(df -T "$work/state" | awk 'NR == 2 {print $2 " (" $1 ")"}')"

for run in "0 false" "default false" "0 true" "default true" "10 true"; do
  read -r budget nodelay <<<"$run"
  opts=("set_tcp_nodelay $nodelay")
  [ "$budget" = default ] || opts+=("plugin_opt_poll_budget_ms $budget")
  write_conf "$work/bench-$budget.conf" "$work/echo.json" "${opts[@]}"
  start_broker "$work/bench-$budget.conf" || bail "the broker starts (poll budget $budget)" "$work/bench-$budget.conf.log"
  fetch_chain "$work/chain.pem" || bail "the certificate is retained"
  # 20 round trips first: key epochs and connections warm.
  peer latency --key "$pki/store.key" --cert "$pki/store.crt" --to "$work/chain.pem" --topic "$in_topic" \
    --out-topic "$out_topic" --recv-key "$pki/sink.key" --recv-cert "$pki/sink.crt" --count 20 >/dev/null 2>&1
  result=$(peer latency --key "$pki/store.key" --cert "$pki/store.crt" --to "$work/chain.pem" --topic "$in_topic" \
    --out-topic "$out_topic" --recv-key "$pki/sink.key" --recv-cert "$pki/sink.crt" --count "$count" 2>"$work/err")
  if [ -n "$result" ]; then ok "poll_budget_ms $budget, set_tcp_nodelay $nodelay: $result"; else
    not_ok "poll_budget_ms $budget, set_tcp_nodelay $nodelay" "$work/err"; fi
  stop_broker
done

write_conf "$work/bench-throughput.conf" "$work/echo.json" "set_tcp_nodelay true" "log_type error" "log_type warning"
sed -i '/^log_type all$/d' "$work/bench-throughput.conf"
start_broker "$work/bench-throughput.conf" || bail "the broker starts (throughput)" "$work/bench-throughput.conf.log"
fetch_chain "$work/chain.pem" || bail "the certificate is retained"
peer collect --key "$pki/sink.key" --cert "$pki/sink.crt" --from "$work/chain.pem" --topic "$out_topic" \
  --count "$throughput" --timeout-s 120 >"$work/throughput.got" 2>"$work/throughput.err" &
collect_pid=$!
bg_pids+=("$collect_pid")
wait_for_line "$work/throughput.got" ready 100 || bail "the receiver subscribes" "$work/throughput.err"
start_ns=$(date +%s%N)
peer send --key "$pki/store.key" --cert "$pki/store.crt" --to "$work/chain.pem" --topic "$in_topic" \
  --count "$throughput" --prefix t- 2>>"$work/throughput.err"
if wait "$collect_pid"; then
  elapsed_ns=$(($(date +%s%N) - start_ns))
  ok "throughput: $throughput inputs back to back, all outputs in $((elapsed_ns / 1000000)) ms: \
$((throughput * 1000000000 / elapsed_ns)) events/s"
else not_ok "throughput: $throughput inputs back to back" "$work/throughput.err"; fi
stop_broker
finish

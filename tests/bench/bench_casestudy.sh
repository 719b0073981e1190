#!/usr/bin/env bash
# Starts two brokers on free loopback ports, one plain and one with mosquitto_idevs.so and the rewards
# compartment, and runs bench_casestudy against both in one run. A benchmark, not a test: prints figures.
#   tests/bench/bench_casestudy.sh [BUILD_DIR (default build-release)] [bench_casestudy options...]
# Build the release tree first: meson setup build-release -Dbuildtype=release && ninja -C build-release
set -euo pipefail
IDEVS_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
build=${1:-$IDEVS_ROOT/build-release}
shift || true
work=$(mktemp -d -t idevs-bench.XXXXXX)
plain_pid=
trap 'cs_stop_all; cs_stop_pid "$plain_pid"; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

cs_init "$build" "$work"
cs_make_pki
cs_write_descriptor
# The same broker settings on both sides: no per-message logging, deep queues, no Nagle delay.
cs_write_conf "log_type error" "log_type warning" "max_queued_messages 100000" "set_tcp_nodelay true"
sed -i '/^log_type all$/d' "$work/mosquitto.conf"
cs_start_broker || { cat "$work/broker/mosquitto.log" >&2; exit 1; }

plain_port=$(cs_free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nset_tcp_nodelay true\n' \
  "$plain_port" >"$work/plain.conf"
mosquitto -c "$work/plain.conf" >"$work/plain.log" 2>&1 &
plain_pid=$!
for _ in $(seq 50); do timeout 1 mosquitto_sub -p "$plain_port" -t x -E 2>/dev/null && break; sleep 0.1; done

echo "mosquitto $(mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version //p'), $(nproc) cores; both brokers in this run"
"$build/tests/bench/bench_casestudy" --pki "$CS_PKI" --idevs-port "$CS_PORT" --plain-port "$plain_port" "$@"

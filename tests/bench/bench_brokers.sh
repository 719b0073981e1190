# Brokers with echo processes, driven by bench_processes (sourced by bench_processes.sh and bench_scale.sh, after
# they set build to the build directory and bench_name to their own name for messages). Defines:
#   descriptor NAME FILE [PROCESS_FIELDS]  an echo process NAME on idevs/NAME/... with its own program UUID and a
#                                   queue deep enough for any window; PROCESS_FIELDS (e.g. '"config": {"spin_us":
#                                   200}, "instances": 2') replace the process's "config": {}
#   broker NAME DESCRIPTOR...       WORK/NAME.conf with the same settings for every broker, started: port, broker_pid
#   run_bench ONE_PID ONE_PORT MANY_PID MANY_PORT [bench_processes options]: bench_processes against the two
#                                   brokers; its figures printed, its "result ..." line in result
#   read_result LINE                its "key=value" words into the associative array row
#   totals REGEX                    the last broker's counters summed over its processes (those named by REGEX)
#   load                            the load average (1, 5, 15 minutes), for the figures' context
# and, from tests/broker/lib.sh, the PKI (store, sink) and the EXIT trap that stops the broker and every pid in
# bg_pids.
plugin=$build/plugin/mosquitto_idevs.so
ca_tool=$build/certs/tool/idevs-ca
env_tool=$build/proto/tool/idevs-envelope
compartment=$build/enclave-bridge/compartment/idevs-compartment
echo_logic=$build/tests/logic/idevs_logic_echo.so
bench=$build/tests/bench/bench_processes
for f in "$plugin" "$ca_tool" "$compartment" "$echo_logic" "$bench"; do
  [ -e "$f" ] || { echo "$bench_name: $f is not built" >&2; exit 1; }
done
source "$(dirname "${BASH_SOURCE[0]}")/../broker/lib.sh"
trap 'exit 130' INT TERM

descriptor() { # NAME FILE [PROCESS_FIELDS]
  sed -e "s/\"name\": \"echo\"/\"name\": \"$1\"/" -e "s|idevs/echo/|idevs/$1/|g" \
    -e "s/$program/$(cat /proc/sys/kernel/random/uuid)/" -e 's/"queue_depth": [0-9]*/"queue_depth": 1024/' \
    -e "s|\"config\": {}|${3:-\"config\": {\}}|" "$work/echo.json" >"$2"
}
# The same broker settings on all: no per-message logging, deep queues, no Nagle delay, counters every second.
common=("log_type error" "log_type warning" "max_queued_messages 100000" "set_tcp_nodelay true"
  "plugin_opt_metrics_interval_s 1")
broker() { # NAME DESCRIPTOR...: state in WORK/state-NAME/<process>/
  local name=$1 first=$2 d extra=(); shift 2
  for d in "$@"; do extra+=("plugin_opt_descriptor $d"); done
  mkdir -p -m 700 "$work/state-$name"
  write_conf "$work/$name.conf" "$first" -state_dir "plugin_opt_state_dir $work/state-$name" "${extra[@]}" \
    "${common[@]}"
  sed -i '/^log_type all$/d' "$work/$name.conf"
  start_broker "$work/$name.conf" && return 0
  echo "$bench_name: the broker $name does not start:" >&2
  tail -n 20 "$work/$name.conf.out" "$work/$name.conf.log" >&2
  return 1
}

result=
run_bench() { # ONE_PID ONE_PORT MANY_PID MANY_PORT [bench_processes options]
  local out status
  out=$(timeout 150 "$bench" --store-key "$pki/store.key" --store-cert "$pki/store.crt" --sink-key "$pki/sink.key" \
    --sink-cert "$pki/sink.crt" --ca "$pki/ca.crt" --one-pid "$1" --one-port "$2" --many-pid "$3" --many-port "$4" \
    "${@:5}")
  status=$?
  grep -v '^result ' <<<"$out"
  result=$(grep '^result ' <<<"$out")
  [ "$status" -eq 0 ] && [ -n "$result" ]
}

declare -A row=()
read_result() { local w; row=(); for w in $1; do [[ $w == *=* ]] && row[${w%%=*}]=${w#*=}; done; }

# At their next publication (plugin_opt_metrics_interval_s 1).
# shellcheck disable=SC2016 # the topic is literal
totals() { # REGEX
  sleep 1.2
  sub -t '$SYS/broker/idevs/totals/#' -v -W 1 2>/dev/null | sed 's|^\$SYS/broker/idevs/totals/||' |
    awk -v want="$1" '$1 ~ want {v[$1] = $2} END {for (k in v) printf "%s%s %s", (n++ ? ", " : ""), k, v[k]; print ""}'
}

load() { cut -d' ' -f1-3 /proc/loadavg; }

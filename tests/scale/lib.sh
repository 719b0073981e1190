# Several mosquitto brokers on free loopback ports joined by Mosquitto's own bridges, for the multi-broker tests
# (tests/scale/*.sh; sourced, not run). Everything single-broker comes from tests/broker/lib.sh (the PKI, the echo
# descriptor $work/echo.json, write_conf, the checks, the work directory and the EXIT trap) and through it from
# scripts/lib/broker.sh (free_port, start_broker, stop_pid, wait_for_*): this file only adds names for brokers and
# the bridge stanzas between them.
#   Expects: build (the build directory) set by the caller.
#
#   scale_conf NAME [LINE...]        $work/NAME/mosquitto.conf: write_conf's broker with the idevs plugin, the
#                                    descriptor $scale_descriptor (default $work/echo.json) and its own state
#                                    directory $work/NAME/state, on a new free port, then the LINEs
#   scale_plain_conf NAME [LINE...]  the same broker without the idevs plugin (the LINEs may load another)
#   scale_bridge FROM TO [TOPIC...]  a bridge stanza in FROM's configuration, connecting to TO; each TOPIC is the
#                                    rest of a "topic" line (default: scale_topics, "idevs/# both 1"); the stanza's
#                                    options come from scale_bridge_options (see below)
#   scale_topology KIND NAME...      bridges for a topology: "hub H L1 L2 ..." (each leaf bridges to the hub),
#                                    "chain A B C ..." (each broker bridges to the next)
#   scale_start NAME...              starts each broker (start_broker), pid in scale_pid[NAME] and bg_pids
#   scale_wait_bridges [TENTHS]      every bridge written so far is connected and has its subscriptions, seen in
#                                    the remote broker's log (default 15 s each)
#   scale_stop NAME [SIGNAL]         stops one broker by its pid (TERM, then KILL; SIGNAL 9: kill -9 at once)
#   scale_pub NAME ARGS... / scale_sub NAME ARGS...: mosquitto_pub / mosquitto_sub against broker NAME, bounded
set -u
plugin=$build/plugin/mosquitto_idevs.so ca_tool=$build/certs/tool/idevs-ca env_tool=$build/proto/tool/idevs-envelope
compartment=$build/enclave-bridge/compartment/idevs-compartment echo_logic=$build/tests/logic/idevs_logic_echo.so
peer_exe=$build/tests/broker/idevs_broker_peer
source "$(dirname "${BASH_SOURCE[0]}")/../broker/lib.sh"

declare -A scale_port=() scale_pid=()
scale_bridges=()            # "FROM TO REMOTE_ID SUBSCRIPTIONS" of every bridge written
scale_topics=("idevs/# both 1")
# Why each option: MQTT v5 carries the user properties (idevs-partition) and subscribes with no-local, so a
# message never comes back over the bridge it came by; cleansession false keeps the QoS 1 messages queued for a
# remote broker that is down; restart_timeout 1 keeps reconnections short (2.0.11 still takes about 5 s after
# a lost connection);
# notifications would publish retained $SYS state messages on both brokers, which the tests do not want to count.
scale_bridge_options=("bridge_protocol_version mqttv50" "cleansession false" "restart_timeout 1"
                      "notifications false")

scale_conf() { # NAME [LINE...]
  local name=$1; shift
  mkdir -p "$work/$name" && mkdir -p -m 700 "$work/$name/state"
  write_conf "$work/$name/mosquitto.conf" "${scale_descriptor:-$work/echo.json}" -state_dir \
    "plugin_opt_state_dir $work/$name/state" "$@"
  scale_port[$name]=$port
}
# The same broker without the plugin: write_conf's first lines only (its listener and log), then the LINEs.
scale_plain_conf() { # NAME [LINE...]
  local name=$1; shift
  local conf=$work/$name/mosquitto.conf line
  mkdir -p "$work/$name"
  port=$(free_port)
  {
    echo "listener $port 127.0.0.1"
    echo "allow_anonymous true"
    echo "log_dest file $conf.log"
    echo "log_type all"
    for line in "$@"; do echo "$line"; done
  } >"$conf"
  scale_port[$name]=$port
}

# The stanza is appended to FROM's configuration: Mosquitto reads bridges after the plugin's lines, whatever the
# order. Client ids name both ends, so that a log line says which bridge it is about: remote_clientid
# bridge-FROM-TO on TO, local_clientid local-FROM-TO on FROM.
scale_bridge() { # FROM TO [TOPIC...]
  local from=$1 to=$2; shift 2
  local topics=("$@") line subs=0
  [ -n "${scale_port[$to]:-}" ] || { echo "scale_bridge: write $to's configuration first" >&2; return 1; }
  [ ${#topics[@]} -gt 0 ] || topics=("${scale_topics[@]}")
  {
    echo
    echo "connection $from-$to"
    echo "address 127.0.0.1:${scale_port[$to]}"
    echo "remote_clientid bridge-$from-$to"
    echo "local_clientid local-$from-$to"
    for line in "${scale_bridge_options[@]}"; do echo "$line"; done
    for line in "${topics[@]}"; do
      echo "topic $line"
      case $line in *" in "* | *" both "*) subs=$((subs + 1)) ;; esac
    done
  } >>"$work/$from/mosquitto.conf"
  scale_bridges+=("$from $to bridge-$from-$to $subs")
}

scale_topology() { # hub|chain NAME...
  local kind=$1; shift
  local names=("$@") i
  case $kind in
    hub) for ((i = 1; i < ${#names[@]}; i++)); do scale_bridge "${names[$i]}" "${names[0]}"; done ;;
    chain) for ((i = 0; i + 1 < ${#names[@]}; i++)); do scale_bridge "${names[$i]}" "${names[$((i + 1))]}"; done ;;
    *) echo "scale_topology: unknown topology '$kind'" >&2; return 1 ;;
  esac
}

# A bridge whose remote broker is not listening yet waits for its next attempt (seconds later, whatever
# restart_timeout says), so the brokers others bridge to start first: the hub before its leaves, a chain from its
# end. In a cycle, the rest start in the order given.
scale_start() { # NAME...
  local pending=("$@") rest name
  while [ ${#pending[@]} -gt 0 ]; do
    rest=()
    for name in "${pending[@]}"; do
      if scale_waits_for "$name" "${pending[@]}"; then rest+=("$name"); else scale_start_one "$name" || return 1; fi
    done
    if [ ${#rest[@]} -eq ${#pending[@]} ]; then # a cycle
      scale_start_one "${rest[0]}" || return 1
      rest=("${rest[@]:1}")
    fi
    pending=("${rest[@]}")
  done
}
# scale_waits_for NAME PENDING...: NAME bridges to a broker of PENDING other than itself.
scale_waits_for() {
  local name=$1 b from to _; shift
  for b in "${scale_bridges[@]}"; do
    read -r from to _ <<<"$b"
    [ "$from" = "$name" ] && [ "$to" != "$name" ] && [[ " $* " == *" $to "* ]] && return 0
  done
  return 1
}
scale_start_one() { # NAME
  port=${scale_port[$1]}
  start_broker "$work/$1/mosquitto.conf" || return 1
  scale_pid[$1]=$broker_pid
  bg_pids+=("$broker_pid")
  broker_pid= # stopped by scale_stop or cleanup, by this pid
}

# A bridge is up when the remote broker logged its connection and answered each of its subscriptions (for "in"
# and "both" topics): only then does a message published on either side cross it.
scale_wait_bridges() { # [TENTHS]
  local b from to id subs _ log
  for b in "${scale_bridges[@]}"; do
    read -r from to id subs <<<"$b"
    log=$work/$to/mosquitto.conf.log
    wait_for_regex "$log" "New (client|bridge) connected from .* as $id " "${1:-150}" || return 1
    for _ in $(seq "${1:-150}"); do
      [ "$(grep -c "Sending SUBACK to $id\$" "$log" 2>/dev/null)" -ge "$subs" ] && break
      sleep 0.1
    done
    [ "$(grep -c "Sending SUBACK to $id\$" "$log" 2>/dev/null)" -ge "$subs" ] || return 1
  done
}

scale_stop() { # NAME [9]
  local pid=${scale_pid[$1]:-}
  [ -n "$pid" ] || return 0
  [ "${2:-}" != 9 ] || kill -9 "$pid" 2>/dev/null
  stop_pid "$pid" 100
  scale_pid[$1]=
}

scale_pub() { local name=$1; shift; timeout 20 mosquitto_pub -h 127.0.0.1 -p "${scale_port[$name]}" "$@"; }
scale_sub() { local name=$1; shift; timeout 20 mosquitto_sub -h 127.0.0.1 -p "${scale_port[$name]}" "$@"; }

#!/usr/bin/env bash
# A process run as a pool of two instances (docs/SCALING.md) and a service that comes after both instances began
# their epochs with it: the library learns each instance's own certificate from
# idevs/<process>/instance/<n>/certificate, so it opens what either instance sends, although by then their
# envelopes name their certificates by digest only. A service there from the start learns them from the chains
# the epochs' first envelopes carry.
#   test_instances.sh PLUGIN.so IDEVS_CA IDEVS_COMPARTMENT ECHO_LOGIC.so IDEVS_PUB IDEVS_SUB
set -u
plugin=$1 ca_tool=$2 compartment=$3 echo_logic=$4 idevs_pub=$5 idevs_sub=$6
env_tool= # (lib.sh's seal is not used here)
source "$(dirname "$0")/../broker/lib.sh"
broker_no_leaks=1
# Ready once the second instance is certified: the first is before it.
broker_ready_topic=idevs/echo/instance/1/certificate

sed -i 's|"config": {}|"config": {}, "instances": 2|' "$work/echo.json"
conf=$work/broker.conf
write_conf "$conf" "$work/echo.json"
if start_broker "$conf"; then ok "the broker starts a pool of two instances"; else
  bail "the broker starts a pool of two instances" "$conf.log" "$conf.out"
fi
service_options
wait_subscribed() { wait_for_regex "$conf.log" "^[0-9]+: $1 [0-2] $2\$" 200; }

# A partition key for each instance: the partition (docs/PROTOCOL.md 8.5) mod 2.
read -r key0 key1 < <(python3 - "$program" <<'PY'
import hashlib, sys, uuid
program = uuid.UUID(sys.argv[1]).bytes
keys = {}
for n in range(1000):
    key = f"customer-{n}".encode()
    p = int.from_bytes(hashlib.sha256(b"idevs partition v1" + program + key).digest()[:4], "big") % 64
    keys.setdefault(p % 2, key.decode())
print(keys[0], keys[1])
PY
)

publish_both() { # WORD: one input to each instance
  local k
  for k in "$key0" "$key1"; do
    "$idevs_pub" "${store[@]}" -t events -m "$1 $k" --partition-key "$k" >>"$work/pub.out" 2>&1 ||
      not_ok "idevs-pub publishes '$1 $k'" "$work/pub.out"
  done
}

# A sink NAME that subscribes, then one input to each instance with WORD; its output in WORK/NAME.out.
sink_run() { # NAME WORD
  background "$work/$1.out" "$work/$1.err" "$idevs_sub" "${sink[@]}" -i "sink-$1" -C 2 -W 30
  local pid=$last_pid
  wait_subscribed "sink-$1" idevs/echo/out/out || not_ok "the sink $1 subscribes" "$work/$1.err"
  publish_both "$2"
  wait_pid "$pid"
  grep -qx "$2 $key0" "$work/$1.out" && grep -qx "$2 $key1" "$work/$1.out"
}

check "a sink there from the start receives both instances' outputs" sink_run first first
check "a sink that came after both epochs began opens both instances' outputs" sink_run later later
check "... and refused none of them" bash -c "! grep -q 'refused' '$work/later.err'"
check "both instances' certificates are retained, and differ" bash -c \
  "timeout 5 mosquitto_sub -p $port -t idevs/echo/instance/0/certificate -C 1 >'$work/i0.pem' &&
   timeout 5 mosquitto_sub -p $port -t idevs/echo/instance/1/certificate -C 1 >'$work/i1.pem' &&
   [ -s '$work/i0.pem' ] && ! cmp -s '$work/i0.pem' '$work/i1.pem'"
stop_broker
finish

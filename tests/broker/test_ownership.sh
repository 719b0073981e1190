#!/usr/bin/env bash
# Ownership and peers (plugin/ownership.c, and the peers of plugin/guard.c) in a real broker: a bad ownership file
# stops the broker naming its line; a broker that owns none of a process's partitions refuses its inputs as
# not_owner and routes them once a RELOAD gives it the partitions; a bad file on RELOAD keeps what was in force;
# plugin_opt_instance_base numbers the compartments; a client authenticated as a plugin_opt_peer_user may publish
# on the process's outputs and instance certificates (not its certificate, nor an instance of this broker's own
# numbers: two brokers sharing an instance base, said in the log), an anonymous one may not.
#   test_ownership.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"
mkdir -p "$work/procs"
echo_descriptor "$work/procs/o1.json" o1

printf 'o1 0-10,70\n' >"$work/bad-range"
expect_refusal "a partition beyond the descriptor's stops the broker, naming the process and the part" \
  "'o1': '70' is not a partition or range of partitions from 0 to 63" "$work/procs/o1.json" \
  "plugin_opt_ownership $work/bad-range"
printf '# owners\no1\n' >"$work/bad-line"
expect_refusal "a line without partitions stops the broker, naming the file and line" \
  "$work/bad-line:2: expected 'PROCESS PARTITIONS [adopt DIRECTORY]'" "$work/procs/o1.json" "plugin_opt_ownership $work/bad-line"
expect_refusal "a missing ownership file stops the broker" "plugin_opt_ownership: '$work/nothing'" \
  "$work/procs/o1.json" "plugin_opt_ownership $work/nothing"
expect_refusal "an instance base beyond the range stops the broker" \
  "plugin_opt_instance_base: '4294967295' is not a whole number" "$work/procs/o1.json" \
  "plugin_opt_instance_base 4294967295"

mosquitto_passwd -b -c "$work/passwd" peer-b secret-b >/dev/null 2>&1 || bail "the password file"
printf 'o1 none\n' >"$work/owners"
write_conf "$work/own.conf" "$work/procs/o1.json" "plugin_opt_ownership $work/owners" "plugin_opt_instance_base 128" \
  "plugin_opt_metrics_interval_s 1" "password_file $work/passwd" "plugin_opt_peer_user peer-b"
start_broker "$work/own.conf" || bail "the broker starts" "$work/own.conf.log"
check "the log says which partitions it routes" grep -q "'o1': routes partitions none\$" "$work/own.conf.log"
sub -t idevs/o1/instance/128/certificate -C 1 -W 5 >"$work/i128.pem" 2>/dev/null
check "its compartment is instance 128 (plugin_opt_instance_base)" grep -q 'BEGIN CERTIFICATE' "$work/i128.pem"

# Owning nothing: an input is refused as not_owner, not routed, and the broker says nothing above debug.
if roundtrip o1 "not mine" "$work/procs/o1.json"; then not_ok "an input of a partition another broker owns is not routed"
else ok "an input of a partition another broker owns is not routed"; fi
sleep 1.5
counters_o1() { sub -t '$SYS/broker/idevs/o1/#' -v -W 1 2>/dev/null | sed 's|^\$SYS/broker/idevs/o1/||' >"$1"; }
counters_o1 "$work/c1"
equal "... and counted as rejected/not_owner" "$(counter rejected/not_owner "$work/c1") $(counter routed "$work/c1")" "1 0"

# RELOAD with a bad file keeps "none"; then RELOAD with "all" routes.
printf 'o1 0-x\n' >"$work/owners"
kill -HUP "$broker_pid"
wait_for_text "$work/own.conf.log" "the partitions routed stay as they were" 50 &&
  ok "a bad ownership file on RELOAD is reported and changes nothing" ||
  not_ok "a bad ownership file on RELOAD is reported" "$work/own.conf.log"
printf 'o1 all\n' >"$work/owners"
kill -HUP "$broker_pid"
wait_for_text "$work/own.conf.log" "'o1': routes partitions all" 50 && ok "RELOAD reads the ownership file again" ||
  not_ok "RELOAD reads the ownership file again" "$work/own.conf.log"
check "the input is routed once the broker owns its partition" roundtrip o1 "mine now" "$work/procs/o1.json"

# Peers: an authenticated peer's bridge may publish outputs and instance certificates; nobody may publish the
# process's certificate; an anonymous client may publish on neither.
sub -t idevs/o1/out/out -t idevs/o1/instance/5/certificate -t idevs/o1/instance/128/certificate -t idevs/o1/certificate -v -W 4 >"$work/peer.got" \
  2>/dev/null &
watch=$!
bg_pids+=("$watch")
sleep 0.5
pub -q 1 -u peer-b -P secret-b -t idevs/o1/out/out -m "from the peer" >/dev/null 2>&1
pub -q 1 -u peer-b -P secret-b -t idevs/o1/instance/5/certificate -m "peer instance" >/dev/null 2>&1
pub -q 1 -u peer-b -P secret-b -t idevs/o1/certificate -m "peer certificate" >/dev/null 2>&1
pub -q 1 -u peer-b -P secret-b -t idevs/o1/instance/128/certificate -m "peer as instance 128" >/dev/null 2>&1
pub -q 1 -t idevs/o1/out/out -m "anonymous output" >/dev/null 2>&1
pub -q 1 -t idevs/o1/instance/6/certificate -m "anonymous instance" >/dev/null 2>&1
pub -q 1 -u peer-b -P wrong -t idevs/o1/out/out -m "wrong password" >/dev/null 2>&1
wait "$watch"
check "a peer's output passes the guard" grep -qx "idevs/o1/out/out from the peer" "$work/peer.got"
check "a peer's instance certificate passes the guard" grep -qx "idevs/o1/instance/5/certificate peer instance" "$work/peer.got"
check "a peer may not publish the process's certificate" bash -c "! grep -q 'peer certificate' '$work/peer.got'"
check "nor the certificate of an instance numbered as one of this broker's" \
  bash -c "! grep -q 'peer as instance 128' '$work/peer.got'"
check "... which the log names as two brokers sharing instance numbers" \
  grep -q "two brokers use the same instance numbers; give each its own plugin_opt_instance_base" "$work/own.conf.log"
check "an anonymous client may publish neither an output nor any instance's certificate" \
  bash -c "! grep -Eq 'anonymous|wrong password' '$work/peer.got'"
sleep 1.5
counters_o1 "$work/c2"
equal "from_peers counts the two" "$(counter from_peers "$work/c2")" "2"
stop_broker
sanitizer_check "$work/own.conf"
finish

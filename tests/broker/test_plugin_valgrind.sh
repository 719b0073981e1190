#!/usr/bin/env bash
# mosquitto with mosquitto_idevs.so under valgrind: start, a round trip, a malformed and a forged envelope, a
# RELOAD, the counters, then SIGTERM. valgrind must report no error and no definite leak with a frame in the
# plugin (its sources or the .so). First a control run shows that these options do catch a plugin's leak: a
# broker with leaky_plugin.so, which loses one block on purpose, must end with valgrind's error status and a
# loss record naming the leaking function, found by the same filter.
# Valgrind 3.19 (Debian 12) lacks execveat, so fexecve fails under it: the launcher then executes the same sealed
# memfd through /proc/self/fd (enclave-bridge/launcher/spawn.c), and this test runs the real start path.
#   test_plugin_valgrind.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER \
#                           LEAKY_PLUGIN.so
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6 leaky=$7
source "$(dirname "$0")/lib.sh"
command -v valgrind >/dev/null || bail "valgrind is installed (scripts/lib/common.sh)"
[ "$asan" -eq 0 ] || bail "the plugin is not built with AddressSanitizer (valgrind runs the optimized build)"

vg_status=99
# --keep-debuginfo: the broker unloads plugins before valgrind reports, and their frames must keep their names.
valgrind_cmd() { # log prefix [option]
  echo valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=$vg_status \
    --keep-debuginfo=yes --fullpath-after= --log-file="$1.%p.log" "${@:2}"
}
# plugin_records PATTERN LOG...: valgrind's error and loss records with a frame matching PATTERN (extended regex).
plugin_records() {
  local pattern=$1; shift
  PAT=$pattern awk '
    /^==[0-9]+== $/ { if (rec != "" && hit && bad) print rec "\n"; rec = ""; hit = 0; bad = 0; next }
    { rec = rec "\n" $0 }
    $0 ~ ENVIRON["PAT"] { hit = 1 }
    /definitely lost in loss record|Invalid (read|write|free)|uninitialised|Conditional jump|Syscall param|Mismatched free|overlap/ { bad = 1 }
    END { if (rec != "" && hit && bad) print rec }' "$@"
}
# run_under_valgrind TAG CONF [VALGRIND OPTION]: starts, lets the caller act (function act_TAG), stops with
# SIGTERM; sets vg_rc.
run_under_valgrind() {
  local tag=$1 conf=$2 extra=${3:-}
  # shellcheck disable=SC2046
  if ! start_broker "$conf" $(valgrind_cmd "$work/$tag" $extra); then
    cat "$conf.log" "$conf.out" "$work/$tag".*.log >"$work/out" 2>/dev/null
    not_ok "the broker starts under valgrind ($tag)" "$work/out"
    vg_rc=
    return 1
  fi
  "act_$tag"
  kill -TERM "$broker_pid"
  local i
  for i in $(seq 300); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
  wait "$broker_pid"
  vg_rc=$?
  broker_pid=
}

# ---- control: a leak in a plugin is caught ----
# (acl_others left out: to the plugin, the leaky plugin is another ACL source, and it defers.)
write_conf "$work/control.conf" "$work/echo.json" -acl_others "plugin_opt_start_timeout_ms 60000" "plugin $leaky"
act_control() { :; }
# A frame in the given source folders, as --fullpath-after= prints it: "(/path/to/build/../plugin/routing.c:123)".
frames_in() { echo "/($1)/[^ :()]+\\.[ch]:[0-9]+\\)"; }
plugin_frames="mosquitto_idevs\\.so|$(frames_in 'plugin|proto|certs|enclave-bridge')"
if run_under_valgrind control "$work/control.conf"; then
  equal "control: valgrind ends with its error status when a plugin leaks" "$vg_rc" "$vg_status"
  # The same frame pattern as for the plugin, on the folder of leaky_plugin.c.
  plugin_records "$(frames_in tests/broker)" "$work"/control.*.log >"$work/control.records"
  check "control: the filter finds the loss record of the leaking function" \
    grep -q 'by 0x[0-9A-F]*: idevs_leaky_lose_block (.*tests/broker/leaky_plugin.c:[0-9]*)' "$work/control.records"
  check "control: 4,242 bytes definitely lost, as leaky_plugin.c loses" \
    grep -q '4,242 bytes in 1 blocks are definitely lost' "$work/control.records"
fi

# ---- the plugin: a round trip and a clean shutdown ----
write_conf "$work/vg.conf" "$work/echo.json" "plugin_opt_start_timeout_ms 60000" "plugin_opt_metrics_interval_s 1" \
  "plugin_opt_log_interval_s 1"
act_vg() {
  fetch_chain "$work/chain.pem" || { not_ok "the certificate is retained under valgrind"; return; }
  peer collect --key "$pki/sink.key" --cert "$pki/sink.crt" --from "$work/chain.pem" --topic "$out_topic" \
    --count 2 --timeout-s 50 >"$work/vg.got" 2>"$work/vg-collect.err" &
  local collect_pid=$!
  bg_pids+=("$collect_pid")
  wait_for_line "$work/vg.got" ready 200 || not_ok "the receiver subscribes" "$work/vg-collect.err"
  head -c 200 /dev/urandom >"$work/junk.env"
  seal store "forged" "$work/forged.env"
  printf '\x00' | dd of="$work/forged.env" bs=1 seek=$(($(stat -c %s "$work/forged.env") - 1)) conv=notrunc status=none
  pub -q 1 -t "$in_topic" -f "$work/junk.env"
  pub -q 1 -t "$in_topic" -f "$work/forged.env"
  peer send --key "$pki/store.key" --cert "$pki/store.crt" --to "$work/chain.pem" --topic "$in_topic" \
    --count 2 --prefix valgrind- 2>"$work/vg-send.err" || not_ok "store sends under valgrind" "$work/vg-send.err"
  wait "$collect_pid"
  printf 'valgrind-1\nvalgrind-2\n' >"$work/vg.want"
  grep -v '^ready$' "$work/vg.got" >"$work/vg.lines"
  check "a round trip through the broker under valgrind" diff "$work/vg.want" "$work/vg.lines"
  kill -HUP "$broker_pid"
  sleep 2.5 # a reload, a counters publication and a summary of held-back log lines
  counters "$work/vg.counters"
  equal "the counters are published under valgrind (received)" "$(counter received "$work/vg.counters")" 4
}
if run_under_valgrind vg "$work/vg.conf"; then
  check "the plugin logged the reload" grep -q "idevs: 'echo': reload: the descriptor is unchanged" "$work/vg.conf.log"
  check "the broker ended on SIGTERM" grep -q "mosquitto version 2.0.11 terminating" "$work/vg.conf.log"
  plugin_records "$plugin_frames" "$work"/vg.*.log >"$work/vg.records"
  if [ -s "$work/vg.records" ]; then not_ok "valgrind reports no error and no definite leak in the plugin" "$work/vg.records"
  else ok "valgrind reports no error and no definite leak in the plugin"; fi
  # Mosquitto 2.0.11 itself is clean on this path: the whole run must be too.
  cat "$work"/vg.*.log >"$work/vg.all"
  equal "valgrind's exit status for the whole broker" "$vg_rc" 0
  check "... whose summary says 0 errors" grep -q "ERROR SUMMARY: 0 errors from 0 contexts" "$work/vg.all"
fi
finish

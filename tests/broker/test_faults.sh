#!/usr/bin/env bash
# Faults around the plugin, with a real Mosquitto on a free loopback port:
#   - the broker killed with SIGKILL right after outputs left: their inputs, captured from the input topic and
#     published again to the restarted broker, are all refused as replays (an output waits for the record);
#   - the state directory read-only (and, where a tmpfs can be mounted, full): a compartment whose sealed keys
#     are intact starts, restarts after kill -9 and starts again after a clean stop of the broker, without
#     rewriting its sealed keys; the replay record, written in place, goes on being written when the directory
#     is full, and when it cannot be written (read-only) that is a warning naming the errno; only
#     keys that must be made afresh and cannot be persisted stop the start, saying why;
#   - start-up faults, each stopping the broker at once with a line that says what is wrong: a FIFO as the
#     logic, the descriptor or the sealing secret (no wait for a writer), /bin/true as the compartment program,
#     an attestation authority key that is a symbolic link, has mode 0644 or belongs to root;
#   - a logic that breaks its sandbox: the log calls it a sandbox violation, naming the system call, never "the
#     sandbox could not be set up".
#   test_faults.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"
mounted=
trap '[ -z "$mounted" ] || umount "$mounted" 2>/dev/null; cleanup' EXIT

# The broker's user must be subject to file modes: root is not (started as root, mosquitto drops to its user).
as_user=1
if [ "$(id -u)" -eq 0 ] && ! id mosquitto >/dev/null 2>&1; then as_user=0; fi

log_has() { grep -qF -- "$2" "$1.log"; }
# wait_log CONF TEXT: at most 10 s until the broker's log holds TEXT.
wait_log() { for _ in $(seq 100); do log_has "$1" "$2" && return 0; sleep 0.1; done; return 1; }
count_log() { grep -cF -- "$2" "$1.log"; }
compartment_pid() { pgrep -P "$broker_pid" | head -1; }
# kill_and_wait_restart CONF: kill -9 the compartment; a new one must be certified.
kill_and_wait_restart() {
  local conf=$1 before old
  before=$(count_log "$conf" ", ready in ")
  old=$(compartment_pid)
  [ -n "$old" ] && kill -9 "$old" || return 1
  for _ in $(seq 150); do
    [ "$(count_log "$conf" ", ready in ")" -gt "$before" ] && return 0
    sleep 0.1
  done
  return 1
}

# faults_round CONF STATE WHAT ERRNO_TEXT: with the state directory STATE unwritable (WHAT), the broker starts,
# routes, restarts its compartment, starts again after a clean stop; the sealed keys are not rewritten and the
# replay record's failure is a warning naming ERRNO_TEXT (ERRNO_TEXT empty: the record, made at the first start
# with room for both its slots, is still written in place).
faults_round() {
  local conf=$1 state=$2 what=$3 errno_text=$4
  local sealed=$state/$program.sealed before
  before=$(sha256sum <"$sealed")
  if start_broker "$conf"; then ok "$what: the broker starts, the compartment's keys intact"; else
    cat "$conf.out" >>"$conf.log" 2>/dev/null; not_ok "$what: the broker starts, the compartment's keys intact" "$conf.log"
    return; fi
  check "$what: ... its keys restored" wait_log "$conf" "keys restored"
  check "$what: ... an input gives its output" roundtrip echo "$what one" "$work/echo.json"
  counters "$conf.counters"
  if [ -n "$errno_text" ]; then
    check "$what: ... the replay record that cannot be written is a warning naming the errno ($errno_text)" \
      wait_log "$conf" "cannot write its replay record '$program.replay' in the state directory ($errno_text)"
    check "$what: ... the output was released all the same, counted in released_unrecorded" \
      test "$(counter released_unrecorded "$conf.counters")" -ge 1
  else
    check "$what: ... the replay record is still written (in place, in the space it was given at its first start)" \
      bash -c "! grep -q 'cannot write its replay record' '$conf.log'"
    equal "$what: ... and no output left without it" "$(counter released_unrecorded "$conf.counters")" 0
  fi
  check "$what: ... the compartment restarts after kill -9" kill_and_wait_restart "$conf"
  check "$what: ... and routes again" roundtrip echo "$what two" "$work/echo.json"
  stop_broker
  if start_broker "$conf"; then ok "$what: after a clean stop the broker starts again"; else
    cat "$conf.out" >>"$conf.log" 2>/dev/null; not_ok "$what: after a clean stop the broker starts again" "$conf.log"; fi
  check "$what: ... and routes" roundtrip echo "$what three" "$work/echo.json"
  stop_broker
  equal "$what: the sealed keys were not rewritten" "$(sha256sum <"$sealed")" "$before"
  sanitizer_check "$conf"
}

# ---- a first start fills the state directory ----
state=$work/state/echo
write_conf "$work/first.conf" "$work/echo.json"
if start_broker "$work/first.conf"; then ok "the broker starts with an empty state directory"; else
  bail "the broker starts with an empty state directory" "$work/first.conf.log"; fi
check "... an input gives its output" roundtrip echo "first" "$work/echo.json"
stop_broker
check "... its state directory holds the sealing secret, the sealed keys and the replay record" \
  test -f "$state/sealing.key" -a -f "$state/$program.sealed" -a -f "$state/$program.replay"

# ---- replays after a broker SIGKILL ----
# An output leaves only once the replay record covering its input is on disk: envelopes captured from the input
# topic and published again after the broker was killed (no clean stop, so no last write) are all refused as
# replays, however soon after their outputs the kill came.
replays=20
# wait_subscribed CONF CLIENT TOPIC: until the broker logged CLIENT's subscription to TOPIC.
wait_subscribed() { wait_log "$1" "$2 0 $3"; }
write_conf "$work/kill.conf" "$work/echo.json" "plugin_opt_metrics_interval_s 1"
if start_broker "$work/kill.conf" && fetch_chain "$work/chain.pem"; then
  # The attacker's copy of the input topic, one envelope per line in hex.
  sub -i idevs-capture -t "$in_topic" -F '%x' -C "$replays" -W 30 >"$work/captured.hex" 2>/dev/null &
  capture_pid=$!
  bg_pids+=("$capture_pid")
  wait_subscribed "$work/kill.conf" idevs-capture "$in_topic"
  peer collect --key "$pki/sink.key" --cert "$pki/sink.crt" --from "$work/chain.pem" --topic "$out_topic" \
    --count "$replays" --timeout-s 30 >"$work/kill-outputs.got" 2>"$work/kill-outputs.err" &
  collect_pid=$!
  bg_pids+=("$collect_pid")
  wait_for_line "$work/kill-outputs.got" ready 100
  # One sending context: one key epoch, so that every copy meets the record's window (not an expired epoch).
  peer send --key "$pki/store.key" --cert "$pki/store.crt" --to "$work/chain.pem" --topic "$in_topic" \
    --count "$replays" --prefix killed- 2>"$work/kill-send.err"
  wait "$collect_pid"
  wait "$capture_pid"
  kill -9 "$broker_pid"
  wait "$broker_pid" 2>/dev/null
  broker_pid=
  equal "$replays inputs gave their $replays outputs before the broker was killed with SIGKILL" \
    "$(grep -c '^killed-' "$work/kill-outputs.got")" "$replays"
  equal "... and were captured from the input topic" "$(grep -c . "$work/captured.hex")" "$replays"
  if start_broker "$work/kill.conf" && fetch_chain "$work/chain.pem"; then
    ok "the broker starts again on the same state directory"
    sub -i idevs-watch -t "$out_topic" -F '%x' -W 6 >"$work/kill-again.hex" 2>/dev/null &
    watch_pid=$!
    bg_pids+=("$watch_pid")
    wait_subscribed "$work/kill.conf" idevs-watch "$out_topic"
    n=0
    while read -r hex; do
      n=$((n + 1))
      printf '%s' "$hex" | xxd -r -p >"$work/replay-$n.env"
      pub -V mqttv5 -q 1 -i idevs-replayer -t "$in_topic" -f "$work/replay-$n.env"
    done <"$work/captured.hex"
    counters "$work/kill-counters"
    wait "$watch_pid"
    equal "... the $replays captured envelopes published again give no output" \
      "$(grep -c . "$work/kill-again.hex")" 0
    equal "... and are counted under rejected/replay" "$(counter rejected/replay "$work/kill-counters")" "$replays"
    check "... the record was read without a warning" bash -c "! grep -q 'replay record' '$work/kill.conf.log'"
    stop_broker
    sanitizer_check "$work/kill.conf"
  else not_ok "the broker starts again on the same state directory" "$work/kill.conf.log"; fi
else not_ok "a broker for the SIGKILL replay test starts" "$work/kill.conf.log"; fi

# ---- read-only ----
if [ "$as_user" -eq 0 ]; then
  echo "# skipped: the read-only state directory (running as root without a 'mosquitto' user, file modes do not apply)"
else
  # The directory and its files read-only, as on a read-only mount (the record is written in place: a
  # read-only directory alone does not stop it).
  chmod 500 "$state"
  chmod 400 "$state/$program.replay"
  write_conf "$work/readonly.conf" "$work/echo.json" "plugin_opt_metrics_interval_s 1"
  faults_round "$work/readonly.conf" "$state" "read-only state directory" "Permission denied"
  chmod 600 "$state/$program.replay"
  # Keys that cannot be restored must be made afresh, and persisted before they are certified: that stops the
  # start, and the line says why.
  chmod 700 "$state"
  cp "$state/$program.sealed" "$work/sealed.good"
  head -c "$(stat -c %s "$work/sealed.good")" /dev/zero >"$state/$program.sealed"
  chmod 500 "$state"
  expect_refusal "read-only, with damaged sealed keys: fresh keys cannot be persisted, the start stops saying why" \
    "cannot persist the sealed keys '$program.sealed' in the state directory: Permission denied" "$work/echo.json"
  chmod 700 "$state"
  cp "$work/sealed.good" "$state/$program.sealed"
  chmod 600 "$state/$program.sealed"
fi

# ---- full: a small tmpfs, filled up ----
full=$work/full
mkdir -m 700 "$full"
if [ "$(id -u)" -ne 0 ] || ! mount -t tmpfs -o size=512k,mode=0700 tmpfs "$full" 2>"$work/mount.err"; then
  echo "# skipped: the full state directory (cannot mount a tmpfs here: $(head -1 "$work/mount.err" 2>/dev/null))"
else
  mounted=$full
  write_conf "$work/full.conf" "$work/echo.json" -state_dir "plugin_opt_state_dir $full" \
    "plugin_opt_metrics_interval_s 1"
  if start_broker "$work/full.conf" && roundtrip echo "filling" "$work/echo.json"; then
    ok "a state directory on a small tmpfs: the broker starts and routes"
  else not_ok "a state directory on a small tmpfs: the broker starts and routes" "$work/full.conf.log"; fi
  stop_broker
  mv "$work/full.conf.log" "$work/full-first.log"
  dd if=/dev/zero of="$full/filler" bs=4k >/dev/null 2>&1
  check "... which is then filled up" bash -c "! head -c 4096 /dev/zero >'$full/more'"
  faults_round "$work/full.conf" "$full/echo" "full state directory" ""
fi
# ---- start-up faults: each stops the broker at once, with a line that says what is wrong ----
mkfifo "$work/logic.fifo" "$work/descriptor.fifo"
sed "s|\"logic\": \"$echo_logic\"|\"logic\": \"$work/logic.fifo\"|" "$work/echo.json" >"$work/fifo-logic.json"
expect_refusal "a FIFO as the logic: refused without waiting for a writer" \
  "logic '$work/logic.fifo': not a regular file (a FIFO)" "$work/fifo-logic.json"
expect_refusal "a FIFO as the descriptor: refused without waiting for a writer" \
  "plugin_opt_descriptor: $work/descriptor.fifo: not a regular file" "$work/descriptor.fifo"
mkdir -m 700 "$work/fifostate" "$work/fifostate/echo"
mkfifo -m 600 "$work/fifostate/echo/sealing.key"
expect_refusal "a FIFO as the sealing secret in the state directory: refused without waiting for a writer" \
  "state file 'sealing.key': not a regular file (a FIFO)" "$work/echo.json" -state_dir "plugin_opt_state_dir $work/fifostate"
expect_refusal "/bin/true as the compartment program: the line says it is not the compartment" \
  "exited with status 0 without answering Init: '/bin/true' is not the idevs-compartment program" \
  "$work/echo.json" -compartment "plugin_opt_compartment /bin/true"
ln -s "$pki/authority.key" "$work/authority-link.key"
expect_refusal "an authority key that is a symbolic link: the line says so, and to what" \
  "key file '$work/authority-link.key' is a symbolic link (to '$pki/authority.key')" "$work/echo.json" \
  -authority_key "plugin_opt_authority_key $work/authority-link.key"
cp "$pki/authority.key" "$work/authority-0644.key"
chmod 644 "$work/authority-0644.key"
expect_refusal "an authority key of mode 0644: the line names the mode" \
  "key file '$work/authority-0644.key' has mode 0644: group or others may read it" "$work/echo.json" \
  -authority_key "plugin_opt_authority_key $work/authority-0644.key"
if [ "$(id -u)" -ne 0 ] || [ "$as_user" -eq 0 ]; then
  echo "# skipped: an authority key that belongs to root (needs root, and a 'mosquitto' user for the broker)"
else
  # Outside the work directory, which own_work gives to the broker's user.
  rootkeys=$(mktemp -d -t idevs-rootkey.XXXXXX)
  trap '[ -z "$mounted" ] || umount "$mounted" 2>/dev/null; rm -rf "$rootkeys"; cleanup' EXIT
  chmod 755 "$rootkeys"
  install -o root -g root -m 600 "$pki/authority.key" "$rootkeys/authority.key"
  expect_refusal "an authority key that belongs to root: the line names its owner and the broker's user" \
    "key file '$rootkeys/authority.key' cannot be read by mosquitto (uid $(id -u mosquitto)), which loads it: it belongs to root (uid 0), mode 0600" \
    "$work/echo.json" -authority_key "plugin_opt_authority_key $rootkeys/authority.key"
fi
# ---- a logic that breaks its sandbox is reported as such ----
hostile=$(dirname "$echo_logic")/idevs_logic_hostile_socket.so
sed "s|\"logic\": \"$echo_logic\"|\"logic\": \"$hostile\"|" "$work/echo.json" >"$work/hostile.json"
write_conf "$work/hostile.conf" "$work/hostile.json"
if start_broker "$work/hostile.conf"; then
  fetch_chain "$work/chain.pem" && seal store "open a socket" "$work/hostile.env" &&
    pub -q 1 -t "$in_topic" -f "$work/hostile.env"
  check "a logic's forbidden system call: the compartment's end names it" \
    wait_log "$work/hostile.conf" "exited with status 159: system call socket (41) outside the sandbox allowlist"
  check "... the envelope it was handling is dropped as a sandbox violation" wait_log "$work/hostile.conf" \
    "dropped by the compartment (delivery 1): sandbox_violation: a system call outside the sandbox allowlist"
  check "... and nothing says the sandbox could not be set up" bash -c \
    "! grep -F 'the sandbox could not be set up' '$work/hostile.conf.log'"
  stop_broker
else not_ok "a broker with a logic that breaks its sandbox starts" "$work/hostile.conf.log"; fi
finish

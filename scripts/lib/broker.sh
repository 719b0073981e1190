# Tests and scripts against a real mosquitto broker (sourced, not run): tests/broker/lib.sh (and through it
# tests/broker/*.sh, tests/services/test_sessions.sh, tests/bench), tests/services/test_services.sh and
# scripts/lib/casestudy.sh (scripts/demo, tests/casestudy). Sourcing only defines functions; broker_begin makes the
# work directory and the EXIT trap.
#
#   need_tools TOOL...            each is on PATH, or "not ok - missing TOOL" and "0 passed, 1 failed", exit 1
#   broker_begin NAME             work=$(mktemp -d) (removed at exit unless KEEP is set), the counts, mosquitto,
#                                 and an EXIT trap (cleanup): every pid in bg_pids and the broker stopped
#   ok / not_ok / check / equal / bail / finish: TAP-style lines "ok - ..." / "not ok - ..." (with the tail of the
#                                 files named), counted into the last line "N passed, M failed"
#                                 (scripts/lib/summarize.py reads it)
#   count_tap PREFIX FILE         a helper program's "ok - " / "not ok - " lines (FILE) added to the counts
#   asan_preload PLUGIN           an ASan-built plugin: preload (the sanitizer runtime), asan=1
#   sanitizer_check CONF          with asan=1, CONF.out (the stopped broker's output) holds no sanitizer report
#   free_port                     a free TCP port on 127.0.0.1
#   own_work [DIR]                run as root: DIR (default $work) given to the mosquitto user
#   as_broker_user DIR CMD...     CMD as the broker's user (mosquitto when run as root, after own_work DIR)
#   start_broker CONF [WRAPPER...] / stop_broker: the broker of CONF (port $port, output CONF.out), broker_pid
#   stop_pid PID [TENTHS]         TERM, at most TENTHS/10 s (default 10 s), KILL, reaped: only PID
#   background OUT ERR CMD...     CMD under timeout 60, its pid in last_pid and bg_pids
#   wait_pid PID [TENTHS]         PID's exit status, or 124 (and stopped) when it did not end in time
#   wait_for_text / wait_for_line / wait_for_regex FILE WHAT [TENTHS]: until FILE holds WHAT (default 10 s)

need_tools() { # TOOL...
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "not ok - missing $tool"; echo "0 passed, 1 failed"; exit 1; }
  done
}

# broker_begin NAME: the work directory (idevs-NAME.XXXXXX), the counts and the EXIT trap.
broker_begin() {
  mosquitto=$(command -v mosquitto)
  work=$(mktemp -d -t "idevs-$1.XXXXXX")
  broker_pid= port= preload= asan=0
  bg_pids=() mqtt_auth=()
  broker_ready_topic= broker_no_leaks=0
  passed=0 failed=0
  trap cleanup EXIT
}
# What broker_begin's trap runs (a caller's own EXIT trap may call it last).
cleanup() {
  local pid
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${bg_pids[@]}"; do stop_pid "$pid" 50; done
  stop_broker
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}

# ---- TAP-style checks ----
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { # description [FILE...]: the last 20 lines of each file, indented
  failed=$((failed + 1)); echo "not ok - $1"; shift
  local f
  for f in "$@"; do if [ -f "$f" ]; then sed 's/^/    /' "$f" | tail -20; fi; done
  return 0
}
check() { # description, command...
  local what=$1; shift
  if "$@" >"$work/out" 2>&1; then ok "$what"; else not_ok "$what" "$work/out"; fi
}
# equal description got want
equal() { if [ "$2" = "$3" ]; then ok "$1"; else echo "    got '$2', want '$3'" >"$work/out"; not_ok "$1" "$work/out"; fi; }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }
bail() { not_ok "$@"; finish; } # description [FILE...]: a failure the rest cannot go on from
# count_tap PREFIX FILE: FILE's "ok - X" / "not ok - X" lines (a helper program's checks) counted as
# "ok - PREFIX: X"; a failure shows FILE's "#" lines; no such line at all is a failure.
count_tap() {
  local prefix=$1 file=$2 line ran=0
  while IFS= read -r line; do
    case $line in
      "ok - "*) ok "$prefix: ${line#ok - }"; ran=1 ;;
      "not ok - "*) not_ok "$prefix: ${line#not ok - }"; ran=1; grep '^#' "$file" | sed 's/^/    /' ;;
    esac
  done <"$file"
  [ "$ran" -eq 1 ] || not_ok "$prefix: the client ran" "$file"
}

# ---- sanitizers ----
# asan_preload PLUGIN: an ASan-built plugin needs the sanitizer runtime preloaded in the (uninstrumented)
# broker. (grep reads all of nm's output: with -q it would stop early, and under pipefail nm's SIGPIPE would
# make the test false.)
asan_preload() {
  preload= asan=0
  if nm -D "$1" 2>/dev/null | grep ' U __asan_' >/dev/null; then
    preload=$(gcc -print-file-name=libasan.so)
    asan=1
  fi
  return 0
}
# sanitizer_check CONF: with the ASan build, the stopped broker's output holds no sanitizer report (LeakSanitizer
# reports at exit when ASAN_OPTIONS has detect_leaks=1, as scripts/test sets it).
sanitizer_check() {
  [ "${asan:-0}" -eq 1 ] || return 0
  if grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$1.out" 2>/dev/null; then
    not_ok "no sanitizer report from the broker ($(basename "$1"))" "$1.out"
  else ok "no sanitizer report from the broker ($(basename "$1"), detect_leaks in ASAN_OPTIONS: ${ASAN_OPTIONS:-})"; fi
}

# ---- the broker ----
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Started as root, mosquitto drops to its own user before it loads plugins: give it the work directory.
own_work() { # [DIR]
  if [ "$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then chown -R mosquitto "${1:-$work}"; fi
  return 0
}
# as_broker_user DIR COMMAND...: COMMAND as the broker's user (mosquitto when run as root, DIR given to it first),
# e.g. idevs-tpm, which writes into the broker's state directory; as this user otherwise.
as_broker_user() {
  local dir=$1; shift
  if [ "$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then own_work "$dir"; runuser -u mosquitto -- "$@"
  else "$@"; fi
}

# Set by the caller after broker_begin: mqtt_auth, options that start_broker's probe (and the caller's clients)
# add, e.g. -u NAME -P PASSWORD for a broker without anonymous access; none by default. broker_ready_topic: when
# set, start_broker waits for a retained message on it rather than for a connection. broker_no_leaks=1: the
# broker runs with detect_leaks=0 added to ASAN_OPTIONS.
# start_broker CONF [WRAPPER...]: starts the broker (under WRAPPER, e.g. valgrind; output in CONF.out) and waits
# until it accepts connections on $port (or exits). broker_pid is the broker itself (exec), the only pid
# stop_broker signals.
start_broker() {
  local conf=$1; shift
  local asan_options=${ASAN_OPTIONS:-} probe=(-t idevs/none -E) _
  [ "${broker_no_leaks:-0}" -eq 0 ] || asan_options="${asan_options:+$asan_options:}detect_leaks=0"
  [ -z "${broker_ready_topic:-}" ] || probe=(-t "$broker_ready_topic" -C 1 -W 1)
  own_work
  (LD_PRELOAD=${preload:-} ASAN_OPTIONS=$asan_options exec "$@" "$mosquitto" -c "$conf") >"$conf.out" 2>&1 &
  broker_pid=$!
  for _ in $(seq 300); do
    kill -0 "$broker_pid" 2>/dev/null || return 1
    timeout 2 mosquitto_sub -h 127.0.0.1 -p "$port" "${mqtt_auth[@]}" "${probe[@]}" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
stop_broker() { stop_pid "${broker_pid:-}" 100; broker_pid=; }

# stop_pid PID [TENTHS]: TERM, at most TENTHS/10 s for it to end, then KILL; always reaped. Nothing else signalled.
stop_pid() {
  local pid=$1 _
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq "${2:-100}"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# background OUT ERR COMMAND...: runs COMMAND under timeout 60; its pid goes to last_pid and bg_pids.
background() {
  local out=$1 err=$2; shift 2
  timeout 60 "$@" >"$out" 2>"$err" &
  last_pid=$!
  bg_pids+=("$last_pid")
}
# wait_pid PID [TENTHS]: waits (at most 30 s) for a background process; its exit status, or 124 when it did not end.
wait_pid() {
  local _
  for _ in $(seq "${2:-300}"); do kill -0 "$1" 2>/dev/null || { wait "$1"; return $?; }; sleep 0.1; done
  kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 124
}

# ---- waiting for logs ----
# wait_for_grep GREP_OPTION FILE PATTERN [TENTHS]: until grep GREP_OPTION finds PATTERN in FILE.
wait_for_grep() {
  local _
  for _ in $(seq "${4:-100}"); do grep -q "$1" -- "$3" "$2" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
wait_for_line() { wait_for_grep -x "$@"; }  # FILE TEXT [TENTHS]: a line that is exactly TEXT
wait_for_text() { wait_for_grep -F "$@"; }  # FILE TEXT [TENTHS]: TEXT anywhere in a line
wait_for_regex() { wait_for_grep -E "$@"; } # FILE REGEX [TENTHS]: a line matching the extended REGEX

# What the case-study tests against real brokers share (test_casestudy.sh, test_loyalty.sh): the tools they
# need, a work directory removed at exit (KEEP=1 keeps it) once every process scripts/lib/casestudy.sh started
# is stopped, and "ok - ..." / "not ok - ..." lines counted into the last line, "N passed, M failed".
# Sourced after scripts/lib/casestudy.sh, not run.

ct_begin() { # NAME: sets work
  local tool
  for tool in mosquitto mosquitto_sub sqlite3 python3 openssl timeout; do
    command -v "$tool" >/dev/null || { echo "missing $tool"; echo "0 passed, 1 failed"; exit 1; }
  done
  umask 022 # the usual one: files a program does not make private on purpose are readable by all
  work=$(mktemp -d -t "idevs-$1.XXXXXX")
  trap 'cs_stop_all; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
  passed=0 failed=0
}

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; [ $# -gt 1 ] && [ -f "$2" ] && sed 's/^/    /' "$2" | tail -20; }
bail() { not_ok "$@"; echo "$passed passed, $failed failed"; exit 1; }

# The databases hold personal data: each and its WAL files are the owner's only.
ct_private_dbs() { # NAME...: WORK/NAME.sqlite
  local db modes f
  for db in "$@"; do
    modes=$(for f in "$work/$db.sqlite" "$work/$db.sqlite-wal" "$work/$db.sqlite-shm"; do
              [ -e "$f" ] && stat -c '%n %a' "$f"; done)
    if [ -n "$modes" ] && ! grep -qv ' 600$' <<<"$modes"; then ok "the $db database and its WAL files are mode 600"
    else echo "$modes" >"$work/modes.txt"; not_ok "the $db database and its WAL files are mode 600" "$work/modes.txt"; fi
  done
}

# Adds the "ok" and "not ok" lines of a checker's output (printed) to the counts; a traceback is a failure.
ct_count() { # FILE
  cat "$1"
  passed=$((passed + $(grep -c '^ok - ' "$1")))
  failed=$((failed + $(grep -c '^not ok - ' "$1")))
  if grep -q '^Traceback' "$1"; then failed=$((failed + 1)); fi
}

ct_end() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; }

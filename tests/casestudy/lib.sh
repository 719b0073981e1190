# What the case-study tests share (test_casestudy.sh, test_loyalty.sh; test_demo.sh the last): the tools they
# need, a work directory removed at exit (KEEP=1 keeps it) once every process scripts/lib/casestudy.sh started
# is stopped, and "ok - ..." / "not ok - ..." lines counted into the last line, "N passed, M failed"; the
# points totals a store's database calls for. Sourced after scripts/lib/casestudy.sh, not run; ok, not_ok and bail
# are scripts/lib/broker.sh's.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/broker.sh"

ct_begin() { # NAME: sets work
  need_tools mosquitto mosquitto_sub sqlite3 python3 openssl timeout
  umask 022 # the usual one: files a program does not make private on purpose are readable by all
  work=$(mktemp -d -t "idevs-$1.XXXXXX")
  trap 'cs_stop_all; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
  passed=0 failed=0
}

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

# The table 'points totals' prints, as the store's own database says it should be: a header, a row per customer
# with the whole units of their sales of 1.00 or more and how many those are, then the sum.
ct_points_table() { # STORE_DB [CUSTOMER]
  local where="CAST(replace(total, '.', '') AS INTEGER) >= 100${2:+ AND customer_id = '$2'}"
  printf '%-24s %19s %9s\n' customer points sales
  sqlite3 -readonly "$1" "SELECT printf('%-24s %19d %9d', customer_id, sum(CAST(replace(total, '.', '') AS INTEGER) / 100),
      count(*)) FROM sales WHERE $where GROUP BY customer_id ORDER BY customer_id;
    SELECT printf('%-24s %19d %9d', 'total (customers: ' || count(DISTINCT customer_id) || ')',
      sum(CAST(replace(total, '.', '') AS INTEGER) / 100), count(*)) FROM sales WHERE $where"
}

ct_end() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; }

# What the case-study tests share (test_casestudy.sh, test_onlooker.sh, test_loyalty.sh; test_demo.sh the last):
# the tools they need, a work directory removed at exit (KEEP=1 keeps it) once every process
# scripts/lib/casestudy.sh started is stopped, and "ok - ..." / "not ok - ..." lines counted into the last line,
# "N passed, M failed"; the rewards case study run and checked as it goes (ct_casestudy); the points totals a
# store's database calls for. Sourced after scripts/lib/casestudy.sh, not run; ok, not_ok and bail
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

# The case study run as scripts/demo runs it, checked as it goes: a real mosquitto with mosquitto_idevs.so and
# the rewards compartment, the store (SALES sales), taxi and messaging over the recording relay (its streams
# kept apart in STREAMS_DIR when given), until every qualifying sale is booked and confirmed; then everything is
# stopped, leaving in $work the databases, the traffic, the broker's log, persistence file and counters.
# A test may set CT_STORE_RATE (the store's --rate, default 0: all at once) and define ct_during_store (run in the
# background while the store publishes, e.g. a fault; waited for) and ct_before_stop (run while everything is
# still up, after the counters were read).
ct_casestudy() { # BUILD_DIR SALES [STREAMS_DIR]
  local build=$1 sales=$2
  cs_init "$build" "$work" || bail "the case study's programs are built"
  cs_make_pki || bail "the operator makes the PKI"
  "$CS_STORE" seed --db "$work/store.sqlite" --sales "$sales" >"$work/seed.log" 2>&1 ||
    bail "the store seeds its database" "$work/seed.log"
  cs_write_descriptor 2>"$work/descriptor.err" || bail "the rewards descriptor is written" "$work/descriptor.err"
  cs_write_conf
  cs_start_broker && ok "the broker starts with the plugin and retains the compartment's certificate" ||
    { cat "$work/broker/stdout.log" >>"$work/broker/mosquitto.log" 2>/dev/null
      bail "the broker starts" "$work/broker/mosquitto.log"; }
  if "$CS_CA" show "$work/certificate.pem" | grep -q "measurement: $(cs_expected_measurement)"; then
    ok "its measurement is the one idevs-ca measure computes from the host program, logic and descriptor"
  else
    not_ok "its measurement is the one idevs-ca measure computes"
  fi
  cs_start_tap "${3:-}" && ok "the recording relay runs" || bail "the recording relay runs"

  local taxi_conn messaging_conn store_conn taxi_pid messaging_pid name pid_var status qualifying got _
  mapfile -t taxi_conn < <(cs_conn taxi)
  mapfile -t messaging_conn < <(cs_conn messaging)
  mapfile -t store_conn < <(cs_conn store)
  cs_start_service taxi "$CS_TAXI" --db "$work/taxi.sqlite" "${taxi_conn[@]}"
  taxi_pid=${CS_SERVICE_PIDS[-1]}
  cs_start_service messaging "$CS_MESSAGING" --db "$work/messaging.sqlite" "${messaging_conn[@]}"
  messaging_pid=${CS_SERVICE_PIDS[-1]}
  # Requests published before taxi subscribes would reach nobody: the store starts once both have verified.
  for name in taxi messaging; do
    for _ in $(seq 150); do grep -q '^verified' "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
    grep -q '^verified' "$work/$name.log" && ok "$name verifies the compartment and subscribes" ||
      not_ok "$name verifies the compartment and subscribes" "$work/$name.log"
  done

  local during=
  if declare -F ct_during_store >/dev/null; then ct_during_store & during=$!; fi
  if timeout 120 "$CS_STORE" run --db "$work/store.sqlite" --rate "${CT_STORE_RATE:-0}" "${store_conn[@]}" \
       >"$work/store.log" 2>&1
  then
    ok "the store verifies the compartment and publishes its $sales sales"
  else
    not_ok "the store verifies the compartment and publishes its sales" "$work/store.log"
  fi
  [ -z "$during" ] || wait "$during"
  qualifying=$(sqlite3 -readonly "$work/store.sqlite" \
    "SELECT count(*) FROM sales WHERE CAST(replace(total, '.', '') AS INTEGER) >= 15000")
  got=$(cs_wait_for "$work/taxi.sqlite" "SELECT count(*) FROM bookings" "$qualifying" 60)
  [ "$got" = "$qualifying" ] && ok "taxi booked $qualifying rides" ||
    not_ok "taxi booked $qualifying rides (got '$got')" "$work/taxi.log"
  got=$(cs_wait_for "$work/messaging.sqlite" "SELECT count(*) FROM outbox" "$qualifying" 60)
  [ "$got" = "$qualifying" ] && ok "messaging queued $qualifying confirmations" ||
    not_ok "messaging queued $qualifying confirmations (got '$got')" "$work/messaging.log"
  sleep 1.5 # one more metrics interval, so the counters include the last deliveries
  cs_counters >"$work/counters.txt"
  if declare -F ct_before_stop >/dev/null; then ct_before_stop; fi

  ct_private_dbs store taxi messaging

  # The services end cleanly on SIGTERM.
  for name in taxi messaging; do
    pid_var=${name}_pid
    kill "${!pid_var}" 2>/dev/null
    status=0
    for _ in $(seq 50); do kill -0 "${!pid_var}" 2>/dev/null || break; sleep 0.1; done
    wait "${!pid_var}" 2>/dev/null || status=$?
    [ "$status" -eq 0 ] && ok "$name stops cleanly on SIGTERM" ||
      not_ok "$name stops cleanly on SIGTERM (status $status)" "$work/$name.log"
  done
  cs_stop_all # the broker writes its persistence file on the way out
}

ct_end() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; }

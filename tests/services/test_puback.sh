#!/usr/bin/env bash
# The broker's answer to each publication (services/lib/puback.c) against a real mosquitto with
# mosquitto_idevs.so and the rewards process, behind an acl_file:
#   1. the acl_file lets the store read idevs/# but not write the input topic: the broker answers each PUBACK
#      with 0x87 (not authorized); the store reports each sale refused, with the reason code and its name, marks
#      none published and ends with status 1; idevs-pub ends with status 1 and says why;
#   2. the same broker with an acl_file that lets the store write: the same store run publishes every sale and
#      marks each published, once.
#   test_puback.sh BUILD_DIR [SALES]
set -u
here=$(cd "$(dirname "$0")" && pwd)
IDEVS_ROOT=$(cd "$here/../.." && pwd)
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
source "$IDEVS_ROOT/tests/casestudy/lib.sh"
build=$1 sales=${2:-20}
ct_begin puback
cs_init "$build" "$work" || bail "the case study's programs are built"
PUB=$CS_BUILD/services/tools/idevs-pub
cs_make_pki || bail "the operator makes the PKI"
cs_write_descriptor || bail "the rewards descriptor is written"
"$CS_STORE" seed --db "$work/store.sqlite" --sales "$sales" >"$work/seed.log" 2>&1 ||
  bail "the store seeds its database" "$work/seed.log"
published() { sqlite3 -readonly "$work/store.sqlite" "SELECT count(*) FROM sales WHERE published_at IS NOT NULL"; }

# with_acl RULES: a broker whose acl_file holds RULES for every (anonymous) client; idevs defers to it.
with_acl() {
  printf '%s\n' "$@" >"$work/acl_file"
  cs_write_conf "acl_file $work/acl_file"
  sed -i '/^plugin_opt_acl_others /d' "$work/mosquitto.conf"
  cs_start_broker || { cat "$work/broker/stdout.log" >>"$work/broker/mosquitto.log" 2>/dev/null
                       bail "the broker starts with the acl_file" "$work/broker/mosquitto.log"; }
}

# ---- 1. the acl_file refuses the store the input topic ----
with_acl "topic read idevs/#"
mapfile -t conn < <(cs_conn store)
timeout 120 "$CS_STORE" run --db "$work/store.sqlite" "${conn[@]}" >"$work/refused.out" 2>"$work/refused.err"
rc=$?
equal "the store ends with status 1 when the broker refuses its publications" "$rc" 1
equal "... it reports every sale refused, with the reason code and its MQTT name" \
  "$(grep -c "^store: S-[0-9]* not published to 'rewards': the broker refused the publication: 0x87 not authorized$" "$work/refused.err")" "$sales"
check "... and says they stay unpublished for the next run" \
  grep -qF "store: the broker refused $sales publication(s): $sales of $sales sales not marked published; the next run publishes them again" "$work/refused.err"
equal "... it prints no sale as published" "$(grep -c '^published ' "$work/refused.out")" 0
equal "... and marks none published in its database" "$(published)" 0
equal "... nor records a publication to the process" \
  "$(sqlite3 -readonly "$work/store.sqlite" "SELECT count(*) FROM publications")" 0
"$PUB" "${conn[@]}" -t sales -m '{"sale_id": "S-1"}' >"$work/pub.out" 2>"$work/pub.err"
rc=$?
equal "idevs-pub ends with status 1 when the broker refuses its publication" "$rc" 1
check "... and names the reason" grep -qF "the broker refused the publication: 0x87 not authorized" "$work/pub.err"
cs_stop_all

# ---- 2. the acl_file lets the store write its input ----
with_acl "topic read idevs/#" "topic write idevs/rewards/in/sales"
mapfile -t conn < <(cs_conn store)
if timeout 120 "$CS_STORE" run --db "$work/store.sqlite" "${conn[@]}" >"$work/accepted.out" 2>"$work/accepted.err"; then
  ok "with the input allowed, the same store run ends with status 0"
else
  not_ok "with the input allowed, the same store run ends with status 0" "$work/accepted.err"
fi
equal "... it prints every sale published" "$(grep -c '^published S-' "$work/accepted.out")" "$sales"
equal "... and marks every sale published" "$(published)" "$sales"
check "... and reports no refusal" bash -c "! grep -q refused '$work/accepted.err'"
cs_stop_all
ct_end

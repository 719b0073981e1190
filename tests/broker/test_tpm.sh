#!/usr/bin/env bash
# The tpm backend in a real Mosquitto broker, against a software TPM (swtpm, scripts/lib/swtpm.sh, in the work
# directory): the configuration refused without enrollment and with bad tpm options (each naming its option),
# then the host enrolled with idevs-tpm and the operator's idevs-ca (tpm-challenge against the swtpm vendor's
# roots, tpm-issue under the operator CA), the echo process certified with a TPM report, a round trip with services that
# allow backend tpm, and a broker restart that restores the keys (sealing secret unsealed by the TPM) without a
# new event in the register's log; the replay record bound to the TPM's NV counter (an older copy put back, or
# the file removed, refused at start; the documented recovery).
#   test_tpm.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER IDEVS_TPM
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6 tpm_tool=$7
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
source "$here/../../scripts/lib/swtpm.sh"
need_tools swtpm swtpm_setup swtpm_localca tpm2_pcrread
trap 'swtpm_stop_dir "$work/tpm"; cleanup' EXIT
# idevs-tpm runs as the broker's user, who owns the state directory (mosquitto when the test runs as root).
tpm_cmd() { as_broker_user "$work" "$tpm_tool" "$@"; }

mkdir -p "$work/tpm"
swtpm_setup_dir "$work/tpm" >"$work/swtpm.err" 2>&1 || bail "swtpm_setup makes a TPM with EK certificates" "$work/swtpm.err"
tcti=$(swtpm_start_dir "$work/tpm" 2>"$work/swtpm.err") || bail "swtpm starts" "$work/swtpm.err"
ok "a software TPM runs ($tcti)"
policy_tpm=(--allow-backend tpm --descriptor "$work/echo.json")

# ---- refusals at start, each naming its option ----
expect_refusal "backend tpm without enrollment: the broker stops, naming the enrollment" \
  "plugin_opt_backend tpm: no TPM state" "$work/echo.json" "plugin_opt_backend tpm" "plugin_opt_tpm_tcti $tcti"
expect_refusal "an unknown backend is refused" "plugin_opt_backend: 'sgx2' is neither 'process' nor 'tpm'" \
  "$work/echo.json" "plugin_opt_backend sgx2"
expect_refusal "backend tpm without a TCTI is refused" "plugin_opt_tpm_tcti: missing" "$work/echo.json" \
  "plugin_opt_backend tpm"
expect_refusal "PCR 16 (resettable) is refused" "plugin_opt_tpm_pcr: '16' is not a whole number from 8 to 15" "$work/echo.json" \
  "plugin_opt_backend tpm" "plugin_opt_tpm_tcti $tcti" "plugin_opt_tpm_pcr 16"
expect_refusal "PCR 99 is refused" "plugin_opt_tpm_pcr: '99' is not a whole number" "$work/echo.json" \
  "plugin_opt_backend tpm" "plugin_opt_tpm_tcti $tcti" "plugin_opt_tpm_pcr 99"
expect_refusal "a TCTI with backend process is refused" "plugin_opt_tpm_tcti: only with plugin_opt_backend tpm" \
  "$work/echo.json" "plugin_opt_tpm_tcti $tcti"

# ---- enrollment ----
tpm_cmd enroll-request --tcti "$tcti" --state-dir "$work/state" --host broker-test --out "$work/req.bin" \
  >"$work/out" 2>&1
check "idevs-tpm enroll-request writes a request" test -s "$work/req.bin"
expect_refusal "an AK without its certificate: the broker stops, naming the enrollment" "no AK certificate" \
  "$work/echo.json" "plugin_opt_backend tpm" "plugin_opt_tpm_tcti $tcti"
cat "$work/tpm/vendor-root.pem" "$work/tpm/vendor-intermediate.pem" >"$work/ek-roots.pem"
check "idevs-ca tpm-challenge checks the request against the TPM vendor's roots" \
  "$ca_tool" tpm-challenge "$pki" "$work/req.bin" --ek-roots "$work/ek-roots.pem" --out "$work/ch.bin" \
  --pending "$work/pending.bin"
tpm_cmd enroll-activate --tcti "$tcti" --state-dir "$work/state" --challenge "$work/ch.bin" \
  --out "$work/resp.bin" >"$work/out" 2>&1
check "idevs-tpm enroll-activate answers the challenge" test -s "$work/resp.bin"
check "idevs-ca tpm-issue takes the answer and issues the AK certificate under the operator CA" \
  "$ca_tool" tpm-issue "$pki" "$work/pending.bin" "$work/resp.bin" --out "$work/ak.crt"
tpm_cmd enroll-install --state-dir "$work/state" --ak-cert "$work/ak.crt" >"$work/out" 2>&1
check "idevs-tpm enroll-install takes the AK certificate" test -s "$work/state/tpm/ak.der"
tpm_cmd enroll-install --state-dir "$work/state" --ak-cert "$work/req.bin" >"$work/out" 2>&1
equal "... and refuses what is no certificate (exit 1)" "$?" 1
tpm_cmd enroll-request --tcti "$tcti" >"$work/out" 2>&1
equal "a command without its options is a usage error (exit 2)" "$?" 2

expect_refusal "a TCTI that reaches no TPM is refused" "cannot open the TPM through TCTI" "$work/echo.json" \
  "plugin_opt_backend tpm" "plugin_opt_tpm_tcti swtpm:path=$work/none.sock"

# ---- the broker with backend tpm ----
write_conf "$work/tpm.conf" "$work/echo.json" "plugin_opt_backend tpm" "plugin_opt_tpm_tcti $tcti" \
  "plugin_opt_tpm_pcr 15"
own_work
if start_broker "$work/tpm.conf"; then ok "the broker starts with backend tpm"; else
  cat "$work/tpm.conf.out" >>"$work/tpm.conf.log" 2>/dev/null; bail "the broker starts with backend tpm" "$work/tpm.conf.log"; fi
fetch_chain "$work/chain.pem"
check "the compartment's chain is retained" grep -q 'BEGIN CERTIFICATE' "$work/chain.pem"
check "the replay record is written at the first start, with the new counter" test -s "$work/state/echo/$program.replay"
"$ca_tool" show "$work/chain.pem" >"$work/show" 2>&1
check "its evidence names backend tpm" grep -q 'tpm' "$work/show"
check "it carries a hardware report" grep -Eq 'hardware report: [1-9][0-9]* bytes' "$work/show"
equal "the register's log holds one event (112 bytes)" "$(stat -c %s "$work/state/tpm/events.pcr15" 2>/dev/null)" 112
tpm2_pcrread -T "$tcti" sha256:15 >"$work/pcr15" 2>&1
check "PCR 15 is no longer zero" grep -Eq '15 *: 0x[0-9A-F]*[1-9A-F]' "$work/pcr15"

policy=("${policy_tpm[@]}")
# tpm_roundtrip CHAIN PAYLOAD NAME: store seals PAYLOAD to CHAIN, sink opens what comes out.
tpm_roundtrip() {
  seal store "$2" "$work/$3.env" "$1" || return 1
  sub -t "$out_topic" -C 1 -W 8 -N >"$work/$3.out" 2>"$work/sub.err" &
  local s=$!
  sleep 0.3
  pub -q 1 -t "$in_topic" -f "$work/$3.env" >/dev/null 2>&1
  wait "$s"
  "$env_tool" open --key "$pki/sink.key" --cert "$pki/sink.crt" --ca "$pki/ca.crt" --topic "$out_topic" \
    "${policy[@]}" --in "$work/$3.out" --out "$work/$3.opened" 2>"$work/$3.err" && [ "$(cat "$work/$3.opened")" = "$2" ]
}
check "a sealed input comes out sealed, and sink, allowing backend tpm, opens it to the payload" \
  tpm_roundtrip "$work/chain.pem" "confidential hello" first
grep -F "certified in" "$work/tpm.conf.log" | tail -n 1 | sed 's/^/    /'

# ---- a restart: the same keys, a fresh quote, no new event ----
stop_broker
cp -p "$work/state/echo/$program.replay" "$work/old.replay"
check "the replay record was written" test -s "$work/old.replay"
own_work
if start_broker "$work/tpm.conf"; then ok "the broker starts again"; else bail "the broker starts again" "$work/tpm.conf.log"; fi
fetch_chain "$work/chain2.pem"
check "a new certificate is retained" grep -q 'BEGIN CERTIFICATE' "$work/chain2.pem"
equal "the log still holds one event: the keys came back" "$(stat -c %s "$work/state/tpm/events.pcr15")" 112
check "... unsealed with the TPM's sealing secret (keys restored)" grep -q "keys restored" "$work/tpm.conf.log"
check "the sealing secret is sealed by the TPM, not a plain file" test -s "$work/state/echo/sealing.tpm" -a \
  ! -e "$work/state/echo/sealing.key"
check "another input goes through the restarted compartment" tpm_roundtrip "$work/chain2.pem" "second hello" second
stop_broker
sanitizer_check "$work/tpm.conf"

# ---- rollback: the record of before the second input put back, or removed, is refused ----
cp -p "$work/state/echo/$program.replay" "$work/new.replay"
cp -p "$work/old.replay" "$work/state/echo/$program.replay"
expect_refusal "an older copy of the replay record is refused at start (the TPM's NV counter is ahead)" \
  "is older than the TPM's replay counter" "$work/echo.json" "plugin_opt_backend tpm" "plugin_opt_tpm_tcti $tcti"
rm -f "$work/state/echo/$program.replay"
expect_refusal "a removed replay record is refused too" "is missing, but the TPM's replay counter" "$work/echo.json" \
  "plugin_opt_backend tpm" "plugin_opt_tpm_tcti $tcti"
index=$(grep -ho "replay counter 0x[0-9a-f]*" "$work"/bad*.conf.log | tail -n 1 | sed 's/.* //')
cp -p "$work/new.replay" "$work/state/echo/$program.replay"
write_conf "$work/tpm.conf" "$work/echo.json" "plugin_opt_backend tpm" "plugin_opt_tpm_tcti $tcti"  # a new port
own_work
if start_broker "$work/tpm.conf"; then ok "the current record is accepted"; else
  bail "the current record is accepted" "$work/tpm.conf.log"; fi
stop_broker
# The documented recovery from a lost record: remove it and the counter; the next start begins both anew.
rm -f "$work/state/echo/$program.replay"
tpm2_nvundefine -T "$tcti" -C o "$index" >"$work/out" 2>&1 || not_ok "tpm2_nvundefine $index" "$work/out"
own_work
if start_broker "$work/tpm.conf"; then ok "after removing the record and the counter $index the broker starts"; else
  bail "after removing the record and the counter the broker starts" "$work/tpm.conf.log"; fi
stop_broker
finish

#!/usr/bin/env bash
# The case study end to end on the tpm backend (docs/BACKENDS.md), as `scripts/demo --backend tpm` runs it: a
# software TPM (swtpm) started in the work directory, the host enrolled with idevs-tpm and the operator's
# idevs-ca, the rewards compartment certified with evidence the TPM quotes, and the store, taxi and messaging
# services verifying that evidence (policy allow-backend=tpm, the AK certificate under the operator CA) before
# they send or accept anything; then check_run.py's checks, and what the certificate carries.
#   test_tpm.sh BUILD_DIR [SALES]
set -u
here=$(cd "$(dirname "$0")" && pwd)
IDEVS_ROOT=$(cd "$here/../.." && pwd)
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
source "$here/lib.sh"
build=$1 sales=${2:-60}
ct_begin tpm
need_tools swtpm swtpm_setup swtpm_localca
export CS_BACKEND=tpm

ct_before_stop() { cp "$work/certificate.pem" "$work/tpm-certificate.pem"; }
ct_casestudy "$build" "$sales"

python3 "$here/check_run.py" "$work" "$sales" >"$work/check.out" 2>&1
ct_count "$work/check.out"
"$CS_CA" show "$work/tpm-certificate.pem" >"$work/show.txt" 2>&1
check "the compartment's evidence names backend tpm and carries the TPM's report" \
  grep -Eq '^ +backend: tpm' "$work/show.txt"
check "... and verifies under the services' policy: the quote, the AK certificate, the event log" \
  "$CS_CA" verify --ca "$CS_PKI/ca.crt" "$work/tpm-certificate.pem" --allow-backend tpm \
  --descriptor "$CS_DESCRIPTOR" --measurement "$(cs_expected_measurement)"
for s in taxi messaging store; do
  check "$s verified the compartment as backend tpm" grep -q "backend tpm" "$work/$s.log"
done
ct_end

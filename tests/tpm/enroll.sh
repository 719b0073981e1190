# Sourced: tpm_enroll TCTI STATE_DIR OPERATOR_WORK RUN... enrolls the TPM behind TCTI for the broker state
# directory STATE_DIR in one go (idevs-tpm enroll-request, the operator's challenge with tpm2_makecredential,
# enroll-activate, the operator's AK certificate, enroll-install), running idevs-tpm as RUN... (e.g.
# runuser -u mosquitto -- /path/idevs-tpm). For benchmarks and demos; tests/broker/test_tpm.sh checks each step.
tpm_enroll() {
  local tcti=$1 state=$2 op=$3; shift 3
  local here
  here=$(dirname "${BASH_SOURCE[0]}")
  mkdir -p "$op" &&
    "$@" enroll-request --tcti "$tcti" --state-dir "$state" --host "$(hostname -s)" --out "$op/req.bin" &&
    python3 "$here/tpm_operator.py" challenge "$op" "$op/req.bin" "$op/ch.bin" "$op/secret.bin" &&
    "$@" enroll-activate --tcti "$tcti" --state-dir "$state" --challenge "$op/ch.bin" --out "$op/resp.bin" &&
    python3 "$here/tpm_operator.py" check "$op/resp.bin" "$op/secret.bin" >/dev/null &&
    python3 "$here/tpm_operator.py" issue "$op" "$op/req.bin" "$op/ak.crt" &&
    "$@" enroll-install --state-dir "$state" --ak-cert "$op/ak.crt"
}

# Sourced: tpm_enroll TCTI STATE_DIR OPERATOR_WORK PKI_DIR TPM_DIR IDEVS_CA RUN... enrolls the TPM behind TCTI for
# the broker state directory STATE_DIR in one go, with the real tools on both sides: the host's idevs-tpm
# (enroll-request, enroll-activate, enroll-install), run as RUN... (e.g. runuser -u mosquitto -- /path/idevs-tpm),
# and the operator's idevs-ca (tpm-challenge against the TPM vendor's roots, tpm-issue under the operator CA of
# PKI_DIR). TPM_DIR is the swtpm directory of scripts/lib/swtpm.sh (sourced by the caller), whose vendor root and
# intermediate are the EK certificate's issuers. For scripts/demo --backend tpm, the case study and benchmarks;
# tests/broker/test_tpm.sh checks each step.
tpm_enroll() {
  local tcti=$1 state=$2 op=$3 pki=$4 tpm_dir=$5 ca=$6; shift 6
  mkdir -p "$op" && cat "$tpm_dir/vendor-root.pem" "$tpm_dir/vendor-intermediate.pem" >"$op/ek-roots.pem" &&
    "$@" enroll-request --tcti "$tcti" --state-dir "$state" --host "$(hostname -s)" --out "$op/req.bin" &&
    "$ca" tpm-challenge "$pki" "$op/req.bin" --ek-roots "$op/ek-roots.pem" --out "$op/ch.bin" \
      --pending "$op/pending.bin" &&
    "$@" enroll-activate --tcti "$tcti" --state-dir "$state" --challenge "$op/ch.bin" --out "$op/resp.bin" &&
    "$ca" tpm-issue "$pki" "$op/pending.bin" "$op/resp.bin" --out "$op/ak.crt" &&
    "$@" enroll-install --state-dir "$state" --ak-cert "$op/ak.crt"
}

#!/usr/bin/env bash
# End-to-end checks of the idevs-ca operator tool, with openssl as the independent verifier.
# usage: test_idevs_ca.sh PATH/TO/idevs-ca
set -u

CA_TOOL=$(realpath "${1:?usage: test_idevs_ca.sh PATH/TO/idevs-ca}") || exit 1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/idevs-ca-test.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT
cd "$WORK" || exit 1

passed=0
failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: passes when the command exits 0
check() { local d=$1; shift; if "$@" >out.txt 2>err.txt; then ok "$d"; else not_ok "$d"; sed 's/^/#   /' out.txt err.txt; fi; }
# check_status DESCRIPTION STATUS COMMAND...: passes when the command exits with STATUS
check_status() {
    local d=$1 want=$2; shift 2
    "$@" >out.txt 2>err.txt
    local got=$?
    if [ "$got" -eq "$want" ]; then ok "$d"; else not_ok "$d (exit $got, wanted $want)"; sed 's/^/#   /' out.txt err.txt; fi
}
# check_out DESCRIPTION PATTERN: the last command's stdout+stderr matches the extended regex PATTERN
check_out() { if grep -Eq -- "$2" out.txt err.txt; then ok "$1"; else not_ok "$1"; sed 's/^/#   /' out.txt err.txt; fi; }
mode_of() { stat -c %a "$1"; }

# ---- init ----
check "init creates a PKI" "$CA_TOOL" init pki --name demo-ca --days 30
check "pki directory is 0700" test "$(mode_of pki)" = 700
for f in ca.key authority.key; do
    check "$f is 0600" test "$(mode_of pki/$f)" = 600
done
check_status "init refuses to overwrite" 1 "$CA_TOOL" init pki
check_out "init names the existing file" "pki/ca.key already exists"
check "ca.crt is a self-signed CA" openssl verify -CAfile pki/ca.crt pki/ca.crt
check "authority.crt chains to ca.crt" openssl verify -CAfile pki/ca.crt pki/authority.crt
check "openssl shows the authority's pathlen 0" sh -c "openssl x509 -in pki/authority.crt -noout -text | grep -q 'CA:TRUE, pathlen:0'"

# ---- services ----
for s in store taxi messaging; do
    check "service $s is issued" "$CA_TOOL" service pki "$s"
    check_out "service $s prints its UUID" '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    check "$s.key is 0600" test "$(mode_of pki/$s.key)" = 600
    check "openssl verify accepts $s.crt" openssl verify -CAfile pki/ca.crt "pki/$s.crt"
done
FIXED=6f1c3a52-0b7e-4f5e-9d0a-2a8e3c4b5d6e
check "service with a chosen UUID" "$CA_TOOL" service pki fixed --uuid "$FIXED"
check "openssl shows the urn:uuid name" sh -c "openssl x509 -in pki/fixed.crt -noout -text | grep -q 'URI:urn:uuid:$FIXED'"
check "openssl shows the agreement key extension" sh -c "openssl x509 -in pki/taxi.crt -noout -text | grep -q '2.25.98677817249778228056933293760312102337.2'"
check "openssl shows CA:FALSE on a service" sh -c "openssl x509 -in pki/taxi.crt -noout -text | grep -q 'CA:FALSE'"
check_status "service refuses to overwrite" 1 "$CA_TOOL" service pki taxi
check_out "service names the existing file" "pki/taxi.key already exists"
check_status "service refuses a bad name" 2 "$CA_TOOL" service pki 'bad name'
check_status "service refuses a bad UUID" 2 "$CA_TOOL" service pki other --uuid not-a-uuid
check_status "service without a CA fails" 1 "$CA_TOOL" service nowhere x
check_out "service names the missing CA key" "nowhere/ca.key"

# ---- attested compartment ----
printf 'host program' >host.bin
printf 'integration logic' >logic.so
printf '{"program":"rewards"}' >descriptor.json
PROGRAM=2b7e1516-28ae-4d2a-a6f7-15880912c3f4
check "attest issues a compartment certificate" "$CA_TOOL" attest pki rewards --program "$PROGRAM" \
    --descriptor descriptor.json --measure host.bin --measure logic.so --measure descriptor.json
MEASUREMENT=$(sed -n 's/^measurement //p' out.txt)
# the documented rule, recomputed with openssl
EXPECTED=$({ printf 'idevs measurement v2'; for f in host.bin logic.so descriptor.json; do
    openssl dgst -sha256 -binary "$f"; done; } | openssl dgst -sha256 -r | cut -d' ' -f1)
check "the measurement follows the documented rule" test "$MEASUREMENT" = "$EXPECTED"
check "measure prints the measurement attest put in the evidence" \
  test "$("$CA_TOOL" measure host.bin logic.so descriptor.json)" = "$MEASUREMENT"
check_status "measure of a missing file fails" 1 "$CA_TOOL" measure host.bin missing.so
check_out "measure names the missing file" "cannot read missing.so"
check_status "measure without files is a usage error" 2 "$CA_TOOL" measure
DESC=$(openssl dgst -sha256 -r descriptor.json | cut -d' ' -f1)
check "rewards.key is 0600" test "$(mode_of pki/rewards.key)" = 600
check "rewards.crt holds the leaf and the authority" test "$(grep -c 'BEGIN CERTIFICATE' pki/rewards.crt)" = 2
check "openssl verify accepts the compartment with -untrusted authority.crt" \
    openssl verify -CAfile pki/ca.crt -untrusted pki/authority.crt pki/rewards.crt
check "openssl verify accepts the compartment with the chain file as untrusted" \
    openssl verify -CAfile pki/ca.crt -untrusted pki/rewards.crt pki/rewards.crt
check "openssl shows the evidence extension" sh -c "openssl x509 -in pki/rewards.crt -noout -text | grep -q '2.25.98677817249778228056933293760312102337.1'"
check_status "attest refuses to overwrite" 1 "$CA_TOOL" attest pki rewards --program "$PROGRAM" \
    --descriptor descriptor.json --measure host.bin
check_status "attest without --measure is a usage error" 2 "$CA_TOOL" attest pki x --program "$PROGRAM" \
    --descriptor descriptor.json
check_status "attest with a missing file fails" 1 "$CA_TOOL" attest pki y --program "$PROGRAM" \
    --descriptor descriptor.json --measure missing.bin
check_out "attest names the missing file" "missing.bin"
check "attest --debug" "$CA_TOOL" attest pki debugged --program "$PROGRAM" --descriptor descriptor.json \
    --measure host.bin --debug --validity-seconds 600

# ---- show ----
check "show prints a summary" "$CA_TOOL" show pki/rewards.crt
check_out "show names the certificate" "subject: /CN=rewards"
check_out "show gives the urn:uuid" "urn:uuid:$PROGRAM"
check_out "show gives the backend" "backend: process"
check_out "show gives the measurement" "measurement: $MEASUREMENT"
check_out "show gives the key fingerprints" "agreement key \(X25519\) SHA-256: [0-9a-f]{64}"
check "show of a service" "$CA_TOOL" show pki/taxi.crt
check_out "a service has no evidence" "evidence: none"
check_status "show of a missing file fails" 1 "$CA_TOOL" show nothing.crt
check_out "show names the missing file" "nothing.crt"

# ---- verify ----
check "verify accepts a service" "$CA_TOOL" verify --ca pki/ca.crt pki/taxi.crt
check_out "verify prints OK and the name" "^OK: taxi urn:uuid:"
POLICY=(--require-evidence --allow-process-backend-insecure --measurement "$MEASUREMENT" --descriptor-digest "$DESC"
    --program "$PROGRAM")
check "verify accepts the compartment under the right policy" "$CA_TOOL" verify --ca pki/ca.crt pki/rewards.crt "${POLICY[@]}"
check_out "verify prints the evidence" "measurement: $MEASUREMENT"
check "verify accepts --descriptor FILE" "$CA_TOOL" verify --ca pki/ca.crt pki/rewards.crt --require-evidence \
    --allow-process-backend-insecure --descriptor descriptor.json
WRONG=0000000000000000000000000000000000000000000000000000000000000000
check_status "verify refuses a wrong measurement" 1 "$CA_TOOL" verify --ca pki/ca.crt pki/rewards.crt \
    --require-evidence --allow-process-backend-insecure --measurement "$WRONG"
check_out "... with measurement_mismatch naming the certificate" "^FAILED \(measurement_mismatch\): certificate 'rewards'"
check_status "verify refuses a wrong descriptor" 1 "$CA_TOOL" verify --ca pki/ca.crt pki/rewards.crt \
    --require-evidence --allow-process-backend-insecure --descriptor-digest "$WRONG"
check_out "... with descriptor_mismatch" "^FAILED \(descriptor_mismatch\)"
check_status "verify refuses the process backend without the opt-in" 1 "$CA_TOOL" verify --ca pki/ca.crt \
    pki/rewards.crt --require-evidence --measurement "$MEASUREMENT"
check_out "... with process_backend_not_opted_in" "^FAILED \(process_backend_not_opted_in\)"
check_status "verify refuses the process backend when only sgx is allowed" 1 "$CA_TOOL" verify --ca pki/ca.crt \
    pki/rewards.crt --require-evidence --allow-backend sgx
check_out "... still with process_backend_not_opted_in" "^FAILED \(process_backend_not_opted_in\)"
check_status "verify refuses a debug compartment" 1 "$CA_TOOL" verify --ca pki/ca.crt pki/debugged.crt \
    --require-evidence --allow-process-backend-insecure
check_out "... with debug_not_allowed" "^FAILED \(debug_not_allowed\)"
check "verify accepts it with --allow-debug-insecure" "$CA_TOOL" verify --ca pki/ca.crt pki/debugged.crt \
    --require-evidence --allow-process-backend-insecure --allow-debug-insecure
check_status "verify refuses a service when evidence is required" 1 "$CA_TOOL" verify --ca pki/ca.crt \
    pki/taxi.crt --require-evidence --allow-process-backend-insecure
check_out "... with evidence_missing" "^FAILED \(evidence_missing\)"
check_status "verify refuses a wrong program" 1 "$CA_TOOL" verify --ca pki/ca.crt pki/rewards.crt \
    --require-evidence --allow-process-backend-insecure --program "$FIXED"
check_out "... with program_mismatch" "^FAILED \(program_mismatch\)"
check "a second, unrelated PKI" "$CA_TOOL" init other
check_status "verify refuses a certificate of another CA" 1 "$CA_TOOL" verify --ca other/ca.crt pki/taxi.crt
check_out "... with cert_untrusted naming the certificate" "^FAILED \(cert_untrusted\): certificate 'taxi'"
openssl x509 -in pki/rewards.crt -out rewards-leaf.crt # a file: chains are read from regular files only
check_status "verify refuses a compartment without its authority" 1 "$CA_TOOL" verify --ca pki/ca.crt \
    rewards-leaf.crt
check_out "... with cert_untrusted" "^FAILED \(cert_untrusted\)"
check_status "verify refuses an expired certificate" 1 "$CA_TOOL" verify --ca pki/ca.crt pki/debugged.crt \
    --time $(( $(date +%s) + 3600 ))
check_out "... with cert_expired and the date" "^FAILED \(cert_expired\): certificate 'debugged' .* expired on [0-9-]+ [0-9:]+ UTC"
check_status "verify refuses the authority as a leaf" 1 "$CA_TOOL" verify --ca pki/ca.crt pki/authority.crt
check_out "... with cert_not_idevs" "^FAILED \(cert_not_idevs\)"
check_status "verify refuses allow-backend process" 2 "$CA_TOOL" verify --ca pki/ca.crt pki/rewards.crt \
    --allow-backend process
check_status "verify without --ca is a usage error" 2 "$CA_TOOL" verify pki/taxi.crt
check_status "verify with an unreadable CA file fails" 1 "$CA_TOOL" verify --ca missing.crt pki/taxi.crt
check_out "... naming the file" "missing.crt"

# ---- the key files ----
chmod 0644 pki/ca.key
check_status "a CA key file readable by others (0644) is refused" 1 "$CA_TOOL" service pki y
check_out "... naming the key file" "pki/ca.key"
check "... and no certificate is issued" test ! -e pki/y.crt
chmod 0600 pki/ca.key
check "with mode 0600 again it is accepted" "$CA_TOOL" service pki y
check "key files hold two PKCS#8 keys" test "$(grep -c 'BEGIN PRIVATE KEY' pki/y.key)" = 2
check "openssl reads the Ed25519 key first" sh -c "openssl pkey -in pki/y.key -noout -text 2>/dev/null | head -1 | grep -q ED25519"

# ---- usage ----
check "idevs-ca --help" "$CA_TOOL" --help
# The help says what measure takes: any 1 to 64 files, not exactly three.
check_out "--help lists 'measure FILE...' with 1 to 64 files" "^  measure FILE\.\.\. +print the measurement of 1 to 64 files"
for c in init service attest verify show measure; do
    check "idevs-ca $c --help" "$CA_TOOL" "$c" --help
done
check_out "measure --help says 1 to 64 files" "^usage: idevs-ca measure FILE\.\.\. \(1 to 64 files\)"
check_status "an unknown command is a usage error" 2 "$CA_TOOL" frobnicate
check_status "no command is a usage error" 2 "$CA_TOOL"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

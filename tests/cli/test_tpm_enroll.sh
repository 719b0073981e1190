#!/usr/bin/env bash
# TPM enrollment end to end against software TPMs: the host side with tpm2-tools (and tpm_enroll_host.py for the
# messages), the operator side with idevs-ca tpm-challenge and tpm-issue. The "vendor root" is a private
# swtpm-localca CA in the test's directory, which signs the first TPM's EK certificate at manufacturing.
# usage: test_tpm_enroll.sh PATH/TO/idevs-ca
set -u

CA_TOOL=$(realpath "${1:?usage: test_tpm_enroll.sh PATH/TO/idevs-ca}") || exit 1
HOST_PY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tpm_enroll_host.py"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/idevs-tpm-enroll.XXXXXX") || exit 1
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK" || exit 1

passed=0
failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1"; failed=$((failed + 1)); }
check() { local d=$1; shift; if "$@" >out.txt 2>err.txt; then ok "$d"; else not_ok "$d"; sed 's/^/#   /' out.txt err.txt; fi; }
check_status() {
    local d=$1 want=$2; shift 2
    "$@" >out.txt 2>err.txt
    local got=$?
    if [ "$got" -eq "$want" ]; then ok "$d"; else not_ok "$d (exit $got, wanted $want)"; sed 's/^/#   /' out.txt err.txt; fi
}
check_out() { if grep -Eq -- "$2" out.txt err.txt; then ok "$1"; else not_ok "$1"; sed 's/^/#   /' out.txt err.txt; fi; }
bail() { echo "not ok - $1"; sed 's/^/#   /' out.txt err.txt 2>/dev/null; echo "# $passed passed, $((failed + 1)) failed"; exit 1; }

# tpm N CMD...: a tpm2-tools command against TPM N, transient objects flushed after it (no resource manager).
tpm() {
    local n=$1; shift
    TPM2TOOLS_TCTI="swtpm:path=$WORK/tpm$n/sock" "$@" >>tpm.log 2>&1
    local rc=$?
    TPM2TOOLS_TCTI="swtpm:path=$WORK/tpm$n/sock" tpm2_flushcontext -t >/dev/null 2>&1
    return $rc
}

start_tpm() {
    local n=$1 d="$WORK/tpm$1"
    swtpm socket --tpm2 --tpmstate "dir=$d/state" --server "type=unixio,path=$d/sock" \
        --ctrl "type=unixio,path=$d/sock.ctrl" --flags not-need-init,startup-clear >"$d/swtpm.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 500); do
        [ -S "$d/sock" ] && [ -S "$d/sock.ctrl" ] && return 0
        kill -0 "${PIDS[-1]}" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

# ---- manufacturing: a vendor CA and a TPM with an EK certificate from it; a second TPM ----
mkdir -p vendor tpm1/state tpm2/state roots
cat >vendor/localca.conf <<EOF
statedir = $WORK/vendor
signingkey = $WORK/vendor/signkey.pem
issuercert = $WORK/vendor/issuercert.pem
certserial = $WORK/vendor/certserial
EOF
echo "--platform-manufacturer idevs-test" >vendor/localca.options
cat >vendor/setup.conf <<EOF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $WORK/vendor/localca.conf
create_certs_tool_options = $WORK/vendor/localca.options
active_pcr_banks = sha256
EOF
swtpm_setup --tpm2 --tpmstate "$WORK/tpm1/state" --create-ek-cert --config "$WORK/vendor/setup.conf" \
    >out.txt 2>err.txt || bail "swtpm_setup makes TPM 1 with an EK certificate"
cp vendor/swtpm-localca-rootca-cert.pem vendor/issuercert.pem roots/
start_tpm 1 || bail "swtpm 1 starts"
start_tpm 2 || bail "swtpm 2 starts"
"$CA_TOOL" init pki --name tpm-ca >out.txt 2>err.txt || bail "idevs-ca init"

# ---- the host: EK, its certificate from NV, an AK under the EK ----
check "TPM 1: the EK certificate is read from NV 0x01c00002" tpm 1 tpm2_nvread 0x01c00002 -o ek1.der
check "TPM 1: the EK is created" tpm 1 tpm2_createek -c ek1.ctx -G rsa -u ek1.pub
check "TPM 1: the AK is created under the EK" \
    tpm 1 tpm2_createak -C ek1.ctx -c ak1.ctx -G ecc -g sha256 -s ecdsa -u ak1.pub -n ak1.name
check "the host's request" python3 "$HOST_PY" request host-1 ek1.der ak1.pub req1.bin

# ---- enrollment ----
check "tpm-challenge accepts the request" \
    "$CA_TOOL" tpm-challenge pki req1.bin --ek-roots roots --out ch1.bin --pending pending1.bin
check "the pending file is 0600" test "$(stat -c %a pending1.bin)" = 600
check "the challenge converts for tpm2_activatecredential" python3 "$HOST_PY" challenge ch1.bin cred1.in
activate() { # activate N AK.ctx EK.ctx IN OUT
    tpm "$1" tpm2_startauthsession --policy-session -S "s$1.ctx" &&
        tpm "$1" tpm2_policysecret -S "s$1.ctx" -c e &&
        tpm "$1" tpm2_activatecredential -c "$2" -C "$3" -i "$4" -o "$5" -P "session:s$1.ctx"
    local rc=$?
    tpm "$1" tpm2_flushcontext "s$1.ctx"
    return $rc
}
check "TPM 1 recovers the credential (TPM2_ActivateCredential)" activate 1 ak1.ctx ek1.ctx cred1.in cred1.out
check "the host's response" python3 "$HOST_PY" response cred1.out resp1.bin
check "tpm-issue issues the AK certificate" "$CA_TOOL" tpm-issue pki pending1.bin resp1.bin --out ak1.crt
check "the AK certificate chains to the operator CA" openssl verify -CAfile pki/ca.crt ak1.crt
check "it names the host" sh -c "openssl x509 -in ak1.crt -noout -subject | grep -q 'CN *= *host-1'"
check "it carries the idevs AK mark" \
    sh -c "openssl x509 -in ak1.crt -noout -text | grep -q '2.25.98677817249778228056933293760312102337.3'"
tpm 1 tpm2_readpublic -c ak1.ctx -f pem -o ak1.pem
check "it certifies the TPM's AK" sh -c "openssl x509 -in ak1.crt -noout -pubkey | cmp - ak1.pem"
check_status "tpm-issue refuses to overwrite the certificate" 1 \
    "$CA_TOOL" tpm-issue pki pending1.bin resp1.bin --out ak1.crt
check_out "... naming the file" "ak1.crt already exists"

# Roots given as one PEM file, and as a directory of DER files.
cat roots/*.pem >roots.pem
mkdir roots-der
for f in roots/*.pem; do openssl x509 -in "$f" -outform der -out "roots-der/$(basename "$f" .pem).der"; done
check "--ek-roots as one PEM file" \
    "$CA_TOOL" tpm-challenge pki req1.bin --ek-roots roots.pem --out chp.bin --pending pendingp.bin
check "--ek-roots as a directory of DER files" \
    "$CA_TOOL" tpm-challenge pki req1.bin --ek-roots roots-der --out chd.bin --pending pendingd.bin
check_status "--ek-roots with the root alone (no intermediate) is refused" 1 "$CA_TOOL" tpm-challenge pki req1.bin \
    --ek-roots vendor/swtpm-localca-rootca-cert.pem --out x.bin --pending x.pending
check_out "... as tpm_ek_untrusted" "refused \(tpm_ek_untrusted\)"

# ---- refusals ----
check_status "an EK from an unknown vendor root is refused" 1 \
    "$CA_TOOL" tpm-challenge pki req1.bin --ek-roots pki/ca.crt --out x.bin --pending x.pending
check_out "... as tpm_ek_untrusted" "refused \(tpm_ek_untrusted\)"
check "... and writes nothing" test ! -e x.bin -a ! -e x.pending

check "TPM 1: an owner primary for keys that are no AK" tpm 1 tpm2_createprimary -C o -G ecc -c owner.ctx
check "TPM 1: a restricted signing key without fixedTPM and fixedParent (duplicable)" \
    tpm 1 tpm2_create -C owner.ctx -G ecc256:ecdsa-sha256:null \
    -a 'sensitivedataorigin|userwithauth|restricted|sign' -u loose.pub -r loose.priv
check "TPM 1: an unrestricted signing key" tpm 1 tpm2_create -C owner.ctx -G ecc256:ecdsa-sha256 \
    -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign' -u free.pub -r free.priv
for k in loose free; do
    python3 "$HOST_PY" request host-1 ek1.der $k.pub req-$k.bin
    check_status "an AK with the wrong attributes ($k) is refused" 1 \
        "$CA_TOOL" tpm-challenge pki req-$k.bin --ek-roots roots --out x.bin --pending x.pending
    check_out "... as tpm_ak_attributes" "refused \(tpm_ak_attributes\)"
done

# The AK of another TPM presented with TPM 1's EK certificate: neither TPM recovers the credential.
check "TPM 2: its EK" tpm 2 tpm2_createek -c ek2.ctx -G rsa -u ek2.pub
check "TPM 2: its AK" tpm 2 tpm2_createak -C ek2.ctx -c ak2.ctx -G ecc -g sha256 -s ecdsa -u ak2.pub -n ak2.name
python3 "$HOST_PY" request host-1 ek1.der ak2.pub req2.bin
check "tpm-challenge accepts the request (a valid EK, a valid AK)" \
    "$CA_TOOL" tpm-challenge pki req2.bin --ek-roots roots --out ch2.bin --pending pending2.bin
python3 "$HOST_PY" challenge ch2.bin cred2.in
check_status "TPM 2 cannot activate it (the secret is for TPM 1's EK)" 1 activate 2 ak2.ctx ek2.ctx cred2.in cred2.out
check_status "TPM 1 cannot activate it for its own AK (the name differs)" 1 \
    activate 1 ak1.ctx ek1.ctx cred2.in cred2.out
head -c 32 /dev/urandom >guess.bin
python3 "$HOST_PY" response guess.bin resp2.bin
check_status "a guessed credential is refused" 1 "$CA_TOOL" tpm-issue pki pending2.bin resp2.bin --out ak2.crt
check_out "... as tpm_credential" "refused \(tpm_credential\)"
check_status "the first enrollment's credential is refused for the second" 1 \
    "$CA_TOOL" tpm-issue pki pending2.bin resp1.bin --out ak2.crt
check_out "... as tpm_credential" "refused \(tpm_credential\)"
check "... and no certificate is written" test ! -e ak2.crt

cp pending1.bin open.pending
chmod 0644 open.pending
check_status "a pending file readable by others is refused" 1 \
    "$CA_TOOL" tpm-issue pki open.pending resp1.bin --out ak3.crt
check_out "... naming its mode" "mode 0?644"
head -c 100 pending1.bin >cut.pending
chmod 0600 cut.pending
check_status "a damaged pending file is refused" 1 "$CA_TOOL" tpm-issue pki cut.pending resp1.bin --out ak3.crt
check_out "... as malformed" "refused \(malformed\)"
printf 'not a request' >junk.bin
check_status "a request that is not a TpmEnrollRequest is refused" 1 \
    "$CA_TOOL" tpm-challenge pki junk.bin --ek-roots roots --out x.bin --pending x.pending
check_status "tpm-challenge without --ek-roots is a usage error" 2 \
    "$CA_TOOL" tpm-challenge pki req1.bin --out x.bin --pending x.pending

echo "# $passed passed, $failed failed"
[ "$failed" -eq 0 ]

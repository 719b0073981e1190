#!/usr/bin/env bash
# Interoperability of the C library with an independent Python implementation of docs/PROTOCOL.md:
# the committed test vectors recomputed in Python (and the version 1 ones refused), then envelopes sealed in C
# and opened in Python and the other way round, with identities made by idevs-ca.
#   test_interop.sh IDEVS_CA IDEVS_ENVELOPE VECTORS.json (envelope-v2.json; envelope-v1.json beside it)
set -u
ca_tool=$1 env_tool=$2 vectors=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py=/usr/bin/python3 # Debian's, with python3-cryptography and python3-protobuf
work=$(mktemp -d -t idevs-interop.XXXXXX)
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
check() { # description, command...
  local what=$1; shift
  if "$@" >"$work/out" 2>&1; then
    passed=$((passed + 1)); echo "ok - $what"
  else
    failed=$((failed + 1)); echo "not ok - $what"; sed 's/^/    /' "$work/out"
  fi
}

protoc --python_out="$work" --proto_path="$root/proto" "$root/proto/idevs.proto" || { echo "0 passed, 1 failed"; exit 1; }

# 1. The vectors, recomputed by the Python implementation (it prints its own checks).
"$py" "$here/idevs_envelope.py" vectors "$work" "$vectors" "$(dirname "$vectors")/envelope-v1.json" \
  >"$work/vectors.out" 2>&1
sed -n '/^not ok/p' "$work/vectors.out"
read -r vp vf < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$work/vectors.out")
if [ -z "${vp:-}" ]; then cat "$work/vectors.out"; vp=0 vf=1; fi
passed=$((passed + vp)) failed=$((failed + vf))
echo "ok - $vp vector checks recomputed in Python ($vf failed)"

# 2. Live round trips between the two implementations.
pki=$work/pki
check "idevs-ca makes a CA" "$ca_tool" init "$pki" --name interop-ca
check "idevs-ca makes alice" "$ca_tool" service "$pki" alice
check "idevs-ca makes bob" "$ca_tool" service "$pki" bob
head -c 3000 /dev/urandom >"$work/payload"
topic=idevs/interop/in/data

id1=00112233445566778899aabbccddeeff id2=0f0e0d0c0b0a09080706050403020100

check "C seals for bob, with provenance" "$env_tool" seal --key "$pki/alice.key" --cert "$pki/alice.crt" \
  --ca "$pki/ca.crt" --to "$pki/bob.crt" --topic "$topic" --in "$work/payload" --out "$work/c.env" \
  --provenance "$id1" --provenance "$id2"
check "Python opens what C sealed" bash -c "'$py' '$here/idevs_envelope.py' open '$work' --key '$pki/bob.key' \
  --cert '$pki/bob.crt' --ca '$pki/ca.crt' --topic '$topic' --in '$work/c.env' --out '$work/c.out' >'$work/c.prov'"
check "... and gets the payload back" cmp "$work/payload" "$work/c.out"
check "... and the sealed provenance, in order" test "$(cat "$work/c.prov")" = "provenance $id1
provenance $id2"
check "... which is nowhere in the clear" bash -c "! od -An -tx1 -v '$work/c.env' | tr -d ' \n' | grep -q '$id1'"
check "Python refuses it on another topic" bash -c "! '$py' '$here/idevs_envelope.py' open '$work' \
  --key '$pki/bob.key' --cert '$pki/bob.crt' --ca '$pki/ca.crt' --topic other --in '$work/c.env' --out /dev/null"

check "Python seals for alice" "$py" "$here/idevs_envelope.py" seal "$work" --key "$pki/bob.key" \
  --cert "$pki/bob.crt" --to "$pki/alice.crt" --topic "$topic" --in "$work/payload" --out "$work/py.env"
check "C opens what Python sealed" "$env_tool" open --key "$pki/alice.key" --cert "$pki/alice.crt" \
  --ca "$pki/ca.crt" --topic "$topic" --in "$work/py.env" --out "$work/py.out"
check "... and gets the payload back" cmp "$work/payload" "$work/py.out"
check "C refuses it when addressed to another" bash -c "! '$env_tool' open --key '$pki/bob.key' \
  --cert '$pki/bob.crt' --ca '$pki/ca.crt' --topic '$topic' --in '$work/py.env' --out /dev/null"

# Padding: C pads 3000 bytes and two ids to 4096 (pow2); Python's rule none and a block size open in C, with
# their provenance; a non-zero padding byte made by Python is refused by C as padding.
check "C's envelope has a ciphertext of 4096 + 16 bytes" bash -c "'$env_tool' inspect --in '$work/c.env' |
  grep -q 'ciphertext: 4112 bytes'"
for pad in none 64; do
  check "Python seals with pad $pad and provenance" "$py" "$here/idevs_envelope.py" seal "$work" --key "$pki/bob.key" \
    --cert "$pki/bob.crt" --to "$pki/alice.crt" --topic "$topic" --in "$work/payload" --out "$work/py-$pad.env" \
    --pad "$pad" --provenance "$id2"
  check "C opens it, with its one provenance id" bash -c "'$env_tool' open --key '$pki/alice.key' \
    --cert '$pki/alice.crt' --ca '$pki/ca.crt' --topic '$topic' --in '$work/py-$pad.env' --out '$work/py-$pad.out' \
    2>&1 | grep -q ', 1 provenance id(s)' && cmp '$work/payload' '$work/py-$pad.out'"
done
check "Python seals as instance 7" "$py" "$here/idevs_envelope.py" seal "$work" --key "$pki/bob.key" \
  --cert "$pki/bob.crt" --to "$pki/alice.crt" --topic "$topic" --in "$work/payload" --out "$work/i7.env" --instance 7
check "C opens it as instance 7" bash -c "'$env_tool' open --key '$pki/alice.key' --cert '$pki/alice.crt' \
  --ca '$pki/ca.crt' --topic '$topic' --in '$work/i7.env' --out '$work/i7.out' 2>&1 | grep -q '(instance 7)' &&
  cmp '$work/payload' '$work/i7.out'"
check "Python seals with a non-zero padding byte" "$py" "$here/idevs_envelope.py" seal "$work" --key "$pki/bob.key" \
  --cert "$pki/bob.crt" --to "$pki/alice.crt" --topic "$topic" --in "$work/payload" --out "$work/bad.env" --bad-padding
check "C refuses it as padding" bash -c "'$env_tool' open --key '$pki/alice.key' --cert '$pki/alice.crt' \
  --ca '$pki/ca.crt' --topic '$topic' --in '$work/bad.env' --out /dev/null 2>&1 | grep -q 'rejected (padding)'"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

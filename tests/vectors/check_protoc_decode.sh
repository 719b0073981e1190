#!/bin/sh
# Decodes the committed vector envelopes with Google's protoc (an independent protobuf implementation) and
# checks the fields it shows against the vector file. Usage: check_protoc_decode.sh [SOURCE_ROOT]
# Prints "ok - ..." or "not ok - ..." per check and a final "N passed, M failed" line.
root=${1:-.}
vectors="$root/tests/vectors/envelope-v2.json"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
pass=0
fail=0
check() { # description, command...
    desc=$1
    shift
    if "$@" >/dev/null 2>&1; then
        echo "ok - $desc"
        pass=$((pass + 1))
    else
        echo "not ok - $desc"
        fail=$((fail + 1))
    fi
}

if ! command -v protoc >/dev/null 2>&1; then
    echo "not ok - protoc is installed"
    echo "0 passed, 1 failed"
    exit 1
fi

# For each vector message: suite, instance, sequence, carries, epoch, envelope hex
perl -MJSON::PP -e '
    local $/; open my $f, "<", $ARGV[0] or die; my $j = decode_json(<$f>);
    my $epoch = $j->{inputs}{epoch};
    for my $v (@{$j->{vectors}}) { for my $m (@{$v->{messages}}) {
        printf "%d %.0f %d %s %.0f %s\n", $v->{suite}, $v->{instance}, $m->{sequence}, $m->{carries},
            $epoch, $m->{expected}{envelope};
    } }' "$vectors" >"$tmp/list" 2>"$tmp/err"
check "the vector file parses and lists messages" test -s "$tmp/list"

i=0
while read -r suite instance seq carries epoch envhex; do
    i=$((i + 1))
    printf '%s' "$envhex" | perl -ne 'print pack("H*", $_)' >"$tmp/env$i.bin"
    name="vector message $i (suite $suite, instance $instance, sequence $seq)"
    if protoc --decode=idevs.v1.Envelope --proto_path="$root/proto" "$root/proto/idevs.proto" \
        <"$tmp/env$i.bin" >"$tmp/env$i.txt" 2>"$tmp/env$i.err"; then
        echo "ok - $name: protoc decodes it"
        pass=$((pass + 1))
    else
        echo "not ok - $name: protoc decodes it"
        fail=$((fail + 1))
        continue
    fi
    t="$tmp/env$i.txt"
    check "$name: version 2" grep -qx 'version: 2' "$t"
    check "$name: suite $suite" grep -qx "suite: $suite" "$t"
    check "$name: epoch $epoch" grep -qx "epoch: $epoch" "$t"
    check "$name: sequence $seq" grep -qx "sequence: $seq" "$t"
    for f in sender recipient message_id ephemeral_key epoch_signature ciphertext; do
        check "$name: has $f" grep -q "^$f: " "$t"
    done
    # version 2 seals the provenance: no clear provenance field; instance 0 is omitted (proto3)
    check "$name: no clear provenance" test "$(grep -c '^provenance: ' "$t")" -eq 0
    if [ "$instance" = 0 ]; then
        check "$name: instance 0, omitted" test "$(grep -c '^instance: ' "$t")" -eq 0
    else
        check "$name: instance $instance" grep -qx "instance: $instance" "$t"
    fi
    if [ "$carries" = chain ]; then
        check "$name: carries the chain" grep -q '^sender_chain: ' "$t"
        check "$name: no digest" test "$(grep -c '^sender_cert_digest: ' "$t")" -eq 0
    else
        check "$name: carries the digest" grep -q '^sender_cert_digest: ' "$t"
        check "$name: no chain" test "$(grep -c '^sender_chain: ' "$t")" -eq 0
    fi
    check "$name: no unknown fields" test "$(grep -c '^[0-9]' "$t")" -eq 0
    # protoc re-encodes the decoded text to the very same bytes (canonical encoding)
    if protoc --encode=idevs.v1.Envelope --proto_path="$root/proto" "$root/proto/idevs.proto" <"$t" \
        >"$tmp/re$i.bin" 2>/dev/null && cmp -s "$tmp/re$i.bin" "$tmp/env$i.bin"; then
        echo "ok - $name: protoc re-encodes it byte for byte"
        pass=$((pass + 1))
    else
        echo "not ok - $name: protoc re-encodes it byte for byte"
        fail=$((fail + 1))
    fi
done <"$tmp/list"
check "twelve vector messages" test "$i" -eq 12

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

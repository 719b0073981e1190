"""The host's side of TPM enrollment for tests/cli/test_tpm_enroll.sh, written apart from idevs's C code: encodes
the TpmEnrollRequest and TpmEnrollResponse of certs/tpm.proto by hand (protobuf wire format) and turns a
TpmEnrollChallenge into the credential file tpm2_activatecredential reads.

  tpm_enroll_host.py request HOST EK.der AK.pub OUT     AK.pub: a TPM2B_PUBLIC as tpm2_create -u writes it
  tpm_enroll_host.py challenge CHALLENGE OUT             OUT: tpm2-tools credential file (magic 0xBADCC0DE, v1)
  tpm_enroll_host.py response CREDENTIAL OUT             CREDENTIAL: tpm2_activatecredential -o output
"""
import struct
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def parse(data):
    """Fields of a message as {number: value}; refuses anything but varint and length-delimited fields."""
    fields, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields[number], i = read_varint(data, i)
        elif wire == 2:
            n, i = read_varint(data, i)
            fields[number] = data[i:i + n]
            i += n
        else:
            raise ValueError("unexpected wire type")
    return fields


def read_varint(data, i):
    n, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def main(argv):
    cmd = argv[1]
    if cmd == "request":
        host, ek, ak, out = argv[2:6]
        ek_der = open(ek, "rb").read()
        tpm2b = open(ak, "rb").read()
        (size,) = struct.unpack(">H", tpm2b[:2])
        if size != len(tpm2b) - 2:
            raise SystemExit("AK.pub is not a TPM2B_PUBLIC")
        msg = field_varint(1, 1) + field_bytes(2, host.encode()) + field_bytes(3, ek_der) + field_bytes(4, tpm2b[2:])
        open(out, "wb").write(msg)
    elif cmd == "challenge":
        fields = parse(open(argv[2], "rb").read())
        if fields.get(1) != 1:
            raise SystemExit("not a version 1 challenge")
        open(argv[3], "wb").write(struct.pack(">II", 0xBADCC0DE, 1) + fields[2] + fields[3])
    elif cmd == "response":
        credential = open(argv[2], "rb").read()
        open(argv[3], "wb").write(field_varint(1, 1) + field_bytes(2, credential))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)

"""An independent verifier of tpm evidence, written from docs/PROTOCOL.md section 8.2a alone: protobuf decoded by
hand, TPM structures read with struct, certificates with pyasn1 (python3-pyasn1-modules), signatures with
python3-cryptography. tests/unit/test_tpm_quote.c runs it on every certificate it verifies in C and requires the
same verdict.

Usage:
  /usr/bin/python3 idevs_tpm.py verify LEAF.der AK_CA.der [--pcrs I=HEX,...]...
prints "ok" or the name of the first failed check (idevs_err_name), and exits 0; 2 on a usage error.
Only the steps of section 8.2a are checked here (the leaf's chain and evidence checks are the C library's).
"""
import hashlib
import struct
import sys
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pyasn1.codec.der import decoder, encoder
from pyasn1_modules import rfc5280

OID_ARC = "2.25.98677817249778228056933293760312102337"
OID_EVIDENCE = OID_ARC + ".1"
OID_AK = OID_ARC + ".3"
OID_EC = "1.2.840.10045.2.1"
OID_P256 = "1.2.840.10045.3.1.7"
LABEL = b"idevs tpm event v1"


class Refused(Exception):
    pass


def sha256(b):
    return hashlib.sha256(b).digest()


def varint(data, i):
    n, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise Refused("evidence_malformed")
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def fields(data, schema):
    """{number: value or [values]} of a message; schema maps number -> ("varint"|"fixed64"|"bytes", repeated)."""
    out, i = {}, 0
    while i < len(data):
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        if number not in schema:
            raise Refused("evidence_malformed")  # an unknown field
        kind, repeated = schema[number]
        if kind == "varint" and wire == 0:
            value, i = varint(data, i)
        elif kind == "fixed64" and wire == 1:
            if i + 8 > len(data):
                raise Refused("evidence_malformed")
            value, i = data[i:i + 8], i + 8
        elif kind == "bytes" and wire == 2:
            n, i = varint(data, i)
            if i + n > len(data):
                raise Refused("evidence_malformed")
            value, i = data[i:i + n], i + n
        else:
            raise Refused("evidence_malformed")
        if repeated:
            out.setdefault(number, []).append(value)
        else:
            out[number] = value
    return out


EVIDENCE = {1: ("varint", False), 2: ("varint", False), 3: ("bytes", False), 4: ("bytes", False),
            5: ("bytes", False), 6: ("bytes", False), 7: ("fixed64", False), 8: ("bytes", False),
            9: ("varint", False), 10: ("bytes", False)}
REPORT = {1: ("varint", False), 2: ("bytes", False), 3: ("bytes", False), 4: ("varint", False),
          5: ("bytes", True), 6: ("bytes", False), 7: ("bytes", True)}
PCR = {1: ("varint", False), 2: ("bytes", False)}
EVENT = {1: ("bytes", False), 2: ("bytes", False), 3: ("bytes", False), 4: ("bytes", False)}


class Reader:
    """Big-endian TPM structures; running past the end is the caller's error."""

    def __init__(self, data, error):
        self.data, self.i, self.error = data, 0, error

    def take(self, n):
        if self.i + n > len(self.data):
            raise Refused(self.error)
        b = self.data[self.i:self.i + n]
        self.i += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def tpm2b(self, limit):
        n = self.u16()
        if n > limit:  # larger than the TPM type holds
            raise Refused(self.error)
        return self.take(n)

    def end(self):
        if self.i != len(self.data):
            raise Refused(self.error)


def extensions_of(tbs):
    return {str(e["extnID"]): bytes(e["extnValue"]) for e in tbs["extensions"]}


def check_ak(ak_der, ca_der):
    try:
        ak, rest = decoder.decode(ak_der, asn1Spec=rfc5280.Certificate())
    except Exception:
        raise Refused("evidence_malformed")
    if rest:
        raise Refused("evidence_malformed")
    ca, _ = decoder.decode(ca_der, asn1Spec=rfc5280.Certificate())
    tbs = ak["tbsCertificate"]
    ext = extensions_of(tbs)
    eku = [str(o) for o in decoder.decode(ext["2.5.29.37"], asn1Spec=rfc5280.ExtKeyUsageSyntax())[0]] \
        if "2.5.29.37" in ext else []
    ku = decoder.decode(ext["2.5.29.15"], asn1Spec=rfc5280.KeyUsage())[0] if "2.5.29.15" in ext else None
    is_ca = "2.5.29.19" in ext and bool(decoder.decode(ext["2.5.29.19"],
                                                       asn1Spec=rfc5280.BasicConstraints())[0]["cA"])
    if OID_AK not in eku or ku is None or len(ku) < 1 or ku[0] != 1 or is_ca:
        raise Refused("tpm_ak_untrusted")
    spki = tbs["subjectPublicKeyInfo"]
    alg = spki["algorithm"]
    if str(alg["algorithm"]) != OID_EC or str(decoder.decode(alg["parameters"])[0]) != OID_P256:
        raise Refused("tpm_ak_untrusted")
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), spki["subjectPublicKey"].asOctets())
    # Issued by the AK CA: its name, its (Ed25519) signature over the TBS, valid now.
    ca_tbs = ca["tbsCertificate"]
    if encoder.encode(tbs["issuer"]) != encoder.encode(ca_tbs["subject"]):
        raise Refused("tpm_ak_untrusted")
    try:
        ca_spki = ca_tbs["subjectPublicKeyInfo"]["subjectPublicKey"].asOctets()
        ca_key = ed25519.Ed25519PublicKey.from_public_bytes(ca_spki)
        ca_key.verify(ak["signature"].asOctets(), encoder.encode(tbs))
    except (InvalidSignature, ValueError):
        raise Refused("tpm_ak_untrusted")
    now = time.time()
    valid = [tbs["validity"][w].getComponent().asDateTime.timestamp() for w in ("notBefore", "notAfter")]
    if not valid[0] <= now <= valid[1]:
        raise Refused("tpm_ak_untrusted")
    return key


def verify(leaf_der, ca_der, pcr_sets):
    leaf, _ = decoder.decode(leaf_der, asn1Spec=rfc5280.Certificate())
    evidence = bytes(decoder.decode(extensions_of(leaf["tbsCertificate"])[OID_EVIDENCE])[0])
    ev = fields(evidence, EVIDENCE)
    binding, nonce = ev[6], ev[8]
    report = fields(ev.get(10, b""), REPORT)

    # 1. decoding
    attest, sig, ak_der = report.get(2, b""), report.get(3, b""), report.get(6, b"")
    reg = report.get(4, 0)
    pcrs = [fields(p, PCR) for p in report.get(5, [])]
    events = [fields(e, EVENT) for e in report.get(7, [])]
    if (report.get(1) != 1 or not 1 <= len(attest) <= 1024 or not 1 <= len(sig) <= 256
            or not 1 <= len(ak_der) <= 8192 or not 8 <= reg <= 22 or reg == 16 or not events or len(pcrs) > 24):
        raise Refused("evidence_malformed")
    for e in events:
        if [len(e.get(n, b"")) for n in (1, 2, 3, 4)] != [32, 16, 32, 32]:
            raise Refused("evidence_malformed")
    listed = {}
    last = -1
    for p in pcrs:
        index, value = p.get(1, 0), p.get(2, b"")
        if index > 23 or len(value) != 32 or index <= last:
            raise Refused("evidence_malformed")
        listed[index], last = value, index

    # 2. the AK certificate
    key = check_ak(ak_der, ca_der)

    # 3. the signature
    s = Reader(sig, "tpm_signature")
    alg, hash_alg = s.u16(), s.u16()
    if alg != 0x0018 or hash_alg != 0x000B:
        raise Refused("tpm_signature")
    r_bytes, s_bytes = s.tpm2b(128), s.tpm2b(128)
    s.end()
    if not 1 <= len(r_bytes) <= 32 or not 1 <= len(s_bytes) <= 32:
        raise Refused("tpm_signature")
    try:
        key.verify(encode_dss_signature(int.from_bytes(r_bytes, "big"), int.from_bytes(s_bytes, "big")), attest,
                   ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Refused("tpm_signature")

    # 4. the quote
    a = Reader(attest, "tpm_not_quote")
    if a.u32() != 0xFF544347 or a.u16() != 0x8018:
        raise Refused("tpm_not_quote")
    a.tpm2b(68)                   # qualifiedSigner
    extra = a.tpm2b(64)
    a.take(8 + 4 + 4 + 1 + 8)     # clockInfo, firmwareVersion
    selections = []
    count = a.u32()
    if count > 16:
        raise Refused("tpm_not_quote")
    for _ in range(count):
        hash_alg, size = a.u16(), a.u8()
        if size > 4:
            raise Refused("tpm_not_quote")
        selections.append((hash_alg, a.take(size)))
    digest = a.tpm2b(64)
    a.end()
    # 5, 6. qualifying data
    if len(extra) != 64 or extra[:32] != binding:
        raise Refused("tpm_quote_binding")
    if len(nonce) != 32 or extra[32:] != nonce:
        raise Refused("tpm_quote_nonce")
    # 7. selection
    want = set(range(8)) | {reg}
    if len(selections) != 1 or selections[0][0] != 0x000B:
        raise Refused("tpm_pcr_selection")
    bitmap = selections[0][1]
    got = {i for i in range(8 * len(bitmap)) if bitmap[i // 8] >> (i % 8) & 1}
    if got != want:
        raise Refused("tpm_pcr_selection")
    # 8. the digest
    if set(listed) != want:
        raise Refused("evidence_malformed")
    if digest != sha256(b"".join(listed[i] for i in sorted(want))):
        raise Refused("tpm_pcr_digest")
    # 9. the log
    register = bytes(32)
    for e in events:
        register = sha256(register + sha256(LABEL + e[1] + e[2] + e[3] + e[4]))
    if register != listed[reg]:
        raise Refused("tpm_log_replay")
    # 10. this certificate's event
    if not any((e[1], e[2], e[3], e[4]) == (ev[3], ev[4], ev[5], ev[6]) for e in events):
        raise Refused("tpm_event_missing")
    # 11. boot PCRs
    if pcr_sets and not any(all(listed[i] == v for i, v in s.items()) for s in pcr_sets):
        raise Refused("tpm_boot_pcrs")


def main(argv):
    if len(argv) < 4 or argv[1] != "verify":
        sys.stderr.write(__doc__)
        return 2
    sets, rest = [], argv[4:]
    while rest:
        if rest[0] != "--pcrs" or len(rest) < 2:
            sys.stderr.write(__doc__)
            return 2
        sets.append({int(i): bytes.fromhex(h) for i, h in (p.split("=") for p in rest[1].split(","))})
        rest = rest[2:]
    with open(argv[2], "rb") as f:
        leaf = f.read()
    with open(argv[3], "rb") as f:
        ca = f.read()
    try:
        verify(leaf, ca, sets)
        print("ok")
    except Refused as e:
        print(e.args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

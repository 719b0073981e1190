#!/usr/bin/env python3
"""The operator's side of a TPM enrollment, for tests of the host's side (idevs-tpm) on their own: tpm2-tools'
tpm2_makecredential (with no TPM, --tcti none) makes the challenge, and a throwaway CA issues the AK certificate.
The real operator's tool is idevs-ca tpm-challenge / tpm-issue.

  tpm_operator.py challenge WORK REQ CHALLENGE_OUT SECRET_OUT  TpmEnrollChallenge for REQ's EK and AK
  tpm_operator.py check RESPONSE SECRET                        exit 0 when the response holds the secret
  tpm_operator.py issue WORK REQ CERT_OUT                      AK certificate (PEM) from a CA made in WORK
  tpm_operator.py issue-other WORK CERT_OUT                    a certificate for some other P-256 key

WORK receives tpm_pb2.py (protoc, from certs/tpm.proto) and scratch files."""
import hashlib
import os
import struct
import subprocess
import sys
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def proto(work):
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(os.path.join(work, "tpm_pb2.py")):
        subprocess.run(["protoc", "--proto_path=" + os.path.join(ROOT, "certs"), "--python_out=" + work, "tpm.proto"],
                       check=True)
    sys.path.insert(0, work)
    import tpm_pb2
    return tpm_pb2


def ak_point(tpmt):
    """(x, y) of a marshalled TPMT_PUBLIC of an ECC key."""
    typ, _name_alg, _attrs = struct.unpack(">HHI", tpmt[:8])
    assert typ == 0x0023, "not an ECC key"
    off = 8
    (n,) = struct.unpack(">H", tpmt[off:off + 2])
    off += 2 + n  # authPolicy
    (sym,) = struct.unpack(">H", tpmt[off:off + 2])
    off += 2 + (4 if sym != 0x0010 else 0)
    (scheme,) = struct.unpack(">H", tpmt[off:off + 2])
    off += 2 + (2 if scheme != 0x0010 else 0)
    off += 2  # curve
    (kdf,) = struct.unpack(">H", tpmt[off:off + 2])
    off += 2 + (2 if kdf != 0x0010 else 0)
    (n,) = struct.unpack(">H", tpmt[off:off + 2])
    x = tpmt[off + 2:off + 2 + n]
    off += 2 + n
    (n,) = struct.unpack(">H", tpmt[off:off + 2])
    y = tpmt[off + 2:off + 2 + n]
    return int.from_bytes(x, "big"), int.from_bytes(y, "big")


def challenge(work, req_path, out_path, secret_path):
    pb = proto(work)
    req = pb.TpmEnrollRequest()
    req.ParseFromString(open(req_path, "rb").read())
    ek = x509.load_der_x509_certificate(req.ek_certificate).public_key()
    with open(os.path.join(work, "ek.pem"), "wb") as f:
        f.write(ek.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    name = b"\x00\x0b" + hashlib.sha256(req.ak_public).digest()  # nameAlg SHA-256 || digest
    secret = os.urandom(32)
    with open(secret_path, "wb") as f:
        f.write(secret)
    alg = "rsa" if isinstance(ek, rsa.RSAPublicKey) else "ecc"
    blob = os.path.join(work, "cred.blob")
    subprocess.run(["tpm2_makecredential", "--tcti", "none", "-u", os.path.join(work, "ek.pem"), "-G", alg,
                    "-s", secret_path, "-n", name.hex(), "-o", blob], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = open(blob, "rb").read()
    magic, version = struct.unpack(">II", data[:8])
    assert magic == 0xBADCC0DE and version == 1, "unexpected tpm2_makecredential output"
    (n,) = struct.unpack(">H", data[8:10])
    id_object = data[8:10 + n]
    enc = data[10 + n:]
    ch = pb.TpmEnrollChallenge(version=1, credential_blob=id_object, encrypted_secret=enc)
    with open(out_path, "wb") as f:
        f.write(ch.SerializeToString())


def check(resp_path, secret_path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(resp_path)))
    raw = open(resp_path, "rb").read()
    # TpmEnrollResponse: field 1 varint 1, field 2 bytes(32)
    secret = open(secret_path, "rb").read()
    ok = raw == b"\x08\x01\x12\x20" + secret
    print("credential matches" if ok else "credential differs")
    return 0 if ok else 1


def ca(work):
    os.makedirs(work, exist_ok=True)
    key_path = os.path.join(work, "akca.key")
    if os.path.exists(key_path):
        key = serialization.load_pem_private_key(open(key_path, "rb").read(), None)
        return key, x509.load_pem_x509_certificate(open(os.path.join(work, "akca.crt"), "rb").read())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test AK CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    open(key_path, "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    open(os.path.join(work, "akca.crt"), "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def issue_for(work, pub, host, out_path):
    key, cacert = ca(work)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(cacert.subject).public_key(pub).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    open(out_path, "wb").write(cert.public_bytes(serialization.Encoding.PEM))


def issue(work, req_path, out_path):
    pb = proto(work)
    req = pb.TpmEnrollRequest()
    req.ParseFromString(open(req_path, "rb").read())
    x, y = ak_point(req.ak_public)
    issue_for(work, ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key(), req.host, out_path)


def main(argv):
    if len(argv) == 6 and argv[1] == "challenge":
        challenge(*argv[2:])
        return 0
    if len(argv) == 4 and argv[1] == "check":
        return check(argv[2], argv[3])
    if len(argv) == 5 and argv[1] == "issue":
        issue(*argv[2:])
        return 0
    if len(argv) == 4 and argv[1] == "issue-other":
        issue_for(argv[2], ec.generate_private_key(ec.SECP256R1()).public_key(), "other", argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

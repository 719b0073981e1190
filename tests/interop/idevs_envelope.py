"""An independent implementation of docs/PROTOCOL.md (envelope format version 2) in Python, written from the
document alone.

It uses Debian's python3-cryptography for the primitives, python3-pyasn1-modules to read certificates (Debian
12's cryptography 38 refuses OIDs with arcs over 64 bits, as under 2.25), and python3-protobuf (the schema
compiled by protoc at test time), and
serves to prove that the document is complete and that the C library follows it: the test opens what C sealed,
seals what C opens, and recomputes the committed test vectors.

Usage:
  idevs_envelope.py vectors PB2_DIR VECTORS.json [V1_VECTORS.json]
  idevs_envelope.py seal PB2_DIR --key K --cert CHAIN.pem --to PEER.pem --topic T --in FILE --out FILE
                    [--pad pow2|none|BLOCK] [--provenance HEX]... [--instance N] [--bad-padding]
  idevs_envelope.py open PB2_DIR --key K --cert CHAIN.pem --ca CA.pem --topic T --in FILE --out FILE
"""
import argparse
import base64
import hashlib
import json
import os
import struct
import sys
import time
import uuid

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pyasn1.codec.der import decoder, encoder
from pyasn1_modules import rfc5280

OID_ARC = "2.25.98677817249778228056933293760312102337"
OID_AGREEMENT_KEY = OID_ARC + ".2"
AEADS = {1: AESGCM, 2: ChaCha20Poly1305}


def u16(x):
    return struct.pack(">H", x)


def u32(x):
    return struct.pack(">I", x)


def u64(x):
    return struct.pack(">Q", x)


def sha256(b):
    return hashlib.sha256(b).digest()


def raw_public(key):
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def parse_certificate(der):
    """(tbs DER, signature, subject public key, {extension OID: extnValue bytes}, not_before, not_after)."""
    cert, rest = decoder.decode(der, asn1Spec=rfc5280.Certificate())
    if rest:
        raise ValueError("cert_malformed: trailing bytes")
    tbs = cert["tbsCertificate"]
    extensions = {str(e["extnID"]): bytes(e["extnValue"]) for e in tbs["extensions"]}
    validity = [tbs["validity"][w].getComponent().asDateTime.timestamp() for w in ("notBefore", "notAfter")]
    return (encoder.encode(tbs), cert["signature"].asOctets(), tbs["subjectPublicKeyInfo"]["subjectPublicKey"].asOctets(),
            extensions, validity[0], validity[1])


class Identity:
    """A certified identity as docs/CERTIFICATES.md describes it."""

    def __init__(self, chain_der, sign_priv=None, kex_priv=None):
        self.chain = chain_der
        _, _, self.sign_pub, extensions, _, _ = parse_certificate(chain_der[0])
        san, _ = decoder.decode(extensions["2.5.29.17"], asn1Spec=rfc5280.SubjectAltName())
        urns = [str(n.getComponent()) for n in san if n.getName() == "uniformResourceIdentifier"]
        urns = [u for u in urns if u.startswith("urn:uuid:")]
        self.uuid = uuid.UUID(urns[0][len("urn:uuid:"):]).bytes
        kex, _ = decoder.decode(extensions[OID_AGREEMENT_KEY])  # an OCTET STRING inside extnValue
        self.kex_pub = bytes(kex)
        assert len(self.sign_pub) == 32 and len(self.kex_pub) == 32
        self.digest = sha256(chain_der[0])
        self.sign_priv, self.kex_priv = sign_priv, kex_priv


def pem_to_der(pem_block):
    body = b"".join(line for line in pem_block.strip().splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body)


def load_chain_pem(path):
    """Every certificate of a PEM file, leaf first, as DER."""
    end = b"-----END CERTIFICATE-----"
    with open(path, "rb") as f:
        return [pem_to_der(b + end) for b in f.read().split(end)[:-1]]


def load_identity(key_path, chain_path):
    with open(key_path, "rb") as f:
        pem = f.read()
    blocks = [b + b"-----END PRIVATE KEY-----\n" for b in pem.split(b"-----END PRIVATE KEY-----")[:-1]]
    sign = serialization.load_pem_private_key(blocks[0].strip() + b"\n", None)
    kex = serialization.load_pem_private_key(blocks[1].strip() + b"\n", None)
    assert isinstance(sign, ed25519.Ed25519PrivateKey) and isinstance(kex, x25519.X25519PrivateKey)
    return Identity(load_chain_pem(chain_path), sign, kex)


def offer_bytes(suite, instance, sender, recipient, epoch, e_pub):
    return (b"idevs epoch v2" + u32(suite) + u32(instance) + sender.uuid + recipient.uuid + u64(epoch) + e_pub
            + recipient.kex_pub + sender.digest)


def epoch_keys(offer, dh_e, dh_s):
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=None, info=b"idevs epoch keys v2" + offer).derive(dh_e + dh_s)
    return okm[:32], okm[32:]


def padded_length(framed, pad):
    """Section 4.1: the plaintext length for a framed length under the rule pow2, none or a block size."""
    if pad == "none":
        return framed
    if pad == "pow2":
        if framed <= 4096:
            length = 64
            while length < framed:
                length *= 2
            return length
        return -(-framed // 4096) * 4096
    if not 16 <= pad <= 4096:
        raise ValueError("invalid padding rule")
    return -(-framed // pad) * pad


def frame(provenance, payload, pad):
    """Section 4, step 4: u8(n) || ids || u32(len(p)) || p, then zeros to the padded length."""
    framed = bytes([len(provenance)]) + b"".join(provenance) + u32(len(payload)) + payload
    return framed + bytes(padded_length(len(framed), pad) - len(framed))


def unframe(plaintext, max_payload):
    """Section 5, step 11: (provenance, payload), or ValueError('padding') / ValueError('too_large')."""
    if len(plaintext) < 5:
        raise ValueError("padding")
    n = plaintext[0]
    if n > 64 or 5 + 16 * n > len(plaintext):
        raise ValueError("padding")
    provenance = [plaintext[1 + 16 * i:17 + 16 * i] for i in range(n)]
    (length,) = struct.unpack(">I", plaintext[1 + 16 * n:5 + 16 * n])
    if length > len(plaintext) - 5 - 16 * n:
        raise ValueError("padding")
    end = 5 + 16 * n + length
    if any(plaintext[end:]):
        raise ValueError("padding")
    if length > max_payload:
        raise ValueError("too_large")
    return provenance, plaintext[5 + 16 * n:end]


def nonce_for(base_nonce, sequence):
    return base_nonce[:4] + bytes(a ^ b for a, b in zip(base_nonce[4:], u64(sequence)))


def aad_bytes(suite, instance, sender_uuid, recipient_uuid, message_id, epoch, sequence, e_pub, signature, digest,
              topic):
    t = topic.encode()
    return (b"idevs envelope v2" + u32(2) + u32(suite) + u32(instance) + sender_uuid + recipient_uuid + message_id
            + u64(epoch) + u64(sequence) + e_pub + signature + digest + u16(len(t)) + t)


def seal(pb2, sender, recipient, topic, payload, provenance=(), suite=1, epoch=None, e_priv=None, message_id=None,
         sequence=1, with_chain=True, pad="pow2", instance=0, plaintext=None):
    """Seals one message in a fresh epoch (or the given one); returns (envelope bytes, intermediate values).
    plaintext, when given, replaces the framed and padded one (to make broken framing on purpose)."""
    epoch = epoch if epoch is not None else int(time.time() * 1000)
    e_priv = e_priv or x25519.X25519PrivateKey.generate()
    e_pub = raw_public(e_priv.public_key())
    offer = offer_bytes(suite, instance, sender, recipient, epoch, e_pub)
    signature = sender.sign_priv.sign(offer)
    recipient_kex = x25519.X25519PublicKey.from_public_bytes(recipient.kex_pub)
    dh_e, dh_s = e_priv.exchange(recipient_kex), sender.kex_priv.exchange(recipient_kex)
    key, base_nonce = epoch_keys(offer, dh_e, dh_s)
    message_id = message_id or os.urandom(16)
    aad = aad_bytes(suite, instance, sender.uuid, recipient.uuid, message_id, epoch, sequence, e_pub, signature,
                    sender.digest, topic)
    nonce = nonce_for(base_nonce, sequence)
    if plaintext is None:
        plaintext = frame(list(provenance), payload, pad)
    ciphertext = AEADS[suite](key).encrypt(nonce, plaintext, aad)
    env = pb2.Envelope(version=2, suite=suite, sender=sender.uuid, recipient=recipient.uuid, message_id=message_id,
                       epoch=epoch, sequence=sequence, ephemeral_key=e_pub, epoch_signature=signature,
                       ciphertext=ciphertext, instance=instance)
    if with_chain:
        env.sender_chain.extend(sender.chain)
    else:
        env.sender_cert_digest = sender.digest
    values = dict(offer=offer, epoch_signature=signature, dh_e=dh_e, dh_s=dh_s, key=key, base_nonce=base_nonce,
                  plaintext=plaintext, aad=aad, nonce=nonce, ciphertext=ciphertext)
    return env.SerializeToString(), values


def open_envelope(pb2, recipient, topic, data, known_sender=None, ca_der=None, max_payload=16 * 1024 * 1024):
    """Opens data per PROTOCOL.md section 5 for a single message (no windows: one-shot). Returns
    (payload, provenance, envelope). Raises ValueError naming the failed step."""
    env = pb2.Envelope()
    env.ParseFromString(data)
    if env.UnknownFields():
        raise ValueError("malformed: unknown fields")
    if env.version == 1:
        raise ValueError("old_version")
    if env.version != 2:
        raise ValueError("version")
    if env.suite not in AEADS:
        raise ValueError("suite")
    if env.provenance or len(env.ciphertext) < 16 + 5:
        raise ValueError("malformed")
    if env.recipient != recipient.uuid:
        raise ValueError("wrong_recipient")
    if env.sender_chain:
        sender = Identity(list(env.sender_chain))
        if ca_der is not None:
            verify_chain(list(env.sender_chain), ca_der)
    else:
        sender = known_sender
        if sender is None:
            raise ValueError("unknown_sender")
        if env.sender_cert_digest != sender.digest:
            raise ValueError("cert_digest_mismatch")
    if sender.uuid != env.sender:
        raise ValueError("malformed: chain names another sender")
    offer = offer_bytes(env.suite, env.instance, sender, recipient, env.epoch, env.ephemeral_key)
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(sender.sign_pub).verify(env.epoch_signature, offer)
    except InvalidSignature:
        raise ValueError("epoch_signature")
    dh_e = recipient.kex_priv.exchange(x25519.X25519PublicKey.from_public_bytes(env.ephemeral_key))
    dh_s = recipient.kex_priv.exchange(x25519.X25519PublicKey.from_public_bytes(sender.kex_pub))
    key, base_nonce = epoch_keys(offer, dh_e, dh_s)
    aad = aad_bytes(env.suite, env.instance, env.sender, env.recipient, env.message_id, env.epoch, env.sequence,
                    env.ephemeral_key, env.epoch_signature, sender.digest, topic)
    try:
        plaintext = AEADS[env.suite](key).decrypt(nonce_for(base_nonce, env.sequence), env.ciphertext, aad)
    except InvalidTag:
        raise ValueError("decrypt")
    provenance, payload = unframe(plaintext, max_payload)
    return payload, provenance, env


def verify_chain(chain_der, ca_der):
    """Ed25519 signatures up to the CA, and validity; the C library applies the full policy."""
    certs = [parse_certificate(d) for d in chain_der] + [parse_certificate(ca_der)]
    now = time.time()
    for child, parent in zip(certs, certs[1:]):
        ed25519.Ed25519PublicKey.from_public_bytes(parent[2]).verify(child[1], child[0])
        if not child[4] <= now <= child[5]:
            raise ValueError("cert_expired")


def import_pb2(pb2_dir):
    sys.path.insert(0, pb2_dir)
    import idevs_pb2  # generated by protoc --python_out at test time

    return idevs_pb2


def check_vectors(path, pb2, v1_path=None):
    """Recomputes every message of the committed vectors, and refuses every version 1 envelope; prints one line
    per check."""
    with open(path) as f:
        vectors = json.load(f)
    failures = checks = 0

    def check(name, got, want):
        nonlocal failures, checks
        checks += 1
        if got == want:
            print(f"ok - {name}")
        else:
            failures += 1
            print(f"not ok - {name}: got {got.hex()[:64]}..., want {want.hex()[:64]}...")

    h = bytes.fromhex
    inputs = vectors["inputs"]

    def identity(who):
        i = inputs[who]
        ident = Identity([h(i["certificate"])], ed25519.Ed25519PrivateKey.from_private_bytes(h(i["ed25519_seed"])),
                         x25519.X25519PrivateKey.from_private_bytes(h(i["x25519_private"])))
        check(f"{who} UUID from its certificate", ident.uuid, uuid.UUID(i["uuid"]).bytes)
        return ident

    sender, recipient = identity("sender"), identity("recipient")
    topic, epoch = inputs["topic"], inputs["epoch"]
    for case in vectors["vectors"]:
        e_priv = x25519.X25519PrivateKey.from_private_bytes(h(case["ephemeral_private"]))
        expected = case["expected"]
        for msg in case["messages"]:
            provenance = [h(p) for p in msg["provenance"]]
            env, values = seal(pb2, sender, recipient, topic, h(msg["payload"]), provenance,
                               case["suite"], epoch, e_priv, h(msg["message_id"]), msg["sequence"],
                               msg["carries"] == "chain", msg["pad"], case["instance"])
            label = f"suite {case['suite']} instance {case['instance']} seq {msg['sequence']}"
            for field in ("offer", "epoch_signature", "dh_e", "dh_s", "key", "base_nonce"):
                check(f"{label} {field}", values[field], h(expected[field]))
            for field in ("plaintext", "aad", "nonce", "ciphertext"):
                check(f"{label} {field}", values[field], h(msg["expected"][field]))
            check(f"{label} envelope bytes", env, h(msg["expected"]["envelope"]))
            payload, got_provenance, opened = open_envelope(pb2, recipient, topic, h(msg["expected"]["envelope"]),
                                                            sender)
            check(f"{label} opens to the payload", payload, h(msg["payload"]))
            check(f"{label} opens as its instance", u32(opened.instance), u32(case["instance"]))
            check(f"{label} opens to the provenance", b"".join(got_provenance), b"".join(provenance))
    if v1_path is not None:
        with open(v1_path) as f:
            old = json.load(f)
        for case in old["vectors"]:
            for msg in case["messages"]:
                try:
                    open_envelope(pb2, recipient, topic, h(msg["expected"]["envelope"]), sender)
                    why = "opened"
                except ValueError as e:
                    why = str(e)
                check(f"version 1 suite {case['suite']} seq {msg['sequence']} refused as old_version",
                      why.encode(), b"old_version")
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["vectors", "seal", "open"])
    ap.add_argument("pb2_dir")
    ap.add_argument("vectors", nargs="?")
    ap.add_argument("v1_vectors", nargs="?")
    ap.add_argument("--pad", default="pow2")
    ap.add_argument("--provenance", action="append", default=[])
    ap.add_argument("--instance", type=int, default=0)
    ap.add_argument("--bad-padding", action="store_true", help="seal with a non-zero last padding byte")
    ap.add_argument("--key")
    ap.add_argument("--cert")
    ap.add_argument("--to")
    ap.add_argument("--ca")
    ap.add_argument("--topic")
    ap.add_argument("--in", dest="infile")
    ap.add_argument("--out")
    a = ap.parse_args()
    pb2 = import_pb2(a.pb2_dir)
    if a.command == "vectors":
        return check_vectors(a.vectors, pb2, a.v1_vectors)
    me = load_identity(a.key, a.cert)
    with open(a.infile, "rb") as f:
        data = f.read()
    if a.command == "seal":
        pad = a.pad if a.pad in ("pow2", "none") else int(a.pad)
        provenance = [bytes.fromhex(p) for p in a.provenance]
        plaintext = None
        if a.bad_padding:
            plaintext = bytearray(frame(provenance, data, pad))
            if len(plaintext) == 5 + 16 * len(provenance) + len(data):
                plaintext += bytes(1)
            plaintext[-1] = 1
            plaintext = bytes(plaintext)
        env, _ = seal(pb2, me, Identity(load_chain_pem(a.to)), a.topic, data, provenance, pad=pad,
                      instance=a.instance, plaintext=plaintext)
        out = env
    else:
        ca_der = load_chain_pem(a.ca)[0]
        try:
            out, provenance, _ = open_envelope(pb2, me, a.topic, data, ca_der=ca_der)
        except ValueError as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        for p in provenance:
            print(f"provenance {p.hex()}")
    with open(a.out, "wb") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What an onlooker of the broker's port learns from a case-study run (docs/PROTOCOL.md, section 4, "What
travels in the clear", and 4.1), checked against what the run's databases say it must not learn.

    check_onlooker.py WORK_DIR

Reads every byte the relay carried, each connection's two directions apart (WORK/streams/N.up, N.down), parses
their MQTT v5 PUBLISH packets and, with no key and no schema, each envelope's protobuf fields; the store's,
taxi's and messaging's databases say which sale each envelope carried. Prints "ok - ..." / "not ok - ..." and
the last line "N passed, M failed".
"""
import glob
import hashlib
import json
import os
import sqlite3
import struct
import sys
import uuid

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "layering"))
sys.path.insert(0, os.path.join(here, "..", "interop"))
from idevs_envelope import padded_length  # noqa: E402  (section 4.1, written from the document alone)
from tap import Tap  # noqa: E402

PUBLISH, CONNECT = 3, 1
CIPHERTEXT, PROVENANCE = 13, 12
CLEAR_FIELDS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14}  # section 4, step 7, ciphertext aside


def varint(data, i):
    """An MQTT variable byte integer or a protobuf varint (the same encoding): (value, next index)."""
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def string(data, i):
    (n,) = struct.unpack_from(">H", data, i)
    return data[i + 2:i + 2 + n], i + 2 + n


def properties(data):
    """The MQTT v5 properties a PUBLISH may carry, as (identifier, value) pairs; ValueError for any other."""
    out, i = [], 0
    while i < len(data):
        ident, i = varint(data, i)
        if ident == 0x01:  # payload format indicator
            value, i = data[i], i + 1
        elif ident == 0x02:  # message expiry interval
            value, i = data[i:i + 4], i + 4
        elif ident == 0x23:  # topic alias
            value, i = struct.unpack_from(">H", data, i)[0], i + 2
        elif ident == 0x0B:  # subscription identifier
            value, i = varint(data, i)
        elif ident in (0x03, 0x08, 0x09):  # content type, response topic, correlation data
            value, i = string(data, i)
        elif ident == 0x26:  # user property: a name and a value
            name, i = string(data, i)
            value, i = string(data, i)
            value = (name, value)
        else:
            raise ValueError(f"property {ident:#x} in a PUBLISH")
        out.append((ident, value))
    return out


def packets(data):
    """(type, flags, body) of every whole MQTT packet of one direction of one connection, in order."""
    i = 0
    while i < len(data):
        try:
            length, start = varint(data, i + 1)
        except IndexError:
            return  # cut short when the connection ended
        if start + length > len(data):
            return
        yield data[i] >> 4, data[i] & 0x0F, data[start:start + length]
        i = start + length


def publication(flags, body, aliases):
    """A PUBLISH as a dict: topic, props, payload and packet (all after the fixed header); aliases maps topic
    aliases to topics."""
    topic, i = string(body, 0)
    if flags >> 1 & 3:
        i += 2  # packet identifier
    n, i = varint(body, i)
    props = properties(body[i:i + n])
    alias = dict(props).get(0x23)
    if alias is not None and topic:
        aliases[alias] = topic
    elif alias is not None:
        topic = aliases.get(alias, b"")
    return {"topic": topic.decode(), "props": props, "payload": body[i + n:], "packet": body}


def fields(message):
    """A protobuf message's fields, {number: [values]}: varints as ints, the rest as bytes."""
    out, i = {}, 0
    while i < len(message):
        key, i = varint(message, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, i = varint(message, i)
        elif kind in (1, 5):
            size = 8 if kind == 1 else 4
            value, i = message[i:i + size], i + size
        elif kind == 2:
            n, i = varint(message, i)
            value, i = message[i:i + n], i + n
        else:
            raise ValueError(f"wire type {kind}")
        if i > len(message):
            raise ValueError("truncated")
        out.setdefault(number, []).append(value)
    return out


def capture(work):
    """Every byte the relay carried, every PUBLISH in it, and the protocol level of each CONNECT."""
    everything, pubs, levels = [], [], []
    for path in sorted(glob.glob(f"{work}/streams/*.up") + glob.glob(f"{work}/streams/*.down")):
        aliases = {}
        everything.append(open(path, "rb").read())
        for kind, flags, body in packets(everything[-1]):
            if kind == CONNECT:
                levels.append(body[string(body, 0)[1]])
            elif kind == PUBLISH:
                pubs.append(publication(flags, body, aliases))
    return b"".join(everything), pubs, levels


def class_of(ct_len):
    """The plaintext size class of section 4.1 (pow2) a ciphertext length is, or None."""
    plain = ct_len - 16
    return plain if plain >= 5 and padded_length(plain, "pow2") == plain else None


def counted(values):
    return ", ".join(f"{v} x {sum(1 for w in values if w == v)}" for v in sorted(set(values)))


PARTITION = b"idevs-partition"  # docs/PROTOCOL.md 8.5: an input's partition, in the clear by design


def partition_of(e):
    """The idevs-partition user property's value of a publication, or None."""
    return next((v[1] for k, v in e["props"] if k == 0x26 and v[0] == PARTITION), None)


def same_within_shape(tap, what, envelopes):
    """One envelope length and one PUBLISH length per size class and header shape (which fields, of which sizes:
    a certificate chain or a digest). The PUBLISH length is counted without the partition's digits, which show
    no more than the partition itself does."""
    shapes = {}
    for e in envelopes:
        shape = tuple(sorted((n, len(v[0]) if isinstance(v[0], bytes) else v[0])
                             for n, v in e["fields"].items()))
        digits = len(partition_of(e) or b"")
        shapes.setdefault(shape, set()).add(("chain" if 10 in e["fields"] else "digest", len(e["payload"]),
                                             len(e["packet"]) - digits))
    tap.report(all(len(v) == 1 for v in shapes.values()),
               f"{what}: one envelope length and one PUBLISH length per size class and header shape (" +
               "; ".join(f"with the sender's {k}: {a} and {b} bytes" for v in shapes.values() for k, a, b in sorted(v))
               + ")", [str(shapes)])


def main(work):
    tap = Tap()
    process = uuid.UUID(json.load(open(f"{work}/rewards.json"))["process"]["uuid"]).bytes
    db = {name: sqlite3.connect(f"file:{work}/{name}.sqlite?mode=ro", uri=True)
          for name in ("store", "taxi", "messaging")}

    everything, pubs, levels = capture(work)
    tap.report(levels and all(v == 5 for v in levels),
               f"each of the {len(levels)} connections through the relay speaks MQTT 5", [levels])
    public = [p for p in pubs if p["topic"].rsplit("/", 1)[-1] in ("certificate", "descriptor")]
    envelopes = [p for p in pubs if p not in public]
    bad = []
    for e in envelopes:
        try:
            e["fields"] = fields(e["payload"])
        except (ValueError, IndexError) as err:
            bad.append((e["topic"], str(err)))
    tap.report(envelopes and not bad,
               f"the other {len(envelopes)} publications (of {len(pubs)}) each decode as a protobuf message",
               bad[:5])
    envelopes = [e for e in envelopes if "fields" in e]
    for e in envelopes:
        e["id"] = e["fields"].get(5, [b""])[0]
        e["ct"] = len(e["fields"].get(CIPHERTEXT, [b""])[0])
    tap.report(all(e["fields"].get(1) == [2] and set(e["fields"]) <= CLEAR_FIELDS | {CIPHERTEXT}
                   for e in envelopes),
               "every one is a version 2 envelope with only the fields of section 4, the clear provenance "
               "(field 12) in none",
               sorted({(e["topic"], tuple(sorted(e["fields"]))) for e in envelopes if PROVENANCE in e["fields"]}))

    by_topic = {}
    for e in envelopes:
        by_topic.setdefault(e["topic"], []).append(e)
    for topic, es in sorted(by_topic.items()):
        tap.report(all(class_of(e["ct"]) for e in es),
                   f"{topic}: every ciphertext is a pow2 size class's length ({counted([e['ct'] for e in es])})",
                   sorted({e["ct"] for e in es if not class_of(e["ct"])}))

    # Ride requests and confirmations: one length each, though the plaintexts that made them are not; sales: one
    # per size class (those of this run all fall in one, but that is the data's doing).
    sales = unique(by_topic.get("idevs/rewards/in/sales", []))
    requests = unique(by_topic.get("idevs/rewards/req/ride", []))
    confirmations = unique(by_topic.get("idevs/rewards/out/confirmation", []))
    made, qualifying = db["store"].execute(
        "SELECT count(*), sum(CAST(replace(total, '.', '') AS INTEGER) >= 15000) FROM sales").fetchone()
    tap.report(len(sales) == made and len(requests) == len(confirmations) == qualifying > 1,
               f"the onlooker saw {len(sales)} sales, {len(requests)} ride requests and {len(confirmations)} "
               f"confirmations for the store's {made} sales, {qualifying} of them qualifying")
    for what, es, payloads, ids in (("sales", sales, sale_payloads(db["store"]), 0),
                                    ("ride requests", requests, ride_payloads(db["taxi"]), 1),
                                    ("confirmations", confirmations, confirmation_payloads(db["messaging"]), 2)):
        if what != "sales":
            tap.report(len({e["ct"] for e in es}) == 1,
                       f"the {what}' ciphertexts are all one length ({counted([e['ct'] for e in es])})")
        same_within_shape(tap, what, es)
        framed = [5 + 16 * ids + len(payloads[e["id"]]) for e in es if e["id"] in payloads]
        tap.report(len(framed) == len(es) and len(set(framed)) > 1
                   and all(padded_length(f, "pow2") + 16 == e["ct"] for f, e in zip(framed, es)),
                   f"unpadded, the {what} would have shown {len(set(framed))} lengths "
                   f"({min(framed, default=0)} to {max(framed, default=0)} bytes framed, section 4 step 4, from "
                   "what the databases hold), each padded to the length seen",
                   [f"{len(framed)} of {len(es)} found in the databases"])

    # The partition (section 8.5): each sale carries its customer's, so one customer's sales are linkable by it,
    # and one of process.partitions buckets is all it shows; nothing the process or the other services send has one.
    partitions = json.load(open(f"{work}/rewards.json"))["process"].get("partitions", 64)
    customer = {uuid.UUID(m).bytes: c for m, c in db["store"].execute("SELECT message_id, customer_id FROM sales")}
    wrong = [(e["id"].hex(), partition_of(e)) for e in sales
             if partition_of(e) != str(customer_partition(process, customer.get(e["id"], ""), partitions)).encode()]
    buckets = {partition_of(e) for e in sales}
    tap.report(not wrong and len(customer) == len(sales),
               f"every sale carries idevs-partition, its customer's partition: {len(buckets)} of {partitions} buckets "
               f"for {len(set(customer.values()))} customers", wrong[:5])
    others = sorted({e["topic"] for e in envelopes if e not in by_topic.get("idevs/rewards/in/sales", [])
                     and partition_of(e) is not None})
    tap.report(not others, "no other publication carries a partition", others)

    lengths = [len(dict(e["props"]).get(0x09, b"")) for e in requests]
    tap.report(len(set(lengths)) == 1 and lengths[0] > 16,
               f"the ride requests' correlation data are all one length ({counted(lengths)} bytes)")

    # No clear field, nor any MQTT property, of what the process sent names what it was sent.
    inputs = {e["id"] for e in envelopes if e["fields"].get(4) == [process]}
    outputs = [e for e in envelopes if e["fields"].get(3) == [process]]
    sale_ids = {e["id"] for e in sales}
    tap.report(sale_ids and sale_ids <= inputs,
               f"the {len(sale_ids)} sales' envelopes are among the {len(inputs)} envelopes sent to the process")
    linked = [(e["topic"], e["id"].hex()) for e in outputs if any(i in e["packet"] for i in inputs)]
    tap.report(outputs and not linked,
               f"none of the {len(outputs)} envelopes the process sent (requests, confirmations, receipts) holds "
               "an input's message id in its clear fields or MQTT properties", linked[:5])

    # Nothing of the customers', sales' or rides' data in clear, in any byte but the public certificates and
    # descriptor (which hold the configured threshold, 150.00).
    secrets = set()
    for query in ("SELECT name, phone, address, id FROM customers", "SELECT sale_id, total, customer_id FROM sales",
                  "SELECT price, sku, sale_id FROM sale_items", "SELECT name, sku, price FROM items"):
        secrets.update(v for row in db["store"].execute(query) for v in row)
    secrets.update(v for row in db["taxi"].execute("SELECT driver, vehicle FROM bookings") for v in row)
    seen = everything
    for p in public:
        seen = seen.replace(p["payload"], b"")
    found = sorted(s for s in secrets if s.encode() in seen)
    tap.report(len(secrets) > 100 and not found,
               f"none of {len(secrets)} names, phone numbers, addresses, ids, amounts, items, drivers and vehicles "
               f"in the {len(seen)} bytes captured (of {len(everything)})", found[:10])
    return tap.finish()


def customer_partition(program, key, partitions):
    """docs/PROTOCOL.md 8.5, written from the document."""
    h = hashlib.sha256(b"idevs partition v1" + program + key.encode()).digest()
    return int.from_bytes(h[:4], "big") % partitions


def compact(value):
    """JSON as the services write it (cJSON_PrintUnformatted, json_out.c), as bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sale_payloads(store):
    """{message id: payload} of the store's sales (services/store/store_db.c builds them so)."""
    out = {}
    for m, sale_id, t, total, cid, name, phone, address in store.execute(
            "SELECT s.message_id, s.sale_id, s.time, s.total, c.id, c.name, c.phone, c.address FROM sales s "
            "JOIN customers c ON c.id = s.customer_id"):
        items = [{"sku": sku, "name": item, "qty": qty, "price": price} for sku, item, qty, price in store.execute(
            "SELECT l.sku, i.name, l.qty, l.price FROM sale_items l JOIN items i ON i.sku = l.sku WHERE sale_id = ?",
            (sale_id,))]
        out[uuid.UUID(m).bytes] = compact({"sale_id": sale_id, "time": t, "customer": {
            "id": cid, "name": name, "phone": phone, "address": address}, "items": items, "total": total})
    return out


def ride_payloads(taxi):
    """{message id: payload} of the ride requests taxi booked (services/rewards/payloads.c writes them so)."""
    return {uuid.UUID(m).bytes: compact({"booking_ref": ref, "name": name, "pickup": pickup, "time": t})
            for m, ref, name, pickup, t in taxi.execute(
                "SELECT request_message_id, booking_ref, name, pickup, time FROM bookings")}


def confirmation_payloads(messaging):
    """{message id: payload} of the confirmations messaging queued (payloads.c)."""
    return {uuid.UUID(m).bytes: compact({"phone": phone, "text": text})
            for m, phone, text in messaging.execute("SELECT message_id, phone, text FROM outbox")}


def unique(envelopes):
    """One envelope per message id (a QoS 1 copy, or one published again, is the same message)."""
    return list({e["id"]: e for e in envelopes}.values())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))

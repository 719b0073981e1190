"""Checks a case-study run of rewards as a pool of two instances, one of them killed (test_pool.sh).

    check_pool.py WORK_DIR

Reads WORK/counters.txt (the plugin's $SYS counters, "name value" lines), the recording relay's streams
(WORK/streams/, parsed by check_onlooker.py's functions) and the store's database. Prints "ok - ..." /
"not ok - ..." and the last line "N passed, M failed".
"""
import json
import sqlite3
import sys
import uuid

from check_onlooker import Tap, capture, fields, partition_of, unique

INSTANCE = 14  # the envelope's clear instance field (docs/PROTOCOL.md section 4); absent for instance 0


def main(work):
    tap = Tap()
    instances = json.load(open(f"{work}/rewards.json"))["process"].get("instances", 1)
    tap.report(instances == 2, f"the descriptor says process.instances {instances}")

    counters = dict(line.split() for line in open(f"{work}/counters.txt") if len(line.split()) == 2)
    want = {"instances": "2", "instances_ready": "2", "partition_ignored": "0"}
    tap.report(all(counters.get(k) == v for k, v in want.items()) and int(counters.get("restarts", 0)) >= 1,
               f"$SYS: instances {counters.get('instances')}, instances_ready {counters.get('instances_ready')} at "
               f"the end, restarts {counters.get('restarts')} (at least 1), partition_ignored "
               f"{counters.get('partition_ignored')}", [str(counters)])

    _, pubs, _ = capture(work)
    process = uuid.UUID(json.load(open(f"{work}/rewards.json"))["process"]["uuid"]).bytes
    for topic in ("idevs/rewards/req/ride", "idevs/rewards/out/confirmation"):
        sent = [e for e in pubs if e["topic"] == topic]
        for e in sent:
            e["fields"] = fields(e["payload"])
            e["id"] = e["fields"][5][0]
        seen = sorted({e["fields"].get(INSTANCE, [0])[0] for e in sent if e["fields"][3] == [process]})
        per = {n: sum(1 for e in unique(sent) if e["fields"].get(INSTANCE, [0])[0] == n) for n in seen}
        tap.report(seen == [0, 1], f"{topic}: the process sent them from instances {seen} (both at work: "
                   + ", ".join(f"{per[n]} from instance {n}" for n in seen) + ")")

    sales = [e for e in pubs if e["topic"] == "idevs/rewards/in/sales"]
    store = sqlite3.connect(f"file:{work}/store.sqlite?mode=ro", uri=True)
    customer = {uuid.UUID(m).bytes: c for m, c in store.execute("SELECT message_id, customer_id FROM sales")}
    of_customer = {}
    for e in sales:
        e["id"] = fields(e["payload"])[5][0]
        of_customer.setdefault(customer.get(e["id"]), set()).add(partition_of(e))
    missing = [e["id"].hex() for e in sales if partition_of(e) is None]
    tap.report(sales and not missing, f"every one of the {len(sales)} sales published (copies included) carries "
               "idevs-partition", missing[:5])
    split = {c: sorted(v) for c, v in of_customer.items() if len(v) != 1}
    tap.report(of_customer and not split and None not in of_customer,
               f"every sale of one customer carries the same partition ({len(of_customer)} customers, "
               f"{len({p for v in of_customer.values() for p in v})} partitions)", [str(split)[:500]])
    return tap.finish()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))

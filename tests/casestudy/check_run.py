"""Checks one run of the case study from what the programs stored and what the broker handled.

    check_run.py WORK_DIR SALES [--killed]

Reads WORK/store.sqlite, taxi.sqlite and messaging.sqlite, the captured traffic (WORK/traffic.bin), the
broker's log and persistence file, and WORK/counters.txt ("name value" lines). Prints "ok - ..." or
"not ok - ..." per check; exits 1 when one failed. --killed: a compartment was killed during the run, so the
counters show a restart, and what it had handled but not yet receipted came again as copies (WORK/store.log's and
taxi.log's "copies:" lines), refused as handled before and receipted; and what it was running may have run again.
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
import leak_search  # noqa: E402  (the same search scripts/demo prints)
from run_checks import Checks, cents, service_counts  # noqa: E402

work, sales, killed = sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["--killed"]
checks = Checks(work)
check, db = checks.check, checks.db

store = db("store")
sale_rows = store.execute(
    "SELECT s.sale_id, s.total, s.published_at, c.name, c.phone, c.address FROM sales s "
    "JOIN customers c ON c.id = s.customer_id").fetchall()
check(f"the store made and published {sales} sales",
      len(sale_rows) == sales and all(r[2] for r in sale_rows), f"{len(sale_rows)} rows")
by_id = {r[0]: r for r in sale_rows}
qualifying = {r[0] for r in sale_rows if cents(r[1]) >= 15000}
totals = {r[1] for r in sale_rows}
check("the sales include totals of 149.99, 150.00 and 150.01", {"149.99", "150.00", "150.01"} <= totals,
      sorted(totals))

bookings = db("taxi").execute("SELECT booking_ref, name, pickup FROM bookings").fetchall()
refs = [b[0] for b in bookings]
check("every qualifying sale has exactly one booking, no other sale has one",
      sorted(refs) == sorted(qualifying),
      f"missing {sorted(qualifying - set(refs))}, extra {sorted(set(refs) - qualifying)}")
for total in ("149.99", "150.00", "150.01"):
    ids = [r[0] for r in sale_rows if r[1] == total]
    want = cents(total) >= 15000
    check(f"a {total} sale is {'booked' if want else 'not booked'}",
          all((i in refs) == want for i in ids) and ids, ids)
check("bookings carry the customer's name and the pickup address of their sale",
      all(by_id[b[0]][3] == b[1] and by_id[b[0]][5] == b[2] for b in bookings if b[0] in by_id))

outbox = db("messaging").execute("SELECT phone, text FROM outbox").fetchall()
per_ref = {}
for phone, text in outbox:
    for ref in re.findall(r"S-\d+", text):
        per_ref.setdefault(ref, []).append(phone)
check("every qualifying sale has exactly one message, no other sale has one",
      len(outbox) == len(qualifying) and sorted(per_ref) == sorted(qualifying)
      and all(len(v) == 1 for v in per_ref.values()),
      f"{len(outbox)} messages for {len(qualifying)} qualifying sales")
check("each message goes to the phone number of its sale's customer",
      all(by_id[ref][4] == phones[0] for ref, phones in per_ref.items() if ref in by_id))
check("no message text reveals an address",
      not any(by_id[r][5] in t for _, t in outbox for r in qualifying))

secrets = leak_search.customer_secrets(work)
check("the store's customers give names, phone numbers and addresses to search for", len(secrets) >= 30,
      len(secrets))
for label, size, found in leak_search.search(work, secrets):
    if size is None:
        check(f"{label} exists", False)
        continue
    check(f"no customer name, phone number or address in {label} ({size} bytes)", size > 0 and not found,
          found[:5])

counters = {}
for line in open(f"{work}/counters.txt"):
    parts = line.split()
    if len(parts) == 2:
        counters[parts[0]] = int(parts[1])
expect = {"received": sales + len(qualifying), "routed": sales + len(qualifying),
          "emitted": 2 * len(qualifying), "done/ok": sales + len(qualifying), "restarts": 0}
rejected = {k: v for k, v in counters.items() if k.startswith("rejected")}
if not killed:
    check("the broker's counters add up (sales and responses in, requests and confirmations out)",
          all(counters.get(k) == v for k, v in expect.items()),
          {k: (counters.get(k), v) for k, v in expect.items()})
    check("nothing was rejected", not any(rejected.values()), rejected)
else:
    copies = sum(service_counts(work, n).get("sent again", 0) for n in ("store", "taxi"))
    got = {k: counters.get(k, 0) for k in expect}
    check(f"the broker's counters add up with the kill: restarts {got['restarts']}, received and routed "
          f"{got['received']} (the {expect['received']} sales and responses, and at most the {copies} copies the "
          f"services sent again), done/ok {got['done/ok']} and emitted {got['emitted']} at least "
          f"{expect['done/ok']} and {expect['emitted']}",
          got["restarts"] >= 1 and got["received"] == got["routed"]
          and expect["received"] <= got["received"] <= expect["received"] + copies
          and got["done/ok"] >= expect["done/ok"] and got["emitted"] >= expect["emitted"], got)
    check(f"nothing was rejected but copies handled before (already_done): {sum(rejected.values())} of the "
          f"{copies} copies", set(rejected) <= {"rejected/already_done"} and sum(rejected.values()) <= copies,
          rejected)

sys.exit(checks.status())

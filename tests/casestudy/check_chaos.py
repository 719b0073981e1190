"""Checks one run of test_chaos.sh from what the programs stored and counted, and prints its table.

    check_chaos.py WORK_DIR SALES

Reads WORK/store.sqlite, taxi.sqlite, messaging.sqlite; WORK/sys.N.txt, the live publications of the plugin's
counters ("RETAIN TOPIC VALUE") recorded while the N-th broker ran; WORK/{store,taxi,messaging}.log, with the
services' "copies:" lines (services/common/app.c, app_report_copies); WORK/chaos.txt, the kills. Prints
"ok - ..." / "not ok - ..." per check and the table as "# " lines; exits 1 when a check failed.

The effects, exactly:
  - every sale is marked published (the store's receipt for it came);
  - every sale of 150.00 or more has exactly one booking in taxi's database and exactly one confirmation in
    messaging's outbox (by the booking reference its text names), and no other sale has either;
  - no answer is refused as unknown_ride, whatever restarted: a ride request carries its state across compartment
    restarts (docs/CASESTUDY.md, "The logic's state"), and taxi answers each request once.

The copies, as far as the counters can tell (each side's counts are taken across every broker and every service
that ran; a killed program's last counts are those it published or printed last, within a fraction of a second
of the kill, so each sum is a lower bound of what happened, close to it):
  - towards the services: what taxi and messaging dropped as duplicates (an envelope they had handled before,
    by its replay window or by the ids they keep) is at most what the plugin published again from its outbox
    (outbox_resent + outbox_resealed): with clean sessions nothing else delivers a service a copy;
  - towards the compartment: what it refused as handled before (rejected/already_done: a copy sealed anew by a
    service's outbox) plus what the plugin refused as the same bytes again (rejected/replay: libmosquitto
    repeats a QoS 1 publication not acknowledged when its connection broke) is at most what the services sent
    again (their retransmitted copies, plus the unreceipted messages a restarted service found in its outbox
    and sent again) plus, for the repeats, the publications in flight at each reconnection (at most the
    broker's receive maximum, 20, per reconnection of a service).
"""
import glob
import re
import sys

from run_checks import Checks, cents, service_counts

work, sales = sys.argv[1], int(sys.argv[2])
checks = Checks(work)
check, db = checks.check, checks.db
GAUGES = {"outbox", "queue_depth", "in_flight"}  # the last broker's value, not a sum

# ---- the effects ----
rows = db("store").execute("SELECT sale_id, total, published_at FROM sales").fetchall()
qualifying = {r[0] for r in rows if cents(r[1]) >= 15000}
unmarked = [r[0] for r in rows if not r[2]]
check(f"the store marked all {sales} sales (each receipted by the process)",
      len(rows) == sales and not unmarked, f"{len(unmarked)} not marked: {unmarked[:20]}")

refs = [r[0] for r in db("taxi").execute("SELECT booking_ref FROM bookings")]
missing_b = sorted(qualifying - set(refs))
extra_b = sorted(set(refs) - qualifying)
check(f"every one of the {len(qualifying)} qualifying sales has exactly one booking, no other sale has one",
      not missing_b and not extra_b and len(refs) == len(set(refs)),
      f"missing {len(missing_b)}: {missing_b[:20]}; not qualifying {len(extra_b)}: {extra_b[:20]}")

per_ref = {}
for (text,) in db("messaging").execute("SELECT text FROM outbox"):
    m = re.search(r"\(ref (S-\d+)\)", text)
    per_ref.setdefault(m.group(1) if m else "-", []).append(text)
missing_c = sorted(qualifying - set(per_ref))
twice = sorted(r for r, v in per_ref.items() if len(v) > 1)
extra_c = sorted(set(per_ref) - qualifying)

# ---- the plugin's counters, per broker generation ----
gens = []
for path in sorted(glob.glob(f"{work}/sys.*.txt"), key=lambda p: int(p.split(".")[-2])):
    last = {}
    for line in open(path, errors="replace"):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "0":
            last[parts[1].split("/idevs/", 1)[1].split("/", 1)[1]] = int(parts[2])
    gens.append(last)
plugin = {}
for g in gens:
    for k, v in g.items():
        if k not in GAUGES:
            plugin[k] = plugin.get(k, 0) + v
for k in GAUGES:
    plugin[k] = gens[-1].get(k, 0) if gens else 0

unknown_ride = plugin.get("refused/unknown_ride", 0)
check(f"every one of the {len(qualifying)} qualifying sales has exactly one confirmation, no other sale has one",
      not missing_c and not twice and not extra_c,
      f"missing {len(missing_c)}: {missing_c[:20]}; twice {len(twice)}: {twice[:20]}; not qualifying "
      f"{len(extra_c)}: {extra_c[:20]}; the logic refused {unknown_ride} answers as unknown_ride")
if missing_c:
    booked = [r for r in missing_c if r in set(refs)]
    print(f"# {len(missing_c)} confirmation(s) missing, {len(booked)} of them booked by taxi")

# A ride request's state comes back with its answer, across restarts of the compartment and the broker: an answer
# refused as unknown_ride is a request whose state was lost, or a second answer to one request (taxi never sends
# one).
check("no answer is refused as unknown_ride: every answer found its request, whatever restarted",
      unknown_ride == 0, unknown_ride)

services = {n: service_counts(work, n) for n in ("store", "taxi", "messaging")}
chaos = {}
for line in open(f"{work}/chaos.txt"):
    parts = line.split()
    chaos[tuple(parts[:-1])] = parts[-1]

# ---- the table ----
print(f"# seed {chaos.get(('seed',), '?')}")
print("# target        kills  ended by itself (then started again)")
for t in ("broker", "compartment", "taxi", "messaging", "store"):
    print(f"# {t:12} {chaos.get(('kills', t), '0'):>6} {chaos.get(('self_exits', t), '0'):>16}")
print(f"# the plugin's counters, summed over its {len(gens)} broker(s) (outbox, queue_depth: the last broker's):")
for k in sorted(plugin):
    if k.startswith(("rejected/", "refused/")) or k in (
            "received", "done/ok", "done/failed", "emitted", "receipts", "receipts_in", "outbox", "outbox_resent",
            "outbox_resealed", "outbox_expired", "restarts", "queue_depth"):
        print(f"#   {k:28} {plugin[k]:>8}")
print("# the services' counts, summed over their runs (the last 'copies:' line of each run):")
print(f"#   {'':10} {'runs':>5} {'sent again':>11} {'unreceipted at start':>21} {'duplicates':>11} {'reconnects':>11}")
for n, c in services.items():
    print(f"#   {n:10} {c.get('runs', 0):>5} {c.get('sent again', 0):>11} {c.get('unreceipted at start', 0):>21} "
          f"{c.get('duplicates', 0):>11} {c.get('reconnects', 0):>11}")

# ---- the copies ----
to_services = services["taxi"].get("duplicates", 0) + services["messaging"].get("duplicates", 0)
resent = plugin.get("outbox_resent", 0) + plugin.get("outbox_resealed", 0)
check(f"copies to the services: the {to_services} duplicates taxi and messaging dropped are at most the "
      f"{resent} copies the plugin sent again", to_services <= resent)
to_process = plugin.get("rejected/already_done", 0) + plugin.get("rejected/replay", 0)
sent_again = sum(services[n].get("sent again", 0) + services[n].get("unreceipted at start", 0)
                 for n in ("store", "taxi"))
reconnects = sum(services[n].get("reconnects", 0) + services[n].get("runs", 0) for n in services)
check(f"copies to the compartment: the {to_process} it refused as handled before or as the same bytes again are "
      f"at most the {sent_again} the services sent again plus 20 per connection of a service ({reconnects})",
      to_process <= sent_again + 20 * reconnects)
sys.exit(checks.status())

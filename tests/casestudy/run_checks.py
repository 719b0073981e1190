"""What check_run.py and check_chaos.py share: "ok - ..." / "not ok - ..." lines counted, the run's SQLite
databases opened read-only, amounts read as integer cents, and the services' counts of copies."""
import re
import sqlite3


class Checks:
    def __init__(self, work):
        self.work = work
        self.failed = 0

    def check(self, what, cond, detail=""):
        """Prints "ok - WHAT" or "not ok - WHAT" and, for a failure, the detail indented (cut at 3000 bytes)."""
        print(("ok - " if cond else "not ok - ") + what)
        if not cond:
            self.failed += 1
            if detail:
                print("    " + str(detail)[:3000])

    def db(self, name):
        """WORK/NAME.sqlite, read-only."""
        return sqlite3.connect(f"file:{self.work}/{name}.sqlite?mode=ro", uri=True)

    def status(self):
        return 1 if self.failed else 0


def cents(text):
    """A decimal amount with two decimals ("150.00") as integer cents."""
    whole, frac = text.split(".")
    assert len(frac) == 2
    return int(whole) * 100 + int(frac)


COPIES = re.compile(r"^(\w+)(?: to '\w+')?: copies: (.*)$")


def service_counts(work, name):
    """The last "copies:" line of each run of a service (WORK/NAME.log, runs begun by "=== started" lines),
    summed, and the number of runs."""
    total, last, runs = {}, None, 0
    for line in open(f"{work}/{name}.log", errors="replace"):
        if line.startswith("=== started"):
            runs += 1
            if last:
                for k, v in last.items():
                    total[k] = total.get(k, 0) + v
            last = None
            continue
        m = COPIES.match(line)
        if m:
            last = {k: int(v) for v, k in re.findall(r"(\d+) ([a-z_ ]+?)(?:,|$)", m.group(2))}
    if last:
        for k, v in last.items():
            total[k] = total.get(k, 0) + v
    total["runs"] = runs
    return total

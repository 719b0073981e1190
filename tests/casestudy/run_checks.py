"""What check_run.py and check_chaos.py share: "ok - ..." / "not ok - ..." lines counted, the run's SQLite
databases opened read-only, and amounts read as integer cents."""
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

"""The checks' printer, shared by the project's Python checks: "ok - ..." / "not ok - ..." (with the details
indented below) and the last line "N passed, M failed" that scripts/lib/summarize.py adds up."""


class Tap:
    def __init__(self):
        self.passed = self.failed = 0

    def report(self, ok, what, detail=()):
        if ok:
            self.passed += 1
            print(f"ok - {what}")
        else:
            self.failed += 1
            print(f"not ok - {what}")
            for line in detail:
                print(f"    {line}")

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1

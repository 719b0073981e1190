"""Adds up the results of every test program in the given meson build directories.

A CUnit program reports a "tests" row in its run summary; a script or C program against a real broker prints
a last line "N passed, M failed". A test that failed without such a line counts as one failure. Prints one
line per test and build, then the total as "N passed, M failed".
"""
import json
import re
import sys

CUNIT_ROW = re.compile(r"^\s*tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", re.M)
PLAIN = re.compile(r"^(?:\w+:\s*)?(\d+) passed, (\d+) failed(?:, \d+ skipped)?\s*$", re.M)


def main(build_dirs):
    passed = failed = 0
    for build in build_dirs:
        with open(f"{build}/meson-logs/testlog.json") as log:
            for line in log:
                t = json.loads(line)
                out = t.get("stdout", "") or ""
                ok = t["result"] == "OK"
                rows = CUNIT_ROW.findall(out)
                plain = PLAIN.findall(out)
                if rows:
                    p = sum(int(r[2]) for r in rows)
                    f = sum(int(r[3]) for r in rows)
                elif plain:
                    p, f = int(plain[-1][0]), int(plain[-1][1])
                else:
                    p, f = (1, 0) if ok else (0, 1)
                if not ok and f == 0:
                    f = 1  # crashed, leaked or timed out after its checks passed
                passed += p
                failed += f
                mark = "ok" if ok else "FAILED"
                print(f"  {build:12} {t['name']:28} {p:5} passed {f:4} failed  {mark}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

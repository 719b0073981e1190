"""The layering check: reads every #include "..." of the project's own C code and fails on one that runs from a
lower floor to a higher one, or sideways between the top floor's folders.

Floors, from the bottom (docs/ARCHITECTURE.md):
  0 base/            errors, UUIDs, hex, EVP wrappers, the replay window
  1 certs/           identities, certificates, evidence
  2 proto/           the envelope
  3 enclave-bridge/  the compartment, the launcher, the logic API, the descriptor
  4 plugin/, services/   (neither includes the other)
A header is found by its name, as the compiler finds it on the include path: first beside the including file,
then anywhere in the project (a generated X.pb-c.h belongs to the folder of X.proto). A name found in two
folders is itself a fault: the include path would pick one silently. tests/ and scripts/ may include anything.

Also: enclave-bridge/idevs_logic.h includes nothing of the project but the base floor, and a logic compiles
with one include directory that holds idevs_logic.h and the base headers (as `meson install` lays them out in
include/idevs/).

  check_layering.py SOURCE_ROOT [CC]
Prints "ok - ..." / "not ok - ..." and ends with "N passed, M failed".
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from tap import Tap

FLOORS = {"base": 0, "certs": 1, "proto": 2, "enclave-bridge": 3, "plugin": 4, "services": 4}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def top(path):
    return path.split("/", 1)[0]


def project_files(root):
    files = []
    for folder in FLOORS:
        for dirpath, _, names in os.walk(os.path.join(root, folder)):
            for name in names:
                if name.endswith((".c", ".h", ".proto")):
                    files.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(files)


def header_index(files):
    """name -> the project files that provide it (a .proto provides its generated .pb-c.h)."""
    index = {}
    for f in files:
        name = os.path.basename(f)
        if name.endswith(".proto"):
            name = name[: -len(".proto")] + ".pb-c.h"
        elif not name.endswith(".h"):
            continue
        index.setdefault(name, []).append(f)
    return index


def resolve(including, name, index):
    beside = os.path.normpath(os.path.join(os.path.dirname(including), name))
    candidates = index.get(os.path.basename(name), [])
    for c in candidates:
        if c == beside or c == beside[: -len(".pb-c.h")] + ".proto":
            return [c]
    return candidates


def main(root, cc):
    tap = Tap()
    report = tap.report

    files = project_files(root)
    index = header_index(files)
    upward, sideways, ambiguous = [], [], []
    for f in files:
        if f.endswith(".proto"):
            continue
        with open(os.path.join(root, f), encoding="utf-8", errors="replace") as src:
            text = src.read()
        for name in INCLUDE.findall(text):
            found = resolve(f, name, index)
            if not found:
                continue  # a system header written with quotes, or a generated header of a tool
            if len({top(c) for c in found}) > 1:
                ambiguous.append(f"{f} includes \"{name}\": found in {', '.join(found)}")
                continue
            target = found[0]
            a, b = top(f), top(target)
            if FLOORS[b] > FLOORS[a]:
                upward.append(f"{f} (floor {FLOORS[a]}) includes {target} (floor {FLOORS[b]})")
            elif FLOORS[b] == FLOORS[a] and a != b:
                sideways.append(f"{f} includes {target}")
    report(not upward, "no include runs up a floor (base < certs < proto < enclave-bridge < plugin, services)",
           upward)
    report(not sideways, "plugin/ and services/ do not include each other", sideways)
    report(not ambiguous, "every header name is found in one folder only", ambiguous)

    logic_h = os.path.join(root, "enclave-bridge", "idevs_logic.h")
    with open(logic_h, encoding="utf-8") as src:
        logic_includes = INCLUDE.findall(src.read())
    outside = [n for n in logic_includes
               if any(top(c) != "base" for c in resolve("enclave-bridge/idevs_logic.h", n, index))]
    report(not outside, "enclave-bridge/idevs_logic.h includes nothing of the project but base/", outside)

    if cc is None:
        report(False, "a logic compiles with one include directory", ["no C compiler given"])
    else:
        with tempfile.TemporaryDirectory(prefix="idevs-logic-include.") as inc:
            shutil.copy(logic_h, inc)
            for name in os.listdir(os.path.join(root, "base")):
                if name.endswith(".h"):
                    shutil.copy(os.path.join(root, "base", name), inc)
            logic = os.path.join(root, "tests", "logic", "echo.c")
            run = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-nostdinc++",
                                  "-I", inc, logic], capture_output=True, text=True)
            report(run.returncode == 0,
                   "a logic (tests/logic/echo.c) compiles with one include directory: idevs_logic.h and base/'s "
                   "headers", (run.stderr or "").splitlines()[:10])
    return tap.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))

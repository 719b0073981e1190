"""Every unit's test is found from its file name: for a unit X.c (idevs_X.c in base/) it is tests/unit/test_X.c,
tests/broker/test_X.sh or tests/services/test_X.(c|sh); the units a folder-wide test covers are listed in
COVERED below, which CONTRIBUTING.md ("Where a unit's test is") repeats for people. A unit with neither, or a
listed test that does not exist, fails.

  check_test_names.py SOURCE_ROOT
Prints "ok - ..." / "not ok - ..." and ends with "N passed, M failed".
"""
import fnmatch
import os
import sys

from tap import Tap

UNIT_FOLDERS = ["base", "certs", "certs/tool", "proto", "proto/tool", "enclave-bridge", "enclave-bridge/launcher",
                "enclave-bridge/compartment", "plugin", "services/lib"]

# Units tested as a group, with the test that covers them (keep CONTRIBUTING.md in step).
COVERED = [
    ("base/idevs_error.c", "tests/unit/test_crypto.c"),
    ("base/idevs_hex.c", "tests/unit/test_crypto.c"),
    ("base/idevs_uuid.c", "tests/unit/test_crypto.c"),
    ("certs/tpm_ak.c", "tests/unit/test_tpm_quote.c"),
    ("certs/tpm_enroll.c", "tests/cli/test_tpm_enroll.sh"),
    ("certs/*.c", "tests/unit/test_certs.c"),
    ("certs/tool/idevs_ca.c", "tests/cli/test_idevs_ca.sh"),
    ("proto/envelope_*.c", "tests/unit/test_envelope.c"),
    ("proto/tool/idevs_envelope_tool.c", "tests/interop/test_interop.sh"),
    ("proto/tool/idevs_inspect.c", "tests/services/test_inspect.c"),
    ("enclave-bridge/compartment/*.c", "tests/unit/test_compartment.c"),
    ("enclave-bridge/launcher/*.c", "tests/unit/test_launcher.c"),
    ("enclave-bridge/launcher/gate.c", "tests/broker/test_rejections.sh"),
    ("enclave-bridge/launcher/tpm_*.c", "tests/unit/test_backend_tpm.c"),
    ("enclave-bridge/launcher/tpm_*.c", "tests/broker/test_tpm.sh"),
    ("plugin/acl_sources.c", "tests/broker/test_guard.sh"),
    ("plugin/config.c", "tests/broker/test_plugin.sh"),
    ("plugin/plugin.c", "tests/broker/test_plugin.sh"),
    ("plugin/processes.c", "tests/broker/test_processes.sh"),
    ("plugin/reload.c", "tests/broker/test_processes.sh"),
    ("plugin/metrics.c", "tests/broker/test_processes.sh"),
    ("services/lib/*.c", "tests/services/test_services.sh"),
]


def own_tests(root, unit):
    name = os.path.basename(unit)[:-2]
    if name.startswith("idevs_"):
        name = name[len("idevs_"):]
    candidates = [f"tests/unit/test_{name}.c", f"tests/broker/test_{name}.sh", f"tests/services/test_{name}.c",
                  f"tests/services/test_{name}.sh"]
    return [c for c in candidates if os.path.exists(os.path.join(root, c))]


def main(root):
    missing, dangling = [], []
    units = []
    for folder in UNIT_FOLDERS:
        path = os.path.join(root, folder)
        units += [f"{folder}/{n}" for n in sorted(os.listdir(path)) if n.endswith(".c")]
    for unit in units:
        if own_tests(root, unit):
            continue
        listed = [t for pattern, t in COVERED if fnmatch.fnmatch(unit, pattern)]
        if not listed:
            missing.append(unit)
    for pattern, test in COVERED:
        if not os.path.exists(os.path.join(root, test)):
            dangling.append(f"{pattern} -> {test}")
    tap = Tap()
    tap.report(not missing, f"each of the {len(units)} units has a test named after it, or is listed with the test "
               "that covers it", missing)
    tap.report(not dangling, "every listed test exists", dangling)
    return tap.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

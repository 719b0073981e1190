"""Searches what the broker handled in a case-study run for the store's customer data.

    python3 leak_search.py WORK_DIR

Every customer name, phone number and address in WORK/store.sqlite is looked for, byte for byte, in the
traffic recorded on the broker's port, the broker's log and its persistence file. Prints one line per place;
exits 1 when any is found. scripts/demo runs it; tests/casestudy/check_run.py imports it.
"""
import sqlite3
import sys

PLACES = (("the traffic on the broker's port", "traffic.bin"),
          ("the broker's log", "broker/mosquitto.log"),
          ("the broker's persistence file", "broker/mosquitto.db"))


def customer_secrets(work):
    db = sqlite3.connect(f"file:{work}/store.sqlite?mode=ro", uri=True)
    secrets = set()
    for name, phone, address in db.execute("SELECT name, phone, address FROM customers"):
        secrets.update([name, phone, address])
    return secrets


def search(work, secrets):
    """(label, bytes searched or None when the file is absent, sorted secrets found) for each place."""
    results = []
    for label, path in PLACES:
        try:
            data = open(f"{work}/{path}", "rb").read()
        except FileNotFoundError:
            results.append((label, None, []))
            continue
        results.append((label, len(data), sorted(s for s in secrets if s.encode() in data)))
    return results


def main(work):
    secrets = customer_secrets(work)
    leaks = 0
    for label, size, found in search(work, secrets):
        if size is None:
            print(f"{label}: (absent)")
            continue
        leaks += len(found)
        print(f"{label:34} {size:9} bytes searched for {len(secrets)} names, phones and addresses: "
              f"{'none found' if not found else 'FOUND ' + str(len(found))}")
    return 1 if leaks else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))

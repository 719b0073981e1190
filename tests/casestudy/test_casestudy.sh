#!/usr/bin/env bash
# The case study end to end, as scripts/demo runs it: a real mosquitto with mosquitto_idevs.so and the rewards
# compartment, the store, taxi and messaging services over a recording relay; then the databases, the
# traffic, the broker's log and persistence file, and its counters are checked (check_run.py).
#   test_casestudy.sh BUILD_DIR [SALES]
set -u
here=$(cd "$(dirname "$0")" && pwd)
IDEVS_ROOT=$(cd "$here/../.." && pwd)
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
source "$here/lib.sh"
build=$1 sales=${2:-60}
ct_begin casestudy

ct_casestudy "$build" "$sales"

python3 "$here/check_run.py" "$work" "$sales" >"$work/check.out" 2>&1
ct_count "$work/check.out"
ct_end

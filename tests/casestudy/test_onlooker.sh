#!/usr/bin/env bash
# An onlooker's view of the case study (issue 12, envelope v2): the run of test_casestudy.sh with 200 sales,
# every byte the services and the broker exchanged captured, then check_onlooker.py shows from the capture
# alone, with no key, that ride requests and confirmations are each one length though their plaintexts are not,
# that no clear field or MQTT property of what the process sent names an input, that no customer data travels
# in clear, and that each sale's partition (its customer's, docs/PROTOCOL.md 8.5) is all the store adds;
# check_run.py that the receivers still got one booking and one confirmation per qualifying
# sale.
# The capture is the recording relay's (scripts/lib/tap.py), each connection's two directions kept apart:
# every service reaches the broker through it (the compartment talks to the plugin over a socket pair, not the
# port), so it has every envelope on the port byte for byte, as tcpdump on lo would, with no capture tool (none is
# installed here) or privilege. A client subscribed to idevs/# would do too (the guard never refuses a
# subscription, docs/OPERATOR.md), but sees only the broker's copies, not the publishers' own packets.
#   test_onlooker.sh BUILD_DIR [SALES]
set -u
here=$(cd "$(dirname "$0")" && pwd)
IDEVS_ROOT=$(cd "$here/../.." && pwd)
source "$IDEVS_ROOT/scripts/lib/casestudy.sh"
source "$here/lib.sh"
build=$1 sales=${2:-200}
ct_begin onlooker

ct_casestudy "$build" "$sales" "$work/streams"

python3 "$here/check_run.py" "$work" "$sales" >"$work/check.out" 2>&1
ct_count "$work/check.out"
python3 "$here/check_onlooker.py" "$work" >"$work/onlooker.out" 2>&1
ct_count "$work/onlooker.out"
ct_end

#!/usr/bin/env bash
# Start to certified, backend process against backend tpm, in the same run (not a test): RUNS broker starts of
# the echo process with each backend, alternating, the tpm backend on a software TPM (swtpm, scripts/lib/swtpm.sh)
# enrolled first. Each start after the first restores its keys (the usual restart); the first makes fresh keys.
# Read from the launcher's log line "certified in X ms, ready in Y ms". Run:
#   meson test -C build --benchmark backend -v
#   bash tests/bench/bench_backend.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so \
#        BROKER_PEER IDEVS_TPM [RUNS]
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6 tpm_tool=$7 runs=${8:-10}
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../broker/lib.sh"
source "$here/../../scripts/lib/swtpm.sh"
source "$here/../../scripts/lib/tpm_enroll.sh"
need_tools swtpm swtpm_setup swtpm_localca
trap 'swtpm_stop_dir "$work/tpm"; cleanup' EXIT

mkdir -p "$work/tpm"
t0=$(date +%s%N)
swtpm_setup_dir "$work/tpm" >"$work/swtpm.err" 2>&1 || bail "swtpm_setup" "$work/swtpm.err"
t1=$(date +%s%N)
tcti=$(swtpm_start_dir "$work/tpm" 2>"$work/swtpm.err") || bail "swtpm starts" "$work/swtpm.err"
t2=$(date +%s%N)
tpm_enroll "$tcti" "$work/state" "$work/op" "$pki" "$work/tpm" "$ca_tool" as_broker_user "$work" "$tpm_tool" >"$work/enroll.err" 2>&1 ||
  bail "the host is enrolled" "$work/enroll.err"
t3=$(date +%s%N)
echo "# swtpm setup $(( (t1 - t0) / 1000000 )) ms, start $(( (t2 - t1) / 1000000 )) ms, enrollment $(( (t3 - t2) / 1000000 )) ms"
mkdir -m 700 "$work/state-process"

# one START: the certified and ready times of the launcher's log line, "fresh" or "restored"
one() { # BACKEND
  local conf=$work/$1.conf
  if [ "$1" = tpm ]; then
    write_conf "$conf" "$work/echo.json" "plugin_opt_backend tpm" "plugin_opt_tpm_tcti $tcti"
  else
    write_conf "$conf" "$work/echo.json" -state_dir "plugin_opt_state_dir $work/state-process"
  fi
  : >"$conf.log"
  own_work
  start_broker "$conf" || { not_ok "$1: the broker starts" "$conf.log"; return 1; }
  stop_broker
  sed -n 's/.*certified in \([0-9.]*\) ms, ready in \([0-9.]*\) ms.*\(fresh keys\|keys restored\).*/\1 \2 \3/p' \
    "$conf.log" | tail -n 1
}
for ((i = 0; i < runs; i++)); do
  for b in process tpm; do
    line=$(one "$b") || { echo "$line"; continue; }
    echo "$b $line" >>"$work/times"
  done
done
python3 - "$work/times" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) < 4:
        continue
    b, cert, ready, keys = parts[0], float(parts[1]), float(parts[2]), "fresh" if parts[3] == "fresh" else "restored"
    rows.setdefault((b, keys), []).append((cert, ready))
print(f"{'backend':8} {'keys':9} {'n':>3} {'certified p50':>14} {'min':>7} {'max':>7} {'ready p50':>10}")
for (b, keys), v in sorted(rows.items()):
    c = [x[0] for x in v]; r = [x[1] for x in v]
    print(f"{b:8} {keys:9} {len(v):3} {statistics.median(c):11.1f} ms {min(c):7.1f} {max(c):7.1f} {statistics.median(r):7.1f} ms")
PY
ok "start to certified measured ($runs starts a backend)"
finish

#!/usr/bin/env bash
# The guard (plugin/guard.c, plugin/acl_sources.c) with every ACL arrangement, two processes on one broker: idevs
# alone; an acl_file, with plugin_opt_acl_others left out, and one added by a reload; dynamic-security after and
# before idevs. In each: no client publication on a protected topic reaches a subscriber, no will on one is
# published (except where the log warns), ordinary topics are decided by the other source and never widened by
# idevs, and the guard's log lines are rate-limited. (The refusals at start: test_plugin.sh; the reading of the
# broker's configuration: tests/unit/test_acl_sources.c.)
#   test_guard.sh PLUGIN.so IDEVS_CA IDEVS_ENVELOPE IDEVS_COMPARTMENT ECHO_LOGIC.so BROKER_PEER
plugin=$1 ca_tool=$2 env_tool=$3 compartment=$4 echo_logic=$5 peer_exe=$6
source "$(dirname "$0")/lib.sh"
mkdir -p "$work/procs"
echo_descriptor "$work/procs/p01.json" p01
echo_descriptor "$work/procs/p02.json" p02

# ---- the guard with every ACL arrangement ----
# guard_holds ARRANGEMENT: no client publication on the protected topics of p01 and p02 reaches a subscriber.
guard_holds() {
  local n ok_all=1
  for n in p01 p02; do
    sub -t "idevs/$n/out/out" -t "idevs/$n/req/ask" -C 1 -W 3 >"$work/g.got" 2>/dev/null &
    local s=$!; sleep 0.3
    pub -q 1 -t "idevs/$n/out/out" -m "forged by $1" >/dev/null 2>&1
    pub -q 0 -t "idevs/$n/req/ask" -m "forged by $1" >/dev/null 2>&1
    wait $s
    [ -s "$work/g.got" ] && ok_all=0
  done
  [ $ok_all -eq 1 ]
}
will_refused() { # a client's will on a protected topic is not published when it drops
  sub -t idevs/p01/out/out -C 1 -W 3 >"$work/will.got" 2>/dev/null &
  local s=$!; sleep 0.3
  timeout 2 mosquitto_sub -p "$port" -t none/such --will-topic idevs/p01/out/out --will-payload "will" -W 1 \
    >/dev/null 2>&1 & local w=$!
  sleep 0.5; kill -9 $w 2>/dev/null; wait $s
  [ ! -s "$work/will.got" ]
}
ordinary_passes() { # topic: an ordinary publication reaches a subscriber
  sub -t "$1" -C 1 -W 3 >"$work/o.got" 2>/dev/null &
  local s=$!; sleep 0.3
  pub -q 1 -t "$1" -m plain >/dev/null 2>&1
  wait $s
  grep -qx plain "$work/o.got"
}
two=("$work/procs/p01.json" "$work/procs/p02.json")
arrangement() { # name conf-lines...: starts the broker with the two processes and the lines given
  local name=$1; shift
  write_conf "$work/acl-$name.conf" "" "plugin_opt_descriptor ${two[0]}" "plugin_opt_descriptor ${two[1]}" "$@"
  start_broker "$work/acl-$name.conf" || { not_ok "the broker starts ($name)" "$work/acl-$name.conf.log"; return 1; }
}
# idevs alone
if arrangement alone "plugin_opt_log_interval_s 1"; then
  check "idevs alone: no client write on any process's protected topics reaches a subscriber" guard_holds alone
  check "idevs alone: a will on a protected topic is not published" will_refused
  check "idevs alone: ordinary topics pass" ordinary_passes some/topic
  sleep 1.2
  before=$(grep -c "refused a publication by client" "$work/acl-alone.conf.log")
  for _ in $(seq 30); do pub -q 0 -i flooder -t idevs/p01/out/out -m forged >/dev/null 2>&1; done
  sleep 1.5
  after=$(grep -c "refused a publication by client" "$work/acl-alone.conf.log")
  check "a flood of forged writes is logged at a bounded rate: one line, then a summary" \
    test $((after - before)) -le 2 -a "$(grep -c "more publication(s) refused on protected topics in the last 1 s; the last on 'idevs/p01/out/out' from client 'flooder'" "$work/acl-alone.conf.log")" -ge 1
  # An acl_file added to the running broker's configuration (RELOAD): from then on idevs defers to it, even
  # though plugin_opt_acl_others says allow (the broker is running: it says so loudly instead of stopping).
  printf 'topic readwrite open/topic\n' >"$work/acl_file_reload"
  echo "acl_file $work/acl_file_reload" >>"$work/acl-alone.conf"
  kill -HUP "$broker_pid"
  check "idevs alone, then an acl_file added and RELOAD: the log says idevs defers from now on" \
    wait_for_text "$work/acl-alone.conf.log" "plugin_opt_acl_others allow: the broker has another ACL source, acl_file $work/acl_file_reload ($work/acl-alone.conf line"
  check "... a topic the new acl_file grants passes" ordinary_passes open/topic
  check "... one it does not grant is refused (idevs no longer allows it)" bash -c '! "$@"' _ ordinary_passes some/topic
  stop_broker
fi
# an acl_file that grants everyone everything on idevs/# and one other topic, plugin_opt_acl_others left out
printf 'topic readwrite idevs/#\ntopic readwrite open/topic\n' >"$work/acl_file"
if arrangement aclfile -acl_others "acl_file $work/acl_file"; then
  check "with an acl_file, acl_others left out: the log says the other topics are left to it, naming it" \
    grep -qF "topics no process protects: left to the broker's other ACL sources, the first acl_file $work/acl_file ($work/acl-aclfile.conf line" "$work/acl-aclfile.conf.log"
  check "with an acl_file granting idevs/#: no client write on protected topics reaches a subscriber" guard_holds aclfile
  check "... a will on a protected topic is not published" will_refused
  check "... a topic the acl_file grants passes" ordinary_passes open/topic
  check "... and one it does not grant is not widened by idevs" bash -c '! "$@"' _ ordinary_passes closed/topic
  stop_broker
fi
# dynamic-security granting anonymous clients everything, loaded after and before idevs
dynsec=$(ls /usr/lib/*/mosquitto_dynamic_security.so 2>/dev/null | head -1)
if [ -n "$dynsec" ]; then
  cat >"$work/dynsec.json" <<'JSON'
{"defaultACLAccess": {"publishClientSend": false, "publishClientReceive": true, "subscribe": true, "unsubscribe": true},
 "clients": [], "groups": [{"groupname": "anon", "roles": [{"rolename": "all"}]}],
 "roles": [{"rolename": "all", "acls": [{"acltype": "publishClientSend", "topic": "#", "allow": true, "priority": 0},
                                       {"acltype": "subscribePattern", "topic": "#", "allow": true, "priority": 0}]}],
 "anonymousGroup": "anon"}
JSON
  if arrangement dynsec-after -acl_others "plugin_opt_acl_others defer" "plugin $dynsec" \
      "plugin_opt_config_file $work/dynsec.json"; then
    check "dynamic-security after idevs, granting #: no client write on protected topics reaches a subscriber" guard_holds dynsec-after
    check "... a will on a protected topic is not published" will_refused
    check "... ordinary topics pass (dynamic-security decides)" ordinary_passes some/topic
    stop_broker
  fi
  # Before idevs: its grant is the broker's answer; the MESSAGE event still drops the publication, and warns.
  write_conf "$work/acl-dynsec-before.conf" "" -acl_others
  sed -i "s|^plugin $plugin$|plugin $dynsec\nplugin_opt_config_file $work/dynsec.json\nplugin $plugin\nplugin_opt_descriptor ${two[0]}\nplugin_opt_descriptor ${two[1]}\nplugin_opt_acl_others defer|" "$work/acl-dynsec-before.conf"
  if start_broker "$work/acl-dynsec-before.conf"; then
    check "dynamic-security before idevs, granting #: no client write on protected topics reaches a subscriber" guard_holds dynsec-before
    check "... and the log warns that an ACL source before idevs granted it, and what to do" \
      grep -q "was allowed to publish on 'idevs/p0[12]/.*' by an ACL source asked before idevs.*load mosquitto_idevs.so first" "$work/acl-dynsec-before.conf.log"
    stop_broker
  else not_ok "the broker starts (dynsec before idevs)" "$work/acl-dynsec-before.conf.log"; fi
else
  not_ok "mosquitto_dynamic_security.so is installed (Debian package mosquitto)"
fi

finish

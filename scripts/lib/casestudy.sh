# The case study's moving parts, shared by scripts/demo and tests/casestudy/: a PKI, the descriptors, a real
# mosquitto with mosquitto_idevs.so on a free loopback port, a recording relay in front of it, and the store,
# taxi, messaging and points services. Sourced, not run. Every process started here is recorded by PID and
# stopped by cs_stop_all. The free port, the ASan preload, giving the work directory to mosquitto's user and
# stopping a pid come from scripts/lib/broker.sh.
#
#   cs_init BUILD_DIR WORK_DIR
#   cs_make_pki; cs_write_descriptor; cs_start_broker; cs_start_tap [STREAMS_DIR]
#   cs_start_service taxi ...; cs_start_service messaging ...
#   "$CS_STORE" run --db ... $(cs_conn store)
#   cs_stop_all
#
# With CS_BACKEND=tpm (set before cs_write_conf), the compartments run on the tpm backend (docs/BACKENDS.md):
# cs_write_conf starts a software TPM in WORK/tpm (scripts/lib/swtpm.sh) and enrolls the host with idevs-tpm and
# idevs-ca, and the services' policy allows backend tpm instead of the process backend.
#
# The functions that concern one process (cs_write_descriptor, cs_expected_measurement, cs_wait_certificate,
# cs_conn, cs_counters) use CS_PROCESS, CS_LOGIC and CS_DESCRIPTOR: rewards' unless run through cs_with, as in
# "cs_with loyalty cs_conn points".

source "$(dirname "${BASH_SOURCE[0]}")/broker.sh"
source "$(dirname "${BASH_SOURCE[0]}")/swtpm.sh"
source "$(dirname "${BASH_SOURCE[0]}")/tpm_enroll.sh"

cs_init() { # BUILD_DIR WORK_DIR
  CS_BUILD=$(cd "$1" && pwd) CS_WORK=$2
  CS_CA=$CS_BUILD/certs/tool/idevs-ca
  CS_ENVELOPE=$CS_BUILD/proto/tool/idevs-envelope
  CS_PLUGIN=$CS_BUILD/plugin/mosquitto_idevs.so
  CS_COMPARTMENT=$CS_BUILD/enclave-bridge/compartment/idevs-compartment
  CS_LOGIC=$CS_BUILD/services/rewards/librewards.so
  CS_STORE=$CS_BUILD/services/store/store
  CS_TAXI=$CS_BUILD/services/taxi/taxi
  CS_MESSAGING=$CS_BUILD/services/messaging/messaging
  CS_POINTS=$CS_BUILD/services/points/points # loyalty's service: not needed by rewards alone
  CS_SUB=$CS_BUILD/services/tools/idevs-sub
  CS_TPM=$CS_BUILD/enclave-bridge/launcher/tool/idevs-tpm
  CS_BACKEND=${CS_BACKEND:-process} CS_TCTI=
  CS_PKI=$CS_WORK/pki
  CS_DESCRIPTOR=$CS_WORK/rewards.json
  CS_PROCESS=rewards
  CS_BROKER_PID= CS_TAP_PID= CS_PORT= CS_TAP_PORT=
  CS_SERVICE_PIDS=()
  # An ASan-built plugin needs the sanitizer runtime in the (uninstrumented) broker.
  asan_preload "$CS_PLUGIN"
  CS_PRELOAD=$preload
  [ "$asan" -eq 0 ] || export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
  local f
  for f in "$CS_CA" "$CS_PLUGIN" "$CS_COMPARTMENT" "$CS_LOGIC" "$CS_STORE" "$CS_TAXI" "$CS_MESSAGING"; do
    [ -e "$f" ] || { echo "casestudy: $f is not built" >&2; return 1; }
  done
  mkdir -p "$CS_WORK"
}

cs_free_port() { free_port; }

# The operator's CA and attestation authority, and one identity per service.
cs_make_pki() {
  "$CS_CA" init "$CS_PKI" --name idevs-demo-ca >/dev/null || return 1
  local s
  for s in store taxi messaging; do "$CS_CA" service "$CS_PKI" "$s" >/dev/null || return 1; done
}

cs_uuid_of() { "$CS_CA" show "$CS_PKI/$1.crt" | sed -n 's/^name: urn:uuid://p'; }

# Runs COMMAND with CS_PROCESS, CS_LOGIC and CS_DESCRIPTOR set for PROCESS, a process of the case study
# (services/PROCESS/): its logic in this build, its descriptor in the work directory.
cs_with() { # PROCESS COMMAND...
  CS_PROCESS=$1 CS_LOGIC=$CS_BUILD/services/$1/lib$1.so CS_DESCRIPTOR=$CS_WORK/$1.json "${@:2}"
}

# The process's deployment descriptor (docs/DEPLOYMENT.md) for this PKI and build; with CS_INSTANCES set, the
# process runs as a pool of that many compartments (process.instances).
cs_write_descriptor() {
  "$IDEVS_ROOT/services/$CS_PROCESS/make_descriptor" --pki "$CS_PKI" --logic "$CS_LOGIC" --ca-tool "$CS_CA" \
    --out "$CS_DESCRIPTOR" ${CS_INSTANCES:+--instances "$CS_INSTANCES"}
}

# What the services pin: the measurement of exactly this host program, logic and descriptor.
cs_expected_measurement() { "$CS_CA" measure "$CS_COMPARTMENT" "$CS_LOGIC" "$CS_DESCRIPTOR"; }

cs_write_conf() { # extra lines...
  CS_PORT=$(cs_free_port)
  mkdir -p "$CS_WORK/broker" "$CS_WORK/state"
  chmod 700 "$CS_WORK/state"
  local backend=()
  if [ "$CS_BACKEND" = tpm ]; then
    [ -n "$CS_TCTI" ] || cs_start_tpm || return 1
    backend=("plugin_opt_backend tpm" "plugin_opt_tpm_tcti $CS_TCTI")
  fi
  {
    echo "listener $CS_PORT 127.0.0.1"
    echo "allow_anonymous true"
    echo "set_tcp_nodelay true"
    echo "persistence true"
    echo "persistence_location $CS_WORK/broker/"
    echo "log_dest file $CS_WORK/broker/mosquitto.log"
    echo "log_type all"
    echo "plugin $CS_PLUGIN"
    echo "plugin_opt_descriptor $CS_DESCRIPTOR"
    echo "plugin_opt_authority_key $CS_PKI/authority.key"
    echo "plugin_opt_authority_cert $CS_PKI/authority.crt"
    echo "plugin_opt_operator_ca $CS_PKI/ca.crt"
    echo "plugin_opt_state_dir $CS_WORK/state"
    echo "plugin_opt_compartment $CS_COMPARTMENT"
    echo "plugin_opt_acl_others allow"
    echo "plugin_opt_metrics_interval_s 1"
    local line
    for line in "${backend[@]}" "$@"; do echo "$line"; done
  } >"$CS_WORK/mosquitto.conf"
}

# A software TPM in WORK/tpm, and the host enrolled for the broker's state directory (idevs-tpm as the broker's
# user, who owns that directory; idevs-ca as the operator): CS_TCTI. Stopped by cs_stop_all.
cs_start_tpm() {
  mkdir -p "$CS_WORK/tpm" "$CS_WORK/state" && chmod 700 "$CS_WORK/state"
  swtpm_setup_dir "$CS_WORK/tpm" >"$CS_WORK/tpm/setup.log" 2>&1 &&
    CS_TCTI=$(swtpm_start_dir "$CS_WORK/tpm" 2>"$CS_WORK/tpm/start.log") &&
    tpm_enroll "$CS_TCTI" "$CS_WORK/state" "$CS_WORK/tpm/enrollment" "$CS_PKI" "$CS_WORK/tpm" "$CS_CA" \
      as_broker_user "$CS_WORK" "$CS_TPM" >"$CS_WORK/tpm/enroll.log" 2>&1 && return 0
  echo "casestudy: the software TPM or the enrollment failed:" >&2
  cat "$CS_WORK/tpm/"*.log >&2 2>/dev/null
  return 1
}

# Starts mosquitto on the configuration and waits until the compartment's certificate is retained
# (WORK/certificate.pem).
cs_start_broker() {
  [ -n "$CS_PORT" ] || cs_write_conf
  own_work "$CS_WORK"
  # Under ASan, no leak check for the broker here: mosquitto 2.0.11 itself leaks in sub__add (handle__subscribe)
  # when the services subscribe; the plugin's own leaks are checked by tests/broker (ASan and valgrind).
  local asan=${ASAN_OPTIONS:-}
  [ -z "$CS_PRELOAD" ] || asan="${asan:+$asan:}detect_leaks=0"
  (LD_PRELOAD=$CS_PRELOAD ASAN_OPTIONS=$asan exec mosquitto -c "$CS_WORK/mosquitto.conf") \
    >"$CS_WORK/broker/stdout.log" 2>&1 &
  CS_BROKER_PID=$!
  cs_wait_certificate "$CS_WORK/certificate.pem" && return 0
  kill -0 "$CS_BROKER_PID" 2>/dev/null || CS_BROKER_PID=
  return 1
}

# Waits (10 s at most) until the broker retains the process's certificate, and writes it to FILE.
cs_wait_certificate() { # FILE
  local _
  for _ in $(seq 100); do
    kill -0 "$CS_BROKER_PID" 2>/dev/null || return 1
    if timeout 2 mosquitto_sub -h 127.0.0.1 -p "$CS_PORT" -t "idevs/$CS_PROCESS/certificate" -C 1 -W 1 \
         >"$1" 2>/dev/null && grep -q 'BEGIN CERTIFICATE' "$1"; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Starts the recording relay in front of the broker; services connect to CS_TAP_PORT. With STREAMS_DIR, it
# also keeps each connection's two directions apart there (tap.py).
cs_start_tap() { # [STREAMS_DIR]
  CS_TAP_PORT=$(cs_free_port)
  : >"$CS_WORK/traffic.bin"
  [ -z "${1:-}" ] || mkdir -p "$1" || return 1
  # bash unsets a coproc's NAME_PID when it ends: keep the pid in a variable of our own.
  coproc TAP_PROC {
    exec python3 "$IDEVS_ROOT/scripts/lib/tap.py" "$CS_TAP_PORT" "$CS_PORT" "$CS_WORK/traffic.bin" 900 ${1:+"$1"}
  }
  CS_TAP_PID=$TAP_PROC_PID
  local line
  read -r -t 10 line <&"${TAP_PROC[0]}" && [ "$line" = ready ]
}

# The connection and verification options of a service (the shared options of the service library).
cs_conn() { # NAME
  local backend=allow-process-backend-insecure
  [ "$CS_BACKEND" != tpm ] || backend=allow-backend=tpm
  printf '%s\n' --pki "$CS_PKI" --name "$1" --process "$CS_PROCESS" -h 127.0.0.1 -p "${CS_TAP_PORT:-$CS_PORT}" \
    --policy "$backend" --policy "measurement=$(cs_expected_measurement)" \
    --policy "descriptor=$CS_DESCRIPTOR"
}

cs_start_service() { # NAME PROGRAM ARGS...: runs in the background, output in WORK/NAME.log
  local name=$1; shift
  "$@" >"$CS_WORK/$name.log" 2>&1 &
  CS_SERVICE_PIDS+=($!)
}

# Waits until SQL on DB prints EXPECTED, at most SECONDS; prints the last value seen.
cs_wait_for() { # DB SQL EXPECTED SECONDS
  local got= _
  for _ in $(seq $(($4 * 10))); do
    got=$(sqlite3 -readonly "$1" "$2" 2>/dev/null || true)
    [ "$got" = "$3" ] && break
    sleep 0.1
  done
  echo "$got"
}

# The broker's idevs counters of the process, or of SCOPE (totals: summed over the processes), as last
# published (retained), "name value" per line.
# (mosquitto_sub ends with status 27 when -W expires before a fresh publication: not a failure here.)
cs_counters() { # [SCOPE]
  local scope=${1:-$CS_PROCESS}
  { timeout 5 mosquitto_sub -h 127.0.0.1 -p "$CS_PORT" -t "\$SYS/broker/idevs/$scope/#" -v --retained-only \
    -W 1 2>/dev/null || true; } |
    sed "s|^\$SYS/broker/idevs/$scope/||" | sort
}

cs_stop_pid() { stop_pid "$1" 50; } # PID: TERM, up to 5 s, then KILL; always reaped

cs_stop_all() {
  local pid
  for pid in "${CS_SERVICE_PIDS[@]}"; do cs_stop_pid "$pid"; done
  CS_SERVICE_PIDS=()
  cs_stop_pid "${CS_TAP_PID:-}"; CS_TAP_PID=
  cs_stop_pid "${CS_BROKER_PID:-}"; CS_BROKER_PID=
  if [ -n "${CS_TCTI:-}" ]; then swtpm_stop_dir "$CS_WORK/tpm" >/dev/null 2>&1; CS_TCTI=; fi
}

#!/bin/bash
# A software TPM 2.0 for tests (swtpm), each in its own directory: runnable (C tests call it) or sourced.
#
#   swtpm.sh setup DIR   DIR/state: a manufactured TPM (swtpm_setup --tpm2 --create-ek-cert --create-platform-cert,
#                        RSA and ECC EKs, their certificates in NV 0x01c00002 and 0x01c0000a), certified by a local
#                        CA private to DIR (DIR/localca; its root, the test's "vendor root": DIR/vendor-root.pem, and
#                        the intermediate that signs the EK certificates: DIR/vendor-intermediate.pem).
#                        Nothing outside DIR is read or written (not /var/lib/swtpm-localca).
#   swtpm.sh start DIR   starts swtpm on the unix sockets DIR/tpm.sock (commands) and DIR/tpm.sock.ctrl (control),
#                        as a daemon; its pid in DIR/swtpm.pid; prints the TCTI string swtpm:path=DIR/tpm.sock.
#                        The TPM is started (TPM2_Startup(CLEAR)): PCRs are as after a boot.
#   swtpm.sh stop DIR    TPM2_Shutdown(CLEAR) (tpm2_shutdown, when there), then TERM to the pid in DIR/swtpm.pid
#                        only, and waits for it to end (KILL after 5 s).
#   swtpm.sh reboot DIR  stop, then start: the TPM keeps its NV and keys, PCRs start from zero again.
# Sourced, the same as functions swtpm_setup_dir, swtpm_start_dir, swtpm_stop_dir.
set -u

swtpm_setup_dir() { # DIR
  local dir=$1 ca
  for t in swtpm swtpm_setup swtpm_localca; do
    command -v "$t" >/dev/null || { echo "swtpm.sh: $t is missing (install swtpm and swtpm-tools)" >&2; return 1; }
  done
  mkdir -p "$dir/state" "$dir/localca" || return 1
  ca=$(cd "$dir/localca" && pwd)
  # swtpm_localca reads its statedir and key names from this file; a private copy keeps tests apart.
  cat >"$ca/swtpm-localca.conf" <<CONF
statedir = $ca
signingkey = $ca/signkey.pem
issuercert = $ca/issuercert.pem
certserial = $ca/certserial
CONF
  printf -- '--platform-manufacturer idevs-test\n--platform-version 2.1\n--platform-model swtpm\n' \
    >"$ca/swtpm-localca.options"
  cat >"$ca/swtpm_setup.conf" <<CONF
create_certs_tool= $(command -v swtpm_localca)
create_certs_tool_config = $ca/swtpm-localca.conf
create_certs_tool_options = $ca/swtpm-localca.options
active_pcr_banks = sha256
CONF
  if ! swtpm_setup --tpm2 --tpm-state "$dir/state" --create-ek-cert --create-platform-cert \
      --config "$ca/swtpm_setup.conf" --logfile "$dir/setup.log" >/dev/null 2>&1; then
    echo "swtpm.sh: swtpm_setup failed:" >&2
    tail -n 20 "$dir/setup.log" >&2
    return 1
  fi
  [ -s "$ca/swtpm-localca-rootca-cert.pem" ] || { echo "swtpm.sh: no CA root in $ca" >&2; return 1; }
  cp "$ca/swtpm-localca-rootca-cert.pem" "$dir/vendor-root.pem"
  cp "$ca/issuercert.pem" "$dir/vendor-intermediate.pem"
}

swtpm_start_dir() { # DIR
  local dir sock i
  dir=$(cd "$1" && pwd) || return 1
  sock=$dir/tpm.sock
  rm -f "$sock" "$sock.ctrl" "$dir/swtpm.pid"
  if ! swtpm socket --tpm2 --tpmstate "dir=$dir/state" --server "type=unixio,path=$sock" \
      --ctrl "type=unixio,path=$sock.ctrl" --flags not-need-init,startup-clear --pid "file=$dir/swtpm.pid" \
      --log "file=$dir/swtpm.log" --daemon; then
    echo "swtpm.sh: swtpm did not start:" >&2
    tail -n 20 "$dir/swtpm.log" >&2
    return 1
  fi
  for i in $(seq 1 100); do
    [ -S "$sock" ] && [ -s "$dir/swtpm.pid" ] && break
    sleep 0.05
  done
  [ -S "$sock" ] || { echo "swtpm.sh: no socket $sock" >&2; return 1; }
  echo "swtpm:path=$sock"
}

swtpm_stop_dir() { # DIR
  local dir=$1 pid i
  [ -s "$dir/swtpm.pid" ] || return 0
  pid=$(cat "$dir/swtpm.pid")
  # An orderly TPM2_Shutdown first, as an operating system does: a TPM started after a shutdown without it counts
  # a dictionary-attack failure, and a few of those lock its keys out.
  if command -v tpm2_shutdown >/dev/null && [ -S "$dir/tpm.sock" ]; then
    timeout 5 tpm2_shutdown -T "swtpm:path=$dir/tpm.sock" >/dev/null 2>&1
  fi
  kill -TERM "$pid" 2>/dev/null || { rm -f "$dir/swtpm.pid"; return 0; }
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$dir/swtpm.pid"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-} ${2:+x}" in
    "setup x") swtpm_setup_dir "$2" ;;
    "start x") swtpm_start_dir "$2" ;;
    "stop x") swtpm_stop_dir "$2" ;;
    "reboot x") swtpm_stop_dir "$2" && swtpm_start_dir "$2" ;;
    *) echo "usage: swtpm.sh setup|start|stop|reboot DIR" >&2; exit 2 ;;
  esac
fi

# Shared by scripts/test and scripts/demo: Debian packages, building with meson, small output helpers.
# Sourced, not run.

IDEVS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Everything idevs needs to build, test and run on Debian 12. python3-cryptography and python3-protobuf serve
# the independent interoperability test only (with python3-pyasn1-modules); haproxy the load balancer in front of
# several brokers (tests/scale/test_brokers.sh); libtss2-dev reads TPM structures (the tpm
# backend's quotes); swtpm, swtpm-tools and tpm2-tools are the software TPM its tests run against.
IDEVS_PACKAGES=(
  meson ninja-build pkg-config gcc libc6-dev
  libssl-dev openssl
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  uuid-dev libcunit1-dev libcjson-dev libseccomp-dev libsqlite3-dev sqlite3
  mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev
  python3 python3-cryptography python3-protobuf python3-pyasn1-modules
  valgrind faketime libfaketime
  haproxy
  swtpm swtpm-tools tpm2-tools libtss2-dev
)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs the packages of IDEVS_PACKAGES that are missing, with apt-get (as root, or through sudo).
ensure_packages() {
  local missing=() p
  for p in "${IDEVS_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged broker as a system service; idevs runs its own brokers on free ports.
  if [[ " ${missing[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null 2>&1; then
    "${sudo[@]}" systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" haproxy "* ]] && command -v systemctl >/dev/null 2>&1; then
    "${sudo[@]}" systemctl disable --now haproxy >/dev/null 2>&1 || true
  fi
}

# build_tree DIR [meson options...]: configures DIR once (reconfiguring if it exists) and builds it.
build_tree() {
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$IDEVS_ROOT" "$@" >/dev/null
  fi
  ninja -C "$dir" >/dev/null || { ninja -C "$dir"; return 1; }
}

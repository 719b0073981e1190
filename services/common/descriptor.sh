# What the case study's descriptor writers (services/rewards/make_descriptor, services/loyalty/make_descriptor)
# share: finding idevs-ca, reading the services' UUIDs and the CA certificate's SHA-256 from a PKI directory
# made by idevs-ca, keeping the program UUID of an existing descriptor, and writing the file atomically.
# Sourced, not run; the caller has `set -euo pipefail`, sets md_prog to its own name for the messages and
# defines usage; its own options, if any, go to its md_own_option OPTION VALUE (status 1 for one it does not know).

die() { echo "$md_prog: $*" >&2; exit 1; }

md_uuid_re='^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'

# Prints the idevs-ca to use: the one given (CA_TOOL, else $IDEVS_CA), else idevs-ca on PATH, else the one in the
# build directory the logic lies in (BUILD/services/NAME/libNAME.so); nothing when there is none (openssl reads
# the certificates then).
md_find_ca_tool() { # CA_TOOL LOGIC
  local tool=${1:-${IDEVS_CA:-}}
  if [ -n "$tool" ]; then
    command -v "$tool" >/dev/null 2>&1 || die "--ca-tool: '$tool' is not a program"
    echo "$tool"
  elif command -v idevs-ca >/dev/null 2>&1; then
    echo idevs-ca
  elif [ -x "$(dirname "$2")/../../certs/tool/idevs-ca" ]; then
    echo "$(dirname "$2")/../../certs/tool/idevs-ca"
  else
    command -v openssl >/dev/null 2>&1 || die "neither idevs-ca nor openssl found: give --ca-tool"
  fi
}

# Checks that PKI holds ca.crt and NAME.crt for each service; prints its absolute path.
md_pki_dir() { # PKI SERVICE...
  local pki=$1 svc; shift
  [ -d "$pki" ] || die "$pki: not a directory"
  pki=$(cd "$pki" && pwd)
  for svc in "$@"; do
    [ -f "$pki/$svc.crt" ] || die "$pki/$svc.crt: missing (idevs-ca service $pki $svc)"
  done
  [ -f "$pki/ca.crt" ] || die "$pki/ca.crt: missing (idevs-ca init $pki)"
  case $pki in *'"'*|*'\'*) die "$pki: the path must not contain \" or \\" ;; esac
  echo "$pki"
}

# Prints one fact of CERTIFICATE: the first line of `CA_TOOL show` that the sed script SHOW prints, or without
# CA_TOOL what the function OPENSSL prints of it; dies with WHAT unless that matches the extended regex RE.
md_cert_fact() { # CA_TOOL CERTIFICATE SHOW OPENSSL RE WHAT
  local fact
  if [ -n "$1" ]; then
    fact=$("$1" show "$2" | sed -n "$3" | head -n 1)
  else
    fact=$("$4" "$2" | head -n 1)
  fi
  [[ $fact =~ $5 ]] || die "$2: no $6 (idevs-ca show)"
  echo "$fact"
}

md_openssl_uuid() { openssl x509 -in "$1" -noout -ext subjectAltName | sed -n 's/.*URI:urn:uuid:\([0-9a-f-]\{36\}\).*/\1/p'; }
md_openssl_sha256() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }

md_uuid_of() { # CA_TOOL CERTIFICATE
  md_cert_fact "$1" "$2" 's/^name: urn:uuid://p' md_openssl_uuid "$md_uuid_re" "UUID in the certificate"
}

md_ca_sha256() { # CA_TOOL PKI
  md_cert_fact "$1" "$2/ca.crt" 's/^certificate SHA-256: \([0-9a-f]\{64\}\).*/\1/p' md_openssl_sha256 '^[0-9a-f]{64}$' \
    "certificate SHA-256"
}

# The program UUID: the one given, else the one in OUT if that file exists (the compartment's sealed keys are
# per program: keep it stable), else a fresh one.
md_program() { # PROGRAM OUT
  local program=$1
  if [ -z "$program" ] && [ -n "$2" ] && [ -f "$2" ]; then
    program=$(sed -n 's/.*"uuid": "\([0-9a-f-]\{36\}\)", "logic".*/\1/p' "$2" | head -n 1)
  fi
  [ -n "$program" ] || program=$(cat /proc/sys/kernel/random/uuid 2>/dev/null || uuidgen)
  [[ $program =~ $md_uuid_re ]] || die "--program: '$program' is not a UUID (lower case, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
  echo "$program"
}

md_own_option() { return 1; } # replaced by a caller with options of its own

# process.instances and process.partitions: absent unless given, so that a descriptor written without them stays
# byte for byte what it was (its digest is part of the measurement).
instances= partitions=

# Reads the command line into pki, out, logic, program, queue_depth and ca_tool (the caller sets their defaults),
# instances and partitions: PKI_DIR or --pki DIR, --out FILE, --logic FILE, --program UUID, --queue-depth N,
# --ca-tool PATH, --instances N, --partitions P. Sets md_pool to the text that follows process.config: empty, or
# the instances and partitions given.
md_parse_args() { # "$@"
  while [ $# -gt 0 ]; do
    case $1 in -h|--help) usage; exit 0 ;; esac
    if [ -z "$pki" ] && [ "${1#-}" = "$1" ]; then pki=$1; shift; continue; fi
    [ $# -ge 2 ] || { echo "$md_prog: $1 needs a value" >&2; usage >&2; exit 2; }
    case $1 in
      --pki) pki=$2 ;;
      --out) out=$2 ;;
      --logic) logic=$2 ;;
      --program) program=$2 ;;
      --queue-depth) queue_depth=$2 ;;
      --ca-tool) ca_tool=$2 ;;
      --instances) instances=$2 ;;
      --partitions) partitions=$2 ;;
      *) md_own_option "$1" "$2" || { echo "$md_prog: unknown option $1" >&2; usage >&2; exit 2; } ;;
    esac
    shift 2
  done
  [ -n "$pki" ] || { echo "$md_prog: PKI_DIR is missing" >&2; usage >&2; exit 2; }
  [ -d "$pki" ] || die "$pki: not a directory"
  [[ $queue_depth =~ ^[1-9][0-9]{0,6}$ ]] && [ "$queue_depth" -le 1048576 ] ||
    die "--queue-depth: '$queue_depth' is not 1 to 1048576"
  case $logic in *'"'*|*'\'*) die "--logic: must not contain \" or \\" ;; esac
  md_pool=
  if [ -n "$instances" ]; then
    [[ $instances =~ ^[1-9][0-9]?$ ]] && [ "$instances" -le 64 ] || die "--instances: '$instances' is not 1 to 64"
    md_pool+=", \"instances\": $instances"
  fi
  if [ -n "$partitions" ]; then
    [[ $partitions =~ ^[1-9][0-9]{0,4}$ ]] && [ "$partitions" -le 65536 ] ||
      die "--partitions: '$partitions' is not 1 to 65536"
    md_pool+=", \"partitions\": $partitions"
  fi
}

# After md_parse_args: ca_tool found, pki absolute and holding the services' certificates, ca_sha the CA
# certificate's SHA-256, program the program UUID.
md_prepare() { # SERVICE...
  ca_tool=$(md_find_ca_tool "$ca_tool" "$logic")
  pki=$(md_pki_dir "$pki" "$@")
  ca_sha=$(md_ca_sha256 "$ca_tool" "$pki")
  program=$(md_program "$program" "$out")
}

# Writes TEXT to OUT, replacing it atomically, or to standard output without OUT.
md_write() { # OUT TEXT
  if [ -z "$1" ]; then
    printf '%s\n' "$2"
  else
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    printf '%s\n' "$2" >"$tmp"
    mv -f "$tmp" "$1"
  fi
}

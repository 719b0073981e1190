/* idevs-ca: the operator tool for an idevs PKI (docs/CERTIFICATES.md).
 *
 *   idevs-ca init DIR [--name NAME] [--days N]
 *   idevs-ca service DIR NAME [--uuid UUID] [--days N]
 *   idevs-ca attest DIR NAME --program UUID --descriptor FILE --measure FILE... [--validity-seconds N] [--debug]
 *   idevs-ca verify --ca CA.crt CHAIN.crt [POLICY...]
 *   idevs-ca show CERT
 *   idevs-ca measure FILE...   (1 to 64 files)
 *   idevs-ca tpm-challenge DIR REQUEST --ek-roots DIR|FILE --out CHALLENGE --pending PENDING
 *   idevs-ca tpm-issue DIR PENDING RESPONSE --out AK.crt [--issuer NAME] [--days N]
 *
 * Exit status: 0 success, 1 failure, 2 usage error. Private keys are never printed. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "idevs_cert.h"
#include "idevs_crypto.h"
#include "idevs_hex.h"
#include "idevs_file.h"
#include "idevs_identity.h"
#include "idevs_tpm.h"
#include "idevs_uuid.h"

#define EXIT_USAGE 2
#define PATH_LEN 4096
#define MEASURE_LABEL "idevs measurement v2"
#define MEASURE_FILES_MAX 64

static const char *prog = "idevs-ca";

static void err_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void err_msg(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const char usage_main[] =
    "usage: idevs-ca COMMAND [ARGS]\n"
    "commands:\n"
    "  init DIR [--name NAME] [--days N]      create an operator CA and an attestation authority in DIR\n"
    "  service DIR NAME [--uuid UUID] [--days N]\n"
    "                                         issue a service identity: DIR/NAME.key and DIR/NAME.crt\n"
    "  attest DIR NAME --program UUID --descriptor FILE --measure FILE... [--validity-seconds N] [--debug]\n"
    "                                         issue an attested compartment certificate (process backend)\n"
    "  verify --ca CA.crt CHAIN.crt [POLICY...]\n"
    "                                         verify a certificate chain under a policy\n"
    "  show CERT                              print a human summary of a certificate\n"
    "  measure FILE...                        print the measurement of 1 to 64 files (a compartment's:\n"
    "                                         host program, logic, descriptor, in that order)\n"
    "  tpm-challenge DIR REQUEST --ek-roots DIR|FILE --out CHALLENGE --pending PENDING\n"
    "                                         enroll a host's TPM, step 1: check its EK and AK, protect a credential\n"
    "  tpm-issue DIR PENDING RESPONSE --out AK.crt [--issuer NAME] [--days N]\n"
    "                                         step 2: check the recovered credential, issue the AK certificate\n"
    "Run 'idevs-ca COMMAND --help' for the options of a command.\n";

static const char usage_tpm_challenge[] =
    "usage: idevs-ca tpm-challenge DIR REQUEST --ek-roots DIR|FILE --out CHALLENGE --pending PENDING\n"
    "  Reads a TpmEnrollRequest (certs/tpm.proto) from REQUEST: checks that the EK certificate chains to a TPM\n"
    "  vendor root in --ek-roots (a PEM or DER file, or a directory of them) and that the AK is a restricted,\n"
    "  fixed, TPM-generated ECDSA P-256 signing key; writes a TpmEnrollChallenge to CHALLENGE (for the host's\n"
    "  TPM2_ActivateCredential) and the credential with the request to PENDING (mode 0600, keep it private).\n"
    "  Neither output may exist. DIR is the PKI directory (unused until tpm-issue).\n";

static const char usage_tpm_issue[] =
    "usage: idevs-ca tpm-issue DIR PENDING RESPONSE --out AK.crt [--issuer NAME] [--days N]\n"
    "  Compares the credential in the host's TpmEnrollResponse (RESPONSE) with PENDING and, when equal, issues\n"
    "  the AK certificate (PEM) for the request's host under DIR/ca (or DIR/NAME, an AK CA), valid N days\n"
    "  (default 365). The certificate's extendedKeyUsage " IDEVS_OID_TPM_AK " marks it an idevs AK.\n";

static const char usage_init[] =
    "usage: idevs-ca init DIR [--name NAME] [--days N]\n"
    "Creates DIR (mode 0700) with ca.key, ca.crt (the operator CA, self-signed) and authority.key,\n"
    "authority.crt (the attestation authority, CA:TRUE pathlen 0, signed by the CA). Refuses to overwrite.\n"
    "  --name NAME   CA name (default idevs-operator-ca); the authority is NAME-authority\n"
    "  --days N      validity in days (default 3650)\n";

static const char usage_measure[] =
    "usage: idevs-ca measure FILE... (1 to 64 files)\n"
    "Prints the measurement of the files, in order: SHA-256(\"idevs measurement v2\" || SHA-256(file 1) || ...).\n"
    "Given the compartment host program, the logic and the deployment descriptor, it is the measurement the\n"
    "launcher puts in the compartment's evidence: what a service pins with --policy measurement=HEX.\n";

static const char usage_service[] =
    "usage: idevs-ca service DIR NAME [--uuid UUID] [--days N]\n"
    "Issues a service identity signed by the CA in DIR: DIR/NAME.key (0600) and DIR/NAME.crt.\n"
    "Prints the identity's UUID.\n"
    "  --uuid UUID   the identity's UUID (default: a fresh random one)\n"
    "  --days N      validity in days (default 365)\n";

static const char usage_attest[] =
    "usage: idevs-ca attest DIR NAME --program UUID --descriptor FILE --measure FILE... [--validity-seconds N] "
    "[--debug]\n"
    "Does what the launcher does when it starts a compartment, for demos and tests: generates keys, measures,\n"
    "and has the attestation authority in DIR sign a certificate with evidence (backend 'process').\n"
    "Writes DIR/NAME.key (0600) and DIR/NAME.crt (the leaf, then the authority certificate).\n"
    "  --program UUID          the integration process's UUID (also the certificate's urn:uuid)\n"
    "  --descriptor FILE       the deployment descriptor; its SHA-256 is the descriptor digest\n"
    "  --measure FILE          a file measured, in order (repeat); measurement =\n"
    "                          SHA-256(\"idevs measurement v2\" || SHA-256(file 1) || SHA-256(file 2) ...)\n"
    "  --validity-seconds N    validity (default 86400)\n"
    "  --debug                 set the evidence's debug flag\n";

static const char usage_verify[] =
    "usage: idevs-ca verify --ca CA.crt CHAIN.crt [POLICY...]\n"
    "Verifies the PEM chain in CHAIN.crt (leaf first) against the operator CA(s) in CA.crt.\n"
    "POLICY options:\n"
    "  --require-evidence                 the peer must be an attested compartment\n"
    "  --allow-backend NAME               accept a hardware backend: sgx, tdx, sev-snp, nitro, cheri (repeat)\n"
    "  --allow-process-backend-insecure   accept the process backend: trusts the broker host's launcher\n"
    "  --allow-debug-insecure             accept compartments in debug mode\n"
    "  --measurement HEX                  an expected measurement (repeat; any one matches)\n"
    "  --descriptor-digest HEX | --descriptor FILE   the expected deployment descriptor\n"
    "  --program UUID                     the expected program UUID\n"
    "  --nonce HEX                        the expected challenge nonce\n"
    "  --time SECONDS                     verify as at this time (seconds since 1970) instead of now\n"
    "Prints 'OK: NAME urn:uuid:UUID' and the evidence, or 'FAILED (error): reason' and exits 1.\n";

static const char usage_show[] =
    "usage: idevs-ca show CERT\n"
    "Prints a human summary of the first certificate in the PEM file CERT: name, UUID, issuer, validity,\n"
    "key fingerprints and the attestation evidence.\n";

static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

static int usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage);
    return EXIT_USAGE;
}

static bool parse_uint(const char *text, unsigned long max, unsigned long *out)
{
    char *end = NULL;
    if (text == NULL || *text < '0' || *text > '9')
        return false;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno != 0 || *end != '\0' || v == 0 || v > max)
        return false;
    *out = v;
    return true;
}

static bool join(char *out, const char *dir, const char *name, const char *ext)
{
    int n = snprintf(out, PATH_LEN, "%s/%s%s", dir, name, ext);
    return n > 0 && n < PATH_LEN;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Writes certificates as PEM to a new file (mode 0644); refuses an existing file. */
static int write_certs(const char *path, X509 *const *certs, size_t n)
{
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        err_msg("cannot create %s: %s", path, strerror(errno));
        return 1;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        err_msg("cannot write %s: %s", path, strerror(errno));
        return 1;
    }
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        ok = PEM_write_X509(f, certs[i]) == 1;
    ok = fflush(f) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        err_msg("cannot write %s", path);
        unlink(path);
        return 1;
    }
    return 0;
}

static int save_key(const idevs_identity *id, const char *path)
{
    idevs_err err = idevs_identity_save_key(id, path);
    if (err != IDEVS_OK) {
        err_msg("cannot create key file %s: %s%s", path, idevs_strerror(err),
                exists(path) ? " (it already exists; refusing to overwrite)" : "");
        return 1;
    }
    return 0;
}

static int load_identity(const char *dir, const char *name, idevs_identity **id, X509 **cert)
{
    char key[PATH_LEN], crt[PATH_LEN];
    if (!join(key, dir, name, ".key") || !join(crt, dir, name, ".crt")) {
        err_msg("path too long under %s", dir);
        return 1;
    }
    idevs_err err = idevs_identity_load(key, crt, id);
    if (err != IDEVS_OK) {
        err_msg("cannot load %s with %s: %s", key, crt, idevs_strerror(err));
        return 1;
    }
    size_t len = 0;
    const unsigned char *p = idevs_identity_chain_der(*id, 0, &len);
    *cert = d2i_X509(NULL, &p, (long)len);
    if (*cert == NULL) {
        err_msg("cannot decode %s", crt);
        idevs_identity_free(*id);
        *id = NULL;
        return 1;
    }
    return 0;
}

/* Refuses when any of the files exists. */
static int refuse_existing(const char *const *paths, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (exists(paths[i])) {
            err_msg("%s already exists; refusing to overwrite", paths[i]);
            return 1;
        }
    }
    return 0;
}

static int issue_and_write(const char *dir, const char *name, idevs_identity *subject, X509 *cert, X509 *inter)
{
    char key[PATH_LEN], crt[PATH_LEN];
    if (!join(key, dir, name, ".key") || !join(crt, dir, name, ".crt")) {
        err_msg("path too long under %s", dir);
        return 1;
    }
    const char *paths[] = {key, crt};
    if (refuse_existing(paths, 2) != 0)
        return 1;
    if (save_key(subject, key) != 0)
        return 1;
    X509 *certs[2] = {cert, inter};
    if (write_certs(crt, certs, inter != NULL ? 2 : 1) != 0) {
        unlink(key);
        return 1;
    }
    return 0;
}

/* ---- init ---- */

static int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"days", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    const char *name = "idevs-operator-ca";
    unsigned long days = 3650;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'n')
            name = optarg;
        else if (c == 'd') {
            if (!parse_uint(optarg, 36500, &days))
                return usage_error(usage_init, "--days: '%s' is not a number of days from 1 to 36500", optarg);
        } else
            return usage_error(usage_init, "unknown option");
    }
    if (argc - optind != 1)
        return usage_error(usage_init, "init needs exactly one DIR");
    const char *dir = argv[optind];
    char auth_name[IDEVS_NAME_MAX + 16];
    snprintf(auth_name, sizeof auth_name, "%s-authority", name);
    if (strlen(name) > IDEVS_NAME_MAX - 10)
        return usage_error(usage_init, "--name: '%s' is too long (at most %d characters)", name, IDEVS_NAME_MAX - 10);

    char ca_key[PATH_LEN], ca_crt[PATH_LEN], aa_key[PATH_LEN], aa_crt[PATH_LEN];
    if (!join(ca_key, dir, "ca", ".key") || !join(ca_crt, dir, "ca", ".crt") ||
        !join(aa_key, dir, "authority", ".key") || !join(aa_crt, dir, "authority", ".crt")) {
        err_msg("path too long: %s", dir);
        return 1;
    }
    if (mkdir(dir, 0700) != 0) {
        if (errno != EEXIST) {
            err_msg("cannot create directory %s: %s", dir, strerror(errno));
            return 1;
        }
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            err_msg("%s exists and is not a directory", dir);
            return 1;
        }
    }
    const char *paths[] = {ca_key, ca_crt, aa_key, aa_crt};
    if (refuse_existing(paths, 4) != 0)
        return 1;

    int rc = 1;
    idevs_identity *ca = NULL, *aa = NULL;
    X509 *ca_cert = NULL, *aa_cert = NULL;
    idevs_uuid u;
    idevs_err err;
    idevs_uuid_generate(&u);
    if ((err = idevs_identity_generate(&u, name, &ca)) != IDEVS_OK) {
        err_msg("--name: '%s' is not a valid name ([A-Za-z0-9._-], 1 to %d characters): %s", name,
                IDEVS_NAME_MAX - 10, idevs_strerror(err));
        rc = EXIT_USAGE;
        goto done;
    }
    idevs_uuid_generate(&u);
    if ((err = idevs_identity_generate(&u, auth_name, &aa)) != IDEVS_OK ||
        (err = idevs_cert_issue_ca(ca, (unsigned)days, &ca_cert)) != IDEVS_OK ||
        (err = idevs_cert_issue_authority(ca, ca_cert, aa, (unsigned)days, &aa_cert)) != IDEVS_OK) {
        err_msg("issuing the CA and authority certificates failed: %s", idevs_strerror(err));
        goto done;
    }
    if (save_key(ca, ca_key) != 0 || write_certs(ca_crt, &ca_cert, 1) != 0 || save_key(aa, aa_key) != 0 ||
        write_certs(aa_crt, &aa_cert, 1) != 0)
        goto done;
    printf("created %s: operator CA '%s' (ca.key, ca.crt) and attestation authority '%s' (authority.key, "
           "authority.crt)\n",
           dir, name, auth_name);
    rc = 0;
done:
    X509_free(ca_cert);
    X509_free(aa_cert);
    idevs_identity_free(ca);
    idevs_identity_free(aa);
    return rc;
}

/* ---- service ---- */

static int cmd_service(int argc, char **argv)
{
    static const struct option opts[] = {{"uuid", required_argument, NULL, 'u'},
                                         {"days", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    unsigned long days = 365;
    idevs_uuid u;
    bool have_uuid = false;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'u') {
            if (idevs_uuid_parse(optarg, &u) != IDEVS_OK)
                return usage_error(usage_service, "--uuid: '%s' is not a UUID", optarg);
            have_uuid = true;
        } else if (c == 'd') {
            if (!parse_uint(optarg, 36500, &days))
                return usage_error(usage_service, "--days: '%s' is not a number of days from 1 to 36500", optarg);
        } else
            return usage_error(usage_service, "unknown option");
    }
    if (argc - optind != 2)
        return usage_error(usage_service, "service needs DIR and NAME");
    const char *dir = argv[optind], *name = argv[optind + 1];
    if (!have_uuid)
        idevs_uuid_generate(&u);

    int rc = 1;
    idevs_identity *ca = NULL, *id = NULL;
    X509 *ca_cert = NULL, *cert = NULL;
    idevs_err err = idevs_identity_generate(&u, name, &id);
    if (err != IDEVS_OK) {
        rc = usage_error(usage_service, "'%s' is not a valid name ([A-Za-z0-9._-], 1 to %d characters)", name,
                         IDEVS_NAME_MAX);
        goto done;
    }
    if (load_identity(dir, "ca", &ca, &ca_cert) != 0)
        goto done;
    if ((err = idevs_cert_issue_service(ca, ca_cert, id, (unsigned)days, &cert)) != IDEVS_OK) {
        err_msg("issuing the certificate for '%s' failed: %s", name, idevs_strerror(err));
        goto done;
    }
    if (issue_and_write(dir, name, id, cert, NULL) != 0)
        goto done;
    char text[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(&u, text);
    printf("%s\n", text);
    rc = 0;
done:
    X509_free(cert);
    X509_free(ca_cert);
    idevs_identity_free(ca);
    idevs_identity_free(id);
    return rc;
}

/* ---- attest ---- */

static int digest_file(const char *path, uint8_t out[IDEVS_SHA256_LEN])
{
    if (idevs_sha256_file(path, out) != IDEVS_OK) {
        err_msg("cannot read %s: %s", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* measurement = SHA-256("idevs measurement v2" || SHA-256(file 1) || SHA-256(file 2) ...), as the launcher
 * computes it over host program, logic and descriptor (docs/COMPARTMENT.md). */
static int measure_files(const char *const *files, size_t count, uint8_t out[IDEVS_SHA256_LEN])
{
    uint8_t concat[sizeof MEASURE_LABEL - 1 + MEASURE_FILES_MAX * IDEVS_SHA256_LEN];
    size_t label = sizeof MEASURE_LABEL - 1;
    if (count == 0 || count > MEASURE_FILES_MAX)
        return 1;
    memcpy(concat, MEASURE_LABEL, label);
    for (size_t i = 0; i < count; i++)
        if (digest_file(files[i], concat + label + i * IDEVS_SHA256_LEN) != 0)
            return 1;
    if (idevs_sha256(concat, label + count * IDEVS_SHA256_LEN, out) != IDEVS_OK) {
        err_msg("hashing failed");
        return 1;
    }
    return 0;
}

static int cmd_measure(int argc, char **argv)
{
    if (argc < 2 || argc - 1 > MEASURE_FILES_MAX)
        return usage_error(usage_measure, "measure needs 1 to %d files", MEASURE_FILES_MAX);
    uint8_t m[IDEVS_SHA256_LEN];
    char hex[2 * IDEVS_SHA256_LEN + 1];
    if (measure_files((const char *const *)argv + 1, (size_t)argc - 1, m) != 0)
        return 1;
    idevs_hex_encode(m, sizeof m, hex);
    printf("%s\n", hex);
    return 0;
}

static int cmd_attest(int argc, char **argv)
{
    static const struct option opts[] = {{"program", required_argument, NULL, 'p'},
                                         {"descriptor", required_argument, NULL, 'D'},
                                         {"measure", required_argument, NULL, 'm'},
                                         {"validity-seconds", required_argument, NULL, 'v'},
                                         {"debug", no_argument, NULL, 'g'},
                                         {NULL, 0, NULL, 0}};
    idevs_uuid program;
    bool have_program = false, debug = false;
    const char *descriptor = NULL;
    const char *measure[MEASURE_FILES_MAX];
    size_t measure_count = 0;
    unsigned long validity = 86400;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (idevs_uuid_parse(optarg, &program) != IDEVS_OK)
                return usage_error(usage_attest, "--program: '%s' is not a UUID", optarg);
            have_program = true;
            break;
        case 'D':
            descriptor = optarg;
            break;
        case 'm':
            if (measure_count == MEASURE_FILES_MAX)
                return usage_error(usage_attest, "--measure: at most %d files", MEASURE_FILES_MAX);
            measure[measure_count++] = optarg;
            break;
        case 'v':
            if (!parse_uint(optarg, 36500UL * 86400UL, &validity))
                return usage_error(usage_attest, "--validity-seconds: '%s' is not a positive number of seconds",
                                   optarg);
            break;
        case 'g':
            debug = true;
            break;
        default:
            return usage_error(usage_attest, "unknown option");
        }
    }
    if (argc - optind != 2)
        return usage_error(usage_attest, "attest needs DIR and NAME");
    if (!have_program || descriptor == NULL || measure_count == 0)
        return usage_error(usage_attest, "attest needs --program, --descriptor and at least one --measure");
    const char *dir = argv[optind], *name = argv[optind + 1];

    int rc = 1;
    idevs_identity *aa = NULL, *id = NULL;
    X509 *aa_cert = NULL, *cert = NULL;
    idevs_evidence ev;
    memset(&ev, 0, sizeof ev);
    idevs_err err = idevs_identity_generate(&program, name, &id);
    if (err != IDEVS_OK) {
        rc = usage_error(usage_attest, "'%s' is not a valid name ([A-Za-z0-9._-], 1 to %d characters)", name,
                         IDEVS_NAME_MAX);
        goto done;
    }
    if (measure_files(measure, measure_count, ev.measurement) != 0 || digest_file(descriptor, ev.descriptor_digest) != 0)
        goto done;
    if (load_identity(dir, "authority", &aa, &aa_cert) != 0)
        goto done;
    ev.backend = IDEVS_BACKEND_PROCESS;
    ev.program_uuid = program;
    ev.issued_at = (uint64_t)time(NULL);
    ev.nonce_len = 32;
    ev.flags = debug ? IDEVS_EVIDENCE_FLAG_DEBUG : 0;
    if (idevs_random(ev.nonce, ev.nonce_len) != IDEVS_OK ||
        idevs_key_binding(idevs_identity_sign_public(id), idevs_identity_kex_public(id), ev.key_binding) != IDEVS_OK) {
        err_msg("generating the evidence failed");
        goto done;
    }
    if ((err = idevs_cert_issue_compartment(aa, aa_cert, id, &ev, (unsigned)validity, &cert)) != IDEVS_OK) {
        err_msg("issuing the compartment certificate for '%s' failed: %s", name, idevs_strerror(err));
        goto done;
    }
    if (issue_and_write(dir, name, id, cert, aa_cert) != 0)
        goto done;
    char text[IDEVS_UUID_STR_LEN], m[2 * IDEVS_SHA256_LEN + 1], d[2 * IDEVS_SHA256_LEN + 1];
    idevs_uuid_format(&program, text);
    idevs_hex_encode(ev.measurement, IDEVS_SHA256_LEN, m);
    idevs_hex_encode(ev.descriptor_digest, IDEVS_SHA256_LEN, d);
    printf("%s\nmeasurement %s\ndescriptor-digest %s\n", text, m, d);
    rc = 0;
done:
    X509_free(cert);
    X509_free(aa_cert);
    idevs_identity_free(aa);
    idevs_identity_free(id);
    return rc;
}

/* ---- verify and show ---- */

/* Reads up to IDEVS_CHAIN_MAX PEM certificates with the one chain reader (idevs_cert_read_chain_file: PEM
 * CERTIFICATE blocks and white space only); returns the count, 0 on failure (after a message). */
static size_t read_chain(const char *path, X509 **certs)
{
    char why[384];
    size_t n = 0;
    if (idevs_cert_read_chain_file_x509(path, certs, IDEVS_CHAIN_MAX, &n, why, sizeof why) != IDEVS_OK) {
        err_msg("cannot read %s", why);
        return 0;
    }
    return n;
}

static void print_evidence(const char *indent, const idevs_evidence *ev)
{
    char m[65], d[65], b[65], nonce[2 * IDEVS_EVIDENCE_NONCE_MAX + 1], u[IDEVS_UUID_STR_LEN], when[64];
    idevs_hex_encode(ev->measurement, 32, m);
    idevs_hex_encode(ev->descriptor_digest, 32, d);
    idevs_hex_encode(ev->key_binding, 32, b);
    idevs_hex_encode(ev->nonce, ev->nonce_len, nonce);
    idevs_uuid_format(&ev->program_uuid, u);
    time_t t = (time_t)ev->issued_at;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(when, sizeof when, "%llu", (unsigned long long)ev->issued_at);
    const char *bn = idevs_backend_name(ev->backend);
    printf("%sbackend: %s%s\n", indent, bn != NULL ? bn : "unknown",
           ev->backend == IDEVS_BACKEND_PROCESS ? " (no hardware isolation; signed by the launcher)" : "");
    printf("%smeasurement: %s\n", indent, m);
    printf("%sprogram: urn:uuid:%s\n", indent, u);
    printf("%sdescriptor digest: %s\n", indent, d);
    printf("%skey binding: %s\n", indent, b);
    printf("%sissued at: %s\n", indent, when);
    printf("%snonce: %s\n", indent, nonce);
    printf("%sflags: 0x%x%s\n", indent, ev->flags, (ev->flags & IDEVS_EVIDENCE_FLAG_DEBUG) ? " (debug)" : "");
    printf("%shardware report: %zu bytes\n", indent, ev->hardware_report_len);
}

static int cmd_verify(int argc, char **argv)
{
    /* Option names equal the idevs_cert_policy_apply() settings, plus --time. */
    static const struct option opts[] = {{"ca", required_argument, NULL, 1},
                                         {"require-evidence", no_argument, NULL, 1},
                                         {"allow-backend", required_argument, NULL, 1},
                                         {"allow-process-backend-insecure", no_argument, NULL, 1},
                                         {"allow-debug-insecure", no_argument, NULL, 1},
                                         {"measurement", required_argument, NULL, 1},
                                         {"descriptor-digest", required_argument, NULL, 1},
                                         {"descriptor", required_argument, NULL, 1},
                                         {"program", required_argument, NULL, 1},
                                         {"nonce", required_argument, NULL, 1},
                                         {"time", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    idevs_cert_policy *policy = idevs_cert_policy_new();
    if (policy == NULL) {
        err_msg("out of memory");
        return 1;
    }
    bool have_ca = false;
    int c, idx = 0, rc = 1;
    char why[512];
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        if (c == 1) {
            const char *name = opts[idx].name;
            if (idevs_cert_policy_apply(policy, name, opts[idx].has_arg ? optarg : NULL, why, sizeof why) !=
                IDEVS_OK) {
                err_msg("%s", why);
                idevs_cert_policy_free(policy);
                return strcmp(name, "ca") == 0 || strcmp(name, "descriptor") == 0 ? 1 : EXIT_USAGE;
            }
            have_ca |= strcmp(name, "ca") == 0;
        } else if (c == 't') {
            unsigned long at = 0;
            if (!parse_uint(optarg, LONG_MAX, &at)) {
                idevs_cert_policy_free(policy);
                return usage_error(usage_verify, "--time: '%s' is not a number of seconds since 1970", optarg);
            }
            idevs_cert_policy_set_time(policy, (time_t)at);
        } else {
            idevs_cert_policy_free(policy);
            return usage_error(usage_verify, "unknown option");
        }
    }
    if (!have_ca || argc - optind != 1) {
        idevs_cert_policy_free(policy);
        return usage_error(usage_verify, "verify needs --ca CA.crt and one CHAIN.crt");
    }
    const char *path = argv[optind];
    X509 *certs[IDEVS_CHAIN_MAX];
    uint8_t *der[IDEVS_CHAIN_MAX] = {NULL};
    size_t len[IDEVS_CHAIN_MAX] = {0};
    size_t n = read_chain(path, certs);
    if (n == 0) {
        idevs_cert_policy_free(policy);
        return 1;
    }
    bool ok = true;
    for (size_t i = 0; i < n; i++)
        ok = ok && idevs_cert_to_der(certs[i], &der[i], &len[i]) == IDEVS_OK;
    if (!ok) {
        err_msg("cannot encode the certificates of %s", path);
    } else {
        idevs_cert_info info;
        idevs_err err = idevs_cert_verify(policy, (const uint8_t *const *)der, len, n, &info, why, sizeof why);
        if (err == IDEVS_OK) {
            char u[IDEVS_UUID_STR_LEN];
            idevs_uuid_format(&info.uuid, u);
            printf("OK: %s urn:uuid:%s\n", info.name, u);
            if (info.has_evidence)
                print_evidence("  ", &info.evidence);
            rc = 0;
        } else {
            printf("FAILED (%s): %s\n", idevs_err_name(err), why);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(der[i]);
        X509_free(certs[i]);
    }
    idevs_cert_policy_free(policy);
    return rc;
}

static void print_time(const char *label, const ASN1_TIME *t)
{
    struct tm tm;
    char buf[64];
    if (t != NULL && ASN1_TIME_to_tm(t, &tm) == 1 && strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm) > 0)
        printf("%s%s\n", label, buf);
    else
        printf("%s(unreadable)\n", label);
}

static void print_name(const char *label, const X509_NAME *name)
{
    char buf[256];
    X509_NAME_oneline(name, buf, sizeof buf);
    for (char *p = buf; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    printf("%s%s\n", label, buf);
}

/* The single extension with this OID, as an OCTET STRING's content; NULL if absent or malformed. */
static ASN1_OCTET_STRING *octets_ext(X509 *x, const char *oid)
{
    ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
    int pos = obj != NULL ? X509_get_ext_by_OBJ(x, obj, -1) : -1;
    ASN1_OBJECT_free(obj);
    if (pos < 0)
        return NULL;
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(X509_get_ext(x, pos));
    const unsigned char *p = ASN1_STRING_get0_data(v);
    return d2i_ASN1_OCTET_STRING(NULL, &p, ASN1_STRING_length(v));
}

static int cmd_show(int argc, char **argv)
{
    if (argc != 2)
        return usage_error(usage_show, "show needs exactly one CERT");
    const char *path = argv[1];
    X509 *certs[IDEVS_CHAIN_MAX];
    size_t n = read_chain(path, certs);
    if (n == 0)
        return 1;
    X509 *x = certs[0];
    char h[65];
    uint8_t digest[32], raw[32];

    print_name("subject: ", X509_get_subject_name(x));
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        int type = 0;
        ASN1_STRING *s = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names, i), &type);
        if (type == GEN_URI)
            printf("name: %.*s\n", ASN1_STRING_length(s), (const char *)ASN1_STRING_get0_data(s));
    }
    GENERAL_NAMES_free(names);
    print_name("issuer: ", X509_get_issuer_name(x));
    print_time("not before: ", X509_get0_notBefore(x));
    print_time("not after: ", X509_get0_notAfter(x));
    int ca = X509_check_ca(x);
    printf("kind: %s\n", ca != 0 ? "CA" : "identity (CA:FALSE)");
    EVP_PKEY *key = X509_get0_pubkey(x);
    if (key != NULL && EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 && idevs_raw_public(key, raw) == IDEVS_OK &&
        idevs_sha256(raw, 32, digest) == IDEVS_OK) {
        idevs_hex_encode(digest, 32, h);
        printf("signing key (Ed25519) SHA-256: %s\n", h);
    } else {
        printf("signing key: not Ed25519\n");
    }
    ASN1_OCTET_STRING *ak = octets_ext(x, IDEVS_OID_AGREEMENT_KEY);
    if (ak != NULL && ASN1_STRING_length(ak) == 32 && idevs_sha256(ASN1_STRING_get0_data(ak), 32, digest) == IDEVS_OK) {
        idevs_hex_encode(digest, 32, h);
        printf("agreement key (X25519) SHA-256: %s\n", h);
    } else {
        printf("agreement key: %s\n", ak != NULL ? "malformed" : "none");
    }
    ASN1_OCTET_STRING_free(ak);
    unsigned char *der = NULL;
    int der_len = i2d_X509(x, &der);
    if (der_len > 0 && idevs_sha256(der, (size_t)der_len, digest) == IDEVS_OK) {
        idevs_hex_encode(digest, 32, h);
        printf("certificate SHA-256: %s (%d bytes)\n", h, der_len);
    }
    OPENSSL_free(der);
    idevs_evidence ev;
    idevs_err err = idevs_cert_read_evidence(x, &ev);
    if (err == IDEVS_OK) {
        printf("evidence:\n");
        print_evidence("  ", &ev);
    } else if (err == IDEVS_ERR_EVIDENCE_MISSING) {
        printf("evidence: none\n");
    } else {
        printf("evidence: malformed (%s)\n", idevs_strerror(err));
    }
    if (n > 1)
        printf("(%s holds %zu more certificate%s after this one)\n", path, n - 1, n > 2 ? "s" : "");
    for (size_t i = 0; i < n; i++)
        X509_free(certs[i]);
    ERR_clear_error();
    return 0;
}

/* ---- tpm enrollment ---- */

static int read_input(const char *path, const char *what, unsigned flags, uint8_t **data, size_t *len)
{
    idevs_file_rules rules = {what, 1, 2 * IDEVS_TPM_ENROLL_MAX + 256, flags, 0};
    char why[512];
    if (idevs_file_read(AT_FDCWD, path, &rules, data, len, why, sizeof why) != IDEVS_OK) {
        err_msg("%s", why);
        return 1;
    }
    return 0;
}

/* A new file (refused when it exists) of mode. */
static int write_new(const char *path, const uint8_t *data, size_t len, mode_t mode)
{
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        err_msg("cannot create %s: %s%s", path, strerror(errno), errno == EEXIST ? " (refusing to overwrite)" : "");
        return 1;
    }
    bool ok = idevs_file_write_all(fd, data, len) == IDEVS_OK;
    ok = close(fd) == 0 && ok;
    if (!ok) {
        err_msg("cannot write %s", path);
        unlink(path);
        return 1;
    }
    return 0;
}

static int cmd_tpm_challenge(int argc, char **argv)
{
    static const struct option opts[] = {{"ek-roots", required_argument, NULL, 'e'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"pending", required_argument, NULL, 'p'},
                                         {NULL, 0, NULL, 0}};
    const char *roots_path = NULL, *out = NULL, *pending_path = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'e')
            roots_path = optarg;
        else if (c == 'o')
            out = optarg;
        else if (c == 'p')
            pending_path = optarg;
        else
            return usage_error(usage_tpm_challenge, "unknown option");
    }
    if (argc - optind != 2 || roots_path == NULL || out == NULL || pending_path == NULL)
        return usage_error(usage_tpm_challenge, "tpm-challenge needs DIR, REQUEST, --ek-roots, --out and --pending");
    const char *paths[] = {out, pending_path};
    if (refuse_existing(paths, 2) != 0)
        return 1;
    char why[512];
    X509_STORE *roots = NULL;
    uint8_t *req = NULL, *ch = NULL, *pd = NULL;
    size_t req_len = 0, ch_len = 0, pd_len = 0;
    int rc = 1;
    if (idevs_tpm_ek_roots_load(roots_path, &roots, why, sizeof why) != IDEVS_OK) {
        err_msg("--ek-roots: %s", why);
        goto done;
    }
    if (read_input(argv[optind + 1], "enrollment request", 0, &req, &req_len) != 0)
        goto done;
    idevs_err err = idevs_tpm_enroll_challenge(roots, req, req_len, &ch, &ch_len, &pd, &pd_len, why, sizeof why);
    if (err != IDEVS_OK) {
        err_msg("%s: refused (%s): %s", argv[optind + 1], idevs_err_name(err), why);
        goto done;
    }
    if (write_new(pending_path, pd, pd_len, 0600) != 0)
        goto done;
    if (write_new(out, ch, ch_len, 0644) != 0) {
        unlink(pending_path);
        goto done;
    }
    rc = 0;
done:
    if (pd != NULL)
        idevs_cleanse(pd, pd_len);
    free(pd);
    free(ch);
    free(req);
    X509_STORE_free(roots);
    return rc;
}

static int cmd_tpm_issue(int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"issuer", required_argument, NULL, 'i'},
                                         {"days", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL, *issuer = "ca";
    unsigned long days = 365;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'o')
            out = optarg;
        else if (c == 'i')
            issuer = optarg;
        else if (c == 'd') {
            if (!parse_uint(optarg, 36500, &days))
                return usage_error(usage_tpm_issue, "--days: '%s' is not a number of days from 1 to 36500", optarg);
        } else
            return usage_error(usage_tpm_issue, "unknown option");
    }
    if (argc - optind != 3 || out == NULL)
        return usage_error(usage_tpm_issue, "tpm-issue needs DIR, PENDING, RESPONSE and --out");
    if (!idevs_name_valid(issuer))
        return usage_error(usage_tpm_issue, "--issuer: '%s' is not a valid name", issuer);
    const char *paths[] = {out};
    if (refuse_existing(paths, 1) != 0)
        return 1;
    char why[512];
    uint8_t *pd = NULL, *resp = NULL;
    size_t pd_len = 0, resp_len = 0;
    idevs_identity *ca = NULL;
    X509 *ca_cert = NULL, *ak = NULL;
    int rc = 1;
    if (read_input(argv[optind + 1], "pending file", IDEVS_FILE_PRIVATE | IDEVS_FILE_SECRET, &pd, &pd_len) != 0 ||
        read_input(argv[optind + 2], "enrollment response", 0, &resp, &resp_len) != 0 ||
        load_identity(argv[optind], issuer, &ca, &ca_cert) != 0)
        goto done;
    idevs_err err = idevs_tpm_enroll_issue(pd, pd_len, resp, resp_len, ca, ca_cert, (unsigned)days, &ak, why,
                                           sizeof why);
    if (err != IDEVS_OK) {
        err_msg("%s: refused (%s): %s", argv[optind + 2], idevs_err_name(err), why);
        goto done;
    }
    X509 *certs[1] = {ak};
    if (write_certs(out, certs, 1) != 0)
        goto done;
    rc = 0;
done:
    if (pd != NULL)
        idevs_cleanse(pd, pd_len);
    free(pd);
    if (resp != NULL)
        idevs_cleanse(resp, resp_len);
    free(resp);
    X509_free(ak);
    X509_free(ca_cert);
    idevs_identity_free(ca);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_main, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_main, stdout);
        return 0;
    }
    static const struct {
        const char *name;
        int (*run)(int, char **);
        const char *usage;
    } cmds[] = {{"init", cmd_init, usage_init},
                {"service", cmd_service, usage_service},
                {"attest", cmd_attest, usage_attest},
                {"verify", cmd_verify, usage_verify},
                {"show", cmd_show, usage_show},
                {"measure", cmd_measure, usage_measure},
                {"tpm-challenge", cmd_tpm_challenge, usage_tpm_challenge},
                {"tpm-issue", cmd_tpm_issue, usage_tpm_issue}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(cmd, cmds[i].name) == 0) {
            if (wants_help(argc - 1, argv + 1)) {
                fputs(cmds[i].usage, stdout);
                return 0;
            }
            return cmds[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "%s: unknown command '%s'\n%s", prog, cmd, usage_main);
    return EXIT_USAGE;
}

/* The tpm backend's evidence (certs/tpm_quote.c), verified against real quotes: the suite starts its own swtpm in a
 * temporary directory, manufactured with an EK certificate from a private swtpm-localca (the vendor root), makes
 * an ECDSA P-256 restricted signing AK under the EK, enrolls it (certs/tpm_enroll.c, with
 * tpm2_activatecredential), quotes with tpm2-tools, issues compartment certificates, and checks each refusal
 * with its own error. Every verdict is also asked of tests/interop/idevs_tpm.py, an independent verifier written
 * from docs/PROTOCOL.md, which must agree. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "fixtures.h"
#include "harness.h"
#include "idevs_cert.h"
#include "idevs_hex.h"
#include "idevs_identity.h"
#include "idevs_tpm.h"
#include "tpm.pb-c.h"

#define LOG_MAX 48 /* events fit the certificate size limit (IDEVS_CERT_MAX) well below 60 */
#define SEL_MAX 24
#define REG 15       /* the register of most cases; 13 and 14 are spoilt by the reset and extend cases */

typedef struct tev {
    uint8_t m[32];
    idevs_uuid prog;
    uint8_t d[32];
    uint8_t kb[32];
} tev;

/* What goes into a TpmReport; cases alter a field before it is encoded. */
typedef struct parts {
    uint8_t attest[1024];
    size_t attest_len;
    uint8_t sig[256];
    size_t sig_len;
    unsigned sel[SEL_MAX];
    size_t n_sel;
    uint8_t pcr[SEL_MAX][32]; /* values of sel[i] */
    unsigned reg;
    tev log[LOG_MAX];
    size_t n_log;
    uint8_t *ak;
    size_t ak_len;
    uint32_t version;
} parts;

/* One compartment and its evidence. */
typedef struct scene {
    idevs_identity *id;
    idevs_evidence ev;
    tev self;
    parts p;
} scene;

static char dir[] = "/tmp/idevs-test-tpm-XXXXXX";
static pid_t swtpm_pid = -1;
static fixture_pki pki, other_pki;
static EVP_PKEY *ak_key;
static uint8_t *ak_cert, *other_ak_cert;
static size_t ak_cert_len, other_ak_cert_len;
static tev glog[SEL_MAX][LOG_MAX]; /* what each PCR was extended with since the swtpm started */
static size_t glog_n[SEL_MAX];
static uint8_t M[32], D[32];
static char script[512]; /* tests/interop/idevs_tpm.py */

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A tpm2-tools command in dir against the suite's swtpm; transient objects flushed after it (the swtpm has no
 * resource manager). 0 on success; otherwise the command's output is printed. */
static int run(const char *fmt, ...)
{
    char cmd[2048], sh[2600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(sh, sizeof sh, "cd %s && { %s; } >out.txt 2>&1; rc=$?; tpm2_flushcontext -t >/dev/null 2>&1; exit $rc",
             dir, cmd);
    int rc = system(sh);
    if (rc != 0) {
        char out[400];
        snprintf(out, sizeof out, "cat %s/out.txt >&2", dir);
        fprintf(stderr, "failed (%d): %s\n", rc, cmd);
        if (system(out) != 0)
            fprintf(stderr, "(no output)\n");
    }
    return rc;
}

static size_t slurp(const char *name, uint8_t *buf, size_t cap)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    idevs_hex_encode(b, n, out);
}

static int start_swtpm(void)
{
    char state[128], server[200], ctrl[200], sock[160], csock[160];
    snprintf(state, sizeof state, "dir=%s/state", dir);
    snprintf(sock, sizeof sock, "%s/tpm", dir);
    snprintf(csock, sizeof csock, "%s/tpm.ctrl", dir);
    snprintf(server, sizeof server, "type=unixio,path=%s", sock);
    snprintf(ctrl, sizeof ctrl, "type=unixio,path=%s", csock);
    swtpm_pid = fork();
    if (swtpm_pid < 0)
        return -1;
    if (swtpm_pid == 0) {
        char logpath[160];
        snprintf(logpath, sizeof logpath, "%s/swtpm.log", dir);
        if (freopen(logpath, "w", stderr) == NULL)
            _exit(126);
        execlp("swtpm", "swtpm", "socket", "--tpm2", "--tpmstate", state, "--server", server, "--ctrl", ctrl,
               "--flags", "not-need-init,startup-clear", (char *)NULL);
        _exit(127);
    }
    /* Ready when both sockets exist; bounded, and an early exit is a failure. */
    struct stat st;
    for (int i = 0; i < 1000; i++) {
        if (stat(sock, &st) == 0 && stat(csock, &st) == 0)
            return 0;
        if (waitpid(swtpm_pid, NULL, WNOHANG) == swtpm_pid) {
            swtpm_pid = -1;
            return -1;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static int write_file(const char *name, const uint8_t *data, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t n = fwrite(data, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

/* Manufacturing: the TPM's state with an RSA EK certificate from a vendor CA in dir/vendor (both PCR banks). */
static int manufacture(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/state", dir);
    if (mkdir(path, 0700) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/vendor", dir);
    if (mkdir(path, 0700) != 0)
        return -1;
    return run("printf 'statedir = %s/vendor\nsigningkey = %s/vendor/signkey.pem\n"
               "issuercert = %s/vendor/issuercert.pem\ncertserial = %s/vendor/certserial\n' >vendor/localca.conf && "
               "echo '--platform-manufacturer idevs-test' >vendor/localca.options && "
               "printf 'create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s/vendor/localca.conf\n"
               "create_certs_tool_options = %s/vendor/localca.options\nactive_pcr_banks = sha1,sha256\n' "
               ">vendor/setup.conf && "
               "swtpm_setup --tpm2 --tpmstate %s/state --create-ek-cert --config %s/vendor/setup.conf && "
               "mkdir roots && cp vendor/swtpm-localca-rootca-cert.pem vendor/issuercert.pem roots/",
               dir, dir, dir, dir, dir, dir, dir, dir);
}

static uint8_t *cert_der(X509 *x, size_t *len)
{
    uint8_t *der = NULL;
    if (idevs_cert_to_der(x, &der, len) != IDEVS_OK)
        return NULL;
    return der;
}

/* Enrollment as docs/BACKENDS.md describes it, host and operator in one: the request, the operator's challenge
 * (idevs_tpm_enroll_challenge), TPM2_ActivateCredential by the TPM, the AK certificate (idevs_tpm_enroll_issue). */
static int enroll(X509 **ak_x509)
{
    uint8_t ek[2048], ak_pub[512];
    size_t ek_len = slurp("ek.der", ek, sizeof ek), ak_len = slurp("ak.pub", ak_pub, sizeof ak_pub);
    if (ek_len == 0 || ak_len < 3)
        return -1;
    Idevs__V1__TpmEnrollRequest req = IDEVS__V1__TPM_ENROLL_REQUEST__INIT;
    req.version = 1;
    req.host = (char *)"host-1";
    req.ek_certificate = (ProtobufCBinaryData){ek_len, ek};
    req.ak_public = (ProtobufCBinaryData){ak_len - 2, ak_pub + 2}; /* the TPM2B_PUBLIC's buffer */
    uint8_t request[4096];
    size_t request_len = idevs__v1__tpm_enroll_request__get_packed_size(&req);
    if (request_len > sizeof request || idevs__v1__tpm_enroll_request__pack(&req, request) != request_len)
        return -1;
    char path[256], why[512];
    snprintf(path, sizeof path, "%s/roots", dir);
    X509_STORE *roots = NULL;
    uint8_t *challenge = NULL, *pending = NULL;
    size_t challenge_len = 0, pending_len = 0;
    if (idevs_tpm_ek_roots_load(path, &roots, why, sizeof why) != IDEVS_OK ||
        idevs_tpm_enroll_challenge(roots, request, request_len, &challenge, &challenge_len, &pending, &pending_len,
                                   why, sizeof why) != IDEVS_OK) {
        fprintf(stderr, "enrollment: %s\n", why);
        return -1;
    }
    X509_STORE_free(roots);
    /* The challenge as tpm2_activatecredential reads it: magic 0xBADCC0DE, version 1, the two TPM2B. */
    Idevs__V1__TpmEnrollChallenge *ch = idevs__v1__tpm_enroll_challenge__unpack(NULL, challenge_len, challenge);
    uint8_t file[1024] = {0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1};
    size_t at = 8;
    int rc = ch != NULL && at + ch->credential_blob.len + ch->encrypted_secret.len <= sizeof file ? 0 : -1;
    if (rc == 0) {
        memcpy(file + at, ch->credential_blob.data, ch->credential_blob.len);
        at += ch->credential_blob.len;
        memcpy(file + at, ch->encrypted_secret.data, ch->encrypted_secret.len);
        at += ch->encrypted_secret.len;
        rc = write_file("cred.in", file, at);
    }
    idevs__v1__tpm_enroll_challenge__free_unpacked(ch, NULL);
    free(challenge);
    if (rc != 0 || run("tpm2_startauthsession --policy-session -S session.ctx") != 0 ||
        run("tpm2_policysecret -S session.ctx -c e") != 0 ||
        run("tpm2_activatecredential -c ak.ctx -C ek.ctx -i cred.in -o cred.out -P session:session.ctx") != 0 ||
        run("tpm2_flushcontext session.ctx") != 0)
        rc = -1;
    uint8_t credential[64], response[128];
    size_t credential_len = rc == 0 ? slurp("cred.out", credential, sizeof credential) : 0;
    Idevs__V1__TpmEnrollResponse resp = IDEVS__V1__TPM_ENROLL_RESPONSE__INIT;
    resp.version = 1;
    resp.credential = (ProtobufCBinaryData){credential_len, credential};
    size_t response_len = idevs__v1__tpm_enroll_response__pack(&resp, response);
    if (rc == 0 && idevs_tpm_enroll_issue(pending, pending_len, response, response_len, pki.ca, pki.ca_cert, 30,
                                          ak_x509, why, sizeof why) != IDEVS_OK) {
        fprintf(stderr, "enrollment: %s\n", why);
        rc = -1;
    }
    idevs_cleanse(pending, pending_len);
    free(pending);
    return rc;
}

static int suite_init(void)
{
    if (mkdtemp(dir) == NULL)
        return -1;
    char tcti[200];
    snprintf(tcti, sizeof tcti, "swtpm:path=%s/tpm", dir);
    setenv("TPM2TOOLS_TCTI", tcti, 1);
    if (manufacture() != 0 || start_swtpm() != 0) {
        fprintf(stderr, "cannot manufacture or start swtpm\n");
        return -1;
    }
    /* The host's EK, its certificate, and the AK: ECDSA P-256, restricted signing, fixed to this TPM, under the EK. */
    if (run("tpm2_nvread 0x01c00002 -o ek.der") != 0 || run("tpm2_createek -c ek.ctx -G rsa -u ek.pub") != 0 ||
        run("tpm2_createak -C ek.ctx -c ak.ctx -G ecc -g sha256 -s ecdsa -u ak.pub -n ak.name") != 0 ||
        run("tpm2_readpublic -c ak.ctx -f der -o ak.der") != 0)
        return -1;
    uint8_t der[512];
    size_t n = slurp("ak.der", der, sizeof der);
    const unsigned char *p = der;
    ak_key = d2i_PUBKEY(NULL, &p, (long)n);
    if (ak_key == NULL)
        return -1;
    fixture_pki_init(&pki);
    fixture_pki_init(&other_pki);
    X509 *x = NULL, *y = NULL;
    /* The operator's AK certificate comes from enrollment; the other CA's is issued directly. */
    if (enroll(&x) != 0 ||
        idevs_tpm_issue_ak_cert(other_pki.ca, other_pki.ca_cert, ak_key, "host-1", 30, &y) != IDEVS_OK)
        return -1;
    ak_cert = cert_der(x, &ak_cert_len);
    other_ak_cert = cert_der(y, &other_ak_cert_len);
    X509_free(x);
    X509_free(y);
    size_t len = 0;
    uint8_t *ca = cert_der(pki.ca_cert, &len), *other = NULL;
    int w = ca != NULL ? write_file("ca.der", ca, len) : -1;
    other = cert_der(other_pki.ca_cert, &len);
    w |= other != NULL ? write_file("other-ca.der", other, len) : -1;
    free(ca);
    free(other);
    if (w != 0)
        return -1;
    /* The tests run in tests/unit (meson's workdir), or with IDEVS_SOURCE_ROOT set. */
    const char *root = getenv("IDEVS_SOURCE_ROOT");
    snprintf(script, sizeof script, "%s/interop/idevs_tpm.py", root != NULL ? root : "..");
    if (root != NULL)
        snprintf(script, sizeof script, "%s/tests/interop/idevs_tpm.py", root);
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "cannot find %s\n", script);
        return -1;
    }
    memset(M, 0x4d, sizeof M);
    memset(D, 0x44, sizeof D);
    return ak_cert != NULL && other_ak_cert != NULL ? 0 : -1;
}

static int suite_clean(void)
{
    if (swtpm_pid > 0) {
        kill(swtpm_pid, SIGTERM);
        waitpid(swtpm_pid, NULL, 0);
    }
    fixture_pki_free(&pki);
    fixture_pki_free(&other_pki);
    EVP_PKEY_free(ak_key);
    free(ak_cert);
    free(other_ak_cert);
    harness_remove_tree(dir);
    return 0;
}

/* ---- making evidence ---- */

static void extend_digest(unsigned reg, const uint8_t digest[32])
{
    char h[65];
    hex(digest, 32, h);
    CU_ASSERT_FATAL(run("tpm2_pcrextend %u:sha256=%s", reg, h) == 0);
}

/* Extends reg with the event and records it in that PCR's log. */
static void extend(unsigned reg, const tev *e)
{
    uint8_t digest[32];
    CU_ASSERT_FATAL(idevs_tpm_event_digest(e->m, &e->prog, e->d, e->kb, digest) == IDEVS_OK);
    extend_digest(reg, digest);
    CU_ASSERT_FATAL(glog_n[reg] < LOG_MAX);
    glog[reg][glog_n[reg]++] = *e;
}

/* Quotes the PCRs of sel ("0,1,...") with qualifying data qual, and reads their values. */
static void quote(const char *sel, const uint8_t qual[64], parts *p)
{
    char q[129];
    hex(qual, 64, q);
    CU_ASSERT_FATAL(run("tpm2_quote -c ak.ctx -l sha256:%s -q %s -m attest.bin -s sig.bin -g sha256", sel, q) == 0);
    CU_ASSERT_FATAL(run("tpm2_pcrread sha256:%s -o pcrs.bin", sel) == 0);
    p->attest_len = slurp("attest.bin", p->attest, sizeof p->attest);
    p->sig_len = slurp("sig.bin", p->sig, sizeof p->sig);
    CU_ASSERT_FATAL(p->attest_len > 0 && p->sig_len > 0);
    p->n_sel = 0;
    for (const char *s = sel; *s != '\0';) {
        char *end;
        p->sel[p->n_sel++] = (unsigned)strtoul(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
    }
    uint8_t vals[SEL_MAX * 32];
    CU_ASSERT_FATAL(slurp("pcrs.bin", vals, sizeof vals) == p->n_sel * 32);
    memcpy(p->pcr, vals, p->n_sel * 32);
}

/* A fresh compartment whose event is extended into reg (after another compartment's, as on a busy host, when
 * neighbour) and a quote of PCRs 0-7 and reg with its key binding and nonce. */
static void scene_with(scene *sc, unsigned reg, bool neighbour)
{
    memset(sc, 0, sizeof *sc);
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    CU_ASSERT_FATAL(idevs_identity_generate(&prog, "tpm-compartment", &sc->id) == IDEVS_OK);
    idevs_evidence *ev = &sc->ev;
    ev->backend = IDEVS_BACKEND_TPM;
    memcpy(ev->measurement, M, 32);
    ev->program_uuid = prog;
    memcpy(ev->descriptor_digest, D, 32);
    CU_ASSERT_FATAL(idevs_key_binding(idevs_identity_sign_public(sc->id), idevs_identity_kex_public(sc->id),
                                      ev->key_binding) == IDEVS_OK);
    ev->issued_at = (uint64_t)time(NULL);
    ev->nonce_len = IDEVS_TPM_NONCE_LEN;
    CU_ASSERT_FATAL(idevs_random(ev->nonce, ev->nonce_len) == IDEVS_OK);
    memcpy(sc->self.m, M, 32);
    sc->self.prog = prog;
    memcpy(sc->self.d, D, 32);
    memcpy(sc->self.kb, ev->key_binding, 32);

    if (neighbour) {
        tev n;
        idevs_uuid_generate(&n.prog);
        CU_ASSERT_FATAL(idevs_random(n.m, 32) == IDEVS_OK && idevs_random(n.d, 32) == IDEVS_OK &&
                        idevs_random(n.kb, 32) == IDEVS_OK);
        extend(reg, &n);
    }
    extend(reg, &sc->self);

    uint8_t qual[64];
    memcpy(qual, ev->key_binding, 32);
    memcpy(qual + 32, ev->nonce, 32);
    char sel[64];
    snprintf(sel, sizeof sel, "0,1,2,3,4,5,6,7,%u", reg);
    quote(sel, qual, &sc->p);
    sc->p.reg = reg;
    sc->p.n_log = glog_n[reg];
    memcpy(sc->p.log, glog[reg], glog_n[reg] * sizeof(tev));
    sc->p.ak = ak_cert;
    sc->p.ak_len = ak_cert_len;
    sc->p.version = 1;
}

static void scene_new(scene *sc, unsigned reg)
{
    scene_with(sc, reg, false);
}

static void scene_free(scene *sc)
{
    idevs_identity_free(sc->id);
}

static uint8_t *encode_report(const parts *p, size_t *len)
{
    Idevs__V1__TpmReport r = IDEVS__V1__TPM_REPORT__INIT;
    Idevs__V1__TpmPcrValue pv[SEL_MAX], *ppv[SEL_MAX];
    Idevs__V1__TpmEvent ev[LOG_MAX], *pev[LOG_MAX];
    r.version = p->version;
    r.attest = (ProtobufCBinaryData){p->attest_len, (uint8_t *)p->attest};
    r.signature = (ProtobufCBinaryData){p->sig_len, (uint8_t *)p->sig};
    r.register_pcr = p->reg;
    for (size_t i = 0; i < p->n_sel; i++) {
        idevs__v1__tpm_pcr_value__init(&pv[i]);
        pv[i].index = p->sel[i];
        pv[i].value = (ProtobufCBinaryData){32, (uint8_t *)p->pcr[i]};
        ppv[i] = &pv[i];
    }
    r.n_pcrs = p->n_sel;
    r.pcrs = ppv;
    r.ak_certificate = (ProtobufCBinaryData){p->ak_len, p->ak};
    for (size_t i = 0; i < p->n_log; i++) {
        const tev *e = &p->log[i];
        idevs__v1__tpm_event__init(&ev[i]);
        ev[i].measurement = (ProtobufCBinaryData){32, (uint8_t *)e->m};
        ev[i].program_uuid = (ProtobufCBinaryData){16, (uint8_t *)e->prog.b};
        ev[i].descriptor_digest = (ProtobufCBinaryData){32, (uint8_t *)e->d};
        ev[i].key_binding = (ProtobufCBinaryData){32, (uint8_t *)e->kb};
        pev[i] = &ev[i];
    }
    r.n_events = p->n_log;
    r.events = pev;
    *len = idevs__v1__tpm_report__get_packed_size(&r);
    uint8_t *buf = malloc(*len + 8); /* room for a case's extra field */
    CU_ASSERT_FATAL(buf != NULL);
    CU_ASSERT_FATAL(idevs__v1__tpm_report__pack(&r, buf) == *len);
    return buf;
}

/* Issues the compartment certificate carrying report and verifies [leaf, authority] under policy. */
static idevs_err verify_report(const scene *sc, const idevs_evidence *ev, const uint8_t *report, size_t report_len,
                               const idevs_cert_policy *policy, char *why, size_t why_len)
{
    idevs_evidence e = *ev;
    e.hardware_report = report;
    e.hardware_report_len = report_len;
    X509 *leaf = NULL;
    CU_ASSERT_FATAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, sc->id, &e, 600, &leaf) ==
                    IDEVS_OK);
    uint8_t *der[2] = {NULL, NULL};
    size_t len[2];
    CU_ASSERT_FATAL(idevs_cert_to_der(leaf, &der[0], &len[0]) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_cert_to_der(pki.authority_cert, &der[1], &len[1]) == IDEVS_OK);
    CU_ASSERT_FATAL(write_file("leaf.der", der[0], len[0]) == 0); /* for py_agrees */
    idevs_err err = idevs_cert_verify(policy, (const uint8_t *const *)der, len, 2, NULL, why, why_len);
    free(der[0]);
    free(der[1]);
    X509_free(leaf);
    return err;
}

static idevs_err verify_scene(const scene *sc, const idevs_cert_policy *policy, char *why, size_t why_len)
{
    size_t len = 0;
    uint8_t *report = encode_report(&sc->p, &len);
    idevs_err err = verify_report(sc, &sc->ev, report, len, policy, why, why_len);
    free(report);
    return err;
}

/* The independent verifier, on the leaf verify_report wrote last, with the AK CA ca_file (in dir) and the extra
 * arguments (boot PCR sets), gives the verdict C gave. */
static void py_agrees(idevs_err c_err, const char *ca_file, const char *extra)
{
    char cmd[4096], got[64] = "";
    /* Debian's python3, with python3-cryptography and python3-pyasn1-modules, as tests/interop uses. */
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s verify %s/leaf.der %s/%s %s >%s/py.txt 2>&1", script, dir, dir,
             ca_file, extra != NULL ? extra : "", dir);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "%s/py.txt", dir);
    FILE *f = fopen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    if (fgets(got, sizeof got, f) != NULL)
        got[strcspn(got, "\n")] = '\0';
    if (rc != 0) { /* its traceback */
        fprintf(stderr, "\nidevs_tpm.py failed: %s", got);
        char line[256];
        while (fgets(line, sizeof line, f) != NULL)
            fputs(line, stderr);
    }
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    if (strcmp(got, idevs_err_name(c_err)) != 0)
        fprintf(stderr, "\nidevs_tpm.py says '%s', C says '%s'\n", got, idevs_err_name(c_err));
    CU_ASSERT_STRING_EQUAL(got, idevs_err_name(c_err));
}

/* Trusts the operator CA, requires evidence and allows tpm, through the settings a configuration file uses. */
static idevs_cert_policy *tpm_policy(void)
{
    idevs_cert_policy *p = idevs_cert_policy_new();
    CU_ASSERT_FATAL(p != NULL);
    CU_ASSERT_FATAL(idevs_cert_policy_add_ca(p, pki.ca_cert) == IDEVS_OK);
    char why[200];
    CU_ASSERT_FATAL(idevs_cert_policy_apply(p, "require-evidence", NULL, why, sizeof why) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_cert_policy_apply(p, "allow-backend", "tpm", why, sizeof why) == IDEVS_OK);
    return p;
}

/* The scene, verified under the tpm policy, fails with err and a sentence holding phrase. */
static void expect(const scene *sc, idevs_err err, const char *phrase)
{
    idevs_cert_policy *policy = tpm_policy();
    char why[512];
    idevs_err got = verify_scene(sc, policy, why, sizeof why);
    if (got != err || strstr(why, phrase) == NULL)
        fprintf(stderr, "\nexpected %s ('%s'), got %s: %s\n", idevs_err_name(err), phrase, idevs_err_name(got), why);
    CU_ASSERT_EQUAL(got, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, phrase));
    py_agrees(got, "ca.der", NULL);
    idevs_cert_policy_free(policy);
}

/* ---- tests ---- */

static void test_valid_quote(void)
{
    scene sc;
    scene_with(&sc, REG, true);
    expect(&sc, IDEVS_OK, "");
    /* A second compartment on the same register: the log holds both, each certificate finds its own event. */
    scene sc2;
    scene_with(&sc2, REG, true);
    expect(&sc2, IDEVS_OK, "");
    CU_ASSERT(sc2.p.n_log == sc.p.n_log + 2);
    scene_free(&sc);
    scene_free(&sc2);
}

static void test_backend_must_be_allowed(void)
{
    scene sc;
    scene_new(&sc, REG);
    idevs_cert_policy *p = idevs_cert_policy_new();
    CU_ASSERT_FATAL(idevs_cert_policy_add_ca(p, pki.ca_cert) == IDEVS_OK);
    idevs_cert_policy_require_evidence(p, true);
    char why[512];
    CU_ASSERT_EQUAL(verify_scene(&sc, p, why, sizeof why), IDEVS_ERR_BACKEND_NOT_ALLOWED);
    /* Without required evidence the quote is still checked: a broken one is refused all the same. */
    idevs_cert_policy_require_evidence(p, false);
    CU_ASSERT_EQUAL(verify_scene(&sc, p, why, sizeof why), IDEVS_OK);
    sc.p.sig[10] ^= 0x01;
    CU_ASSERT_EQUAL(verify_scene(&sc, p, why, sizeof why), IDEVS_ERR_TPM_SIGNATURE);
    idevs_cert_policy_free(p);
    scene_free(&sc);
}

static void test_another_key_binding(void)
{
    scene sc;
    scene_new(&sc, REG);
    /* The TPM quoted for another compartment's keys; this certificate presents that quote. */
    uint8_t qual[64];
    CU_ASSERT_FATAL(idevs_random(qual, 32) == IDEVS_OK);
    memcpy(qual + 32, sc.ev.nonce, 32);
    quote("0,1,2,3,4,5,6,7,15", qual, &sc.p);
    expect(&sc, IDEVS_ERR_TPM_QUOTE_BINDING, "another key binding");
    scene_free(&sc);
}

static void test_another_measurement(void)
{
    scene sc;
    scene_new(&sc, REG);
    /* The certificate claims a measurement the launcher never recorded. */
    sc.ev.measurement[0] ^= 0xff;
    expect(&sc, IDEVS_ERR_TPM_EVENT_MISSING, "does not record this compartment");
    scene_free(&sc);
}

static void test_register_reset(void)
{
    /* PCR 14 is never extended: it reads as a register reset to zero while the log claims an event. */
    scene sc;
    scene_new(&sc, REG);
    uint8_t qual[64];
    memcpy(qual, sc.ev.key_binding, 32);
    memcpy(qual + 32, sc.ev.nonce, 32);
    quote("0,1,2,3,4,5,6,7,14", qual, &sc.p);
    sc.p.reg = 14;
    expect(&sc, IDEVS_ERR_TPM_LOG_REPLAY, "does not replay to the quoted PCR 14");
    scene_free(&sc);
}

static void test_register_extended_beyond_log(void)
{
    scene sc;
    scene_new(&sc, 13);
    uint8_t stray[32];
    memset(stray, 0x5a, sizeof stray);
    extend_digest(13, stray); /* root extends the register outside the launcher */
    uint8_t qual[64];
    memcpy(qual, sc.ev.key_binding, 32);
    memcpy(qual + 32, sc.ev.nonce, 32);
    quote("0,1,2,3,4,5,6,7,13", qual, &sc.p);
    expect(&sc, IDEVS_ERR_TPM_LOG_REPLAY, "does not replay to the quoted PCR 13");
    scene_free(&sc);
}

static void test_flipped_attest(void)
{
    scene sc;
    scene_new(&sc, REG);
    sc.p.attest[sc.p.attest_len - 1] ^= 0x01; /* the last byte of pcrDigest */
    expect(&sc, IDEVS_ERR_TPM_SIGNATURE, "does not verify");
    sc.p.attest[sc.p.attest_len - 1] ^= 0x01;
    sc.p.attest[0] ^= 0x01; /* the magic */
    expect(&sc, IDEVS_ERR_TPM_SIGNATURE, "does not verify");
    scene_free(&sc);
}

static void test_flipped_signature(void)
{
    scene sc;
    scene_new(&sc, REG);
    sc.p.sig[10] ^= 0x01; /* inside r */
    expect(&sc, IDEVS_ERR_TPM_SIGNATURE, "does not verify");
    sc.p.sig[10] ^= 0x01;
    sc.p.sig[1] ^= 0x01; /* the algorithm: no longer ECDSA */
    expect(&sc, IDEVS_ERR_TPM_SIGNATURE, "signature");
    sc.p.sig[1] ^= 0x01;
    sc.p.sig_len--; /* cut short */
    expect(&sc, IDEVS_ERR_TPM_SIGNATURE, "not a TPMT_SIGNATURE");
    scene_free(&sc);
}

static void test_stale_nonce(void)
{
    scene sc;
    scene_new(&sc, REG);
    /* The quote answers the previous evidence's nonce: the evidence is re-issued with a new one. */
    CU_ASSERT_FATAL(idevs_random(sc.ev.nonce, 32) == IDEVS_OK);
    expect(&sc, IDEVS_ERR_TPM_QUOTE_NONCE, "another nonce");
    scene_free(&sc);
}

static void test_ak_certificate(void)
{
    scene sc;
    scene_new(&sc, REG);
    /* An AK certificate from a CA the verifier does not know. */
    sc.p.ak = other_ak_cert;
    sc.p.ak_len = other_ak_cert_len;
    expect(&sc, IDEVS_ERR_TPM_AK_UNTRUSTED, "not valid under the operator CAs");
    /* Trusted when the policy names that CA as AK CA; the operator CA then no longer issues AKs. */
    idevs_cert_policy *p = tpm_policy();
    char why[512], file[256];
    snprintf(file, sizeof file, "%s/other-ca.pem", dir);
    FILE *f = fopen(file, "w");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(PEM_write_X509(f, other_pki.ca_cert) == 1);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(idevs_cert_policy_apply(p, "tpm-ak-ca", file, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_scene(&sc, p, why, sizeof why), IDEVS_OK);
    py_agrees(IDEVS_OK, "other-ca.der", NULL);
    sc.p.ak = ak_cert;
    sc.p.ak_len = ak_cert_len;
    CU_ASSERT_EQUAL(verify_scene(&sc, p, why, sizeof why), IDEVS_ERR_TPM_AK_UNTRUSTED);
    py_agrees(IDEVS_ERR_TPM_AK_UNTRUSTED, "other-ca.der", NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "policy's AK CAs"));
    idevs_cert_policy_free(p);
    /* A certificate of the operator CA that is not an AK certificate (a service's): refused for the missing mark. */
    idevs_identity *svc = fixture_service(&pki, "store");
    sc.p.ak = (uint8_t *)idevs_identity_chain_der(svc, 0, &sc.p.ak_len);
    expect(&sc, IDEVS_ERR_TPM_AK_UNTRUSTED, "not an idevs attestation key certificate");
    /* Not a certificate at all. */
    uint8_t junk[8] = {0x30, 0x03, 0x02, 0x01, 0x01, 0, 0, 0};
    sc.p.ak = junk;
    sc.p.ak_len = sizeof junk;
    expect(&sc, IDEVS_ERR_EVIDENCE_MALFORMED, "not valid DER");
    idevs_identity_free(svc);
    scene_free(&sc);
}

static void test_log_altered(void)
{
    scene sc;
    scene_with(&sc, REG, true);
    /* An event missing from the log (the neighbour's, before this one). */
    tev saved = sc.p.log[sc.p.n_log - 2];
    sc.p.log[sc.p.n_log - 2] = sc.p.log[sc.p.n_log - 1];
    sc.p.n_log--;
    expect(&sc, IDEVS_ERR_TPM_LOG_REPLAY, "does not replay");
    sc.p.n_log++;
    sc.p.log[sc.p.n_log - 1] = sc.p.log[sc.p.n_log - 2];
    sc.p.log[sc.p.n_log - 2] = saved;
    expect(&sc, IDEVS_OK, "");
    /* A forged entry: the neighbour's measurement changed. */
    sc.p.log[sc.p.n_log - 2].m[5] ^= 0x10;
    expect(&sc, IDEVS_ERR_TPM_LOG_REPLAY, "does not replay");
    sc.p.log[sc.p.n_log - 2].m[5] ^= 0x10;
    /* A forged entry added for a compartment the TPM never recorded. */
    sc.p.log[sc.p.n_log] = sc.p.log[sc.p.n_log - 1];
    sc.p.log[sc.p.n_log].m[0] ^= 1;
    sc.p.n_log++;
    expect(&sc, IDEVS_ERR_TPM_LOG_REPLAY, "does not replay");
    scene_free(&sc);
}

static void pcr_setting(const parts *p, const uint8_t *pcr0, char *out, size_t out_len)
{
    size_t n = 0;
    for (unsigned i = 0; i < 8; i++) {
        char h[65];
        hex(i == 0 && pcr0 != NULL ? pcr0 : p->pcr[i], 32, h);
        n += (size_t)snprintf(out + n, out_len - n, "%s%u=%s", i > 0 ? "," : "", i, h);
    }
}

static void test_boot_pcrs(void)
{
    scene sc;
    scene_new(&sc, REG);
    uint8_t other[32];
    memset(other, 0x11, sizeof other);
    char good[800], bad[800], why[512];
    pcr_setting(&sc.p, NULL, good, sizeof good);
    pcr_setting(&sc.p, other, bad, sizeof bad);

    idevs_cert_policy *p = tpm_policy();
    CU_ASSERT_EQUAL_FATAL(idevs_cert_policy_apply(p, "tpm-pcrs", bad, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_scene(&sc, p, why, sizeof why), IDEVS_ERR_TPM_BOOT_PCRS);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "PCR 0 is"));
    char args[1700];
    snprintf(args, sizeof args, "--pcrs %s", bad);
    py_agrees(IDEVS_ERR_TPM_BOOT_PCRS, "ca.der", args);
    /* Any one set matches: the platform's other firmware version. */
    CU_ASSERT_EQUAL_FATAL(idevs_cert_policy_apply(p, "tpm-pcrs", good, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_scene(&sc, p, why, sizeof why), IDEVS_OK);
    snprintf(args, sizeof args, "--pcrs %s --pcrs %s", bad, good);
    py_agrees(IDEVS_OK, "ca.der", args);
    idevs_cert_policy_free(p);
    /* A set naming only PCR 7 (Secure Boot state). */
    p = tpm_policy();
    char h[65], one[80];
    hex(sc.p.pcr[7], 32, h);
    snprintf(one, sizeof one, "7=%s", h);
    CU_ASSERT_EQUAL_FATAL(idevs_cert_policy_apply(p, "tpm-pcrs", one, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_scene(&sc, p, why, sizeof why), IDEVS_OK);
    snprintf(args, sizeof args, "--pcrs %s", one);
    py_agrees(IDEVS_OK, "ca.der", args);
    idevs_cert_policy_free(p);
    /* The setting's syntax. */
    p = tpm_policy();
    const char *wrong[] = {"", "8=" /* index */, "0=12", "0=zz", "0,1", one /* twice: */};
    for (size_t i = 0; i + 1 < sizeof wrong / sizeof wrong[0]; i++)
        CU_ASSERT_EQUAL(idevs_cert_policy_apply(p, "tpm-pcrs", wrong[i], why, sizeof why), IDEVS_ERR_INVALID_ARG);
    char twice[200];
    snprintf(twice, sizeof twice, "%s,%s", one, one);
    CU_ASSERT_EQUAL(idevs_cert_policy_apply(p, "tpm-pcrs", twice, why, sizeof why), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "PCR 7 given twice"));
    idevs_cert_policy_free(p);
    scene_free(&sc);
}

static void test_pcr_selection_and_digest(void)
{
    scene sc;
    scene_new(&sc, REG);
    uint8_t qual[64];
    memcpy(qual, sc.ev.key_binding, 32);
    memcpy(qual + 32, sc.ev.nonce, 32);
    /* PCR 7 left out of the quote. */
    quote("0,1,2,3,4,5,6,15", qual, &sc.p);
    expect(&sc, IDEVS_ERR_TPM_PCR_SELECTION, "not PCRs 0-7 and the register 15");
    /* The SHA-1 bank. */
    char q[129];
    hex(qual, 64, q);
    quote("0,1,2,3,4,5,6,7,15", qual, &sc.p);
    CU_ASSERT_FATAL(run("tpm2_quote -c ak.ctx -l sha1:0,1,2,3,4,5,6,7,15 -q %s -m attest.bin -s sig.bin -g sha256",
                        q) == 0);
    sc.p.attest_len = slurp("attest.bin", sc.p.attest, sizeof sc.p.attest);
    sc.p.sig_len = slurp("sig.bin", sc.p.sig, sizeof sc.p.sig);
    expect(&sc, IDEVS_ERR_TPM_PCR_SELECTION, "SHA-256 bank");
    /* A listed value that is not the quoted one. */
    quote("0,1,2,3,4,5,6,7,15", qual, &sc.p);
    expect(&sc, IDEVS_OK, "");
    sc.p.pcr[0][0] ^= 1;
    expect(&sc, IDEVS_ERR_TPM_PCR_DIGEST, "do not hash to the quote's PCR digest");
    sc.p.pcr[0][0] ^= 1;
    /* A quoted PCR not listed. */
    sc.p.n_sel--;
    expect(&sc, IDEVS_ERR_EVIDENCE_MALFORMED, "lists 8 PCR values");
    scene_free(&sc);
}

static void test_resettable_register(void)
{
    scene sc;
    scene_new(&sc, REG);
    /* PCR 16 really quoted as the register: refused, software may reset it. */
    extend(16, &sc.self);
    uint8_t qual[64];
    memcpy(qual, sc.ev.key_binding, 32);
    memcpy(qual + 32, sc.ev.nonce, 32);
    quote("0,1,2,3,4,5,6,7,16", qual, &sc.p);
    sc.p.reg = 16;
    sc.p.n_log = glog_n[16];
    memcpy(sc.p.log, glog[16], glog_n[16] * sizeof(tev));
    expect(&sc, IDEVS_ERR_EVIDENCE_MALFORMED, "16 or 23");
    sc.p.reg = 23;
    expect(&sc, IDEVS_ERR_EVIDENCE_MALFORMED, "16 or 23");
    sc.p.reg = 7;
    expect(&sc, IDEVS_ERR_EVIDENCE_MALFORMED, "not one of PCRs 8 to 22");
    scene_free(&sc);
}

/* The AK as enrollment checks it (certs/tpm_enroll.c): the TPM's own TPMT_PUBLIC passes, its name is the TPM's,
 * its key is the one the AK certificate certifies. */
static void test_ak_public(void)
{
    uint8_t pub[512], name[64], ours[IDEVS_TPM_NAME_LEN];
    size_t n = slurp("ak.pub", pub, sizeof pub), name_len = slurp("ak.name", name, sizeof name);
    CU_ASSERT_FATAL(n > 2 && (size_t)(pub[0] << 8 | pub[1]) == n - 2); /* a TPM2B_PUBLIC */
    EVP_PKEY *key = NULL;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(idevs_tpm_ak_check(pub + 2, n - 2, &key, ours, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(name_len, IDEVS_TPM_NAME_LEN);
    CU_ASSERT(memcmp(name, ours, IDEVS_TPM_NAME_LEN) == 0);
    CU_ASSERT_EQUAL(EVP_PKEY_eq(key, ak_key), 1);
    EVP_PKEY_free(key);
    /* One byte more, one byte less, decrypt set: refused. */
    CU_ASSERT_EQUAL(idevs_tpm_ak_check(pub + 2, n - 3, NULL, NULL, why, sizeof why), IDEVS_ERR_TPM_AK_ATTRIBUTES);
    pub[n] = 0;
    CU_ASSERT_EQUAL(idevs_tpm_ak_check(pub + 2, n - 1, NULL, NULL, why, sizeof why), IDEVS_ERR_TPM_AK_ATTRIBUTES);
    /* objectAttributes: after type (2) and nameAlg (2), 4 bytes; decrypt is bit 17. */
    pub[2 + 4 + 1] ^= 0x02;
    CU_ASSERT_EQUAL(idevs_tpm_ak_check(pub + 2, n - 2, NULL, NULL, why, sizeof why), IDEVS_ERR_TPM_AK_ATTRIBUTES);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "decrypt"));
}

static void test_malformed_report(void)
{
    scene sc;
    scene_new(&sc, REG);
    sc.p.version = 2;
    expect(&sc, IDEVS_ERR_EVIDENCE_MALFORMED, "unknown version");
    sc.p.version = 1;
    /* An unknown field (15, varint 1) appended. */
    size_t len = 0;
    uint8_t *report = encode_report(&sc.p, &len);
    report[len++] = 0x78;
    report[len++] = 0x01;
    idevs_cert_policy *p = tpm_policy();
    char why[512];
    CU_ASSERT_EQUAL(verify_report(&sc, &sc.ev, report, len, p, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "unknown field"));
    py_agrees(IDEVS_ERR_EVIDENCE_MALFORMED, "ca.der", NULL);
    /* No report at all. */
    CU_ASSERT_EQUAL(verify_report(&sc, &sc.ev, NULL, 0, p, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "no hardware report"));
    py_agrees(IDEVS_ERR_EVIDENCE_MALFORMED, "ca.der", NULL);
    /* Not a protobuf message. */
    CU_ASSERT_EQUAL(verify_report(&sc, &sc.ev, (const uint8_t *)"\xff\xff\xff", 3, p, why, sizeof why),
                    IDEVS_ERR_EVIDENCE_MALFORMED);
    free(report);
    idevs_cert_policy_free(p);
    /* An empty log; an event of the wrong size is refused as well. */
    sc.p.n_log = 0;
    expect(&sc, IDEVS_ERR_EVIDENCE_MALFORMED, "log is empty");
    /* A 16-byte evidence nonce cannot be the quote's. */
    sc.p.n_log = glog_n[REG];
    sc.ev.nonce_len = 16;
    expect(&sc, IDEVS_ERR_TPM_QUOTE_NONCE, "another nonce");
    scene_free(&sc);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"a real quote verifies, two compartments on one register", test_valid_quote},
        {"tpm must be allowed; the quote is checked even when evidence is not required", test_backend_must_be_allowed},
        {"a quote for another key binding", test_another_key_binding},
        {"another measurement: the event is missing", test_another_measurement},
        {"a reset register", test_register_reset},
        {"a register extended beyond the log", test_register_extended_beyond_log},
        {"a flipped byte in the attest", test_flipped_attest},
        {"a flipped byte in the signature", test_flipped_signature},
        {"a stale nonce", test_stale_nonce},
        {"AK certificates: unknown CA, AK CA setting, no AK mark", test_ak_certificate},
        {"an event missing from or forged in the log", test_log_altered},
        {"expected boot PCR sets", test_boot_pcrs},
        {"the PCR selection and digest", test_pcr_selection_and_digest},
        {"register_pcr 16, 23 or a boot PCR", test_resettable_register},
        {"malformed reports", test_malformed_report},
        {"the AK's public area as enrollment reads it", test_ak_public},
        CU_TEST_INFO_NULL,
    };
    return harness_run_suite("tpm_quote", suite_init, suite_clean, tests);
}

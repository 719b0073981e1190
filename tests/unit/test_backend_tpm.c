/* The tpm backend (enclave-bridge/launcher/backend_tpm.c) and the host's enrollment (tpm_host_enroll.c) against a real
 * software TPM: swtpm started by scripts/lib/swtpm.sh in a temporary directory, manufactured with EK
 * certificates from a CA private to the test; the operator's side is idevs-ca (tpm-challenge, tpm-issue) with a
 * PKI of its own. Without swtpm or tpm2-tools the test fails, saying so.
 *
 * Checked: enrollment (request, activation, install; a challenge for another AK, a certificate of another key),
 * the backend refusing to start unenrolled and with PCR 16, 23 or 7, the evidence's report (quote signature by
 * the AK, TPM_GENERATED, quote type, qualifying data, PCR digest, the log replaying to the register), one event
 * per distinct key binding, a stray event (a crash between append and extend: dropped), a reboot (the log starts
 * again), a register extended behind the launcher's back (refused), a new AK without its certificate, the bound on events per boot, the sizes (report, compartment certificate) at that bound, and the
 * sealing secret kept by the TPM under PCRs 0-7. */
#include <fcntl.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <tss2/tss2_mu.h>

#include "fixtures.h"
#include "harness.h"
#include "idevs_backend.h"
#include "idevs_tpm.h"
#include "idevs_tpm_host.h"
#include "launcher_internal.h"
#include "tpm.pb-c.h"
#include "tpm_internal.h"

#define SWTPM "../../scripts/lib/swtpm.sh"
/* The operator's side of enrollment is idevs-ca (certs/tpm_enroll.c), with a PKI of its own in dir/pki. */
#define CA_TOOL (getenv("IDEVS_CA") != NULL ? getenv("IDEVS_CA") : "idevs-ca")
static char dir[] = "/tmp/idevs-backend-tpm.XXXXXX";
static char tcti[512];
static char state[600];
static const char *descriptor = "{\"descriptor\":\"for the measurement only\"}";

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* swtpm.sh start prints the TCTI string. */
static int start_tpm(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, SWTPM " start %s/tpm", dir);
    FILE *f = popen(cmd, "r");
    if (f == NULL)
        return -1;
    bool got = fgets(tcti, sizeof tcti, f) != NULL;
    int rc = pclose(f);
    tcti[strcspn(tcti, "\n")] = '\0';
    return got && rc == 0 ? 0 : -1;
}

static int init(void)
{
    if (mkdtemp(dir) == NULL)
        return -1;
    for (const char *tool = "swtpm swtpm_setup swtpm_localca tpm2_dictionarylockout"; *tool != '\0';) {
        char name[64];
        size_t n = strcspn(tool, " ");
        snprintf(name, sizeof name, "%.*s", (int)n, tool);
        if (sh("command -v %s >/dev/null", name) != 0) {
            fprintf(stderr, "test_backend_tpm: %s is missing (apt-get install swtpm swtpm-tools tpm2-tools)\n", name);
            return -1;
        }
        tool += n + (tool[n] == ' ');
    }
    snprintf(state, sizeof state, "%s/state", dir);
    if (mkdir(state, 0700) != 0 || sh(SWTPM " setup %s/tpm", dir) != 0 || start_tpm() != 0) {
        fprintf(stderr, "test_backend_tpm: no software TPM (scripts/lib/swtpm.sh)\n");
        return -1;
    }
    /* The operator: a CA, and the TPM vendor's roots the EK certificate chains to. */
    if (sh("'%s' init %s/pki --name tpm-test-ca >/dev/null", CA_TOOL, dir) != 0 ||
        sh("cat %s/tpm/vendor-root.pem %s/tpm/vendor-intermediate.pem >%s/ek-roots.pem", dir, dir, dir) != 0) {
        fprintf(stderr, "test_backend_tpm: the operator's PKI (idevs-ca init, IDEVS_CA)\n");
        return -1;
    }
    return 0;
}

static int clean(void)
{
    sh(SWTPM " stop %s/tpm", dir);
    harness_remove_tree(dir);
    return 0;
}

static int write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *buf = malloc(65536);
    *len = buf != NULL ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    return buf;
}

/* The operator's challenge for the request in dir/NAME.bin: dir/ch-NAME.bin, and its pending file. */
static int challenge(const char *name)
{
    sh("rm -f %s/ch-%s.bin %s/pending-%s.bin", dir, name, dir, name); /* idevs-ca writes new files only */
    return sh("'%s' tpm-challenge %s/pki %s/%s.bin --ek-roots %s/ek-roots.pem --out %s/ch-%s.bin --pending "
              "%s/pending-%s.bin >/dev/null", CA_TOOL, dir, dir, name, dir, dir, name, dir, name);
}

/* request -> operator's challenge (idevs-ca tpm-challenge) -> activation -> the operator checks the credential and
 * issues the AK certificate (idevs-ca tpm-issue) -> installed. */
static void enroll(void)
{
    char why[1024] = "", path[800];
    uint8_t *msg = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(idevs_tpm_enroll_request(tcti, state, "test-host", &msg, &len, why, sizeof why) == IDEVS_OK);
    snprintf(path, sizeof path, "%s/req.bin", dir);
    CU_ASSERT_FATAL(write_file(path, msg, len) == 0);
    free(msg);
    CU_ASSERT_FATAL(challenge("req") == 0);
    snprintf(path, sizeof path, "%s/ch-req.bin", dir);
    uint8_t *ch = read_file(path, &len);
    CU_ASSERT_FATAL(ch != NULL);
    idevs_err err = idevs_tpm_enroll_activate(tcti, state, ch, len, &msg, &len, why, sizeof why);
    if (err != IDEVS_OK)
        fprintf(stderr, "activate: %s\n", why);
    CU_ASSERT_FATAL(err == IDEVS_OK);
    free(ch);
    snprintf(path, sizeof path, "%s/resp.bin", dir);
    CU_ASSERT_FATAL(write_file(path, msg, len) == 0);
    free(msg);
    sh("rm -f %s/ak.crt", dir);
    CU_ASSERT_FATAL(sh("'%s' tpm-issue %s/pki %s/pending-req.bin %s/resp.bin --out %s/ak.crt >/dev/null", CA_TOOL, dir,
                       dir, dir, dir) == 0);
    snprintf(path, sizeof path, "%s/ak.crt", dir);
    uint8_t *cert = read_file(path, &len);
    CU_ASSERT_FATAL(cert != NULL);
    CU_ASSERT_EQUAL(idevs_tpm_enroll_install(state, cert, len, why, sizeof why), IDEVS_OK);
    free(cert);
}

static idevs_err new_backend(unsigned pcr, idevs_backend_impl **b, char *why, size_t why_len)
{
    idevs_tpm_backend_options o = {.state_dir = state, .tcti = tcti, .pcr = pcr};
    return idevs_backend_tpm_new(&o, b, why, why_len);
}

static void test_unenrolled(void)
{
    char why[1024] = "";
    idevs_backend_impl *b = NULL;
    CU_ASSERT_EQUAL(new_backend(15, &b, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "enroll"));
    /* A request made: an AK, but still no certificate. */
    uint8_t *msg = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(idevs_tpm_enroll_request(tcti, state, "test-host", &msg, &len, why, sizeof why) == IDEVS_OK);
    free(msg);
    CU_ASSERT_EQUAL(new_backend(15, &b, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "no AK certificate"));
    CU_ASSERT_EQUAL(idevs_tpm_enroll_request(tcti, state, "bad host!", &msg, &len, why, sizeof why),
                    IDEVS_ERR_INVALID_ARG);
}

static void test_enroll_refusals(void)
{
    char why[1024] = "", path[800];
    uint8_t *msg = NULL;
    size_t len = 0;
    /* A challenge made for one AK does not activate with the next one. */
    CU_ASSERT_FATAL(idevs_tpm_enroll_request(tcti, state, "test-host", &msg, &len, why, sizeof why) == IDEVS_OK);
    snprintf(path, sizeof path, "%s/req-old.bin", dir);
    CU_ASSERT_FATAL(write_file(path, msg, len) == 0);
    free(msg);
    CU_ASSERT_FATAL(challenge("req-old") == 0);
    CU_ASSERT_FATAL(idevs_tpm_enroll_request(tcti, state, "test-host", &msg, &len, why, sizeof why) == IDEVS_OK);
    free(msg);
    snprintf(path, sizeof path, "%s/ch-req-old.bin", dir);
    uint8_t *ch = read_file(path, &len);
    CU_ASSERT_FATAL(ch != NULL);
    CU_ASSERT_EQUAL(idevs_tpm_enroll_activate(tcti, state, ch, len, &msg, &len, why, sizeof why), IDEVS_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "ActivateCredential"));
    free(ch);
    /* The TPM counts a failed activation against its dictionary-attack protection: reset, as an owner would. */
    CU_ASSERT_FATAL(sh("tpm2_dictionarylockout -T '%s' --clear-lockout >/dev/null 2>&1", tcti) == 0);
    static const uint8_t junk[] = {0x08, 0x02}; /* version 2 */
    CU_ASSERT_EQUAL(idevs_tpm_enroll_activate(tcti, state, junk, sizeof junk, &msg, &len, why, sizeof why),
                    IDEVS_ERR_VERSION);
    /* A certificate the operator issued for this host's former AK names another key than its new one. */
    enroll();
    CU_ASSERT_FATAL(idevs_tpm_enroll_request(tcti, state, "test-host", &msg, &len, why, sizeof why) == IDEVS_OK);
    free(msg);
    snprintf(path, sizeof path, "%s/ak.crt", dir);
    uint8_t *cert = read_file(path, &len);
    CU_ASSERT_FATAL(cert != NULL);
    CU_ASSERT_EQUAL(idevs_tpm_enroll_install(state, cert, len, why, sizeof why), IDEVS_ERR_KEY_BINDING_MISMATCH);
    CU_ASSERT_EQUAL(idevs_tpm_enroll_install(state, cert, 10, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    free(cert);
}

static void test_pcr_choice(void)
{
    char why[512] = "";
    idevs_backend_impl *b = NULL;
    CU_ASSERT_EQUAL(new_backend(16, &b, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "reset"));
    CU_ASSERT_EQUAL(new_backend(23, &b, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_EQUAL(new_backend(7, &b, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_EQUAL(new_backend(24, &b, why, sizeof why), IDEVS_ERR_CONFIG);
}

/* What the backend under test measured and certified with. */
typedef struct run {
    idevs_backend_impl *b;
    idevs_image image;
    idevs_uuid program;
} run;

static void run_open(run *r, unsigned pcr)
{
    char why[1024] = "";
    memset(r, 0, sizeof *r);
    idevs_err err = new_backend(pcr, &r->b, why, sizeof why);
    if (err != IDEVS_OK)
        fprintf(stderr, "backend: %s\n", why);
    CU_ASSERT_FATAL(err == IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_backend_kind(r->b), IDEVS_BACKEND_TPM);
    const char *host = getenv("IDEVS_COMPARTMENT");
    CU_ASSERT_FATAL(host != NULL);
    CU_ASSERT_FATAL(idevs_backend_measure(r->b, host, host, (const uint8_t *)descriptor, strlen(descriptor),
                                          &r->image, why, sizeof why) == IDEVS_OK);
    memset(r->program.b, 0x6f, sizeof r->program.b);
}

static void run_close(run *r)
{
    idevs_backend_release_image(r->b, &r->image);
    idevs_backend_free(r->b);
}

static void binding_of(unsigned n, uint8_t binding[32])
{
    memset(binding, 0, 32);
    binding[0] = (uint8_t)n;
    binding[1] = (uint8_t)(n >> 8);
    binding[31] = 0xb1;
}

/* Checks the report as a verifier would, with OpenSSL and libtss2-mu only; returns the events it holds. */
static size_t check_report(const idevs_evidence *ev, const uint8_t binding[32], unsigned pcr)
{
    Idevs__V1__TpmReport *r = idevs__v1__tpm_report__unpack(NULL, ev->hardware_report_len, ev->hardware_report);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->version, 1);
    CU_ASSERT_EQUAL(r->register_pcr, pcr);
    CU_ASSERT_FATAL(r->n_pcrs == 9);
    for (size_t i = 0; i < 9; i++) {
        CU_ASSERT_EQUAL(r->pcrs[i]->index, i < 8 ? i : pcr);
        CU_ASSERT_EQUAL(r->pcrs[i]->value.len, 32);
    }
    /* the quote */
    TPMS_ATTEST a;
    size_t off = 0;
    CU_ASSERT_FATAL(Tss2_MU_TPMS_ATTEST_Unmarshal(r->attest.data, r->attest.len, &off, &a) == TSS2_RC_SUCCESS);
    CU_ASSERT_EQUAL(off, r->attest.len);
    CU_ASSERT_EQUAL(a.magic, TPM2_GENERATED_VALUE);
    CU_ASSERT_EQUAL(a.type, TPM2_ST_ATTEST_QUOTE);
    CU_ASSERT_EQUAL(a.extraData.size, 64);
    CU_ASSERT_EQUAL(memcmp(a.extraData.buffer, binding, 32), 0);
    CU_ASSERT_EQUAL(memcmp(a.extraData.buffer + 32, ev->nonce, 32), 0);
    uint8_t all[9 * 32], digest[32];
    for (size_t i = 0; i < 9; i++)
        memcpy(all + 32 * i, r->pcrs[i]->value.data, 32);
    CU_ASSERT_FATAL(idevs_sha256(all, sizeof all, digest) == IDEVS_OK);
    CU_ASSERT_EQUAL(a.attested.quote.pcrDigest.size, 32);
    CU_ASSERT_EQUAL(memcmp(a.attested.quote.pcrDigest.buffer, digest, 32), 0);
    /* its signature, by the key of the AK certificate */
    TPMT_SIGNATURE sig;
    off = 0;
    CU_ASSERT_FATAL(Tss2_MU_TPMT_SIGNATURE_Unmarshal(r->signature.data, r->signature.len, &off, &sig) ==
                    TSS2_RC_SUCCESS);
    CU_ASSERT_EQUAL(sig.sigAlg, TPM2_ALG_ECDSA);
    const uint8_t *p = r->ak_certificate.data;
    X509 *x = d2i_X509(NULL, &p, (long)r->ak_certificate.len);
    CU_ASSERT_FATAL(x != NULL);
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *br = BN_bin2bn(sig.signature.ecdsa.signatureR.buffer, sig.signature.ecdsa.signatureR.size, NULL);
    BIGNUM *bs = BN_bin2bn(sig.signature.ecdsa.signatureS.buffer, sig.signature.ecdsa.signatureS.size, NULL);
    CU_ASSERT_FATAL(es != NULL && ECDSA_SIG_set0(es, br, bs) == 1);
    uint8_t *der = NULL;
    int derlen = i2d_ECDSA_SIG(es, &der);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    CU_ASSERT_FATAL(md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)) == 1);
    CU_ASSERT_EQUAL(EVP_DigestVerify(md, der, (size_t)derlen, r->attest.data, r->attest.len), 1);
    r->attest.data[r->attest.len - 1] ^= 1; /* a flipped byte no longer verifies */
    CU_ASSERT_FATAL(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)) == 1);
    CU_ASSERT_NOT_EQUAL(EVP_DigestVerify(md, der, (size_t)derlen, r->attest.data, r->attest.len), 1);
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    X509_free(x);
    /* the log replays to the register, and holds this certification */
    tpm_log log = {.events = calloc(r->n_events + 1, TPM_EVENT_LEN), .count = r->n_events};
    bool found = false;
    for (size_t i = 0; i < r->n_events; i++) {
        Idevs__V1__TpmEvent *e = r->events[i];
        CU_ASSERT_FATAL(e->measurement.len == 32 && e->program_uuid.len == 16 && e->descriptor_digest.len == 32 &&
                        e->key_binding.len == 32);
        memcpy(log.events[i], e->measurement.data, 32);
        memcpy(log.events[i] + 32, e->program_uuid.data, 16);
        memcpy(log.events[i] + 48, e->descriptor_digest.data, 32);
        memcpy(log.events[i] + 80, e->key_binding.data, 32);
        found = found || (memcmp(e->key_binding.data, binding, 32) == 0 &&
                          memcmp(e->measurement.data, ev->measurement, 32) == 0);
    }
    uint8_t replay[32];
    CU_ASSERT_FATAL(tpm_log_replay(&log, log.count, replay) == IDEVS_OK);
    CU_ASSERT_EQUAL(memcmp(replay, r->pcrs[8]->value.data, 32), 0);
    CU_ASSERT_TRUE(found);
    free(log.events);
    size_t n = r->n_events;
    idevs__v1__tpm_report__free_unpacked(r, NULL);
    return n;
}

static idevs_err certify(run *r, unsigned n, idevs_evidence *ev, char *why, size_t why_len)
{
    uint8_t binding[32];
    binding_of(n, binding);
    return idevs_backend_evidence(r->b, &r->image, &r->program, binding, ev, why, why_len);
}

static void test_evidence(void)
{
    enroll();
    run r;
    run_open(&r, 15);
    idevs_evidence ev;
    char why[1024] = "";
    uint8_t binding[32];
    binding_of(1, binding);
    idevs_err err = certify(&r, 1, &ev, why, sizeof why);
    if (err != IDEVS_OK)
        fprintf(stderr, "evidence: %s\n", why);
    CU_ASSERT_FATAL(err == IDEVS_OK);
    CU_ASSERT_EQUAL(ev.backend, IDEVS_BACKEND_TPM);
    CU_ASSERT_EQUAL(memcmp(ev.measurement, r.image.measurement, 32), 0);
    CU_ASSERT_EQUAL(ev.nonce_len, IDEVS_EVIDENCE_NONCE_LEN);
    CU_ASSERT_EQUAL(check_report(&ev, binding, 15), 1);
    printf("\n  report with 1 event: %zu bytes\n", ev.hardware_report_len);
    /* The same keys again (a restart that restored them, a renewal): no new event, a fresh quote. */
    uint8_t nonce[32];
    memcpy(nonce, ev.nonce, 32);
    CU_ASSERT_FATAL(certify(&r, 1, &ev, why, sizeof why) == IDEVS_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(nonce, ev.nonce, 32), 0);
    CU_ASSERT_EQUAL(check_report(&ev, binding, 15), 1);
    binding_of(2, binding);
    CU_ASSERT_FATAL(certify(&r, 2, &ev, why, sizeof why) == IDEVS_OK);
    CU_ASSERT_EQUAL(check_report(&ev, binding, 15), 2);
    run_close(&r);

    /* Another register has a log of its own (a second broker on the host, or a changed configuration). */
    run_open(&r, 14);
    binding_of(3, binding);
    CU_ASSERT_FATAL(certify(&r, 3, &ev, why, sizeof why) == IDEVS_OK);
    CU_ASSERT_EQUAL(check_report(&ev, binding, 14), 1);
    run_close(&r);
    run_open(&r, 15);
    binding_of(2, binding);
    CU_ASSERT_FATAL(certify(&r, 2, &ev, why, sizeof why) == IDEVS_OK);
    CU_ASSERT_EQUAL(check_report(&ev, binding, 15), 2);
    /* A crash between appending an event and extending the register leaves one event too many: dropped. */
    char path[800];
    snprintf(path, sizeof path, "%s/tpm/events.pcr15", state);
    int fd = open(path, O_WRONLY | O_APPEND);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t stray[TPM_EVENT_LEN];
    memset(stray, 0x5a, sizeof stray);
    CU_ASSERT_FATAL(write(fd, stray, sizeof stray) == (ssize_t)sizeof stray);
    close(fd);
    CU_ASSERT_FATAL(certify(&r, 2, &ev, why, sizeof why) == IDEVS_OK);
    CU_ASSERT_EQUAL(check_report(&ev, binding, 15), 2);
    struct stat st;
    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_size, 2 * TPM_EVENT_LEN);
    /* A log that is not whole events is refused, not guessed at. */
    CU_ASSERT_FATAL(truncate(path, 2 * TPM_EVENT_LEN - 1) == 0);
    CU_ASSERT_EQUAL(certify(&r, 2, &ev, why, sizeof why), IDEVS_ERR_MALFORMED);
    CU_ASSERT_FATAL(truncate(path, 2 * TPM_EVENT_LEN) == 0);
    run_close(&r);
}

static void test_reboot(void)
{
    CU_ASSERT_FATAL(sh(SWTPM " reboot %s/tpm >/dev/null", dir) == 0);
    run r;
    run_open(&r, 15);
    idevs_evidence ev;
    char why[1024] = "";
    uint8_t binding[32];
    binding_of(7, binding);
    CU_ASSERT_FATAL(certify(&r, 7, &ev, why, sizeof why) == IDEVS_OK);
    CU_ASSERT_EQUAL(check_report(&ev, binding, 15), 1); /* the earlier boot's two events are gone */
    /* Someone else extends the register: the log no longer replays, and the launcher says so. */
    CU_ASSERT_FATAL(sh("tpm2_pcrextend -T '%s' 15:sha256=%064d >/dev/null 2>&1", tcti, 7) == 0);
    CU_ASSERT_EQUAL(certify(&r, 7, &ev, why, sizeof why), IDEVS_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "does not replay"));
    run_close(&r);
    CU_ASSERT_FATAL(sh(SWTPM " reboot %s/tpm >/dev/null", dir) == 0);
}

/* The bound on distinct certifications per boot, and the size of the largest report and of a compartment
 * certificate carrying it (below IDEVS_CERT_MAX). */
static void test_bound(void)
{
    run r;
    run_open(&r, 15);
    idevs_evidence ev;
    char why[1024] = "";
    for (unsigned i = 0; i < TPM_EVENTS_MAX; i++) {
        idevs_err err = certify(&r, 100 + i, &ev, why, sizeof why);
        if (err != IDEVS_OK)
            fprintf(stderr, "certification %u: %s\n", i, why);
        CU_ASSERT_FATAL(err == IDEVS_OK);
    }
    uint8_t binding[32];
    binding_of(100 + TPM_EVENTS_MAX - 1, binding);
    CU_ASSERT_EQUAL(check_report(&ev, binding, 15), TPM_EVENTS_MAX);
    printf("  report with %d events: %zu bytes\n", TPM_EVENTS_MAX, ev.hardware_report_len);
    /* The compartment certificate carrying it, as certify.c issues one (for keys of its own: the size is what
     * matters here). */
    fixture_pki pki;
    fixture_pki_init(&pki);
    idevs_identity *subject = NULL;
    X509 *cert = NULL;
    uint8_t *der = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(idevs_identity_generate(&r.program, "p", &subject) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_key_binding(idevs_identity_sign_public(subject), idevs_identity_kex_public(subject),
                                      ev.key_binding) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, subject, &ev, 3600, &cert) ==
                    IDEVS_OK);
    CU_ASSERT_FATAL(idevs_cert_to_der(cert, &der, &len) == IDEVS_OK);
    printf("  compartment certificate with it: %zu bytes (at most %d)\n", len, IDEVS_CERT_MAX);
    CU_ASSERT_TRUE(len <= IDEVS_CERT_MAX);
    free(der);
    X509_free(cert);
    idevs_identity_free(subject);
    fixture_pki_free(&pki);
    CU_ASSERT_EQUAL(certify(&r, 1000, &ev, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "reboot"));
    /* keys certified already still are */
    CU_ASSERT_EQUAL(certify(&r, 100, &ev, why, sizeof why), IDEVS_OK);
    run_close(&r);
}

/* The sealing key: the same while the boot PCRs are; after PCR 0 changes the secret does not unseal (a clear
 * error), and removing sealing.tpm starts over with another key (the compartment's keys are then fresh). */
static void test_sealing(void)
{
    run r;
    run_open(&r, 15);
    char why[1024] = "", path[800];
    uint8_t k1[IDEVS_SEALING_KEY_LEN], k2[IDEVS_SEALING_KEY_LEN], k3[IDEVS_SEALING_KEY_LEN];
    idevs_err err = idevs_backend_sealing_key(r.b, &r.image, k1, why, sizeof why);
    if (err != IDEVS_OK)
        fprintf(stderr, "sealing key: %s\n", why);
    CU_ASSERT_FATAL(err == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_backend_sealing_key(r.b, &r.image, k2, why, sizeof why) == IDEVS_OK);
    CU_ASSERT_EQUAL(memcmp(k1, k2, sizeof k1), 0);
    snprintf(path, sizeof path, "%s/sealing.tpm", state);
    CU_ASSERT_EQUAL(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/sealing.key", state);
    CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0); /* no plain secret */
    /* Another boot chain: PCR 0 extended. */
    CU_ASSERT_FATAL(sh("tpm2_pcrextend -T '%s' 0:sha256=%064d >/dev/null 2>&1", tcti, 1) == 0);
    CU_ASSERT_EQUAL(idevs_backend_sealing_key(r.b, &r.image, k2, why, sizeof why), IDEVS_ERR_UNSEAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "PCRs 0-7 changed"));
    snprintf(path, sizeof path, "%s/sealing.tpm", state);
    CU_ASSERT_FATAL(unlink(path) == 0);
    CU_ASSERT_FATAL(idevs_backend_sealing_key(r.b, &r.image, k3, why, sizeof why) == IDEVS_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(k1, k3, sizeof k1), 0);
    /* Booted as before again: the secret sealed under the other chain does not unseal now. */
    CU_ASSERT_FATAL(sh(SWTPM " reboot %s/tpm >/dev/null", dir) == 0);
    CU_ASSERT_EQUAL(idevs_backend_sealing_key(r.b, &r.image, k2, why, sizeof why), IDEVS_ERR_UNSEAL);
    CU_ASSERT_FATAL(unlink(path) == 0);
    run_close(&r);
}

/* Enrolled again while a backend runs: a new AK, the old certificate gone from the directory but not from the
 * backend's memory: refused, naming the enrollment; a new backend refuses too until the new certificate is in. */
static void test_reenrolled(void)
{
    run r;
    run_open(&r, 15);
    char why[1024] = "";
    idevs_evidence ev;
    uint8_t *msg = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(idevs_tpm_enroll_request(tcti, state, "test-host", &msg, &len, why, sizeof why) == IDEVS_OK);
    free(msg);
    CU_ASSERT_EQUAL(certify(&r, 1, &ev, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "does not name the attestation key"));
    run_close(&r);
    enroll();
    run_open(&r, 15);
    CU_ASSERT_EQUAL(certify(&r, 1, &ev, why, sizeof why), IDEVS_OK);
    run_close(&r);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"unenrolled: refused, naming the enrollment", test_unenrolled},
        {"enrollment refusals: another AK's challenge, another key's certificate", test_enroll_refusals},
        {"register: 16, 23 and outside 8-15 refused", test_pcr_choice},
        {"enrollment, then evidence a verifier accepts; one event per key binding; a stray event", test_evidence},
        {"reboot: the log starts again; an extend behind its back is refused", test_reboot},
        {"bound: events per boot, report and certificate sizes", test_bound},
        {"sealing: the same key on the same boot chain, none after PCR 0 changed", test_sealing},
        {"enrolled again while running: the new AK without its certificate is refused", test_reenrolled},
        CU_TEST_INFO_NULL,
    };
    return harness_run_suite("backend_tpm", init, clean, tests);
}

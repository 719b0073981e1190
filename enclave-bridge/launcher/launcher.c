/* The launcher's public face: configuration, reading the deployment, start, stop, deliver, poll, stats. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "idevs_cert.h"
#include "idevs_envelope.h"
#include "idevs_identity.h"
#include "launcher_internal.h"

#define DEFAULT_VALIDITY_S (7u * 86400u)
#define DEFAULT_START_TIMEOUT_MS 5000u
#define DEFAULT_MAX_IN_FLIGHT 64u
#define DEFAULT_MAX_ATTEMPTS 3u
#define DEFAULT_BACKOFF_INITIAL_MS 100u
#define DEFAULT_BACKOFF_MAX_MS 30000u
#define DEFAULT_STABLE_AFTER_MS 10000u
#define DEFAULT_EXIT_GRACE_MS 200u
#define REAP_HARD_LIMIT_MS 5000 /* after SIGKILL, how long a blocking call waits for the reap at most */

void idevs_launcher_config_default(idevs_launcher_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->certificate_validity_s = DEFAULT_VALIDITY_S;
    cfg->start_timeout_ms = DEFAULT_START_TIMEOUT_MS;
    cfg->max_in_flight = DEFAULT_MAX_IN_FLIGHT;
    cfg->max_attempts = DEFAULT_MAX_ATTEMPTS;
    cfg->backoff_initial_ms = DEFAULT_BACKOFF_INITIAL_MS;
    cfg->backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
    cfg->stable_after_ms = DEFAULT_STABLE_AFTER_MS;
    cfg->exit_grace_ms = DEFAULT_EXIT_GRACE_MS;
}

void launcher_event(idevs_launcher *l, idevs_launcher_event event, const char *fmt, ...)
{
    if (l->cfg.on_event == NULL)
        return;
    char what[768], line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(line, sizeof line, "compartment '%s' (program %s) %s", l->name, l->program_str, what);
    l->cfg.on_event(l->cfg.event_arg, event, line);
}

/* ---- reading the deployment ---- */

/* path as written in the descriptor, relative to the descriptor's directory unless absolute. */
static char *resolve(const char *descriptor, const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    const char *slash = strrchr(descriptor, '/');
    size_t dir_len = slash != NULL ? (size_t)(slash - descriptor) + 1 : 0;
    size_t len = dir_len + strlen(path) + 1;
    char *out = malloc(len);
    if (out == NULL)
        return NULL;
    memcpy(out, descriptor, dir_len);
    memcpy(out + dir_len, path, strlen(path) + 1);
    return out;
}

static idevs_err read_service_chain(const char *path, service_chain *sc, char *why, size_t why_len)
{
    char inner[384];
    idevs_err err = idevs_cert_read_chain_file(path, sc->chain.der, sc->chain.len, IDEVS_CHAIN_MAX, &sc->chain.count,
                                               inner, sizeof inner);
    if (err != IDEVS_OK) {
        snprintf(why, why_len, "service '%s': certificate file %s (%s)", sc->name, inner, idevs_err_name(err));
        return IDEVS_ERR_CONFIG;
    }
    return IDEVS_OK;
}

static idevs_err load_services(idevs_launcher *l, const char *descriptor_path, char *why, size_t why_len)
{
    const idevs_deployment *d = l->deployment;
    l->services = calloc(d->service_count ? d->service_count : 1, sizeof *l->services);
    if (l->services == NULL)
        return IDEVS_ERR_NOMEM;
    l->service_count = d->service_count;
    for (size_t i = 0; i < d->service_count; i++) {
        service_chain *sc = &l->services[i];
        snprintf(sc->name, sizeof sc->name, "%s", d->services[i].name);
        char *path = resolve(descriptor_path, d->services[i].certificate);
        if (path == NULL)
            return IDEVS_ERR_NOMEM;
        idevs_err err = read_service_chain(path, sc, why, why_len);
        free(path);
        if (err != IDEVS_OK)
            return err;
    }
    return IDEVS_OK;
}

static idevs_err check_pki(idevs_launcher *l, const idevs_launcher_config *cfg, char *why, size_t why_len)
{
    uint8_t digest[IDEVS_SHA256_LEN];
    if (idevs_cert_to_der(cfg->operator_ca, &l->operator_ca_der, &l->operator_ca_len) != IDEVS_OK ||
        idevs_sha256(l->operator_ca_der, l->operator_ca_len, digest) != IDEVS_OK) {
        snprintf(why, why_len, "the operator CA certificate cannot be encoded");
        return IDEVS_ERR_CONFIG;
    }
    if (!idevs_ct_equal(digest, l->deployment->operator_ca_sha256, sizeof digest)) {
        snprintf(why, why_len, "the operator CA certificate is not the one the descriptor pins (operator_ca_sha256)");
        return IDEVS_ERR_CONFIG;
    }
    EVP_PKEY *ca_key = X509_get0_pubkey(cfg->operator_ca);
    EVP_PKEY *aa_key = X509_get0_pubkey(cfg->authority_cert);
    bool issued = ca_key != NULL && X509_verify(cfg->authority_cert, ca_key) == 1 &&
                  X509_check_issued(cfg->operator_ca, cfg->authority_cert) == X509_V_OK;
    bool matches = aa_key != NULL && EVP_PKEY_eq(aa_key, idevs_identity_sign_key(cfg->authority)) == 1 &&
                   X509_check_ca(cfg->authority_cert) != 0;
    ERR_clear_error();
    if (!issued) {
        snprintf(why, why_len, "the attestation authority certificate is not issued by the operator CA");
        return IDEVS_ERR_CONFIG;
    }
    if (!matches) {
        snprintf(why, why_len, "the attestation authority certificate is not a CA certificate for the authority's key");
        return IDEVS_ERR_CONFIG;
    }
    if (idevs_cert_to_der(cfg->authority_cert, &l->authority_der, &l->authority_der_len) != IDEVS_OK) {
        snprintf(why, why_len, "the attestation authority certificate cannot be encoded");
        return IDEVS_ERR_CONFIG;
    }
    return IDEVS_OK;
}

/* state_dir, or state_dir/<process name> (made 0700 when absent) when each process has its own. */
static char *state_dir_for(const idevs_launcher_config *cfg, const char *name, char *why, size_t why_len)
{
    if (!cfg->state_dir_per_process)
        return strdup(cfg->state_dir);
    size_t n = strlen(cfg->state_dir) + 1 + strlen(name) + 1;
    char *path = malloc(n);
    if (path == NULL)
        return NULL;
    snprintf(path, n, "%s/%s", cfg->state_dir, name);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(why, why_len, "cannot make the state directory '%s': %s", path, strerror(errno));
        free(path);
        return NULL;
    }
    return path;
}

/* The backend cfg names, with the state directory of this process. */
static idevs_err open_backend(const idevs_launcher_config *cfg, const char *state_dir, idevs_backend_impl **out,
                              char *why, size_t why_len)
{
    idevs_backend kind = IDEVS_BACKEND_PROCESS;
    if (cfg->backend != NULL && idevs_backend_parse(cfg->backend, &kind) != IDEVS_OK)
        return idevs_fail(why, why_len, IDEVS_ERR_CONFIG, "unknown backend '%s'", cfg->backend);
    if (kind == IDEVS_BACKEND_PROCESS) {
        idevs_process_backend_options popts = {.state_dir = state_dir, .run_as = cfg->run_as};
        return idevs_backend_process_new(&popts, out, why, why_len);
    }
    if (kind == IDEVS_BACKEND_TPM) {
        idevs_tpm_backend_options topts = {
            .state_dir = state_dir, .tpm_state_dir = cfg->state_dir, .run_as = cfg->run_as, .tcti = cfg->tpm_tcti,
            .pcr = cfg->tpm_pcr != 0 ? cfg->tpm_pcr : IDEVS_TPM_PCR_DEFAULT,
        };
        return idevs_backend_tpm_new(&topts, out, why, why_len);
    }
    return idevs_fail(why, why_len, IDEVS_ERR_CONFIG, "backend '%s' has no launcher: use process or tpm", cfg->backend);
}

static unsigned or_default(unsigned v, unsigned d)
{
    return v != 0 ? v : d;
}

idevs_err idevs_launcher_new(const idevs_launcher_config *cfg, idevs_launcher **out, char *why, size_t why_len)
{
    char sink[8];
    idevs_why_or_sink(&why, &why_len, sink, sizeof sink);
    why[0] = '\0';
    if (out == NULL || cfg == NULL)
        return IDEVS_ERR_INVALID_ARG;
    *out = NULL;
    if (cfg->descriptor == NULL || cfg->host_program == NULL || cfg->state_dir == NULL || cfg->operator_ca == NULL ||
        cfg->authority == NULL || cfg->authority_cert == NULL) {
        snprintf(why, why_len, "the launcher needs a descriptor, a host program, a state directory, the operator CA "
                               "and the attestation authority");
        return IDEVS_ERR_INVALID_ARG;
    }
    unsigned validity = or_default(cfg->certificate_validity_s, DEFAULT_VALIDITY_S);
    if (cfg->certificate_renew_after_s >= validity) {
        snprintf(why, why_len, "the certificate's renewal (after %u s) must come before its end (%u s of validity)",
                 cfg->certificate_renew_after_s, validity);
        return IDEVS_ERR_INVALID_ARG;
    }
    idevs_launcher *l = calloc(1, sizeof *l);
    if (l == NULL)
        return IDEVS_ERR_NOMEM;
    l->outbox.dirfd = -1;
    l->cfg = *cfg;
    l->cfg.descriptor = l->cfg.host_program = l->cfg.logic = l->cfg.state_dir = l->cfg.run_as = NULL;
    l->cfg.operator_ca = NULL;
    l->cfg.authority_cert = NULL;
    l->cfg.certificate_validity_s = or_default(cfg->certificate_validity_s, DEFAULT_VALIDITY_S);
    /* Renewed at two thirds of the validity by default: a third is left for a failed renewal to be tried
     * again, and for services to fetch the new certificate, long before any of them would refuse the old. */
    l->cfg.certificate_renew_after_s = cfg->certificate_renew_after_s != 0
                                           ? cfg->certificate_renew_after_s
                                           : (unsigned)((uint64_t)l->cfg.certificate_validity_s * 2 / 3);
    l->cfg.start_timeout_ms = or_default(cfg->start_timeout_ms, DEFAULT_START_TIMEOUT_MS);
    l->cfg.max_in_flight = or_default(cfg->max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    l->cfg.max_attempts = or_default(cfg->max_attempts, DEFAULT_MAX_ATTEMPTS);
    l->cfg.backoff_initial_ms = or_default(cfg->backoff_initial_ms, DEFAULT_BACKOFF_INITIAL_MS);
    l->cfg.backoff_max_ms = or_default(cfg->backoff_max_ms, DEFAULT_BACKOFF_MAX_MS);
    if (l->cfg.backoff_max_ms < l->cfg.backoff_initial_ms)
        l->cfg.backoff_max_ms = l->cfg.backoff_initial_ms;
    l->cfg.stable_after_ms = or_default(cfg->stable_after_ms, DEFAULT_STABLE_AFTER_MS);
    l->cfg.exit_grace_ms = or_default(cfg->exit_grace_ms, DEFAULT_EXIT_GRACE_MS);
    l->authority = cfg->authority;
    l->state_dirfd = l->epfd = l->timerfd = -1;
    l->image.host_fd = l->image.logic_fd = -1;
    l->timer_armed_ms = -1;
    l->next_id = 1;
    snprintf(l->name, sizeof l->name, "?");
    snprintf(l->program_str, sizeof l->program_str, "?");

    idevs_err err = idevs_deployment_load(cfg->descriptor, &l->deployment, &l->descriptor, &l->descriptor_len, why,
                                          why_len);
    if (err != IDEVS_OK)
        goto fail;
    snprintf(l->name, sizeof l->name, "%s", l->deployment->name);
    l->program = l->deployment->program;
    l->instance_count = l->deployment->instances > 0 ? l->deployment->instances : 1;
    l->runs_timer = true; /* until idevs_launcher_set_owned() says another broker owns partition 0 */
    if (cfg->instance_base > UINT32_MAX - l->instance_count) {
        snprintf(why, why_len, "instance base %u: the instances would be numbered beyond %u", cfg->instance_base,
                 UINT32_MAX);
        err = IDEVS_ERR_CONFIG;
        goto fail;
    }
    if ((l->instances = calloc(l->instance_count, sizeof *l->instances)) == NULL) {
        l->instance_count = 0;
        err = IDEVS_ERR_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < l->instance_count; i++) {
        launcher_instance *c = &l->instances[i];
        c->l = l;
        c->index = (uint32_t)i;
        c->number = cfg->instance_base + (uint32_t)i;
        c->child.pidfd = -1;
        c->backoff_ms = l->cfg.backoff_initial_ms;
        c->state = IDEVS_LAUNCHER_STOPPED;
    }
    idevs_uuid_format(&l->program, l->program_str);
    if ((l->descriptor_path = strdup(cfg->descriptor)) == NULL ||
        (l->host_program_path = strdup(cfg->host_program)) == NULL) {
        err = IDEVS_ERR_NOMEM;
        goto fail;
    }
    if ((err = topics_init(l, why, why_len)) != IDEVS_OK || (err = replay_record_init(l)) != IDEVS_OK)
        goto fail;
    if ((err = check_pki(l, cfg, why, why_len)) != IDEVS_OK || (err = load_services(l, cfg->descriptor, why,
                                                                                    why_len)) != IDEVS_OK)
        goto fail;
    X509_up_ref(cfg->authority_cert);
    l->authority_cert = cfg->authority_cert;

    char *state_dir = state_dir_for(cfg, l->name, why, why_len);
    if (state_dir == NULL) {
        err = why[0] != '\0' ? IDEVS_ERR_CONFIG : IDEVS_ERR_NOMEM;
        goto fail;
    }
    err = open_backend(cfg, state_dir, &l->backend, why, why_len);
    if (err == IDEVS_OK)
        err = launcher_state_dir_open(state_dir, &l->state_dirfd, why, why_len);
    free(state_dir);
    if (err != IDEVS_OK)
        goto fail;
    char *logic = cfg->logic != NULL ? strdup(cfg->logic) : resolve(cfg->descriptor, l->deployment->logic);
    if (logic == NULL) {
        err = IDEVS_ERR_NOMEM;
        goto fail;
    }
    err = idevs_backend_measure(l->backend, cfg->host_program, logic, l->descriptor, l->descriptor_len, &l->image,
                                why, why_len);
    free(logic);
    if (err != IDEVS_OK)
        goto fail;

    idevs_envelope_options eopts;
    idevs_envelope_options_default(&eopts);
    eopts.max_payload = l->deployment->max_payload;
    l->max_envelope = idevs_envelope_max_size(&eopts);
    l->queue_limit = cfg->queue_depth != 0 ? cfg->queue_depth : l->deployment->queue_depth;
    if (cfg->queue_bytes != 0)
        l->queue_bytes_limit = cfg->queue_bytes;
    else {
        size_t cap = l->max_envelope > LAUNCHER_QUEUE_BYTES_DEFAULT_MAX ? l->max_envelope
                                                                        : LAUNCHER_QUEUE_BYTES_DEFAULT_MAX;
        l->queue_bytes_limit = l->queue_limit > cap / l->max_envelope ? cap : l->queue_limit * l->max_envelope;
    }
    l->event_timeout_ms = cfg->event_timeout_ms != 0 ? cfg->event_timeout_ms : l->deployment->event_timeout_ms;

    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l->timerfd};
    if (l->epfd < 0 || l->timerfd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->timerfd, &ev) != 0) {
        snprintf(why, why_len, "epoll/timerfd: %s", strerror(errno));
        err = IDEVS_ERR_IO;
        goto fail;
    }
    if ((err = shares_init(l)) != IDEVS_OK)
        goto fail;
    l->stats.queue_limit = l->queue_limit;
    l->stats.client_share = l->shares.client_limit;
    l->stats.sender_share = l->shares.sender_limit;
    *out = l;
    return IDEVS_OK;

fail:
    if (l->name[0] != '?' && why[0] != '\0') {
        char detail[512];
        snprintf(detail, sizeof detail, "%s", why);
        snprintf(why, why_len, "compartment '%s': %s", l->name, detail);
    }
    idevs_launcher_free(l);
    return err;
}

/* ---- start, stop, free ---- */

/* Waits for the launcher's fds, at most until the next deadline and at most until limit (absolute, ms). */
static void wait_until(idevs_launcher *l, int64_t limit)
{
    int64_t now = launcher_now_ms();
    int64_t next = supervise_next_deadline(l);
    int64_t until = next >= 0 && next < limit ? next : limit;
    int wait = until > now ? (int)(until - now) : 0;
    supervise_wait(l, wait);
}

/* Last resort of the blocking calls: the child was sent SIGKILL and has not been reaped within the limit. */
static void reap_blocking(launcher_instance *c)
{
    if (c->have_child) {
        supervise_kill(c, IDEVS_ERR_TIMEOUT, "it did not exit");
        (void)supervise_try_reap(c, NULL);
    }
    if (c->have_child) {
        while (waitpid(c->child.pid, NULL, 0) < 0 && errno == EINTR) {
        }
        supervise_close_channel(c);
        if (c->child.pidfd >= 0)
            close(c->child.pidfd);
        c->child.pidfd = -1;
        c->child.pid = 0;
        c->have_child = false;
    }
    c->state = IDEVS_LAUNCHER_STOPPED;
}

/* The start failed and the program ended by itself, before it was certified, without a Fatal frame to say
 * why: the words that say what the operator should look at. A real compartment answers Init, or explains
 * itself in a Fatal frame, and exits 0 only after Shutdown. */
static void not_a_compartment(const idevs_launcher *l, char *out, size_t out_len)
{
    if (strncmp(l->stats.last_exit, "exited with status 0", 20) == 0 && l->stats.last_exit[20] == '\0')
        snprintf(out, out_len, " without answering Init: '%s' is not the idevs-compartment program (a compartment "
                 "answers Init on descriptor 3, and exits with status 0 only after Shutdown)", l->host_program_path);
    else
        snprintf(out, out_len, " before it answered Init, without saying why: is '%s' the idevs-compartment program "
                 "of this build?", l->host_program_path);
}

/* Starts instance c and waits until it is ready or stopped, at most start_timeout_ms. *spawned: whether a
 * compartment was started at all (else detail says why not). */
static idevs_err start_blocking(launcher_instance *c, char *detail, size_t detail_len, bool *spawned)
{
    idevs_launcher *l = c->l;
    idevs_err err = supervise_begin_start(c, detail, detail_len);
    *spawned = err == IDEVS_OK;
    if (err != IDEVS_OK)
        return err;
    int64_t limit = launcher_now_ms() + l->cfg.start_timeout_ms + l->cfg.exit_grace_ms + REAP_HARD_LIMIT_MS;
    /* A joiner is started once certified for its temporary keys: its grant comes through polls (join.c). */
    while (c->state != IDEVS_LAUNCHER_READY && c->state != IDEVS_LAUNCHER_STOPPED &&
           c->state != IDEVS_LAUNCHER_JOINING) {
        if (supervise_step(l, NULL) > 0)
            continue;
        if (c->state == IDEVS_LAUNCHER_READY || c->state == IDEVS_LAUNCHER_STOPPED ||
            c->state == IDEVS_LAUNCHER_JOINING)
            break;
        if (launcher_now_ms() >= limit) {
            reap_blocking(c);
            break;
        }
        wait_until(l, limit);
    }
    if (c->state == IDEVS_LAUNCHER_READY || c->state == IDEVS_LAUNCHER_JOINING)
        return IDEVS_OK;
    snprintf(detail, detail_len, "%.200s", c->exit_note); /* empty: it said nothing */
    return c->exit_err != IDEVS_OK ? c->exit_err : IDEVS_ERR_SPAWN;
}

static void stop_all(idevs_launcher *l, unsigned timeout_ms);

idevs_err idevs_launcher_start(idevs_launcher *l, char *why, size_t why_len)
{
    char sink[8];
    idevs_why_or_sink(&why, &why_len, sink, sizeof sink);
    why[0] = '\0';
    if (l == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (l->started) {
        snprintf(why, why_len, "compartment '%s' (program %s) is already started", l->name, l->program_str);
        return IDEVS_ERR_NOT_NOW;
    }
    char detail[768] = "";
    uint64_t certified_before = l->stats.certified;
    l->stopping = false;
    /* Before the first delivery can be accepted; later starts keep the record in memory. */
    idevs_err err = replay_record_load(l, detail, sizeof detail);
    if (err == IDEVS_OK)
        outbox_load(l);
    /* The first instance makes or restores the keys and leaves them sealed in the state directory; the others
     * start after it, from that blob, so that every instance holds the same keys. */
    bool spawned = false;
    /* A joiner: the others start once it holds the keys and has sealed them here (join.c). */
    for (size_t i = 0; err == IDEVS_OK && i < l->instance_count && !l->joining; i++) {
        l->blocking_start = &l->instances[i];
        err = start_blocking(&l->instances[i], detail, sizeof detail, &spawned);
    }
    l->blocking_start = NULL;
    if (err == IDEVS_OK) {
        l->started = true;
        supervise_arm_timer(l);
        return IDEVS_OK;
    }
    if (!spawned) {
        snprintf(l->stats.last_exit, sizeof l->stats.last_exit, "could not be started: %.200s", detail);
        snprintf(why, why_len, "compartment '%s' (program %s) could not be started: %s", l->name, l->program_str,
                 detail);
        launcher_event(l, IDEVS_LAUNCHER_EVENT_START_FAILED, "could not be started: %s", detail);
    } else {
        char hint[PATH_MAX + 200] = "";
        if (l->stats.certified == certified_before && detail[0] == '\0')
            not_a_compartment(l, hint, sizeof hint);
        snprintf(why, why_len, "compartment '%s' (program %s) %s%s", l->name, l->program_str, l->stats.last_exit,
                 hint);
    }
    stop_all(l, l->cfg.exit_grace_ms); /* the instances already started end with it */
    supervise_arm_timer(l);
    return err;
}

/* Asks every running instance to shut down and waits, at most timeout_ms, until every one is reaped. */
static void stop_all(idevs_launcher *l, unsigned timeout_ms)
{
    l->stopping = true;
    for (size_t i = 0; i < l->instance_count; i++) {
        launcher_instance *c = &l->instances[i];
        if (c->state == IDEVS_LAUNCHER_BACKOFF || c->state == IDEVS_LAUNCHER_STOPPED) {
            c->state = IDEVS_LAUNCHER_STOPPED;
            continue;
        }
        if (c->state != IDEVS_LAUNCHER_EXITING && c->have_channel) {
            Idevs__Bridge__V1__Shutdown shutdown = IDEVS__BRIDGE__V1__SHUTDOWN__INIT;
            Idevs__Bridge__V1__Frame frame = IDEVS__BRIDGE__V1__FRAME__INIT;
            frame.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_SHUTDOWN;
            frame.shutdown = &shutdown;
            if (supervise_send(c, &frame) == IDEVS_OK)
                (void)supervise_flush(c, (int)timeout_ms);
        }
        if (c->state != IDEVS_LAUNCHER_EXITING) {
            c->state = IDEVS_LAUNCHER_EXITING;
            c->exit_deadline_ms = launcher_now_ms() + timeout_ms;
        }
    }
    int64_t limit = launcher_now_ms() + timeout_ms + REAP_HARD_LIMIT_MS;
    while (!pool_all_stopped(l)) {
        if (supervise_step(l, NULL) > 0)
            continue;
        if (pool_all_stopped(l))
            break;
        if (launcher_now_ms() >= limit) {
            for (size_t i = 0; i < l->instance_count; i++)
                reap_blocking(&l->instances[i]);
            break;
        }
        wait_until(l, limit);
    }
    l->stopping = false;
}

void idevs_launcher_stop(idevs_launcher *l, unsigned timeout_ms)
{
    if (l == NULL || !l->started)
        return;
    stop_all(l, timeout_ms);
    size_t abandoned = deliveries_clear(l);
    l->stats.abandoned += abandoned;
    if (abandoned > 0) /* the one end of queued deliveries without their compartment: say so */
        launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING, "stopped with %zu deliver%s not done: dropped without output "
                       "(%llu abandoned so far)", abandoned, abandoned == 1 ? "y" : "ies",
                       (unsigned long long)l->stats.abandoned);
    l->started = false;
    replay_record_save(l, REPLAY_SAVE_FINAL);
    supervise_arm_timer(l);
}

void idevs_launcher_free(idevs_launcher *l)
{
    if (l == NULL)
        return;
    idevs_launcher_stop(l, l->cfg.exit_grace_ms);
    deliveries_clear(l);
    if (l->replay.senders != NULL)
        replay_record_save(l, REPLAY_SAVE_FINAL);
    replay_record_free(l);
    outbox_free(l);
    retransmits_free(l);
    shares_free(l);
    for (size_t i = 0; i < l->instance_count; i++)
        certify_forget(&l->instances[i]);
    free(l->instances);
    pool_free(l);
    if (l->backend != NULL) {
        idevs_backend_release_image(l->backend, &l->image);
        idevs_backend_free(l->backend);
    }
    if (l->state_dirfd >= 0)
        close(l->state_dirfd);
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->timerfd >= 0)
        close(l->timerfd);
    for (size_t i = 0; i < l->service_count; i++)
        idevs_der_chain_clear(&l->services[i].chain);
    free(l->services);
    topics_free(l);
    free(l->descriptor_path);
    free(l->host_program_path);
    idevs_deployment_free(l->deployment);
    free(l->descriptor);
    free(l->operator_ca_der);
    free(l->authority_der);
    X509_free(l->authority_cert);
    idevs_cleanse(l, sizeof *l);
    free(l);
}

/* ---- deliveries and polling ---- */

/* Whether the queue takes a delivery the gate passed: not a byte-for-byte copy of one queued or in flight (a
 * copy of a real envelope takes one slot at most, counted as a replay; an envelope that only shares its clear
 * header, which anyone can predict, is not refused for it: only the compartment can tell which is real), within
 * its client's and its sender's shares (shares.c), then within the queue's count and bytes. */
static idevs_err admit(const idevs_launcher *l, const char *client, const delivery *probe, const uint8_t *envelope,
                       size_t len)
{
    if (shares_queued_copy(l, probe, envelope, len))
        return IDEVS_ERR_REPLAY;
    idevs_err err = shares_admit(l, client, probe, len);
    if (err != IDEVS_OK)
        return err;
    if (l->count + l->refused_count >= l->queue_limit ||
        (l->queue_bytes > 0 && len > l->queue_bytes_limit - (l->queue_bytes < l->queue_bytes_limit
                                                                ? l->queue_bytes : l->queue_bytes_limit)))
        return IDEVS_ERR_QUEUE_FULL;
    return IDEVS_OK;
}

idevs_err idevs_launcher_deliver(idevs_launcher *l, const char *topic, const uint8_t *envelope, size_t len,
                                 const uint8_t *correlation, size_t correlation_len, uint64_t *delivery_id)
{
    return idevs_launcher_deliver_from(l, NULL, topic, envelope, len, correlation, correlation_len, delivery_id);
}

idevs_err idevs_launcher_deliver_from(idevs_launcher *l, const char *client, const char *topic,
                                      const uint8_t *envelope, size_t len, const uint8_t *correlation,
                                      size_t correlation_len, uint64_t *delivery_id)
{
    return idevs_launcher_deliver_partitioned(l, client, topic, envelope, len, correlation, correlation_len, NULL,
                                              delivery_id);
}

/* Whether this broker routes a delivery when several share the process (docs/SCALING.md): an input or an answer
 * by its message id's partition, never by its idevs-partition property, which anyone who can publish may change:
 * a copy with another value would otherwise run on a second broker, whose replay record never saw the first. The
 * id is in the authenticated clear header: every copy has it, so every copy has the one owner. Receipts go to
 * every broker: each launcher clears its own kept outputs. An envelope the gate could not read is left to the
 * gate's refusal. */
static bool owned_here(const idevs_launcher *l, idevs_topic_kind kind, const delivery *probe, idevs_err gate)
{
    if (kind == IDEVS_TOPIC_RECEIPT)
        return true;
    if (gate == IDEVS_ERR_UNKNOWN_INPUT || gate == IDEVS_ERR_TOO_LARGE || gate == IDEVS_ERR_MALFORMED ||
        gate == IDEVS_ERR_OLD_VERSION || gate == IDEVS_ERR_VERSION || gate == IDEVS_ERR_SUITE)
        return true;
    return pool_owns(l, idevs_deployment_partition_of_id(l->deployment, probe->message_id.b));
}

idevs_err idevs_launcher_adopt(idevs_launcher *l, const char *state_dir, char *why, size_t why_len)
{
    if (l == NULL || state_dir == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (!l->started)
        return idevs_fail(why, why_len, IDEVS_ERR_NOT_NOW, "the process is not started");
    int dirfd = -1;
    char problem[512] = "";
    idevs_err err = launcher_state_dir_open(state_dir, &dirfd, problem, sizeof problem);
    if (err != IDEVS_OK)
        return idevs_fail(why, why_len, err, "'%s': %s", state_dir, problem);
    struct stat theirs, ours;
    if (fstat(dirfd, &theirs) != 0 || fstat(l->state_dirfd, &ours) != 0 ||
        (theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino)) {
        close(dirfd);
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "'%s' is this broker's own state directory", state_dir);
    }
    size_t taken = 0;
    err = replay_record_adopt(l, dirfd, problem, sizeof problem);
    if (err == IDEVS_OK)
        err = outbox_adopt(l, dirfd, &taken, problem, sizeof problem);
    close(dirfd);
    if (err != IDEVS_OK)
        return idevs_fail(why, why_len, err, "'%s': %s", state_dir, problem);
    launcher_event(l, IDEVS_LAUNCHER_EVENT_NOTICE, "adopted the replay record and %zu kept output(s) of '%s'", taken,
                   state_dir);
    return IDEVS_OK;
}

idevs_err idevs_launcher_set_owned(idevs_launcher *l, const char *partitions, char *why, size_t why_len)
{
    if (l == NULL)
        return IDEVS_ERR_INVALID_ARG;
    return pool_set_owned(l, partitions, why, why_len);
}

idevs_err idevs_launcher_deliver_partitioned(idevs_launcher *l, const char *client, const char *topic,
                                             const uint8_t *envelope, size_t len, const uint8_t *correlation,
                                             size_t correlation_len, const char *partition_text,
                                             uint64_t *delivery_id)
{
    if (l == NULL || topic == NULL || envelope == NULL || len == 0 || (correlation == NULL && correlation_len > 0))
        return IDEVS_ERR_INVALID_ARG;
    if (!l->started || l->stopping)
        return IDEVS_ERR_NOT_NOW;
    if (l->joining) { /* no compartment here holds the process's keys: nothing is routed (join.c) */
        l->stats.joining_refused++;
        return IDEVS_ERR_JOINING;
    }
    size_t topic_len = strnlen(topic, IDEVS_TOPIC_MAX + 1);
    if (topic_len == 0 || topic_len > IDEVS_TOPIC_MAX)
        return IDEVS_ERR_INVALID_ARG;
    if (correlation_len > LAUNCHER_CORRELATION_MAX)
        return IDEVS_ERR_TOO_LARGE;
    delivery probe;
    memset(&probe, 0, sizeof probe);
    uint64_t who = retransmits_client(client);
    idevs_err refused = gate_check(l, topic, envelope, len, &probe);
    uint32_t p = 0;
    bool keyed = partition_text != NULL && idevs_deployment_partition_parse(l->deployment, partition_text, &p);
    idevs_topic_kind kind = idevs_launcher_topic_kind(l, topic, NULL);
    if (l->owned != NULL && !owned_here(l, kind, &probe, refused)) {
        l->stats.not_owner++;
        return IDEVS_ERR_NOT_OWNER;
    }
    /* The client that delivered this envelope before, sending it again: done already (the record refuses it),
     * or still queued, byte for byte. */
    if ((refused == IDEVS_ERR_REPLAY || (refused == IDEVS_OK && probe.tracked)) && retransmits_by(l, &probe, who) &&
        (refused == IDEVS_ERR_REPLAY || shares_queued_copy(l, &probe, envelope, len))) {
        l->stats.duplicates++;
        return IDEVS_ERR_DUPLICATE;
    }
    if (refused == IDEVS_OK)
        refused = admit(l, client, &probe, envelope, len);
    if (refused != IDEVS_OK) {
        if (refused == IDEVS_ERR_REPLAY || refused == IDEVS_ERR_OUTSIDE_WINDOW ||
            refused == IDEVS_ERR_EPOCH_FORGOTTEN)
            l->stats.replays_refused++;
        return refused;
    }
    if (!retransmits_note(l, &probe, who))
        return IDEVS_ERR_NOMEM;
    delivery *d = calloc(1, sizeof *d);
    if (d == NULL)
        return IDEVS_ERR_NOMEM;
    d->tracked = probe.tracked;
    d->sender = probe.sender;
    d->instance = probe.instance;
    d->epoch = probe.epoch;
    d->sequence = probe.sequence;
    d->message_id = probe.message_id;
    d->response = kind == IDEVS_TOPIC_RESPONSE || kind == IDEVS_TOPIC_RECEIPT; /* they free room: never held */
    d->receipt = kind == IDEVS_TOPIC_RECEIPT;
    d->topic = malloc(topic_len + 1);
    d->envelope = malloc(len);
    d->correlation = correlation_len > 0 ? malloc(correlation_len) : NULL;
    if (d->topic == NULL || d->envelope == NULL || (correlation_len > 0 && d->correlation == NULL) ||
        !shares_take(l, client, d, len)) {
        delivery_free(d);
        return IDEVS_ERR_NOMEM;
    }
    memcpy(d->topic, topic, topic_len + 1);
    memcpy(d->envelope, envelope, len);
    d->envelope_len = len;
    l->queue_bytes += len; /* until deliveries_forget() */
    if (correlation_len > 0)
        memcpy(d->correlation, correlation, correlation_len);
    d->correlation_len = correlation_len;
    d->id = l->next_id++;
    if (partition_text != NULL && !keyed)
        l->stats.partition_ignored++;
    launcher_instance *c = pool_choose(l, d, keyed ? (int64_t)p : -1);
    deliveries_append(c, d);
    l->stats.delivered++;
    if (c->state != IDEVS_LAUNCHER_READY)
        l->stats.queued_while_down++; /* held for the next compartment, never dropped for its absence */
    if (delivery_id != NULL)
        *delivery_id = d->id;
    if (c->state == IDEVS_LAUNCHER_READY) {
        supervise_send_queued(c);
        supervise_update_channel_events(c);
        supervise_arm_timer(l);
    }
    return IDEVS_OK;
}

idevs_err idevs_launcher_poll(idevs_launcher *l, int timeout_ms, const idevs_launcher_callbacks *cb)
{
    if (l == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (!l->started)
        return IDEVS_ERR_NOT_NOW;
    int64_t limit = timeout_ms < 0 ? -1 : launcher_now_ms() + timeout_ms;
    for (;;) {
        int work = supervise_step(l, cb);
        supervise_arm_timer(l);
        if (work > 0 || !l->started)
            return IDEVS_OK;
        int64_t now = launcher_now_ms();
        if (limit >= 0 && now >= limit)
            return IDEVS_OK;
        int64_t next = supervise_next_deadline(l);
        int64_t until = limit;
        if (next >= 0 && (until < 0 || next < until))
            until = next;
        supervise_wait(l, until < 0 ? -1 : (until > now ? (int)(until - now) : 0));
    }
}

int idevs_launcher_fd(const idevs_launcher *l)
{
    return l != NULL ? l->epfd : -1;
}

bool idevs_launcher_transferring(const idevs_launcher *l)
{
    for (size_t i = 0; l != NULL && i < l->instance_count; i++) {
        const launcher_instance *c = &l->instances[i];
        if (c->have_channel && c->in_flight > 0 && (idevs_channel_pending(&c->ch) || c->ch.in_len > c->ch.in_off))
            return true;
    }
    return false;
}

int idevs_launcher_next_timeout_ms(const idevs_launcher *l)
{
    if (l == NULL)
        return -1;
    int64_t next = supervise_next_deadline(l);
    if (next < 0)
        return -1;
    int64_t left = next - launcher_now_ms();
    return left <= 0 ? 0 : (left > 1000000000 ? 1000000000 : (int)left);
}

/* ---- introspection ---- */

void idevs_launcher_get_stats(const idevs_launcher *l, idevs_launcher_stats *out)
{
    if (out == NULL)
        return;
    if (l == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = l->stats;
    out->outbox = l->outbox.count;
    out->state = pool_state(l);
    out->pid = 0;
    out->in_flight = 0;
    out->instances = l->instance_count;
    out->instances_ready = 0;
    for (size_t i = 0; i < l->instance_count; i++) {
        const launcher_instance *c = &l->instances[i];
        if (out->pid == 0 && c->have_child)
            out->pid = c->child.pid;
        out->in_flight += c->in_flight;
        out->instances_ready += c->state == IDEVS_LAUNCHER_READY;
    }
    out->queue_depth = l->count + l->refused_count;
    out->queue_limit = l->queue_limit;
}

const uint8_t *idevs_launcher_measurement(const idevs_launcher *l)
{
    return l != NULL ? l->image.measurement : NULL;
}

const uint8_t *idevs_launcher_descriptor_digest(const idevs_launcher *l)
{
    return l != NULL ? l->image.descriptor_digest : NULL;
}

const idevs_uuid *idevs_launcher_program(const idevs_launcher *l)
{
    return l != NULL ? &l->program : NULL;
}

const char *idevs_launcher_name(const idevs_launcher *l)
{
    return l != NULL ? l->name : NULL;
}

const char *idevs_launcher_descriptor_path(const idevs_launcher *l)
{
    return l != NULL ? l->descriptor_path : NULL;
}

const uint8_t *idevs_launcher_descriptor_bytes(const idevs_launcher *l, size_t *len)
{
    if (len != NULL)
        *len = l != NULL ? l->descriptor_len : 0;
    return l != NULL ? l->descriptor : NULL;
}

const char *idevs_launcher_certificate_topic(const idevs_launcher *l)
{
    return l != NULL ? l->certificate_topic : NULL;
}

const char *idevs_launcher_descriptor_topic(const idevs_launcher *l)
{
    return l != NULL ? l->descriptor_topic : NULL;
}

idevs_err idevs_launcher_descriptor_changed(const idevs_launcher *l, bool *changed,
                                            uint8_t now_digest[IDEVS_LAUNCHER_DIGEST_LEN], char *why, size_t why_len)
{
    char sink[8];
    idevs_why_or_sink(&why, &why_len, sink, sizeof sink);
    if (l == NULL || changed == NULL)
        return IDEVS_ERR_INVALID_ARG;
    uint8_t *bytes = NULL;
    size_t len = 0;
    idevs_err err = idevs_deployment_read_file(l->descriptor_path, &bytes, &len, why, why_len);
    if (err != IDEVS_OK)
        return err;
    uint8_t digest[IDEVS_SHA256_LEN];
    err = idevs_sha256(bytes, len, digest);
    free(bytes);
    if (err != IDEVS_OK)
        return err;
    *changed = !idevs_ct_equal(digest, l->image.descriptor_digest, sizeof digest);
    if (now_digest != NULL)
        memcpy(now_digest, digest, sizeof digest);
    return IDEVS_OK;
}

size_t idevs_launcher_chain_count(const idevs_launcher *l)
{
    const launcher_instance *c = pool_chain_holder(l);
    return c != NULL ? c->chain.count : 0;
}

const uint8_t *idevs_launcher_chain_der(const idevs_launcher *l, size_t index, size_t *len)
{
    const launcher_instance *c = pool_chain_holder(l);
    return idevs_der_chain_at(c != NULL ? &c->chain : NULL, index, len);
}

const char *idevs_launcher_instance_certificate_topic(const idevs_launcher *l, size_t instance)
{
    return l != NULL && instance < l->instance_count ? l->instance_topics[instance] : NULL;
}

pid_t idevs_launcher_instance_pid(const idevs_launcher *l, size_t instance)
{
    return l != NULL && instance < l->instance_count && l->instances[instance].have_child
               ? l->instances[instance].child.pid
               : 0;
}

size_t idevs_launcher_instance_count(const idevs_launcher *l)
{
    return l != NULL ? l->instance_count : 0;
}

size_t idevs_launcher_instance_chain_count(const idevs_launcher *l, size_t instance)
{
    return l != NULL && instance < l->instance_count ? l->instances[instance].chain.count : 0;
}

const uint8_t *idevs_launcher_instance_chain_der(const idevs_launcher *l, size_t instance, size_t index, size_t *len)
{
    bool ok = l != NULL && instance < l->instance_count;
    return idevs_der_chain_at(ok ? &l->instances[instance].chain : NULL, index, len);
}

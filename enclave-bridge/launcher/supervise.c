/* Supervision: the compartment's frames, its exit, kills, restarts with backoff, timers and waiting.
 *
 * States: STARTING (Init sent, CertifyRequest awaited) -> CERTIFYING (Certified sent, Ready awaited) -> READY.
 * Any end (Fatal, end of stream, a malformed frame, a timeout) leads to EXITING, which lasts until the child is
 * reaped; then BACKOFF until the restart (or STOPPED during a blocking start or a stop). The child is signalled
 * only while it is unreaped, so its pid cannot have been reused; with a pidfd, not even in theory. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "idevs_envelope.h"
#include "launcher_internal.h"

#define REAP_POLL_MS 10 /* without a pidfd, how often an exiting child is checked for */

int64_t launcher_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t launcher_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bool supervise_live(const launcher_instance *c)
{
    return c->state == IDEVS_LAUNCHER_STARTING || c->state == IDEVS_LAUNCHER_CERTIFYING ||
           c->state == IDEVS_LAUNCHER_READY || c->state == IDEVS_LAUNCHER_JOINING;
}

idevs_err supervise_send(launcher_instance *c, const Idevs__Bridge__V1__Frame *frame)
{
    if (!c->have_channel)
        return IDEVS_ERR_CHANNEL_CLOSED;
    return idevs_channel_send(&c->ch, frame, 0);
}

idevs_err supervise_flush(launcher_instance *c, int timeout_ms)
{
    if (!c->have_channel)
        return IDEVS_ERR_CHANNEL_CLOSED;
    if (!idevs_channel_pending(&c->ch))
        return IDEVS_OK;
    return idevs_channel_flush(&c->ch, timeout_ms);
}

/* ---- the epoll set and the timer ---- */

static void ep_ctl(idevs_launcher *l, int op, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(l->epfd, op, fd, &ev);
}

void supervise_update_channel_events(launcher_instance *c)
{
    idevs_launcher *l = c->l;
    if (!c->have_channel)
        return;
    uint32_t want = EPOLLIN | (idevs_channel_pending(&c->ch) ? EPOLLOUT : 0u);
    if (want != c->epoll_channel_events) {
        ep_ctl(l, EPOLL_CTL_MOD, c->ch.fd, want);
        c->epoll_channel_events = want;
    }
}

void supervise_close_channel(launcher_instance *c)
{
    idevs_launcher *l = c->l;
    if (!c->have_channel)
        return;
    ep_ctl(l, EPOLL_CTL_DEL, c->ch.fd, 0);
    idevs_channel_close(&c->ch); /* cleanses its buffers */
    c->have_channel = false;
    c->epoll_channel_events = 0;
}

static void close_child(launcher_instance *c)
{
    idevs_launcher *l = c->l;
    if (c->child.pidfd >= 0) {
        ep_ctl(l, EPOLL_CTL_DEL, c->child.pidfd, 0);
        close(c->child.pidfd);
    }
    c->child.pidfd = -1;
    c->child.pid = 0;
    c->have_child = false;
}

/* How long the compartment may go without progress on its oldest delivery: the deployment's event timeout, plus
 * 1 ms per LAUNCHER_TIMEOUT_BYTES_PER_MS of that delivery's envelope. A large envelope is opened, copied to the
 * logic process and back and sealed inside the compartment, where the launcher sees no byte move; on a busy
 * host that takes longer than the timeout a small event needs (16 MiB: 4 s more). */
static uint32_t event_timeout_now(const launcher_instance *c)
{
    const idevs_launcher *l = c->l;
    size_t extra = c->head != NULL ? c->head->envelope_len / LAUNCHER_TIMEOUT_BYTES_PER_MS : 0;
    return l->event_timeout_ms + (uint32_t)(extra < 600000 ? extra : 600000);
}

static int64_t state_deadline(const launcher_instance *c)
{
    switch (c->state) {
    case IDEVS_LAUNCHER_STARTING:
    case IDEVS_LAUNCHER_CERTIFYING:
        return c->start_deadline_ms;
    case IDEVS_LAUNCHER_READY:
        return c->in_flight > 0 ? c->progress_ms + event_timeout_now(c) : -1;
    case IDEVS_LAUNCHER_EXITING: {
        int64_t poll_reap = c->child.pidfd < 0 ? launcher_now_ms() + REAP_POLL_MS : -1;
        if (c->kill_sent)
            return poll_reap;
        return poll_reap >= 0 && poll_reap < c->exit_deadline_ms ? poll_reap : c->exit_deadline_ms;
    }
    case IDEVS_LAUNCHER_BACKOFF:
        return c->restart_at_ms;
    default:
        return -1;
    }
}

static int64_t earlier(int64_t at, int64_t other)
{
    return other >= 0 && (at < 0 || other < at) ? other : at;
}

int64_t supervise_next_deadline(const idevs_launcher *l)
{
    if (l->refused_count > 0 && !l->stopping)
        return launcher_now_ms(); /* refused deliveries wait for a poll to be ended */
    int64_t at = -1;
    bool running = false;
    for (size_t i = 0; i < l->instance_count; i++) {
        const launcher_instance *c = &l->instances[i];
        at = earlier(at, state_deadline(c));
        running = running || c->state != IDEVS_LAUNCHER_STOPPED;
        /* The certificate's renewal is due by the wall clock, which is looked at every CERTIFY_RENEW_CHECK_MS. */
        if (c->state == IDEVS_LAUNCHER_READY && c->renew_at != 0)
            at = earlier(at, c->renew_check_ms);
    }
    if (running) {
        at = earlier(at, replay_record_deadline(l));
        at = earlier(at, join_deadline(l));
        /* the outbox's next copy: a poll must come then, traffic or not */
        if (l->outbox.count > 0)
            at = earlier(at, l->outbox.next_due_ms);
    }
    return at;
}

void supervise_arm_timer(idevs_launcher *l)
{
    int64_t at = supervise_next_deadline(l);
    if (at == l->timer_armed_ms)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (at >= 0) {
        if (at == 0)
            at = 1; /* zero would disarm */
        its.it_value.tv_sec = at / 1000;
        its.it_value.tv_nsec = (long)(at % 1000) * 1000000L;
    }
    if (timerfd_settime(l->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        l->timer_armed_ms = at;
}

void supervise_wait(idevs_launcher *l, int wait_ms)
{
    struct epoll_event evs[4];
    int n = epoll_wait(l->epfd, evs, 4, wait_ms);
    for (int i = 0; i < n; i++) {
        if (evs[i].data.fd == l->timerfd) {
            uint64_t expirations;
            ssize_t ignored = read(l->timerfd, &expirations, sizeof expirations);
            (void)ignored;
            l->timer_armed_ms = -1;
        }
    }
}

/* ---- ends ---- */

static void note(launcher_instance *c, const char *fmt, va_list ap)
{
    if (c->exit_note[0] != '\0')
        return; /* the first explanation is the one that matters */
    vsnprintf(c->exit_note, sizeof c->exit_note, fmt, ap);
}

static void signal_child(launcher_instance *c, int sig)
{
    if (!c->have_child)
        return;
    if (c->child.pidfd >= 0) {
        if (syscall(SYS_pidfd_send_signal, c->child.pidfd, sig, NULL, 0) == 0 || errno == ESRCH)
            return;
    }
    kill(c->child.pid, sig); /* unreaped: the pid is still ours */
}

void supervise_kill(launcher_instance *c, idevs_err err, const char *fmt, ...)
{
    idevs_launcher *l = c->l;
    if (!c->have_child)
        return;
    va_list ap;
    va_start(ap, fmt);
    note(c, fmt, ap);
    va_end(ap);
    if (!c->kill_sent) {
        signal_child(c, SIGKILL);
        c->kill_sent = true;
        c->killed_by_us = true;
        l->stats.killed++;
    }
    if (c->exit_err == IDEVS_OK)
        c->exit_err = err;
    if (!l->stopping)
        c->abnormal = true;
    supervise_close_channel(c);
    c->state = IDEVS_LAUNCHER_EXITING;
    c->exit_deadline_ms = launcher_now_ms();
}

void supervise_expect_exit(launcher_instance *c, idevs_err err, unsigned grace_ms)
{
    idevs_launcher *l = c->l;
    if (c->exit_err == IDEVS_OK)
        c->exit_err = err;
    if (!l->stopping) {
        c->abnormal = true;
        supervise_close_channel(c);
    }
    if (c->state != IDEVS_LAUNCHER_EXITING) {
        c->state = IDEVS_LAUNCHER_EXITING;
        c->exit_deadline_ms = launcher_now_ms() + grace_ms;
    }
}

static void protocol_error(launcher_instance *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void protocol_error(launcher_instance *c, const char *fmt, ...)
{
    idevs_launcher *l = c->l;
    l->stats.protocol_errors++;
    va_list ap;
    va_start(ap, fmt);
    char what[256];
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    supervise_kill(c, IDEVS_ERR_FRAME, "%s", what);
}

static void describe_status(char *out, size_t len, int status, bool known)
{
    if (!known)
        snprintf(out, len, "ended (its exit status was collected elsewhere)");
    else if (WIFEXITED(status))
        snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(status));
        snprintf(out, len, "was killed by signal %d (SIG%s)", WTERMSIG(status), abbrev != NULL ? abbrev : "?");
    } else
        snprintf(out, len, "ended with wait status 0x%x", (unsigned)status);
}

/* The launcher never stops restarting (the backoff stops growing at backoff_max_ms): what is queued waits for the
 * next compartment, and inputs keep being queued meanwhile, up to the queue's bounds. The line says so, with how
 * many wait, so that an operator reading it during a crash loop knows nothing queued was dropped. */
static void announce_restart(launcher_instance *c, unsigned delay)
{
    idevs_launcher *l = c->l;
    size_t waiting = c->count, queued = l->count + l->refused_count;
    launcher_event(l, IDEVS_LAUNCHER_EVENT_RESTARTING,
                   "%srestarting in %u ms; %zu queued deliver%s wait%s for it (queue %zu/%zu; inputs are queued "
                   "meanwhile, beyond the queue refused as queue_full)", pool_label(c), delay, waiting,
                   waiting == 1 ? "y" : "ies", waiting == 1 ? "s" : "", queued, l->queue_limit);
}

static void schedule_restart(launcher_instance *c)
{
    idevs_launcher *l = c->l;
    int64_t now = launcher_now_ms();
    if (c->ready_at_ms > 0 && now - c->ready_at_ms >= (int64_t)l->cfg.stable_after_ms)
        c->backoff_ms = l->cfg.backoff_initial_ms;
    c->ready_at_ms = 0;
    unsigned delay = c->backoff_ms;
    c->backoff_ms = c->backoff_ms > l->cfg.backoff_max_ms / 2 ? l->cfg.backoff_max_ms : c->backoff_ms * 2;
    if (c->backoff_ms == 0)
        c->backoff_ms = 1;
    c->state = IDEVS_LAUNCHER_BACKOFF;
    c->restart_at_ms = now + delay;
    announce_restart(c, delay);
}

static void handle_reaped(launcher_instance *c, int status, bool known, const idevs_launcher_callbacks *cb)
{
    idevs_launcher *l = c->l;
    char how[128];
    if (c->killed_by_us && known && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        snprintf(how, sizeof how, "was killed by the launcher");
    else
        describe_status(how, sizeof how, status, known);
    if (c->exit_note[0] != '\0')
        snprintf(l->stats.last_exit, sizeof l->stats.last_exit, "%s%.100s: %.150s", pool_label(c), how,
                 c->exit_note);
    else
        snprintf(l->stats.last_exit, sizeof l->stats.last_exit, "%s%s", pool_label(c), how);
    supervise_close_channel(c);
    close_child(c);
    bool planned = l->stopping && !c->abnormal;
    if (!planned)
        launcher_event(l, c->killed_by_us ? IDEVS_LAUNCHER_EVENT_KILLED : IDEVS_LAUNCHER_EVENT_EXITED, "%s",
                       l->stats.last_exit);

    /* The oldest unfinished delivery was being processed when the compartment died: count it against it. */
    if (!planned && c->in_flight > 0 && c->head != NULL && c->head->sent)
        c->head->attempts++;
    deliveries_rewind(c);
    idevs_err failure = c->exit_err != IDEVS_OK ? c->exit_err : IDEVS_ERR_CHANNEL_CLOSED;
    while (c->head != NULL && c->head->attempts >= l->cfg.max_attempts) {
        delivery *d = c->head;
        deliveries_unlink(d);
        l->stats.given_up++;
        l->stats.done++;
        launcher_event(l, IDEVS_LAUNCHER_EVENT_GIVEN_UP,
                       "gave up delivery %llu on topic '%s' after %u attempts: %s", (unsigned long long)d->id,
                       d->topic, d->attempts, idevs_strerror(failure));
        uint64_t id = d->id;
        deliveries_forget(l, d);
        if (cb != NULL && cb->on_done != NULL)
            cb->on_done(cb->arg, id, failure);
    }

    if (l->stopping || l->blocking_start == c) {
        c->state = IDEVS_LAUNCHER_STOPPED;
        return;
    }
    schedule_restart(c);
}

bool supervise_try_reap(launcher_instance *c, const idevs_launcher_callbacks *cb)
{
    if (!c->have_child)
        return false;
    int status = 0;
    pid_t r = waitpid(c->child.pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
        return false;
    handle_reaped(c, status, r == c->child.pid, cb);
    return true;
}

/* ---- starting ---- */

idevs_err supervise_begin_start(launcher_instance *c, char *why, size_t why_len)
{
    idevs_launcher *l = c->l;
    c->kill_sent = c->killed_by_us = c->abnormal = false;
    c->exit_err = IDEVS_OK;
    c->exit_note[0] = '\0';
    c->ready_at_ms = 0;
    c->spawn_us = launcher_now_us();
    certify_secrets secrets;
    idevs_err err = certify_prepare(l, &secrets, why, why_len);
    if (err != IDEVS_OK)
        return err;
    err = idevs_backend_launch(l->backend, &l->image, &c->child, why, why_len);
    if (err != IDEVS_OK) {
        certify_secrets_clear(&secrets);
        return err;
    }
    c->have_child = true;
    l->stats.started++;
    idevs_channel_init(&c->ch, c->child.channel_fd, 0);
    c->have_channel = true;
    c->epoll_channel_events = EPOLLIN;
    ep_ctl(l, EPOLL_CTL_ADD, c->ch.fd, EPOLLIN);
    if (c->child.pidfd >= 0)
        ep_ctl(l, EPOLL_CTL_ADD, c->child.pidfd, EPOLLIN);
    c->state = IDEVS_LAUNCHER_STARTING;
    c->start_deadline_ms = launcher_now_ms() + l->cfg.start_timeout_ms;
    char init_why[256] = "";
    err = certify_send_init(c, &secrets, init_why, sizeof init_why);
    certify_secrets_clear(&secrets);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        /* The program closed its end before reading Init (it is ending by itself): its exit says more than the
         * failed send, and how it exited is reported as for one that did not answer Init. */
        supervise_expect_exit(c, err, l->cfg.exit_grace_ms);
    else if (err != IDEVS_OK)
        supervise_kill(c, err, "%s", init_why); /* reaped and reported by the caller's loop */
    return IDEVS_OK;
}

/* ---- frames ---- */

/* The compartment's Fatal reason, for the log: printable ASCII only, bounded. */
void supervise_sanitize(char *out, size_t out_len, const char *in)
{
    size_t j = 0;
    for (size_t i = 0; in != NULL && in[i] != '\0' && j + 1 < out_len && i < LAUNCHER_REASON_MAX; i++)
        out[j++] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
    out[j] = '\0';
}

static bool topic_ok(const char *t)
{
    if (t == NULL)
        return false;
    size_t n = strnlen(t, IDEVS_TOPIC_MAX + 1);
    return n > 0 && n <= IDEVS_TOPIC_MAX;
}

/* The envelope itself, without a key: from this process, to the receiver the deployment declares for the topic,
 * and for a request, carrying its own message id, then a sealed token, as correlation data (of the one size every
 * request's has, idevs_request_correlation_len_ok). Only the key holder can write one; a logic that wrote raw
 * bytes would fail here. */
static const char *envelope_problem(const idevs_launcher *l, const Idevs__Bridge__V1__Publish *p, size_t to,
                                    bool request, int64_t instance)
{
    idevs_envelope_header h;
    if (idevs_envelope_peek(p->envelope.data, p->envelope.len, &h) != IDEVS_OK)
        return "a publication that is not a well-formed envelope";
    if (!idevs_uuid_equal(&h.sender, &l->program))
        return "a publication sealed by someone else than this process";
    if (instance >= 0 && h.instance != (uint64_t)instance) /* two instances must never share epoch numbers */
        return "a publication sealed as another instance than its own";
    if (!idevs_uuid_equal(&h.recipient, &l->deployment->services[to].uuid))
        return "a publication sealed to another receiver than its topic's";
    if (request && (!idevs_request_correlation_len_ok(p->correlation_data.len) ||
                    memcmp(p->correlation_data.data, h.message_id.b, IDEVS_UUID_LEN) != 0))
        return "a request whose correlation data is not its message id and sealed state";
    return NULL;
}

/* Checks a Publish against the deployment: a declared output, or a declared request with its response topic. */
const char *supervise_publish_problem(const idevs_launcher *l, const Idevs__Bridge__V1__Publish *p, int64_t instance)
{
    if (!topic_ok(p->topic))
        return "a publication without a valid topic";
    if (p->envelope.len == 0 || p->envelope.data == NULL || p->envelope.len > l->max_envelope)
        return "a publication whose envelope is empty or over the size limit";
    if (p->qos > 2)
        return "a publication with a QoS above 2";
    if (p->kept.len > l->max_envelope)
        return "a publication whose kept copy is over the size limit";
    const idevs_deployment *d = l->deployment;
    bool has_rt = p->response_topic != NULL && p->response_topic[0] != '\0';
    for (size_t i = 0; i < d->output_count; i++) {
        if (strcmp(d->outputs[i].topic, p->topic) != 0)
            continue;
        if (has_rt || p->correlation_data.len != 0)
            return "a publication to an output with a response topic or correlation data";
        if ((int)p->qos != d->outputs[i].qos)
            return "a publication with another QoS than its output declares";
        return envelope_problem(l, p, d->outputs[i].to, false, instance);
    }
    for (size_t i = 0; i < d->request_count; i++) {
        if (strcmp(d->requests[i].topic, p->topic) != 0)
            continue;
        if (!has_rt || strcmp(p->response_topic, d->requests[i].response_topic) != 0)
            return "a request without its declared response topic";
        if (p->correlation_data.len == 0 || p->correlation_data.len > LAUNCHER_CORRELATION_MAX)
            return "a request without valid correlation data";
        if ((int)p->qos != d->requests[i].qos)
            return "a request with another QoS than declared";
        return envelope_problem(l, p, d->requests[i].to, true, instance);
    }
    size_t receipts = topics_receipt_service(d, p->topic);
    if (receipts != SIZE_MAX) {
        if (has_rt || p->correlation_data.len != 0 || p->delivery_id == 0)
            return "a receipt with a response topic or correlation data, or for no delivery";
        if (p->qos != LAUNCHER_RECEIPT_QOS)
            return "a receipt with another QoS than 1";
        return envelope_problem(l, p, receipts, false, instance);
    }
    return "a publication to a topic the deployment does not declare";
}

static void emit(idevs_launcher *l, const idevs_launcher_callbacks *cb, const idevs_launcher_publish *p, bool kept,
                 const uint8_t cert_digest[IDEVS_SHA256_LEN])
{
    if (!kept)
        outbox_keep(l, p, cert_digest); /* before it leaves: kept until its receipt */
    l->stats.published++;
    if (cb != NULL && cb->on_publish != NULL)
        cb->on_publish(cb->arg, p);
}

static void handle_publish(launcher_instance *c, const Idevs__Bridge__V1__Publish *p, const idevs_launcher_callbacks *cb)
{
    idevs_launcher *l = c->l;
    const char *problem = supervise_publish_problem(l, p, c->number);
    if (problem != NULL) {
        protocol_error(c, "it sent %s", problem);
        return;
    }
    if (p->response_topic != NULL && p->response_topic[0] != '\0') /* a request: its answer comes back here */
        pool_note_request(l, c, p->correlation_data.data);
    if (p->delivery_id == 0 && !pool_timer_holder(l, c)) {
        l->stats.timer_dropped++; /* a run of an instance that lost the timer (or has not got it yet) */
        return;
    }
    if (p->delivery_id == 0) { /* the logic's timer: nothing to hold it for */
        bool rt = p->response_topic != NULL && p->response_topic[0] != '\0';
        idevs_launcher_publish pub = {
            .delivery_id = 0, .topic = p->topic, .envelope = p->envelope.data, .envelope_len = p->envelope.len,
            .qos = (int)p->qos, .response_topic = rt ? p->response_topic : NULL,
            .correlation = rt ? p->correlation_data.data : NULL, .correlation_len = rt ? p->correlation_data.len : 0,
            .kept = p->kept.len > 0 ? p->kept.data : NULL, .kept_len = p->kept.len,
        };
        emit(l, cb, &pub, false, c->cert_digest);
        return;
    }
    delivery *d = deliveries_find_sent(c, p->delivery_id);
    if (d == NULL) {
        protocol_error(c, "it published for delivery %llu, which is not in progress",
                       (unsigned long long)p->delivery_id);
        return;
    }
    idevs_err err = delivery_hold(l, d, p);
    if (err == IDEVS_ERR_TOO_LARGE)
        protocol_error(c, "delivery %llu caused more than %u publications or %u bytes", (unsigned long long)d->id,
                       LAUNCHER_PUBLISH_MAX, LAUNCHER_HELD_BYTES_MAX);
    else if (err != IDEVS_OK)
        supervise_kill(c, err, "holding a publication failed: %s", idevs_strerror(err));
}

#define TIMER_WARN_INTERVAL_MS 60000

/* A timer run the compartment refused (Done with delivery_id 0): counted, and warned at most once a minute. */
static void timer_failed(idevs_launcher *l, uint32_t status)
{
    idevs_err err = status < (uint32_t)IDEVS_ERR_COUNT ? (idevs_err)status : IDEVS_ERR_LOGIC;
    l->stats.timer_failed++;
    int64_t now = launcher_now_ms();
    if (l->timer_warned_ms != 0 && now - l->timer_warned_ms < TIMER_WARN_INTERVAL_MS)
        return;
    l->timer_warned_ms = now;
    launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING, "dropped what its logic's timer emitted: %s (%s); %llu timer "
                   "run(s) dropped so far", idevs_err_name(err), idevs_strerror(err),
                   (unsigned long long)l->stats.timer_failed);
}

_Static_assert(IDEVS_LAUNCHER_REFUSALS_MAX == IDEVS_DEPLOYMENT_MAX_REFUSALS, "the plugin counts every code");

/* d (unlinked) is done: its held publications leave in order, then on_refused (when the logic gave a code),
 * then on_done. */
static void finish_delivery(idevs_launcher *l, delivery *d, idevs_err status, const idevs_launcher_callbacks *cb)
{
    for (held_publish *h = d->held; h != NULL; h = h->next)
        emit(l, cb, &h->p, h->kept, h->cert_digest);
    uint64_t id = d->id;
    uint32_t refusal = d->refusal;
    deliveries_forget(l, d);
    l->stats.done++;
    if (refusal != 0 && cb != NULL && cb->on_refused != NULL)
        cb->on_refused(cb->arg, id, refusal - 1, l->deployment->refusals[refusal - 1]);
    if (cb != NULL && cb->on_done != NULL)
        cb->on_done(cb->arg, id, status);
}

static void handle_done(launcher_instance *c, const Idevs__Bridge__V1__Done *done, const idevs_launcher_callbacks *cb)
{
    idevs_launcher *l = c->l;
    if (done->delivery_id == 0) {
        if (pool_timer_holder(l, c))
            timer_failed(l, done->status);
        return;
    }
    delivery *d = deliveries_find_sent(c, done->delivery_id);
    if (d == NULL) {
        protocol_error(c, "it finished delivery %llu, which is not in progress", (unsigned long long)done->delivery_id);
        return;
    }
    /* A refusal code is one the descriptor declares, for a delivery the logic refused; checked again here. */
    if (done->refusal > l->deployment->refusal_count || (done->refusal != 0 && done->status != IDEVS_ERR_LOGIC)) {
        protocol_error(c, "it finished delivery %llu with refusal code %u, which the descriptor does not declare "
                       "for that status", (unsigned long long)done->delivery_id, done->refusal);
        return;
    }
    d->refusal = done->refusal;
    deliveries_unlink(d);
    c->progress_ms = launcher_now_ms();
    idevs_err status = done->status < (uint32_t)IDEVS_ERR_COUNT ? (idevs_err)done->status : IDEVS_ERR_LOGIC;
    bool recorded = replay_record_done(l, d, status);
    /* Its outputs leave only once the record that holds its input is on disk: released now, a broker killed
     * before the next write would accept the input again after its restart, and produce them a second time.
     * A receipt it carries may name earlier deliveries of its turn, done but not written yet (dirty): it waits too.
     * Once one waits, the rest of the pass waits behind it, so that deliveries still end in order. */
    if (((recorded || l->replay.dirty) && d->held != NULL) || l->awaiting_head != NULL) {
        deliveries_await(l, d, status);
        return;
    }
    finish_delivery(l, d, status, cb);
}

/* The Done of this pass whose outputs wait for the record: one write (file and directory fsync'd) covers them
 * all, then they leave in order. A write that fails (the state directory read-only or full; warned once, retried
 * every LAUNCHER_REPLAY_SAVE_MS, not at each pass) does not hold them back: the traffic goes on, and the outputs
 * released without a record that covers their input are counted. */
static void release_awaiting(idevs_launcher *l, const idevs_launcher_callbacks *cb)
{
    if (l->awaiting_head == NULL)
        return;
    /* Their outputs to services with receipts go into the outbox before the record says their inputs are done: a
     * broker killed between the two then has the outputs to send again and runs the inputs again, which makes
     * the same outputs with the same message ids (compartment/logic_link.c), handled once by their receivers.
     * The other order would lose them: inputs done, outputs nowhere. */
    for (delivery *d = l->awaiting_head; d != NULL; d = d->next)
        for (held_publish *h = d->held; h != NULL; h = h->next) {
            outbox_keep(l, &h->p, h->cert_digest);
            h->kept = true;
        }
    bool durable = replay_record_save(l, REPLAY_SAVE_RELEASE);
    delivery *d = l->awaiting_head;
    l->awaiting_head = l->awaiting_tail = NULL; /* detached first: the callbacks may deliver */
    while (d != NULL) {
        delivery *next = d->next;
        d->next = NULL;
        if (!durable)
            l->stats.released_unrecorded += d->held_count;
        finish_delivery(l, d, d->done_status, cb);
        d = next;
    }
}

/* The compartment did not run an input (its table of outstanding requests is full): it waits for Resumed. */
static void handle_held(launcher_instance *c, const Idevs__Bridge__V1__Held *held)
{
    idevs_launcher *l = c->l;
    delivery *d = deliveries_find_sent(c, held->delivery_id);
    if (d == NULL || d->response) {
        protocol_error(c, "it held delivery %llu, which is not an input in progress",
                       (unsigned long long)held->delivery_id);
        return;
    }
    deliveries_hold_back(d);
    c->inputs_held = true;
    c->progress_ms = launcher_now_ms();
    l->stats.held++;
}

static void handle_ready(launcher_instance *c, const Idevs__Bridge__V1__Ready *ready)
{
    idevs_launcher *l = c->l;
    c->inputs_held = false;
    int64_t now_us = launcher_now_us();
    l->stats.last_ready_us = (uint64_t)(now_us - c->spawn_us);
    c->state = IDEVS_LAUNCHER_READY;
    c->ready_at_ms = launcher_now_ms();
    c->progress_ms = c->ready_at_ms;
    join_done(c);
    char logic[IDEVS_NAME_MAX + 1];
    supervise_sanitize(logic, sizeof logic, ready->logic_name);
    launcher_event(l, IDEVS_LAUNCHER_EVENT_CERTIFIED, "%scertified in %.1f ms, ready in %.1f ms (logic '%s', %s)",
                   pool_label(c), (double)l->stats.last_certified_us / 1000.0, (double)l->stats.last_ready_us / 1000.0, logic,
                   l->stats.last_keys_restored ? "keys restored" : "fresh keys");
}

/* Whether a frame is allowed in the launcher's state; when it is not, the compartment broke the protocol, and
 * complaint says how. */
static bool allowed_now(launcher_instance *c, bool allowed, const char *complaint)
{
    if (!allowed)
        protocol_error(c, "%s", complaint);
    return allowed;
}

static void handle_frame(launcher_instance *c, const Idevs__Bridge__V1__Frame *f, const idevs_launcher_callbacks *cb)
{
    idevs_launcher *l = c->l;
    switch (f->body_case) {
    case IDEVS__BRIDGE__V1__FRAME__BODY_FATAL: {
        char reason[LAUNCHER_REASON_MAX + 1];
        supervise_sanitize(reason, sizeof reason, f->fatal->reason);
        idevs_err status = f->fatal->status > 0 && f->fatal->status < (uint32_t)IDEVS_ERR_COUNT
                               ? (idevs_err)f->fatal->status
                               : IDEVS_ERR_LOGIC;
        if (c->exit_note[0] == '\0')
            snprintf(c->exit_note, sizeof c->exit_note, "%s", reason[0] != '\0' ? reason : idevs_strerror(status));
        supervise_expect_exit(c, status, l->cfg.exit_grace_ms);
        return;
    }
    case IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFY_REQUEST: {
        /* A joiner asks twice: for its temporary keys, then for the process's keys it was granted. */
        if (!allowed_now(c, c->state == IDEVS_LAUNCHER_STARTING ||
                                (c->state == IDEVS_LAUNCHER_JOINING && !f->certify_request->joining),
                         "it sent a second certificate request"))
            return;
        char why[256] = "";
        idevs_err err = certify_handle_request(c, f->certify_request, why, sizeof why);
        if (err == IDEVS_ERR_FRAME) {
            protocol_error(c, "%s", why);
            return;
        }
        if (err != IDEVS_OK) {
            supervise_kill(c, err, "certification failed: %s", why);
            return;
        }
        l->stats.last_certified_us = (uint64_t)(launcher_now_us() - c->spawn_us);
        join_began(c, f->certify_request->joining); /* before the state changes */
        c->state = f->certify_request->joining ? IDEVS_LAUNCHER_JOINING : IDEVS_LAUNCHER_CERTIFYING;
        return;
    }
    case IDEVS__BRIDGE__V1__FRAME__BODY_JOIN_ANSWER:
        if (allowed_now(c, f->join_answer->as_joiner ? c->state == IDEVS_LAUNCHER_JOINING
                                                     : c->state == IDEVS_LAUNCHER_READY,
                        "it answered a join it was not asked about"))
            join_answer(c, f->join_answer, cb);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_READY:
        if (allowed_now(c, c->state == IDEVS_LAUNCHER_CERTIFYING, "it said Ready before it was certified"))
            handle_ready(c, f->ready);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH:
        if (allowed_now(c, c->state == IDEVS_LAUNCHER_READY, "it published before it was ready"))
            handle_publish(c, f->publish, cb);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_DONE:
        if (allowed_now(c, c->state == IDEVS_LAUNCHER_READY, "it finished a delivery before it was ready"))
            handle_done(c, f->done, cb);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_RECEIPTED:
        if (allowed_now(c, c->state == IDEVS_LAUNCHER_READY && f->receipted->service < l->deployment->service_count &&
                               f->receipted->n_message_ids <= IDEVS_RECEIPT_IDS_MAX,
                        "it sent a receipt before it was ready, or for no declared service"))
            outbox_receipted(l, f->receipted);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_HELD:
        if (allowed_now(c, c->state == IDEVS_LAUNCHER_READY, "it held a delivery before it was ready"))
            handle_held(c, f->held);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_RESUMED:
        if (allowed_now(c, c->state == IDEVS_LAUNCHER_READY && c->inputs_held, "it resumed inputs it had not held"))
            c->inputs_held = false;
        return;
    default:
        protocol_error(c, "it sent a frame only the launcher may send (%d)", (int)f->body_case);
        return;
    }
}

/* Reads and handles every whole frame there is. */
static int read_frames(launcher_instance *c, const idevs_launcher_callbacks *cb)
{
    idevs_launcher *l = c->l;
    int work = 0;
    while (c->have_channel && supervise_live(c)) {
        Idevs__Bridge__V1__Frame *f = NULL;
        idevs_err err = idevs_channel_recv(&c->ch, &f, 0);
        if (err == IDEVS_ERR_TIMEOUT)
            break;
        work++;
        if (err == IDEVS_ERR_CHANNEL_CLOSED) {
            supervise_expect_exit(c, IDEVS_ERR_CHANNEL_CLOSED, l->cfg.exit_grace_ms);
            break;
        }
        if (err == IDEVS_ERR_FRAME) {
            protocol_error(c, "it sent a malformed, oversized or truncated frame");
            break;
        }
        if (err != IDEVS_OK) {
            supervise_kill(c, err, "reading its channel failed: %s", idevs_strerror(err));
            break;
        }
        handle_frame(c, f, cb);
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
    }
    return work;
}

/* During a stop: what the compartment still sends is read and dropped, so that it never blocks writing. */
static void drain(launcher_instance *c)
{
    while (c->have_channel) {
        Idevs__Bridge__V1__Frame *f = NULL;
        idevs_err err = idevs_channel_recv(&c->ch, &f, 0);
        if (err == IDEVS_ERR_TIMEOUT)
            return;
        if (err != IDEVS_OK) {
            supervise_close_channel(c);
            return;
        }
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
    }
}

void supervise_send_queued(launcher_instance *c)
{
    idevs_launcher *l = c->l;
    while (c->state == IDEVS_LAUNCHER_READY && c->next_send != NULL && c->in_flight < l->cfg.max_in_flight) {
        delivery *d = c->next_send;
        /* Inputs held: only responses go, each taken ahead of the waiting inputs (a walk past them). */
        if (c->inputs_held && !d->response && (d = deliveries_response_first(c)) == NULL)
            break;
        /* A copy of an envelope done since this one was queued (a duplicate, or a re-send after a restart whose
         * first copy finished): the new compartment's empty window would accept it again. */
        idevs_err replay = replay_record_check(l, d);
        if (replay != IDEVS_OK) {
            deliveries_unlink(d); /* moves next_send on */
            deliveries_refuse(l, d, replay);
            l->stats.replays_refused++;
            continue;
        }
        Idevs__Bridge__V1__Deliver del = IDEVS__BRIDGE__V1__DELIVER__INIT;
        del.delivery_id = d->id;
        del.topic = d->topic;
        del.envelope.data = d->envelope;
        del.envelope.len = d->envelope_len;
        del.correlation_data.data = d->correlation;
        del.correlation_data.len = d->correlation_len;
        /* In a pool, another instance may have run a copy of it: its table of handled ids does not know that. */
        bool handled = false;
        if (l->instance_count > 1 && d->tracked && !d->receipt)
            (void)replay_record_handled(l, d, &handled);
        del.handled = handled;
        Idevs__Bridge__V1__Frame frame = IDEVS__BRIDGE__V1__FRAME__INIT;
        frame.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER;
        frame.deliver = &del;
        /* Queued only: the Deliver frames of this pass leave together, in one send, below. */
        idevs_err err = c->have_channel ? idevs_channel_queue(&c->ch, &frame) : IDEVS_ERR_CHANNEL_CLOSED;
        if (err == IDEVS_ERR_QUEUE_FULL)
            break; /* the channel's send buffer is full: later */
        if (err == IDEVS_ERR_CHANNEL_CLOSED) {
            supervise_expect_exit(c, IDEVS_ERR_CHANNEL_CLOSED, l->cfg.exit_grace_ms);
            break;
        }
        if (err != IDEVS_OK) {
            supervise_kill(c, err, "sending a delivery failed: %s", idevs_strerror(err));
            break;
        }
        if (c->in_flight == 0)
            c->progress_ms = launcher_now_ms();
        d->sent = true;
        d->held_back = false;
        if (d->sends++ > 0)
            l->stats.resent++;
        c->in_flight++;
        c->next_send = d->next;
        l->stats.sent++;
    }
    if (supervise_live(c) && supervise_flush(c, 0) == IDEVS_ERR_CHANNEL_CLOSED)
        supervise_expect_exit(c, IDEVS_ERR_CHANNEL_CLOSED, l->cfg.exit_grace_ms);
}

/* Bytes moved over the channel since the last look are progress: a large frame in transit is not a hung
 * compartment (a compartment that neither reads nor writes moves none). */
static void note_moved(launcher_instance *c)
{
    if (c->have_channel && c->ch.moved != c->channel_moved) {
        c->channel_moved = c->ch.moved;
        c->progress_ms = launcher_now_ms();
    }
}

/* One instance's share of a pass: its deadlines, sends, flush, exit and restart. */
static int step_instance(launcher_instance *c, const idevs_launcher_callbacks *cb)
{
    idevs_launcher *l = c->l;
    int work = 0;
    if (supervise_live(c)) {
        note_moved(c);
        int64_t now = launcher_now_ms();
        if (c->state != IDEVS_LAUNCHER_READY && c->state != IDEVS_LAUNCHER_JOINING && now >= c->start_deadline_ms) {
            supervise_kill(c, IDEVS_ERR_TIMEOUT, "not ready within %u ms of its start",
                           l->cfg.start_timeout_ms);
            work++;
        } else if (c->state == IDEVS_LAUNCHER_READY && c->in_flight > 0 && now >= state_deadline(c)) {
            supervise_kill(c, IDEVS_ERR_TIMEOUT, "delivery %llu not answered within %u ms",
                           (unsigned long long)c->head->id, event_timeout_now(c));
            work++;
        }
    }
    if (c->state == IDEVS_LAUNCHER_READY) {
        work += certify_renew_if_due(c);
        supervise_send_queued(c);
    }
    if (supervise_live(c)) {
        idevs_err err = supervise_flush(c, 0);
        if (err == IDEVS_ERR_CHANNEL_CLOSED) {
            supervise_expect_exit(c, IDEVS_ERR_CHANNEL_CLOSED, l->cfg.exit_grace_ms);
            work++;
        }
        note_moved(c);
    }
    if (c->state == IDEVS_LAUNCHER_EXITING) {
        drain(c);
        if (supervise_try_reap(c, cb)) {
            work++;
        } else if (!c->kill_sent && launcher_now_ms() >= c->exit_deadline_ms) {
            supervise_kill(c, c->exit_err != IDEVS_OK ? c->exit_err : IDEVS_ERR_TIMEOUT,
                           "it did not exit within %u ms", l->cfg.exit_grace_ms);
            work++;
        }
    }
    if (c->state == IDEVS_LAUNCHER_BACKOFF && launcher_now_ms() >= c->restart_at_ms) {
        char why[256] = "";
        l->stats.restarts++;
        if (supervise_begin_start(c, why, sizeof why) != IDEVS_OK) {
            snprintf(l->stats.last_exit, sizeof l->stats.last_exit, "%scould not be started: %.200s",
                     pool_label(c), why);
            launcher_event(l, IDEVS_LAUNCHER_EVENT_START_FAILED, "%scould not be started: %s", pool_label(c), why);
            schedule_restart(c);
        }
        work++;
    }
    supervise_update_channel_events(c);
    return work;
}

int supervise_step(idevs_launcher *l, const idevs_launcher_callbacks *cb)
{
    int work = 0;
    if (cb != NULL) /* without callbacks (a blocking start or stop) they stay, and stop() abandons them */
        work += deliveries_report_refused(l, cb);
    bool running = false;
    for (size_t i = 0; i < l->instance_count; i++)
        if (supervise_live(&l->instances[i]))
            work += read_frames(&l->instances[i], cb);
    /* Even when a frame of this pass ended a compartment: what it finished before is done. */
    release_awaiting(l, cb);
    outbox_resend(l, cb);
    if (cb != NULL)
        work += join_step(l, cb);
    for (size_t i = 0; i < l->instance_count; i++) {
        work += step_instance(&l->instances[i], cb);
        running = running || l->instances[i].state != IDEVS_LAUNCHER_STOPPED;
    }
    pool_assign_timer(l);
    /* What no output waits for (a Done without publications) is written at most every LAUNCHER_REPLAY_SAVE_MS:
     * replayed after a broker crash, such an input publishes nothing again. The same write syncs what
     * release_awaiting() wrote into the kernel only. stop() writes the rest. */
    if (running)
        (void)replay_record_save(l, REPLAY_SAVE_DUE);
    return work;
}

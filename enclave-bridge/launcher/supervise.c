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

static bool live(const idevs_launcher *l)
{
    return l->state == IDEVS_LAUNCHER_STARTING || l->state == IDEVS_LAUNCHER_CERTIFYING ||
           l->state == IDEVS_LAUNCHER_READY;
}

idevs_err supervise_send(idevs_launcher *l, const Idevs__Bridge__V1__Frame *frame)
{
    if (!l->have_channel)
        return IDEVS_ERR_CHANNEL_CLOSED;
    return idevs_channel_send(&l->ch, frame, 0);
}

idevs_err supervise_flush(idevs_launcher *l, int timeout_ms)
{
    if (!l->have_channel)
        return IDEVS_ERR_CHANNEL_CLOSED;
    if (!idevs_channel_pending(&l->ch))
        return IDEVS_OK;
    return idevs_channel_flush(&l->ch, timeout_ms);
}

/* ---- the epoll set and the timer ---- */

static void ep_ctl(idevs_launcher *l, int op, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(l->epfd, op, fd, &ev);
}

void supervise_update_channel_events(idevs_launcher *l)
{
    if (!l->have_channel)
        return;
    uint32_t want = EPOLLIN | (idevs_channel_pending(&l->ch) ? EPOLLOUT : 0u);
    if (want != l->epoll_channel_events) {
        ep_ctl(l, EPOLL_CTL_MOD, l->ch.fd, want);
        l->epoll_channel_events = want;
    }
}

void supervise_close_channel(idevs_launcher *l)
{
    if (!l->have_channel)
        return;
    ep_ctl(l, EPOLL_CTL_DEL, l->ch.fd, 0);
    idevs_channel_close(&l->ch); /* cleanses its buffers */
    l->have_channel = false;
    l->epoll_channel_events = 0;
}

static void close_child(idevs_launcher *l)
{
    if (l->child.pidfd >= 0) {
        ep_ctl(l, EPOLL_CTL_DEL, l->child.pidfd, 0);
        close(l->child.pidfd);
    }
    l->child.pidfd = -1;
    l->child.pid = 0;
    l->have_child = false;
    l->stats.pid = 0;
}

/* How long the compartment may go without progress on its oldest delivery: the deployment's event timeout, plus
 * 1 ms per LAUNCHER_TIMEOUT_BYTES_PER_MS of that delivery's envelope. A large envelope is opened, copied to the
 * logic process and back and sealed inside the compartment, where the launcher sees no byte move; on a busy
 * host that takes longer than the timeout a small event needs (16 MiB: 4 s more). */
static uint32_t event_timeout_now(const idevs_launcher *l)
{
    size_t extra = l->head != NULL ? l->head->envelope_len / LAUNCHER_TIMEOUT_BYTES_PER_MS : 0;
    return l->event_timeout_ms + (uint32_t)(extra < 600000 ? extra : 600000);
}

static int64_t state_deadline(const idevs_launcher *l)
{
    switch (l->state) {
    case IDEVS_LAUNCHER_STARTING:
    case IDEVS_LAUNCHER_CERTIFYING:
        return l->start_deadline_ms;
    case IDEVS_LAUNCHER_READY:
        return l->in_flight > 0 ? l->progress_ms + event_timeout_now(l) : -1;
    case IDEVS_LAUNCHER_EXITING: {
        int64_t poll_reap = l->child.pidfd < 0 ? launcher_now_ms() + REAP_POLL_MS : -1;
        if (l->kill_sent)
            return poll_reap;
        return poll_reap >= 0 && poll_reap < l->exit_deadline_ms ? poll_reap : l->exit_deadline_ms;
    }
    case IDEVS_LAUNCHER_BACKOFF:
        return l->restart_at_ms;
    default:
        return -1;
    }
}

int64_t supervise_next_deadline(const idevs_launcher *l)
{
    if (l->refused_count > 0 && !l->stopping)
        return launcher_now_ms(); /* refused deliveries wait for a poll to be ended */
    int64_t at = state_deadline(l);
    int64_t save = l->state != IDEVS_LAUNCHER_STOPPED ? replay_record_deadline(l) : -1;
    at = save >= 0 && (at < 0 || save < at) ? save : at;
    /* the outbox's next copy: a poll must come then, traffic or not */
    int64_t resend = l->outbox.count > 0 && l->state != IDEVS_LAUNCHER_STOPPED ? l->outbox.next_due_ms : -1;
    at = resend >= 0 && (at < 0 || resend < at) ? resend : at;
    /* The certificate's renewal is due by the wall clock, which is looked at every CERTIFY_RENEW_CHECK_MS. */
    int64_t renew = l->state == IDEVS_LAUNCHER_READY && l->renew_at != 0 ? l->renew_check_ms : -1;
    return renew >= 0 && (at < 0 || renew < at) ? renew : at;
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

static void note(idevs_launcher *l, const char *fmt, va_list ap)
{
    if (l->exit_note[0] != '\0')
        return; /* the first explanation is the one that matters */
    vsnprintf(l->exit_note, sizeof l->exit_note, fmt, ap);
}

static void signal_child(idevs_launcher *l, int sig)
{
    if (!l->have_child)
        return;
    if (l->child.pidfd >= 0) {
        if (syscall(SYS_pidfd_send_signal, l->child.pidfd, sig, NULL, 0) == 0 || errno == ESRCH)
            return;
    }
    kill(l->child.pid, sig); /* unreaped: the pid is still ours */
}

void supervise_kill(idevs_launcher *l, idevs_err err, const char *fmt, ...)
{
    if (!l->have_child)
        return;
    va_list ap;
    va_start(ap, fmt);
    note(l, fmt, ap);
    va_end(ap);
    if (!l->kill_sent) {
        signal_child(l, SIGKILL);
        l->kill_sent = true;
        l->killed_by_us = true;
        l->stats.killed++;
    }
    if (l->exit_err == IDEVS_OK)
        l->exit_err = err;
    if (!l->stopping)
        l->abnormal = true;
    supervise_close_channel(l);
    l->state = IDEVS_LAUNCHER_EXITING;
    l->exit_deadline_ms = launcher_now_ms();
}

void supervise_expect_exit(idevs_launcher *l, idevs_err err, unsigned grace_ms)
{
    if (l->exit_err == IDEVS_OK)
        l->exit_err = err;
    if (!l->stopping) {
        l->abnormal = true;
        supervise_close_channel(l);
    }
    if (l->state != IDEVS_LAUNCHER_EXITING) {
        l->state = IDEVS_LAUNCHER_EXITING;
        l->exit_deadline_ms = launcher_now_ms() + grace_ms;
    }
}

static void protocol_error(idevs_launcher *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void protocol_error(idevs_launcher *l, const char *fmt, ...)
{
    l->stats.protocol_errors++;
    va_list ap;
    va_start(ap, fmt);
    char what[256];
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    supervise_kill(l, IDEVS_ERR_FRAME, "%s", what);
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
static void announce_restart(idevs_launcher *l, unsigned delay)
{
    size_t waiting = l->count + l->refused_count;
    launcher_event(l, IDEVS_LAUNCHER_EVENT_RESTARTING,
                   "restarting in %u ms; %zu queued deliver%s wait%s for it (queue %zu/%zu; inputs are queued "
                   "meanwhile, beyond the queue refused as queue_full)",
                   delay, waiting, waiting == 1 ? "y" : "ies", waiting == 1 ? "s" : "", waiting, l->queue_limit);
}

static void schedule_restart(idevs_launcher *l)
{
    int64_t now = launcher_now_ms();
    if (l->ready_at_ms > 0 && now - l->ready_at_ms >= (int64_t)l->cfg.stable_after_ms)
        l->backoff_ms = l->cfg.backoff_initial_ms;
    l->ready_at_ms = 0;
    unsigned delay = l->backoff_ms;
    l->backoff_ms = l->backoff_ms > l->cfg.backoff_max_ms / 2 ? l->cfg.backoff_max_ms : l->backoff_ms * 2;
    if (l->backoff_ms == 0)
        l->backoff_ms = 1;
    l->state = IDEVS_LAUNCHER_BACKOFF;
    l->restart_at_ms = now + delay;
    announce_restart(l, delay);
}

static void handle_reaped(idevs_launcher *l, int status, bool known, const idevs_launcher_callbacks *cb)
{
    char how[128];
    if (l->killed_by_us && known && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        snprintf(how, sizeof how, "was killed by the launcher");
    else
        describe_status(how, sizeof how, status, known);
    if (l->exit_note[0] != '\0')
        snprintf(l->stats.last_exit, sizeof l->stats.last_exit, "%.100s: %.150s", how, l->exit_note);
    else
        snprintf(l->stats.last_exit, sizeof l->stats.last_exit, "%s", how);
    supervise_close_channel(l);
    close_child(l);
    bool planned = l->stopping && !l->abnormal;
    if (!planned)
        launcher_event(l, l->killed_by_us ? IDEVS_LAUNCHER_EVENT_KILLED : IDEVS_LAUNCHER_EVENT_EXITED, "%s",
                       l->stats.last_exit);

    /* The oldest unfinished delivery was being processed when the compartment died: count it against it. */
    if (!planned && l->in_flight > 0 && l->head != NULL && l->head->sent)
        l->head->attempts++;
    deliveries_rewind(l);
    idevs_err failure = l->exit_err != IDEVS_OK ? l->exit_err : IDEVS_ERR_CHANNEL_CLOSED;
    while (l->head != NULL && l->head->attempts >= l->cfg.max_attempts) {
        delivery *d = l->head;
        deliveries_unlink(l, d);
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

    if (l->stopping || l->blocking_start) {
        l->state = IDEVS_LAUNCHER_STOPPED;
        return;
    }
    schedule_restart(l);
}

bool supervise_try_reap(idevs_launcher *l, const idevs_launcher_callbacks *cb)
{
    if (!l->have_child)
        return false;
    int status = 0;
    pid_t r = waitpid(l->child.pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
        return false;
    handle_reaped(l, status, r == l->child.pid, cb);
    return true;
}

/* ---- starting ---- */

idevs_err supervise_begin_start(idevs_launcher *l, char *why, size_t why_len)
{
    l->kill_sent = l->killed_by_us = l->abnormal = false;
    l->exit_err = IDEVS_OK;
    l->exit_note[0] = '\0';
    l->ready_at_ms = 0;
    l->spawn_us = launcher_now_us();
    certify_secrets secrets;
    idevs_err err = certify_prepare(l, &secrets, why, why_len);
    if (err != IDEVS_OK)
        return err;
    err = idevs_backend_launch(l->backend, &l->image, &l->child, why, why_len);
    if (err != IDEVS_OK) {
        certify_secrets_clear(&secrets);
        return err;
    }
    l->have_child = true;
    l->stats.started++;
    l->stats.pid = l->child.pid;
    idevs_channel_init(&l->ch, l->child.channel_fd, 0);
    l->have_channel = true;
    l->epoll_channel_events = EPOLLIN;
    ep_ctl(l, EPOLL_CTL_ADD, l->ch.fd, EPOLLIN);
    if (l->child.pidfd >= 0)
        ep_ctl(l, EPOLL_CTL_ADD, l->child.pidfd, EPOLLIN);
    l->state = IDEVS_LAUNCHER_STARTING;
    l->start_deadline_ms = launcher_now_ms() + l->cfg.start_timeout_ms;
    char init_why[256] = "";
    err = certify_send_init(l, &secrets, init_why, sizeof init_why);
    certify_secrets_clear(&secrets);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        /* The program closed its end before reading Init (it is ending by itself): its exit says more than the
         * failed send, and how it exited is reported as for one that did not answer Init. */
        supervise_expect_exit(l, err, l->cfg.exit_grace_ms);
    else if (err != IDEVS_OK)
        supervise_kill(l, err, "%s", init_why); /* reaped and reported by the caller's loop */
    return IDEVS_OK;
}

/* ---- frames ---- */

/* The compartment's Fatal reason, for the log: printable ASCII only, bounded. */
static void sanitize(char *out, size_t out_len, const char *in)
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
                                    bool request)
{
    idevs_envelope_header h;
    if (idevs_envelope_peek(p->envelope.data, p->envelope.len, &h) != IDEVS_OK)
        return "a publication that is not a well-formed envelope";
    if (!idevs_uuid_equal(&h.sender, &l->program))
        return "a publication sealed by someone else than this process";
    if (!idevs_uuid_equal(&h.recipient, &l->deployment->services[to].uuid))
        return "a publication sealed to another receiver than its topic's";
    if (request && (!idevs_request_correlation_len_ok(p->correlation_data.len) ||
                    memcmp(p->correlation_data.data, h.message_id.b, IDEVS_UUID_LEN) != 0))
        return "a request whose correlation data is not its message id and sealed state";
    return NULL;
}

/* Checks a Publish against the deployment: a declared output, or a declared request with its response topic. */
const char *supervise_publish_problem(const idevs_launcher *l, const Idevs__Bridge__V1__Publish *p)
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
        return envelope_problem(l, p, d->outputs[i].to, false);
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
        return envelope_problem(l, p, d->requests[i].to, true);
    }
    size_t receipts = topics_receipt_service(d, p->topic);
    if (receipts != SIZE_MAX) {
        if (has_rt || p->correlation_data.len != 0 || p->delivery_id == 0)
            return "a receipt with a response topic or correlation data, or for no delivery";
        if (p->qos != LAUNCHER_RECEIPT_QOS)
            return "a receipt with another QoS than 1";
        return envelope_problem(l, p, receipts, false);
    }
    return "a publication to a topic the deployment does not declare";
}

static void emit(idevs_launcher *l, const idevs_launcher_callbacks *cb, const idevs_launcher_publish *p, bool kept)
{
    if (!kept)
        outbox_keep(l, p); /* before it leaves: kept until its receipt */
    l->stats.published++;
    if (cb != NULL && cb->on_publish != NULL)
        cb->on_publish(cb->arg, p);
}

static void handle_publish(idevs_launcher *l, const Idevs__Bridge__V1__Publish *p, const idevs_launcher_callbacks *cb)
{
    const char *problem = supervise_publish_problem(l, p);
    if (problem != NULL) {
        protocol_error(l, "it sent %s", problem);
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
        emit(l, cb, &pub, false);
        return;
    }
    delivery *d = deliveries_find_sent(l, p->delivery_id);
    if (d == NULL) {
        protocol_error(l, "it published for delivery %llu, which is not in progress",
                       (unsigned long long)p->delivery_id);
        return;
    }
    idevs_err err = delivery_hold(l, d, p);
    if (err == IDEVS_ERR_TOO_LARGE)
        protocol_error(l, "delivery %llu caused more than %u publications or %u bytes", (unsigned long long)d->id,
                       LAUNCHER_PUBLISH_MAX, LAUNCHER_HELD_BYTES_MAX);
    else if (err != IDEVS_OK)
        supervise_kill(l, err, "holding a publication failed: %s", idevs_strerror(err));
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
        emit(l, cb, &h->p, h->kept);
    uint64_t id = d->id;
    uint32_t refusal = d->refusal;
    deliveries_forget(l, d);
    l->stats.done++;
    if (refusal != 0 && cb != NULL && cb->on_refused != NULL)
        cb->on_refused(cb->arg, id, refusal - 1, l->deployment->refusals[refusal - 1]);
    if (cb != NULL && cb->on_done != NULL)
        cb->on_done(cb->arg, id, status);
}

static void handle_done(idevs_launcher *l, const Idevs__Bridge__V1__Done *done, const idevs_launcher_callbacks *cb)
{
    if (done->delivery_id == 0) {
        timer_failed(l, done->status);
        return;
    }
    delivery *d = deliveries_find_sent(l, done->delivery_id);
    if (d == NULL) {
        protocol_error(l, "it finished delivery %llu, which is not in progress", (unsigned long long)done->delivery_id);
        return;
    }
    /* A refusal code is one the descriptor declares, for a delivery the logic refused; checked again here. */
    if (done->refusal > l->deployment->refusal_count || (done->refusal != 0 && done->status != IDEVS_ERR_LOGIC)) {
        protocol_error(l, "it finished delivery %llu with refusal code %u, which the descriptor does not declare "
                       "for that status", (unsigned long long)done->delivery_id, done->refusal);
        return;
    }
    d->refusal = done->refusal;
    deliveries_unlink(l, d);
    l->progress_ms = launcher_now_ms();
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
            outbox_keep(l, &h->p);
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
static void handle_held(idevs_launcher *l, const Idevs__Bridge__V1__Held *held)
{
    delivery *d = deliveries_find_sent(l, held->delivery_id);
    if (d == NULL || d->response) {
        protocol_error(l, "it held delivery %llu, which is not an input in progress",
                       (unsigned long long)held->delivery_id);
        return;
    }
    deliveries_hold_back(l, d);
    l->inputs_held = true;
    l->progress_ms = launcher_now_ms();
    l->stats.held++;
}

static void handle_ready(idevs_launcher *l, const Idevs__Bridge__V1__Ready *ready)
{
    l->inputs_held = false;
    int64_t now_us = launcher_now_us();
    l->stats.last_ready_us = (uint64_t)(now_us - l->spawn_us);
    l->state = IDEVS_LAUNCHER_READY;
    l->ready_at_ms = launcher_now_ms();
    l->progress_ms = l->ready_at_ms;
    char logic[IDEVS_NAME_MAX + 1];
    sanitize(logic, sizeof logic, ready->logic_name);
    launcher_event(l, IDEVS_LAUNCHER_EVENT_CERTIFIED, "certified in %.1f ms, ready in %.1f ms (logic '%s', %s)",
                   (double)l->stats.last_certified_us / 1000.0, (double)l->stats.last_ready_us / 1000.0, logic,
                   l->stats.last_keys_restored ? "keys restored" : "fresh keys");
}

/* Whether a frame is allowed in the launcher's state; when it is not, the compartment broke the protocol, and
 * complaint says how. */
static bool allowed_now(idevs_launcher *l, bool allowed, const char *complaint)
{
    if (!allowed)
        protocol_error(l, "%s", complaint);
    return allowed;
}

static void handle_frame(idevs_launcher *l, const Idevs__Bridge__V1__Frame *f, const idevs_launcher_callbacks *cb)
{
    switch (f->body_case) {
    case IDEVS__BRIDGE__V1__FRAME__BODY_FATAL: {
        char reason[LAUNCHER_REASON_MAX + 1];
        sanitize(reason, sizeof reason, f->fatal->reason);
        idevs_err status = f->fatal->status > 0 && f->fatal->status < (uint32_t)IDEVS_ERR_COUNT
                               ? (idevs_err)f->fatal->status
                               : IDEVS_ERR_LOGIC;
        if (l->exit_note[0] == '\0')
            snprintf(l->exit_note, sizeof l->exit_note, "%s", reason[0] != '\0' ? reason : idevs_strerror(status));
        supervise_expect_exit(l, status, l->cfg.exit_grace_ms);
        return;
    }
    case IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFY_REQUEST: {
        if (!allowed_now(l, l->state == IDEVS_LAUNCHER_STARTING, "it sent a second certificate request"))
            return;
        char why[256] = "";
        idevs_err err = certify_handle_request(l, f->certify_request, why, sizeof why);
        if (err == IDEVS_ERR_FRAME) {
            protocol_error(l, "%s", why);
            return;
        }
        if (err != IDEVS_OK) {
            supervise_kill(l, err, "certification failed: %s", why);
            return;
        }
        l->stats.last_certified_us = (uint64_t)(launcher_now_us() - l->spawn_us);
        l->state = IDEVS_LAUNCHER_CERTIFYING;
        return;
    }
    case IDEVS__BRIDGE__V1__FRAME__BODY_READY:
        if (allowed_now(l, l->state == IDEVS_LAUNCHER_CERTIFYING, "it said Ready before it was certified"))
            handle_ready(l, f->ready);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH:
        if (allowed_now(l, l->state == IDEVS_LAUNCHER_READY, "it published before it was ready"))
            handle_publish(l, f->publish, cb);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_DONE:
        if (allowed_now(l, l->state == IDEVS_LAUNCHER_READY, "it finished a delivery before it was ready"))
            handle_done(l, f->done, cb);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_RECEIPTED:
        if (allowed_now(l, l->state == IDEVS_LAUNCHER_READY && f->receipted->service < l->deployment->service_count &&
                               f->receipted->n_message_ids <= IDEVS_RECEIPT_IDS_MAX,
                        "it sent a receipt before it was ready, or for no declared service"))
            outbox_receipted(l, f->receipted);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_HELD:
        if (allowed_now(l, l->state == IDEVS_LAUNCHER_READY, "it held a delivery before it was ready"))
            handle_held(l, f->held);
        return;
    case IDEVS__BRIDGE__V1__FRAME__BODY_RESUMED:
        if (allowed_now(l, l->state == IDEVS_LAUNCHER_READY && l->inputs_held, "it resumed inputs it had not held"))
            l->inputs_held = false;
        return;
    default:
        protocol_error(l, "it sent a frame only the launcher may send (%d)", (int)f->body_case);
        return;
    }
}

/* Reads and handles every whole frame there is. */
static int read_frames(idevs_launcher *l, const idevs_launcher_callbacks *cb)
{
    int work = 0;
    while (l->have_channel && live(l)) {
        Idevs__Bridge__V1__Frame *f = NULL;
        idevs_err err = idevs_channel_recv(&l->ch, &f, 0);
        if (err == IDEVS_ERR_TIMEOUT)
            break;
        work++;
        if (err == IDEVS_ERR_CHANNEL_CLOSED) {
            supervise_expect_exit(l, IDEVS_ERR_CHANNEL_CLOSED, l->cfg.exit_grace_ms);
            break;
        }
        if (err == IDEVS_ERR_FRAME) {
            protocol_error(l, "it sent a malformed, oversized or truncated frame");
            break;
        }
        if (err != IDEVS_OK) {
            supervise_kill(l, err, "reading its channel failed: %s", idevs_strerror(err));
            break;
        }
        handle_frame(l, f, cb);
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
    }
    return work;
}

/* During a stop: what the compartment still sends is read and dropped, so that it never blocks writing. */
static void drain(idevs_launcher *l)
{
    while (l->have_channel) {
        Idevs__Bridge__V1__Frame *f = NULL;
        idevs_err err = idevs_channel_recv(&l->ch, &f, 0);
        if (err == IDEVS_ERR_TIMEOUT)
            return;
        if (err != IDEVS_OK) {
            supervise_close_channel(l);
            return;
        }
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
    }
}

void supervise_send_queued(idevs_launcher *l)
{
    while (l->state == IDEVS_LAUNCHER_READY && l->next_send != NULL && l->in_flight < l->cfg.max_in_flight) {
        delivery *d = l->next_send;
        /* Inputs held: only responses go, each taken ahead of the waiting inputs (a walk past them). */
        if (l->inputs_held && !d->response && (d = deliveries_response_first(l)) == NULL)
            break;
        /* A copy of an envelope done since this one was queued (a duplicate, or a re-send after a restart whose
         * first copy finished): the new compartment's empty window would accept it again. */
        idevs_err replay = replay_record_check(l, d);
        if (replay != IDEVS_OK) {
            deliveries_unlink(l, d); /* moves next_send on */
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
        Idevs__Bridge__V1__Frame frame = IDEVS__BRIDGE__V1__FRAME__INIT;
        frame.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER;
        frame.deliver = &del;
        /* Queued only: the Deliver frames of this pass leave together, in one send, below. */
        idevs_err err = l->have_channel ? idevs_channel_queue(&l->ch, &frame) : IDEVS_ERR_CHANNEL_CLOSED;
        if (err == IDEVS_ERR_QUEUE_FULL)
            break; /* the channel's send buffer is full: later */
        if (err == IDEVS_ERR_CHANNEL_CLOSED) {
            supervise_expect_exit(l, IDEVS_ERR_CHANNEL_CLOSED, l->cfg.exit_grace_ms);
            break;
        }
        if (err != IDEVS_OK) {
            supervise_kill(l, err, "sending a delivery failed: %s", idevs_strerror(err));
            break;
        }
        if (l->in_flight == 0)
            l->progress_ms = launcher_now_ms();
        d->sent = true;
        d->held_back = false;
        if (d->sends++ > 0)
            l->stats.resent++;
        l->in_flight++;
        l->next_send = d->next;
        l->stats.sent++;
    }
    if (live(l) && supervise_flush(l, 0) == IDEVS_ERR_CHANNEL_CLOSED)
        supervise_expect_exit(l, IDEVS_ERR_CHANNEL_CLOSED, l->cfg.exit_grace_ms);
}

/* Bytes moved over the channel since the last look are progress: a large frame in transit is not a hung
 * compartment (a compartment that neither reads nor writes moves none). */
static void note_moved(idevs_launcher *l)
{
    if (l->have_channel && l->ch.moved != l->channel_moved) {
        l->channel_moved = l->ch.moved;
        l->progress_ms = launcher_now_ms();
    }
}

int supervise_step(idevs_launcher *l, const idevs_launcher_callbacks *cb)
{
    int work = 0;
    if (cb != NULL) /* without callbacks (a blocking start or stop) they stay, and stop() abandons them */
        work += deliveries_report_refused(l, cb);
    if (live(l))
        work += read_frames(l, cb);
    /* Even when a frame of this pass ended the compartment: what it finished before is done. */
    release_awaiting(l, cb);
    outbox_resend(l, cb);
    if (live(l)) {
        note_moved(l);
        int64_t now = launcher_now_ms();
        if (l->state != IDEVS_LAUNCHER_READY && now >= l->start_deadline_ms) {
            supervise_kill(l, IDEVS_ERR_TIMEOUT, "not ready within %u ms of its start",
                           l->cfg.start_timeout_ms);
            work++;
        } else if (l->state == IDEVS_LAUNCHER_READY && l->in_flight > 0 && now >= state_deadline(l)) {
            supervise_kill(l, IDEVS_ERR_TIMEOUT, "delivery %llu not answered within %u ms",
                           (unsigned long long)l->head->id, event_timeout_now(l));
            work++;
        }
    }
    if (l->state == IDEVS_LAUNCHER_READY) {
        work += certify_renew_if_due(l);
        supervise_send_queued(l);
    }
    if (live(l)) {
        idevs_err err = supervise_flush(l, 0);
        if (err == IDEVS_ERR_CHANNEL_CLOSED) {
            supervise_expect_exit(l, IDEVS_ERR_CHANNEL_CLOSED, l->cfg.exit_grace_ms);
            work++;
        }
        note_moved(l);
    }
    if (l->state == IDEVS_LAUNCHER_EXITING) {
        drain(l);
        if (supervise_try_reap(l, cb)) {
            work++;
        } else if (!l->kill_sent && launcher_now_ms() >= l->exit_deadline_ms) {
            supervise_kill(l, l->exit_err != IDEVS_OK ? l->exit_err : IDEVS_ERR_TIMEOUT,
                           "it did not exit within %u ms", l->cfg.exit_grace_ms);
            work++;
        }
    }
    if (l->state == IDEVS_LAUNCHER_BACKOFF && launcher_now_ms() >= l->restart_at_ms) {
        char why[256] = "";
        l->stats.restarts++;
        if (supervise_begin_start(l, why, sizeof why) != IDEVS_OK) {
            snprintf(l->stats.last_exit, sizeof l->stats.last_exit, "could not be started: %.200s", why);
            launcher_event(l, IDEVS_LAUNCHER_EVENT_START_FAILED, "could not be started: %s", why);
            schedule_restart(l);
        }
        work++;
    }
    /* What no output waits for (a Done without publications) is written at most every LAUNCHER_REPLAY_SAVE_MS:
     * replayed after a broker crash, such an input publishes nothing again. The same write syncs what
     * release_awaiting() wrote into the kernel only. stop() writes the rest. */
    if (l->state != IDEVS_LAUNCHER_STOPPED)
        (void)replay_record_save(l, REPLAY_SAVE_DUE);
    supervise_update_channel_events(l);
    return work;
}

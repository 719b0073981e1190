/* The launcher's outbox as it is read back at start (enclave-bridge/launcher/outbox.c, the OutboxEntry of
 * replay_record.proto; docs/PROTOCOL.md section 9, docs/COMPARTMENT.md): the files outbox/<message id in hex>,
 * each an output or request a former run released and no receipt ended yet. Nothing authenticates them: each is
 * checked again as if it were released now. The target keeps a state directory, writes one file from the input
 * and loads the outbox as a launcher does (outbox_load: no compartment, no broker). The first byte:
 *   bit 0: the file is named after the message id of the entry's own envelope (read here, keyless), else after
 *          another id; bit 1: a "<name>.new" file is left beside it too (a copy whose rename a crash cut short);
 * the rest is the file. A second reader written here from the documents says whether the entry is good: an
 * OutboxEntry of version 1 without unknown fields, no larger than a frame, whose publication the process may
 * release (a declared output at its QoS, without response topic or correlation data; a declared request at its
 * QoS with its response topic and correlation data of IDEVS_REQUEST_CORRELATION_LEN bytes that begin with its
 * message id; a receipt topic at QoS 1; the envelope
 * 1..max_envelope bytes, well-formed, from this process to the topic's receiver; the kept copy within
 * max_envelope), named after that message id. For every input:
 *   - a good entry is kept (one entry: its id, its receiver, its first release time) and its file left as it is;
 *     anything else is removed, with the warning "removed 1 unusable file(s)", and nothing kept; a ".new" file is
 *     removed in every case;
 *   - a kept entry due again is published with the file's topic, envelope, QoS, response topic and correlation
 *     data, unless it is older than LAUNCHER_OUTBOX_EXPIRE_MS (given up, its file removed) or sealed under
 *     another certificate with a kept copy (sealed anew first: not published as it is);
 *   - what was published, kept again (outbox_keep, as a sealed-anew copy replaces one), loads again the same. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "envelope_internal.h"
#include "fuzz.h"
#include "idevs_channel.h"
#include "idevs_deployment.h"
#include "idevs_hex.h"
#include "launcher_internal.h"
#include "replay_record.pb-c.h"

#define MAX_ENVELOPE 4096

static const char descriptor[] =
    "{\"version\":1,\"process\":{\"name\":\"p\",\"uuid\":\"6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40\",\"logic\":\"l.so\"},"
    "\"operator_ca_sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\","
    "\"services\":[{\"name\":\"store\",\"uuid\":\"1b4e28ba-2fa1-41d2-883f-0016d3cca427\",\"certificate\":\"s.crt\","
    "\"receipts\":true},"
    "{\"name\":\"taxi\",\"uuid\":\"2c5f39cb-3ab2-42e3-994a-1127e4ddb538\",\"certificate\":\"t.crt\",\"receipts\":true}],"
    "\"inputs\":[{\"name\":\"sales\",\"topic\":\"idevs/p/in/sales\",\"from\":\"store\"}],"
    "\"outputs\":[{\"name\":\"note\",\"topic\":\"idevs/p/out/note\",\"to\":\"store\",\"qos\":1},"
    "{\"name\":\"tick\",\"topic\":\"idevs/p/out/tick\",\"to\":\"taxi\",\"qos\":2}],"
    "\"requests\":[{\"name\":\"ride\",\"topic\":\"idevs/p/req/ride\",\"response_topic\":\"idevs/p/resp/ride\","
    "\"to\":\"taxi\",\"qos\":1}]}";

static idevs_deployment *deployment;
static char dir[64]; /* in memory when it can be (a fresh record file is synced) */
static int state_fd = -1, outfd = -1;

typedef struct fixture {
    idevs_launcher l;
    launcher_instance inst; /* one, never certified: its certificate digest is zeros */
    int warnings;
    char last[1024];
    int published;
    /* the last publication, copied */
    char topic[IDEVS_TOPIC_MAX + 1], response_topic[IDEVS_TOPIC_MAX + 1];
    uint8_t envelope[MAX_ENVELOPE], correlation[LAUNCHER_CORRELATION_MAX];
    size_t envelope_len, correlation_len;
    int qos;
    bool has_response_topic;
} fixture;

static void on_event(void *arg, idevs_launcher_event event, const char *line)
{
    fixture *f = arg;
    if (event == IDEVS_LAUNCHER_EVENT_WARNING) {
        f->warnings++;
        snprintf(f->last, sizeof f->last, "%s", line);
    }
}

static void on_publish(void *arg, const idevs_launcher_publish *p)
{
    fixture *f = arg;
    f->published++;
    FUZZ_CHECK(strlen(p->topic) <= IDEVS_TOPIC_MAX && p->envelope_len <= MAX_ENVELOPE &&
               p->correlation_len <= LAUNCHER_CORRELATION_MAX);
    snprintf(f->topic, sizeof f->topic, "%s", p->topic);
    memcpy(f->envelope, p->envelope, p->envelope_len);
    f->envelope_len = p->envelope_len;
    f->qos = p->qos;
    f->has_response_topic = p->response_topic != NULL;
    snprintf(f->response_topic, sizeof f->response_topic, "%s", p->response_topic != NULL ? p->response_topic : "");
    if (p->correlation_len > 0)
        memcpy(f->correlation, p->correlation, p->correlation_len);
    f->correlation_len = p->correlation_len;
}

/* Removes every file of the outbox directory. */
static void clear_outbox(void)
{
    int fd = dup(outfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    FUZZ_SETUP(d != NULL);
    rewinddir(d); /* the descriptor's offset is shared with every earlier dup: at the end of the last scan */
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlinkat(outfd, e->d_name, 0);
    closedir(d);
}

static void remove_dir(void)
{
    clear_outbox();
    close(outfd);
    unlinkat(state_fd, "outbox", AT_REMOVEDIR);
    close(state_fd);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char why[256];
    FUZZ_SETUP(idevs_deployment_parse((const uint8_t *)descriptor, sizeof descriptor - 1, &deployment, why,
                                      sizeof why) == IDEVS_OK);
    snprintf(dir, sizeof dir, "%s/idevs-fuzz-outbox.XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    FUZZ_SETUP(mkdtemp(dir) != NULL && chmod(dir, 0700) == 0);
    state_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_SETUP(state_fd >= 0 && mkdirat(state_fd, "outbox", 0700) == 0);
    outfd = openat(state_fd, "outbox", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_SETUP(outfd >= 0);
    atexit(remove_dir);
    return 0;
}

static void open_fixture(fixture *f)
{
    memset(f, 0, sizeof *f);
    f->l.deployment = deployment;
    f->l.program = deployment->program;
    idevs_uuid_format(&f->l.program, f->l.program_str);
    snprintf(f->l.name, sizeof f->l.name, "p");
    f->l.cfg.on_event = on_event;
    f->l.cfg.event_arg = f;
    f->l.state_dirfd = state_fd;
    f->l.max_envelope = MAX_ENVELOPE;
    f->inst.l = &f->l;
    f->l.instances = &f->inst;
    f->l.instance_count = 1;
    f->l.outbox.dirfd = -1;
    outbox_load(&f->l);
    FUZZ_CHECK(f->l.outbox.dirfd >= 0);
}

/* ---- the second reader ---- */

static bool envelope_to(const ProtobufCBinaryData *env, size_t to, idevs_envelope_header *h)
{
    return env->len >= 1 && env->len <= MAX_ENVELOPE && idevs_envelope_peek(env->data, env->len, h) == IDEVS_OK &&
           idevs_uuid_equal(&h->sender, &deployment->program) && idevs_uuid_equal(&h->recipient,
                                                                                &deployment->services[to].uuid);
}

/* Whether the process may release k now; its message id and receiver when it may. */
static bool releasable(const Idevs__Launcher__V1__OutboxEntry *k, idevs_msgid *id, size_t *to)
{
    if (k->version != 1 || k->base.n_unknown_fields != 0 || k->qos > 2 || k->kept.len > MAX_ENVELOPE ||
        k->topic == NULL || k->topic[0] == '\0' || strlen(k->topic) > IDEVS_TOPIC_MAX)
        return false;
    bool has_rt = k->response_topic != NULL && k->response_topic[0] != '\0';
    idevs_envelope_header h;
    for (size_t i = 0; i < deployment->output_count; i++) {
        const idevs_deployment_output *o = &deployment->outputs[i];
        if (strcmp(o->topic, k->topic) != 0)
            continue;
        *to = o->to;
        if (has_rt || k->correlation.len != 0 || (int)k->qos != o->qos || !envelope_to(&k->envelope, o->to, &h))
            return false;
        *id = h.message_id;
        return true;
    }
    for (size_t i = 0; i < deployment->request_count; i++) {
        const idevs_deployment_request *r = &deployment->requests[i];
        if (strcmp(r->topic, k->topic) != 0)
            continue;
        *to = r->to;
        if (!has_rt || strcmp(k->response_topic, r->response_topic) != 0 || (int)k->qos != r->qos ||
            !envelope_to(&k->envelope, r->to, &h) || k->correlation.len != IDEVS_REQUEST_CORRELATION_LEN ||
            memcmp(k->correlation.data, h.message_id.b, IDEVS_UUID_LEN) != 0)
            return false;
        *id = h.message_id;
        return true;
    }
    for (size_t i = 0; i < deployment->service_count; i++) {
        if (strcmp(deployment->services[i].receipt_topic, k->topic) != 0)
            continue;
        *to = i;
        if (has_rt || k->correlation.len != 0 || k->qos != 1 || !envelope_to(&k->envelope, i, &h))
            return false;
        *id = h.message_id;
        return true;
    }
    return false;
}

static void put_file(const char *name, const uint8_t *bytes, size_t len)
{
    int fd = openat(outfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_SETUP(fd >= 0);
    for (size_t at = 0; at < len;) {
        ssize_t n = write(fd, bytes + at, len - at);
        FUZZ_SETUP(n > 0);
        at += (size_t)n;
    }
    FUZZ_SETUP(close(fd) == 0);
}

/* The bytes of outbox/name (malloc'd), or NULL when it is absent. */
static uint8_t *get_file(const char *name, size_t *len)
{
    int fd = openat(outfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    FUZZ_SETUP(fstat(fd, &st) == 0);
    uint8_t *data = malloc((size_t)st.st_size + 1);
    FUZZ_SETUP(data != NULL && read(fd, data, (size_t)st.st_size) == st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return data;
}

static bool absent(const char *name)
{
    struct stat st;
    return fstatat(outfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 2 * MAX_ENVELOPE + 4 * IDEVS_TOPIC_MAX)
        return 0;
    const uint8_t *body = data + 1;
    size_t body_len = size - 1;
    clear_outbox();

    Idevs__Launcher__V1__OutboxEntry *k = idevs__launcher__v1__outbox_entry__unpack(NULL, body_len, body);
    idevs_msgid id;
    size_t to = 0;
    bool good = body_len >= 1 && k != NULL && releasable(k, &id, &to);
    idevs_envelope_header h;
    char name[2 * IDEVS_UUID_LEN + 1], id_hex[2 * IDEVS_UUID_LEN + 1], leftover[2 * IDEVS_UUID_LEN + 5];
    if ((data[0] & 1u) && k != NULL && idevs_envelope_peek(k->envelope.data, k->envelope.len, &h) == IDEVS_OK) {
        idevs_hex_encode(h.message_id.b, IDEVS_UUID_LEN, name);
    } else {
        memset(name, '7', sizeof name - 1);
        name[sizeof name - 1] = '\0';
    }
    if (good) {
        idevs_hex_encode(id.b, IDEVS_UUID_LEN, id_hex);
        good = strcmp(id_hex, name) == 0;
    }
    put_file(name, body, body_len);
    snprintf(leftover, sizeof leftover, "%s.new", name);
    if (data[0] & 2u)
        put_file(leftover, data, size);

    fixture *f = malloc(sizeof *f), *g = malloc(sizeof *g);
    FUZZ_SETUP(f != NULL && g != NULL);
    open_fixture(f);
    FUZZ_CHECK(absent(leftover));
    if (good) {
        FUZZ_CHECK(f->warnings == 0 && f->l.outbox.count == 1);
        const outbox_entry *e = &f->l.outbox.entries[0];
        FUZZ_CHECK(idevs_uuid_equal(&e->id, &id) && e->service == to && e->created_ms == (int64_t)k->created_ms);
        size_t len = 0;
        uint8_t *kept = get_file(name, &len);
        FUZZ_CHECK(kept != NULL && len == body_len && memcmp(kept, body, len) == 0);
        free(kept);

        /* due at once: published as it is, given up, or sealed anew */
        idevs_launcher_callbacks cb = {on_publish, NULL, f, NULL};
        outbox_resend(&f->l, &cb);
        bool expired = (int64_t)k->created_ms < wall_ms() - LAUNCHER_OUTBOX_EXPIRE_MS;
        bool stale = k->cert_digest.len != IDEVS_SHA256_LEN || !fuzz_all_zero(k->cert_digest.data, IDEVS_SHA256_LEN);
        if (expired) {
            FUZZ_CHECK(f->published == 0 && f->l.outbox.count == 0 && absent(name));
        } else if (stale && k->kept.len > 0) {
            FUZZ_CHECK(f->published == 0 && f->l.outbox.count == 1);
        } else {
            bool rt = k->response_topic != NULL && k->response_topic[0] != '\0';
            FUZZ_CHECK(f->published == 1 && strcmp(f->topic, k->topic) == 0 && f->qos == (int)k->qos);
            FUZZ_CHECK(f->envelope_len == k->envelope.len && memcmp(f->envelope, k->envelope.data, f->envelope_len) == 0);
            FUZZ_CHECK(f->has_response_topic == rt && (!rt || strcmp(f->response_topic, k->response_topic) == 0));
            FUZZ_CHECK(f->correlation_len == (rt ? k->correlation.len : 0) &&
                       (f->correlation_len == 0 || memcmp(f->correlation, k->correlation.data, f->correlation_len) == 0));
            /* kept again, as a copy sealed anew replaces it, and loaded again */
            bool receipt = rt == false && to < deployment->service_count &&
                           strcmp(deployment->services[to].receipt_topic, k->topic) == 0;
            idevs_launcher_publish pub = {
                .delivery_id = 1, .topic = f->topic, .envelope = f->envelope, .envelope_len = f->envelope_len,
                .qos = f->qos, .response_topic = f->has_response_topic ? f->response_topic : NULL,
                .correlation = f->correlation_len > 0 ? f->correlation : NULL, .correlation_len = f->correlation_len,
                .receipt = receipt, .kept = k->kept.len > 0 ? k->kept.data : NULL, .kept_len = k->kept.len,
            };
            outbox_keep(&f->l, &pub, f->inst.cert_digest);
            FUZZ_CHECK(f->warnings == 0 && absent(leftover));
            open_fixture(g);
            FUZZ_CHECK(g->warnings == 0 && g->l.outbox.count == 1);
            const outbox_entry *e2 = &g->l.outbox.entries[0];
            FUZZ_CHECK(idevs_uuid_equal(&e2->id, &id) && e2->service == to && e2->created_ms == (int64_t)k->created_ms);
            outbox_resend(&g->l, &(idevs_launcher_callbacks){on_publish, NULL, g, NULL});
            FUZZ_CHECK(g->published == 1 && strcmp(g->topic, f->topic) == 0 && g->qos == f->qos &&
                       g->envelope_len == f->envelope_len && memcmp(g->envelope, f->envelope, f->envelope_len) == 0 &&
                       g->correlation_len == f->correlation_len &&
                       memcmp(g->correlation, f->correlation, f->correlation_len) == 0 &&
                       strcmp(g->response_topic, f->response_topic) == 0);
            g->l.state_dirfd = -1;
            outbox_free(&g->l);
        }
    } else {
        FUZZ_CHECK(f->l.outbox.count == 0 && absent(name));
        FUZZ_CHECK(f->warnings == 1 && strstr(f->last, "removed 1 unusable file(s)") != NULL);
    }
    f->l.state_dirfd = -1;
    outbox_free(&f->l);
    if (k != NULL)
        idevs__launcher__v1__outbox_entry__free_unpacked(k, NULL);
    free(f);
    free(g);
    return 0;
}

/* The launcher's replay record (enclave-bridge/launcher/replay_record.c) on its own, with real files in a
 * temporary state directory and a parsed descriptor: what it refuses after a delivery was done, which outcomes
 * move it, two epochs kept per sender, the file read back by a second launcher, the two slots (a write cut short
 * leaves the record before it), a damaged file, and when it is synced. The launcher around it is tested in
 * test_launcher.c ("replay: ..."). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "idevs_receipt.h"
#include "launcher_internal.h"

#define SLOT 65536
static char dir[] = "/tmp/idevs-replay-record.XXXXXX";
static const char *descriptor =
    "{\"version\":1,\"process\":{\"name\":\"p\",\"uuid\":\"6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40\",\"logic\":\"l.so\"},"
    "\"operator_ca_sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\","
    "\"services\":[{\"name\":\"store\",\"uuid\":\"1b4e28ba-2fa1-41d2-883f-0016d3cca427\",\"certificate\":\"s.crt\"},"
    "{\"name\":\"shop\",\"uuid\":\"2c5f39cb-3ab2-42e3-994a-1127e4ddb538\",\"certificate\":\"t.crt\"}],"
    "\"inputs\":[{\"name\":\"sales\",\"topic\":\"idevs/p/in/sales\",\"from\":\"store\"},"
    "{\"name\":\"orders\",\"topic\":\"idevs/p/in/orders\",\"from\":\"shop\"}]}";

typedef struct fixture {
    idevs_launcher l;
    int warnings;
    char last[1024];
} fixture;

static void on_event(void *arg, idevs_launcher_event event, const char *line)
{
    fixture *f = arg;
    if (event == IDEVS_LAUNCHER_EVENT_WARNING)
        f->warnings++;
    snprintf(f->last, sizeof f->last, "%s", line);
}

/* A launcher as far as the record needs one: name, program, descriptor, state directory, events. */
static void open_fixture(fixture *f)
{
    memset(f, 0, sizeof *f);
    char why[256];
    CU_ASSERT_FATAL(idevs_deployment_parse((const uint8_t *)descriptor, strlen(descriptor), &f->l.deployment, why,
                                           sizeof why) == IDEVS_OK);
    f->l.program = f->l.deployment->program;
    idevs_uuid_format(&f->l.program, f->l.program_str);
    snprintf(f->l.name, sizeof f->l.name, "p");
    f->l.cfg.on_event = on_event;
    f->l.cfg.event_arg = f;
    f->l.state_dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CU_ASSERT_FATAL(f->l.state_dirfd >= 0);
    CU_ASSERT_FATAL(replay_record_init(&f->l) == IDEVS_OK);
    CU_ASSERT_FATAL(replay_record_load(&f->l, why, sizeof why) == IDEVS_OK);
}

static void close_fixture(fixture *f)
{
    replay_record_free(&f->l);
    close(f->l.state_dirfd);
    idevs_deployment_free(f->l.deployment);
}

static delivery at(size_t sender, uint64_t epoch, uint64_t sequence)
{
    delivery d;
    memset(&d, 0, sizeof d);
    d.tracked = true;
    d.sender = sender;
    d.epoch = epoch;
    d.sequence = sequence;
    return d;
}

static void record_path(const fixture *f, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.replay", dir, f->l.program_str);
}

static int suite_init(void)
{
    return mkdtemp(dir) == NULL ? 1 : chmod(dir, 0700);
}

static int suite_clean(void)
{
    return harness_remove_tree(dir);
}

static void remove_record(void)
{
    fixture f;
    open_fixture(&f);
    char path[256];
    record_path(&f, path, sizeof path);
    unlink(path);
    close_fixture(&f);
}

static void test_outcomes_and_epochs(void)
{
    remove_record();
    fixture f;
    open_fixture(&f);
    delivery d = at(0, 100, 5);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &d), IDEVS_OK);
    /* Refusals of the envelope itself do not move it: a forged header must not. */
    CU_ASSERT_FALSE(replay_record_done(&f.l, &d, IDEVS_ERR_DECRYPT));
    CU_ASSERT_FALSE(replay_record_done(&f.l, &d, IDEVS_ERR_REPLAY));
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &d), IDEVS_OK);
    /* Opened (ok, or an error of the logic): done. */
    CU_ASSERT_TRUE(replay_record_done(&f.l, &d, IDEVS_OK));
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &d), IDEVS_ERR_REPLAY);
    delivery e = at(0, 100, 6);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &e, IDEVS_ERR_LOGIC));
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &e), IDEVS_ERR_REPLAY);
    /* The other sender's window is its own. */
    delivery other = at(1, 100, 5);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &other), IDEVS_OK);
    /* W or more below the highest done: outside the window. */
    delivery top = at(0, 100, 5000);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &top, IDEVS_OK));
    delivery old = at(0, 100, 5000 - IDEVS_REPLAY_WINDOW);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &old), IDEVS_ERR_OUTSIDE_WINDOW);
    /* A newer epoch: the current one becomes the previous, still checked; older than both: refused. */
    delivery next = at(0, 200, 1);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &next, IDEVS_OK));
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &top), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &next), IDEVS_ERR_REPLAY);
    delivery third = at(0, 300, 1);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &third, IDEVS_OK));
    CU_ASSERT_NOT_EQUAL(replay_record_check(&f.l, &top), IDEVS_OK); /* epoch 100 is older than both kept */
    /* Untracked deliveries (no declared sender) are never checked nor noted. */
    delivery untracked = at(0, 300, 1);
    untracked.tracked = false;
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &untracked), IDEVS_OK);
    CU_ASSERT_FALSE(replay_record_done(&f.l, &untracked, IDEVS_OK));
    CU_ASSERT_EQUAL(f.warnings, 0);
    close_fixture(&f);
}

/* Cuts the slot at offset at short, as a crash during its write would: a length, then zeros where the record was. */
static void tear(const char *path, off_t at)
{
    static const uint8_t torn[64] = {0, 0, 1, 0};
    int fd = open(path, O_WRONLY);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(pwrite(fd, torn, sizeof torn, at) == (ssize_t)sizeof torn);
    close(fd);
}

static void test_read_back_and_slots(void)
{
    remove_record();
    fixture f;
    open_fixture(&f);
    delivery a = at(0, 100, 1), b = at(1, 50, 7);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &a, IDEVS_OK));
    CU_ASSERT_TRUE(replay_record_save(&f.l, REPLAY_SAVE_RELEASE)); /* generation 1: the second slot */
    CU_ASSERT_TRUE(replay_record_done(&f.l, &b, IDEVS_OK));
    CU_ASSERT_TRUE(replay_record_save(&f.l, REPLAY_SAVE_RELEASE)); /* generation 2: the first slot */
    char path[256];
    record_path(&f, path, sizeof path);
    struct stat st;
    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_size, 2 * SLOT);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    close_fixture(&f);

    /* Another launcher reads both envelopes as done. */
    fixture g;
    open_fixture(&g);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &a), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &b), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(g.warnings, 0);
    CU_ASSERT_TRUE(replay_record_save(&g.l, REPLAY_SAVE_FINAL)); /* generation 2: the first slot */
    close_fixture(&g);

    /* The newer slot cut short (as by a crash during its write, when its outputs had not left): the record
     * before it is read, with a warning. */
    tear(path, 0);
    fixture h;
    open_fixture(&h);
    CU_ASSERT_EQUAL(h.warnings, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(h.last, "reads one slot of its replay record"));
    CU_ASSERT_EQUAL(replay_record_check(&h.l, &a), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(replay_record_check(&h.l, &b), IDEVS_OK); /* only in the slot that was cut short */
    close_fixture(&h);

    /* Both slots damaged: an empty record, one warning that says why. */
    tear(path, SLOT);
    fixture k;
    open_fixture(&k);
    CU_ASSERT_EQUAL(k.warnings, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(k.last, "starts with an empty replay record"));
    CU_ASSERT_EQUAL(replay_record_check(&k.l, &a), IDEVS_OK);
    /* Its next write makes a fresh file: the next start reads it without a warning about the damaged slots. */
    CU_ASSERT_TRUE(replay_record_done(&k.l, &b, IDEVS_OK));
    CU_ASSERT_TRUE(replay_record_save(&k.l, REPLAY_SAVE_RELEASE));
    close_fixture(&k);
    fixture m;
    open_fixture(&m);
    CU_ASSERT_EQUAL(m.warnings, 0);
    CU_ASSERT_EQUAL(replay_record_check(&m.l, &b), IDEVS_ERR_REPLAY);
    close_fixture(&m);
}

static void test_another_program_and_mode(void)
{
    remove_record();
    fixture f;
    open_fixture(&f);
    delivery a = at(0, 100, 1);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &a, IDEVS_OK));
    CU_ASSERT_TRUE(replay_record_save(&f.l, REPLAY_SAVE_FINAL));
    char path[256];
    record_path(&f, path, sizeof path);
    close_fixture(&f);
    /* Readable by others: not read (a warning), and replaced by a private file at the next write. */
    CU_ASSERT_FATAL(chmod(path, 0644) == 0);
    fixture g;
    open_fixture(&g);
    CU_ASSERT_EQUAL(g.warnings, 1);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &a), IDEVS_OK);
    CU_ASSERT_TRUE(replay_record_done(&g.l, &a, IDEVS_OK));
    CU_ASSERT_TRUE(replay_record_save(&g.l, REPLAY_SAVE_RELEASE));
    struct stat st;
    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    close_fixture(&g);
}

static void test_when_synced(void)
{
    remove_record();
    fixture f;
    open_fixture(&f);
    CU_ASSERT_EQUAL(replay_record_deadline(&f.l), -1); /* nothing to write */
    delivery a = at(0, 100, 1);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &a, IDEVS_OK));
    /* Written for a release: in the kernel, a sync due within LAUNCHER_REPLAY_SAVE_MS. */
    CU_ASSERT_TRUE(replay_record_save(&f.l, REPLAY_SAVE_RELEASE));
    CU_ASSERT_TRUE(f.l.replay.unsynced);
    int64_t due = replay_record_deadline(&f.l) - launcher_now_ms();
    CU_ASSERT(due > 0 && due <= LAUNCHER_REPLAY_SAVE_MS);
    CU_ASSERT_FALSE(replay_record_save(&f.l, REPLAY_SAVE_DUE)); /* not yet */
    CU_ASSERT_TRUE(replay_record_save(&f.l, REPLAY_SAVE_FINAL));
    CU_ASSERT_FALSE(f.l.replay.unsynced);
    CU_ASSERT_EQUAL(replay_record_deadline(&f.l), -1);
    close_fixture(&f);
}

static delivery numbered(size_t sender, uint64_t epoch, uint64_t sequence, uint64_t stream, uint64_t number)
{
    delivery d = at(sender, epoch, sequence);
    uint8_t s[IDEVS_MSGID_STREAM_LEN];
    for (int i = 0; i < 8; i++)
        s[i] = (uint8_t)(stream >> (56 - 8 * i));
    d.message_id = idevs_msgid_numbered(s, number);
    return d;
}

static bool handled(const fixture *f, const delivery *d)
{
    bool h = false;
    CU_ASSERT_EQUAL(replay_record_handled(&f->l, d, &h), IDEVS_OK);
    return h;
}

/* Message ids handled: noted by the same outcomes as epochs (already_done too), per stream, two streams per
 * sender, read back by a second launcher; a file of the size before streams is read, then replaced. */
static void test_handled_ids(void)
{
    remove_record();
    fixture f;
    open_fixture(&f);
    delivery a = numbered(0, 100, 1, 0xa, 7);
    CU_ASSERT_FALSE(handled(&f, &a));
    CU_ASSERT_FALSE(replay_record_done(&f.l, &a, IDEVS_ERR_DECRYPT)); /* a forged copy notes nothing */
    CU_ASSERT_FALSE(handled(&f, &a));
    CU_ASSERT_TRUE(replay_record_done(&f.l, &a, IDEVS_OK));
    delivery copy = numbered(0, 100, 2, 0xa, 7); /* sent again: another sequence, the same id */
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &copy), IDEVS_OK);
    CU_ASSERT_TRUE(handled(&f, &copy));
    CU_ASSERT_TRUE(replay_record_done(&f.l, &copy, IDEVS_ERR_ALREADY_DONE)); /* its sequence is noted */
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &copy), IDEVS_ERR_REPLAY);
    delivery other_sender = numbered(1, 100, 1, 0xa, 7);
    CU_ASSERT_FALSE(handled(&f, &other_sender));
    delivery far = numbered(0, 100, 3, 0xa, 7 + IDEVS_REPLAY_WINDOW);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &far, IDEVS_OK));
    bool h = true;
    CU_ASSERT_EQUAL(replay_record_handled(&f.l, &a, &h), IDEVS_ERR_OUTSIDE_WINDOW);
    /* A second stream keeps the first; a third forgets the older. */
    delivery b = numbered(0, 100, 4, 0xb, 1), c = numbered(0, 100, 5, 0xc, 1);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &b, IDEVS_OK));
    CU_ASSERT_TRUE(handled(&f, &far) && handled(&f, &b));
    CU_ASSERT_TRUE(replay_record_save(&f.l, REPLAY_SAVE_FINAL));
    close_fixture(&f);

    fixture g;
    open_fixture(&g);
    CU_ASSERT_TRUE(handled(&g, &far));
    CU_ASSERT_TRUE(handled(&g, &b));
    CU_ASSERT_TRUE(replay_record_done(&g.l, &c, IDEVS_OK));
    CU_ASSERT_TRUE(handled(&g, &c) && handled(&g, &b));
    CU_ASSERT_FALSE(handled(&g, &far)); /* stream 0xa forgotten */
    delivery unnumbered = numbered(0, 100, 6, 0xc, 0);
    CU_ASSERT_TRUE(replay_record_done(&g.l, &unnumbered, IDEVS_OK));
    CU_ASSERT_FALSE(handled(&g, &unnumbered));
    CU_ASSERT_EQUAL(g.warnings, 0);
    CU_ASSERT_TRUE(replay_record_save(&g.l, REPLAY_SAVE_FINAL)); /* generation 2: the first slot */
    close_fixture(&g);

    /* The former layout: two slots of 32 KiB. The current record, moved there, is read, and rewritten at the new
     * size by the next save. */
    char path[256];
    fixture h1;
    open_fixture(&h1);
    record_path(&h1, path, sizeof path);
    close_fixture(&h1);
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    static uint8_t file[2 * SLOT], old[SLOT];
    CU_ASSERT_FATAL(pread(fd, file, sizeof file, 0) == (ssize_t)sizeof file);
    memset(old, 0, sizeof old);
    /* the newest slot (generation 2: the first) into the old first slot */
    memcpy(old, file, SLOT / 2);
    CU_ASSERT_FATAL(ftruncate(fd, 0) == 0 && pwrite(fd, old, SLOT, 0) == (ssize_t)SLOT);
    close(fd);
    fixture o;
    open_fixture(&o);
    CU_ASSERT_EQUAL(o.warnings, 0);
    CU_ASSERT_TRUE(handled(&o, &c) && handled(&o, &b));
    CU_ASSERT_TRUE(replay_record_save(&o.l, REPLAY_SAVE_FINAL));
    struct stat st;
    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_size, 2 * SLOT);
    close_fixture(&o);
}

static CU_TestInfo tests[] = {
    {"what moves it and what it refuses; two epochs per sender", test_outcomes_and_epochs},
    {"read back; a slot cut short leaves the record before it; both damaged", test_read_back_and_slots},
    {"a file readable by others is not read, and replaced by a private one", test_another_program_and_mode},
    {"written for a release, synced when due or at stop", test_when_synced},
    {"message ids handled: per stream, two streams, read back, the former file size", test_handled_ids},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("replay_record", suite_init, suite_clean, tests);
}

/* The launcher's replay record (enclave-bridge/launcher/replay_record.c) on its own, with real files in a
 * temporary state directory and a parsed descriptor: what it refuses after a delivery was done, which outcomes
 * move it, two epochs kept per (sender, instance), at most IDEVS_INSTANCES_MAX instances a sender and the
 * instance floor, the file read back by a second launcher, the two slots (a write cut short leaves the record
 * before it), a damaged file, a record of version 2 (read as instance 0), and when it is synced. The launcher
 * around it is tested in test_launcher.c ("replay: ..."). */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "harness.h"
#include "idevs_receipt.h"
#include "launcher_internal.h"
#include "replay_record.pb-c.h"

#define SLOT replay_record_slot_bytes(2) /* the descriptor's two services */
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
    CU_ASSERT_EQUAL(st.st_size, (off_t)(2 * SLOT));
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
    tear(path, (off_t)SLOT);
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

    /* Two slots of another size (32 KiB, as before message-id streams): the current record, moved there, is
     * read, and rewritten at this descriptor's size by the next save. */
    char path[256];
    fixture h1;
    open_fixture(&h1);
    record_path(&h1, path, sizeof path);
    close_fixture(&h1);
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    enum { OLD_SLOT = 32768 };
    static uint8_t file[2 * OLD_SLOT];
    CU_ASSERT_FATAL(pread(fd, file, OLD_SLOT, 0) == (ssize_t)OLD_SLOT);
    /* the newest slot (generation 2: the first) into the old first slot */
    memset(file + OLD_SLOT, 0, OLD_SLOT);
    CU_ASSERT_FATAL(ftruncate(fd, 0) == 0 && pwrite(fd, file, sizeof file, 0) == (ssize_t)sizeof file);
    close(fd);
    fixture o;
    open_fixture(&o);
    CU_ASSERT_EQUAL(o.warnings, 0);
    CU_ASSERT_TRUE(handled(&o, &c) && handled(&o, &b));
    CU_ASSERT_TRUE(replay_record_save(&o.l, REPLAY_SAVE_FINAL));
    struct stat st;
    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_size, (off_t)(2 * SLOT));
    close_fixture(&o);
}

static delivery of(size_t sender, uint32_t instance, uint64_t epoch, uint64_t sequence)
{
    delivery d = at(sender, epoch, sequence);
    d.instance = instance;
    return d;
}

/* Windows per (sender, instance): the same epoch and sequence from two instances are two envelopes; message
 * ids stay per sender. At IDEVS_INSTANCES_MAX the instance of the oldest current epoch is forgotten and the
 * floor keeps its epochs out; all of it read back by another launcher. */
static void test_instances(void)
{
    remove_record();
    fixture f;
    open_fixture(&f);
    delivery a = numbered(0, 100, 5, 0xa, 1), b = a;
    b.instance = 1;
    CU_ASSERT_TRUE(replay_record_done(&f.l, &a, IDEVS_OK));
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &b), IDEVS_OK);
    CU_ASSERT_TRUE(handled(&f, &b)); /* the same message id from another instance: handled already */
    b.message_id = numbered(0, 100, 5, 0xa, 2).message_id;
    CU_ASSERT_TRUE(replay_record_done(&f.l, &b, IDEVS_OK));
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &a), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &b), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(f.l.replay.senders[0].instance_count, 2);

    /* 64 instances (0 and 1 at epoch 100, 2 to 63 at later ones); a 65th evicts instance 0 (the lowest number
     * of the oldest epoch) and raises the floor to 100. */
    for (uint32_t i = 2; i < IDEVS_INSTANCES_MAX; i++) {
        delivery d = of(0, i, 200 + i, 1);
        CU_ASSERT_TRUE(replay_record_done(&f.l, &d, IDEVS_OK));
    }
    CU_ASSERT_EQUAL(f.l.replay.senders[0].instance_count, IDEVS_INSTANCES_MAX);
    CU_ASSERT_EQUAL(f.l.replay.senders[0].instance_floor, 0);
    delivery newest = of(0, 1000, 900, 1);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &newest, IDEVS_OK));
    CU_ASSERT_EQUAL(f.l.replay.senders[0].instance_count, IDEVS_INSTANCES_MAX);
    CU_ASSERT_EQUAL(f.l.replay.senders[0].instance_floor, 100);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &a), IDEVS_ERR_EPOCH_FORGOTTEN); /* its windows are gone */
    delivery a_older = of(0, 0, 99, 1);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &a_older), IDEVS_ERR_EPOCH_FORGOTTEN);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &b), IDEVS_ERR_REPLAY); /* instance 1 is kept */
    delivery a_next = of(0, 0, 101, 1);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &a_next), IDEVS_OK);
    /* An instance of the other sender is not held to this sender's floor. */
    delivery other = of(1, 0, 100, 5);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &other), IDEVS_OK);
    /* Evicted, yet opened (it was let in before the eviction): its id is noted, its epochs stay forgotten. */
    delivery late = numbered(0, 100, 6, 0xa, 3);
    CU_ASSERT_TRUE(replay_record_done(&f.l, &late, IDEVS_OK));
    CU_ASSERT_TRUE(handled(&f, &late));
    CU_ASSERT_EQUAL(f.l.replay.senders[0].instance_floor, 100);
    CU_ASSERT_EQUAL(replay_record_check(&f.l, &late), IDEVS_ERR_EPOCH_FORGOTTEN);
    CU_ASSERT_TRUE(replay_record_save(&f.l, REPLAY_SAVE_FINAL));
    close_fixture(&f);

    /* A restart: every instance's windows and the floor are read back. */
    fixture g;
    open_fixture(&g);
    CU_ASSERT_EQUAL(g.warnings, 0);
    CU_ASSERT_EQUAL(g.l.replay.senders[0].instance_count, IDEVS_INSTANCES_MAX);
    CU_ASSERT_EQUAL(g.l.replay.senders[0].instance_floor, 100);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &a), IDEVS_ERR_EPOCH_FORGOTTEN);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &b), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &newest), IDEVS_ERR_REPLAY);
    for (uint32_t i = 2; i < IDEVS_INSTANCES_MAX; i++) {
        delivery d = of(0, i, 200 + i, 1), d2 = of(0, i, 200 + i, 2);
        CU_ASSERT_EQUAL(replay_record_check(&g.l, &d), IDEVS_ERR_REPLAY);
        CU_ASSERT_EQUAL(replay_record_check(&g.l, &d2), IDEVS_OK);
    }
    CU_ASSERT_TRUE(handled(&g, &late));
    /* The evicted instance's next epoch is taken, evicting instance 1 (epoch 100) in its turn. */
    CU_ASSERT_TRUE(replay_record_done(&g.l, &a_next, IDEVS_OK));
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &a_next), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &b), IDEVS_ERR_EPOCH_FORGOTTEN);
    close_fixture(&g);
}

/* The most a record keeps (every service with IDEVS_INSTANCES_MAX instances of the longest numbers, two epochs
 * each, two handled streams) fits the slot replay_record_slot_bytes() gives, and reads back. */
static void test_fullest_fits(void)
{
    remove_record();
    fixture f;
    open_fixture(&f);
    for (size_t s = 0; s < 2; s++)
        for (uint32_t i = 0; i < IDEVS_INSTANCES_MAX; i++)
            for (uint64_t e = 1; e <= 2; e++) {
                delivery d = numbered(s, UINT64_MAX - 4 + e, UINT64_MAX - i, 0xf0 + e, UINT64_MAX - i);
                d.instance = UINT32_MAX - i;
                CU_ASSERT_TRUE(replay_record_done(&f.l, &d, IDEVS_OK));
            }
    CU_ASSERT_EQUAL(f.l.replay.senders[1].instance_count, IDEVS_INSTANCES_MAX);
    CU_ASSERT_TRUE(f.l.replay.senders[1].instances[0].prev.used);
    CU_ASSERT_TRUE(f.l.replay.senders[1].handled.previous.used);
    CU_ASSERT_TRUE(replay_record_save(&f.l, REPLAY_SAVE_FINAL));
    char path[256];
    record_path(&f, path, sizeof path);
    close_fixture(&f);
    int fd = open(path, O_RDONLY);
    uint8_t len[4];
    CU_ASSERT_FATAL(fd >= 0 && pread(fd, len, 4, (off_t)SLOT) == 4);
    close(fd);
    size_t used = 4 + ((size_t)len[0] << 24 | (size_t)len[1] << 16 | (size_t)len[2] << 8 | len[3]);
    CU_ASSERT(used <= SLOT && SLOT - used < 2 * 4096); /* room, and not much more */
    fixture g;
    open_fixture(&g);
    CU_ASSERT_EQUAL(g.warnings, 0);
    CU_ASSERT_EQUAL(g.l.replay.senders[0].instance_count, IDEVS_INSTANCES_MAX);
    delivery last = of(1, UINT32_MAX - 63, UINT64_MAX - 2, UINT64_MAX - 63);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &last), IDEVS_ERR_REPLAY);
    close_fixture(&g);
}

/* A record of version 2 (one epoch pair per sender, before instances), as that version wrote it: read as each
 * sender's instance 0, without a warning, and written at once as version 3 in a file of this size. */
static void test_version_2(void)
{
    remove_record();
    fixture f;
    open_fixture(&f); /* derives the key */
    char path[256];
    record_path(&f, path, sizeof path);
    idevs_replay window;
    idevs_replay_init(&window);
    CU_ASSERT_EQUAL(idevs_replay_accept(&window, 5), IDEVS_OK);
    Idevs__Launcher__V1__ReplayWindow cur = IDEVS__LAUNCHER__V1__REPLAY_WINDOW__INIT;
    cur.epoch = 100;
    cur.top = window.top;
    cur.n_bits = IDEVS_REPLAY_WORDS;
    cur.bits = window.bits;
    Idevs__Launcher__V1__ReplaySender sender = IDEVS__LAUNCHER__V1__REPLAY_SENDER__INIT;
    sender.uuid.data = f.l.deployment->services[0].uuid.b;
    sender.uuid.len = IDEVS_UUID_LEN;
    sender.current = &cur;
    Idevs__Launcher__V1__ReplaySender *senders[1] = {&sender};
    Idevs__Launcher__V1__ReplayRecord rec = IDEVS__LAUNCHER__V1__REPLAY_RECORD__INIT;
    rec.version = 2;
    rec.program.data = f.l.program.b;
    rec.program.len = IDEVS_UUID_LEN;
    rec.generation = 4;
    rec.n_senders = 1;
    rec.senders = senders;
    uint8_t packed[1024], mac[IDEVS_SHA256_LEN];
    size_t packed_len = idevs__launcher__v1__replay_record__pack(&rec, packed), mac_len = 0;
    CU_ASSERT_FATAL(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, f.l.replay.key, sizeof f.l.replay.key, packed,
                              packed_len, mac, sizeof mac, &mac_len) != NULL);
    Idevs__Launcher__V1__SealedReplayRecord sealed = IDEVS__LAUNCHER__V1__SEALED_REPLAY_RECORD__INIT;
    sealed.record.data = packed;
    sealed.record.len = packed_len;
    sealed.mac.data = mac;
    sealed.mac.len = sizeof mac;
    enum { V2_SLOT = 65536 };
    static uint8_t file[2 * V2_SLOT];
    memset(file, 0, sizeof file);
    size_t len = idevs__launcher__v1__sealed_replay_record__pack(&sealed, file + 4);
    file[2] = (uint8_t)(len >> 8);
    file[3] = (uint8_t)len;
    close_fixture(&f);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0 && write(fd, file, sizeof file) == (ssize_t)sizeof file);
    close(fd);

    fixture g;
    open_fixture(&g);
    CU_ASSERT_EQUAL(g.warnings, 0);
    delivery done = of(0, 0, 100, 5), other_instance = of(0, 1, 100, 5), next = of(0, 0, 100, 6);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &done), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &other_instance), IDEVS_OK);
    CU_ASSERT_EQUAL(replay_record_check(&g.l, &next), IDEVS_OK);
    CU_ASSERT_TRUE(g.l.replay.dirty); /* written again at once, as version 3 */
    CU_ASSERT_TRUE(replay_record_save(&g.l, REPLAY_SAVE_FINAL));
    struct stat st;
    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_size, (off_t)(2 * SLOT));
    close_fixture(&g);
    fixture h;
    open_fixture(&h);
    CU_ASSERT_EQUAL(h.warnings, 0);
    CU_ASSERT_FALSE(h.l.replay.dirty);
    CU_ASSERT_EQUAL(replay_record_check(&h.l, &done), IDEVS_ERR_REPLAY);
    close_fixture(&h);
}

static CU_TestInfo tests[] = {
    {"what moves it and what it refuses; two epochs per sender", test_outcomes_and_epochs},
    {"read back; a slot cut short leaves the record before it; both damaged", test_read_back_and_slots},
    {"a file readable by others is not read, and replaced by a private one", test_another_program_and_mode},
    {"written for a release, synced when due or at stop", test_when_synced},
    {"message ids handled: per stream, two streams, read back, the former file size", test_handled_ids},
    {"instances: windows per instance, 64 kept, the oldest evicted and floored, read back", test_instances},
    {"the fullest record fits its slot", test_fullest_fits},
    {"a record of version 2 is read as instance 0 and written again as version 3", test_version_2},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("replay_record", suite_init, suite_clean, tests);
}

/* The compartment channel's framing (enclave-bridge/channel.c) over a real socketpair: round trips, several
 * frames in one read, a frame arriving a byte at a time, the size limit, bytes that are no frame, a frame with
 * unknown fields or no body, the end of the stream, the send queue's bound and its flush. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "idevs_channel.h"

typedef struct pair {
    idevs_channel a;
    int b; /* the raw other end */
} pair;

static void pair_open(pair *p, size_t max_frame)
{
    int sv[2];
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    idevs_channel_init(&p->a, sv[0], max_frame);
    p->b = sv[1];
}

static void pair_close(pair *p)
{
    idevs_channel_close(&p->a);
    if (p->b >= 0)
        close(p->b);
}

/* A Done frame (a small, fixed-size body). */
static Idevs__Bridge__V1__Frame done_frame(Idevs__Bridge__V1__Done *done, uint64_t id)
{
    idevs__bridge__v1__done__init(done);
    done->delivery_id = id;
    done->status = 7;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DONE;
    f.done = done;
    return f;
}

/* Writes len bytes of a raw frame (4-byte big-endian length, then body) to fd. */
static void write_raw(int fd, const uint8_t *body, size_t len, uint32_t declared)
{
    uint8_t h[4] = {(uint8_t)(declared >> 24), (uint8_t)(declared >> 16), (uint8_t)(declared >> 8), (uint8_t)declared};
    CU_ASSERT_FATAL(write(fd, h, 4) == 4);
    if (len > 0)
        CU_ASSERT_FATAL(write(fd, body, len) == (ssize_t)len);
}

static void write_frame(int fd, const Idevs__Bridge__V1__Frame *f)
{
    size_t len = idevs__bridge__v1__frame__get_packed_size(f);
    uint8_t *body = malloc(len);
    CU_ASSERT_FATAL(body != NULL);
    idevs__bridge__v1__frame__pack(f, body);
    write_raw(fd, body, len, (uint32_t)len);
    free(body);
}

static void test_round_trip_and_batch(void)
{
    pair p;
    pair_open(&p, 0);
    /* Three frames written at once arrive as three, the later ones without another read. */
    for (uint64_t id = 1; id <= 3; id++) {
        Idevs__Bridge__V1__Done d;
        Idevs__Bridge__V1__Frame f = done_frame(&d, id);
        write_frame(p.b, &f);
    }
    for (uint64_t id = 1; id <= 3; id++) {
        Idevs__Bridge__V1__Frame *got = NULL;
        CU_ASSERT_EQUAL_FATAL(idevs_channel_recv(&p.a, &got, 1000), IDEVS_OK);
        CU_ASSERT_EQUAL(got->body_case, IDEVS__BRIDGE__V1__FRAME__BODY_DONE);
        CU_ASSERT_EQUAL(got->done->delivery_id, id);
        idevs__bridge__v1__frame__free_unpacked(got, NULL);
    }
    Idevs__Bridge__V1__Frame *none = NULL;
    CU_ASSERT_EQUAL(idevs_channel_recv(&p.a, &none, 0), IDEVS_ERR_TIMEOUT);
    CU_ASSERT_PTR_NULL(none);
    /* And the other way: what the channel sends, the raw end reads as length || frame. */
    Idevs__Bridge__V1__Done d;
    Idevs__Bridge__V1__Frame f = done_frame(&d, 42);
    CU_ASSERT_EQUAL(idevs_channel_send(&p.a, &f, 1000), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_channel_flush(&p.a, 1000), IDEVS_OK);
    uint8_t buf[64];
    ssize_t n = read(p.b, buf, sizeof buf);
    size_t want = idevs__bridge__v1__frame__get_packed_size(&f);
    CU_ASSERT_EQUAL_FATAL(n, (ssize_t)(4 + want));
    CU_ASSERT_EQUAL((size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3], want);
    Idevs__Bridge__V1__Frame *back = idevs__bridge__v1__frame__unpack(NULL, want, buf + 4);
    CU_ASSERT_FATAL(back != NULL);
    CU_ASSERT_EQUAL(back->done->delivery_id, 42);
    idevs__bridge__v1__frame__free_unpacked(back, NULL);
    pair_close(&p);
}

static void test_byte_at_a_time(void)
{
    pair p;
    pair_open(&p, 0);
    Idevs__Bridge__V1__Done d;
    Idevs__Bridge__V1__Frame f = done_frame(&d, 9);
    size_t len = idevs__bridge__v1__frame__get_packed_size(&f);
    uint8_t raw[64];
    raw[0] = 0, raw[1] = 0, raw[2] = 0, raw[3] = (uint8_t)len;
    idevs__bridge__v1__frame__pack(&f, raw + 4);
    Idevs__Bridge__V1__Frame *got = NULL;
    for (size_t i = 0; i < 4 + len; i++) {
        /* Nothing whole yet: a timeout, the partial bytes kept. */
        CU_ASSERT_EQUAL(idevs_channel_recv(&p.a, &got, 0), IDEVS_ERR_TIMEOUT);
        CU_ASSERT_FATAL(write(p.b, raw + i, 1) == 1);
    }
    CU_ASSERT_EQUAL_FATAL(idevs_channel_recv(&p.a, &got, 1000), IDEVS_OK);
    CU_ASSERT_EQUAL(got->done->delivery_id, 9);
    idevs__bridge__v1__frame__free_unpacked(got, NULL);
    pair_close(&p);
}

static void test_refusals(void)
{
    Idevs__Bridge__V1__Frame *got = NULL;
    /* A declared length above the channel's limit: refused before its bytes arrive. */
    pair p;
    pair_open(&p, 1024);
    write_raw(p.b, NULL, 0, 1025);
    CU_ASSERT_EQUAL(idevs_channel_recv(&p.a, &got, 1000), IDEVS_ERR_FRAME);
    pair_close(&p);
    /* Length zero. */
    pair_open(&p, 0);
    write_raw(p.b, NULL, 0, 0);
    CU_ASSERT_EQUAL(idevs_channel_recv(&p.a, &got, 1000), IDEVS_ERR_FRAME);
    pair_close(&p);
    /* Bytes that do not decode as a Frame. */
    pair_open(&p, 0);
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff};
    write_raw(p.b, junk, sizeof junk, sizeof junk);
    CU_ASSERT_EQUAL(idevs_channel_recv(&p.a, &got, 1000), IDEVS_ERR_FRAME);
    pair_close(&p);
    /* A Frame with no body, and one with a field of unknown number (field 1000, varint 1). */
    pair_open(&p, 0);
    static const uint8_t unknown[] = {0xc0, 0x3e, 0x01};
    write_raw(p.b, unknown, sizeof unknown, sizeof unknown);
    CU_ASSERT_EQUAL(idevs_channel_recv(&p.a, &got, 1000), IDEVS_ERR_FRAME);
    pair_close(&p);
    CU_ASSERT_PTR_NULL(got);
}

static void test_end_of_stream(void)
{
    pair p;
    pair_open(&p, 0);
    /* Half a frame, then the peer goes: the end of the stream, not a frame. */
    static const uint8_t half[] = {0, 0, 0, 10, 0x08};
    CU_ASSERT_FATAL(write(p.b, half, sizeof half) == (ssize_t)sizeof half);
    close(p.b);
    p.b = -1;
    Idevs__Bridge__V1__Frame *got = NULL;
    CU_ASSERT_EQUAL(idevs_channel_recv(&p.a, &got, 1000), IDEVS_ERR_CHANNEL_CLOSED);
    /* Sending to a departed peer: closed, and no SIGPIPE (the test would die). */
    Idevs__Bridge__V1__Done d;
    Idevs__Bridge__V1__Frame f = done_frame(&d, 1);
    idevs_err err = idevs_channel_send(&p.a, &f, 1000);
    if (err == IDEVS_OK)
        err = idevs_channel_flush(&p.a, 1000);
    CU_ASSERT_EQUAL(err, IDEVS_ERR_CHANNEL_CLOSED);
    pair_close(&p);
}

static void test_send_queue_bound_and_flush(void)
{
    pair p;
    pair_open(&p, 0);
    p.a.out_max = 64 * 1024;
    /* A peer that reads nothing: frames queue up to the bound, then QUEUE_FULL; nothing is lost. */
    Idevs__Bridge__V1__Deliver del = IDEVS__BRIDGE__V1__DELIVER__INIT;
    static uint8_t payload[8192];
    memset(payload, 0x5a, sizeof payload);
    del.topic = "t";
    del.envelope.data = payload;
    del.envelope.len = sizeof payload;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER;
    f.deliver = &del;
    size_t queued = 0;
    idevs_err err = IDEVS_OK;
    for (int i = 0; i < 10000 && err == IDEVS_OK; i++) {
        del.delivery_id = (uint64_t)i + 1;
        err = idevs_channel_send(&p.a, &f, 0);
        if (err == IDEVS_OK)
            queued++;
    }
    CU_ASSERT_EQUAL(err, IDEVS_ERR_QUEUE_FULL);
    CU_ASSERT(queued > 0 && queued < 10000);
    CU_ASSERT_TRUE(idevs_channel_pending(&p.a));
    CU_ASSERT_EQUAL(idevs_channel_flush(&p.a, 0), IDEVS_ERR_TIMEOUT);
    /* The peer reads: every queued frame arrives whole and in order. */
    idevs_channel peer;
    idevs_channel_init(&peer, p.b, 0);
    p.b = -1;
    size_t got_count = 0;
    for (size_t i = 0; i < queued; i++) {
        (void)idevs_channel_flush(&p.a, 0);
        Idevs__Bridge__V1__Frame *got = NULL;
        if (idevs_channel_recv(&peer, &got, 2000) != IDEVS_OK)
            break;
        CU_ASSERT_EQUAL(got->deliver->delivery_id, i + 1);
        CU_ASSERT_EQUAL(got->deliver->envelope.len, sizeof payload);
        idevs__bridge__v1__frame__free_unpacked(got, NULL);
        got_count++;
    }
    CU_ASSERT_EQUAL(got_count, queued);
    CU_ASSERT_EQUAL(idevs_channel_flush(&p.a, 1000), IDEVS_OK);
    CU_ASSERT_FALSE(idevs_channel_pending(&p.a));
    idevs_channel_close(&peer);
    pair_close(&p);
}

static CU_TestInfo tests[] = {
    {"frames there and back; three in one read", test_round_trip_and_batch},
    {"a frame arriving a byte at a time", test_byte_at_a_time},
    {"oversized, empty, undecodable, bodiless or unknown-field frames are refused", test_refusals},
    {"the end of the stream mid-frame; sending to a departed peer", test_end_of_stream},
    {"the send queue's bound; queued frames arrive whole, in order", test_send_queue_bound_and_flush},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("channel", NULL, NULL, tests);
}

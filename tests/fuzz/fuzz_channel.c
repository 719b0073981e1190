/* The compartment channel's framing (enclave-bridge/channel.c): the key holder reads what the launcher
 * writes, and the launcher what a compartment writes, which it does not trust. Input: one byte choosing the
 * frame limit, 64 to 16384 bytes (64 times its value plus one), then the bytes the peer sends before it
 * closes. Not the default limit of 20 MiB: the channel reserves room for the whole frame a header announces,
 * so every input would cost a 20 MiB allocation and its wiping, and nothing in the reading depends on the
 * limit's size.
 *
 * The frames idevs_channel_recv returns must be exactly those a second reading of the same bytes finds,
 * written from the header's contract: a 4-byte big-endian length, 1..limit, then a protobuf Frame with a body
 * and no unknown field. The first frame that breaks it is IDEVS_ERR_FRAME; bytes cut short by the close are
 * IDEVS_ERR_CHANNEL_CLOSED, and so is the end. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "idevs_channel.h"

#define INPUT_MAX (128u * 1024u) /* what one socket buffer surely takes, so that one write sends it all */

/* What the next frame at data[*at..size) should give, per the header; *frame_out receives it when OK. */
static idevs_err expected_next(const uint8_t *data, size_t size, size_t *at, size_t max_frame,
                               Idevs__Bridge__V1__Frame **frame_out)
{
    *frame_out = NULL;
    if (size - *at < IDEVS_CHANNEL_HEADER)
        return IDEVS_ERR_CHANNEL_CLOSED;
    const uint8_t *p = data + *at;
    size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (len == 0 || len > max_frame)
        return IDEVS_ERR_FRAME;
    if (size - *at - IDEVS_CHANNEL_HEADER < len)
        return IDEVS_ERR_CHANNEL_CLOSED;
    *at += IDEVS_CHANNEL_HEADER + len;
    Idevs__Bridge__V1__Frame *f = idevs__bridge__v1__frame__unpack(NULL, len, p + IDEVS_CHANNEL_HEADER);
    if (f == NULL)
        return IDEVS_ERR_FRAME;
    if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY__NOT_SET || f->base.n_unknown_fields != 0) {
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
        return IDEVS_ERR_FRAME;
    }
    *frame_out = f;
    return IDEVS_OK;
}

static int same_frame(const Idevs__Bridge__V1__Frame *a, const Idevs__Bridge__V1__Frame *b)
{
    size_t la = idevs__bridge__v1__frame__get_packed_size(a), lb = idevs__bridge__v1__frame__get_packed_size(b);
    if (la != lb)
        return 0;
    uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
    int same = pa != NULL && pb != NULL && idevs__bridge__v1__frame__pack(a, pa) == la &&
               idevs__bridge__v1__frame__pack(b, pb) == lb && memcmp(pa, pb, la) == 0;
    free(pa);
    free(pb);
    return same;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > INPUT_MAX)
        return 0;
    size_t max_frame = ((size_t)data[0] + 1u) * 64u;
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;
    int buf = (int)INPUT_MAX * 2;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    FUZZ_CHECK(size == 0 || write(sv[0], data, size) == (ssize_t)size);
    close(sv[0]);
    idevs_channel ch;
    idevs_channel_init(&ch, sv[1], max_frame);
    size_t at = 0;
    for (;;) {
        Idevs__Bridge__V1__Frame *got, *want;
        idevs_err expected = expected_next(data, size, &at, max_frame, &want);
        idevs_err err = idevs_channel_recv(&ch, &got, 5000);
        FUZZ_CHECK(err == expected);
        if (err != IDEVS_OK) {
            FUZZ_CHECK(got == NULL);
            break;
        }
        FUZZ_CHECK(got != NULL && same_frame(got, want));
        idevs__bridge__v1__frame__free_unpacked(got, NULL);
        idevs__bridge__v1__frame__free_unpacked(want, NULL);
    }
    idevs_channel_close(&ch);
    return 0;
}

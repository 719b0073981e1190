/* Length-prefixed protobuf frames over a stream socket, with bounded buffers and timeouts on both ends. */
#include "idevs_channel.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "idevs_crypto.h"

#define OUT_MAX_DEFAULT (64u * 1024u * 1024u)

void idevs_channel_init(idevs_channel *ch, int fd, size_t max_frame)
{
    memset(ch, 0, sizeof *ch);
    ch->fd = fd;
    ch->max_frame = (max_frame == 0 || max_frame > IDEVS_CHANNEL_FRAME_MAX) ? IDEVS_CHANNEL_FRAME_MAX : max_frame;
    ch->out_max = OUT_MAX_DEFAULT;
    /* Timeouts rest on poll() and non-blocking reads and writes. */
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

void idevs_channel_close(idevs_channel *ch)
{
    /* Buffers may hold envelopes and, during start-up, the sealing key: cleanse before freeing. */
    idevs_cleanse(ch->in, ch->in_cap);
    idevs_cleanse(ch->out, ch->out_cap);
    free(ch->in);
    free(ch->out);
    if (ch->fd >= 0)
        close(ch->fd);
    memset(ch, 0, sizeof *ch);
    ch->fd = -1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Remaining milliseconds before deadline (-1: none), never negative. */
static int remaining(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    return left < 0 ? 0 : (int)(left > 1000000 ? 1000000 : left);
}

static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Waits for events on the channel's fd; IDEVS_OK when ready, IDEVS_ERR_TIMEOUT when the time is up. */
static idevs_err wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, remaining(deadline));
        if (n > 0)
            return IDEVS_OK; /* errors and hang-ups surface in the following read or write */
        if (n == 0)
            return IDEVS_ERR_TIMEOUT;
        if (errno != EINTR)
            return IDEVS_ERR_CHANNEL_CLOSED;
    }
}

static bool reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t new_cap = *cap ? *cap : 4096;
    while (new_cap < need)
        new_cap *= 2;
    uint8_t *bigger = malloc(new_cap);
    if (bigger == NULL)
        return false;
    if (*buf != NULL) {
        memcpy(bigger, *buf, *cap);
        idevs_cleanse(*buf, *cap);
        free(*buf);
    }
    *buf = bigger;
    *cap = new_cap;
    return true;
}

int idevs_channel_pending(const idevs_channel *ch)
{
    return ch->out_len > ch->out_off;
}

idevs_err idevs_channel_flush(idevs_channel *ch, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);
    while (ch->out_off < ch->out_len) {
        size_t want = ch->out_len - ch->out_off;
        /* send() with MSG_NOSIGNAL: a departed peer is an error to report, not a SIGPIPE to die of. */
        ssize_t n = send(ch->fd, ch->out + ch->out_off, want, MSG_NOSIGNAL);
        if (n > 0) {
            /* Sent bytes may include the sealing key (Init): wipe them as soon as they are gone. */
            idevs_cleanse(ch->out + ch->out_off, (size_t)n);
            ch->out_off += (size_t)n;
            if (ch->out_full)
                ch->moved += (size_t)n; /* room the peer made by reading */
            ch->out_full = (size_t)n < want;
            if ((size_t)n < want) {
                /* A stream socket takes less only when its buffer is full: wait for room instead of sending
                 * again just to meet EAGAIN. */
                idevs_err err = timeout_ms == 0 ? IDEVS_ERR_TIMEOUT : wait_fd(ch->fd, POLLOUT, deadline);
                if (err != IDEVS_OK)
                    return err;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ch->out_full = 1;
            idevs_err err = timeout_ms == 0 ? IDEVS_ERR_TIMEOUT : wait_fd(ch->fd, POLLOUT, deadline);
            if (err != IDEVS_OK)
                return err;
            continue;
        }
        return IDEVS_ERR_CHANNEL_CLOSED; /* EPIPE and friends: the peer is gone */
    }
    ch->out_off = ch->out_len = 0;
    return IDEVS_OK;
}

idevs_err idevs_channel_queue(idevs_channel *ch, const Idevs__Bridge__V1__Frame *frame)
{
    size_t len = idevs__bridge__v1__frame__get_packed_size(frame);
    if (len > ch->max_frame)
        return IDEVS_ERR_TOO_LARGE;
    /* Compact the queue before growing it; the tail left behind is wiped. */
    if (ch->out_off > 0) {
        size_t left = ch->out_len - ch->out_off;
        memmove(ch->out, ch->out + ch->out_off, left);
        idevs_cleanse(ch->out + left, ch->out_len - left);
        ch->out_len = left;
        ch->out_off = 0;
    }
    if (IDEVS_CHANNEL_HEADER + len > ch->out_max - ch->out_len)
        return IDEVS_ERR_QUEUE_FULL;
    size_t need = ch->out_len + IDEVS_CHANNEL_HEADER + len;
    if (!reserve(&ch->out, &ch->out_cap, need))
        return IDEVS_ERR_NOMEM;
    uint8_t *p = ch->out + ch->out_len;
    p[0] = (uint8_t)(len >> 24);
    p[1] = (uint8_t)(len >> 16);
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    idevs__bridge__v1__frame__pack(frame, p + IDEVS_CHANNEL_HEADER);
    ch->out_len = need;
    return IDEVS_OK;
}

idevs_err idevs_channel_send(idevs_channel *ch, const Idevs__Bridge__V1__Frame *frame, int timeout_ms)
{
    idevs_err err = idevs_channel_queue(ch, frame);
    if (err != IDEVS_OK)
        return err;
    err = idevs_channel_flush(ch, timeout_ms);
    return err == IDEVS_ERR_TIMEOUT ? IDEVS_OK : err; /* queued: later calls finish writing it */
}

/* The big-endian length in a frame header. */
static size_t header_length(const uint8_t *p)
{
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | (size_t)p[3];
}

idevs_err idevs_channel_recv(idevs_channel *ch, Idevs__Bridge__V1__Frame **frame, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);
    *frame = NULL;
    for (;;) {
        size_t have = ch->in_len - ch->in_off;
        size_t need = IDEVS_CHANNEL_HEADER; /* what the frame at the head needs in all, once its header is in */
        if (have >= IDEVS_CHANNEL_HEADER) {
            uint8_t *p = ch->in + ch->in_off;
            size_t len = header_length(p);
            if (len == 0 || len > ch->max_frame)
                return IDEVS_ERR_FRAME;
            need = IDEVS_CHANNEL_HEADER + len;
            if (have >= need) {
                *frame = idevs__bridge__v1__frame__unpack(NULL, len, p + IDEVS_CHANNEL_HEADER);
                idevs_cleanse(p, need);
                ch->in_off += need;
                if (ch->in_off == ch->in_len)
                    ch->in_off = ch->in_len = 0;
                if (*frame == NULL)
                    return IDEVS_ERR_FRAME;
                if ((*frame)->body_case == IDEVS__BRIDGE__V1__FRAME__BODY__NOT_SET ||
                    (*frame)->base.n_unknown_fields != 0) {
                    idevs__bridge__v1__frame__free_unpacked(*frame, NULL);
                    *frame = NULL;
                    return IDEVS_ERR_FRAME;
                }
                return IDEVS_OK;
            }
        }
        if (ch->in_drained) {
            /* The last read emptied the socket: no new bytes unless poll() says so. */
            ch->in_drained = 0;
            if (timeout_ms == 0)
                return IDEVS_ERR_TIMEOUT;
            idevs_err err = wait_fd(ch->fd, POLLIN, deadline);
            if (err != IDEVS_OK)
                return err;
        }
        /* The incomplete frame moves to the front; the bytes it leaves behind are wiped. */
        if (ch->in_off > 0) {
            memmove(ch->in, ch->in + ch->in_off, have);
            idevs_cleanse(ch->in + have, ch->in_len - have);
            ch->in_off = 0;
            ch->in_len = have;
        }
        /* Room for the whole frame at the head (need <= header + max_frame) and read-ahead of the next ones. */
        if (!reserve(&ch->in, &ch->in_cap, need > IDEVS_CHANNEL_READ_CHUNK ? need : IDEVS_CHANNEL_READ_CHUNK))
            return IDEVS_ERR_NOMEM;
        size_t room = ch->in_cap - ch->in_len;
        ssize_t n = read(ch->fd, ch->in + ch->in_len, room);
        if (n > 0) {
            ch->in_len += (size_t)n;
            ch->moved += (size_t)n;
            /* A stream socket gives less than asked only when it has no more. */
            ch->in_drained = (size_t)n < room;
            continue;
        }
        if (n == 0)
            return IDEVS_ERR_CHANNEL_CLOSED;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return IDEVS_ERR_CHANNEL_CLOSED;
        if (timeout_ms == 0)
            return IDEVS_ERR_TIMEOUT;
        idevs_err err = wait_fd(ch->fd, POLLIN, deadline);
        if (err != IDEVS_OK)
            return err;
    }
}

bool idevs_bridge_done_handled(idevs_err status)
{
    switch (status) {
    case IDEVS_OK:
    case IDEVS_ERR_LOGIC:
    case IDEVS_ERR_UNKNOWN_OUTPUT:
    case IDEVS_ERR_UNKNOWN_REQUEST:
    case IDEVS_ERR_ALREADY_DONE:
        return true;
    default:
        return false;
    }
}

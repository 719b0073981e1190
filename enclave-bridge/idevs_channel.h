/* The compartment channel's framing: a 4-byte big-endian length, then a protobuf idevs.bridge.v1.Frame.
 * Both ends use it. Frames larger than the limit, truncated frames and frames that do not decode are refused
 * with IDEVS_ERR_FRAME; the caller then drops the connection (a peer that sent one is not trusted to resync). */
#ifndef IDEVS_CHANNEL_H
#define IDEVS_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge.pb-c.h"
#include "idevs_envelope.h"
#include "idevs_error.h"

#define IDEVS_CHANNEL_HEADER 4
#define IDEVS_CHANNEL_READ_CHUNK (64u * 1024u) /* the least one read asks for */
#define IDEVS_CHANNEL_FRAME_MAX (20u * 1024u * 1024u) /* default limit; a channel may set a lower one */
/* A request's correlation data, in a Publish frame and on the wire: its message id (16 bytes), then the token the
 * compartment sealed for itself (compartment/request_state.c). Every request's has this one size, its plaintext
 * padded to the largest (63 ids of provenance and IDEVS_REQUEST_STATE_MAX bytes of state): the length is in the
 * clear, so it shows neither the provenance count (which envelope version 2 seals) nor the logic's state. */
#define IDEVS_REQUEST_STATE_PLAIN (288u + 18u * (IDEVS_PROVENANCE_MAX - 1u)) /* 18 bytes an id: tag, length, 16 */
#define IDEVS_REQUEST_CORRELATION_LEN (16u + 12u + IDEVS_REQUEST_STATE_PLAIN + 16u)

/* The most bytes a JoinRequest or JoinGrant (bridge.proto; docs/SCALING.md) may take: a chain of four 8 KiB
 * certificates (IDEVS_CHAIN_MAX, IDEVS_CERT_MAX) and the rest. Both ends refuse a longer one unread. */
#define IDEVS_JOIN_MESSAGE_MAX 40960u

/* Whether len is the size of a request's correlation data: IDEVS_REQUEST_CORRELATION_LEN, no other. */
static inline bool idevs_request_correlation_len_ok(size_t len)
{
    return len == IDEVS_REQUEST_CORRELATION_LEN;
}

typedef struct idevs_channel {
    int fd;
    size_t max_frame;
    /* receive buffer: bytes read ahead, whole frames from in_off on, then at most one frame being assembled */
    uint8_t *in;
    size_t in_off, in_len, in_cap;
    int in_drained; /* the last read returned less than asked: the socket was empty, skip one read */
    /* send buffer: frames not yet written (non-blocking fds) */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    size_t out_max; /* bytes queued at most before send fails with IDEVS_ERR_QUEUE_FULL */
    /* Bytes the peer has moved: those read, and those written into a socket the peer had to empty first (the
     * kernel takes a socket buffer's worth whatever the peer does). A stuck peer moves none. */
    uint64_t moved;
    int out_full; /* the last write found the socket full */
} idevs_channel;

/* Takes fd (a stream socket) and makes it non-blocking. Writes use send(MSG_NOSIGNAL), so a departed peer never
 * raises SIGPIPE, and wipe each byte once it is sent. max_frame 0 means IDEVS_CHANNEL_FRAME_MAX. */
void idevs_channel_init(idevs_channel *ch, int fd, size_t max_frame);
/* Frees the buffers (cleansed) and closes fd. */
void idevs_channel_close(idevs_channel *ch);

/* Encodes and queues a frame without writing anything: the frames of one turn leave together, in one send, at
 * the next idevs_channel_send or idevs_channel_flush. Same limits and errors as idevs_channel_send. */
idevs_err idevs_channel_queue(idevs_channel *ch, const Idevs__Bridge__V1__Frame *frame);

/* Encodes and queues a frame, then writes as much as the fd takes without blocking beyond timeout_ms
 * (-1: wait as long as needed; 0: do not wait). IDEVS_OK once the frame is fully queued; the rest is written
 * by later calls or idevs_channel_flush. */
idevs_err idevs_channel_send(idevs_channel *ch, const Idevs__Bridge__V1__Frame *frame, int timeout_ms);

/* Writes queued bytes, waiting up to timeout_ms. IDEVS_OK when the queue is empty, IDEVS_ERR_TIMEOUT if bytes
 * remain, IDEVS_ERR_CHANNEL_CLOSED if the peer is gone. */
idevs_err idevs_channel_flush(idevs_channel *ch, int timeout_ms);

/* True when queued bytes wait to be written (the caller should poll for POLLOUT). */
int idevs_channel_pending(const idevs_channel *ch);

/* Receives one frame, waiting up to timeout_ms (-1 forever, 0 not at all). One read takes as much as the
 * buffer has room for (at least IDEVS_CHANNEL_READ_CHUNK), so it may bring several frames: later calls return
 * them without a system call. After a read that returned less than asked (the stream socket was emptied), the
 * next call that finds no whole frame buffered does not read again to meet EAGAIN: with timeout 0 it answers
 * IDEVS_ERR_TIMEOUT at once (the caller polls the descriptor, level-triggered, before calling again), otherwise
 * it waits in poll() first. *frame is to be freed with
 * idevs__bridge__v1__frame__free_unpacked(*frame, NULL). IDEVS_ERR_TIMEOUT when no whole frame arrived
 * in time (partial bytes stay buffered), IDEVS_ERR_CHANNEL_CLOSED at end of stream, IDEVS_ERR_FRAME for an
 * oversized or undecodable frame. */
idevs_err idevs_channel_recv(idevs_channel *ch, Idevs__Bridge__V1__Frame **frame, int timeout_ms);

/* Whether a Done with this status proves the compartment opened the delivery (so its clear header was
 * authentic) and handled it for good: it is then noted as handled (the launcher's replay record, the
 * compartment's windows) and receipted, and a copy sent again is receipted, not run. Refusals of the envelope
 * itself (decrypt, replay, epoch, certificate, sender, malformed) are not, nor unknown_input, which can also
 * come first. */
bool idevs_bridge_done_handled(idevs_err status);

#endif

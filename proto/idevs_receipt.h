/* Receipts and numbered message ids (docs/PROTOCOL.md section 9).
 *
 * A sender that sends a message again until it is receipted numbers its messages: the message id is an 8-byte
 * stream, fixed for as long as the sender keeps its outbox, then a 64-bit number, big-endian, from 1 upwards.
 * A receiver notes, per sender and stream, a window of the numbers it handled, so a message sent again (sealed
 * anew, with the same id) is receipted again and not handled twice.
 *
 * A receipt is an envelope like any other, on the receipt topic, whose payload is a Receipt message
 * (proto/idevs.proto): the ids of messages its sender handled. */
#ifndef IDEVS_RECEIPT_H
#define IDEVS_RECEIPT_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_error.h"
#include "idevs_uuid.h"

#define IDEVS_RECEIPT_IDS_MAX 1024u  /* ids in one receipt */
/* How long a sender waits for a receipt before it sends a message again: a receipt usually comes within
 * milliseconds, so a message not receipted after the first wait was lost; then the wait doubles, up to the
 * most. Both outboxes (the launcher's and the service library's) follow it. */
#define IDEVS_RESEND_FIRST_MS 5000u
#define IDEVS_RESEND_MAX_MS 60000u
#define IDEVS_MSGID_STREAM_LEN 8u

/* The id of message `number` (1 or more) of stream. */
idevs_msgid idevs_msgid_numbered(const uint8_t stream[IDEVS_MSGID_STREAM_LEN], uint64_t number);
/* The stream (as a big-endian u64) and the number of an id. */
uint64_t idevs_msgid_stream(const idevs_msgid *id);
uint64_t idevs_msgid_number(const idevs_msgid *id);

/* The wait after the sends-th copy of a message (1 or more) before the next: 5 s, 10 s, 20 s, 40 s, then 60 s. */
uint32_t idevs_resend_delay_ms(unsigned sends);

/* Encodes a Receipt of ids[0..count) (1..IDEVS_RECEIPT_IDS_MAX) into a malloc'd *out. */
idevs_err idevs_receipt_encode(const idevs_msgid *ids, size_t count, uint8_t **out, size_t *out_len);
/* Decodes a Receipt into ids (room for IDEVS_RECEIPT_IDS_MAX): IDEVS_ERR_MALFORMED unless it is a Receipt with
 * no unknown field and 1..IDEVS_RECEIPT_IDS_MAX ids of 16 bytes each. */
idevs_err idevs_receipt_decode(const uint8_t *data, size_t len, idevs_msgid *ids, size_t *count);

#endif

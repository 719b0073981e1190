/* What a receiver keeps of one sender's numbered message ids (docs/PROTOCOL.md 9.2), so that a message sent again
 * is receipted again and not handled twice: the two streams it handled messages of last, each with a window of
 * the numbers handled (base/idevs_replay.h). The one owner of that rule, for the launcher's replay record, which
 * keeps it across restarts, and the compartment, which applies it to what it opens. */
#ifndef IDEVS_HANDLED_H
#define IDEVS_HANDLED_H

#include <stdbool.h>
#include <stdint.h>

#include "idevs_error.h"
#include "idevs_replay.h"
#include "idevs_uuid.h"

typedef struct idevs_handled_stream {
    bool used;
    uint64_t stream; /* the id's first 8 bytes, big-endian (proto/idevs_receipt.h) */
    idevs_replay window;
} idevs_handled_stream;

typedef struct idevs_handled {
    idevs_handled_stream latest, previous; /* previous is used only beside latest, and of another stream */
} idevs_handled;

/* IDEVS_ERR_REPLAY: id was handled already (a copy); IDEVS_ERR_OUTSIDE_WINDOW: too far below its stream's window
 * to tell; IDEVS_OK: not handled as far as the windows know (an unnumbered id, a stream not kept, a new number). */
idevs_err idevs_handled_check(const idevs_handled *h, const idevs_msgid *id);
/* Notes id as handled; a stream other than the two kept replaces the older. An unnumbered id is not noted. */
void idevs_handled_note(idevs_handled *h, const idevs_msgid *id);
/* Whether the pair keeps the rule's shape: previous only beside latest, and of another stream (for readers of a
 * record). */
bool idevs_handled_valid(const idevs_handled *h);

#endif

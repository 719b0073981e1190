/* What the broker's acknowledgement of a publication says: an MQTT 5 PUBACK (QoS 1) or PUBREC (QoS 2) carries a
 * reason code, and every code at or above 0x80 means the broker did not take the message (an ACL's "not
 * authorized", a quota, a payload format). This file turns a code into the library's outcome and sentence,
 * and tracks which envelope each outstanding packet carries, so that the application learns the outcome of
 * each publication by its message id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service_internal.h"

/* The PUBACK and PUBREC reason codes of MQTT 5.0 (sections 3.4.2.1 and 3.5.2.1), by their names there. */
static const char *reason_name(int code)
{
    switch (code) {
    case 0x00: return "success";
    case 0x10: return "no matching subscribers";
    case 0x80: return "unspecified error";
    case 0x83: return "implementation specific error";
    case 0x87: return "not authorized";
    case 0x90: return "topic name invalid";
    case 0x91: return "packet identifier in use";
    case 0x92: return "packet identifier not found";
    case 0x97: return "quota exceeded";
    case 0x99: return "payload format invalid";
    default: return "not a reason code of a PUBACK";
    }
}

idevs_err idevs_service_puback_result(int reason_code, char *why, size_t why_len)
{
    if (reason_code >= 0 && reason_code < 0x80) {
        if (why != NULL && why_len > 0)
            why[0] = '\0';
        return IDEVS_OK;
    }
    return idevs_fail(why, why_len, IDEVS_ERR_BROKER, "the broker refused the publication: 0x%02x %s",
                      (unsigned)reason_code & 0xffu, reason_name(reason_code));
}

void idevs_service_set_on_published(idevs_service *svc, idevs_service_on_published cb, void *arg)
{
    if (svc == NULL)
        return;
    svc->on_published = cb;
    svc->on_published_arg = arg;
}

idevs_err svc_outstanding_add(idevs_service *svc, int mid, const idevs_msgid *id)
{
    if (svc->on_published == NULL)
        return IDEVS_OK; /* nobody asks for outcomes one by one: the counters and flush() say enough */
    if (svc->outstanding_count == svc->outstanding_cap) {
        size_t cap = svc->outstanding_cap == 0 ? 64 : svc->outstanding_cap * 2;
        if (cap > SVC_OUTSTANDING_MAX)
            return IDEVS_ERR_QUEUE_FULL;
        svc_outstanding *grown = realloc(svc->outstanding, cap * sizeof *grown);
        if (grown == NULL)
            return IDEVS_ERR_NOMEM;
        svc->outstanding = grown;
        svc->outstanding_cap = cap;
    }
    svc->outstanding[svc->outstanding_count++] = (svc_outstanding){.mid = mid, .id = *id};
    return IDEVS_OK;
}

void svc_on_publish_ack(idevs_service *svc, int mid, int reason_code)
{
    char why[128];
    idevs_err result = idevs_service_puback_result(reason_code, why, sizeof why);
    if (result == IDEVS_OK) {
        svc->stats.acknowledged++;
    } else {
        svc->stats.refused++;
        svc->refused_unreported++;
        snprintf(svc->last_refusal, sizeof svc->last_refusal, "%s", why);
    }
    /* Acknowledgements come in the order of the packets, mostly: the oldest entry is nearly always the one. */
    for (size_t i = 0; i < svc->outstanding_count; i++) {
        if (svc->outstanding[i].mid != mid)
            continue;
        idevs_msgid id = svc->outstanding[i].id;
        memmove(&svc->outstanding[i], &svc->outstanding[i + 1],
                (svc->outstanding_count - i - 1) * sizeof *svc->outstanding);
        svc->outstanding_count--;
        if (svc->on_published != NULL)
            svc->on_published(svc, &id, result, why, svc->on_published_arg);
        return;
    }
}

void svc_outstanding_free(idevs_service *svc)
{
    free(svc->outstanding);
    svc->outstanding = NULL;
    svc->outstanding_count = svc->outstanding_cap = 0;
}

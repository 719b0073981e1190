/* The service library's dedupe window (services/lib/dedupe.c): exact membership over the last N ids, eviction
 * in arrival order, and agreement with a plain reference model over long random runs with heavy probing
 * collisions (small tables, every capacity from 1 to 64). Prints one "ok - ..." or "not ok - ..." line per
 * check and "N passed, M failed" last. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service_internal.h"
#include "tap.h"

static idevs_msgid id_of(uint32_t n)
{
    idevs_msgid id;
    memset(&id, 0, sizeof id);
    memcpy(id.b, &n, sizeof n);
    id.b[15] = 0xa5;
    return id;
}

/* The reference: the last `cap` distinct ids, in a plain array. */
static bool model_seen(idevs_msgid *ring, size_t cap, size_t *count, size_t *head, const idevs_msgid *id)
{
    for (size_t i = 0; i < *count; i++)
        if (memcmp(ring[i].b, id->b, IDEVS_UUID_LEN) == 0)
            return true;
    if (*count < cap) {
        ring[(*count)++] = *id;
    } else {
        ring[*head] = *id;
        *head = (*head + 1) % cap;
    }
    return false;
}

int main(void)
{
    idevs_service_dedupe *d = NULL;
    tap_check(idevs_service_dedupe_new(0, &d) == IDEVS_ERR_INVALID_ARG && d == NULL, "a window of 0 ids is refused");
    tap_check(idevs_service_dedupe_new(SVC_DEDUPE_MAX + 1, &d) == IDEVS_ERR_INVALID_ARG,
              "a window above the limit is refused");

    tap_check(idevs_service_dedupe_new(4, &d) == IDEVS_OK, "a window of 4 ids");
    idevs_msgid a = id_of(1), b = id_of(2), c = id_of(3), e = id_of(4), f = id_of(5);
    tap_check(!idevs_service_dedupe_seen(d, &a), "a new id is not a duplicate");
    tap_check(idevs_service_dedupe_seen(d, &a), "the same id again is a duplicate");
    tap_check(idevs_service_dedupe_seen(d, &a), "... and stays one");
    idevs_service_dedupe_seen(d, &b);
    idevs_service_dedupe_seen(d, &c);
    idevs_service_dedupe_seen(d, &e);
    tap_check(idevs_service_dedupe_count(d) == 4, "four distinct ids fill the window");
    tap_check(!idevs_service_dedupe_seen(d, &f), "a fifth id is new");
    tap_check(!idevs_service_dedupe_contains(d, &a) && idevs_service_dedupe_contains(d, &b) &&
                  idevs_service_dedupe_contains(d, &f) && idevs_service_dedupe_count(d) == 4,
          "... and evicts the oldest id only");
    tap_check(!idevs_service_dedupe_seen(d, &a), "an evicted id counts as new again (the window is bounded)");
    tap_check(!idevs_service_dedupe_contains(d, &b), "... which evicts the next oldest");
    tap_check(!idevs_service_dedupe_seen(NULL, &a) && !idevs_service_dedupe_contains(NULL, &a),
              "NULL window: nothing is a duplicate");
    idevs_service_dedupe_free(d);

    /* Against the reference: ids drawn from a small space so that repeats, evictions and probe runs that wrap
     * around the table all happen often. */
    bool agree = true;
    srand(12345);
    for (size_t cap = 1; cap <= 64 && agree; cap++) {
        idevs_service_dedupe *w = NULL;
        if (idevs_service_dedupe_new(cap, &w) != IDEVS_OK) {
            agree = false;
            break;
        }
        idevs_msgid *ring = calloc(cap, sizeof *ring);
        size_t count = 0, head = 0;
        for (int step = 0; step < 20000 && agree && ring != NULL; step++) {
            idevs_msgid id = id_of((uint32_t)(rand() % (int)(cap * 3 + 1)));
            bool expected = model_seen(ring, cap, &count, &head, &id);
            bool got = idevs_service_dedupe_seen(w, &id);
            agree = expected == got && idevs_service_dedupe_count(w) == count;
            for (size_t k = 0; agree && k < count; k++)
                agree = idevs_service_dedupe_contains(w, &ring[k]);
        }
        agree = agree && ring != NULL;
        free(ring);
        idevs_service_dedupe_free(w);
    }
    tap_check(agree, "agrees with a reference model for every capacity from 1 to 64 over 20000 random ids each");

    idevs_service_dedupe *big = NULL;
    bool ok = idevs_service_dedupe_new(100000, &big) == IDEVS_OK;
    for (uint32_t n = 0; ok && n < 300000; n++) {
        idevs_msgid id = id_of(n);
        ok = !idevs_service_dedupe_seen(big, &id);
    }
    for (uint32_t n = 200000; ok && n < 300000; n++) {
        idevs_msgid id = id_of(n);
        ok = idevs_service_dedupe_contains(big, &id);
    }
    idevs_msgid old = id_of(199999);
    ok = ok && !idevs_service_dedupe_contains(big, &old) && idevs_service_dedupe_count(big) == 100000;
    idevs_service_dedupe_free(big);
    tap_check(ok, "a window of 100000 ids keeps exactly the last 100000 of 300000");

    return tap_finish();
}

/* The rewards logic's bounded table of rides awaiting an answer; see pending.h. */
#include "pending.h"

#include <stdlib.h>
#include <string.h>

void pending_entry_cleanse(pending_entry *e)
{
    explicit_bzero(e, sizeof *e);
}

bool pending_init(pending_table *t, size_t capacity)
{
    memset(t, 0, sizeof *t);
    if (capacity == 0 || capacity > SIZE_MAX / sizeof(pending_entry))
        return false;
    t->slots = calloc(capacity, sizeof *t->slots);
    if (t->slots == NULL)
        return false;
    t->capacity = capacity;
    return true;
}

void pending_free(pending_table *t)
{
    if (t->slots != NULL) {
        explicit_bzero(t->slots, t->capacity * sizeof *t->slots);
        free(t->slots);
    }
    memset(t, 0, sizeof *t);
}

/* Removes the slot at the head of the ring (an entry or a hole). */
static void pop_head(pending_table *t)
{
    pending_entry *e = &t->slots[t->head];
    if (e->used)
        t->count--;
    pending_entry_cleanse(e);
    t->head = (t->head + 1) % t->capacity;
    t->span--;
}

/* Holes at the head take room for nothing. */
static void trim_holes(pending_table *t)
{
    while (t->span > 0 && !t->slots[t->head].used)
        pop_head(t);
}

static bool copy_bounded(char *dst, size_t max, const char *src)
{
    size_t n = strnlen(src, max + 1);
    if (n > max)
        return false;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return true;
}

static bool is_zero(const idevs_msgid *id)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < sizeof id->b; i++)
        acc |= id->b[i];
    return acc == 0;
}

bool pending_put(pending_table *t, const idevs_msgid *request_id, const char *first_name, const char *phone,
                 const char *booking_ref, int64_t now_ms)
{
    if (t->slots == NULL || request_id == NULL || is_zero(request_id) || first_name == NULL || phone == NULL ||
        booking_ref == NULL)
        return false;
    if (strnlen(first_name, PENDING_FIRST_NAME_MAX + 1) > PENDING_FIRST_NAME_MAX ||
        strnlen(phone, PENDING_PHONE_MAX + 1) > PENDING_PHONE_MAX ||
        strnlen(booking_ref, PENDING_REF_MAX + 1) > PENDING_REF_MAX)
        return false;
    trim_holes(t);
    if (t->span == t->capacity) {
        /* the head is an entry (holes were trimmed): the oldest one goes */
        pop_head(t);
        t->dropped_full++;
        trim_holes(t);
    }
    pending_entry *e = &t->slots[(t->head + t->span) % t->capacity];
    pending_entry_cleanse(e);
    e->used = true;
    e->request_id = *request_id;
    e->created_ms = now_ms;
    copy_bounded(e->first_name, PENDING_FIRST_NAME_MAX, first_name);
    copy_bounded(e->phone, PENDING_PHONE_MAX, phone);
    copy_bounded(e->booking_ref, PENDING_REF_MAX, booking_ref);
    t->span++;
    t->count++;
    return true;
}

pending_entry *pending_find(pending_table *t, const idevs_msgid *request_id)
{
    if (t->slots == NULL || request_id == NULL || is_zero(request_id))
        return NULL;
    for (size_t k = 0; k < t->span; k++) {
        pending_entry *e = &t->slots[(t->head + k) % t->capacity];
        if (e->used && memcmp(e->request_id.b, request_id->b, sizeof e->request_id.b) == 0)
            return e;
    }
    return NULL;
}

void pending_remove(pending_table *t, pending_entry *e)
{
    if (t->slots == NULL || e == NULL || e < t->slots || e >= t->slots + t->capacity || !e->used)
        return;
    pending_entry_cleanse(e); /* a hole, trimmed when it reaches the head */
    t->count--;
    trim_holes(t);
}

size_t pending_expire(pending_table *t, int64_t now_ms, int64_t ttl_ms)
{
    size_t dropped = 0;
    if (t->slots == NULL)
        return 0;
    trim_holes(t);
    /* entries are in order of creation: the expired ones form a prefix */
    while (t->span > 0 && now_ms - t->slots[t->head].created_ms > ttl_ms) {
        pop_head(t);
        dropped++;
        trim_holes(t);
    }
    t->expired += dropped;
    return dropped;
}

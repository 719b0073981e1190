/* Writing JSON payloads into the caller's buffer; see json_out.h. */
#include "json_out.h"

#include <stdio.h>
#include <string.h>

void json_out_init(json_out *w, char *buf, size_t cap)
{
    w->buf = buf;
    w->len = 0;
    w->cap = cap;
    w->ok = buf != NULL && cap > 0;
    if (w->ok)
        buf[0] = '\0';
}

static void put(json_out *w, const char *s, size_t n)
{
    if (!w->ok || n > w->cap - w->len - 1) {
        w->ok = 0;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

void json_out_raw(json_out *w, const char *s)
{
    put(w, s, strlen(s));
}

void json_out_escaped(json_out *w, const char *s)
{
    for (; *s != '\0' && w->ok; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(w, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            put(w, e, 6);
        } else {
            put(w, (const char *)&c, 1);
        }
    }
}

static void put_key(json_out *w, const char *key, int first)
{
    json_out_raw(w, first ? "{\"" : ",\"");
    json_out_raw(w, key);
    json_out_raw(w, "\":");
}

void json_out_string_member(json_out *w, const char *key, const char *value, int first)
{
    put_key(w, key, first);
    json_out_raw(w, "\"");
    json_out_escaped(w, value);
    json_out_raw(w, "\"");
}

void json_out_whole_member(json_out *w, const char *key, int64_t value, int first)
{
    char digits[24];
    snprintf(digits, sizeof digits, "%lld", (long long)value);
    put_key(w, key, first);
    json_out_raw(w, digits);
}

size_t json_out_finish(json_out *w)
{
    json_out_raw(w, "}");
    if (!w->ok) {
        if (w->buf != NULL && w->cap > 0)
            explicit_bzero(w->buf, w->cap);
        return 0;
    }
    return w->len;
}

/* Writing the case study's JSON payloads by hand into the caller's buffer, shared by the integration logics:
 * cJSON would keep its own copies of the personal data, which the caller could not cleanse. Strings are escaped
 * for JSON; a write that does not fit fails the whole payload (json_out_finish returns 0 and wipes the buffer). */
#ifndef SALE_JSON_OUT_H
#define SALE_JSON_OUT_H

#include <stddef.h>
#include <stdint.h>

typedef struct json_out {
    char *buf;
    size_t len, cap;
    int ok;
} json_out;

/* Starts writing into buf[0..cap); buf is kept NUL-terminated. */
void json_out_init(json_out *w, char *buf, size_t cap);

/* s as it is (JSON punctuation, fixed text). */
void json_out_raw(json_out *w, const char *s);

/* s escaped for the inside of a JSON string. */
void json_out_escaped(json_out *w, const char *s);

/* "key":"value" (escaped), opening the object when first, else after a comma. */
void json_out_string_member(json_out *w, const char *key, const char *value, int first);

/* "key":value, a whole number, opening the object when first, else after a comma. */
void json_out_whole_member(json_out *w, const char *key, int64_t value, int first);

/* Closes the object; returns the length, or 0 (and the buffer wiped) when anything did not fit. */
size_t json_out_finish(json_out *w);

#endif

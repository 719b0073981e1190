/* Strict reading of the case study's JSON payloads with cJSON, shared by the integration logics (rewards,
 * loyalty) and the services that read what they emit (points).
 *
 * Strict means: the payload is one JSON object and nothing else, without NUL bytes (nor the escape \u0000,
 * which would cut a string short); the caller names every key the format has, and no other key and no key
 * twice is accepted; strings are valid UTF-8 without control characters and within the caller's bound;
 * references are 1 to JSON_IN_REF_MAX of A-Z a-z 0-9 . _ -; a time is YYYY-MM-DDTHH:MM:SSZ; money is a
 * decimal string (money.h), never a JSON number; counts are whole numbers in range. */
#ifndef SALE_JSON_IN_H
#define SALE_JSON_IN_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define JSON_IN_REF_MAX 64  /* sale ids, customer ids, booking references, SKUs */
#define JSON_IN_TIME_LEN 20 /* 2026-11-21T10:15:00Z */
/* The largest whole number every JSON reader keeps exactly, 2^53 - 1 (RFC 7493, I-JSON): the bound of any
 * count a payload carries that may grow with money (loyalty points). */
#define JSON_IN_WHOLE_MAX INT64_C(9007199254740991)

typedef enum json_in_kind {
    JSON_IN_TEXT,  /* non-empty UTF-8 without control characters */
    JSON_IN_REF,   /* a reference */
    JSON_IN_PHONE, /* digits, spaces and + - ( ), at least 3 digits */
    JSON_IN_TIME,  /* YYYY-MM-DDTHH:MM:SSZ */
} json_in_kind;

/* One JSON object filling text[0..len), text[len] being its NUL (the compartment and the service library
 * hand payloads that way); NULL for anything else. Free with json_in_delete. */
cJSON *json_in_parse_object(const char *text, size_t len);

/* Overwrites every string of the tree (keys and values), then frees it: cJSON frees without wiping. */
void json_in_delete(cJSON *j);

/* True when every key of obj is one of keys[] (at most 8), each exactly once, and every one of keys[] is there. */
int json_in_keys_exactly(const cJSON *obj, const char *const *keys, size_t n);

/* True when member key of obj is a string of that kind, 1 to max bytes; copied with its NUL into dst (at least
 * max + 1 bytes) unless dst is NULL. */
int json_in_string(const cJSON *obj, const char *key, json_in_kind kind, char *dst, size_t max);

/* True when member key of obj is a whole number in [lo, hi] (both within +-JSON_IN_WHOLE_MAX), into *out.
 * cJSON keeps numbers as doubles: 2.5, 1e300 and "7" are refused; no money ever goes this way. */
int json_in_whole(const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out);

/* True when member key of obj is a money string (money.h), into *cents. */
int json_in_money(const cJSON *obj, const char *key, int64_t *cents);

/* True when s[0..len) is valid UTF-8 without control characters (U+0000..U+001F, U+007F, U+0080..U+009F). */
int json_in_text_ok(const char *s, size_t len);

#endif

/* Strict reading of JSON payloads; see json_in.h. */
#include "json_in.h"

#include <stdint.h>
#include <string.h>

#include "idevs_utf8.h"
#include "money.h"

/* ---- checks on text ---- */

int json_in_text_ok(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = idevs_utf8_next(p + i, len - i, &cp);
        if (n == 0)
            return 0;
        /* The C0 controls, DEL and the C1 controls (e.g. U+009B, a terminal's CSI). */
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return 0;
        i += n;
    }
    return 1;
}

static int ref_ok(const char *s, size_t len)
{
    if (len == 0 || len > JSON_IN_REF_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

static int phone_ok(const char *s, size_t len)
{
    int digits = 0;
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9')
            digits++;
        else if (!(c == '+' || c == ' ' || c == '-' || c == '(' || c == ')'))
            return 0;
    }
    return digits >= 3;
}

static int two_digits(const char *s, int lo, int hi)
{
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return 0;
    int v = (s[0] - '0') * 10 + (s[1] - '0');
    return v >= lo && v <= hi;
}

/* YYYY-MM-DDTHH:MM:SSZ */
static int time_ok(const char *s, size_t len)
{
    if (len != JSON_IN_TIME_LEN)
        return 0;
    for (int i = 0; i < 4; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return s[4] == '-' && two_digits(s + 5, 1, 12) && s[7] == '-' && two_digits(s + 8, 1, 31) && s[10] == 'T' &&
           two_digits(s + 11, 0, 23) && s[13] == ':' && two_digits(s + 14, 0, 59) && s[16] == ':' &&
           two_digits(s + 17, 0, 60) && s[19] == 'Z';
}

/* ---- strict JSON ---- */

int json_in_keys_exactly(const cJSON *obj, const char *const *keys, size_t n)
{
    unsigned seen[8] = {0};
    if (!cJSON_IsObject(obj) || n > 8)
        return 0;
    for (const cJSON *c = obj->child; c != NULL; c = c->next) {
        size_t k = 0;
        while (k < n && (c->string == NULL || strcmp(c->string, keys[k]) != 0))
            k++;
        if (k == n || seen[k]++ != 0)
            return 0;
    }
    for (size_t k = 0; k < n; k++)
        if (seen[k] != 1)
            return 0;
    return 1;
}

int json_in_string(const cJSON *obj, const char *key, json_in_kind kind, char *dst, size_t max)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v) || v->valuestring == NULL)
        return 0;
    size_t len = strnlen(v->valuestring, max + 1);
    if (len == 0 || len > max)
        return 0;
    int ok = 0;
    switch (kind) {
    case JSON_IN_TEXT: ok = json_in_text_ok(v->valuestring, len); break;
    case JSON_IN_REF: ok = ref_ok(v->valuestring, len); break;
    case JSON_IN_PHONE: ok = phone_ok(v->valuestring, len); break;
    case JSON_IN_TIME: ok = time_ok(v->valuestring, len); break;
    }
    if (!ok)
        return 0;
    if (dst != NULL) {
        memcpy(dst, v->valuestring, len);
        dst[len] = '\0';
    }
    return 1;
}

int json_in_whole(const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= (double)lo && v->valuedouble <= (double)hi))
        return 0;
    int64_t whole = (int64_t)v->valuedouble; /* in range, so the conversion is defined */
    if ((double)whole != v->valuedouble)
        return 0;
    *out = whole;
    return 1;
}

int json_in_money(const cJSON *obj, const char *key, int64_t *cents)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && v->valuestring != NULL && money_parse_str(v->valuestring, cents);
}

static void wipe(cJSON *j)
{
    for (; j != NULL; j = j->next) {
        if (j->valuestring != NULL)
            explicit_bzero(j->valuestring, strlen(j->valuestring));
        if (j->string != NULL)
            explicit_bzero(j->string, strlen(j->string));
        wipe(j->child);
    }
}

void json_in_delete(cJSON *j)
{
    wipe(j);
    cJSON_Delete(j);
}

/* True when text holds the escape \u0000. cJSON decodes it into a NUL inside the string, which every C string
 * function then takes for its end: "S-1\u0000anything" would read as "S-1", a value the sender did not send.
 * Backslashes occur only in strings, where each escape is read from left to right, as here. */
static int has_nul_escape(const char *text, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (text[i] != '\\')
            continue;
        if (text[i + 1] == 'u' && len - i >= 6 && memcmp(text + i + 2, "0000", 4) == 0)
            return 1;
        i++; /* the escaped character, a backslash included */
    }
    return 0;
}

cJSON *json_in_parse_object(const char *text, size_t len)
{
    if (text == NULL || len == 0 || text[len] != '\0' || memchr(text, '\0', len) != NULL ||
        has_nul_escape(text, len))
        return NULL;
    /* With the NUL counted, cJSON requires it right after the value and white space. */
    cJSON *j = cJSON_ParseWithLengthOpts(text, len + 1, NULL, 1);
    if (j != NULL && !cJSON_IsObject(j)) {
        json_in_delete(j);
        return NULL;
    }
    return j;
}

/* Strict reading and careful writing of the rewards payloads; see payloads.h and docs/CASESTUDY.md. */
#include "payloads.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "money.h"

/* ---- checks on text ---- */

int rewards_text_ok(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i <= n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        if (cp >= 0x80 && cp <= 0x9f)
            return 0; /* the C1 controls, e.g. U+009B, a terminal's CSI */
        i += n + 1;
    }
    return 1;
}

static int ref_ok(const char *s, size_t len)
{
    if (len == 0 || len > REWARDS_REF_MAX)
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
    if (len == 0 || len > REWARDS_PHONE_MAX)
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
    if (len != REWARDS_TIME_LEN)
        return 0;
    for (int i = 0; i < 4; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return s[4] == '-' && two_digits(s + 5, 1, 12) && s[7] == '-' && two_digits(s + 8, 1, 31) && s[10] == 'T' &&
           two_digits(s + 11, 0, 23) && s[13] == ':' && two_digits(s + 14, 0, 59) && s[16] == ':' &&
           two_digits(s + 17, 0, 60) && s[19] == 'Z';
}

/* ---- strict JSON ---- */

/* Every key of obj is one of keys[], each exactly once, and every one of keys[] is there. */
static int keys_exactly(const cJSON *obj, const char *const *keys, size_t n)
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

enum kind { TEXT, REF, PHONE, TIME };

/* Copies the string member key of obj into dst (max bytes without the NUL) if it is of that kind. */
static int get_string(const cJSON *obj, const char *key, enum kind kind, char *dst, size_t max)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v) || v->valuestring == NULL)
        return 0;
    size_t len = strnlen(v->valuestring, max + 1);
    if (len == 0 || len > max)
        return 0;
    int ok = 0;
    switch (kind) {
    case TEXT: ok = rewards_text_ok(v->valuestring, len); break;
    case REF: ok = ref_ok(v->valuestring, len); break;
    case PHONE: ok = phone_ok(v->valuestring, len); break;
    case TIME: ok = time_ok(v->valuestring, len); break;
    }
    if (!ok)
        return 0;
    if (dst != NULL) {
        memcpy(dst, v->valuestring, len);
        dst[len] = '\0';
    }
    return 1;
}

/* A whole number in [lo, hi]. cJSON keeps numbers as double and int: the double says whether the text was
 * whole (2.5 and 1e300 are refused); no money ever goes this way. */
static int get_whole(const cJSON *obj, const char *key, int lo, int hi, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) ||
        v->valuedouble != (double)v->valueint)
        return 0;
    *out = v->valueint;
    return 1;
}

static int get_money(const cJSON *obj, const char *key, int64_t *cents)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && v->valuestring != NULL && money_parse_str(v->valuestring, cents);
}

/* Overwrites every string of the tree (keys and values) before it is freed: cJSON frees without wiping. */
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

static void delete_wiped(cJSON *j)
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

/* One JSON object filling text[0..len), text[len] being its NUL. */
static cJSON *parse_object(const char *text, size_t len)
{
    if (text == NULL || len == 0 || text[len] != '\0' || memchr(text, '\0', len) != NULL ||
        has_nul_escape(text, len))
        return NULL;
    /* With the NUL counted, cJSON requires it right after the value and white space. */
    cJSON *j = cJSON_ParseWithLengthOpts(text, len + 1, NULL, 1);
    if (j != NULL && !cJSON_IsObject(j)) {
        delete_wiped(j);
        return NULL;
    }
    return j;
}

/* ---- reading ---- */

void rewards_sale_cleanse(rewards_sale *s)
{
    explicit_bzero(s, sizeof *s);
}

void rewards_ride_cleanse(rewards_ride *r)
{
    explicit_bzero(r, sizeof *r);
}

static void first_name_of(const char *name, char *out)
{
    size_t n = 0;
    while (name[n] != '\0' && name[n] != ' ')
        n++;
    if (n > REWARDS_FIRST_NAME_MAX) {
        n = REWARDS_FIRST_NAME_MAX;
        while (n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80)
            n--; /* not in the middle of a character */
    }
    memcpy(out, name, n);
    out[n] = '\0';
}

static int parse_items(const cJSON *items, int64_t *sum, size_t *count)
{
    static const char *const item_keys[] = {"sku", "name", "qty", "price"};
    int n = cJSON_GetArraySize(items);
    if (!cJSON_IsArray(items) || n < 1 || n > REWARDS_ITEMS_MAX)
        return 0;
    *sum = 0;
    for (const cJSON *it = items->child; it != NULL; it = it->next) {
        int qty = 0;
        int64_t price = 0, line = 0;
        if (!keys_exactly(it, item_keys, 4) || !get_string(it, "sku", REF, NULL, REWARDS_REF_MAX) ||
            !get_string(it, "name", TEXT, NULL, REWARDS_NAME_MAX) || !get_whole(it, "qty", 1, REWARDS_QTY_MAX, &qty) ||
            !get_money(it, "price", &price) || !money_times(price, qty, &line) || !money_add(*sum, line, sum))
            return 0;
    }
    *count = (size_t)n;
    return 1;
}

idevs_err rewards_parse_sale(const char *text, size_t len, rewards_sale *out)
{
    static const char *const sale_keys[] = {"sale_id", "time", "customer", "items", "total"};
    static const char *const customer_keys[] = {"id", "name", "phone", "address"};
    rewards_sale_cleanse(out);
    cJSON *j = parse_object(text, len);
    if (j == NULL)
        return IDEVS_ERR_MALFORMED;
    const cJSON *customer = cJSON_GetObjectItemCaseSensitive(j, "customer");
    int64_t sum = 0;
    int ok = keys_exactly(j, sale_keys, 5) && get_string(j, "sale_id", REF, out->sale_id, REWARDS_REF_MAX) &&
             get_string(j, "time", TIME, out->time, REWARDS_TIME_LEN) && keys_exactly(customer, customer_keys, 4) &&
             get_string(customer, "id", REF, NULL, REWARDS_REF_MAX) &&
             get_string(customer, "name", TEXT, out->name, REWARDS_NAME_MAX) &&
             get_string(customer, "phone", PHONE, out->phone, REWARDS_PHONE_MAX) &&
             get_string(customer, "address", TEXT, out->address, REWARDS_ADDRESS_MAX) &&
             parse_items(cJSON_GetObjectItemCaseSensitive(j, "items"), &sum, &out->item_count) &&
             get_money(j, "total", &out->total_cents) && sum == out->total_cents && out->name[0] != ' ';
    delete_wiped(j);
    if (!ok) {
        rewards_sale_cleanse(out);
        return IDEVS_ERR_MALFORMED;
    }
    first_name_of(out->name, out->first_name);
    return IDEVS_OK;
}

idevs_err rewards_parse_ride(const char *text, size_t len, rewards_ride *out)
{
    static const char *const ride_keys[] = {"booking_ref", "driver", "vehicle", "eta_minutes"};
    rewards_ride_cleanse(out);
    cJSON *j = parse_object(text, len);
    if (j == NULL)
        return IDEVS_ERR_MALFORMED;
    int ok = keys_exactly(j, ride_keys, 4) && get_string(j, "booking_ref", REF, out->booking_ref, REWARDS_REF_MAX) &&
             get_string(j, "driver", TEXT, out->driver, REWARDS_NAME_MAX) &&
             get_string(j, "vehicle", TEXT, out->vehicle, REWARDS_NAME_MAX) &&
             get_whole(j, "eta_minutes", 0, REWARDS_ETA_MAX, &out->eta_minutes);
    delete_wiped(j);
    if (!ok) {
        rewards_ride_cleanse(out);
        return IDEVS_ERR_MALFORMED;
    }
    return IDEVS_OK;
}

/* ---- writing ---- */

typedef struct writer {
    char *buf;
    size_t len, cap;
    int ok;
} writer;

static void put(writer *w, const char *s, size_t n)
{
    if (!w->ok || n > w->cap - w->len - 1) {
        w->ok = 0;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void put_lit(writer *w, const char *s)
{
    put(w, s, strlen(s));
}

/* s escaped for the inside of a JSON string. */
static void put_escaped(writer *w, const char *s)
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

static void put_member(writer *w, const char *key, const char *value, int first)
{
    put_lit(w, first ? "{\"" : ",\"");
    put_lit(w, key);
    put_lit(w, "\":\"");
    put_escaped(w, value);
    put_lit(w, "\"");
}

static size_t finish(writer *w)
{
    put_lit(w, "}");
    if (!w->ok) {
        if (w->cap > 0)
            explicit_bzero(w->buf, w->cap);
        return 0;
    }
    return w->len;
}

size_t rewards_write_ride_request(const rewards_sale *sale, char *buf, size_t buf_len)
{
    writer w = {buf, 0, buf_len, buf != NULL && buf_len > 0};
    put_member(&w, "booking_ref", sale->sale_id, 1);
    put_member(&w, "name", sale->name, 0);
    put_member(&w, "pickup", sale->address, 0);
    put_member(&w, "time", sale->time, 0);
    return finish(&w);
}

size_t rewards_write_confirmation(const char *phone, const char *first_name, const char *greeting,
                                  const rewards_ride *ride, char *buf, size_t buf_len)
{
    char eta[16];
    snprintf(eta, sizeof eta, "%d", ride->eta_minutes);
    writer w = {buf, 0, buf_len, buf != NULL && buf_len > 0};
    put_member(&w, "phone", phone, 1);
    put_lit(&w, ",\"text\":\"Hi ");
    put_escaped(&w, first_name);
    put_lit(&w, ", ");
    put_escaped(&w, greeting);
    put_lit(&w, greeting[0] != '\0' ? " Your free ride home (ref " : "Your free ride home (ref ");
    put_escaped(&w, ride->booking_ref);
    put_lit(&w, ") is booked: ");
    put_escaped(&w, ride->driver);
    put_lit(&w, ", ");
    put_escaped(&w, ride->vehicle);
    put_lit(&w, ", arrives in ");
    put_lit(&w, eta);
    put_lit(&w, " min.\"");
    return finish(&w);
}

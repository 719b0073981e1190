/* Decimal money in integer cents; see money.h for the grammar. */
#include "money.h"

#include <string.h>

bool money_parse(const char *text, size_t len, int64_t *cents)
{
    if (text == NULL || cents == NULL || len < 4 || len > MONEY_TEXT_MAX)
        return false;
    size_t point = len - 3;
    if (text[point] != '.')
        return false;
    /* the integer part: "0" or no leading zero */
    if (text[0] == '0' && point != 1)
        return false;
    int64_t units = 0;
    for (size_t i = 0; i < point; i++) {
        char c = text[i];
        if (c < '0' || c > '9')
            return false;
        int digit = c - '0';
        if (units > (INT64_MAX - digit) / 10)
            return false;
        units = units * 10 + digit;
    }
    char d1 = text[point + 1], d2 = text[point + 2];
    if (d1 < '0' || d1 > '9' || d2 < '0' || d2 > '9')
        return false;
    int64_t fraction = (d1 - '0') * 10 + (d2 - '0');
    if (units > (INT64_MAX - fraction) / 100)
        return false;
    *cents = units * 100 + fraction;
    return true;
}

bool money_parse_str(const char *text, int64_t *cents)
{
    if (text == NULL)
        return false;
    size_t len = strnlen(text, MONEY_TEXT_MAX + 1);
    return money_parse(text, len, cents);
}

size_t money_format(int64_t cents, char *buf, size_t buf_len)
{
    if (cents < 0 || buf == NULL || buf_len == 0)
        return 0;
    char rev[MONEY_BUF];
    size_t n = 0;
    int64_t v = cents;
    /* two decimals, the point, then at least one integer digit */
    rev[n++] = (char)('0' + v % 10);
    v /= 10;
    rev[n++] = (char)('0' + v % 10);
    v /= 10;
    rev[n++] = '.';
    do {
        rev[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    if (n + 1 > buf_len)
        return 0;
    for (size_t i = 0; i < n; i++)
        buf[i] = rev[n - 1 - i];
    buf[n] = '\0';
    return n;
}

bool money_add(int64_t a, int64_t b, int64_t *sum)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return false;
    *sum = r;
    return true;
}

bool money_times(int64_t cents, int64_t qty, int64_t *product)
{
    int64_t r;
    if (cents < 0 || qty < 0 || __builtin_mul_overflow(cents, qty, &r))
        return false;
    *product = r;
    return true;
}

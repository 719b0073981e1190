/* Money as the case study writes it (docs/CASESTUDY.md): a decimal string with exactly two decimals, held as
 * an int64_t number of cents. No floating point anywhere, so no rounding can move a sale across a threshold.
 *
 * The accepted form, and nothing else:
 *     digits "." digit digit
 * where digits is "0" or a non-zero digit followed by digits (no leading zeros), the whole value fitting in
 * int64_t cents. Refused: "150" and "150.0" (not two decimals), "150.001", "1e2", "-1.00" and "+1.00" (no
 * sign: money in a sale is never negative), " 1.00" and "1.00 " (spaces), "1,00", ".50", "1.", "01.00",
 * anything over 92233720368547758.07, and any length beyond MONEY_TEXT_MAX. */
#ifndef SALE_MONEY_H
#define SALE_MONEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest accepted text: 17 integer digits, the point and two decimals. */
#define MONEY_TEXT_MAX 20
/* A buffer that holds any formatted amount and its NUL. */
#define MONEY_BUF 24

/* Parses text[0..len) (no NUL needed) into *cents. Returns true on success; on failure *cents is untouched. */
bool money_parse(const char *text, size_t len, int64_t *cents);

/* Parses a NUL-terminated string. */
bool money_parse_str(const char *text, int64_t *cents);

/* Writes cents (>= 0) as "123.45" into buf; returns the length, or 0 when cents < 0 or buf is too small. */
size_t money_format(int64_t cents, char *buf, size_t buf_len);

/* *sum = a + b; false on overflow (then *sum is untouched). */
bool money_add(int64_t a, int64_t b, int64_t *sum);

/* *product = cents * qty; false on overflow or a negative operand. */
bool money_times(int64_t cents, int64_t qty, int64_t *product);

#endif

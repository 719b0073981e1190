/* UTF-8 as RFC 3629 defines it: the one validator, for descriptors, payloads and names. */
#ifndef IDEVS_UTF8_H
#define IDEVS_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The code point at s[0..len): its length in bytes (1 to 4) and *cp, or 0 when the bytes there are not well
 * formed (a stray continuation byte, a sequence cut short, an overlong form, a surrogate, above U+10FFFF). */
size_t idevs_utf8_next(const uint8_t *s, size_t len, uint32_t *cp);

/* True when all of s[0..len) is well-formed UTF-8. */
bool idevs_utf8_valid(const uint8_t *s, size_t len);

#endif

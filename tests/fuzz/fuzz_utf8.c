/* The one UTF-8 validator (base/idevs_utf8.c), against a second reading written from RFC 3629's table of
 * well-formed byte sequences (its section 4), not from the validator: both must agree on every input, on the
 * length and code point of every sequence, and on the whole input. */
#include <stdbool.h>

#include "fuzz.h"
#include "idevs_utf8.h"

/* RFC 3629 section 4: the well-formed sequences, as ranges of each byte. */
static size_t reference_next(const uint8_t *s, size_t len, uint32_t *cp)
{
    static const struct { uint8_t lo, hi; uint8_t n; uint8_t lo2, hi2; } rows[] = {
        {0x00, 0x7f, 1, 0, 0},       {0xc2, 0xdf, 2, 0x80, 0xbf}, {0xe0, 0xe0, 3, 0xa0, 0xbf},
        {0xe1, 0xec, 3, 0x80, 0xbf}, {0xed, 0xed, 3, 0x80, 0x9f}, {0xee, 0xef, 3, 0x80, 0xbf},
        {0xf0, 0xf0, 4, 0x90, 0xbf}, {0xf1, 0xf3, 4, 0x80, 0xbf}, {0xf4, 0xf4, 4, 0x80, 0x8f},
    };
    if (len == 0)
        return 0;
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        if (s[0] < rows[r].lo || s[0] > rows[r].hi)
            continue;
        size_t n = rows[r].n;
        if (n > len)
            return 0;
        if (n == 1) {
            *cp = s[0];
            return 1;
        }
        if (s[1] < rows[r].lo2 || s[1] > rows[r].hi2)
            return 0;
        for (size_t i = 2; i < n; i++)
            if (s[i] < 0x80 || s[i] > 0xbf)
                return 0;
        uint32_t v = s[0] & (0xffu >> (n + 1));
        for (size_t i = 1; i < n; i++)
            v = v << 6 | (s[i] & 0x3fu);
        *cp = v;
        return n;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool valid = true;
    for (size_t at = 0; at < size;) {
        uint32_t cp = 0xffffffffu, ref_cp = 0xfffffffeu;
        size_t n = idevs_utf8_next(data + at, size - at, &cp);
        size_t ref = reference_next(data + at, size - at, &ref_cp);
        FUZZ_CHECK(n == ref);
        if (n == 0) {
            valid = false;
            at++;
            continue;
        }
        FUZZ_CHECK(cp == ref_cp && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff));
        at += n;
    }
    FUZZ_CHECK(idevs_utf8_valid(data, size) == valid);
    return 0;
}

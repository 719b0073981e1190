/* UTF-8 (idevs_utf8.h). The lead byte gives the length; each continuation byte is 10xxxxxx; the value must need
 * that length (no overlong form), must not be a UTF-16 surrogate and must not pass U+10FFFF. */
#include "idevs_utf8.h"

size_t idevs_utf8_next(const uint8_t *s, size_t len, uint32_t *cp)
{
    static const uint32_t least[4] = {0, 0x80, 0x800, 0x10000};
    if (len == 0)
        return 0;
    uint8_t c = s[0];
    size_t extra;
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        extra = 1;
        v = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        extra = 2;
        v = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        extra = 3;
        v = c & 0x07;
    } else {
        return 0;
    }
    if (len <= extra)
        return 0;
    for (size_t k = 1; k <= extra; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[k] & 0x3f);
    }
    if (v < least[extra] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return extra + 1;
}

bool idevs_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    uint32_t cp;
    while (i < len) {
        size_t n = idevs_utf8_next(s + i, len - i, &cp);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

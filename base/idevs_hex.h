/* Hexadecimal text for digests, ids and keys' fingerprints in tools, configuration and test vectors. */
#ifndef IDEVS_HEX_H
#define IDEVS_HEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes exactly 2*len hex digits (either case) into out; false for any other length or character. */
bool idevs_hex_decode(const char *hex, uint8_t *out, size_t len);

/* Writes 2*len lower-case digits and a NUL into out (2*len + 1 bytes). */
void idevs_hex_encode(const uint8_t *bytes, size_t len, char *out);

#endif

/* 16-byte identifiers: identity UUIDs (RFC 4122, via libuuid) and message ids. */
#ifndef IDEVS_UUID_H
#define IDEVS_UUID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idevs_error.h"

#define IDEVS_UUID_LEN 16
#define IDEVS_UUID_STR_LEN 37 /* 36 characters and the terminating NUL */

typedef struct idevs_uuid {
    uint8_t b[IDEVS_UUID_LEN];
} idevs_uuid;

/* Message ids have the same shape as UUIDs but are plain random bytes. */
typedef idevs_uuid idevs_msgid;

/* A fresh random (version 4) UUID. */
void idevs_uuid_generate(idevs_uuid *out);

/* Parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"; IDEVS_ERR_INVALID_ARG otherwise. */
idevs_err idevs_uuid_parse(const char *text, idevs_uuid *out);

/* Writes the lower-case canonical form into out (IDEVS_UUID_STR_LEN bytes). */
void idevs_uuid_format(const idevs_uuid *uuid, char out[IDEVS_UUID_STR_LEN]);

bool idevs_uuid_equal(const idevs_uuid *a, const idevs_uuid *b);
bool idevs_uuid_is_nil(const idevs_uuid *uuid);

#endif

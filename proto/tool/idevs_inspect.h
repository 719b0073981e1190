/* Keyless inspection of idevs envelopes: what anyone on the path (the broker, an auditor, a developer) can read
 * without keys. Shared by `idevs-envelope inspect` and `idevs-sub --inspect`. */
#ifndef IDEVS_INSPECT_H
#define IDEVS_INSPECT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "idevs_error.h"

/* Prints the clear headers of the envelope in data to out: size, version, suite, sender, recipient, message
 * id, epoch (and its time), sequence, ephemeral key, the sender chain when carried (for each certificate: size,
 * subject, urn:uuid, and the attestation evidence if any: backend, program, measurement, descriptor digest,
 * flags) or else the sender certificate's digest, the provenance ids, and the ciphertext's size. It never opens
 * anything and prints no ciphertext; of the certificates' text it prints the subject as X509_NAME_oneline escapes
 * it and the urn:uuid only as the UUID it parses to. IDEVS_ERR_MALFORMED (and nothing printed) when data does not decode as an
 * idevs envelope. Every line is indented by `indent` spaces (0..16). */
idevs_err idevs_inspect_envelope(FILE *out, const uint8_t *data, size_t len, unsigned indent);

/* Prints text from the network (a topic) as printable ASCII: other bytes and the backslash as \xHH, at most
 * max bytes of s, then "..." if it was longer. A topic cannot so break a report's lines or reach the terminal
 * as an escape sequence. */
void idevs_inspect_print_text(FILE *out, const char *s, size_t max);

#endif

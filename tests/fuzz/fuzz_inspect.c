/* Keyless inspection (proto/tool/idevs_inspect.c): `idevs-sub --inspect` and `idevs-envelope inspect` print
 * whatever arrives on a topic, certificates and all, to a terminal or a log. Input: one byte choosing the
 * indent (its value modulo 17), then the envelope; and the same bytes as a topic for idevs_inspect_print_text.
 *
 * For every input: what is printed is printable ASCII and line breaks only (a certificate's subject or a topic
 * never reaches the terminal as an escape sequence), every line begins with the indent; an envelope that does
 * not decode prints nothing and is IDEVS_ERR_MALFORMED; every envelope idevs_envelope_peek accepts is shown
 * (the inspector also shows what the peek refuses for its version, suite or field sizes: it is for people). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "idevs_envelope.h"
#include "idevs_inspect.h"

static void printable(const char *text, size_t len, unsigned indent)
{
    int line_start = 1;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        FUZZ_CHECK(c == '\n' || (c >= 0x20 && c <= 0x7e));
        if (line_start && c != '\n')
            FUZZ_CHECK(i + indent <= len && strspn(text + i, " ") >= indent);
        line_start = c == '\n';
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned indent = data[0] % 17u;
    data++;
    size--;
    char *text = NULL;
    size_t text_len = 0;
    FILE *out = open_memstream(&text, &text_len);
    if (out == NULL)
        return 0;
    idevs_err err = idevs_inspect_envelope(out, data, size, indent);
    FUZZ_CHECK(fclose(out) == 0);
    idevs_envelope_header h;
    idevs_err peek = idevs_envelope_peek(data, size, &h);
    if (err != IDEVS_OK) {
        FUZZ_CHECK(err == IDEVS_ERR_MALFORMED && text_len == 0);
        FUZZ_CHECK(peek != IDEVS_OK);
    } else {
        FUZZ_CHECK(text_len > 0);
        printable(text, text_len, indent);
    }
    free(text);

    /* the same bytes as a topic from the network */
    char *topic = fuzz_strndup(data, size);
    if (topic == NULL)
        return 0;
    out = open_memstream(&text, &text_len);
    if (out == NULL) {
        free(topic);
        return 0;
    }
    idevs_inspect_print_text(out, topic, 64);
    FUZZ_CHECK(fclose(out) == 0);
    FUZZ_CHECK(text_len <= 64 * 4 + 3);
    for (size_t i = 0; i < text_len; i++)
        FUZZ_CHECK(text[i] >= 0x20 && text[i] <= 0x7e);
    free(text);
    free(topic);
    return 0;
}

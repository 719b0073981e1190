/* What every fuzz target links, under libFuzzer and in replay alike. */
#include "fuzz.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idevs_file.h"

const char *fuzz_input_name;

_Noreturn void fuzz_fail(const char *file, int line, const char *cond)
{
    if (fuzz_input_name != NULL)
        fprintf(stderr, "fuzz: %s:%d: check failed: %s (input %s)\n", file, line, cond, fuzz_input_name);
    else
        fprintf(stderr, "fuzz: %s:%d: check failed: %s\n", file, line, cond);
    abort();
}

_Noreturn void fuzz_setup_failed(const char *file, int line, const char *cond)
{
    fprintf(stderr, "fuzz: %s:%d: set-up failed: %s\n", file, line, cond);
    exit(2);
}

int fuzz_all_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        return NULL;
    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

char *fuzz_read_source_file(const char *relative, size_t *len)
{
    const char *root = getenv("IDEVS_SOURCE_ROOT");
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", root != NULL ? root : ".", relative) >= (int)sizeof path) {
        fprintf(stderr, "fuzz: path too long: %s\n", relative);
        exit(2);
    }
    idevs_file_rules rules = { .what = NULL, .min = 1, .max = 4u << 20, .flags = 0, .fail = 0 };
    uint8_t *data;
    char why[512];
    if (idevs_file_read(AT_FDCWD, path, &rules, &data, len, why, sizeof why) != 0) {
        fprintf(stderr, "fuzz: %s (set IDEVS_SOURCE_ROOT to the source tree)\n", why);
        exit(2);
    }
    return (char *)data;
}

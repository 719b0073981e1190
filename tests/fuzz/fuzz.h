/* What every fuzz target shares. A target is one libFuzzer entry point, LLVMFuzzerTestOneInput, built twice:
 * with clang's -fsanitize=fuzzer to search (scripts/fuzz), and with replay_main.c in every build, where the
 * meson test fuzz-<target> runs the generated seeds and the committed regressions through it.
 *
 * A target states what must hold for every input (the documented contract of the code under test) with
 * FUZZ_CHECK; a failed check aborts, so that libFuzzer keeps the input and the replay test fails. */
#ifndef IDEVS_FUZZ_H
#define IDEVS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* The input being replayed (its file name), or NULL under libFuzzer, which names it itself. */
extern const char *fuzz_input_name;

_Noreturn void fuzz_fail(const char *file, int line, const char *cond);

#define FUZZ_CHECK(cond)                                                                                       \
    do {                                                                                                       \
        if (!(cond))                                                                                           \
            fuzz_fail(__FILE__, __LINE__, #cond);                                                              \
    } while (0)

/* For set-up, not for inputs (the world, the seeds): a condition that must hold, else the program exits with
 * the condition and its place. */
_Noreturn void fuzz_setup_failed(const char *file, int line, const char *cond);

#define FUZZ_SETUP(cond)                                                                                       \
    do {                                                                                                       \
        if (!(cond))                                                                                           \
            fuzz_setup_failed(__FILE__, __LINE__, #cond);                                                      \
    } while (0)

/* Set-up a target needs before its first input (optional: a target that defines none gets the default). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* true when buf[0..len) are all zero (a record cleansed on failure). */
int fuzz_all_zero(const void *buf, size_t len);

/* The input as a NUL-terminated string, malloc'd (NULL when out of memory: the target then returns). */
char *fuzz_strndup(const uint8_t *data, size_t size);

/* A file of the source tree (the test vectors), found through IDEVS_SOURCE_ROOT or beside the working
 * directory; exits when it cannot be read. *len receives its size; the buffer is NUL-terminated. */
char *fuzz_read_source_file(const char *relative, size_t *len);

#endif

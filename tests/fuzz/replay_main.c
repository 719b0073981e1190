/* The main of a fuzz target outside libFuzzer: runs every file named on the command line, or found in a
 * directory named there (not recursively), through LLVMFuzzerTestOneInput once, in name order. A failed check
 * or a sanitizer report aborts with the file's name; otherwise it prints one ok line per argument and the last
 * line "N passed, 0 failed". An argument that does not exist, or names an empty directory, fails: a seed
 * corpus that silently vanished would make the test pass on nothing. Arguments that start with '-' are
 * libFuzzer's options (-runs=0): ignored, so that one command line replays in both kinds of build. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL)
                free(buf);
            buf = bigger;
        }
    }
    int failed = buf == NULL || ferror(f);
    fclose(f);
    if (failed) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        return -1;
    }
    /* an exact-size copy, so that AddressSanitizer sees a read one byte past the input */
    uint8_t *input = malloc(len > 0 ? len : 1);
    if (input == NULL) {
        free(buf);
        return -1;
    }
    memcpy(input, buf, len);
    free(buf);
    fuzz_input_name = path;
    LLVMFuzzerTestOneInput(input, len);
    fuzz_input_name = NULL;
    free(input);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs path (a file, or the files of a directory); returns how many inputs ran, -1 on failure. */
static long run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path) == 0 ? 1 : -1;
    DIR *dir = opendir(path);
    if (dir == NULL) {
        perror(path);
        return -1;
    }
    char **names = NULL;
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char **more = realloc(names, (count + 1) * sizeof *names);
        if (more == NULL)
            break;
        names = more;
        if ((names[count] = malloc(strlen(path) + strlen(e->d_name) + 2)) == NULL)
            break;
        sprintf(names[count++], "%s/%s", path, e->d_name);
    }
    closedir(dir);
    qsort(names, count, sizeof *names, by_name);
    long ran = 0;
    for (size_t i = 0; i < count; i++) {
        if (ran >= 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
            ran = run_file(names[i]) == 0 ? ran + 1 : -1;
        free(names[i]);
    }
    free(names);
    if (ran == 0)
        fprintf(stderr, "%s: no inputs\n", path);
    return ran > 0 ? ran : -1;
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    const char *name = strrchr(argv[0], '/') != NULL ? strrchr(argv[0], '/') + 1 : argv[0];
    int passed = 0, failed = 0;
    int named = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-')
            continue;
        named++;
        long ran = run_path(argv[i]);
        if (ran < 0) {
            printf("not ok - %s: %s\n", name, argv[i]);
            failed++;
        } else {
            printf("ok - %s: %ld inputs of %s, every check held\n", name, ran, argv[i]);
            passed++;
        }
    }
    if (named == 0) {
        printf("not ok - %s: no corpus named (usage: %s FILE|DIR...)\n", name, name);
        failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

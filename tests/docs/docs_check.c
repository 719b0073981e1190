/* The checks tests/docs/run_examples.py cannot make from Python:
 *   docs_check descriptor FILE   idevs_deployment_parse() accepts FILE (prints why not)
 *   docs_check logic FILE.so     FILE loads (lazily: the compartment provides the logic API) and exports
 *                                idevs_logic_entry with this build's ABI, a name and a setup()
 * Exit status 0 when it holds, 1 when not, 2 on a usage error. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idevs_deployment.h"
#include "idevs_logic.h"

static int check_descriptor(const char *path)
{
    char why[512] = "";
    uint8_t *bytes = NULL;
    size_t len = 0;
    idevs_deployment *d = NULL;
    idevs_err err = idevs_deployment_read_file(path, &bytes, &len, why, sizeof why);
    if (err == IDEVS_OK)
        err = idevs_deployment_parse(bytes, len, &d, why, sizeof why);
    free(bytes);
    idevs_deployment_free(d);
    if (err != IDEVS_OK) {
        fprintf(stderr, "%s: %s\n", path, why);
        return 1;
    }
    return 0;
}

static int check_logic(const char *path)
{
    void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    const idevs_logic_module *m = dlsym(h, "idevs_logic_entry");
    int rc = 0;
    if (m == NULL) {
        fprintf(stderr, "%s: no symbol idevs_logic_entry\n", path);
        rc = 1;
    } else if (m->abi != IDEVS_LOGIC_ABI || m->name == NULL || m->setup == NULL) {
        fprintf(stderr, "%s: idevs_logic_entry has ABI %u (want %u), a name and a setup() are required\n", path,
                (unsigned)m->abi, (unsigned)IDEVS_LOGIC_ABI);
        rc = 1;
    }
    dlclose(h);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "descriptor") == 0)
        return check_descriptor(argv[2]);
    if (argc == 3 && strcmp(argv[1], "logic") == 0)
        return check_logic(argv[2]);
    fprintf(stderr, "usage: docs_check descriptor FILE | docs_check logic FILE.so\n");
    return 2;
}

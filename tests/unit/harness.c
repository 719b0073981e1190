#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idevs_hex.h"

int harness_run(CU_SuiteInfo *suites)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    if (CU_register_suites(suites) != CUE_SUCCESS) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_tests_failed();
    unsigned ran = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    return (failed == 0 && ran > 0) ? 0 : 1;
}

int harness_run_suite(const char *name, CU_InitializeFunc init, CU_CleanupFunc clean, CU_TestInfo *tests)
{
    CU_SuiteInfo suites[] = {{name, init, clean, NULL, NULL, tests}, CU_SUITE_INFO_NULL};
    return harness_run(suites);
}

int harness_remove_tree(const char *dir)
{
    char cmd[4200];
    int n = snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (n < 0 || (size_t)n >= sizeof cmd || strchr(dir, '\'') != NULL)
        return 1;
    return system(cmd) == 0 ? 0 : 1;
}

size_t harness_unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t len = strlen(hex);
    if (len % 2 != 0 || len / 2 > cap || !idevs_hex_decode(hex, out, len / 2))
        return (size_t)-1;
    return len / 2;
}

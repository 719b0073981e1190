/* Runs CUnit suites with the basic (verbose) interface and turns failures into the exit status. */
#ifndef IDEVS_TEST_HARNESS_H
#define IDEVS_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include <CUnit/Basic.h>

/* Registers the NULL-terminated suites, runs them and returns 0 when every test passed, 1 otherwise. */
int harness_run(CU_SuiteInfo *suites);

/* harness_run of one suite: its name, initialisation and cleanup (NULL for none) and NULL-terminated tests. */
int harness_run_suite(const char *name, CU_InitializeFunc init, CU_CleanupFunc clean, CU_TestInfo *tests);

/* Removes the directory and all below it (a test's temporary directory); 0 on success. */
int harness_remove_tree(const char *dir);

/* Hex to bytes; returns the number of bytes, or (size_t)-1 on bad input or when it would exceed cap. */
size_t harness_unhex(const char *hex, uint8_t *out, size_t cap);

#endif

/* The checks of the C test programs in tests/services, printed as scripts/lib/broker.sh prints its own: one
 * "ok - WHAT" or "not ok - WHAT" line per check, and "N passed, M failed" last. */
#ifndef IDEVS_TEST_TAP_H
#define IDEVS_TEST_TAP_H

#include <stdbool.h>

/* Counts the check and prints its line. */
void tap_check(bool cond, const char *what);

/* The exit status so far: 0 when no check failed, 1 otherwise. */
int tap_status(void);

/* Prints "N passed, M failed" and returns tap_status(). */
int tap_finish(void);

#endif

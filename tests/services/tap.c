#include "tap.h"

#include <stdio.h>

static int passed, failed;

void tap_check(bool cond, const char *what)
{
    if (cond)
        passed++;
    else
        failed++;
    printf("%s - %s\n", cond ? "ok" : "not ok", what);
}

int tap_status(void)
{
    return failed == 0 ? 0 : 1;
}

int tap_finish(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return tap_status();
}

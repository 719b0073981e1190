/* A logic that stops answering: for the launcher's event-timeout test (tests/unit/test_launcher.c).
 * Declares what tests/logic/echo.c declares (input "events", output "out"). An event whose payload starts with
 * "hang" makes its handler spin forever without a system call; any other is emitted unchanged to "out". */
#include <string.h>

#include "idevs_logic.h"

static idevs_err on_event(idevs_logic *lg, const idevs_message *m, void *state)
{
    (void)state;
    if (m->payload_len >= 4 && memcmp(m->payload, "hang", 4) == 0) {
        volatile unsigned long spin = 0;
        for (;;)
            spin++;
    }
    return idevs_emit(lg, "out", m->payload, m->payload_len);
}

static idevs_err setup(idevs_logic *lg, const char *config_json, void **state)
{
    (void)config_json;
    *state = NULL;
    return idevs_on_input(lg, "events", on_event);
}

const idevs_logic_module idevs_logic_entry = {IDEVS_LOGIC_ABI, "hang", setup, NULL};

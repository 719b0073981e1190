/* The plugin's rejection log lines (plugin/rejections.c) with hostile client ids: a client id is written into
 * the broker's log, so it must not end the line, forge another line or carry a terminal escape, and it is cut
 * at IDEVS_CLIENT_LOG_MAX bytes. mosquitto_log_printf, which the broker provides to the plugin, is provided
 * here to keep the lines. Prints one "ok - ..." or "not ok - ..." line per check and "N passed, M failed"
 * last. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idevs_plugin.h"
#include "tap.h"

static char lines[8][1024];
static size_t line_count;

void mosquitto_log_printf(int level, const char *fmt, ...)
{
    (void)level;
    if (line_count == sizeof lines / sizeof lines[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lines[line_count++], sizeof lines[0], fmt, ap);
    va_end(ap);
}

static bool printable(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

int main(void)
{
    static idevs_plugin plugin;
    static idevs_process p;
    snprintf(p.name, sizeof p.name, "echo");
    p.plugin = &plugin;
    plugin.cfg.log_interval_s = 10;
    if (!idevs_rejections_init(&p, 16))
        return 2;

    /* refused by the plugin: logged at once */
    idevs_rejections_refused(&p, IDEVS_ERR_MALFORMED, "idevs/echo/in/events",
                             "evil\n1795244517: idevs: 'echo': compartment certified\x1b[2J", 12);
    tap_check(line_count == 1, "a refusal is logged");
    printf("# %s\n", lines[0]);
    tap_check(printable(lines[0]), "... on one line, without control characters or escapes");
    tap_check(strstr(lines[0], "from client 'evil?1795244517: idevs: '") == NULL &&
                  strstr(lines[0], "from client 'evil?1795244517: idevs: ?echo?: compartment certified?[2J'") != NULL,
          "... the client id's line break, quotes and escape shown as '?'");

    /* dropped by the compartment: the note keeps the client id until the delivery is done */
    char long_id[300];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    long_id[10] = '\r';
    idevs_rejections_note(&p, 7, "idevs/echo/in/events", long_id, 99);
    idevs_rejections_done(&p, 7, IDEVS_ERR_DECRYPT);
    tap_check(line_count == 2, "a delivery the compartment refused is logged");
    printf("# %s\n", lines[1]);
    tap_check(printable(lines[1]), "... without the client id's carriage return");
    char want[IDEVS_CLIENT_LOG_MAX + 16];
    snprintf(want, sizeof want, "client '%.10s?%.*s'", long_id, IDEVS_CLIENT_LOG_MAX - 11, long_id + 11);
    tap_check(strstr(lines[1], want) != NULL, "... and the client id cut at 64 bytes");

    /* held back and summed up: the summary names the last client the same way */
    idevs_rejections_refused(&p, IDEVS_ERR_MALFORMED, "idevs/echo/in/events", "second\nline", 5);
    p.drop_log[IDEVS_ERR_MALFORMED].window_end_ms = 0;
    idevs_rejections_flush(&p);
    tap_check(line_count == 3 && printable(lines[2]) && strstr(lines[2], "client 'second?line'") != NULL,
              "the summary of held-back lines names the last client on one line too");
    idevs_rejections_free(&p);
    return tap_finish();
}

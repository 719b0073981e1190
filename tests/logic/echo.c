/* A small integration logic for tests and benchmarks, with nothing of the case study in it.
 *
 * Declared names it uses: input "events", output "out", request "ask" (optional), and a timer when the
 * configuration says {"timer_ms": N}. With {"spin_us": N} every event first computes for N microseconds (a logic
 * with real work, for tests/bench/bench_scale.sh). For each event payload:
 *   "ask:<text>"   requests "ask" with <text>; the response comes back as "answer:<response>" on "out"
 *                  (built with -DECHO_NO_RESPONSE_HANDLER: no response handler is registered, and a refused
 *                  request emits "request refused: <idevs_err number>" on "out" instead)
 *   "ask-keep:<text>" requests "ask" with <text>, and <text> as the request's state: the response comes back as
 *                  "answer:<response> for <state>" (idevs_request_with_state), after a restart too; a response
 *                  "ask-keep:<text>" asks again the same way (its request has one more id of provenance)
 *   "fail"         emits, then returns an error: nothing may leave (transactions)
 *   "undeclared"   emits to an output the deployment does not declare and returns what emit() said
 *   "upper:<text>" emits <text> in upper case
 *   "refuse:<code>" emits, then refuses the event with idevs_refuse(<code>) and returns what it returned
 *                  (IDEVS_ERR_LOGIC for a code the descriptor declares, IDEVS_ERR_INVALID_ARG otherwise)
 *   "crash-until:<ms>:<text>" aborts the logic process (the compartment ends) while the wall clock is before
 *                  <ms> milliseconds since the epoch, and emits <text> after: every compartment started before
 *                  then crashes on its first such event, so that the launcher restarts it with backoff
 *   anything else  is emitted unchanged to "out". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idevs_logic.h"

typedef struct echo_state {
    unsigned long ticks;
    unsigned long events;
    unsigned long spin_us;
} echo_state;

static unsigned long long now_us(void)
{
    struct timespec t = {0, 0};
    (void)timespec_get(&t, TIME_UTC); /* C11: the logic's one include directory brings no POSIX */
    return (unsigned long long)t.tv_sec * 1000000u + (unsigned long long)t.tv_nsec / 1000u;
}

/* Work of spin_us microseconds of CPU time as the wall clock sees it (an idle core: as much CPU). */
static void spin(unsigned long us)
{
    volatile unsigned long sink = 0;
    for (unsigned long long end = now_us() + us; now_us() < end;)
        for (int i = 0; i < 256; i++)
            sink = sink + (unsigned long)i; /* a volatile store the compiler keeps */
}

static int starts_with(const idevs_message *m, const char *prefix, size_t *skip)
{
    size_t n = strlen(prefix);
    if (m->payload_len < n || memcmp(m->payload, prefix, n) != 0)
        return 0;
    *skip = n;
    return 1;
}

static idevs_err ask_keep(idevs_logic *lg, const idevs_message *m, size_t skip)
{
    return idevs_request_with_state(lg, "ask", m->payload + skip, m->payload_len - skip, m->payload + skip,
                                    m->payload_len - skip, NULL);
}

static idevs_err on_event(idevs_logic *lg, const idevs_message *m, void *state)
{
    echo_state *st = state;
    size_t skip = 0;
    st->events++;
    if (st->spin_us > 0)
        spin(st->spin_us);
    if (starts_with(m, "ask-keep:", &skip))
        return ask_keep(lg, m, skip);
    if (starts_with(m, "ask:", &skip)) {
        idevs_msgid id;
        idevs_err err = idevs_request(lg, "ask", m->payload + skip, m->payload_len - skip, &id);
#ifdef ECHO_NO_RESPONSE_HANDLER
        if (err != IDEVS_OK) {
            char buf[48];
            int n = snprintf(buf, sizeof buf, "request refused: %d", (int)err);
            return idevs_emit(lg, "out", buf, (size_t)n);
        }
#endif
        return err;
    }
    if (starts_with(m, "fail", &skip)) {
        idevs_err err = idevs_emit(lg, "out", m->payload, m->payload_len);
        return err == IDEVS_OK ? IDEVS_ERR_LOGIC : err;
    }
    if (starts_with(m, "refuse:", &skip)) {
        idevs_err err = idevs_emit(lg, "out", m->payload, m->payload_len);
        return err == IDEVS_OK ? idevs_refuse(lg, (const char *)m->payload + skip) : err;
    }
    if (starts_with(m, "crash-until:", &skip)) {
        char *end = NULL;
        unsigned long long until = strtoull((const char *)m->payload + skip, &end, 10);
        struct timespec now = {0, 0};
        (void)timespec_get(&now, TIME_UTC); /* C11: the logic's one include directory brings no POSIX */
        if ((unsigned long long)now.tv_sec * 1000u + (unsigned long long)now.tv_nsec / 1000000u < until)
            abort();
        if (end == NULL || *end != ':')
            return IDEVS_ERR_INVALID_ARG;
        end++;
        return idevs_emit(lg, "out", end, m->payload_len - (size_t)((const uint8_t *)end - m->payload));
    }
    if (starts_with(m, "undeclared", &skip))
        return idevs_emit(lg, "not-declared", m->payload, m->payload_len);
    if (starts_with(m, "upper:", &skip)) {
        size_t n = m->payload_len - skip;
        char *buf = malloc(n + 1);
        if (buf == NULL)
            return IDEVS_ERR_NOMEM;
        for (size_t i = 0; i < n; i++) {
            char c = (char)m->payload[skip + i];
            buf[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
        }
        idevs_err err = idevs_emit(lg, "out", buf, n);
        free(buf);
        return err;
    }
    return idevs_emit(lg, "out", m->payload, m->payload_len);
}

static idevs_err on_answer(idevs_logic *lg, const idevs_message *m, void *state)
{
    (void)state;
    size_t skip = 0;
    if (starts_with(m, "ask-keep:", &skip))
        return ask_keep(lg, m, skip);
    char buf[512];
    static const char prefix[] = "answer:";
    size_t n = m->payload_len < sizeof buf - sizeof prefix ? m->payload_len : sizeof buf - sizeof prefix;
    memcpy(buf, prefix, sizeof prefix - 1);
    memcpy(buf + sizeof prefix - 1, m->payload, n);
    n += sizeof prefix - 1;
    if (m->request_state_len > 0 && m->request_state_len < sizeof buf - n - 5) {
        memcpy(buf + n, " for ", 5);
        memcpy(buf + n + 5, m->request_state, m->request_state_len);
        n += 5 + m->request_state_len;
    }
    return idevs_emit(lg, "out", buf, n);
}

static idevs_err on_tick(idevs_logic *lg, void *state)
{
    echo_state *st = state;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "tick %lu", ++st->ticks);
    return idevs_emit(lg, "out", buf, (size_t)n);
}

static idevs_err setup(idevs_logic *lg, const char *config_json, void **state)
{
    echo_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return IDEVS_ERR_NOMEM;
    *state = st;
    idevs_err err = idevs_on_input(lg, "events", on_event);
    if (err != IDEVS_OK)
        return err;
#ifndef ECHO_NO_RESPONSE_HANDLER
    /* The request is optional in the deployment. */
    err = idevs_on_response(lg, "ask", on_answer);
    if (err != IDEVS_OK && err != IDEVS_ERR_UNKNOWN_REQUEST)
        return err;
#else
    (void)on_answer;
#endif
    const char *spin_at = strstr(config_json, "\"spin_us\":");
    if (spin_at != NULL)
        st->spin_us = strtoul(spin_at + strlen("\"spin_us\":"), NULL, 10);
    const char *t = strstr(config_json, "\"timer_ms\":");
    if (t != NULL)
        return idevs_on_timer(lg, (uint32_t)strtoul(t + strlen("\"timer_ms\":"), NULL, 10), on_tick);
    return IDEVS_OK;
}

static void teardown(void *state)
{
    free(state);
}

const idevs_logic_module idevs_logic_entry = {IDEVS_LOGIC_ABI, "echo", setup, teardown};

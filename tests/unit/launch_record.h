/* What a launcher's callbacks (idevs_launcher.h) saw, for the tests that run a real launcher (test_launcher,
 * and through logic_world.h test_rewards and test_loyalty): its events, its publications (copied) and the
 * deliveries it finished, with the refusal code of each. Also the small file and clock helpers those tests
 * share. Every function asserts (CU_ASSERT_FATAL) on what is not under test. */
#ifndef IDEVS_TEST_LAUNCH_RECORD_H
#define IDEVS_TEST_LAUNCH_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_identity.h"
#include "idevs_launcher.h"

#define LAUNCH_RECORD_MAX 2048
#define LAUNCH_EVENTS_MAX 64

typedef struct launch_record {
    char events[LAUNCH_EVENTS_MAX][512];
    int event_kind[LAUNCH_EVENTS_MAX];
    size_t event_count;
    uint64_t done_id[LAUNCH_RECORD_MAX];
    idevs_err done_status[LAUNCH_RECORD_MAX];
    char done_refusal[LAUNCH_RECORD_MAX][40]; /* the logic's refusal code (on_refused), "" when none */
    size_t done_count;
    uint64_t refused_id; /* on_refused's, until the on_done that follows */
    char refused_code[40];
    uint64_t pub_id[LAUNCH_RECORD_MAX];
    uint8_t *pub_env[LAUNCH_RECORD_MAX];
    size_t pub_len[LAUNCH_RECORD_MAX];
    char pub_topic[LAUNCH_RECORD_MAX][64];
    char pub_response_topic[LAUNCH_RECORD_MAX][64];
    uint8_t *pub_correlation[LAUNCH_RECORD_MAX]; /* a copy, NULL when none */
    size_t pub_correlation_len[LAUNCH_RECORD_MAX];
    size_t pub_count;
    /* receipts (publications on a receipt topic), kept apart from the outputs: how many, and the last one */
    size_t receipt_count;
    uint64_t receipt_id;
    char receipt_topic[64];
    uint8_t *receipt_env;
    size_t receipt_len;
} launch_record;

/* The launcher's on_event (the first LAUNCH_EVENTS_MAX are kept); arg is the record. */
void launch_record_on_event(void *arg, idevs_launcher_event event, const char *message);
/* The callbacks' on_publish; arg is the record. */
void launch_record_on_publish(void *arg, const idevs_launcher_publish *p);
/* The callbacks for idevs_launcher_poll: on_publish, on_done and on_refused into r. */
idevs_launcher_callbacks launch_record_callbacks(launch_record *r);
/* Frees the copies of the publications; the record is zeroed. */
void launch_record_clear(launch_record *r);

/* Writes the file whole. */
void launch_write_file(const char *path, const void *data, size_t len);
/* Writes the identity's certificate (the first of its chain) as PEM. */
void launch_write_cert(const char *path, const idevs_identity *id);
/* CLOCK_MONOTONIC in milliseconds. */
int64_t launch_now_ms(void);

#endif

/* A case-study logic in a real compartment, for the unit tests of the logics (test_rewards, test_loyalty): a
 * directory with the services' certificates and a deployment descriptor, the launcher (idevs_launcher.h)
 * started on it with the fixture CA and authority, one sealing party per service that verified the
 * compartment's chain, and a record of what the compartment published and which deliveries it finished.
 * Every function asserts (CU_ASSERT_FATAL) on what is not under test. */
#ifndef IDEVS_TEST_LOGIC_WORLD_H
#define IDEVS_TEST_LOGIC_WORLD_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "fixtures.h"
#include "idevs_envelope.h"
#include "idevs_launcher.h"
#include "launch_record.h"

#define LW_MAX_PARTIES 4

/* A service: seals to the compartment and opens what it sends to this service. */
typedef struct lw_party {
    idevs_cert_policy *policy;
    idevs_envelope_ctx *ctx;
} lw_party;

/* What a world is made of; the same for every world of a test program. */
typedef struct lw_spec {
    fixture_pki *pki;
    const char *host;                     /* the compartment host program */
    const char *logic;                    /* the logic shared object */
    const char *process;                  /* process.name */
    const char *const *services;          /* their names, NULL-terminated, at most LW_MAX_PARTIES */
    idevs_identity *const *identities;    /* in the same order */
    const char *routes;                   /* the descriptor's "inputs", "outputs" and "requests" members */
} lw_spec;

/* What the worlds of one test program share: made by lw_suite_init in a suite's initialisation, freed by
 * lw_suite_clean in its cleanup. */
typedef struct lw_suite {
    fixture_pki pki;
    idevs_identity *identities[LW_MAX_PARTIES];
    char host[PATH_MAX], logic[PATH_MAX];
    lw_spec spec;
} lw_suite;

/* The host program and the logic from the environment meson gives the unit tests (IDEVS_COMPARTMENT and
 * logic_env), a fixture CA and an identity per service (names NULL-terminated, in the order of the parties);
 * s->spec then describes the process with these routes. 0, or 1 (the suite does not run) when the environment
 * lacks them. */
int lw_suite_init(lw_suite *s, const char *logic_env, const char *process, const char *const *services,
                  const char *routes);
int lw_suite_clean(lw_suite *s);

typedef struct lw_world {
    char dir[64];
    char state[128];
    char descriptor[128];
    idevs_uuid program;
    idevs_launcher *l;
    launch_record r;
    lw_party party[LW_MAX_PARTIES]; /* in the order of spec->services */
    size_t party_count;
} lw_world;

/* Makes the directory, certificates and descriptor (process.config: config, JSON text) and starts the
 * compartment. Returns what idevs_launcher_start said; lw_free the world whatever it returns. */
idevs_err lw_start(lw_world *w, const lw_spec *spec, const char *config);
void lw_free(lw_world *w);

/* Each of the n configurations stops the start (the logic refuses it); each world is freed. */
void lw_expect_refused(const lw_spec *spec, const char *const *configs, size_t n);

/* Seals text from p on topic (with one provenance id, if any) and delivers it with the correlation data of the
 * request that id names, as a service answers (that id alone when the process published no such request). Returns the delivery's id; *message_id (may be NULL) gets the envelope's. */
uint64_t lw_deliver(lw_world *w, lw_party *p, const char *topic, const char *text, const idevs_msgid *prov,
                    idevs_msgid *message_id);

/* Polls until the delivery is done; returns its status. */
idevs_err lw_wait_done(lw_world *w, uint64_t id);

/* The refusal code the logic gave a done delivery ("" when none). */
const char *lw_done_refusal(const lw_world *w, uint64_t id);

/* Polls for ms milliseconds (timers run). */
void lw_poll_for(lw_world *w, int ms);

/* Opens publication i as p; returns the payload (malloc'd) and the opened message in *o. */
char *lw_open_pub(lw_world *w, lw_party *p, size_t i, idevs_opened *o);

/* The object's keys are exactly keys[], in this order. */
bool lw_json_keys_are(const char *text, const char *const *keys, size_t n);

/* The string member key of j, or "(missing)". */
const char *lw_json_str(cJSON *j, const char *key);

#endif

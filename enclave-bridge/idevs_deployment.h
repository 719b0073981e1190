/* The deployment descriptor: one JSON file that says what an integration process is and to whom it talks.
 * The launcher reads it once to route (the plugin asks it); the compartment reads the same bytes (their SHA-256 is the descriptor digest
 * in the evidence) to know which senders it accepts on which input and to whom each output is sealed.
 * docs/DEPLOYMENT.md documents the format with a complete example.
 *
 *   {
 *     "version": 1,
 *     "process": { "name": "rewards", "uuid": "…", "logic": "librewards.so", "config": { … },
 *                  "instances": 1, "partitions": 64 },
 *     "operator_ca_sha256": "<64 hex digits: SHA-256 of the operator CA certificate's DER>",
 *     "services": [ { "name": "store", "uuid": "…", "certificate": "pki/store.crt" }, … ],
 *     "inputs":   [ { "name": "sales", "topic": "idevs/rewards/in/sales", "from": "store" } ],
 *     "outputs":  [ { "name": "confirmation", "topic": "idevs/rewards/out/confirmation", "to": "messaging",
 *                     "qos": 1 } ],
 *     "requests": [ { "name": "ride", "topic": "idevs/rewards/req/ride",
 *                     "response_topic": "idevs/rewards/resp/ride", "to": "taxi", "qos": 1 } ],
 *     "limits":   { "max_payload": 65536, "queue_depth": 1024, "event_timeout_ms": 2000,
 *                   "max_outstanding_requests": 4096 }
 *   }
 *
 * Relative paths (logic, certificates) are relative to the descriptor's directory. Certificates are not pinned
 * by the descriptor's digest: the compartment verifies each one against the pinned operator CA and the UUID
 * the descriptor gives. */
#ifndef IDEVS_DEPLOYMENT_H
#define IDEVS_DEPLOYMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idevs_crypto.h"
#include "idevs_error.h"
#include "idevs_identity.h"
#include "idevs_uuid.h"

#define IDEVS_DEPLOYMENT_VERSION 1
#define IDEVS_DEPLOYMENT_MAX_BYTES (256u * 1024u)
#define IDEVS_DEPLOYMENT_MAX_ENTRIES 64 /* services, inputs, outputs, requests: each */
#define IDEVS_DEPLOYMENT_MAX_REFUSALS 16 /* refusal codes a logic may give (idevs_refuse) */
#define IDEVS_REFUSAL_CODE_MAX 32        /* bytes of one, of [a-z0-9_] */
#define IDEVS_DEPLOYMENT_MAX_INSTANCES 64      /* process.instances: compartments of the process on one broker */
#define IDEVS_DEPLOYMENT_MAX_PARTITIONS 65536u /* process.partitions */
/* The MQTT v5 user property that carries an input's partition, in decimal (docs/PROTOCOL.md 8.5). */
#define IDEVS_PARTITION_PROPERTY "idevs-partition"

typedef struct idevs_deployment_service {
    char name[IDEVS_NAME_MAX + 1];
    idevs_uuid uuid;
    char *certificate; /* path as written (resolved against the descriptor's directory by the reader) */
    bool receipts;            /* "receipts": true: receipts both ways with this service (docs/PROTOCOL.md 9) */
    char *receipt_topic;      /* "idevs/<process>/receipt/to/<service>": the process's receipts to it */
    char *receipt_from_topic; /* "idevs/<process>/receipt/from/<service>": its receipts to the process
                               * (docs/PROTOCOL.md section 9) */
} idevs_deployment_service;

typedef struct idevs_deployment_input {
    char name[IDEVS_NAME_MAX + 1];
    char *topic;
    size_t from;  /* index into services */
    uint32_t pad; /* "pad": IDEVS_PAD_POW2 (default), IDEVS_PAD_NONE or a block size (idevs_envelope.h) */
} idevs_deployment_input;

typedef struct idevs_deployment_output {
    char name[IDEVS_NAME_MAX + 1];
    char *topic;
    size_t to; /* index into services */
    int qos;      /* 0..2, default 1 */
    uint32_t pad; /* as an input's */
} idevs_deployment_output;

typedef struct idevs_deployment_request {
    char name[IDEVS_NAME_MAX + 1];
    char *topic;
    char *response_topic;
    size_t to; /* index into services */
    int qos;
    uint32_t pad; /* the request's and its answers' (as an input's) */
} idevs_deployment_request;

typedef struct idevs_deployment {
    char name[IDEVS_NAME_MAX + 1]; /* process.name */
    idevs_uuid program;            /* process.uuid */
    char *logic;                   /* process.logic, as written */
    char *config_json;             /* process.config re-serialized ("{}" when absent) */
    uint32_t instances;            /* process.instances: 1..64, default 1 */
    uint32_t partitions;           /* process.partitions: 1..65536, default 64 */
    uint8_t operator_ca_sha256[IDEVS_SHA256_LEN];
    uint8_t digest[IDEVS_SHA256_LEN]; /* SHA-256 of the descriptor's bytes */
    idevs_deployment_service *services;
    size_t service_count;
    idevs_deployment_input *inputs;
    size_t input_count;
    idevs_deployment_output *outputs;
    size_t output_count;
    idevs_deployment_request *requests;
    size_t request_count;
    size_t max_payload;        /* default 65536, at most IDEVS_PAYLOAD_MAX_LIMIT */
    size_t queue_depth;        /* default 1024 */
    uint32_t event_timeout_ms; /* default 2000 */
    size_t max_outstanding_requests; /* requests awaiting a response, at most; default 4096, at most 65536 */
    /* "refusals": the codes the logic may give when it refuses an event (idevs_refuse), in order; optional */
    char refusals[IDEVS_DEPLOYMENT_MAX_REFUSALS][IDEVS_REFUSAL_CODE_MAX + 1];
    size_t refusal_count;
} idevs_deployment;

/* Parses and validates descriptor bytes. On failure returns IDEVS_ERR_CONFIG (or NOMEM) and writes to why a
 * sentence naming the field as a JSON path and the problem, e.g. "outputs[1].to: no service named 'taxi'".
 * Checks: version; names [A-Za-z0-9._-] 1..64 and unique per kind; UUIDs; topics non-empty, at most
 * IDEVS_TOPIC_MAX bytes, without wildcards, distinct across inputs, outputs, requests and response topics,
 * and not under "$"; from/to naming declared services; qos 0..2; pad "pow2", "none" or 16..4096; limits in range;
 * refusals at most
 * IDEVS_DEPLOYMENT_MAX_REFUSALS distinct codes of 1..IDEVS_REFUSAL_CODE_MAX of [a-z0-9_]; no unknown keys. */
idevs_err idevs_deployment_parse(const uint8_t *bytes, size_t len, idevs_deployment **out, char *why, size_t why_len);

/* Reads a descriptor file: a regular file (a FIFO, device or directory is refused without blocking) of at most
 * IDEVS_DEPLOYMENT_MAX_BYTES. *bytes is malloc'd. why names the file and the problem. */
idevs_err idevs_deployment_read_file(const char *path, uint8_t **bytes, size_t *len, char *why, size_t why_len);

/* Reads (idevs_deployment_read_file) and parses a file (at most IDEVS_DEPLOYMENT_MAX_BYTES); why names the file too. *bytes (optional)
 * receives a malloc'd copy of exactly what was parsed, for measuring. */
idevs_err idevs_deployment_load(const char *path, idevs_deployment **out, uint8_t **bytes, size_t *len, char *why,
                                size_t why_len);

/* Where the plugin publishes, retained, a process's certificate chain and its descriptor, and where services
 * fetch them: "idevs/<process>/certificate" and "idevs/<process>/descriptor". malloc'd; NULL when out of memory. */
char *idevs_deployment_certificate_topic(const char *process);
char *idevs_deployment_descriptor_topic(const char *process);
/* Where the plugin publishes, retained, instance n's own chain (docs/SCALING.md):
 * "idevs/<process>/instance/<n>/certificate". malloc'd; NULL when out of memory. */
char *idevs_deployment_instance_certificate_topic(const char *process, uint32_t instance);
/* The subscription that matches every instance's: "idevs/<process>/instance/+/certificate". malloc'd. */
char *idevs_deployment_instance_certificate_filter(const char *process);

/* Lookups; NULL when absent. */
const idevs_deployment_input *idevs_deployment_input_by_topic(const idevs_deployment *d, const char *topic);
const idevs_deployment_output *idevs_deployment_output_by_name(const idevs_deployment *d, const char *name);
const idevs_deployment_request *idevs_deployment_request_by_name(const idevs_deployment *d, const char *name);
const idevs_deployment_request *idevs_deployment_request_by_response_topic(const idevs_deployment *d,
                                                                           const char *topic);

/* The partition of an input sent with a partition key (docs/PROTOCOL.md 8.5): the first 4 bytes, big-endian, of
 * SHA-256("idevs partition v1" || program UUID || key), modulo d->partitions. The same key always gives the
 * same partition of a descriptor, so the broker can keep one key's inputs on one instance. */
uint32_t idevs_deployment_partition(const idevs_deployment *d, const void *key, size_t len);

/* Reads the idevs-partition property's value: decimal, no sign, no leading zero (but "0"), below d->partitions.
 * false for anything else (the property is not authenticated: a bad one is as if absent). */
bool idevs_deployment_partition_parse(const idevs_deployment *d, const char *text, uint32_t *out);

/* The partition that decides which of several brokers owns a message (docs/SCALING.md): the partition its
 * message id would give as a partition key, idevs_deployment_partition(d, id, 16). The id is in the envelope's
 * authenticated clear header, so every copy of a message, however its idevs-partition property was changed, has
 * the one owner whose replay record refuses the copies; hashing the whole id spreads numbered ids (a fixed
 * stream, then a counter) as evenly as random ones. */
uint32_t idevs_deployment_partition_of_id(const idevs_deployment *d, const uint8_t id[16]);

/* Reads a set of partitions: "all", "none", or comma-separated numbers and ranges ("0-31,48,50-63"), each below
 * d->partitions. bits receives one bit per partition (bit p of byte p / 8), (d->partitions + 7) / 8 bytes. On
 * failure why says which part is wrong. */
bool idevs_deployment_partition_set_parse(const idevs_deployment *d, const char *text, uint8_t *bits, char *why,
                                          size_t why_len);

/* The index of a declared refusal code; -1 when the descriptor does not declare it. */
int idevs_deployment_refusal_index(const idevs_deployment *d, const char *code);

void idevs_deployment_free(idevs_deployment *d);

#endif

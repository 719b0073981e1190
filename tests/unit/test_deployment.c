/* The deployment descriptor: the complete case-study example, then each kind of error with the path it names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "idevs_deployment.h"
#include "idevs_envelope.h"

#define CA_HEX "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

/* docs/DEPLOYMENT.md's example. */
static const char *example =
    "{\n"
    "  \"version\": 1,\n"
    "  \"process\": {\n"
    "    \"name\": \"rewards\",\n"
    "    \"uuid\": \"6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40\",\n"
    "    \"logic\": \"librewards.so\",\n"
    "    \"config\": { \"threshold_cents\": 15000, \"message\": \"Your ride home is on us\" }\n"
    "  },\n"
    "  \"operator_ca_sha256\": \"" CA_HEX "\",\n"
    "  \"services\": [\n"
    "    { \"name\": \"store\", \"uuid\": \"1b4e28ba-2fa1-41d2-883f-0016d3cca427\", \"certificate\": \"pki/store.crt\" },\n"
    "    { \"name\": \"taxi\", \"uuid\": \"2c5f39cb-3ab2-42e3-994a-1127e4ddb538\", \"certificate\": \"pki/taxi.crt\" },\n"
    "    { \"name\": \"messaging\", \"uuid\": \"3d6a4adc-4bc3-43f4-8a5b-2238f5eec649\",\n"
    "      \"certificate\": \"pki/messaging.crt\" }\n"
    "  ],\n"
    "  \"inputs\": [\n"
    "    { \"name\": \"sales\", \"topic\": \"idevs/rewards/in/sales\", \"from\": \"store\" }\n"
    "  ],\n"
    "  \"outputs\": [\n"
    "    { \"name\": \"confirmation\", \"topic\": \"idevs/rewards/out/confirmation\", \"to\": \"messaging\", \"qos\": 1 }\n"
    "  ],\n"
    "  \"requests\": [\n"
    "    { \"name\": \"ride\", \"topic\": \"idevs/rewards/req/ride\", \"response_topic\": \"idevs/rewards/resp/ride\",\n"
    "      \"to\": \"taxi\", \"qos\": 1 }\n"
    "  ],\n"
    "  \"limits\": { \"max_payload\": 65536, \"queue_depth\": 1024, \"event_timeout_ms\": 2000 }\n"
    "}\n";

static idevs_err parse_text(const char *text, idevs_deployment **d, char *why, size_t why_len)
{
    return idevs_deployment_parse((const uint8_t *)text, strlen(text), d, why, why_len);
}

static void test_example(void)
{
    idevs_deployment *d = NULL;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(parse_text(example, &d, why, sizeof why), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL(why, "");
    CU_ASSERT_STRING_EQUAL(d->name, "rewards");
    char u[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(&d->program, u);
    CU_ASSERT_STRING_EQUAL(u, "6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40");
    CU_ASSERT_STRING_EQUAL(d->logic, "librewards.so");
    CU_ASSERT_STRING_EQUAL(d->config_json, "{\"threshold_cents\":15000,\"message\":\"Your ride home is on us\"}");
    CU_ASSERT_EQUAL(d->operator_ca_sha256[0], 0x9f);
    CU_ASSERT_EQUAL(d->operator_ca_sha256[31], 0x08);
    uint8_t digest[32];
    CU_ASSERT_FATAL(idevs_sha256(example, strlen(example), digest) == IDEVS_OK);
    CU_ASSERT_EQUAL(memcmp(d->digest, digest, 32), 0);
    CU_ASSERT_EQUAL_FATAL(d->service_count, 3);
    CU_ASSERT_STRING_EQUAL(d->services[2].name, "messaging");
    CU_ASSERT_STRING_EQUAL(d->services[1].certificate, "pki/taxi.crt");
    CU_ASSERT_EQUAL_FATAL(d->input_count, 1);
    CU_ASSERT_EQUAL(d->inputs[0].from, 0);
    CU_ASSERT_EQUAL_FATAL(d->output_count, 1);
    CU_ASSERT_EQUAL(d->outputs[0].to, 2);
    CU_ASSERT_EQUAL(d->outputs[0].qos, 1);
    CU_ASSERT_EQUAL_FATAL(d->request_count, 1);
    CU_ASSERT_EQUAL(d->requests[0].to, 1);
    CU_ASSERT_STRING_EQUAL(d->requests[0].response_topic, "idevs/rewards/resp/ride");
    CU_ASSERT_EQUAL(d->max_payload, 65536);
    CU_ASSERT_EQUAL(d->queue_depth, 1024);
    CU_ASSERT_EQUAL(d->event_timeout_ms, 2000);

    CU_ASSERT_PTR_EQUAL(idevs_deployment_input_by_topic(d, "idevs/rewards/in/sales"), &d->inputs[0]);
    CU_ASSERT_PTR_NULL(idevs_deployment_input_by_topic(d, "idevs/rewards/resp/ride"));
    CU_ASSERT_PTR_EQUAL(idevs_deployment_output_by_name(d, "confirmation"), &d->outputs[0]);
    CU_ASSERT_PTR_NULL(idevs_deployment_output_by_name(d, "sales"));
    CU_ASSERT_PTR_EQUAL(idevs_deployment_request_by_name(d, "ride"), &d->requests[0]);
    CU_ASSERT_PTR_EQUAL(idevs_deployment_request_by_response_topic(d, "idevs/rewards/resp/ride"), &d->requests[0]);
    CU_ASSERT_PTR_NULL(idevs_deployment_request_by_response_topic(d, "idevs/rewards/req/ride"));
    idevs_deployment_free(d);
}

static void test_defaults(void)
{
    const char *minimal = "{\"version\":1,\"process\":{\"name\":\"p\",\"uuid\":\"6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40\","
                          "\"logic\":\"l.so\"},\"operator_ca_sha256\":\"" CA_HEX "\",\"services\":[{\"name\":\"s\","
                          "\"uuid\":\"1b4e28ba-2fa1-41d2-883f-0016d3cca427\",\"certificate\":\"s.crt\"}],"
                          "\"outputs\":[{\"name\":\"o\",\"topic\":\"t/o\",\"to\":\"s\"}]}";
    idevs_deployment *d = NULL;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(parse_text(minimal, &d, why, sizeof why), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL(d->config_json, "{}");
    CU_ASSERT_EQUAL(d->input_count, 0);
    CU_ASSERT_EQUAL(d->request_count, 0);
    CU_ASSERT_EQUAL(d->outputs[0].qos, 1);
    CU_ASSERT_EQUAL(d->max_payload, 65536);
    CU_ASSERT_EQUAL(d->queue_depth, 1024);
    CU_ASSERT_EQUAL(d->event_timeout_ms, 2000);
    CU_ASSERT_EQUAL(d->max_outstanding_requests, 4096);
    CU_ASSERT_EQUAL(d->outputs[0].pad, IDEVS_PAD_POW2);
    CU_ASSERT_EQUAL(d->instances, 1);
    CU_ASSERT_EQUAL(d->partitions, 64);
    idevs_deployment_free(d);
}

/* text with the first occurrence of from replaced by to; malloc'd. */
static char *replaced(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    size_t head = (size_t)(at - text), from_len = strlen(from), to_len = strlen(to);
    char *out = malloc(strlen(text) - from_len + to_len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    memcpy(out, text, head);
    memcpy(out + head, to, to_len);
    strcpy(out + head + to_len, at + from_len);
    return out;
}

/* Replaces the first occurrence of from in the example by to, parses, and checks the error names path. */
static void expect_error(const char *from, const char *to, const char *why_part)
{
    char *text = replaced(example, from, to);
    idevs_deployment *d = (idevs_deployment *)1;
    char why[256];
    idevs_err err = parse_text(text, &d, why, sizeof why);
    CU_ASSERT_EQUAL(err, IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NULL(d);
    if (strstr(why, why_part) == NULL) {
        fprintf(stderr, "\n    replacing '%s' by '%s': why = \"%s\", expected \"%s\"\n", from, to, why, why_part);
        CU_FAIL("why does not name the problem");
    }
    if (err == IDEVS_OK)
        idevs_deployment_free(d);
    free(text);
}

static void test_syntax_and_structure(void)
{
    expect_error("\"version\": 1,", "\"version\": 1", "not valid JSON");
    expect_error("\n}\n", "\n} {}\n", "text after the JSON value");
    expect_error("\"version\": 1", "\"version\": 2", "version: 2 is not supported");
    expect_error("\"version\": 1", "\"version\": \"1\"", "version: must be a number, not a string");
    expect_error("\"version\": 1", "\"version\": 1.5", "version: must be a whole number");
    expect_error("\"version\": 1,", "", "version: missing");
    expect_error("\"version\": 1,", "\"version\": 1, \"extra\": true,", "unknown key 'extra'");
    expect_error("\"version\": 1,", "\"version\": 1, \"version\": 1,", "key 'version' appears twice");
    expect_error("\"logic\": \"librewards.so\",", "\"logic\": \"librewards.so\", \"debug\": 1,",
                 "process: unknown key 'debug'");
    expect_error("{ \"threshold_cents\": 15000, \"message\": \"Your ride home is on us\" }", "[1]",
                 "process.config: must be an object, not an array");
    expect_error("\"logic\": \"librewards.so\"", "\"logic\": \"\"", "process.logic: must not be empty");
    expect_error("\"services\": [", "\"services\": [ 5,", "services[0]: must be an object, not a number");
    expect_error("\"limits\": {", "\"limits\": { \"burst\": 1,", "limits: unknown key 'burst'");
}

static void test_names_and_uuids(void)
{
    expect_error("\"name\": \"rewards\"", "\"name\": \"re wards\"", "process.name: 're wards' is not a name");
    expect_error("\"name\": \"rewards\"", "\"name\": \"\"", "process.name");
    expect_error("\"name\": \"rewards\"",
                 "\"name\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "process.name");
    expect_error("6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40", "6f1c2a8e-4b7d-4e0a-9c3f", "process.uuid: '6f1c2a8e-4b7d-4e0a-9c3f' is not a UUID");
    expect_error("6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40", "00000000-0000-0000-0000-000000000000",
                 "process.uuid: the nil UUID");
    expect_error("\"name\": \"taxi\"", "\"name\": \"store\"", "services[1].name: 'store' is already the name of services[0]");
    expect_error("2c5f39cb-3ab2-42e3-994a-1127e4ddb538", "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                 "services[1].uuid: already the UUID of services[0]");
    expect_error("1b4e28ba-2fa1-41d2-883f-0016d3cca427", "6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40",
                 "services[0].uuid: the same as process.uuid");
    expect_error(", \"certificate\": \"pki/store.crt\"", "", "services[0].certificate: missing");
    expect_error(CA_HEX, "9f86", "operator_ca_sha256: must be 64 hex digits");
    expect_error(CA_HEX, "zf86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                 "operator_ca_sha256: must be 64 hex digits");
}

static void test_references_and_topics(void)
{
    expect_error("\"to\": \"messaging\"", "\"to\": \"taxis\"", "outputs[0].to: no service named 'taxis'");
    expect_error("\"from\": \"store\"", "\"from\": \"shop\"", "inputs[0].from: no service named 'shop'");
    expect_error("\"to\": \"taxi\"", "\"to\": 3", "requests[0].to: must be a string, not a number");
    expect_error("idevs/rewards/in/sales", "idevs/rewards/in/+", "inputs[0].topic: 'idevs/rewards/in/+' contains a wildcard");
    expect_error("idevs/rewards/out/confirmation", "idevs/#", "outputs[0].topic: 'idevs/#' contains a wildcard");
    expect_error("idevs/rewards/in/sales", "$SYS/broker", "inputs[0].topic: '$SYS/broker' is under '$'");
    expect_error("\"topic\": \"idevs/rewards/in/sales\"", "\"topic\": \"\"", "inputs[0].topic: must not be empty");
    expect_error("idevs/rewards/out/confirmation", "idevs/rewards/in/sales",
                 "outputs[0].topic: topic 'idevs/rewards/in/sales' is already used by inputs[0].topic");
    expect_error("idevs/rewards/resp/ride", "idevs/rewards/req/ride",
                 "requests[0].response_topic: topic 'idevs/rewards/req/ride' is already used by requests[0].topic");
    expect_error("idevs/rewards/in/sales", "idevs/\xc3\x28", "inputs[0].topic: not valid UTF-8");
    expect_error("\"qos\": 1 }\n  ],\n  \"requests\"", "\"qos\": 3 }\n  ],\n  \"requests\"",
                 "outputs[0].qos: 3 is out of range: 0 to 2");
    expect_error("\"to\": \"taxi\", \"qos\": 1", "\"to\": \"taxi\", \"qos\": -1", "requests[0].qos: -1 is out of range");
    expect_error("{ \"name\": \"sales\"", "{ \"name\": \"sales\", \"topic\": \"a/b\", \"from\": \"store\" },\n"
                                         "    { \"name\": \"sales\"",
                 "inputs[1].name: 'sales' is already the name of inputs[0]");
    expect_error("\"response_topic\": \"idevs/rewards/resp/ride\",", "", "requests[0].response_topic: missing");
}

/* "pad" per input, output and request: a name or a block size; anything else names the entry. */
static void test_pad(void)
{
    char *a = replaced(example, "\"from\": \"store\"", "\"from\": \"store\", \"pad\": \"none\"");
    char *b = replaced(a, "\"to\": \"messaging\", \"qos\": 1", "\"to\": \"messaging\", \"qos\": 1, \"pad\": 256");
    char *c = replaced(b, "\"to\": \"taxi\", \"qos\": 1", "\"to\": \"taxi\", \"qos\": 1, \"pad\": \"pow2\"");
    idevs_deployment *d = NULL;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(parse_text(c, &d, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(d->inputs[0].pad, IDEVS_PAD_NONE);
    CU_ASSERT_EQUAL(d->outputs[0].pad, 256);
    CU_ASSERT_EQUAL(d->requests[0].pad, IDEVS_PAD_POW2);
    idevs_deployment_free(d);
    free(a);
    free(b);
    free(c);
    const char *out = "\"to\": \"messaging\", \"qos\": 1";
    expect_error(out, "\"to\": \"messaging\", \"pad\": \"pow3\"",
                 "outputs[0].pad: must be \"pow2\", \"none\" or a block size of 16 to 4096 bytes");
    expect_error(out, "\"to\": \"messaging\", \"pad\": true", "outputs[0].pad: must be \"pow2\"");
    expect_error(out, "\"to\": \"messaging\", \"pad\": 8", "outputs[0].pad: 8 is out of range: 16 to 4096");
    expect_error(out, "\"to\": \"messaging\", \"pad\": 1", "outputs[0].pad: 1 is out of range");
    expect_error(out, "\"to\": \"messaging\", \"pad\": 4097", "outputs[0].pad: 4097 is out of range");
    expect_error(out, "\"to\": \"messaging\", \"pad\": 64.5", "outputs[0].pad: must be a whole number");
    expect_error("\"from\": \"store\"", "\"from\": \"store\", \"pad\": \"\"", "inputs[0].pad: must be");
    expect_error("\"to\": \"taxi\"", "\"to\": \"taxi\", \"pad\": 0", "requests[0].pad: 0 is out of range");
}

static void test_limits(void)
{
    expect_error("\"max_payload\": 65536", "\"max_payload\": 0", "limits.max_payload: 0 is out of range");
    expect_error("\"max_payload\": 65536", "\"max_payload\": 16777217", "limits.max_payload: 16777217 is out of range");
    expect_error("\"queue_depth\": 1024", "\"queue_depth\": 0", "limits.queue_depth: 0 is out of range");
    expect_error("\"event_timeout_ms\": 2000", "\"event_timeout_ms\": 5", "limits.event_timeout_ms: 5 is out of range");
    expect_error("\"event_timeout_ms\": 2000", "\"event_timeout_ms\": 1e400", "limits.event_timeout_ms: must be a whole");
    expect_error("\"event_timeout_ms\": 2000", "\"event_timeout_ms\": 2000, \"max_outstanding_requests\": 0",
                 "limits.max_outstanding_requests: 0 is out of range: 1 to 65536");
    expect_error("\"event_timeout_ms\": 2000", "\"event_timeout_ms\": 2000, \"max_outstanding_requests\": 65537",
                 "limits.max_outstanding_requests: 65537 is out of range: 1 to 65536");
}

/* process.instances and process.partitions: values and their bounds, errors naming the path. */
static void test_instances_and_partitions(void)
{
    const char *logic = "\"logic\": \"librewards.so\",";
    char *text = replaced(example, logic, "\"logic\": \"librewards.so\", \"instances\": 64, \"partitions\": 65536,");
    idevs_deployment *d = NULL;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(parse_text(text, &d, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(d->instances, 64);
    CU_ASSERT_EQUAL(d->partitions, 65536);
    idevs_deployment_free(d);
    free(text);
    expect_error(logic, "\"logic\": \"librewards.so\", \"instances\": 65,",
                 "process.instances: 65 is out of range: 1 to 64");
    expect_error(logic, "\"logic\": \"librewards.so\", \"instances\": 0,",
                 "process.instances: 0 is out of range: 1 to 64");
    expect_error(logic, "\"logic\": \"librewards.so\", \"instances\": 2.5,", "process.instances: must be a whole number");
    expect_error(logic, "\"logic\": \"librewards.so\", \"instances\": \"4\",",
                 "process.instances: must be a number, not a string");
    expect_error(logic, "\"logic\": \"librewards.so\", \"partitions\": 0,",
                 "process.partitions: 0 is out of range: 1 to 65536");
    expect_error(logic, "\"logic\": \"librewards.so\", \"partitions\": 65537,",
                 "process.partitions: 65537 is out of range: 1 to 65536");
    expect_error(logic, "\"logic\": \"librewards.so\", \"partitions\": 4, \"partitions\": 4,",
                 "process: key 'partitions' appears twice");
}

/* The example with process.partitions set to n. */
static idevs_deployment *with_partitions(const char *n)
{
    char to[128];
    snprintf(to, sizeof to, "\"logic\": \"librewards.so\", \"partitions\": %s,", n);
    char *text = replaced(example, "\"logic\": \"librewards.so\",", to);
    idevs_deployment *d = NULL;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(parse_text(text, &d, why, sizeof why), IDEVS_OK);
    free(text);
    return d;
}

/* docs/PROTOCOL.md 8.5's vector: program 6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40 (the example's), key "C-0001":
 * SHA-256 begins de a6 0b dd, 3735423965, so partition 29 of 64 and 3037 of 65536. */
static void test_partition(void)
{
    idevs_deployment *d = NULL;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(parse_text(example, &d, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_deployment_partition(d, "C-0001", 6), 29);
    CU_ASSERT_EQUAL(idevs_deployment_partition(d, "C-0001", 6), 29); /* the same key, the same partition */
    CU_ASSERT_EQUAL(idevs_deployment_partition(d, "C-0002", 6), 50);
    CU_ASSERT_EQUAL(idevs_deployment_partition(d, NULL, 0), 60); /* an empty key is a key too */
    idevs_deployment_free(d);
    d = with_partitions("65536");
    CU_ASSERT_EQUAL(idevs_deployment_partition(d, "C-0001", 6), 3037);
    idevs_deployment_free(d);
    d = with_partitions("1");
    CU_ASSERT_EQUAL(idevs_deployment_partition(d, "C-0001", 6), 0);
    idevs_deployment_free(d);
    /* Another program, other partitions: the program UUID is in the hash (of 32 keys, a few may agree). */
    idevs_deployment *e = with_partitions("65536");
    char *text = replaced(example, "\"logic\": \"librewards.so\",",
                          "\"logic\": \"librewards.so\", \"partitions\": 65536,");
    char *other = replaced(text, "6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40", "6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c41");
    CU_ASSERT_EQUAL_FATAL(parse_text(other, &d, why, sizeof why), IDEVS_OK);
    unsigned same = 0;
    for (int i = 0; i < 32; i++) {
        char key[16];
        int n = snprintf(key, sizeof key, "C-%04d", i);
        same += idevs_deployment_partition(d, key, (size_t)n) == idevs_deployment_partition(e, key, (size_t)n);
    }
    CU_ASSERT(same < 4);
    idevs_deployment_free(d);
    idevs_deployment_free(e);
    free(text);
    free(other);
}

/* The property's value: decimal, one spelling per number, below process.partitions. */
static void test_partition_parse(void)
{
    idevs_deployment *d = NULL;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(parse_text(example, &d, why, sizeof why), IDEVS_OK);
    uint32_t v = 99;
    CU_ASSERT_TRUE(idevs_deployment_partition_parse(d, "0", &v));
    CU_ASSERT_EQUAL(v, 0);
    CU_ASSERT_TRUE(idevs_deployment_partition_parse(d, "63", &v));
    CU_ASSERT_EQUAL(v, 63);
    const char *bad[] = {"64", "", "00", "07", "+1", "-1", " 1", "1 ", "1a", "0x1", "1e1", "100000", "4294967296",
                         "18446744073709551617"};
    v = 7;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_FALSE(idevs_deployment_partition_parse(d, bad[i], &v));
        CU_ASSERT_EQUAL(v, 7); /* left as it was */
    }
    CU_ASSERT_FALSE(idevs_deployment_partition_parse(d, NULL, &v));
    CU_ASSERT_FALSE(idevs_deployment_partition_parse(NULL, "1", &v));
    idevs_deployment_free(d);
    d = with_partitions("65536");
    CU_ASSERT_TRUE(idevs_deployment_partition_parse(d, "65535", &v));
    CU_ASSERT_EQUAL(v, 65535);
    CU_ASSERT_FALSE(idevs_deployment_partition_parse(d, "65536", &v));
    CU_ASSERT_FALSE(idevs_deployment_partition_parse(d, "99999", &v));
    idevs_deployment_free(d);
}

/* The example with a "refusals" member before its limits. */
static void refusals_error(const char *refusals, const char *why_part)
{
    char to[1200];
    snprintf(to, sizeof to, "\"refusals\": %s,\n  \"limits\": {", refusals);
    expect_error("\"limits\": {", to, why_part);
}

static void test_refusals(void)
{
    idevs_deployment *d = NULL;
    char why[256];
    /* absent: none */
    CU_ASSERT_EQUAL_FATAL(parse_text(example, &d, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(d->refusal_count, 0);
    CU_ASSERT_EQUAL(idevs_deployment_refusal_index(d, "not_a_sale"), -1);
    idevs_deployment_free(d);
    /* declared, in order; 32 characters is the longest */
    const char *at = strstr(example, "\"limits\": {");
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    char text[4096];
    snprintf(text, sizeof text, "%.*s\"refusals\": [\"not_a_sale\", \"amount_out_of_range\", "
             "\"abcdefghijklmnopqrstuvwxyz_01234\"], %s", (int)(at - example), example, at);
    CU_ASSERT_EQUAL_FATAL(parse_text(text, &d, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(d->refusal_count, 3);
    CU_ASSERT_STRING_EQUAL(d->refusals[0], "not_a_sale");
    CU_ASSERT_STRING_EQUAL(d->refusals[2], "abcdefghijklmnopqrstuvwxyz_01234");
    CU_ASSERT_EQUAL(idevs_deployment_refusal_index(d, "amount_out_of_range"), 1);
    CU_ASSERT_EQUAL(idevs_deployment_refusal_index(d, "amount"), -1);
    CU_ASSERT_EQUAL(idevs_deployment_refusal_index(d, NULL), -1);
    idevs_deployment_free(d);
    /* refused, each naming the field */
    refusals_error("\"not_a_sale\"", "refusals: must be an array, not a string");
    refusals_error("[1]", "refusals[0]: must be a string, not a number");
    refusals_error("[\"ok\", \"\"]", "refusals[1]: '' is not a refusal code: 1 to 32 of a-z 0-9 _");
    refusals_error("[\"Not_A_Sale\"]", "refusals[0]: 'Not_A_Sale' is not a refusal code");
    refusals_error("[\"not a sale\"]", "refusals[0]: 'not a sale' is not a refusal code");
    refusals_error("[\"not-a-sale\"]", "refusals[0]: 'not-a-sale' is not a refusal code");
    refusals_error("[\"abcdefghijklmnopqrstuvwxyz_012345\"]", "refusals[0]: 'abcdefghijklmnopqrstuvwxyz_012345' is not");
    refusals_error("[\"x\", \"y\", \"x\"]", "refusals[2]: 'x' is declared twice");
    refusals_error("[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]",
                   "refusals: 17 codes, at most 16");
}

static void test_size_and_bytes(void)
{
    idevs_deployment *d = NULL;
    char why[256];
    size_t big = IDEVS_DEPLOYMENT_MAX_BYTES + 1;
    uint8_t *text = calloc(1, big);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    memset(text, ' ', big);
    CU_ASSERT_EQUAL(idevs_deployment_parse(text, big, &d, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "at most"));
    free(text);
    static const uint8_t nul[] = {'{', 0, '}'};
    CU_ASSERT_EQUAL(idevs_deployment_parse(nul, sizeof nul, &d, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "NUL"));
    const char *no_services = "{\"version\":1,\"process\":{\"name\":\"p\",\"uuid\":"
                              "\"6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40\",\"logic\":\"l.so\"},"
                              "\"operator_ca_sha256\":\"" CA_HEX "\",\"services\":[]}";
    CU_ASSERT_EQUAL(parse_text(no_services, &d, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(why, "services: must not be empty");
    CU_ASSERT_EQUAL(parse_text("[]", &d, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "must be an object"));
    CU_ASSERT_EQUAL(idevs_deployment_parse(NULL, 0, NULL, why, sizeof why), IDEVS_ERR_INVALID_ARG);
    /* A tiny why buffer is never overrun. */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    CU_ASSERT_EQUAL(parse_text("[]", &d, tiny, 4), IDEVS_ERR_CONFIG);
    CU_ASSERT_EQUAL(tiny[3], '\0');
    CU_ASSERT_EQUAL(tiny[4], 'x');
}

static void test_load(void)
{
    char path[] = "/tmp/idevs-deployment-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL((size_t)write(fd, example, strlen(example)), strlen(example));
    close(fd);
    idevs_deployment *d = NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(idevs_deployment_load(path, &d, &bytes, &len, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(len, strlen(example));
    CU_ASSERT_EQUAL(memcmp(bytes, example, len), 0);
    idevs_deployment_free(d);
    free(bytes);
    unlink(path);
    CU_ASSERT_EQUAL(idevs_deployment_load(path, &d, NULL, NULL, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, path));
    CU_ASSERT_EQUAL(idevs_deployment_load("/tmp", &d, NULL, NULL, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "not a regular file"));
}

static CU_TestInfo tests[] = {
    {"the case-study example", test_example},
    {"defaults of optional fields", test_defaults},
    {"syntax, types, unknown and duplicate keys", test_syntax_and_structure},
    {"names and UUIDs", test_names_and_uuids},
    {"service references and topics", test_references_and_topics},
    {"padding per input, output and request", test_pad},
    {"limits", test_limits},
    {"process.instances and process.partitions", test_instances_and_partitions},
    {"the partition of a key: docs/PROTOCOL.md's vector", test_partition},
    {"the idevs-partition property's value", test_partition_parse},
    {"refusal codes", test_refusals},
    {"size, NUL bytes, arguments", test_size_and_bytes},
    {"loading from a file", test_load},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("deployment", NULL, NULL, tests);
}

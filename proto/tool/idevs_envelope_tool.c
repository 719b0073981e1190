/* idevs-envelope: seal, open and inspect idevs envelopes held in files, for service developers and auditors.
 *
 *   idevs-envelope seal --key K --cert C --ca CA --to PEER.crt --topic T [--provenance HEX]... [--pad RULE] [POLICY]
 *                       [--in F] [--out F]
 *   idevs-envelope open --key K --cert C --ca CA --topic T [--from PEER.crt]... [POLICY] [--in F] [--out F]
 *   idevs-envelope inspect [--in F]
 *
 * POLICY is any idevs_cert_policy_apply() setting as an option (--require-evidence, --measurement HEX, ...).
 * Payloads are never written to stderr; `open` writes the payload to --out (or stdout) and a summary to stderr. */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "idevs_cert.h"
#include "idevs_envelope.h"
#include "idevs_hex.h"
#include "idevs_inspect.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

#define INPUT_MAX (IDEVS_PAYLOAD_MAX_LIMIT + 65536u)

static const char usage[] =
    "usage: idevs-envelope seal --key KEY --cert CERT --ca CA --to PEER_CERT --topic TOPIC\n"
    "                           [--provenance HEX]... [--pad pow2|none|BLOCK] [POLICY...] [--in FILE] [--out FILE]\n"
    "       idevs-envelope open --key KEY --cert CERT --ca CA --topic TOPIC [--from PEER_CERT]...\n"
    "                           [POLICY...] [--in FILE] [--out FILE]\n"
    "       idevs-envelope inspect [--in FILE]\n"
    "\n"
    "POLICY settings (for the peer certificates): --require-evidence, --allow-process-backend-insecure,\n"
    "  --allow-debug-insecure, --allow-backend NAME, --measurement HEX, --descriptor-digest HEX,\n"
    "  --descriptor FILE, --program UUID, --nonce HEX.\n"
    "Files default to stdin and stdout.\n";

struct options {
    const char *command, *key, *cert, *to, *topic, *in, *out;
    const char *from[IDEVS_CHAIN_MAX * 4];
    size_t from_count;
    idevs_msgid provenance[IDEVS_PROVENANCE_MAX];
    size_t provenance_count;
    uint32_t pad;
    idevs_cert_policy *policy;
    bool has_ca;
};

/* Prints the message on stderr and returns code: the one way this tool fails (EXIT_FAILED, or EXIT_USAGE for a
 * usage error). */
static int complain(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int complain(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("idevs-envelope: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

#define fail(...) complain(EXIT_FAILED, __VA_ARGS__)
#define usage_error(...) complain(EXIT_USAGE, __VA_ARGS__)

/* Reads a whole file (or stdin for NULL / "-") of at most INPUT_MAX bytes. */
static int read_all(const char *path, uint8_t **data, size_t *len)
{
    bool std = path == NULL || strcmp(path, "-") == 0;
    FILE *f = std ? stdin : fopen(path, "rb");
    if (f == NULL)
        return fail("cannot open %s: %s", path, strerror(errno));
    size_t cap = 65536, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        if (n == cap) {
            if (cap >= INPUT_MAX) {
                free(buf);
                buf = NULL;
                errno = EFBIG;
                break;
            }
            cap *= 2;
            uint8_t *bigger = realloc(buf, cap);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    bool error = buf == NULL || ferror(f);
    if (!std)
        fclose(f);
    if (error) {
        free(buf);
        return fail("cannot read %s: %s", std ? "stdin" : path, errno == EFBIG ? "larger than the limit" : "read error");
    }
    *data = buf;
    *len = n;
    return EXIT_OK;
}

static int write_all(const char *path, const uint8_t *data, size_t len)
{
    bool std = path == NULL || strcmp(path, "-") == 0;
    FILE *f = std ? stdout : fopen(path, "wb");
    if (f == NULL)
        return fail("cannot create %s: %s", path, strerror(errno));
    bool ok = fwrite(data, 1, len, f) == len;
    ok = (std ? fflush(f) : fclose(f)) == 0 && ok;
    return ok ? EXIT_OK : fail("cannot write %s", std ? "stdout" : path);
}

/* Loads a PEM chain (leaf first) into DER buffers; returns the count, 0 on failure (said on stderr). More than
 * IDEVS_CHAIN_MAX certificates, or anything but certificates in the file, is a failure, never a cut chain. */
static size_t load_chain(const char *path, uint8_t *der[IDEVS_CHAIN_MAX], size_t len[IDEVS_CHAIN_MAX])
{
    size_t count = 0;
    char why[512];
    idevs_err err = idevs_cert_read_chain_file(path, der, len, IDEVS_CHAIN_MAX, &count, why, sizeof why);
    if (err != IDEVS_OK) {
        fail("cannot read the certificate chain %s (%s)", why, idevs_err_name(err));
        return 0;
    }
    return count;
}

static void free_chain(uint8_t *der[IDEVS_CHAIN_MAX], size_t count)
{
    idevs_cert_chain_free(der, count);
}

/* Verifies the chain in path under the context's policy and registers it as a peer. */
static int add_peer_file(idevs_envelope_ctx *ctx, const char *path, idevs_cert_info *info)
{
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    size_t count = load_chain(path, der, len);
    if (count == 0)
        return EXIT_FAILED;
    idevs_err err = idevs_envelope_add_peer(ctx, (const uint8_t *const *)der, len, count, info);
    free_chain(der, count);
    if (err != IDEVS_OK)
        return fail("peer certificate %s refused (%s): %s", path, idevs_err_name(err), idevs_strerror(err));
    return EXIT_OK;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    o->command = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0)
            return usage_error("unexpected argument '%s'\n%s", arg, usage);
        const char *name = arg + 2;
        bool takes_value = true; /* every option of the tool's own takes one */
        bool policy_setting = idevs_cert_policy_is_setting(name, &takes_value);
        const char *value = NULL;
        if (takes_value) {
            if (i + 1 >= argc)
                return usage_error("option %s needs a value", arg);
            value = argv[++i];
        }
        if (policy_setting) {
            char why[256];
            if (idevs_cert_policy_apply(o->policy, name, value, why, sizeof why) != IDEVS_OK)
                return usage_error("%s", why);
            o->has_ca |= strcmp(name, "ca") == 0;
        } else if (strcmp(name, "key") == 0) {
            o->key = value;
        } else if (strcmp(name, "cert") == 0) {
            o->cert = value;
        } else if (strcmp(name, "to") == 0) {
            o->to = value;
        } else if (strcmp(name, "from") == 0) {
            if (o->from_count == sizeof o->from / sizeof o->from[0])
                return usage_error("too many --from certificates");
            o->from[o->from_count++] = value;
        } else if (strcmp(name, "topic") == 0) {
            o->topic = value;
        } else if (strcmp(name, "in") == 0) {
            o->in = value;
        } else if (strcmp(name, "out") == 0) {
            o->out = value;
        } else if (strcmp(name, "pad") == 0) {
            /* docs/PROTOCOL.md section 4.1: pow2 (the default), none, or a block size of 16 to 4096 bytes */
            char *end = NULL;
            unsigned long block = strtoul(value, &end, 10);
            if (strcmp(value, "pow2") == 0)
                o->pad = IDEVS_PAD_POW2;
            else if (strcmp(value, "none") == 0)
                o->pad = IDEVS_PAD_NONE;
            else if (end != value && *end == '\0' && block >= IDEVS_PAD_BLOCK_MIN && block <= IDEVS_PAD_BLOCK_MAX)
                o->pad = (uint32_t)block;
            else
                return usage_error("--pad takes pow2, none or a block size of %u to %u bytes", IDEVS_PAD_BLOCK_MIN,
                                   IDEVS_PAD_BLOCK_MAX);
        } else if (strcmp(name, "provenance") == 0) {
            if (o->provenance_count == IDEVS_PROVENANCE_MAX || !idevs_hex_decode(value, o->provenance[o->provenance_count].b, IDEVS_UUID_LEN))
                return usage_error("--provenance takes a message id of 32 hex digits, at most %d times",
                                   IDEVS_PROVENANCE_MAX);
            o->provenance_count++;
        } else {
            return usage_error("unknown option %s\n%s", arg, usage);
        }
    }
    return EXIT_OK;
}

static int cmd_inspect(const struct options *o)
{
    uint8_t *data;
    size_t len;
    if (read_all(o->in, &data, &len) != EXIT_OK)
        return EXIT_FAILED;
    idevs_err err = idevs_inspect_envelope(stdout, data, len, 0);
    free(data);
    if (err != IDEVS_OK)
        return fail("not an idevs envelope (protobuf decoding failed)");
    return EXIT_OK;
}

static int with_context(const struct options *o, idevs_envelope_ctx **ctx, idevs_identity **me)
{
    if (o->key == NULL || o->cert == NULL || o->topic == NULL || !o->has_ca)
        return usage_error("%s needs --key, --cert, --ca and --topic\n%s", o->command, usage);
    idevs_err err = idevs_identity_load(o->key, o->cert, me);
    if (err != IDEVS_OK)
        return fail("cannot load identity from %s and %s (%s): %s", o->key, o->cert, idevs_err_name(err),
                    idevs_strerror(err));
    err = idevs_envelope_ctx_new(*me, o->policy, NULL, ctx);
    if (err != IDEVS_OK) {
        idevs_identity_free(*me);
        return fail("cannot set up sealing (%s): %s", idevs_err_name(err), idevs_strerror(err));
    }
    return EXIT_OK;
}

static int cmd_seal(const struct options *o)
{
    if (o->to == NULL)
        return usage_error("seal needs --to PEER_CERT");
    idevs_envelope_ctx *ctx;
    idevs_identity *me;
    int rc = with_context(o, &ctx, &me);
    if (rc != EXIT_OK)
        return rc;
    idevs_cert_info peer;
    uint8_t *payload = NULL, *env = NULL;
    size_t payload_len = 0, env_len = 0;
    rc = add_peer_file(ctx, o->to, &peer);
    if (rc == EXIT_OK)
        rc = read_all(o->in, &payload, &payload_len);
    if (rc == EXIT_OK) {
        idevs_msgid id;
        idevs_seal_input in = {.recipient = &peer.uuid, .topic = o->topic, .payload = payload,
                               .payload_len = payload_len, .provenance = o->provenance,
                               .provenance_count = o->provenance_count, .pad = o->pad};
        idevs_err err = idevs_envelope_seal(ctx, &in, &env, &env_len, &id);
        if (err != IDEVS_OK) {
            rc = fail("cannot seal (%s): %s", idevs_err_name(err), idevs_strerror(err));
        } else {
            rc = write_all(o->out, env, env_len);
            char id_hex[2 * IDEVS_UUID_LEN + 1];
            idevs_hex_encode(id.b, sizeof id.b, id_hex);
            fprintf(stderr, "sealed %zu bytes for '%s' on %s: envelope of %zu bytes, message id %s\n", payload_len,
                    peer.name, o->topic, env_len, id_hex);
        }
    }
    if (payload != NULL)
        idevs_cleanse(payload, payload_len);
    free(payload);
    free(env);
    idevs_envelope_ctx_free(ctx);
    idevs_identity_free(me);
    return rc;
}

static int cmd_open(const struct options *o)
{
    idevs_envelope_ctx *ctx;
    idevs_identity *me;
    int rc = with_context(o, &ctx, &me);
    if (rc != EXIT_OK)
        return rc;
    for (size_t i = 0; rc == EXIT_OK && i < o->from_count; i++)
        rc = add_peer_file(ctx, o->from[i], NULL);
    uint8_t *data = NULL;
    size_t len = 0;
    if (rc == EXIT_OK)
        rc = read_all(o->in, &data, &len);
    if (rc == EXIT_OK) {
        idevs_opened opened;
        idevs_err err = idevs_envelope_open(ctx, o->topic, data, len, &opened);
        if (err != IDEVS_OK) {
            rc = fail("rejected (%s): %s", idevs_err_name(err), idevs_strerror(err));
        } else {
            rc = write_all(o->out, opened.payload, opened.payload_len);
            char sender[IDEVS_UUID_STR_LEN], id_hex[2 * IDEVS_UUID_LEN + 1];
            idevs_uuid_format(&opened.sender, sender);
            idevs_hex_encode(opened.message_id.b, IDEVS_UUID_LEN, id_hex);
            fprintf(stderr, "opened %zu bytes from %s (instance %" PRIu32 "), message id %s, epoch %" PRIu64
                    " sequence %" PRIu64 ", %zu provenance id(s)\n",
                    opened.payload_len, sender, opened.instance, id_hex, opened.epoch, opened.sequence,
                    opened.provenance_count);
            idevs_opened_clear(&opened);
        }
    }
    free(data);
    idevs_envelope_ctx_free(ctx);
    idevs_identity_free(me);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    struct options o = {0};
    o.policy = idevs_cert_policy_new();
    if (o.policy == NULL)
        return fail("out of memory");
    int rc = parse_options(argc, argv, &o);
    if (rc == EXIT_OK) {
        if (strcmp(o.command, "seal") == 0)
            rc = cmd_seal(&o);
        else if (strcmp(o.command, "open") == 0)
            rc = cmd_open(&o);
        else if (strcmp(o.command, "inspect") == 0)
            rc = cmd_inspect(&o);
        else
            rc = usage_error("unknown command '%s'\n%s", o.command, usage);
    }
    idevs_cert_policy_free(o.policy);
    return rc;
}

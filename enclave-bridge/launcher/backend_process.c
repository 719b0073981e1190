/* The `process` backend: a sandboxed Linux process started from sealed memfds (image.c, spawn.c). The launcher
 * itself vouches for it: the evidence carries no hardware report, and the sealing key derives from a secret in
 * the launcher's state directory (sealing.c). docs/BACKENDS.md says what this does and does not protect. */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "launcher_internal.h"

#define DEFAULT_USER "nobody"
#define HOST_ARGV0 "idevs-compartment"

typedef struct process_backend {
    int state_dirfd;
    bool drop; /* running as root: the compartment becomes uid/gid */
    uid_t uid;
    gid_t gid;
} process_backend;

static idevs_err process_measure(void *state, const char *host_path, const char *logic_path,
                                 const uint8_t *descriptor, size_t descriptor_len, idevs_image *out, char *why,
                                 size_t why_len)
{
    (void)state;
    idevs_err err = launcher_seal_file(host_path, "host program", true, &out->host_fd, out->host_digest, why, why_len);
    if (err == IDEVS_OK)
        err = launcher_seal_file(logic_path, "logic", false, &out->logic_fd, out->logic_digest, why, why_len);
    if (err == IDEVS_OK && (err = idevs_sha256(descriptor, descriptor_len, out->descriptor_digest)) != IDEVS_OK)
        snprintf(why, why_len, "hashing the descriptor failed");
    if (err == IDEVS_OK &&
        (err = idevs_measurement(out->host_digest, out->logic_digest, out->descriptor_digest, out->measurement)) !=
            IDEVS_OK)
        snprintf(why, why_len, "computing the measurement failed");
    if (err != IDEVS_OK) {
        if (out->host_fd >= 0)
            close(out->host_fd);
        if (out->logic_fd >= 0)
            close(out->logic_fd);
        out->host_fd = out->logic_fd = -1;
    }
    return err;
}

static idevs_err process_launch(void *state, const idevs_image *image, idevs_child *out, char *why, size_t why_len)
{
    process_backend *pb = state;
    if (image->host_fd < 0 || image->logic_fd < 0)
        return IDEVS_ERR_INVALID_ARG;
    launcher_spawn_spec spec = {
        .host_fd = image->host_fd, .logic_fd = image->logic_fd, .drop = pb->drop, .uid = pb->uid, .gid = pb->gid,
        .argv0 = HOST_ARGV0,
    };
    return launcher_spawn(&spec, out, why, why_len);
}

static idevs_err process_evidence(void *state, const idevs_image *image, const idevs_uuid *program,
                                  const uint8_t key_binding[IDEVS_SHA256_LEN], idevs_evidence *ev, char *why,
                                  size_t why_len)
{
    (void)state;
    ev->backend = IDEVS_BACKEND_PROCESS;
    memcpy(ev->measurement, image->measurement, IDEVS_SHA256_LEN);
    ev->program_uuid = *program;
    memcpy(ev->descriptor_digest, image->descriptor_digest, IDEVS_SHA256_LEN);
    memcpy(ev->key_binding, key_binding, IDEVS_SHA256_LEN);
    ev->issued_at = (uint64_t)time(NULL);
    ev->nonce_len = IDEVS_EVIDENCE_NONCE_LEN;
    ev->flags = 0;
    ev->hardware_report = NULL; /* no hardware: the launcher's authority signature is the whole attestation */
    ev->hardware_report_len = 0;
    idevs_err err = idevs_random(ev->nonce, ev->nonce_len);
    if (err != IDEVS_OK)
        snprintf(why, why_len, "no randomness for the evidence nonce");
    return err;
}

static idevs_err process_sealing_key(void *state, const idevs_image *image, uint8_t key[IDEVS_SEALING_KEY_LEN],
                                     char *why, size_t why_len)
{
    process_backend *pb = state;
    uint8_t secret[IDEVS_SEALING_SECRET_LEN];
    idevs_err err = launcher_sealing_secret(pb->state_dirfd, true, secret, why, why_len);
    if (err != IDEVS_OK)
        return err;
    err = launcher_sealing_key(secret, image->measurement, key);
    idevs_cleanse(secret, sizeof secret);
    if (err != IDEVS_OK) {
        idevs_cleanse(key, IDEVS_SEALING_KEY_LEN);
        snprintf(why, why_len, "deriving the sealing key failed");
    }
    return err;
}

static void process_release_image(void *state, idevs_image *image)
{
    (void)state;
    if (image->host_fd >= 0)
        close(image->host_fd);
    if (image->logic_fd >= 0)
        close(image->logic_fd);
    image->host_fd = image->logic_fd = -1;
}

static void process_free(void *state)
{
    process_backend *pb = state;
    if (pb == NULL)
        return;
    if (pb->state_dirfd >= 0)
        close(pb->state_dirfd);
    free(pb);
}

static const idevs_backend_ops process_ops = {
    .kind = IDEVS_BACKEND_PROCESS,
    .measure = process_measure,
    .launch = process_launch,
    .evidence = process_evidence,
    .sealing_key = process_sealing_key,
    .release_image = process_release_image,
    .free = process_free,
};

/* Resolves the user the compartment runs as when the launcher is root. */
static idevs_err resolve_user(const char *name, uid_t *uid, gid_t *gid, char *why, size_t why_len)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    int rc = getpwnam_r(name, &pw, buf, sizeof buf, &found);
    if (rc != 0 || found == NULL) {
        snprintf(why, why_len, "user '%s' for the compartment: %s", name, rc != 0 ? strerror(rc) : "no such user");
        return IDEVS_ERR_CONFIG;
    }
    if (found->pw_uid == 0 || found->pw_gid == 0) {
        snprintf(why, why_len, "user '%s' for the compartment is root or in group root; name an unprivileged user",
                 name);
        return IDEVS_ERR_CONFIG;
    }
    *uid = found->pw_uid;
    *gid = found->pw_gid;
    return IDEVS_OK;
}

idevs_err idevs_backend_process_new(const idevs_process_backend_options *opts, idevs_backend_impl **out, char *why,
                                    size_t why_len)
{
    char sink[8];
    idevs_why_or_sink(&why, &why_len, sink, sizeof sink);
    why[0] = '\0';
    if (opts == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    process_backend *pb = calloc(1, sizeof *pb);
    if (pb == NULL)
        return IDEVS_ERR_NOMEM;
    pb->state_dirfd = -1;
    idevs_err err = launcher_state_dir_open(opts->state_dir, &pb->state_dirfd, why, why_len);
    if (err == IDEVS_OK && geteuid() == 0) {
        pb->drop = true;
        err = resolve_user(opts->run_as != NULL ? opts->run_as : DEFAULT_USER, &pb->uid, &pb->gid, why, why_len);
    }
    if (err != IDEVS_OK) {
        process_free(pb);
        return err;
    }
    *out = launcher_backend_wrap(&process_ops, pb);
    if (*out == NULL) {
        process_free(pb);
        return IDEVS_ERR_NOMEM;
    }
    return IDEVS_OK;
}

/* The backend interface: dispatch to the implementation an idevs_backend_impl carries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher_internal.h"

#define WHY_OK(why, len) ((why) != NULL && (len) > 0)

/* Callers may pass no why: the implementations then write to a local sink. */
#define FIX_WHY(why, len)            \
    char why_sink_[8];               \
    if (!WHY_OK(why, len)) {         \
        why = why_sink_;             \
        len = sizeof why_sink_;      \
    }                                \
    why[0] = '\0'


idevs_backend_impl *launcher_backend_wrap(const idevs_backend_ops *ops, void *state)
{
    idevs_backend_impl *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->ops = ops;
    b->state = state;
    return b;
}

idevs_backend idevs_backend_kind(const idevs_backend_impl *b)
{
    return b->ops->kind;
}

idevs_err idevs_backend_measure(idevs_backend_impl *b, const char *host_path, const char *logic_path,
                                const uint8_t *descriptor, size_t descriptor_len, idevs_image *image, char *why,
                                size_t why_len)
{
    FIX_WHY(why, why_len);
    if (b == NULL || host_path == NULL || logic_path == NULL || descriptor == NULL || descriptor_len == 0 ||
        image == NULL)
        return IDEVS_ERR_INVALID_ARG;
    memset(image, 0, sizeof *image);
    image->host_fd = image->logic_fd = -1;
    return b->ops->measure(b->state, host_path, logic_path, descriptor, descriptor_len, image, why, why_len);
}

idevs_err idevs_backend_launch(idevs_backend_impl *b, const idevs_image *image, idevs_child *child, char *why,
                               size_t why_len)
{
    FIX_WHY(why, why_len);
    if (b == NULL || image == NULL || child == NULL)
        return IDEVS_ERR_INVALID_ARG;
    return b->ops->launch(b->state, image, child, why, why_len);
}

idevs_err idevs_backend_evidence(idevs_backend_impl *b, const idevs_image *image, const idevs_uuid *program,
                                 const uint8_t key_binding[IDEVS_SHA256_LEN], idevs_evidence *ev, char *why,
                                 size_t why_len)
{
    FIX_WHY(why, why_len);
    if (b == NULL || image == NULL || program == NULL || key_binding == NULL || ev == NULL)
        return IDEVS_ERR_INVALID_ARG;
    memset(ev, 0, sizeof *ev);
    return b->ops->evidence(b->state, image, program, key_binding, ev, why, why_len);
}

idevs_err idevs_backend_sealing_key(idevs_backend_impl *b, const idevs_image *image,
                                    uint8_t key[IDEVS_SEALING_KEY_LEN], char *why, size_t why_len)
{
    FIX_WHY(why, why_len);
    if (b == NULL || image == NULL || key == NULL)
        return IDEVS_ERR_INVALID_ARG;
    return b->ops->sealing_key(b->state, image, key, why, why_len);
}

void idevs_backend_release_image(idevs_backend_impl *b, idevs_image *image)
{
    if (b != NULL && image != NULL)
        b->ops->release_image(b->state, image);
}

void idevs_backend_free(idevs_backend_impl *b)
{
    if (b == NULL)
        return;
    b->ops->free(b->state);
    free(b);
}

idevs_err launcher_state_secret(idevs_launcher *l, uint8_t secret[IDEVS_SEALING_SECRET_LEN], char *why,
                                size_t why_len)
{
    if (l->backend != NULL && l->backend->ops->state_secret != NULL)
        return l->backend->ops->state_secret(l->backend->state, secret, why, why_len);
    return launcher_sealing_secret(l->state_dirfd, true, secret, why, why_len);
}

idevs_err launcher_rollback_counter(idevs_launcher *l, uint64_t advance_to, bool *has, uint64_t *value,
                                    bool *created, char *why, size_t why_len)
{
    *has = l->backend != NULL && l->backend->ops->rollback_counter != NULL;
    *value = 0;
    *created = false;
    if (!*has)
        return IDEVS_OK;
    return l->backend->ops->rollback_counter(l->backend->state, &l->program, advance_to, value, created, why,
                                             why_len);
}

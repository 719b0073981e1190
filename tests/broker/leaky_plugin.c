/* A Mosquitto plugin that loses one block on purpose: the valgrind run of test_plugin_valgrind.sh loads it in a
 * control broker to show that the same valgrind options do report a plugin's leak, with the plugin's frames,
 * after the broker has unloaded it. Not for use anywhere else. */
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#pragma GCC visibility push(default)
#include <mosquitto_plugin.h>
#pragma GCC visibility pop

static void *volatile kept;

/* Not inlined, so that valgrind's stack names it. */
__attribute__((noinline)) static void idevs_leaky_lose_block(void)
{
    char *block = malloc(4242);
    if (block != NULL)
        memset(block, 0x5a, 4242);
    kept = block;
    kept = NULL; /* the only pointer is gone: definitely lost */
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == 5)
            return 5;
    return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
                          int option_count)
{
    (void)identifier, (void)options, (void)option_count;
    idevs_leaky_lose_block();
    *userdata = NULL;
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
    (void)userdata, (void)options, (void)option_count;
    return MOSQ_ERR_SUCCESS;
}

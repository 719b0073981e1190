/* The broker's other ACL sources, read from its own configuration file.
 *
 * Mosquitto 2.0.11 asks the ACL callbacks in the order they were registered and stops at the first answer that
 * is not "defer"; when every callback defers the answer is "denied", and only when there is no ACL source at all
 * is it "allowed". So the guard may answer "allowed" for the topics it does not protect only when it is the
 * broker's only ACL source: beside an acl_file or another plugin it would grant what they refuse (or, when they
 * defer, what the broker would deny). The plugin API does not say which sources the broker has, so they are
 * read from the configuration file the broker was started with (-c / --config-file in /proc/self/cmdline),
 * following include_dir as the broker does. Every acl_file line, and every plugin or auth_plugin line that is
 * not mosquitto_idevs.so itself, is another source: a plugin's callbacks cannot be seen from outside, so any
 * other plugin counts.
 *
 * No mosquitto header: the scan is plain file reading, tested on its own (tests/unit/test_acl_sources.c). */
#ifndef IDEVS_PLUGIN_ACL_SOURCES_H
#define IDEVS_PLUGIN_ACL_SOURCES_H

#include <stdbool.h>
#include <stddef.h>

#define IDEVS_ACL_SOURCES_TEXT_MAX 512

typedef struct idevs_acl_sources {
    bool known;  /* the configuration was read to the end; otherwise why says what stopped it */
    bool others; /* (when known) at least one other ACL source; first names it */
    char first[IDEVS_ACL_SOURCES_TEXT_MAX]; /* e.g. "acl_file /etc/mosquitto/acl (/etc/mosquitto/mosquitto.conf line 12)" */
    char why[IDEVS_ACL_SOURCES_TEXT_MAX];
} idevs_acl_sources;

/* Scans the configuration file conf and the files it includes. own_plugin: the path of mosquitto_idevs.so as
 * loaded; a plugin line naming the same file (compared by device and inode) is not another source. */
void idevs_acl_sources_scan(const char *conf, const char *own_plugin, idevs_acl_sources *out);

/* The configuration file named by a command line given as NUL-separated arguments (the bytes of
 * /proc/<pid>/cmdline): the argument after the last -c or --config-file. False when there is none or it does
 * not fit in path_len. */
bool idevs_acl_sources_conf_from_cmdline(const char *cmdline, size_t len, char *path, size_t path_len);

/* The broker running this code: its command line, its configuration file and this plugin's own file. */
void idevs_acl_sources_of_broker(idevs_acl_sources *out);

#endif

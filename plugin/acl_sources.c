/* The broker's other ACL sources, from its configuration file (acl_sources.h says why). The lines are split as
 * Mosquitto 2.0.11 splits them (src/conf.c): a line whose first byte is '#' is a comment; the keyword ends at
 * the first space after any leading spaces; the value is the rest, blanks trimmed at both ends; include_dir is
 * followed from the main file only, into its files ending in ".conf". The order of the included files does not
 * change the answer, only which source is named first: they are sorted by name. */
#include "acl_sources.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idevs_file.h"

#define LINE_MAX_BYTES 65536u   /* longer than any sensible configuration line: refused, not truncated */
#define CMDLINE_MAX_BYTES 65536u
#define INCLUDED_FILES_MAX 1024u

typedef struct scan {
    idevs_acl_sources *out;
    struct stat own; /* mosquitto_idevs.so */
    bool own_known;
} scan;

static void unknown(scan *s, const char *fmt, const char *a, const char *b)
{
    if (!s->out->known)
        return; /* the first problem is the one reported */
    s->out->known = false;
    snprintf(s->out->why, sizeof s->out->why, fmt, a, b);
}

static void found(scan *s, const char *keyword, const char *value, const char *file, unsigned line)
{
    if (s->out->others)
        return;
    s->out->others = true;
    snprintf(s->out->first, sizeof s->out->first, "%s %s (%s line %u)", keyword, value, file, line);
}

static bool is_own_plugin(const scan *s, const char *path)
{
    struct stat st;
    return s->own_known && stat(path, &st) == 0 && st.st_dev == s->own.st_dev && st.st_ino == s->own.st_ino;
}

static char *trim_blanks(char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        v[--n] = '\0';
    return v;
}

static void scan_file(scan *s, const char *path, bool main_file);

/* Mosquitto's order: case-insensitive first, then by case. */
static int by_name(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    int r = strcasecmp(x, y);
    return r != 0 ? r : strcmp(x, y);
}

static void scan_dir(scan *s, const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        unknown(s, "cannot open its include_dir '%s': %s", dir, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= 5 || strcmp(e->d_name + n - 5, ".conf") != 0)
            continue;
        char **grown = count < INCLUDED_FILES_MAX ? realloc(names, (count + 1) * sizeof *names) : NULL;
        if (grown == NULL) {
            unknown(s, "its include_dir '%s' %s", dir, count < INCLUDED_FILES_MAX ? "cannot be listed (out of memory)"
                                                                                  : "holds too many files");
            break;
        }
        names = grown;
        if (asprintf(&names[count], "%s/%s", dir, e->d_name) < 0) {
            unknown(s, "its include_dir '%s' %s", dir, "cannot be listed (out of memory)");
            break;
        }
        count++;
    }
    closedir(d);
    if (count > 0)
        qsort(names, count, sizeof *names, by_name);
    for (size_t i = 0; i < count; i++) {
        if (s->out->known)
            scan_file(s, names[i], false);
        free(names[i]);
    }
    free(names);
}

static void scan_line(scan *s, char *buf, const char *path, unsigned line, bool main_file)
{
    if (buf[0] == '#' || buf[0] == '\n' || buf[0] == '\r')
        return;
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    char *p = buf;
    while (*p == ' ')
        p++;
    char *keyword = p;
    while (*p != '\0' && *p != ' ')
        p++;
    char *value = p;
    if (*p != '\0')
        *value++ = '\0';
    value = trim_blanks(value);
    if (strcmp(keyword, "acl_file") == 0 && value[0] != '\0') {
        found(s, keyword, value, path, line);
    } else if ((strcmp(keyword, "plugin") == 0 || strcmp(keyword, "auth_plugin") == 0) && value[0] != '\0') {
        if (!is_own_plugin(s, value))
            found(s, keyword, value, path, line);
    } else if (strcmp(keyword, "include_dir") == 0 && main_file && value[0] != '\0') {
        scan_dir(s, value);
    }
}

static void scan_file(scan *s, const char *path, bool main_file)
{
    /* Opened by the one bounded file reader's rule (idevs_file.h): a regular file, a FIFO in its place refused
     * without hanging the broker's start; read line by line below, each line bounded. */
    static const idevs_file_rules rules = {"broker configuration file", 0, SIZE_MAX, 0, IDEVS_OK};
    char why[sizeof s->out->why - 16];
    int fd = -1;
    if (idevs_file_open(AT_FDCWD, path, &rules, &fd, NULL, why, sizeof why) != IDEVS_OK) {
        unknown(s, "%s%s", why, "");
        return;
    }
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        unknown(s, "cannot read '%s': %s", path, strerror(errno));
        close(fd);
        return;
    }
    char *buf = NULL;
    size_t cap = 0;
    unsigned line = 0;
    ssize_t got;
    while (s->out->known && (got = getline(&buf, &cap, f)) >= 0) {
        line++;
        if ((size_t)got > LINE_MAX_BYTES || memchr(buf, '\0', (size_t)got) != NULL) {
            char where[32];
            snprintf(where, sizeof where, "%u", line);
            unknown(s, "'%s' line %s is not a configuration line (too long, or a NUL byte)", path, where);
            break;
        }
        scan_line(s, buf, path, line, main_file);
    }
    if (s->out->known && ferror(f))
        unknown(s, "cannot read '%s': %s", path, strerror(errno));
    free(buf);
    fclose(f);
}

void idevs_acl_sources_scan(const char *conf, const char *own_plugin, idevs_acl_sources *out)
{
    memset(out, 0, sizeof *out);
    out->known = true;
    scan s = {.out = out};
    s.own_known = own_plugin != NULL && stat(own_plugin, &s.own) == 0;
    scan_file(&s, conf, true);
    if (!out->known) {
        out->others = false;
        out->first[0] = '\0';
    }
}

bool idevs_acl_sources_conf_from_cmdline(const char *cmdline, size_t len, char *path, size_t path_len)
{
    const char *found_path = NULL;
    size_t i = 0;
    while (i < len) {
        const char *arg = cmdline + i;
        size_t n = strnlen(arg, len - i);
        size_t next = i + n + 1;
        if ((strcmp(arg, "-c") == 0 || strcmp(arg, "--config-file") == 0) && next < len) {
            const char *value = cmdline + next;
            size_t vn = strnlen(value, len - next);
            if (next + vn < len) /* NUL-terminated within the buffer */
                found_path = value;
        }
        i = next;
    }
    if (found_path == NULL || found_path[0] == '\0' || strlen(found_path) >= path_len)
        return false;
    memcpy(path, found_path, strlen(found_path) + 1);
    return true;
}

void idevs_acl_sources_of_broker(idevs_acl_sources *out)
{
    memset(out, 0, sizeof *out);
    char *cmdline = malloc(CMDLINE_MAX_BYTES);
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    if (cmdline != NULL && fd >= 0) {
        ssize_t r;
        while (len < CMDLINE_MAX_BYTES && (r = read(fd, cmdline + len, CMDLINE_MAX_BYTES - len)) > 0)
            len += (size_t)r;
    }
    if (fd >= 0)
        close(fd);
    char conf[4096];
    bool have_conf = cmdline != NULL && idevs_acl_sources_conf_from_cmdline(cmdline, len, conf, sizeof conf);
    free(cmdline);
    if (!have_conf) {
        snprintf(out->why, sizeof out->why, "the broker's command line names no configuration file (-c)");
        return;
    }
    Dl_info self;
    const char *own = dladdr((void *)idevs_acl_sources_of_broker, &self) != 0 ? self.dli_fname : NULL;
    idevs_acl_sources_scan(conf, own, out);
}

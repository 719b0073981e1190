/* The scan of the broker's configuration for other ACL sources (plugin/acl_sources.c), on real files in a
 * temporary directory: what counts as another source, what does not, include_dir, and what makes the answer
 * unknown. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "acl_sources.h"
#include "harness.h"

static char dir[] = "/tmp/idevs-acl-sources.XXXXXX";
static char own[512];   /* stands for mosquitto_idevs.so */
static char other[512]; /* another plugin */

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

static void write_file(const char *name, const char *text)
{
    char path[512];
    path_of(path, sizeof path, name);
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* Writes mosquitto.conf with text (%s in it: the temporary directory) and scans it. */
static void scan_conf(const char *text, idevs_acl_sources *out)
{
    char body[4096], conf[512];
    snprintf(body, sizeof body, text, dir, dir, dir);
    write_file("mosquitto.conf", body);
    path_of(conf, sizeof conf, "mosquitto.conf");
    idevs_acl_sources_scan(conf, own, out);
}

static int suite_init(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    path_of(own, sizeof own, "mosquitto_idevs.so");
    path_of(other, sizeof other, "other_plugin.so");
    int a = open(own, O_WRONLY | O_CREAT, 0600), b = open(other, O_WRONLY | O_CREAT, 0600);
    if (a < 0 || b < 0)
        return 1;
    close(a);
    close(b);
    char include[512];
    path_of(include, sizeof include, "conf.d");
    return mkdir(include, 0700);
}

static int suite_clean(void)
{
    return harness_remove_tree(dir);
}

static void test_alone(void)
{
    idevs_acl_sources s;
    scan_conf("# acl_file /etc/mosquitto/acl is a comment here\n"
              "listener 1883 127.0.0.1\n"
              "allow_anonymous true\n"
              "plugin %s/mosquitto_idevs.so\n"
              "plugin_opt_acl_others allow\n"
              "password_file /etc/mosquitto/passwd\n",
              &s);
    CU_ASSERT_TRUE(s.known);
    CU_ASSERT_FALSE(s.others);
    CU_ASSERT_STRING_EQUAL(s.first, "");
}

static void test_acl_file_named_with_its_line(void)
{
    idevs_acl_sources s;
    scan_conf("listener 1883\nplugin %s/mosquitto_idevs.so\n\n   acl_file   /etc/mosquitto/acl  \t\n", &s);
    CU_ASSERT_TRUE(s.known);
    CU_ASSERT_TRUE(s.others);
    char want[600];
    snprintf(want, sizeof want, "acl_file /etc/mosquitto/acl (%s/mosquitto.conf line 4)", dir);
    CU_ASSERT_STRING_EQUAL(s.first, want);
}

static void test_other_plugins_count(void)
{
    idevs_acl_sources s;
    scan_conf("plugin %s/other_plugin.so\nplugin %s/mosquitto_idevs.so\n", &s);
    CU_ASSERT_TRUE(s.known && s.others);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.first, "plugin "));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.first, "line 1)"));
    scan_conf("auth_plugin %s/other_plugin.so\n", &s);
    CU_ASSERT_TRUE(s.known && s.others);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.first, "auth_plugin "));
    /* A plugin file that does not exist is still a line the broker acts on (and refuses): another source. */
    scan_conf("plugin /nonexistent/dynamic_security.so\n", &s);
    CU_ASSERT_TRUE(s.known && s.others);
}

static void test_own_plugin_by_another_name(void)
{
    char link_path[512];
    path_of(link_path, sizeof link_path, "idevs-link.so");
    unlink(link_path);
    CU_ASSERT_FATAL(symlink(own, link_path) == 0);
    idevs_acl_sources s;
    scan_conf("plugin %s/idevs-link.so\n", &s);
    CU_ASSERT_TRUE(s.known);
    CU_ASSERT_FALSE(s.others);
}

static void test_lines_mosquitto_does_not_read_as_sources(void)
{
    idevs_acl_sources s;
    /* A tab after the keyword, or a tab first, makes another keyword for Mosquitto; '#' first is a comment;
     * "acl_file" with no value is refused by the broker itself. */
    scan_conf("acl_file\t/etc/acl\n\tacl_file /etc/acl\n#plugin /x.so\nacl_file\nacl_files /etc/acl\n", &s);
    CU_ASSERT_TRUE(s.known);
    CU_ASSERT_FALSE(s.others);
    scan_conf("acl_file /etc/acl\r\n", &s); /* CRLF */
    CU_ASSERT_TRUE(s.others);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.first, "acl_file /etc/acl ("));
}

static void test_include_dir(void)
{
    write_file("conf.d/10-listener.conf", "listener 1884\n");
    write_file("conf.d/README", "acl_file /not/read/the/name/does/not/end/in/.conf\n");
    idevs_acl_sources s;
    scan_conf("include_dir %s/conf.d\n", &s);
    CU_ASSERT_TRUE(s.known);
    CU_ASSERT_FALSE(s.others);
    write_file("conf.d/20-acl.conf", "\n\nacl_file /etc/mosquitto/acl\n");
    write_file("conf.d/30-more.conf", "plugin /usr/lib/x.so\n");
    scan_conf("include_dir %s/conf.d\n", &s);
    CU_ASSERT_TRUE(s.known && s.others);
    char want[600];
    snprintf(want, sizeof want, "acl_file /etc/mosquitto/acl (%s/conf.d/20-acl.conf line 3)", dir);
    CU_ASSERT_STRING_EQUAL(s.first, want);
    /* include_dir is followed from the main file only, as the broker does. */
    write_file("conf.d/05-nested.conf", "include_dir /nonexistent\n");
    scan_conf("include_dir %s/conf.d\n", &s);
    CU_ASSERT_TRUE(s.known);
    char path[512];
    path_of(path, sizeof path, "conf.d/05-nested.conf");
    unlink(path);
    path_of(path, sizeof path, "conf.d/20-acl.conf");
    unlink(path);
    path_of(path, sizeof path, "conf.d/30-more.conf");
    unlink(path);
}

static void test_unknown(void)
{
    idevs_acl_sources s;
    idevs_acl_sources_scan("/nonexistent/mosquitto.conf", own, &s);
    CU_ASSERT_FALSE(s.known);
    CU_ASSERT_FALSE(s.others);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.why, "configuration file '/nonexistent/mosquitto.conf': cannot open"));
    scan_conf("include_dir %s/no-such-dir\nacl_file /x\n", &s);
    CU_ASSERT_FALSE(s.known);
    CU_ASSERT_FALSE(s.others); /* never half an answer */
    CU_ASSERT_PTR_NOT_NULL(strstr(s.why, "include_dir"));
    /* A directory, and a FIFO (read without waiting for a writer), in place of the file. */
    idevs_acl_sources_scan(dir, own, &s);
    CU_ASSERT_FALSE(s.known);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.why, "not a regular file"));
    char fifo[512];
    path_of(fifo, sizeof fifo, "fifo.conf");
    CU_ASSERT_FATAL(mkfifo(fifo, 0600) == 0);
    idevs_acl_sources_scan(fifo, own, &s);
    CU_ASSERT_FALSE(s.known);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.why, "not a regular file"));
    unlink(fifo);
    /* A NUL byte, and a line longer than any configuration line. */
    char conf[512];
    path_of(conf, sizeof conf, "nul.conf");
    FILE *f = fopen(conf, "w");
    CU_ASSERT_FATAL(f != NULL);
    fwrite("listener 1\nacl\0_file /x\n", 1, 24, f);
    fclose(f);
    idevs_acl_sources_scan(conf, own, &s);
    CU_ASSERT_FALSE(s.known);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.why, "line 2"));
    f = fopen(conf, "w");
    CU_ASSERT_FATAL(f != NULL);
    for (int i = 0; i < 70000; i++)
        fputc('x', f);
    fclose(f);
    idevs_acl_sources_scan(conf, own, &s);
    CU_ASSERT_FALSE(s.known);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.why, "line 1"));
}

static void test_command_line(void)
{
    char path[64];
    static const char args[] = "/usr/sbin/mosquitto\0-v\0-c\0/etc/mosquitto/mosquitto.conf\0";
    CU_ASSERT_TRUE(idevs_acl_sources_conf_from_cmdline(args, sizeof args - 1, path, sizeof path));
    CU_ASSERT_STRING_EQUAL(path, "/etc/mosquitto/mosquitto.conf");
    static const char last[] = "mosquitto\0-c\0a.conf\0--config-file\0b.conf\0";
    CU_ASSERT_TRUE(idevs_acl_sources_conf_from_cmdline(last, sizeof last - 1, path, sizeof path));
    CU_ASSERT_STRING_EQUAL(path, "b.conf");
    static const char none[] = "mosquitto\0-p\0001883\0";
    CU_ASSERT_FALSE(idevs_acl_sources_conf_from_cmdline(none, sizeof none - 1, path, sizeof path));
    static const char dangling[] = "mosquitto\0-c";
    CU_ASSERT_FALSE(idevs_acl_sources_conf_from_cmdline(dangling, sizeof dangling - 1, path, sizeof path));
    static const char cut[] = "mosquitto\0-c\0/etc/mosq"; /* no NUL at the end: not trusted */
    CU_ASSERT_FALSE(idevs_acl_sources_conf_from_cmdline(cut, sizeof cut - 1, path, sizeof path));
    static const char longer[] = "mosquitto\0-c\0/a/path/longer/than/the/sixty-four/byte/buffer/given/to/the/function/here.conf\0";
    CU_ASSERT_FALSE(idevs_acl_sources_conf_from_cmdline(longer, sizeof longer - 1, path, sizeof path));
}

static CU_TestInfo tests[] = {
    {"idevs alone: no other source", test_alone},
    {"an acl_file is named with its file and line", test_acl_file_named_with_its_line},
    {"every other plugin line counts", test_other_plugins_count},
    {"the plugin's own file under another name does not count", test_own_plugin_by_another_name},
    {"lines the broker does not read as sources do not count", test_lines_mosquitto_does_not_read_as_sources},
    {"include_dir: its .conf files, from the main file only", test_include_dir},
    {"unreadable configurations give no answer, and say why", test_unknown},
    {"the configuration file from the command line", test_command_line},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("acl_sources", suite_init, suite_clean, tests);
}

/* The one bounded file reader (base/idevs_file.c), the why helper (idevs_fail) and the one certificate-chain
 * reader on files (certs/chain.c), against real files in a temporary directory: a comment line before a PEM
 * block, CRLF line ends, trailing garbage, a FIFO (no hang), a directory, a symbolic link, an oversized file,
 * a file that grows while read, too many certificates, an empty file, private-file rules. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "fixtures.h"
#include "harness.h"
#include "idevs_cert.h"
#include "idevs_error.h"
#include "idevs_file.h"

static char dir[] = "/tmp/idevs-file.XXXXXX";
static fixture_pki pki;
static char *ca_pem;        /* the fixture CA's certificate, PEM with LF line ends */
static char *authority_pem; /* the authority's */

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* Writes name in the directory with the given mode; returns its path in out. */
static void write_file(const char *name, const char *text, size_t len, mode_t mode, char *out, size_t out_len)
{
    path_of(out, out_len, name);
    unlink(out);
    int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, text, len) == (ssize_t)len);
    CU_ASSERT_FATAL(fchmod(fd, mode) == 0);
    close(fd);
}

static char *pem_of(X509 *cert)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_X509(bio, cert) != 1)
        abort();
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *out = malloc((size_t)n + 1);
    if (out == NULL)
        abort();
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

static int suite_init(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    fixture_pki_init(&pki);
    ca_pem = pem_of(pki.ca_cert);
    authority_pem = pem_of(pki.authority_cert);
    return 0;
}

static int suite_clean(void)
{
    free(ca_pem);
    free(authority_pem);
    fixture_pki_free(&pki);
    return harness_remove_tree(dir);
}

/* Reads path (relative to dirfd) under rules and expects it whole: want bytes, NUL-terminated. */
static void expect_read(int dirfd, const char *path, const idevs_file_rules *rules, size_t want)
{
    char why[512];
    uint8_t *data = NULL;
    size_t len = want + 1;
    CU_ASSERT_EQUAL_FATAL(idevs_file_read(dirfd, path, rules, &data, &len, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(len, want);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    CU_ASSERT_EQUAL(data[len], 0);
    free(data);
}

static void test_fail(void)
{
    char why[16] = "old";
    CU_ASSERT_EQUAL(idevs_fail(why, sizeof why, IDEVS_ERR_IO, "file '%s': %d", "x", 7), IDEVS_ERR_IO);
    CU_ASSERT_STRING_EQUAL(why, "file 'x': 7");
    CU_ASSERT_EQUAL(idevs_fail(why, sizeof why, IDEVS_ERR_CONFIG, "%s", "a sentence longer than sixteen"),
                    IDEVS_ERR_CONFIG);
    CU_ASSERT_EQUAL(strlen(why), sizeof why - 1); /* cut to fit, terminated */
    CU_ASSERT_EQUAL(idevs_fail(NULL, 0, IDEVS_ERR_NOMEM, "no buffer %d", 1), IDEVS_ERR_NOMEM);
    CU_ASSERT_EQUAL(idevs_fail(why, 0, IDEVS_OK, "nothing written"), IDEVS_OK);
    CU_ASSERT_EQUAL(strlen(why), sizeof why - 1);
}

static void test_read_regular(void)
{
    char path[512], why[512];
    write_file("plain", "hello\n", 6, 0644, path, sizeof path);
    const idevs_file_rules rules = {"test file", 1, 64, 0, IDEVS_OK};
    uint8_t *data = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(idevs_file_read(AT_FDCWD, path, &rules, &data, &len, why, sizeof why), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL((char *)data, "hello\n"); /* NUL-terminated */
    free(data);
    /* Relative to a directory descriptor. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CU_ASSERT_FATAL(dfd >= 0);
    expect_read(dfd, "plain", &rules, 6);
    /* The open alone: a regular file and its size. */
    int fd = -1;
    size_t size = 0;
    CU_ASSERT_EQUAL(idevs_file_open(dfd, "plain", &rules, &fd, &size, why, sizeof why), IDEVS_OK);
    CU_ASSERT(fd >= 0);
    CU_ASSERT_EQUAL(size, 6);
    close(fd);
    close(dfd);
}

static void test_empty_and_missing(void)
{
    char path[512], why[512];
    write_file("empty", "", 0, 0644, path, sizeof path);
    const idevs_file_rules any = {NULL, 0, 64, 0, IDEVS_OK};
    expect_read(AT_FDCWD, path, &any, 0);
    uint8_t *data = NULL;
    size_t len = 1;
    const idevs_file_rules one = {"test file", 1, 64, 0, IDEVS_OK};
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &one, &data, &len, why, sizeof why), IDEVS_ERR_IO);
    CU_ASSERT_PTR_NULL(data);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "test file '"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "' is empty"));

    path_of(path, sizeof path, "missing");
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &one, &data, &len, why, sizeof why), IDEVS_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "cannot open: No such file or directory"));
    const idevs_file_rules optional = {"test file", 1, 64, IDEVS_FILE_MISSING_OK, IDEVS_OK};
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &optional, &data, &len, why, sizeof why), IDEVS_OK);
    CU_ASSERT_PTR_NULL(data);
    CU_ASSERT_EQUAL(len, 0);
}

static void test_not_regular(void)
{
    char path[512], why[512];
    uint8_t *data = NULL;
    size_t len = 0;
    const idevs_file_rules rules = {NULL, 0, 64, 0, IDEVS_ERR_CONFIG};
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, dir, &rules, &data, &len, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, ": not a regular file (a directory)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, dir));

    /* A FIFO without a writer: refused at once, never waited on (the alarm ends a hang). */
    path_of(path, sizeof path, "fifo");
    unlink(path);
    CU_ASSERT_FATAL(mkfifo(path, 0600) == 0);
    alarm(10);
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &rules, &data, &len, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "not a regular file (a FIFO)"));
    int fd = -1;
    CU_ASSERT_EQUAL(idevs_file_open(AT_FDCWD, path, &rules, &fd, NULL, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_EQUAL(fd, -1);
    alarm(0);
    CU_ASSERT_PTR_NULL(data);
    /* A device. */
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, "/dev/null", &rules, &data, &len, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "(a device)"));
}

static void test_symlink(void)
{
    char target[512], link_path[512], why[512];
    write_file("target", "data", 4, 0600, target, sizeof target);
    path_of(link_path, sizeof link_path, "link");
    unlink(link_path);
    CU_ASSERT_FATAL(symlink(target, link_path) == 0);
    /* Followed where no private file is expected. */
    const idevs_file_rules follow = {NULL, 0, 64, 0, IDEVS_OK};
    expect_read(AT_FDCWD, link_path, &follow, 4);
    uint8_t *data = NULL;
    size_t len = 0;
    /* Refused, and said where it points, where one is. */
    const idevs_file_rules key = {"key file", 0, 64, IDEVS_FILE_NOFOLLOW | IDEVS_FILE_PRIVATE, IDEVS_ERR_KEY_FILE};
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, link_path, &key, &data, &len, why, sizeof why), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_PTR_NULL(data);
    char expect[1200];
    snprintf(expect, sizeof expect, "key file '%s' is a symbolic link (to '%s')", link_path, target);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, expect));
}

static void test_private(void)
{
    char path[512], why[512];
    uint8_t *data = NULL;
    size_t len = 0;
    const idevs_file_rules key = {"key file", 0, 64, IDEVS_FILE_NOFOLLOW | IDEVS_FILE_PRIVATE | IDEVS_FILE_OWNED |
                                  IDEVS_FILE_SECRET, IDEVS_ERR_KEY_FILE};
    write_file("open.key", "secret", 6, 0644, path, sizeof path);
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &key, &data, &len, why, sizeof why), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "has mode 0644: group or others may read it"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "chmod 600"));
    write_file("group.key", "secret", 6, 0620, path, sizeof path);
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &key, &data, &len, why, sizeof why), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "group or others may access it"));
    write_file("private.key", "secret", 6, 0600, path, sizeof path);
    expect_read(AT_FDCWD, path, &key, 6);
    if (geteuid() == 0) { /* another owner can be made only by root */
        CU_ASSERT_FATAL(chown(path, 65534, 65534) == 0);
        CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &key, &data, &len, why, sizeof why), IDEVS_ERR_KEY_FILE);
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "not to root (uid 0) which reads it"));
    }
}

static void test_size(void)
{
    char path[512], why[512];
    uint8_t *data = NULL;
    size_t len = 0;
    write_file("eleven", "0123456789\n", 11, 0644, path, sizeof path);
    const idevs_file_rules ten = {"descriptor", 0, 10, 0, IDEVS_OK};
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &ten, &data, &len, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_PTR_NULL(data);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "' has 11 bytes, more than 10"));
    const idevs_file_rules twelve = {"descriptor", 12, 20, 0, IDEVS_ERR_CONFIG};
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &twelve, &data, &len, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "' has 11 bytes, fewer than 12"));
    const idevs_file_rules exact = {"descriptor", 11, 11, 0, IDEVS_OK};
    expect_read(AT_FDCWD, path, &exact, 11);
}

/* A regular file whose size fstat gives as 0 but which holds bytes when read (a /proc file): the reader
 * sees it grow past the size it was told, deterministically, and refuses it rather than cutting it. */
static void test_grows_while_read(void)
{
    struct stat st;
    const char *path = "/proc/self/status";
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != 0)
        return; /* no such file here: nothing to show */
    char why[512];
    uint8_t *data = NULL;
    size_t len = 0;
    const idevs_file_rules rules = {"status file", 0, 1 << 20, 0, IDEVS_OK};
    CU_ASSERT_EQUAL(idevs_file_read(AT_FDCWD, path, &rules, &data, &len, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_PTR_NULL(data);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "status file '/proc/self/status' grew while it was read (beyond 0 bytes)"));
}

/* ---- the chain reader on files ---- */

static idevs_err read_chain(const char *name, const char *text, size_t max, size_t *count, char *why,
                            size_t why_len)
{
    char path[512];
    write_file(name, text, strlen(text), 0644, path, sizeof path);
    uint8_t *der[IDEVS_CHAIN_PEM_COUNT_MAX];
    size_t der_len[IDEVS_CHAIN_PEM_COUNT_MAX];
    idevs_err err = idevs_cert_read_chain_file(path, der, der_len, max, count, why, why_len);
    if (err == IDEVS_OK)
        idevs_cert_chain_free(der, *count);
    return err;
}

static void test_chain_rules(void)
{
    char why[512], text[16384];
    size_t count = 0;
    CU_ASSERT_EQUAL(read_chain("one.crt", ca_pem, 1, &count, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(count, 1);
    /* Two, leaf first, with blank lines around them. */
    snprintf(text, sizeof text, "\n%s\n\n%s\n", authority_pem, ca_pem);
    CU_ASSERT_EQUAL(read_chain("two.crt", text, 4, &count, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(count, 2);
    /* A comment line before the first block: refused, as everywhere. */
    snprintf(text, sizeof text, "# the operator CA\n%s", ca_pem);
    CU_ASSERT_EQUAL(read_chain("comment.crt", text, 1, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "comment.crt: text before the first PEM block"));
    CU_ASSERT_EQUAL(count, 0);
    /* CRLF line ends: white space, accepted. */
    size_t n = 0;
    for (const char *p = ca_pem; *p != '\0' && n + 2 < sizeof text; p++) {
        if (*p == '\n')
            text[n++] = '\r';
        text[n++] = *p;
    }
    text[n] = '\0';
    CU_ASSERT_EQUAL(read_chain("crlf.crt", text, 1, &count, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(count, 1);
    /* Trailing garbage. */
    snprintf(text, sizeof text, "%sgarbage\n", ca_pem);
    CU_ASSERT_EQUAL(read_chain("trailing.crt", text, 1, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "text after certificate 1"));
    /* Too many certificates: a second one where one is expected. */
    snprintf(text, sizeof text, "%s%s", ca_pem, authority_pem);
    CU_ASSERT_EQUAL(read_chain("many.crt", text, 1, &count, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "more than 1 certificate(s)"));
    /* Empty. */
    CU_ASSERT_EQUAL(read_chain("empty.crt", "", 1, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "no PEM certificate"));
    /* A key is not a certificate. */
    CU_ASSERT_EQUAL(read_chain("key.crt", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 1,
                               &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
}

static void test_chain_files(void)
{
    char path[512], why[512];
    uint8_t *der[IDEVS_CHAIN_PEM_COUNT_MAX];
    size_t der_len[IDEVS_CHAIN_PEM_COUNT_MAX], count = 7;
    /* Oversized: more bytes than one certificate's PEM can take. */
    size_t big = IDEVS_CHAIN_PEM_EACH_MAX + 1;
    char *text = malloc(big);
    CU_ASSERT_FATAL(text != NULL);
    memset(text, '\n', big);
    write_file("big.crt", text, big, 0644, path, sizeof path);
    free(text);
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file(path, der, der_len, 1, &count, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(count, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "more than"));
    /* A directory and a FIFO (no hang). */
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file(dir, der, der_len, 1, &count, why, sizeof why), IDEVS_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "not a regular file (a directory)"));
    path_of(path, sizeof path, "ca.fifo");
    unlink(path);
    CU_ASSERT_FATAL(mkfifo(path, 0600) == 0);
    alarm(10);
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file(path, der, der_len, 1, &count, why, sizeof why), IDEVS_ERR_IO);
    alarm(0);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "not a regular file (a FIFO)"));
    /* Parsed: the X509 variant, and the operator CA file of a policy, under the same rule. */
    char two[16384];
    snprintf(two, sizeof two, "%s%s", authority_pem, ca_pem);
    write_file("chain.crt", two, strlen(two), 0644, path, sizeof path);
    X509 *certs[4];
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file_x509(path, certs, 4, &count, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(count, 2);
    CU_ASSERT_EQUAL(X509_cmp(certs[0], pki.authority_cert), 0);
    CU_ASSERT_EQUAL(X509_cmp(certs[1], pki.ca_cert), 0);
    X509_free(certs[0]);
    X509_free(certs[1]);
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file_x509(path, certs, 1, &count, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    idevs_cert_policy *policy = idevs_cert_policy_new();
    CU_ASSERT_FATAL(policy != NULL);
    snprintf(two, sizeof two, "# the operator CA\n%s", ca_pem);
    write_file("ca-comment.crt", two, strlen(two), 0644, path, sizeof path);
    CU_ASSERT_EQUAL(idevs_cert_policy_add_ca_file(policy, path), IDEVS_ERR_CERT_MALFORMED);
    write_file("ca.crt", ca_pem, strlen(ca_pem), 0644, path, sizeof path);
    CU_ASSERT_EQUAL(idevs_cert_policy_add_ca_file(policy, path), IDEVS_OK);
    idevs_cert_policy_free(policy);
}

static CU_TestInfo file_tests[] = {
    {"idevs_fail writes the sentence and returns the code", test_fail},
    {"a regular file is read whole, NUL-terminated, also relative to a directory", test_read_regular},
    {"an empty file within or below the bounds; a missing one", test_empty_and_missing},
    {"a directory, a FIFO (no hang) and a device are refused", test_not_regular},
    {"a symbolic link: followed, or refused where a private file is expected", test_symlink},
    {"a private file: mode and owner", test_private},
    {"size bounds, checked with fstat", test_size},
    {"a file that grows while read is refused, not cut", test_grows_while_read},
    {"comments, CRLF, trailing garbage, too many, empty, a key", test_chain_rules},
    {"oversized, a directory, a FIFO; parsed chains and a policy's CA file", test_chain_files},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("file", suite_init, suite_clean, file_tests);
}

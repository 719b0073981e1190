/* The sandbox, in layers (docs/COMPARTMENT.md):
 *   1. process hardening at start: no new privileges, not dumpable (no ptrace attach by the same user, no
 *      /proc/<pid>/mem), no core files, resource limits, every inherited descriptor but 0-4 closed;
 *   2. OpenSSL fully loaded before anything is restricted, so it never opens a file or module afterwards;
 *   3. Landlock, where the kernel has it: no filesystem access but reading and executing the logic file,
 *      no TCP, no abstract UNIX sockets or signals outside the sandbox;
 *   4. seccomp, two stacked filters built from seccomp_allowlist.c: the first while the logic is loaded, the
 *      second, final one before the logic runs anything but its constructors.
 * A system call outside the allowlist traps: on_sigsys() sends a Fatal frame naming it (after whatever the send
 * queue still held, so that it always starts between frames) and exits. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <seccomp.h>

#include "compartment.h"
#include "raw_frame.h"

#define NOFILE_LIMIT 16               /* 0-4, and what loading the logic briefly opens */
#define ADDRESS_SPACE_LIMIT (1ull << 30) /* 1 GiB: frames are at most 20 MiB, payloads 16 MiB */

/* ---- layer 1: the process ---- */

static idevs_err set_limit(int resource, rlim_t value, const char *name, char *why, size_t why_len)
{
    struct rlimit rl = {value, value};
    if (setrlimit(resource, &rl) == 0)
        return IDEVS_OK;
    snprintf(why, why_len, "setrlimit(%s): %s", name, strerror(errno));
    return IDEVS_ERR_SANDBOX;
}

idevs_err sandbox_harden_process(char *why, size_t why_len)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(why, why_len, "prctl(PR_SET_NO_NEW_PRIVS): %s", strerror(errno));
        return IDEVS_ERR_SANDBOX;
    }
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        snprintf(why, why_len, "prctl(PR_SET_DUMPABLE): %s", strerror(errno));
        return IDEVS_ERR_SANDBOX;
    }
    /* A launcher that went away shows as EPIPE on the channel, not as a signal that kills us silently. */
    signal(SIGPIPE, SIG_IGN);
    /* Every inherited descriptor but stdin, stdout, stderr, the channel and the logic. */
    if (syscall(SYS_close_range, 5u, ~0u, 0u) != 0)
        for (int fd = 5; fd < 65536; fd++)
            close(fd);
    idevs_err err;
    if ((err = set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE", why, why_len)) != IDEVS_OK ||
        (err = set_limit(RLIMIT_NOFILE, NOFILE_LIMIT, "RLIMIT_NOFILE", why, why_len)) != IDEVS_OK ||
        (err = set_limit(RLIMIT_FSIZE, 0, "RLIMIT_FSIZE", why, why_len)) != IDEVS_OK ||
        (err = set_limit(RLIMIT_NPROC, 0, "RLIMIT_NPROC", why, why_len)) != IDEVS_OK ||
        (err = set_limit(RLIMIT_MEMLOCK, 0, "RLIMIT_MEMLOCK", why, why_len)) != IDEVS_OK)
        return err;
#if !defined(__SANITIZE_ADDRESS__)
    /* AddressSanitizer reserves terabytes of address space for its shadow memory: no limit in its builds. */
    if ((err = set_limit(RLIMIT_AS, ADDRESS_SPACE_LIMIT, "RLIMIT_AS", why, why_len)) != IDEVS_OK)
        return err;
#endif
    return IDEVS_OK;
}

/* ---- layer 2: OpenSSL loaded before the sandbox ---- */

static bool cipher_round(const char *name)
{
    static const uint8_t key[32], iv[12];
    uint8_t in[64] = {0}, out[64], tag[16];
    int n = 0;
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    EVP_CIPHER_CTX *ctx = cipher != NULL ? EVP_CIPHER_CTX_new() : NULL;
    bool ok = ctx != NULL && EVP_CipherInit_ex2(ctx, cipher, key, iv, 1, NULL) == 1 &&
              EVP_CipherUpdate(ctx, NULL, &n, in, 16) == 1 && EVP_CipherUpdate(ctx, out, &n, in, sizeof in) == 1 &&
              EVP_CipherFinal_ex(ctx, out + n, &n) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, sizeof tag, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(cipher);
    return ok;
}

idevs_err sandbox_warm_up_crypto(void)
{
    /* Every algorithm the envelope library uses inside the sandbox, once: the providers' method stores then
     * answer later fetches from memory. X.509 parsing and verification already ran (service certificates). */
    uint8_t buf[64], pub_a[32], pub_b[32], shared[32], sig[64];
    EVP_PKEY *a = NULL, *b = NULL, *ed = NULL;
    bool ok = RAND_bytes(buf, sizeof buf) == 1 && idevs_sha256(buf, sizeof buf, shared) == IDEVS_OK &&
              idevs_hkdf_sha256(buf, 0, buf, 32, buf, 16, shared, sizeof shared) == IDEVS_OK &&
              cipher_round("AES-256-GCM") && cipher_round("ChaCha20-Poly1305") &&
              idevs_x25519_generate(&a, pub_a) == IDEVS_OK && idevs_x25519_from_private(buf, &b, pub_b) == IDEVS_OK &&
              idevs_x25519(a, pub_b, shared) == IDEVS_OK && idevs_ed25519_from_private(buf, &ed, pub_a) == IDEVS_OK &&
              idevs_ed25519_sign(ed, buf, sizeof buf, sig) == IDEVS_OK &&
              idevs_ed25519_verify(pub_a, buf, sizeof buf, sig) == IDEVS_OK;
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    EVP_PKEY_free(ed);
    idevs_cleanse(buf, sizeof buf);
    idevs_cleanse(shared, sizeof shared);
    return ok ? IDEVS_OK : IDEVS_ERR_CRYPTO;
}

/* ---- the SIGSYS report ---- */

#define NAMES_MAX 512
#define NAME_LEN 28
static char syscall_names[NAMES_MAX][NAME_LEN]; /* resolved before the sandbox: the handler cannot allocate */
static uint32_t native_arch;
static const idevs_channel *volatile report_channel;

void sandbox_set_channel(const idevs_channel *ch)
{
    report_channel = ch;
}

static void resolve_names(void)
{
    native_arch = seccomp_arch_native();
    for (int nr = 0; nr < NAMES_MAX; nr++) {
        char *name = seccomp_syscall_resolve_num_arch(native_arch, nr);
        if (name != NULL) {
            size_t n = strlen(name);
            if (n >= NAME_LEN)
                n = NAME_LEN - 1;
            memcpy(syscall_names[nr], name, n);
            free(name);
        }
    }
}

static size_t put_text(uint8_t *p, const char *s)
{
    size_t n = 0;
    while (s[n] != '\0') {
        p[n] = (uint8_t)s[n];
        n++;
    }
    return n;
}

static size_t put_decimal(uint8_t *p, long v)
{
    char digits[24];
    size_t n = 0, k = 0;
    unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        p[k++] = '-';
    while (n > 0)
        p[k++] = (uint8_t)digits[--n];
    return k;
}

static int64_t report_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* async-signal-safe (the vDSO, else an allowed call) */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes all of p[0..n) on the channel, waiting in ppoll for room until deadline_ms. A partial write is
 * followed by the rest: a frame is never left half written while time remains. */
static bool report_write(const uint8_t *p, size_t n, int64_t deadline_ms)
{
    while (n > 0) {
        long w = syscall(SYS_write, CMP_FD_CHANNEL, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return false; /* the launcher is gone */
        int64_t left = deadline_ms - report_now_ms();
        if (left <= 0)
            return false;
        struct pollfd pfd = {.fd = CMP_FD_CHANNEL, .events = POLLOUT};
        struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
        syscall(SYS_ppoll, &pfd, 1, &ts, NULL, (size_t)(_NSIG / 8));
    }
    return true;
}

/* Async-signal-safe: fixed buffers, no allocation, write() and ppoll() only, then exit_group. The frame is
 *   u32 length || Frame{ fatal (14) = Fatal{ status (1) = IDEVS_ERR_SANDBOX_VIOLATION, reason (2) = text } }
 * encoded by hand, as protobuf-c may allocate. */
static void on_sigsys(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)context;
    int nr = info->si_syscall;
    const char *name = "unknown";
    if (info->si_arch != native_arch)
        name = "(of another architecture)";
    else if (nr >= 0 && nr < NAMES_MAX && syscall_names[nr][0] != '\0')
        name = syscall_names[nr];

    uint8_t reason[128];
    size_t r = put_text(reason, "system call ");
    r += put_text(reason + r, name);
    r += put_text(reason + r, " (");
    r += put_decimal(reason + r, nr);
    r += put_text(reason + r, ") outside the sandbox allowlist");

    uint8_t fatal[160];
    size_t f = 0;
    fatal[f++] = 0x08; /* field 1, varint */
    f += raw_frame_varint(fatal + f, IDEVS_ERR_SANDBOX_VIOLATION);
    fatal[f++] = 0x12; /* field 2, length-delimited */
    f += raw_frame_varint(fatal + f, r);
    memcpy(fatal + f, reason, r);
    f += r;

    uint8_t frame[200];
    size_t n = 4;
    frame[n++] = 0x72; /* Frame field 14 (fatal), length-delimited */
    n += raw_frame_varint(frame + n, f);
    memcpy(frame + n, fatal, f);
    n += f;
    size_t body = n - 4;
    frame[0] = (uint8_t)(body >> 24);
    frame[1] = (uint8_t)(body >> 16);
    frame[2] = (uint8_t)(body >> 8);
    frame[3] = (uint8_t)body;

    /* The report must start between two frames, whatever the trap interrupted: first what the send queue still
     * holds (a frame half sent, and whole frames behind it), as cmp_fatal() does, then the report; both wait for
     * a launcher that has not read yet (a full socket), within CMP_FATAL_FLUSH_MS. The queue is consistent at
     * every system call the compartment makes: channel.c changes it only between them. */
    int64_t deadline = report_now_ms() + CMP_FATAL_FLUSH_MS;
    const idevs_channel *ch = report_channel;
    bool ok = true;
    if (ch != NULL && ch->out != NULL && ch->out_off < ch->out_len)
        ok = report_write(ch->out + ch->out_off, ch->out_len - ch->out_off, deadline);
    if (ok)
        report_write(frame, n, deadline);
    syscall(SYS_exit_group, CMP_EXIT_SANDBOX);
}

static idevs_err install_reporter(char *why, size_t why_len)
{
    resolve_names();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigfillset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) != 0) {
        snprintf(why, why_len, "sigaction(SIGSYS): %s", strerror(errno));
        return IDEVS_ERR_SANDBOX;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGSYS);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    return IDEVS_OK;
}

/* ---- layer 3: Landlock ---- */

/* The kernel's structures as of Landlock ABI 6 (Debian 12's headers know ABI 2); the kernel accepts the sizes
 * of older ABIs. */
struct ll_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};
struct ll_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

#define LL_CREATE_RULESET_VERSION (1u << 0)
#define LL_RULE_PATH_BENEATH 1
#define LL_FS_EXECUTE (1ull << 0)
#define LL_FS_READ_FILE (1ull << 2)
#define LL_FS_ABI1 ((1ull << 13) - 1) /* execute .. make_sym */
#define LL_FS_REFER (1ull << 13)      /* ABI 2 */
#define LL_FS_TRUNCATE (1ull << 14)   /* ABI 3 */
#define LL_FS_IOCTL_DEV (1ull << 15)  /* ABI 5 */
#define LL_NET_TCP 0x3ull             /* ABI 4: bind and connect */
#define LL_SCOPE_ABSTRACT_UNIX 0x1ull /* ABI 6: abstract UNIX sockets */
#define LL_SCOPE_SIGNAL 0x2ull        /* ABI 6: signals to processes outside the domain */

/* logic_fd -1: the key holder, whose signals are not scoped: its death must still deliver the logic process's
 * PR_SET_PDEATHSIG (the kernel sends it as the dying key holder, outside the logic process's domain), and its
 * seccomp filter lets it signal nobody anyway. */
static idevs_err apply_landlock(int logic_fd, char *why, size_t why_len)
{
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
    if (abi < 1)
        return IDEVS_OK; /* not in this kernel, or disabled: seccomp alone (docs/COMPARTMENT.md) */
    struct ll_ruleset_attr attr = {0};
    size_t attr_size = sizeof attr.handled_access_fs;
    attr.handled_access_fs = LL_FS_ABI1;
    if (abi >= 2)
        attr.handled_access_fs |= LL_FS_REFER;
    if (abi >= 3)
        attr.handled_access_fs |= LL_FS_TRUNCATE;
    if (abi >= 4) {
        attr.handled_access_net = LL_NET_TCP;
        attr_size = offsetof(struct ll_ruleset_attr, scoped);
    }
    if (abi >= 5)
        attr.handled_access_fs |= LL_FS_IOCTL_DEV;
    if (abi >= 6) {
        attr.scoped = LL_SCOPE_ABSTRACT_UNIX | (logic_fd >= 0 ? LL_SCOPE_SIGNAL : 0);
        attr_size = sizeof attr;
    }
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0u);
    if (ruleset < 0) {
        snprintf(why, why_len, "landlock_create_ruleset: %s", strerror(errno));
        return IDEVS_ERR_SANDBOX;
    }
    /* The one rule, in the logic process: the logic file may be read and executed (the key holder, logic_fd -1,
     * gets none). A logic in a memfd (as the launcher passes it, sealed) lives on an internal filesystem: Landlock
     * refuses rules for those (EBADFD) and does not restrict access to them either, so the ruleset then simply
     * has no rule and the whole filesystem is closed. */
    struct ll_path_beneath_attr rule = {.allowed_access = LL_FS_EXECUTE | LL_FS_READ_FILE, .parent_fd = logic_fd};
    idevs_err err = IDEVS_OK;
    if (logic_fd >= 0 && syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &rule, 0u) != 0 &&
        errno != EBADFD) {
        snprintf(why, why_len, "landlock_add_rule (the logic file): %s", strerror(errno));
        err = IDEVS_ERR_SANDBOX;
    } else if (syscall(SYS_landlock_restrict_self, ruleset, 0u) != 0) {
        snprintf(why, why_len, "landlock_restrict_self: %s", strerror(errno));
        err = IDEVS_ERR_SANDBOX;
    }
    close(ruleset);
    return err;
}

/* ---- layer 4: seccomp ---- */

/* Builds the filter of the rows marked with stage. A process builds its filters before it loads any: building
 * may probe the kernel. */
static idevs_err build_filter(unsigned stage, scmp_filter_ctx *out, char *why, size_t why_len)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
    if (ctx == NULL) {
        snprintf(why, why_len, "seccomp_init failed");
        return IDEVS_ERR_SANDBOX;
    }
    /* System calls of another ABI (int 0x80 on x86-64) trap too, instead of slipping past the rules. No
     * prctl(PR_SET_NO_NEW_PRIVS) from libseccomp: it is set already, and prctl is not allowed. */
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_TRAP);
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    if (rc != 0)
        snprintf(why, why_len, "seccomp_attr_set: %s", strerror(-rc));
    uint64_t self = (uint64_t)getpid();
    for (size_t i = 0; rc == 0 && i < sandbox_allowlist_count; i++) {
        const sandbox_rule *r = &sandbox_allowlist[i];
        if ((r->stages & stage) == 0)
            continue;
        int nr = seccomp_syscall_resolve_name(r->name);
        if (nr == __NR_SCMP_ERROR) {
            snprintf(why, why_len, "seccomp allowlist: unknown system call '%s'", r->name);
            rc = -EINVAL;
            break;
        }
        struct scmp_arg_cmp args[2];
        for (unsigned k = 0; k < r->arg_count; k++) {
            args[k] = r->args[k];
            if (args[k].datum_a == SANDBOX_SELF)
                args[k].datum_a = self;
        }
        rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, r->arg_count, args);
        if (rc != 0)
            snprintf(why, why_len, "seccomp allowlist: rule for '%s': %s", r->name, strerror(-rc));
    }
    if (rc != 0) {
        seccomp_release(ctx);
        return IDEVS_ERR_SANDBOX;
    }
    *out = ctx;
    return IDEVS_OK;
}

static scmp_filter_ctx serving_filter;

static idevs_err load_filter(scmp_filter_ctx ctx, char *why, size_t why_len)
{
    int rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0) {
        snprintf(why, why_len, "seccomp_load: %s", strerror(-rc));
        return IDEVS_ERR_SANDBOX;
    }
    return IDEVS_OK;
}

idevs_err sandbox_enter_key_holder(char *why, size_t why_len)
{
    why[0] = '\0';
    scmp_filter_ctx filter = NULL;
    idevs_err err = install_reporter(why, why_len);
    if (err == IDEVS_OK)
        err = build_filter(SANDBOX_KEY_HOLDER, &filter, why, why_len);
    if (err == IDEVS_OK && (err = apply_landlock(-1, why, why_len)) != IDEVS_OK)
        seccomp_release(filter);
    if (err == IDEVS_OK)
        err = load_filter(filter, why, why_len);
    return err;
}

idevs_err sandbox_enter_loading(int logic_fd, char *why, size_t why_len)
{
    why[0] = '\0';
    scmp_filter_ctx loading = NULL;
    idevs_err err = install_reporter(why, why_len);
    if (err == IDEVS_OK)
        err = build_filter(SANDBOX_LOGIC_LOADING, &loading, why, why_len);
    if (err == IDEVS_OK && (err = build_filter(SANDBOX_LOGIC_SERVING, &serving_filter, why, why_len)) != IDEVS_OK)
        seccomp_release(loading);
    if (err == IDEVS_OK && (err = apply_landlock(logic_fd, why, why_len)) != IDEVS_OK)
        seccomp_release(loading);
    if (err == IDEVS_OK)
        err = load_filter(loading, why, why_len);
    return err;
}

idevs_err sandbox_enter_serving(char *why, size_t why_len)
{
    why[0] = '\0';
    if (serving_filter == NULL) {
        snprintf(why, why_len, "the serving filter was not built");
        return IDEVS_ERR_SANDBOX;
    }
    scmp_filter_ctx ctx = serving_filter;
    serving_filter = NULL;
    return load_filter(ctx, why, why_len);
}

/* idevs-compartment: the attested, sandboxed host program that holds an integration process's keys and runs its
 * logic, as two processes (compartment.h).
 *
 * Started by the launcher with the channel (a socketpair) on descriptor 3 and the logic shared object, opened
 * and measured by the launcher, on descriptor 4. Its life, in this order (docs/COMPARTMENT.md):
 *   1. fork, before anything secret exists: the child becomes the logic process (logic_runner.c), with its link
 *      to the parent on 3 and the logic on 4; the parent, the key holder, keeps the channel on 3 and its link to
 *      the child on 4;
 *   2. key holder: harden (no new privileges, not dumpable, no core, limits, no other descriptors); Init: check
 *      the descriptor against the operator CA and the service certificates; restore or create the keys;
 *      CertifyRequest; Certified: the envelope context (a joiner: certified for temporary keys only);
 *   3. key holder: its sandbox (Landlock with no file, its seccomp filter); a joiner waits there for the
 *      process's keys from another instance, then is certified for them (handshake_join, join.c);
 *   4. the descriptor to the logic process, which hardens itself, enters its sandbox, loads the logic, enters
 *      its final filter and runs setup(); its LogicReady; Ready to the launcher; serve deliveries and timers
 *      until Shutdown. */
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "compartment.h"

static compartment the_compartment;

int64_t cmp_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cmp_report_fatal(idevs_channel *ch, idevs_err status, const char *fmt, va_list ap)
{
    char reason[512];
    int n = vsnprintf(reason, sizeof reason, fmt, ap);
    if (n < 0)
        reason[0] = '\0';
    Idevs__Bridge__V1__Fatal fatal = IDEVS__BRIDGE__V1__FATAL__INIT;
    fatal.status = (uint32_t)status;
    fatal.reason = reason;
    Idevs__Bridge__V1__Frame frame = IDEVS__BRIDGE__V1__FRAME__INIT;
    frame.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_FATAL;
    frame.fatal = &fatal;
    if (ch->fd >= 0 && idevs_channel_send(ch, &frame, CMP_FATAL_FLUSH_MS) == IDEVS_OK)
        idevs_channel_flush(ch, CMP_FATAL_FLUSH_MS);
}

void cmp_fatal(compartment *c, idevs_err status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cmp_report_fatal(&c->ch, status, fmt, ap);
    va_end(ap);
    /* The keys live in this process only: leave nothing behind. _exit, not exit: inside the sandbox, atexit
     * handlers (OpenSSL's, the sanitizers') would make system calls the allowlist does not have. The logic
     * process dies with us (PR_SET_PDEATHSIG). */
    idevs_envelope_ctx_free(c->env);
    idevs_identity_free(c->self);
    /* A violation in the logic process ends the compartment as one in the key holder would. */
    _exit(status == IDEVS_ERR_SANDBOX_VIOLATION ? CMP_EXIT_SANDBOX : CMP_EXIT_FATAL);
}

static bool fd_is(int fd, mode_t type)
{
    struct stat st;
    return fcntl(fd, F_GETFD) >= 0 && fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == type;
}

static void usage_check(void)
{
    /* Descriptors 3 (the channel) and 4 (the logic) must be open; 0-2 may be anything, even closed. */
    if (fd_is(CMP_FD_CHANNEL, S_IFSOCK) && fd_is(CMP_FD_LOGIC, S_IFREG))
        return;
    static const char msg[] = "idevs-compartment: started by the idevs launcher only (channel on fd 3, logic on fd 4)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(CMP_EXIT_USAGE);
}

/* Step 1: the fork. Returns in the key holder; the child never returns. */
static void split(void)
{
    int sv[2];
    pid_t parent = getpid();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        _exit(CMP_EXIT_USAGE);
    pid_t pid = fork();
    if (pid < 0)
        _exit(CMP_EXIT_USAGE);
    if (pid == 0) {
        /* The logic process: its link to the key holder replaces the launcher's channel on 3. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent || dup2(sv[1], CMP_FD_CHANNEL) < 0)
            _exit(CMP_EXIT_USAGE);
        close(sv[0]);
        close(sv[1]);
        logic_runner_main();
    }
    /* The key holder: its link to the logic process replaces the logic file on 4; it never maps the logic. */
    if (dup2(sv[0], CMP_FD_LOGIC_LINK) < 0)
        _exit(CMP_EXIT_USAGE);
    close(sv[0]);
    close(sv[1]);
}

int main(int argc, char **argv)
{
    (void)argv;
    compartment *c = &the_compartment;
    c->ch.fd = -1;
    if (argc != 1) {
        static const char msg[] = "idevs-compartment takes no arguments\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        return CMP_EXIT_USAGE;
    }
    usage_check();
    split();

    char why[512];
    idevs_channel_init(&c->ch, CMP_FD_CHANNEL, 0);
    logic_link_init(&c->link, c); /* fcntl (non-blocking): before the sandbox */
    if (sandbox_harden_process(why, sizeof why) != IDEVS_OK)
        cmp_fatal(c, IDEVS_ERR_SANDBOX, "%s", why);
    /* OpenSSL without its configuration file: what runs in here is what was measured, not what a file or the
     * environment (OPENSSL_CONF) would load. */
    if (OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL) != 1)
        cmp_fatal(c, IDEVS_ERR_CRYPTO, "OpenSSL failed to initialise");

    handshake_run(c);

    if (sandbox_warm_up_crypto() != IDEVS_OK)
        cmp_fatal(c, IDEVS_ERR_CRYPTO, "OpenSSL failed to load an algorithm before the sandbox");
    sandbox_set_channel(&c->ch);
    if (sandbox_enter_key_holder(why, sizeof why) != IDEVS_OK)
        cmp_fatal(c, IDEVS_ERR_SANDBOX, "%s", why);
    if (c->joining)
        handshake_join(c);
    logic_link_setup(&c->link);

    Idevs__Bridge__V1__Ready ready = IDEVS__BRIDGE__V1__READY__INIT;
    ready.abi = c->link.abi;
    ready.logic_name = c->link.logic_name;
    Idevs__Bridge__V1__Frame frame = IDEVS__BRIDGE__V1__FRAME__INIT;
    frame.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_READY;
    frame.ready = &ready;
    idevs_err err;
    if ((err = idevs_channel_send(&c->ch, &frame, CMP_HANDSHAKE_TIMEOUT_MS)) != IDEVS_OK ||
        (err = idevs_channel_flush(&c->ch, CMP_HANDSHAKE_TIMEOUT_MS)) != IDEVS_OK)
        cmp_fatal(c, err, "cannot send Ready: %s", idevs_strerror(err));

    int status = serve_run(c);

    idevs_envelope_ctx_free(c->env);
    idevs_identity_free(c->self);
    idevs_cert_policy_free(c->policy);
    X509_free(c->operator_ca);
    idevs_deployment_free(c->dep);
    free(c->descriptor);
    /* Buffers cleansed and freed; the descriptor is left to _exit (close is not in the serving allowlist). */
    c->ch.fd = -1;
    idevs_channel_close(&c->ch);
    _exit(status); /* see cmp_fatal: no atexit handlers inside the sandbox */
}

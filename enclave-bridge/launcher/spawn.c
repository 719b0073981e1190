/* Starting the compartment from a process with many descriptors and signal handlers (a broker).
 *
 * The parent prepares everything that allocates or may block: /dev/null, the socketpair, an error pipe, the
 * argument and environment arrays, the user to become. Every descriptor the child needs is first moved above
 * the numbers it will be given, so that no dup2() in the child overwrites another source. Signals are blocked
 * around fork() so that no handler of the broker runs in the child. The child then makes only
 * async-signal-safe calls or plain system calls (setsid, prctl, setrlimit, setgroups, close_range): it resets
 * every signal disposition, leaves the broker's session, takes the channel as fd 3 and the logic as fd 4,
 * /dev/null as 0-2, closes everything else, disables core files, drops to the unprivileged user when it runs as
 * root, and executes the sealed host program memfd with an empty environment (fexecve, or execve of its
 * /proc/self/fd path where execveat is missing).
 *
 * An error pipe (close-on-exec) tells the parent whether execution began: end of file means it did; eight bytes
 * name the failed step and its errno. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher_internal.h"

#define SPAWN_CHANNEL_BUFFER (4 * 1024 * 1024) /* bytes each end of the channel may have in the socket */

#define SRC_FD_MIN 16      /* sources are moved at or above this before fork */
#define FD_CHANNEL 3
#define FD_LOGIC 4
#define FD_EXEC 5          /* the host memfd, close-on-exec */
#define STRINGIFY(x) #x
#define PROC_FD(n) "/proc/self/fd/" STRINGIFY(n)
#define FD_ERRPIPE 6       /* close-on-exec */
#define EXEC_REPORT_MS 5000 /* the child reaches execve in well under a millisecond; this only bounds a stuck one */

enum step { STEP_SIGNALS = 1, STEP_SETSID, STEP_PDEATHSIG, STEP_RLIMIT, STEP_NO_NEW_PRIVS, STEP_SETGROUPS,
            STEP_SETGID, STEP_SETUID, STEP_DUP2, STEP_CLOSE, STEP_EXEC };

static const char *step_name(int step)
{
    switch (step) {
    case STEP_SIGNALS: return "resetting signals";
    case STEP_SETSID: return "setsid";
    case STEP_PDEATHSIG: return "prctl(PR_SET_PDEATHSIG)";
    case STEP_RLIMIT: return "setrlimit(RLIMIT_CORE)";
    case STEP_NO_NEW_PRIVS: return "prctl(PR_SET_NO_NEW_PRIVS)";
    case STEP_SETGROUPS: return "setgroups";
    case STEP_SETGID: return "setgid";
    case STEP_SETUID: return "setuid";
    case STEP_DUP2: return "dup2";
    case STEP_CLOSE: return "closing inherited descriptors";
    case STEP_EXEC: return "fexecve";
    default: return "an unknown step";
    }
}

/* ---- the child: async-signal-safe from here to _exit/fexecve ---- */

static void child_fail(int step)
{
    int report[2] = {step, errno};
    ssize_t ignored = write(FD_ERRPIPE, report, sizeof report);
    (void)ignored;
    _exit(127);
}

static int move_to(int from, int to, bool cloexec)
{
    if (dup2(from, to) != to)
        return -1;
    return cloexec ? fcntl(to, F_SETFD, FD_CLOEXEC) : 0;
}

struct child_args {
    int channel, logic, host, devnull, errw;
    pid_t parent;
    bool drop;
    uid_t uid;
    gid_t gid;
    int max_fd;
    char *const *argv;
    char *const *envp;
};

static void child_main(const struct child_args *a)
{
    /* The error pipe first, so that every later failure can be reported. */
    if (move_to(a->errw, FD_ERRPIPE, true) != 0)
        _exit(127);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL); /* EINVAL for numbers the kernel reserves: harmless */
    if (setsid() < 0)
        child_fail(STEP_SETSID);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        child_fail(STEP_PDEATHSIG);
    if (getppid() != a->parent) /* the launcher died before PDEATHSIG was armed */
        _exit(127);
    struct rlimit no_core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &no_core) != 0)
        child_fail(STEP_RLIMIT);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        child_fail(STEP_NO_NEW_PRIVS);
    if (a->drop) {
        if (setgroups(0, NULL) != 0)
            child_fail(STEP_SETGROUPS);
        if (setgid(a->gid) != 0)
            child_fail(STEP_SETGID);
        if (setuid(a->uid) != 0)
            child_fail(STEP_SETUID);
        if (setuid(0) == 0) { /* the drop must be irreversible */
            errno = EPERM;
            child_fail(STEP_SETUID);
        }
    }
    if (move_to(a->channel, FD_CHANNEL, false) != 0 || move_to(a->logic, FD_LOGIC, false) != 0 ||
        move_to(a->host, FD_EXEC, true) != 0 || move_to(a->devnull, 0, false) != 0 ||
        move_to(a->devnull, 1, false) != 0 || move_to(a->devnull, 2, false) != 0)
        child_fail(STEP_DUP2);
    /* The logic memfd's open file description is shared with the launcher and earlier children: rewind it. */
    if (lseek(FD_LOGIC, 0, SEEK_SET) != 0)
        child_fail(STEP_DUP2);
    if (close_range(FD_ERRPIPE + 1, ~0U, 0) != 0) {
        if (errno != ENOSYS && errno != EINVAL)
            child_fail(STEP_CLOSE);
        for (int fd = FD_ERRPIPE + 1; fd < a->max_fd; fd++)
            close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0)
        child_fail(STEP_SIGNALS);
    fexecve(FD_EXEC, a->argv, a->envp);
    /* Without execveat (ENOSYS: an old kernel; ENOENT: valgrind 3.19 runs the broker), the same sealed memfd by
     * its /proc path: the kernel opens it before closing FD_EXEC (close-on-exec). The first error is reported. */
    if (errno == ENOSYS || errno == ENOENT) {
        int first = errno;
        execve(PROC_FD(FD_EXEC), a->argv, a->envp);
        errno = first;
    }
    child_fail(STEP_EXEC);
}

/* ---- the parent ---- */

static int above(int fd)
{
    if (fd >= SRC_FD_MIN)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, SRC_FD_MIN);
    return moved;
}

static void close_if(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Reaps pid, waiting for it (used only for a child known to exit at once). */
static void reap(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

idevs_err launcher_spawn(const launcher_spawn_spec *spec, idevs_child *out, char *why, size_t why_len)
{
    out->pid = 0;
    out->pidfd = -1;
    out->channel_fd = -1;
    int sv[2] = {-1, -1}, errp[2] = {-1, -1}, devnull = -1, logic = -1, host = -1, child_ch = -1, errw = -1;
    idevs_err err = IDEVS_ERR_SPAWN;

    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        snprintf(why, why_len, "cannot open /dev/null: %s", strerror(errno));
        goto fail;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(why, why_len, "socketpair: %s", strerror(errno));
        goto fail;
    }
    /* Large frames move between the broker's polls by what the socket holds: as much as the host allows
     * (net.core.wmem_max), up to SPAWN_CHANNEL_BUFFER; the default stays where the host says less. */
    for (int i = 0; i < 2; i++)
        (void)setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &(int){SPAWN_CHANNEL_BUFFER}, sizeof(int));
    if (pipe2(errp, O_CLOEXEC) != 0) {
        snprintf(why, why_len, "pipe2: %s", strerror(errno));
        goto fail;
    }
    /* Sources above the target numbers (the originals stay where they are and are closed in the child). */
    child_ch = above(sv[1]);
    errw = above(errp[1]);
    logic = fcntl(spec->logic_fd, F_DUPFD_CLOEXEC, SRC_FD_MIN);
    host = fcntl(spec->host_fd, F_DUPFD_CLOEXEC, SRC_FD_MIN);
    int dn = above(devnull);
    if (dn != devnull) {
        close(devnull);
        devnull = dn; /* -1 when the move failed: reported below */
    }
    if (child_ch != sv[1] && child_ch >= 0)
        close_if(&sv[1]);
    if (errw != errp[1] && errw >= 0)
        close_if(&errp[1]);
    if (child_ch < 0 || errw < 0 || logic < 0 || host < 0 || devnull < 0) {
        snprintf(why, why_len, "duplicating descriptors: %s", strerror(errno));
        goto fail;
    }
    sv[1] = -1;    /* now child_ch */
    errp[1] = -1;  /* now errw */

    struct rlimit nofile;
    int max_fd = 65536;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY && nofile.rlim_cur < 1048576)
        max_fd = (int)nofile.rlim_cur;
    char *argv[] = {(char *)spec->argv0, NULL};
    char *envp[] = {NULL};
    struct child_args a = {
        .channel = child_ch, .logic = logic, .host = host, .devnull = devnull, .errw = errw,
        .parent = getpid(), .drop = spec->drop, .uid = spec->uid, .gid = spec->gid, .max_fd = max_fd,
        .argv = argv, .envp = envp,
    };

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        child_main(&a); /* does not return */
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        snprintf(why, why_len, "fork: %s", strerror(fork_errno));
        goto fail;
    }
    close_if(&child_ch);
    close_if(&errw);
    close_if(&logic);
    close_if(&host);
    close_if(&devnull);

    /* Did execution begin? */
    int report[2] = {0, 0};
    size_t got = 0;
    for (;;) {
        struct pollfd p = {.fd = errp[0], .events = POLLIN};
        int n = poll(&p, 1, EXEC_REPORT_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            kill(pid, SIGKILL);
            reap(pid);
            snprintf(why, why_len, "the child did not reach fexecve within %d ms", EXEC_REPORT_MS);
            goto fail;
        }
        ssize_t r = read(errp[0], (uint8_t *)report + got, sizeof report - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof report)
            break;
    }
    close_if(&errp[0]);
    if (got != 0) {
        reap(pid);
        if (got == sizeof report)
            snprintf(why, why_len, "starting the host program failed at %s: %s", step_name(report[0]),
                     strerror(report[1]));
        else
            snprintf(why, why_len, "starting the host program failed");
        goto fail;
    }

    out->pid = pid;
    out->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (out->pidfd >= 0)
        fcntl(out->pidfd, F_SETFD, FD_CLOEXEC);
    else
        out->pidfd = -1; /* older kernel: the launcher falls back to waitpid(WNOHANG) */
    out->channel_fd = sv[0];
    return IDEVS_OK;

fail:
    close_if(&sv[0]);
    close_if(&sv[1]);
    close_if(&errp[0]);
    close_if(&errp[1]);
    close_if(&child_ch);
    close_if(&errw);
    close_if(&logic);
    close_if(&host);
    close_if(&devnull);
    return err;
}

/* THE list of system calls each process of an idevs compartment may make once it is sandboxed. Anything else
 * traps: the SIGSYS handler (sandbox.c) reports the call on descriptor 3 in a Fatal frame (the key holder's goes
 * to the launcher; the logic process's to the key holder, which passes it on) and the process exits.
 *
 * Three filters, one column each:
 *   KEY_HOLDER     the key holder's only filter: its channel to the launcher (3), its link to the logic process
 *                  (4), memory, time, randomness for sealing. It never maps new code.
 *   LOGIC_LOADING  the logic process's first filter, installed before the logic is loaded: what serving needs
 *                  plus what the dynamic loader needs to map the logic (its constructors run under this filter,
 *                  and under Landlock, which lets them read nothing but the logic file).
 *   LOGIC_SERVING  the logic process's second filter, installed right after loading and before setup(). The two
 *                  are stacked, so a call must be allowed by both: every LOGIC_SERVING row is a LOGIC_LOADING row.
 * The logic process gets the least: only its link to the key holder (3), no randomness, no other descriptor.
 *
 * What is NOT here, on purpose: open/openat (no filesystem), socket/connect/bind and sendto with an address (no
 * network), execve/execveat, fork/vfork/clone (no new processes or threads), ptrace, process_vm_*, kill of other
 * processes, rt_sigaction (the logic must not replace the SIGSYS reporter), ioctl, mount, prctl, seccomp itself,
 * and write or read on any descriptor but the ones named.
 *
 * Reviewing a change to this file is reviewing the sandbox. Keep one row per reason. */
#include <fcntl.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/mman.h>

#include "compartment.h"

/* Argument comparisons, spelled out (SCMP_A0 and friends are compound literals, not constants). */
#define ARG_EQ(n, v) {.arg = (n), .op = SCMP_CMP_EQ, .datum_a = (v), .datum_b = 0}
#define ARG_MASK_EQ(n, mask, v) {.arg = (n), .op = SCMP_CMP_MASKED_EQ, .datum_a = (mask), .datum_b = (v)}

/* openat flags that would write, create or truncate. */
#define OPEN_WRITE_FLAGS (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_TMPFILE)

const sandbox_rule sandbox_allowlist[] = {
    /* ---- descriptor 3: the key holder's channel to the launcher; the logic process's link to the key holder ---- */
    /* Frames from the launcher; events from the key holder. */
    {"read", SANDBOX_KEY_HOLDER | SANDBOX_LOGIC_SERVING, 1, {ARG_EQ(0, CMP_FD_CHANNEL)}},
    /* Frames out: send(fd 3, ..., MSG_NOSIGNAL) is sendto without an address. */
    {"sendto", SANDBOX_ALL, 2, {ARG_EQ(0, CMP_FD_CHANNEL), ARG_EQ(4, 0)}},
    /* The SIGSYS report. Not stdout or stderr: they may lead to a log. */
    {"write", SANDBOX_ALL, 1, {ARG_EQ(0, CMP_FD_CHANNEL)}},

    /* ---- descriptor 4 of the key holder: its link to the logic process ---- */
    {"read", SANDBOX_KEY_HOLDER, 1, {ARG_EQ(0, CMP_FD_LOGIC_LINK)}},
    {"sendto", SANDBOX_KEY_HOLDER, 2, {ARG_EQ(0, CMP_FD_LOGIC_LINK), ARG_EQ(4, 0)}},

    /* Waiting for frames, for a send queue to drain, and for the next timer (glibc uses either). */
    {"poll", SANDBOX_ALL, 0, {{0}}},
    {"ppoll", SANDBOX_ALL, 0, {{0}}},
    /* Resumes a poll stopped by SIGSTOP, a cgroup freeze or ptrace: that call only, with its checked arguments. */
    {"restart_syscall", SANDBOX_ALL, 0, {{0}}},

    /* ---- memory: malloc, OpenSSL, protobuf-c; never executable memory after loading ---- */
    {"brk", SANDBOX_ALL, 0, {{0}}},
    {"mmap", SANDBOX_KEY_HOLDER | SANDBOX_LOGIC_SERVING, 1, {ARG_MASK_EQ(2, PROT_EXEC, 0)}},
    {"mprotect", SANDBOX_KEY_HOLDER | SANDBOX_LOGIC_SERVING, 1, {ARG_MASK_EQ(2, PROT_EXEC, 0)}},
    {"munmap", SANDBOX_ALL, 0, {{0}}},
    {"mremap", SANDBOX_ALL, 0, {{0}}}, /* realloc of large blocks */
    {"madvise", SANDBOX_ALL, 0, {{0}}}, /* free() returning memory */

    /* ---- time and randomness ---- */
    /* Epoch numbers, certificate validity, timers, the logic's own clock. Normally the vDSO's, without a call. */
    {"clock_gettime", SANDBOX_ALL, 0, {{0}}},
    {"gettimeofday", SANDBOX_ALL, 0, {{0}}},
    {"time", SANDBOX_ALL, 0, {{0}}},
    /* OpenSSL's DRBG reseeds from the kernel: message ids, ephemeral keys. The key holder's only. */
    {"getrandom", SANDBOX_KEY_HOLDER, 0, {{0}}},

    /* ---- leaving ---- */
    {"exit_group", SANDBOX_ALL, 0, {{0}}},
    {"exit", SANDBOX_ALL, 0, {{0}}},
    /* Returning from a signal handler (none returns today; the sanitizers' may). */
    {"rt_sigreturn", SANDBOX_ALL, 0, {{0}}},
    /* abort(): glibc blocks signals, then sends SIGABRT to itself only, so that a failed assertion in the logic
     * ends as an abort and not as a misleading sandbox report. tgkill's first argument is checked to be this
     * process by sandbox.c (SANDBOX_SELF). */
    {"rt_sigprocmask", SANDBOX_ALL, 0, {{0}}},
    {"getpid", SANDBOX_ALL, 0, {{0}}},
    {"gettid", SANDBOX_ALL, 0, {{0}}},
    {"tgkill", SANDBOX_ALL, 2, {ARG_EQ(0, SANDBOX_SELF), ARG_EQ(2, SIGABRT)}},

    /* ---- loading the logic: dlopen("/proc/self/fd/4"), the logic process's first filter only ---- */
    /* Opening the logic file read-only; Landlock (where the kernel has it) limits this to that one file. */
    {"openat", SANDBOX_LOGIC_LOADING, 1, {ARG_MASK_EQ(2, OPEN_WRITE_FLAGS, 0)}},
    {"read", SANDBOX_LOGIC_LOADING, 0, {{0}}},
    {"pread64", SANDBOX_LOGIC_LOADING, 0, {{0}}},
    {"fstat", SANDBOX_LOGIC_LOADING, 0, {{0}}},
    {"newfstatat", SANDBOX_LOGIC_LOADING, 0, {{0}}},
    {"lseek", SANDBOX_LOGIC_LOADING, 0, {{0}}},
    {"close", SANDBOX_LOGIC_LOADING, 0, {{0}}},
    /* Installing the second filter (seccomp(SECCOMP_SET_MODE_FILTER, ...)); a filter can only restrict more. */
    {"seccomp", SANDBOX_LOGIC_LOADING, 1, {ARG_EQ(0, SECCOMP_SET_MODE_FILTER)}},
    /* Mapping its code executable. */
    {"mmap", SANDBOX_LOGIC_LOADING, 0, {{0}}},
    {"mprotect", SANDBOX_LOGIC_LOADING, 0, {{0}}},

#if defined(__SANITIZE_ADDRESS__)
    /* ---- AddressSanitizer builds only (tests) ---- */
    /* Its error reports go to stderr; without this row a memory error in the compartment would show up as a
     * sandbox report about write(2) instead of the sanitizer's own. */
    {"write", SANDBOX_ALL, 1, {ARG_EQ(0, 2)}},
    /* It removes its alternate signal stack when the process ends (seen as a trap at every exit without this
     * row). Otherwise its allocator needs only the memory rows above; the test suite runs the compartment
     * under it. */
    {"sigaltstack", SANDBOX_ALL, 0, {{0}}},
#endif
};

const size_t sandbox_allowlist_count = sizeof sandbox_allowlist / sizeof sandbox_allowlist[0];

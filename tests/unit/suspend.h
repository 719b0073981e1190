/* Stopping and continuing a process from outside, the three ways an operator or the system does it: SIGSTOP and
 * SIGCONT, a cgroup v2 freeze (cgroup.freeze), and a debugger's attach (PTRACE_SEIZE, PTRACE_INTERRUPT, detach).
 * For the tests of a compartment that must survive them (tests/unit/test_compartment.c, test_launcher.c). */
#ifndef IDEVS_TEST_SUSPEND_H
#define IDEVS_TEST_SUSPEND_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef enum suspend_how { SUSPEND_SIGSTOP, SUSPEND_CGROUP_FREEZE, SUSPEND_PTRACE } suspend_how;

/* "SIGSTOP and SIGCONT", "a cgroup v2 freeze", "a ptrace attach". */
const char *suspend_name(suspend_how how);

/* Waits (at most 5 s) until pid sleeps (state S in /proc/<pid>/stat), i.e. waits in a system call; false if not. */
bool suspend_wait_sleeping(pid_t pid);

/* Stops pid, checks that it is stopped, keeps it so for ms milliseconds and lets it go on. Returns false, with
 * the reason in why, when this machine does not allow that way (no writable cgroup v2 hierarchy, no permission
 * to trace): the caller skips. Anything unexpected fails the current test (CUnit). The ptrace way makes the
 * caller the tracer for a moment: nothing else may wait for pid meanwhile. */
bool suspend_for(pid_t pid, suspend_how how, int ms, char *why, size_t why_len);

/* Prints the line of a test that skips a way this machine does not allow. */
void suspend_skipped(suspend_how how, const char *why);

#endif

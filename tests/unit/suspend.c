/* Stopping and continuing a process from outside (suspend.h). Every wait is bounded. */
#include "suspend.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#define SUSPEND_WAIT_MS 5000

const char *suspend_name(suspend_how how)
{
    switch (how) {
    case SUSPEND_SIGSTOP: return "SIGSTOP and SIGCONT";
    case SUSPEND_CGROUP_FREEZE: return "a cgroup v2 freeze";
    case SUSPEND_PTRACE: return "a ptrace attach";
    }
    return "?";
}

void suspend_skipped(suspend_how how, const char *why)
{
    printf("\n    SKIPPED (%s): %s ", suspend_name(how), why);
    fflush(stdout);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The state letter of /proc/<pid>/stat (R, S, T, t, Z...), 0 when unknown. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* the command name may contain anything */
    return paren != NULL && paren[1] == ' ' ? paren[2] : 0;
}

/* Waits until the state of pid is (or, with !is, is no longer) one of states. */
static bool wait_state(pid_t pid, const char *states, bool is)
{
    for (int waited = 0; waited < SUSPEND_WAIT_MS; waited += 2) {
        char s = proc_state(pid);
        if (s != 0 && (strchr(states, s) != NULL) == is)
            return true;
        sleep_ms(2);
    }
    return false;
}

bool suspend_wait_sleeping(pid_t pid)
{
    return wait_state(pid, "S", true);
}

static bool by_signals(pid_t pid, int ms)
{
    CU_ASSERT_EQUAL_FATAL(kill(pid, SIGSTOP), 0);
    bool stopped = wait_state(pid, "T", true);
    CU_ASSERT(stopped);
    sleep_ms(ms);
    CU_ASSERT_EQUAL(kill(pid, SIGCONT), 0);
    CU_ASSERT(wait_state(pid, "T", false));
    return true;
}

/* ---- cgroup v2 ---- */

/* The mount point of the cgroup v2 hierarchy (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid systems). */
static bool cgroup2_mount(char *out, size_t len)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096];
    bool found = false;
    while (!found && f != NULL && fgets(line, sizeof line, f) != NULL) {
        char mount_point[1024], fstype[64];
        const char *dash = strstr(line, " - ");
        if (dash != NULL && sscanf(dash, " - %63s", fstype) == 1 && strcmp(fstype, "cgroup2") == 0 &&
            sscanf(line, "%*s %*s %*s %*s %1023s", mount_point) == 1) {
            snprintf(out, len, "%s", mount_point);
            found = true;
        }
    }
    if (f != NULL)
        fclose(f);
    return found;
}

/* This process's cgroup v2 directory: the mount point and the "0::" line of /proc/self/cgroup. */
static bool own_cgroup(char *out, size_t len)
{
    char mount_point[1024], line[2048], path[1024] = "";
    if (!cgroup2_mount(mount_point, sizeof mount_point))
        return false;
    FILE *f = fopen("/proc/self/cgroup", "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "0::", 3) == 0 && sscanf(line + 3, "%1023s", path) == 1)
            break;
    if (f != NULL)
        fclose(f);
    if (path[0] != '/')
        return false;
    snprintf(out, len, "%s%s", mount_point, strcmp(path, "/") == 0 ? "" : path);
    return true;
}

static int write_text(const char *dir, const char *file, const char *text)
{
    char path[2200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return errno;
    int err = fputs(text, f) < 0 ? errno : 0;
    if (fclose(f) != 0 && err == 0)
        err = errno;
    return err;
}

/* Waits until cgroup.events says "frozen 1" (or "frozen 0"). */
static bool wait_frozen(const char *dir, bool frozen)
{
    char path[2200], line[128], want[16];
    snprintf(path, sizeof path, "%s/cgroup.events", dir);
    snprintf(want, sizeof want, "frozen %d", frozen ? 1 : 0);
    for (int waited = 0; waited < SUSPEND_WAIT_MS; waited += 2) {
        FILE *f = fopen(path, "r");
        bool seen = false;
        while (!seen && f != NULL && fgets(line, sizeof line, f) != NULL)
            seen = strncmp(line, want, strlen(want)) == 0;
        if (f != NULL)
            fclose(f);
        if (seen)
            return true;
        sleep_ms(2);
    }
    return false;
}

static bool by_cgroup_freeze(pid_t pid, int ms, char *why, size_t why_len)
{
    static unsigned serial;
    char parent[1200], dir[1300], text[32];
    if (!own_cgroup(parent, sizeof parent)) {
        snprintf(why, why_len, "no cgroup v2 hierarchy is mounted (/proc/self/mountinfo)");
        return false;
    }
    snprintf(dir, sizeof dir, "%s/idevs-test-%d-%u", parent, (int)getpid(), serial++);
    if (mkdir(dir, 0755) != 0) {
        snprintf(why, why_len, "cannot create a cgroup (mkdir %s: %s)", dir, strerror(errno));
        return false;
    }
    snprintf(text, sizeof text, "%d\n", (int)pid);
    int err = 0;
    char file[1400];
    snprintf(file, sizeof file, "%s/cgroup.freeze", dir);
    if (access(file, W_OK) != 0) {
        snprintf(why, why_len, "this kernel's cgroups have no cgroup.freeze (Linux < 5.2)");
        rmdir(dir);
        return false;
    }
    if ((err = write_text(dir, "cgroup.procs", text)) != 0) {
        snprintf(why, why_len, "cannot move the process into %s: %s", dir, strerror(err));
        rmdir(dir);
        return false;
    }
    CU_ASSERT_EQUAL(write_text(dir, "cgroup.freeze", "1\n"), 0);
    CU_ASSERT(wait_frozen(dir, true));
    sleep_ms(ms);
    CU_ASSERT_EQUAL(write_text(dir, "cgroup.freeze", "0\n"), 0);
    CU_ASSERT(wait_frozen(dir, false));
    /* Back where it came from, so that the cgroup can go. */
    CU_ASSERT_EQUAL(write_text(parent, "cgroup.procs", text), 0);
    CU_ASSERT_EQUAL(rmdir(dir), 0);
    return true;
}

/* ---- a debugger ---- */

static bool by_ptrace(pid_t pid, int ms, char *why, size_t why_len)
{
    if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) != 0) {
        snprintf(why, why_len, "PTRACE_SEIZE refused: %s", strerror(errno));
        return false;
    }
    CU_ASSERT_EQUAL(ptrace(PTRACE_INTERRUPT, pid, NULL, NULL), 0);
    int status = 0;
    pid_t r = 0;
    for (int waited = 0; r == 0 && waited < SUSPEND_WAIT_MS; waited += 2) {
        r = waitpid(pid, &status, __WALL | WNOHANG);
        if (r == 0)
            sleep_ms(2);
    }
    CU_ASSERT_EQUAL(r, pid);
    CU_ASSERT(WIFSTOPPED(status) && (status >> 16) == PTRACE_EVENT_STOP);
    sleep_ms(ms);
    CU_ASSERT_EQUAL(ptrace(PTRACE_DETACH, pid, NULL, NULL), 0);
    return true;
}

bool suspend_for(pid_t pid, suspend_how how, int ms, char *why, size_t why_len)
{
    why[0] = '\0';
    switch (how) {
    case SUSPEND_SIGSTOP: return by_signals(pid, ms);
    case SUSPEND_CGROUP_FREEZE: return by_cgroup_freeze(pid, ms, why, why_len);
    case SUSPEND_PTRACE: return by_ptrace(pid, ms, why, why_len);
    }
    snprintf(why, why_len, "unknown way");
    return false;
}

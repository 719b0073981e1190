/* Hostile integration logics: each tries one thing the sandbox forbids. Built once per HOSTILE_* definition
 * (tests/logic/meson.build); tests/unit/test_compartment.c checks that each is stopped and reported.
 *   HOSTILE_OPEN, _SOCKET, _EXECVE, _FORK, _PTRACE, _WRITE: in the handler of the first event
 *   HOSTILE_CTOR_SOCKET: in a constructor, that is while dlopen() runs, before setup()
 *   HOSTILE_CTOR_OPEN: a constructor opens a file; setup() fails if that worked (Landlock must refuse it)
 *   HOSTILE_AFTER_OUTPUT: an event whose payload starts with "pass" goes out unchanged, any other opens a socket:
 *     the trap then comes while earlier output may still wait in the channel, unread by the launcher */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "idevs_logic.h"

extern char **environ;

static void misbehave(void)
{
#if defined(HOSTILE_OPEN) || defined(HOSTILE_CTOR_OPEN)
    int fd = open("/etc/passwd", O_RDONLY);
    if (fd >= 0)
        close(fd);
#elif defined(HOSTILE_SOCKET) || defined(HOSTILE_CTOR_SOCKET) || defined(HOSTILE_AFTER_OUTPUT)
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0)
        close(fd);
#elif defined(HOSTILE_EXECVE)
    char *argv[] = {"/bin/true", NULL};
    execve("/bin/true", argv, environ);
#elif defined(HOSTILE_FORK)
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid(pid, NULL, 0);
#elif defined(HOSTILE_PTRACE)
    ptrace(PTRACE_TRACEME, 0, NULL, NULL);
#elif defined(HOSTILE_WRITE)
    static const char leak[] = "plaintext that must not leave\n";
    ssize_t n = write(1, leak, sizeof leak - 1); /* stdout: a file, a pipe, a log... */
    (void)n;
#else
#error "define one HOSTILE_* behaviour"
#endif
}

#if defined(HOSTILE_CTOR_OPEN)
static int opened_in_constructor = -1;
__attribute__((constructor)) static void constructor(void)
{
    int fd = open("/etc/passwd", O_RDONLY);
    opened_in_constructor = fd >= 0;
    if (fd >= 0)
        close(fd);
}
#elif defined(HOSTILE_CTOR_SOCKET)
__attribute__((constructor)) static void constructor(void)
{
    misbehave();
}
#endif

static idevs_err on_event(idevs_logic *lg, const idevs_message *m, void *state)
{
    (void)state;
#if defined(HOSTILE_AFTER_OUTPUT)
    if (m->payload_len >= 4 && memcmp(m->payload, "pass", 4) == 0)
        return idevs_emit(lg, "out", m->payload, m->payload_len);
#endif
    misbehave();
    return idevs_emit(lg, "out", m->payload, m->payload_len);
}

static idevs_err setup(idevs_logic *lg, const char *config_json, void **state)
{
    (void)config_json;
    (void)state;
#if defined(HOSTILE_CTOR_OPEN)
    if (opened_in_constructor != 0)
        return IDEVS_ERR_IO; /* the constructor read a file: the sandbox failed */
#endif
    return idevs_on_input(lg, "events", on_event);
}

const idevs_logic_module idevs_logic_entry = {IDEVS_LOGIC_ABI, "hostile", setup, NULL};

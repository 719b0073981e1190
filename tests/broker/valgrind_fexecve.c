/* Preloaded into the broker only for the valgrind run (test_plugin_valgrind.sh). Valgrind 3.19 (Debian 12) does
 * not implement execveat, which glibc's fexecve uses: every fexecve fails with ENOENT under it, and the launcher
 * could not start the compartment. This fexecve runs the same descriptor through execve("/proc/self/fd/N"),
 * which valgrind handles; the compartment started is the real one, from the launcher's sealed memfd. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#pragma GCC visibility push(default)
int fexecve(int fd, char *const argv[], char *const envp[])
{
    char path[32];
    int n = snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (fd < 0 || n < 0 || (size_t)n >= sizeof path) {
        errno = EBADF;
        return -1;
    }
    return execve(path, argv, envp);
}
#pragma GCC visibility pop

/* The C-variadic half of execl/execlp/execle (stable Rust cannot define
 * C-variadic functions). The exported names are Rust naked trampolines in
 * shim/src/variadic.rs that jump here with every register intact (rustc's
 * cdylib version script exports only Rust symbols, so these stay hidden).
 *
 * Each collects its arguments into an argv array on the stack (as glibc
 * does; no malloc, since it may run in a vfork'ed or multithreaded child)
 * and calls the shim's execve/execvpe hooks, which carry SealFS fds and the
 * virtual cwd into the new image. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>
#include <unistd.h>

extern char **environ;

/* The shim's hooks (shim/src/hooks.rs). */
extern int sealfs_hook_execve(const char *path, char *const argv[], char *const envp[]);
extern int sealfs_hook_execvpe(const char *file, char *const argv[], char *const envp[]);

/* Counts the arguments after arg0 up to the NULL terminator. */
static size_t count_args(va_list ap) {
    size_t n = 1;
    while (va_arg(ap, const char *) != NULL) {
        if (n >= (size_t)INT_MAX)
            return (size_t)-1;
        n++;
    }
    return n;
}

#define COLLECT(ARGC, ARGV, ARG0, LAST)                                        \
    va_list ap;                                                                \
    va_start(ap, LAST);                                                        \
    va_list cp;                                                                \
    va_copy(cp, ap);                                                           \
    size_t ARGC = count_args(cp);                                              \
    va_end(cp);                                                                \
    if (ARGC == (size_t)-1 || ARGC > 1u << 20) {                               \
        va_end(ap);                                                            \
        errno = E2BIG;                                                         \
        return -1;                                                             \
    }                                                                          \
    const char *ARGV[ARGC + 1];                                                \
    ARGV[0] = ARG0;                                                            \
    for (size_t i = 1; i <= ARGC; i++)                                         \
        ARGV[i] = va_arg(ap, const char *);

__attribute__((visibility("hidden"))) int sealfs_c_execl(const char *path, const char *arg, ...) {
    COLLECT(argc, argv, arg, arg)
    va_end(ap);
    return sealfs_hook_execve(path, (char *const *)argv, environ);
}

__attribute__((visibility("hidden"))) int sealfs_c_execlp(const char *file, const char *arg, ...) {
    COLLECT(argc, argv, arg, arg)
    va_end(ap);
    return sealfs_hook_execvpe(file, (char *const *)argv, environ);
}

__attribute__((visibility("hidden"))) int sealfs_c_execle(const char *path, const char *arg, ...) {
    COLLECT(argc, argv, arg, arg)
    /* After the NULL that ends argv comes envp. */
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return sealfs_hook_execve(path, (char *const *)argv, envp);
}


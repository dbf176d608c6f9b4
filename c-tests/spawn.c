/* Process creation through paths glibc runs internally: system(), popen(),
 * the variadic execl/execlp/execle, vfork. argv[1] is a file holding
 * "hello world\n" (SealFS or local), argv[2] its directory. stdin is the
 * file (dup2), the cwd is its directory: children must see both. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void wait_child(pid_t k) {
    int st = 0;
    waitpid(k, &st, 0);
    printf("child exit=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0 || dup2(fd, 0) != 0 || chdir(argv[2]) != 0) {
        perror("setup");
        return 1;
    }
    close(fd);
    printf("system=%d\n", system("cat; cat f | wc -c"));
    fflush(stdout);

    FILE *p = popen("cat f", "r");
    char b[100] = {0};
    size_t n = fread(b, 1, sizeof b - 1, p);
    printf("popen r=%zu:%s|pclose=%d\n", n, b, pclose(p));
    p = popen("cat > g", "w");
    fputs("via popen w\n", p);
    printf("pclose w=%d\n", pclose(p));
    fflush(stdout);

    pid_t k = fork();
    if (k == 0) {
        lseek(0, 0, SEEK_SET);
        execlp("cat", "cat", "-", "g", (char *)0);
        _exit(99);
    }
    wait_child(k);
    k = fork();
    if (k == 0) {
        execl("/bin/cat", "cat", "f", (char *)0);
        _exit(99);
    }
    wait_child(k);
    k = fork();
    if (k == 0) {
        execle("/bin/sh", "sh", "-c", "cat g; echo \"X=$X\"", (char *)0, environ);
        _exit(99);
    }
    wait_child(k);
    k = vfork();
    if (k == 0) {
        execl("/bin/cat", "cat", "f", (char *)0);
        _exit(99);
    }
    wait_child(k);
    /* The parent's table survived the vfork child. */
    lseek(0, 0, SEEK_SET);
    n = read(0, b, sizeof b - 1);
    b[n > 0 ? n : 0] = 0;
    printf("parent stdin after vfork: %s", b);
    return 0;
}

/* fork.c — an open SealFS fd survives fork: the child writes through it
 * (reconnecting on its own), then the parent continues at the shared
 * offset, as with a local file. Usage: fork FILE. Prints the content. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    if (write(fd, "parent1\n", 8) != 8) { perror("write"); return 1; }
    pid_t pid = fork();
    if (pid == 0) {
        if (write(fd, "child\n", 6) != 6) _exit(3);
        int fd2 = open(argv[1], O_RDONLY); /* a fresh open in the child */
        char b[64] = {0};
        if (fd2 < 0 || read(fd2, b, sizeof b) < 8) _exit(4);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { printf("child failed %d\n", status); return 1; }
    if (write(fd, "parent2\n", 8) != 8) { perror("write2"); return 1; }
    lseek(fd, 0, SEEK_SET);
    char buf[256] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    printf("%zd\n%s", n, buf);
    return 0;
}

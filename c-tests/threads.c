/* threads.c — 8 threads each write a distinct file and a distinct 64 KiB
 * stripe of one shared file, with pwrite, through the preloaded shim.
 * Usage: threads DIR. Then checks every byte from a fresh open. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 8
#define STRIPE (64 * 1024)
static const char *dir;

static void *work(void *arg) {
    long i = (long)arg;
    char path[4096], *buf = malloc(STRIPE);
    memset(buf, 'a' + (int)i, STRIPE);
    snprintf(path, sizeof path, "%s/t%ld", dir, i);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) { perror("open own"); exit(1); }
    for (int k = 0; k < 4; k++)
        if (write(fd, buf, STRIPE / 4) != STRIPE / 4) { perror("write own"); exit(1); }
    close(fd);
    snprintf(path, sizeof path, "%s/shared", dir);
    fd = open(path, O_WRONLY);
    if (fd < 0) { perror("open shared"); exit(1); }
    if (pwrite(fd, buf, STRIPE, (off_t)i * STRIPE) != STRIPE) { perror("pwrite"); exit(1); }
    close(fd);
    free(buf);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    dir = argv[1];
    char path[4096];
    snprintf(path, sizeof path, "%s/shared", dir);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) { perror("create shared"); return 1; }
    close(fd);
    pthread_t t[N];
    for (long i = 0; i < N; i++) pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    char *buf = malloc(N * STRIPE + 1);
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "%s/t%d", dir, i);
        fd = open(path, O_RDONLY);
        ssize_t n = read(fd, buf, STRIPE + 1);
        close(fd);
        for (ssize_t k = 0; k < n; k++)
            if (buf[k] != 'a' + i) { printf("file %d byte %zd wrong\n", i, k); return 1; }
        if (n != STRIPE) { printf("file %d has %zd bytes\n", i, n); return 1; }
    }
    snprintf(path, sizeof path, "%s/shared", dir);
    fd = open(path, O_RDONLY);
    ssize_t got = 0, n;
    while ((n = read(fd, buf + got, N * STRIPE + 1 - got)) > 0) got += n;
    close(fd);
    if (got != N * STRIPE) { printf("shared has %zd bytes\n", got); return 1; }
    for (ssize_t k = 0; k < got; k++)
        if (buf[k] != 'a' + (int)(k / STRIPE)) { printf("shared byte %zd wrong\n", k); return 1; }
    printf("OK\n");
    return 0;
}

/* direct.c — the direct-link API (include/sealfs.h). Usage: direct MANAGER DIR
 * where DIR is a fresh SealFS path ("/x"). Exits 0 when every check holds,
 * printing the failed check otherwise. */
#include "sealfs.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(cond) do { if (!(cond)) { printf("FAIL %s:%d: %s (errno %d)\n", __FILE__, __LINE__, #cond, errno); failures++; } } while (0)

static int count;
static char seen[1024];
static void cb(const char *name, void *arg) {
    (void)arg;
    count++;
    strncat(seen, name, sizeof seen - strlen(seen) - 2);
    strcat(seen, ",");
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    char p[512], q[512], d2[512];
    const char *d = argv[2];
    CHECK(sealfs_init(argv[1]) == 0);
    CHECK(sealfs_mkdir(d, 0755) == 0);
    CHECK(sealfs_mkdir(d, 0755) == -1 && errno == EEXIST);
    snprintf(p, sizeof p, "%s/f", d);
    snprintf(q, sizeof q, "%s/g", d);
    snprintf(d2, sizeof d2, "%s/sub", d);
    int fd = sealfs_open(p, O_CREAT | O_RDWR | O_EXCL, 0644);
    CHECK(fd >= 0);
    CHECK(sealfs_write(fd, "hello world", 11) == 11);
    CHECK(sealfs_pwrite(fd, "W", 1, 6) == 1);
    char buf[64] = {0};
    CHECK(sealfs_pread(fd, buf, sizeof buf, 0) == 11 && memcmp(buf, "hello World", 11) == 0);
    CHECK(sealfs_read(fd, buf, sizeof buf) == 0); /* offset is at 11 */
    /* the fd is a real fd number: plain read/lseek/close work on it too */
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    memset(buf, 0, sizeof buf);
    CHECK(read(fd, buf, 5) == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK(sealfs_close(fd) == 0);
    CHECK(sealfs_close(fd) == -1 && errno == EBADF);
    CHECK(sealfs_open(p, O_CREAT | O_EXCL | O_WRONLY, 0644) == -1 && errno == EEXIST);
    CHECK(sealfs_open("/definitely/not/there", O_RDONLY, 0) == -1 && errno == ENOENT);
    struct stat st;
    CHECK(sealfs_stat(p, &st) == 0 && st.st_size == 11 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0644);
    CHECK(sealfs_stat(d, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(sealfs_mkdir(d2, 0700) == 0);
    CHECK(sealfs_rename(p, q) == 0);
    CHECK(sealfs_stat(p, &st) == -1 && errno == ENOENT);
    CHECK(sealfs_readdir(d, cb, NULL) == 0 && count == 2 && strcmp(seen, "g,sub,") == 0);
    CHECK(sealfs_rmdir(d) == -1 && errno == ENOTEMPTY);
    CHECK(sealfs_unlink(q) == 0);
    CHECK(sealfs_unlink(q) == -1 && errno == ENOENT);
    CHECK(sealfs_rmdir(d2) == 0);
    CHECK(sealfs_rmdir(d) == 0);
    CHECK(sealfs_readdir(d, cb, NULL) == -1 && errno == ENOENT);
    printf("%s (%d failures)\n", failures ? "FAILED" : "OK", failures);
    return failures ? 1 : 0;
}

/* An open file renamed or unlinked by the same process stays usable
 * through its fd, as on Linux. argv[1] is an empty directory. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char p1[4096], p2[4096], d1[4096], d2[4096];

static void show(const char *what, int fd) {
    char b[256] = {0};
    ssize_t n = pread(fd, b, sizeof b - 1, 0);
    struct stat st;
    int r = fstat(fd, &st);
    printf("%s: read=%zd [%s] fstat=%d size=%lld\n", what, n, n > 0 ? b : "", r, r == 0 ? (long long)st.st_size : -1LL);
}

static int entries(const char *d) {
    DIR *x = opendir(d);
    int n = 0;
    struct dirent *e;
    while (x && (e = readdir(x)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    if (x)
        closedir(x);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    snprintf(p1, sizeof p1, "%s/a", argv[1]);
    snprintf(p2, sizeof p2, "%s/b", argv[1]);
    int fd = open(p1, O_CREAT | O_RDWR, 0644);
    write(fd, "one\n", 4);
    printf("rename=%d\n", rename(p1, p2));
    write(fd, "two\n", 4);
    show("after rename", fd);
    int fd2 = open(p2, O_RDONLY);
    int u = unlink(p2);
    printf("unlink=%d access-after=%d\n", u, access(p2, F_OK));
    write(fd, "three\n", 6);
    show("after unlink", fd);
    show("second fd", fd2);
    printf("entries while open=%d\n", entries(argv[1]));
    close(fd);
    show("after first close", fd2);
    close(fd2);
    printf("entries after close=%d\n", entries(argv[1]));

    /* A directory renamed under an open file and the cwd. */
    snprintf(d1, sizeof d1, "%s/d1", argv[1]);
    snprintf(d2, sizeof d2, "%s/d2", argv[1]);
    mkdir(d1, 0755);
    snprintf(p1, sizeof p1, "%s/f", d1);
    fd = open(p1, O_CREAT | O_RDWR, 0644);
    write(fd, "in d1\n", 6);
    chdir(d1);
    printf("rename dir=%d\n", rename(d1, d2));
    write(fd, "moved\n", 6);
    show("after dir rename", fd);
    int r = open("f", O_RDONLY);
    printf("relative open in moved cwd=%s\n", r >= 0 ? "ok" : "fail");
    close(r);
    close(fd);
    return 0;
}

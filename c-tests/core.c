/* core.c — runs the core file calls under ROOT (argv[1]) and prints one line
 * per call: its name, its result and the errno name on failure. The test
 * suite runs it on a local temp dir and on a SealFS dir (under LD_PRELOAD)
 * and compares the two transcripts line by line. ROOT never appears in the
 * output. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static char root[4096];
static char pbuf[8][4096];
static int pi;

static const char *P(const char *rel) {
    char *b = pbuf[pi++ % 8];
    snprintf(b, 4096, "%.2000s/%.2000s", root, rel);
    return b;
}

static const char *ename(int e) {
    switch (e) {
    case ENOENT: return "ENOENT"; case EEXIST: return "EEXIST"; case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR"; case ENOTEMPTY: return "ENOTEMPTY"; case EBADF: return "EBADF";
    case EINVAL: return "EINVAL"; case EXDEV: return "EXDEV"; case EACCES: return "EACCES";
    case ELOOP: return "ELOOP"; case ENAMETOOLONG: return "ENAMETOOLONG"; case EPERM: return "EPERM";
    default: { static char b[32]; snprintf(b, 32, "errno%d", e); return b; }
    }
}

static long R(const char *what, long rc) {
    if (rc < 0) printf("%s -1 %s\n", what, ename(errno));
    else printf("%s %ld\n", what, rc);
    return rc;
}
#define OK(what, rc) ((void)R(what, (long)(rc)))
/* Prints whether an fd-returning call succeeded (fd numbers may differ). */
static int F(const char *what, int fd) {
    if (fd < 0) printf("%s -1 %s\n", what, ename(errno));
    else printf("%s fd\n", what);
    return fd;
}

static void show_file(const char *what, const char *path) {
    char buf[256] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("%s -1 %s\n", what, ename(errno)); return; }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    printf("%s %zd [", what, n);
    for (ssize_t i = 0; i < n; i++) putchar(buf[i] >= 32 && buf[i] < 127 ? buf[i] : '.');
    printf("]\n");
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void list(const char *what, const char *path) {
    DIR *d = opendir(path);
    if (!d) { printf("%s -1 %s\n", what, ename(errno)); return; }
    char *names[256]; int n = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) && n < 256) names[n++] = strdup(e->d_name);
    int err = errno;
    int fd = dirfd(d);
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    printf("%s err=%d dirfd_ok=%d [", what, err, fd >= 0);
    for (int i = 0; i < n; i++) { printf("%s%s", i ? " " : "", names[i]); free(names[i]); }
    printf("]\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: core ROOT\n"); return 2; }
    snprintf(root, sizeof root, "%s", argv[1]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    umask(022);
    char buf[256];
    struct stat st;

    OK("mkdir", mkdir(P("d"), 0755));
    OK("mkdir_again", mkdir(P("d"), 0755));
    OK("mkdir_noparent", mkdir(P("nope/x"), 0755));
    int fd = F("open_creat_excl", open(P("d/f"), O_CREAT | O_WRONLY | O_EXCL, 0644));
    OK("write", write(fd, "hello world", 11));
    OK("close", close(fd));
    OK("close_again", close(fd));
    F("open_excl_exists", open(P("d/f"), O_CREAT | O_WRONLY | O_EXCL, 0644));
    F("open_missing", open(P("d/missing"), O_RDONLY));
    F("open_notdir", open(P("d/f/x"), O_RDONLY));
    F("open_dir_wr", open(P("d"), O_WRONLY));
    F("open_file_odirectory", open(P("d/f"), O_RDONLY | O_DIRECTORY));

    fd = F("open_rdwr", open(P("d/f"), O_RDWR));
    memset(buf, 0, sizeof buf);
    OK("read5", read(fd, buf, 5)); printf("  data [%s]\n", buf);
    OK("lseek_cur", lseek(fd, 0, SEEK_CUR));
    OK("lseek_end", lseek(fd, 0, SEEK_END));
    OK("lseek_neg", lseek(fd, -100, SEEK_SET));
    memset(buf, 0, sizeof buf);
    OK("pread", pread(fd, buf, 5, 6)); printf("  data [%s]\n", buf);
    OK("pwrite", pwrite(fd, "WORLD", 5, 6));
    OK("lseek_set", lseek(fd, 0, SEEK_SET));
    memset(buf, 0, sizeof buf);
    OK("read_all", read(fd, buf, sizeof buf)); printf("  data [%s]\n", buf);
    OK("read_eof", read(fd, buf, sizeof buf));
    int fd2 = F("dup", dup(fd));
    OK("lseek_dup", lseek(fd2, 2, SEEK_SET));
    OK("lseek_shared", lseek(fd, 0, SEEK_CUR));
    OK("dup2", dup2(fd, 100));
    OK("getfd_100", fcntl(100, F_GETFD));
    OK("dup3_cloexec", dup3(fd, 101, O_CLOEXEC));
    OK("getfd_101", fcntl(101, F_GETFD));
    OK("dupfd_cloexec_ge200", fcntl(fd, F_DUPFD_CLOEXEC, 200) >= 200);
    OK("getfl_acc", fcntl(fd, F_GETFL) & O_ACCMODE);
    OK("fstat", fstat(100, &st)); printf("  size %lld reg %d\n", (long long)st.st_size, S_ISREG(st.st_mode));
    OK("close_dup", close(fd2)); OK("close_100", close(100)); OK("close_101", close(101)); OK("close", close(fd));
    OK("read_closed", read(fd, buf, 1));

    fd = F("open_append", open(P("d/f"), O_WRONLY | O_APPEND));
    OK("write_append", write(fd, "!", 1));
    OK("fstat", fstat(fd, &st)); printf("  size %lld\n", (long long)st.st_size);
    OK("read_wronly", read(fd, buf, 1));
    OK("close", close(fd));
    show_file("content", P("d/f"));
    fd = F("open_rdonly", open(P("d/f"), O_RDONLY));
    OK("write_rdonly", write(fd, "x", 1));
    OK("ftruncate_rdonly", ftruncate(fd, 0));
    OK("close", close(fd));
    fd = F("open_trunc", open(P("d/f"), O_RDWR | O_TRUNC));
    OK("fstat", fstat(fd, &st)); printf("  size %lld\n", (long long)st.st_size);
    OK("write", write(fd, "abc", 3));
    OK("ftruncate", ftruncate(fd, 6));
    OK("fstat", fstat(fd, &st)); printf("  size %lld\n", (long long)st.st_size);
    struct iovec iov[2] = {{"12", 2}, {"345", 3}};
    OK("pwritev", pwritev(fd, iov, 2, 6));
    char a[4] = {0}, b2[8] = {0};
    struct iovec riov[2] = {{a, 3}, {b2, 7}};
    OK("preadv", preadv(fd, riov, 2, 0)); printf("  [%s|%s]\n", a, b2 + 3);
    OK("close", close(fd));
    show_file("content", P("d/f"));
    OK("truncate", truncate(P("d/f"), 2));
    show_file("content", P("d/f"));
    OK("truncate_dir", truncate(P("d"), 0));

    OK("stat", stat(P("d/f"), &st)); printf("  mode %o size %lld nlink>0 %d\n", st.st_mode, (long long)st.st_size, st.st_nlink > 0);
    OK("stat_dir", stat(P("d"), &st)); printf("  mode %o\n", st.st_mode);
    OK("stat_missing", stat(P("d/missing"), &st));
    OK("stat_notdir", stat(P("d/f/x"), &st));
    OK("access_f", access(P("d/f"), F_OK));
    OK("access_rw", access(P("d/f"), R_OK | W_OK));
    OK("access_x", access(P("d/f"), X_OK));
    OK("access_missing", access(P("d/missing"), F_OK));
    OK("chmod", chmod(P("d/f"), 0600));
    OK("stat", stat(P("d/f"), &st)); printf("  mode %o\n", st.st_mode);
    struct timespec ts[2] = {{1000000000, 5}, {1200000000, 7}};
    OK("utimensat", utimensat(AT_FDCWD, P("d/f"), ts, 0));
    OK("stat", stat(P("d/f"), &st)); printf("  atime %lld.%ld mtime %lld.%ld\n", (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);

    OK("symlink", symlink("f", P("d/l")));
    memset(buf, 0, sizeof buf);
    OK("readlink", readlink(P("d/l"), buf, sizeof buf)); printf("  [%s]\n", buf);
    OK("readlink_notlink", readlink(P("d/f"), buf, sizeof buf));
    OK("lstat_link", lstat(P("d/l"), &st)); printf("  islnk %d\n", S_ISLNK(st.st_mode));
    OK("stat_link", stat(P("d/l"), &st)); printf("  isreg %d size %lld\n", S_ISREG(st.st_mode), (long long)st.st_size);
    show_file("via_link", P("d/l"));
    OK("unlink_link", unlink(P("d/l")));

    OK("rename", rename(P("d/f"), P("d/g")));
    OK("stat_old", stat(P("d/f"), &st));
    OK("stat_new", stat(P("d/g"), &st));
    OK("rename_missing", rename(P("d/f"), P("d/h")));
    OK("rename_into_self", rename(P("d"), P("d/sub")));
    OK("rename_xdev", rename(P("d/g"), "/proc/sealfs-core-xdev-target"));
    OK("mkdir_sub", mkdir(P("d/s"), 0700));
    OK("rmdir_nonempty", rmdir(P("d")));
    OK("unlink_dir", unlink(P("d/s")));
    OK("rmdir_file", rmdir(P("d/g")));
    list("readdir", P("d"));

    /* *at calls with a directory fd */
    int dfd = F("open_dir", open(P("d"), O_RDONLY | O_DIRECTORY));
    fd = F("openat", openat(dfd, "x", O_CREAT | O_WRONLY, 0644));
    OK("write", write(fd, "xyz", 3)); OK("close", close(fd));
    OK("fstatat", fstatat(dfd, "x", &st, 0)); printf("  size %lld\n", (long long)st.st_size);
    OK("faccessat", faccessat(dfd, "x", R_OK, 0));
    OK("mkdirat", mkdirat(dfd, "sd", 0755));
    OK("renameat", renameat(dfd, "x", dfd, "sd/x"));
    OK("unlinkat_file", unlinkat(dfd, "sd/x", 0));
    OK("unlinkat_dir", unlinkat(dfd, "sd", AT_REMOVEDIR));
    OK("unlinkat_missing", unlinkat(dfd, "sd", AT_REMOVEDIR));
    OK("read_dirfd", read(dfd, buf, 1));
    OK("close_dir", close(dfd));

    /* cwd inside the tree */
    char cwd[4096];
    OK("chdir", chdir(P("d")));
    const char *c = getcwd(cwd, sizeof cwd);
    printf("getcwd_ends_with_d %d\n", c && strlen(c) >= 2 && strcmp(c + strlen(c) - 2, "/d") == 0);
    fd = F("open_rel", open("rel", O_CREAT | O_WRONLY, 0644));
    OK("write", write(fd, "r", 1)); OK("close", close(fd));
    OK("stat_rel", stat("rel", &st));
    OK("fstatat_cwd", fstatat(AT_FDCWD, "rel", &st, 0));
    OK("chdir_dotdot", chdir(".."));
    OK("stat_rel_from_parent", stat("d/rel", &st));
    OK("chdir_root", chdir("/"));
    OK("stat_abs", stat(P("d/rel"), &st));
    OK("unlink_rel", unlink(P("d/rel")));

    /* stdio */
    FILE *f = fopen(P("d/s.txt"), "w");
    printf("fopen_w %d\n", f != NULL);
    fprintf(f, "line1\nline2 %d\n", 42);
    OK("fclose", fclose(f));
    f = fopen(P("d/s.txt"), "r");
    printf("fopen_r %d fileno_ok %d\n", f != NULL, f && fileno(f) >= 0);
    memset(buf, 0, sizeof buf);
    printf("fgets [%s]", fgets(buf, sizeof buf, f));
    OK("fseek", fseek(f, 6, SEEK_SET));
    OK("ftell", ftell(f));
    memset(buf, 0, sizeof buf);
    OK("fread", (long)fread(buf, 1, 100, f)); printf("  [%s]", buf);
    OK("fclose", fclose(f));
    f = fopen(P("d/s.txt"), "a");
    fputs("line3\n", f);
    OK("fclose", fclose(f));
    show_file("content", P("d/s.txt"));
    {
        /* errno is read after fopen returns: argument order is unspecified */
        errno = 0;
        FILE *missing = fopen(P("d/none"), "r");
        int e = errno;
        printf("fopen_missing %d errno %s\n", missing != NULL, ename(e));
    }
    fd = open(P("d/s.txt"), O_RDONLY);
    f = fdopen(fd, "r");
    memset(buf, 0, sizeof buf);
    printf("fdopen %d [%s]", f != NULL, fgets(buf, sizeof buf, f));
    OK("fclose", fclose(f));

    OK("unlink", unlink(P("d/s.txt")));
    OK("unlink", unlink(P("d/g")));
    OK("rmdir_s", rmdir(P("d/s")));
    list("readdir_empty", P("d"));
    OK("rmdir", rmdir(P("d")));
    OK("stat_gone", stat(P("d"), &st));
    return 0;
}

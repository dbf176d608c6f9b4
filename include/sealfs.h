/* sealfs.h — the direct-link C API of SealFS (libsealfs.so).
 *
 * Link with -lsealfs. Paths are SealFS paths ("/a/b": absolute, without the
 * mount prefix). fds are real kernel fd numbers reserved for SealFS files,
 * so read(2)/write(2)/close(2) on them also work (the library interposes
 * them). Every function returns -1 and sets errno on failure, with the
 * errno a local file system would give.
 *
 * The cluster is found through sealfs_init(manager), or through the
 * SEALFS_MANAGER environment variable (default 127.0.0.1:7700) on first use.
 */
#ifndef SEALFS_H
#define SEALFS_H

#include <sys/types.h>
#include <sys/stat.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Connects to the manager at "host:port" (NULL: SEALFS_MANAGER or the
 * default). Returns 0, or -1 with errno EIO when it cannot be reached. */
int sealfs_init(const char *manager);

/* open(2) with O_* flags (O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY,
 * O_CLOEXEC, ...); mode is used as given (no umask). */
int sealfs_open(const char *path, int flags, mode_t mode);
ssize_t sealfs_read(int fd, void *buf, size_t n);
ssize_t sealfs_write(int fd, const void *buf, size_t n);
ssize_t sealfs_pread(int fd, void *buf, size_t n, off_t off);
ssize_t sealfs_pwrite(int fd, const void *buf, size_t n, off_t off);
int sealfs_close(int fd);

/* stat(2), following a final symlink. */
int sealfs_stat(const char *path, struct stat *st);
int sealfs_mkdir(const char *path, mode_t mode);
int sealfs_unlink(const char *path);
int sealfs_rmdir(const char *path);
int sealfs_rename(const char *from, const char *to);

/* Calls cb(name, arg) for each entry of the directory, in name order,
 * without "." and "..". */
int sealfs_readdir(const char *path, void (*cb)(const char *name, void *arg), void *arg);

#ifdef __cplusplus
}
#endif

#endif /* SEALFS_H */

//! Namespace operations: stat, open/create, mkdir, symlinks, unlink, rmdir,
//! readdir and setattr/truncate.
//!
//! Paths are normalised here, once, at the public entry points. Symlinks are
//! followed only in the final component (SealFS paths have no symlinks in
//! their directory part, see [`sealfs_proto::path`]), at most
//! [`MAX_SYMLINK_HOPS`] times; a relative target is taken relative to the
//! link's directory, an absolute one is a SealFS path.

use crate::route::To;
use crate::Client;
use sealfs_proto::path;
use sealfs_proto::{DirEntry, Errno, FileKind, Inode, NewInode, Reply, Request, ServerId, SetAttr};
use std::collections::BTreeSet;

/// Symlinks followed by one lookup before `ELOOP`, as on Linux.
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// Entries asked for per `ReadDir` page by [`Client::readdir`].
pub(crate) const READDIR_PAGE: u32 = 1024;

/// Expects an `Inode` reply.
pub(crate) fn want_inode(r: Result<Reply, Errno>) -> Result<Inode, Errno> {
    match r? {
        Reply::Inode(i) => Ok(i),
        other => Err(other.unexpected()),
    }
}

/// Expects an `Ok` reply.
pub(crate) fn want_ok(r: Result<Reply, Errno>) -> Result<(), Errno> {
    match r? {
        Reply::Ok => Ok(()),
        other => Err(other.unexpected()),
    }
}

/// The path a symlink at `link` (normalised) with `target` points to. An
/// absolute target under `mount_prefix` (where applications see SealFS)
/// is the SealFS path below it.
pub(crate) fn link_dest(
    link: &str,
    target: &str,
    mount_prefix: Option<&str>,
) -> Result<String, Errno> {
    if let Some(pre) = mount_prefix {
        if let Some(rest) = target.strip_prefix(pre) {
            if rest.is_empty() {
                return Ok("/".to_string());
            }
            if rest.starts_with('/') {
                return path::normalize(rest);
            }
        }
    }
    let dir = path::split(link).map(|(d, _)| d).unwrap_or("/");
    path::join(dir, target)
}

/// What `open` must do with what it found, from the flags alone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OpenPlan {
    pub create: bool,
    pub excl: bool,
    pub nofollow: bool,
    pub writable: bool,
    pub trunc: bool,
    pub directory: bool,
}

impl OpenPlan {
    pub fn of(flags: i32) -> OpenPlan {
        let acc = flags & libc::O_ACCMODE;
        OpenPlan {
            create: flags & libc::O_CREAT != 0,
            excl: flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0,
            nofollow: flags & libc::O_NOFOLLOW != 0,
            writable: acc == libc::O_WRONLY || acc == libc::O_RDWR,
            trunc: flags & libc::O_TRUNC != 0,
            directory: flags & libc::O_DIRECTORY != 0,
        }
    }

    /// The errno for opening an inode of `kind` (after symlinks were dealt
    /// with), or `Ok` and whether to truncate it.
    pub fn check(&self, kind: FileKind) -> Result<bool, Errno> {
        match kind {
            FileKind::Dir => {
                // Linux: O_CREAT, write access or O_TRUNC on a directory → EISDIR.
                if self.create || self.writable || self.trunc {
                    Err(Errno::EISDIR)
                } else {
                    Ok(false)
                }
            }
            FileKind::Symlink => Err(Errno::ELOOP),
            FileKind::File => {
                if self.directory {
                    Err(Errno::ENOTDIR)
                } else {
                    // Linux truncates even with O_RDONLY (the access mode
                    // is not checked, only write permission on the file).
                    Ok(self.trunc)
                }
            }
        }
    }
}

/// The proper ancestors of a normalised path, root excluded, top first:
/// `/a/b/c` → `/a`, `/a/b`.
pub(crate) fn ancestors(p: &str) -> Vec<&str> {
    p.match_indices('/').skip(1).map(|(i, _)| &p[..i]).collect()
}

impl Client {
    /// Turns the `ENOENT` of an operation on `p` into what Linux gives when
    /// an ancestor of `p` is no directory: `ENOTDIR`. Servers look up a path
    /// without walking it, so only the client can tell; it asks every
    /// ancestor in one scatter, and only on this error path.
    pub(crate) fn refine(&self, p: &str, e: Errno) -> Errno {
        if e != Errno::ENOENT {
            return e;
        }
        let anc = ancestors(p);
        if anc.is_empty() {
            return e;
        }
        let reqs = anc
            .iter()
            .map(|a| {
                (
                    To::Owner,
                    Request::GetAttr {
                        path: a.to_string(),
                    },
                )
            })
            .collect();
        for r in self.shared.scatter(reqs) {
            match want_inode(r) {
                Ok(i) if i.attr.kind == FileKind::Dir => {}
                Ok(_) => return Errno::ENOTDIR,
                Err(_) => return e,
            }
        }
        e
    }

    /// Runs `f` on the normalised `path`, refining its `ENOENT`.
    pub(crate) fn on_path<T>(
        &self,
        path: &str,
        f: impl FnOnce(&str) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let p = path::normalize(path)?;
        f(&p).map_err(|e| self.refine(&p, e))
    }

    pub(crate) fn getattr_norm(&self, p: &str) -> Result<Inode, Errno> {
        want_inode(self.shared.call_owner(Request::GetAttr {
            path: p.to_string(),
        }))
    }

    /// Follows final symlinks from `p` (normalised); returns the path reached
    /// and its inode.
    pub(crate) fn resolve(&self, p: String) -> Result<(String, Inode), Errno> {
        let mut p = p;
        let mut hops = 0;
        loop {
            let ino = self.getattr_norm(&p)?;
            if ino.attr.kind != FileKind::Symlink {
                return Ok((p, ino));
            }
            if hops == MAX_SYMLINK_HOPS {
                return Err(Errno::ELOOP);
            }
            hops += 1;
            let target = ino.target.as_deref().ok_or(Errno::EIO)?;
            p = link_dest(&p, target, self.mount_prefix.as_deref())?;
        }
    }

    /// The attributes of `path`, not following a final symlink.
    pub fn lstat(&self, path: &str) -> Result<Inode, Errno> {
        self.on_path(path, |p| self.getattr_norm(p))
    }

    /// `lstat` for a caller that already knows the parent is a directory
    /// (a FUSE lookup, a getattr of a known inode): one request, and
    /// `ENOENT` is not refined to `ENOTDIR`, which would cost a second round
    /// trip on every lookup of an absent name.
    pub fn lookup(&self, path: &str) -> Result<Inode, Errno> {
        self.getattr_norm(&path::normalize(path)?)
    }

    /// The attributes of `path`, following final symlinks.
    pub fn stat(&self, path: &str) -> Result<Inode, Errno> {
        self.on_path(path, |p| Ok(self.resolve(p.to_string())?.1))
    }

    /// Opens (and with `O_CREAT` creates) `path` with libc `O_*` flags;
    /// returns the inode opened. See [`Client::open_resolved`].
    pub fn open(
        &self,
        path: &str,
        flags: i32,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Inode, Errno> {
        Ok(self.open_resolved(path, flags, mode, uid, gid)?.1)
    }

    /// [`Client::open`], also returning the path opened after following
    /// final symlinks (the path later data calls must use).
    ///
    /// `O_CREAT` (with `O_EXCL`: `EEXIST` if the name exists, symlink or
    /// not), `O_TRUNC` (truncates a file, even opened `O_RDONLY`), `O_DIRECTORY`
    /// (`ENOTDIR`), `O_NOFOLLOW` (`ELOOP` on a final symlink). A directory
    /// opened for writing, with `O_CREAT` or with `O_TRUNC` gives `EISDIR`.
    pub fn open_resolved(
        &self,
        path: &str,
        flags: i32,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(String, Inode), Errno> {
        self.on_path(path, |p| self.open_norm(p, flags, mode, uid, gid))
    }

    fn open_norm(
        &self,
        p: &str,
        flags: i32,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(String, Inode), Errno> {
        let plan = OpenPlan::of(flags);
        let mut p = p.to_string();
        let mut hops = 0;
        let (inode, created) = loop {
            let (inode, created) = if plan.create {
                if p == "/" {
                    return Err(Errno::EISDIR);
                }
                self.create_norm(&p, FileKind::File, mode, uid, gid, None, plan.excl)?
            } else {
                (self.getattr_norm(&p)?, false)
            };
            if inode.attr.kind != FileKind::Symlink || plan.nofollow {
                break (inode, created);
            }
            if hops == MAX_SYMLINK_HOPS {
                return Err(Errno::ELOOP);
            }
            hops += 1;
            let target = inode.target.as_deref().ok_or(Errno::EIO)?;
            p = link_dest(&p, target, self.mount_prefix.as_deref())?;
        };
        let trunc = plan.check(inode.attr.kind)?;
        if trunc && !created {
            let inode = self.set_size(&p, &inode, 0, SetAttr::default())?;
            return Ok((p, inode));
        }
        Ok((p, inode))
    }

    #[allow(clippy::too_many_arguments)]
    fn create_norm(
        &self,
        p: &str,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        target: Option<String>,
        excl: bool,
    ) -> Result<(Inode, bool), Errno> {
        let new = NewInode {
            kind,
            mode: mode & 0o7777,
            uid,
            gid,
            target,
        };
        match self.shared.call_owner(Request::Create {
            path: p.to_string(),
            new,
            excl,
        })? {
            Reply::Created { inode, created } => Ok((inode, created)),
            other => Err(other.unexpected()),
        }
    }

    /// Creates a regular file; with `excl == false` an existing inode (of
    /// any kind) is returned instead of `EEXIST`. Returns the inode and
    /// whether this call made it.
    pub fn create(
        &self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        excl: bool,
    ) -> Result<(Inode, bool), Errno> {
        self.on_path(path, |p| {
            if p == "/" {
                return Err(Errno::EEXIST);
            }
            self.create_norm(p, FileKind::File, mode, uid, gid, None, excl)
        })
    }

    /// Makes a directory.
    pub fn mkdir(&self, path: &str, mode: u32, uid: u32, gid: u32) -> Result<Inode, Errno> {
        self.on_path(path, |p| {
            if p == "/" {
                return Err(Errno::EEXIST);
            }
            Ok(self
                .create_norm(p, FileKind::Dir, mode, uid, gid, None, true)?
                .0)
        })
    }

    /// Makes a symlink at `path` pointing to `target` (stored as given).
    pub fn symlink(&self, target: &str, path: &str, uid: u32, gid: u32) -> Result<Inode, Errno> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() > path::PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if target.contains('\0') {
            return Err(Errno::EINVAL);
        }
        self.on_path(path, |p| {
            if p == "/" {
                return Err(Errno::EEXIST);
            }
            Ok(self
                .create_norm(
                    p,
                    FileKind::Symlink,
                    0o777,
                    uid,
                    gid,
                    Some(target.to_string()),
                    true,
                )?
                .0)
        })
    }

    /// The target of the symlink at `path`; `EINVAL` if it is no symlink.
    pub fn readlink(&self, path: &str) -> Result<String, Errno> {
        let ino = self.lstat(path)?;
        match (ino.attr.kind, ino.target) {
            (FileKind::Symlink, Some(t)) => Ok(t),
            (FileKind::Symlink, None) => Err(Errno::EIO),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Removes a file or symlink and its data.
    pub fn unlink(&self, path: &str) -> Result<(), Errno> {
        self.on_path(path, |p| {
            if p == "/" {
                Err(Errno::EISDIR)
            } else {
                self.unlink_norm(p)
            }
        })
    }

    pub(crate) fn unlink_norm(&self, p: &str) -> Result<(), Errno> {
        let removed = want_inode(self.shared.call_owner(Request::Remove {
            path: p.to_string(),
            dir: false,
        }))?;
        self.drop_data(&removed);
        Ok(())
    }

    /// Drops the chunks of an inode whose name is gone. Failures are logged,
    /// not returned: the name is already gone.
    pub(crate) fn drop_data(&self, removed: &Inode) {
        // An empty file has no chunks: truncate and every write path keep
        // no bytes past the size.
        if removed.attr.kind != FileKind::File || removed.attr.size == 0 {
            return;
        }
        let ino = removed.attr.ino;
        let st = self.shared.state();
        let targets: Vec<ServerId> = if removed.attr.size <= u64::from(st.map.chunk_size) {
            st.ring.owner_chunk(ino, 0).into_iter().collect()
        } else {
            st.all_servers()
        };
        let reqs = targets
            .into_iter()
            .map(|id| (To::Server(id), Request::RemoveData { ino }))
            .collect();
        for r in self.shared.scatter(reqs) {
            if let Err(e) = want_ok(r) {
                tracing::warn!(
                    ino,
                    "unlinked, but its data could not be removed everywhere: {e}"
                );
            }
        }
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, path: &str) -> Result<(), Errno> {
        self.on_path(path, |p| {
            if p == "/" {
                Err(Errno::EBUSY)
            } else {
                self.rmdir_norm(p)
            }
        })
    }

    pub(crate) fn rmdir_norm(&self, p: &str) -> Result<(), Errno> {
        want_inode(self.shared.call_owner(Request::Remove {
            path: p.to_string(),
            dir: true,
        }))
        .map(|_| ())
    }

    /// Every entry of a directory, in name order.
    pub fn readdir(&self, path: &str) -> Result<Vec<DirEntry>, Errno> {
        self.on_path(path, |p| self.readdir_norm(p))
    }

    pub(crate) fn readdir_norm(&self, p: &str) -> Result<Vec<DirEntry>, Errno> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let sent = after.clone();
            let (page, next) = self.readdir_page_norm(p, after.take(), READDIR_PAGE)?;
            all.extend(page);
            match next {
                None => return Ok(all),
                // A cursor that does not advance would loop forever.
                Some(n) if sent.as_deref() >= Some(n.as_str()) => {
                    tracing::warn!(path = p, cursor = %n, "readdir cursor did not advance");
                    return Err(Errno::EIO);
                }
                Some(n) => after = Some(n),
            }
        }
    }

    /// One page of a directory: at most `limit` entries after `after`, and
    /// the cursor of the next page (`None` at the end).
    pub fn readdir_page(
        &self,
        path: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<DirEntry>, Option<String>), Errno> {
        self.on_path(path, |p| {
            self.readdir_page_norm(p, after.map(str::to_string), limit)
        })
    }

    fn readdir_page_norm(
        &self,
        p: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<DirEntry>, Option<String>), Errno> {
        match self.shared.call_owner(Request::ReadDir {
            path: p.to_string(),
            after,
            limit,
        })? {
            Reply::Entries { entries, next } => Ok((entries, next)),
            other => Err(other.unexpected()),
        }
    }

    /// Changes attributes of `path` (not following a final symlink). A size
    /// change also trims or zero-extends the data, as [`Client::truncate`].
    pub fn setattr(&self, path: &str, set: SetAttr) -> Result<Inode, Errno> {
        self.on_path(path, |p| match set.size {
            None => want_inode(self.shared.call_owner(Request::SetAttr {
                path: p.to_string(),
                set,
            })),
            Some(size) => {
                let cur = self.getattr_norm(p)?;
                self.set_size(p, &cur, size, set)
            }
        })
    }

    /// Sets the size of the file at `path` (following final symlinks).
    pub fn truncate(&self, path: &str, size: u64) -> Result<(), Errno> {
        self.on_path(path, |p| {
            let (p, cur) = self.resolve(p.to_string())?;
            self.set_size(&p, &cur, size, SetAttr::default())
                .map(|_| ())
        })
    }

    /// Sets the size (and the other changes of `set`) of the file at `p`,
    /// whose record was `cur`. The record changes first, then the data past
    /// the new size is dropped on every server that may hold some of it, so
    /// a reader never sees zeros inside the old size before the size shrank.
    /// Not atomic against a crash between the two steps.
    pub(crate) fn set_size(
        &self,
        p: &str,
        cur: &Inode,
        size: u64,
        mut set: SetAttr,
    ) -> Result<Inode, Errno> {
        match cur.attr.kind {
            FileKind::Dir => return Err(Errno::EISDIR),
            FileKind::Symlink => return Err(Errno::EINVAL),
            FileKind::File => {}
        }
        set.size = Some(size);
        let inode = want_inode(self.shared.call_owner(Request::SetAttr {
            path: p.to_string(),
            set,
        }))?;
        if size < cur.attr.size {
            let ino = cur.attr.ino;
            let st = self.shared.state();
            let targets = trim_targets(&st, ino, size, cur.attr.size);
            let reqs = targets
                .into_iter()
                .map(|id| (To::Server(id), Request::TruncateData { ino, size }))
                .collect();
            for r in self.shared.scatter(reqs) {
                want_ok(r)?;
            }
        }
        Ok(inode)
    }
}

/// The servers that may hold bytes of `ino` in `[new, old)`: the chunk
/// owners of that range, or every server when the range spans more chunks
/// than there are servers.
pub(crate) fn trim_targets(
    st: &crate::state::State,
    ino: u64,
    new: u64,
    old: u64,
) -> BTreeSet<ServerId> {
    let cs = u64::from(st.map.chunk_size);
    let first = new / cs;
    let last = old.saturating_sub(1) / cs;
    if last.saturating_sub(first) >= st.map.servers.len() as u64 {
        return st.all_servers().into_iter().collect();
    }
    (first..=last)
        .filter_map(|c| st.ring.owner_chunk(ino, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags() {
        let rd = OpenPlan::of(libc::O_RDONLY);
        assert!(!rd.writable && !rd.create);
        assert_eq!(rd.check(FileKind::Dir), Ok(false));
        assert_eq!(rd.check(FileKind::File), Ok(false));

        let w = OpenPlan::of(libc::O_WRONLY | libc::O_TRUNC);
        assert!(w.writable);
        assert_eq!(w.check(FileKind::Dir), Err(Errno::EISDIR));
        assert_eq!(w.check(FileKind::File), Ok(true));

        assert_eq!(
            OpenPlan::of(libc::O_RDWR).check(FileKind::Dir),
            Err(Errno::EISDIR)
        );
        assert_eq!(
            OpenPlan::of(libc::O_RDONLY | libc::O_CREAT).check(FileKind::Dir),
            Err(Errno::EISDIR)
        );
        assert_eq!(
            OpenPlan::of(libc::O_RDONLY | libc::O_TRUNC).check(FileKind::Dir),
            Err(Errno::EISDIR)
        );
        // O_TRUNC truncates whatever the access mode, as Linux does.
        assert_eq!(
            OpenPlan::of(libc::O_RDONLY | libc::O_TRUNC).check(FileKind::File),
            Ok(true)
        );
        assert_eq!(
            OpenPlan::of(libc::O_DIRECTORY).check(FileKind::File),
            Err(Errno::ENOTDIR)
        );
        assert_eq!(
            OpenPlan::of(libc::O_DIRECTORY).check(FileKind::Dir),
            Ok(false)
        );
        assert_eq!(
            OpenPlan::of(libc::O_NOFOLLOW).check(FileKind::Symlink),
            Err(Errno::ELOOP)
        );
        // O_EXCL without O_CREAT means nothing.
        assert!(!OpenPlan::of(libc::O_EXCL).excl);
        assert!(OpenPlan::of(libc::O_EXCL | libc::O_CREAT).excl);
    }

    #[test]
    fn symlink_destinations() {
        assert_eq!(link_dest("/a/b/l", "t", None).unwrap(), "/a/b/t");
        assert_eq!(link_dest("/a/b/l", "../t", None).unwrap(), "/a/t");
        assert_eq!(link_dest("/l", "x/y", None).unwrap(), "/x/y");
        assert_eq!(link_dest("/a/l", "/abs/t", None).unwrap(), "/abs/t");
        assert_eq!(link_dest("/a/l", "", None), Err(Errno::ENOENT));
        // Absolute targets through the application's view of SealFS.
        let pre = Some("/sealfs");
        assert_eq!(link_dest("/a/l", "/sealfs/d/t", pre).unwrap(), "/d/t");
        assert_eq!(link_dest("/a/l", "/sealfs", pre).unwrap(), "/");
        assert_eq!(link_dest("/a/l", "/sealfsx/t", pre).unwrap(), "/sealfsx/t");
        assert_eq!(link_dest("/a/l", "/abs/t", pre).unwrap(), "/abs/t");
    }

    #[test]
    fn ancestors_top_first() {
        assert_eq!(ancestors("/a/b/c"), ["/a", "/a/b"]);
        assert!(ancestors("/a").is_empty());
        assert!(ancestors("/").is_empty());
    }
}

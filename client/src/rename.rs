//! `rename`, coordinated by the client, correct first.
//!
//! A file or symlink moves by `Adopt{dst, record}` (the record at its new
//! path, linked into the new parent) followed by `Remove{src}`; its data is
//! keyed by the inode number, so it stays where it is and now belongs to
//! `dst`. A directory moves the same way, one entry at a time: adopt the
//! directory record at `dst` (empty), move every child recursively, then
//! remove the (now empty) `src`.
//!
//! **Not atomic yet.** A crash in the middle leaves both names (a file) or a
//! half-moved tree (a directory), and a concurrent writer or creator inside a
//! directory being moved can race with the move: a name created in `src`
//! after its listing was taken makes the final `rmdir` fail with
//! `ENOTEMPTY`. A server-side rename with an intent record will replace this.

use crate::meta::want_inode;
use crate::Client;
use sealfs_proto::path;
use sealfs_proto::{Errno, FileKind, Inode, Request};

/// What a rename must do once both ends were looked up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing (same path, or two names of one inode).
    Nothing,
    /// Move `src` to the free name `dst`.
    Move,
    /// Remove the existing `dst` (a directory if `true`), then move.
    Replace { dst_dir: bool },
}

/// Decides a rename from the kinds at both ends (`dst` `None` when free).
pub(crate) fn plan(
    src: &Inode,
    dst: Option<&Inode>,
    noreplace: bool,
    dst_empty: impl FnOnce() -> Result<bool, Errno>,
) -> Result<Plan, Errno> {
    let Some(d) = dst else {
        return Ok(Plan::Move);
    };
    if noreplace {
        return Err(Errno::EEXIST);
    }
    if d.attr.ino == src.attr.ino {
        return Ok(Plan::Nothing);
    }
    let src_dir = src.attr.kind == FileKind::Dir;
    let dst_dir = d.attr.kind == FileKind::Dir;
    match (src_dir, dst_dir) {
        (true, false) => Err(Errno::ENOTDIR),
        (false, true) => Err(Errno::EISDIR),
        (true, true) if !dst_empty()? => Err(Errno::ENOTEMPTY),
        _ => Ok(Plan::Replace { dst_dir }),
    }
}

impl Client {
    /// Renames `src` to `dst`. `flags`: 0 or `libc::RENAME_NOREPLACE`
    /// (`EEXIST` if `dst` exists); `RENAME_EXCHANGE` is not built (`EINVAL`).
    pub fn rename(&self, src: &str, dst: &str, flags: u32) -> Result<(), Errno> {
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(Errno::EINVAL);
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let src = path::normalize(src)?;
        let dst = path::normalize(dst)?;
        if src == "/" || dst == "/" {
            return Err(Errno::EBUSY);
        }
        let src_inode = self.getattr_norm(&src).map_err(|e| self.refine(&src, e))?;
        let (parent, _) = path::split(&dst).ok_or(Errno::EBUSY)?;
        let parent_inode = self
            .getattr_norm(parent)
            .map_err(|e| self.refine(parent, e))?;
        if parent_inode.attr.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if src_inode.attr.kind == FileKind::Dir && dst != src && path::is_within(&dst, &src) {
            return Err(Errno::EINVAL);
        }
        if src == dst {
            return Ok(());
        }
        let dst_inode = match self.getattr_norm(&dst) {
            Ok(i) => Some(i),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        let dst_empty =
            || -> Result<bool, Errno> { Ok(self.readdir_page(&dst, None, 1)?.0.is_empty()) };
        match plan(&src_inode, dst_inode.as_ref(), noreplace, dst_empty)? {
            Plan::Nothing => return Ok(()),
            Plan::Move => {}
            Plan::Replace { dst_dir: true } => self.rmdir_norm(&dst)?,
            Plan::Replace { dst_dir: false } => self.unlink_norm(&dst)?,
        }
        self.move_inode(&src, &dst, src_inode)
    }

    /// Moves the record `inode` found at `src` to the free name `dst`.
    fn move_inode(&self, src: &str, dst: &str, mut inode: Inode) -> Result<(), Errno> {
        if inode.attr.kind != FileKind::Dir {
            want_inode(self.shared.call_owner(Request::Adopt {
                path: dst.to_string(),
                inode,
            }))?;
            want_inode(self.shared.call_owner(Request::Remove {
                path: src.to_string(),
                dir: false,
            }))?;
            return Ok(());
        }
        // The record lands at dst with no entries yet: its link count is that
        // of an empty directory until its subdirectories move in.
        inode.attr.nlink = 2;
        want_inode(self.shared.call_owner(Request::Adopt {
            path: dst.to_string(),
            inode,
        }))?;
        for child in self.readdir_norm(src)? {
            let from = format!("{}/{}", src.trim_end_matches('/'), child.name);
            let to = format!("{dst}/{}", child.name);
            let rec = match self.getattr_norm(&from) {
                Ok(r) => r,
                Err(Errno::ENOENT) => continue, // removed meanwhile
                Err(e) => return Err(e),
            };
            self.move_inode(&from, &to, rec)?;
        }
        self.rmdir_norm(src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealfs_proto::{Attr, Timespec};

    fn node(ino: u64, kind: FileKind) -> Inode {
        let t = Timespec::default();
        Inode {
            attr: Attr {
                ino,
                kind,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: 0,
                nlink: 1,
                atime: t,
                mtime: t,
                ctime: t,
            },
            target: None,
        }
    }

    #[test]
    fn plans() {
        let f = node(1, FileKind::File);
        let g = node(2, FileKind::File);
        let d = node(3, FileKind::Dir);
        let e = node(4, FileKind::Dir);
        let empty = || Ok(true);
        let full = || Ok(false);
        assert_eq!(plan(&f, None, false, empty), Ok(Plan::Move));
        assert_eq!(plan(&f, None, true, empty), Ok(Plan::Move));
        assert_eq!(plan(&f, Some(&g), true, empty), Err(Errno::EEXIST));
        assert_eq!(plan(&f, Some(&f), false, empty), Ok(Plan::Nothing));
        assert_eq!(
            plan(&f, Some(&g), false, empty),
            Ok(Plan::Replace { dst_dir: false })
        );
        assert_eq!(plan(&d, Some(&f), false, empty), Err(Errno::ENOTDIR));
        assert_eq!(plan(&f, Some(&d), false, empty), Err(Errno::EISDIR));
        assert_eq!(plan(&d, Some(&e), false, full), Err(Errno::ENOTEMPTY));
        assert_eq!(
            plan(&d, Some(&e), false, empty),
            Ok(Plan::Replace { dst_dir: true })
        );
    }
}

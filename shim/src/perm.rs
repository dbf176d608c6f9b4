//! Permission checks for callers that are not root, made by the shim
//! because the servers check none (the FUSE mount has the kernel's
//! `default_permissions` instead). They follow Linux's rules for the
//! operation's own objects: read/write permission on the file opened or
//! truncated, write and search permission on the directory a name is added
//! to or removed from, the sticky bit, and the owner rules of chmod, chown
//! and utimes; and search permission on every directory a path walks
//! through ([`may_search`], called when a path is resolved). The search
//! check costs one `lstat` request per directory component, for callers
//! other than root only.
//!
//! Root (effective uid 0) skips every check here, as on Linux; the extra
//! lookups these checks need are made only for other callers.

use sealfs_client::{Client, Errno, FileKind, Inode, SetAttr, TimeSet};

/// Read permission.
pub const R: u32 = 4;
/// Write permission.
pub const W: u32 = 2;
/// Search (directories) or execute permission.
pub const X: u32 = 1;

/// Whether these checks apply to effective uid `uid` (everyone but root).
pub fn applies_to(uid: u32) -> bool {
    uid != 0
}

/// The caller's effective uid and gid, or `None` for root.
pub fn caller() -> Option<(u32, u32)> {
    // SAFETY: these cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    applies_to(uid).then_some((uid, gid))
}

/// Whether the caller belongs to group `gid` (supplementary groups).
pub fn in_group(gid: u32) -> bool {
    let mut groups = [0 as libc::gid_t; 256];
    // SAFETY: getgroups into a local array of the size given.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}

/// The permission bits of `i` that apply to (`uid`, `gid`).
pub fn bits_for(i: &Inode, uid: u32, gid: u32) -> u32 {
    let m = i.attr.mode;
    if uid == i.attr.uid {
        (m >> 6) & 7
    } else if gid == i.attr.gid || in_group(i.attr.gid) {
        (m >> 3) & 7
    } else {
        m & 7
    }
}

/// `EACCES` unless (`uid`, `gid`) has every permission of `want` on `i`.
pub fn check(i: &Inode, want: u32, uid: u32, gid: u32) -> Result<(), Errno> {
    if want & !bits_for(i, uid, gid) != 0 {
        return Err(Errno::EACCES);
    }
    Ok(())
}

/// The directory part of a normalised SealFS path (`/a/b` → `/a`).
fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// Search permission on every directory a lookup of `p` walks through, as
/// Linux's path walk checks it: from `from` (the SealFS root for an
/// absolute path, the base directory for a relative one) down to the parent
/// of `p`. A component that is missing gives `ENOENT`, one that is not a
/// directory `ENOTDIR`, one without search permission `EACCES`, in walk
/// order. A relative path that climbs above its base is checked from the
/// root.
pub fn may_search(c: &Client, from: &str, p: &str, uid: u32, gid: u32) -> Result<(), Errno> {
    if p == "/" {
        return Ok(());
    }
    let par = parent(p);
    let within = |base: &str| base == "/" || par == base || par.starts_with(&format!("{base}/"));
    let from = if within(from) { from } else { "/" };
    let mut dir = from.trim_end_matches('/').to_string();
    let rest = par[from.len().min(par.len())..].trim_start_matches('/');
    let walk = std::iter::once(None).chain(rest.split('/').filter(|s| !s.is_empty()).map(Some));
    for comp in walk {
        if let Some(comp) = comp {
            dir.push('/');
            dir.push_str(comp);
        }
        let d = if dir.is_empty() { "/" } else { dir.as_str() };
        let i = c.lstat(d)?;
        if i.attr.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        check(&i, X, uid, gid)?;
    }
    Ok(())
}

/// Write and search permission on the directory that holds `p`; returns
/// that directory's inode.
pub fn may_change_dir(c: &Client, p: &str, uid: u32, gid: u32) -> Result<Inode, Errno> {
    let dir = c.stat(parent(p))?;
    if dir.attr.kind != FileKind::Dir {
        return Err(Errno::ENOTDIR);
    }
    check(&dir, W | X, uid, gid)?;
    Ok(dir)
}

/// What removing (or renaming away) the name `p` needs: write and search
/// permission on its directory and, if that directory is sticky, owning
/// the file or the directory (`EPERM` otherwise, as Linux answers).
pub fn may_delete(c: &Client, p: &str, uid: u32, gid: u32) -> Result<(), Errno> {
    let dir = may_change_dir(c, p, uid, gid)?;
    if dir.attr.mode & libc::S_ISVTX != 0 && dir.attr.uid != uid {
        let victim = c.lstat(p)?;
        if victim.attr.uid != uid {
            return Err(Errno::EPERM);
        }
    }
    Ok(())
}

/// What `open(p, flags)` needs: read and/or write permission on an
/// existing file (`O_TRUNC` needs write), or write and search permission on
/// the directory when `O_CREAT` makes a new one. Lookup errors are left to
/// the open itself.
pub fn may_open(c: &Client, p: &str, flags: i32, uid: u32, gid: u32) -> Result<(), Errno> {
    match c.stat(p) {
        Ok(i) => {
            if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 {
                return Ok(()); // EEXIST comes first
            }
            let mut want = match flags & libc::O_ACCMODE {
                libc::O_WRONLY => W,
                libc::O_RDWR => R | W,
                _ => R,
            };
            if flags & libc::O_TRUNC != 0 && i.attr.kind == FileKind::File {
                want |= W;
            }
            check(&i, want, uid, gid)
        }
        Err(Errno::ENOENT) if flags & libc::O_CREAT != 0 => {
            may_change_dir(c, p, uid, gid).map(|_| ())
        }
        Err(_) => Ok(()),
    }
}

/// What a setattr of `i` needs from a caller that is not root: owning it
/// for chmod, explicit times and a group change (to a group the caller is
/// in); no owner change at all; write permission (or owning it) for
/// "times = now", write permission for a size change.
pub fn may_setattr(i: &Inode, set: &SetAttr, uid: u32, gid: u32) -> Result<(), Errno> {
    let owner = i.attr.uid == uid;
    if set.mode.is_some() && !owner {
        return Err(Errno::EPERM);
    }
    if set.uid.is_some_and(|u| u != i.attr.uid) {
        return Err(Errno::EPERM);
    }
    if let Some(g) = set.gid {
        if g != i.attr.gid && !(owner && (g == gid || in_group(g))) {
            return Err(Errno::EPERM);
        }
    }
    let times = [set.atime, set.mtime];
    if times.iter().any(|t| matches!(t, Some(TimeSet::At(_)))) && !owner {
        return Err(Errno::EPERM);
    }
    if times.iter().any(|t| matches!(t, Some(TimeSet::Now))) && !owner {
        check(i, W, uid, gid)?;
    }
    if set.size.is_some() {
        check(i, W, uid, gid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealfs_client::{Attr, Timespec};

    fn inode(kind: FileKind, mode: u32, uid: u32, gid: u32) -> Inode {
        Inode {
            attr: Attr {
                ino: 9,
                kind,
                mode,
                uid,
                gid,
                size: 0,
                nlink: 1,
                atime: Timespec::default(),
                mtime: Timespec::default(),
                ctime: Timespec::default(),
            },
            target: None,
        }
    }

    #[test]
    fn bits_by_owner_group_other() {
        let f = inode(FileKind::File, 0o640, 1000, 1000);
        assert_eq!(check(&f, R | W, 1000, 5), Ok(()));
        assert_eq!(check(&f, R, 2000, 1000), Ok(()));
        assert_eq!(check(&f, W, 2000, 1000), Err(Errno::EACCES));
        assert_eq!(check(&f, R, 2000, 2000), Err(Errno::EACCES));
        // The owner class decides even when the group class would allow.
        let g = inode(FileKind::File, 0o070, 1000, 1000);
        assert_eq!(check(&g, R, 1000, 1000), Err(Errno::EACCES));
    }

    #[test]
    fn setattr_rules() {
        let f = inode(FileKind::File, 0o644, 1000, 1000);
        let chmod = SetAttr {
            mode: Some(0o600),
            ..Default::default()
        };
        assert_eq!(may_setattr(&f, &chmod, 1000, 1000), Ok(()));
        assert_eq!(may_setattr(&f, &chmod, 2000, 2000), Err(Errno::EPERM));
        let chown = SetAttr {
            uid: Some(2000),
            ..Default::default()
        };
        assert_eq!(may_setattr(&f, &chown, 1000, 1000), Err(Errno::EPERM));
        let same = SetAttr {
            uid: Some(1000),
            ..Default::default()
        };
        assert_eq!(may_setattr(&f, &same, 1000, 1000), Ok(()));
        let at = SetAttr {
            mtime: Some(TimeSet::At(Timespec::default())),
            ..Default::default()
        };
        assert_eq!(may_setattr(&f, &at, 2000, 2000), Err(Errno::EPERM));
        let now = SetAttr {
            mtime: Some(TimeSet::Now),
            ..Default::default()
        };
        assert_eq!(may_setattr(&f, &now, 2000, 2000), Err(Errno::EACCES));
        let open = inode(FileKind::File, 0o666, 1000, 1000);
        assert_eq!(may_setattr(&open, &now, 2000, 2000), Ok(()));
        let size = SetAttr {
            size: Some(0),
            ..Default::default()
        };
        assert_eq!(may_setattr(&f, &size, 2000, 2000), Err(Errno::EACCES));
    }

    #[test]
    fn parents() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
    }
}

//! Recovery: finishes creates and removes that a crash or an unreachable
//! peer left half done (records in the `Pending` or `Unlinking` state, see
//! [`crate::store::RecordState`]).
//!
//! * `Pending`: ask the parent's owner for the name. Present with the same
//!   ino → the create happened: the record becomes `Normal`. Absent → it did
//!   not: the record is deleted. Unreachable → next round.
//! * `Unlinking`: `RemoveEntry` (idempotent) on the parent's owner, then the
//!   record is deleted.
//!
//! Runs at start and then every [`INTERVAL`], each record under its path
//! lock, so it never races a request on the same path.

use crate::ops::Node;
use std::sync::Arc;
use std::time::Duration;

/// Time between two recovery rounds.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// One pass over every unsettled record. Returns how many are left.
pub async fn recover_once(node: &Arc<Node>) -> usize {
    let meta = node.meta.clone();
    let list = match tokio::task::spawn_blocking(move || meta.unsettled()).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::warn!("recovery: cannot list unsettled records: {e}");
            return 0;
        }
        Err(e) => {
            tracing::warn!("recovery: listing task failed: {e}");
            return 0;
        }
    };
    let mut left = 0;
    for (path, _) in list {
        let _g = node.locks.lock(&path).await;
        // Re-read under the lock: a request may have settled it meanwhile.
        let meta = node.meta.clone();
        let p = path.clone();
        let rec = match tokio::task::spawn_blocking(move || meta.get_inode(&p)).await {
            Ok(Ok(Some(r))) if !r.is_normal() => r,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                tracing::warn!("recovery: cannot read {path}: {e}");
                left += 1;
                continue;
            }
            Err(_) => {
                left += 1;
                continue;
            }
        };
        if let Err(e) = node.resolve(&path, rec).await {
            tracing::debug!("recovery: {path} not settled yet ({e}); next round");
            left += 1;
        }
    }
    left
}

/// Runs recovery forever (and, under `SyncPolicy::None`, makes the meta
/// store durable once a round so its file does not grow without bound).
pub async fn run(node: Arc<Node>) {
    loop {
        recover_once(&node).await;
        if node.sync_policy() == crate::SyncPolicy::None {
            let meta = node.meta.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || meta.flush()).await {
                tracing::warn!("meta checkpoint failed: {e}");
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Membership;
    use crate::store::{FileDataStore, InodeRecord, MetaOp, MetaStore, RecordState, RedbMetaStore};
    use sealfs_proto::{
        Attr, ClusterMap, DirEntry, FileKind, Inode, Ring, ServerId, ServerInfo, ServerState,
        Timespec,
    };

    fn inode(ino: u64, kind: FileKind) -> Inode {
        let t = Timespec::now();
        let nlink = if kind == FileKind::Dir { 2 } else { 1 };
        Inode {
            attr: Attr {
                ino,
                kind,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                nlink,
                atime: t,
                mtime: t,
                ctime: t,
            },
            target: None,
        }
    }

    /// A directory path whose owner in `ring` is `id`.
    fn dir_owned_by(ring: &Ring, id: ServerId) -> String {
        (0..)
            .map(|i| format!("/dir{i}"))
            .find(|p| ring.owner_path(p) == Some(id))
            .unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn settles_pending_and_unlinking_records() {
        let tmp = tempfile::tempdir().unwrap();
        let (meta_dir, data_dir) = (tmp.path().join("m"), tmp.path().join("d"));
        std::fs::create_dir_all(&meta_dir).unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(RedbMetaStore::open(&meta_dir, true).unwrap());
        let data = Arc::new(FileDataStore::open(&data_dir, false).unwrap());
        // s1 is this server; s2 is unreachable (nothing listens on port 1).
        let members = Arc::new(Membership::new(
            "127.0.0.1:1",
            "0".repeat(32),
            "127.0.0.1:2".into(),
        ));
        let server = |id, addr: &str| ServerInfo {
            id: ServerId(id),
            uuid: format!("{id}"),
            addr: addr.into(),
            state: ServerState::Up,
        };
        let map = ClusterMap {
            epoch: 1,
            chunk_size: 1 << 16,
            vnodes: 64,
            servers: vec![server(1, "127.0.0.1:2"), server(2, "127.0.0.1:1")],
        };
        let ring = Ring::of_map(&map);
        members.set_registered(ServerId(1), map);
        let node = Arc::new(
            Node::new(
                meta.clone(),
                data,
                members,
                crate::SyncPolicy::Fsync,
                meta_dir,
                data_dir,
            )
            .unwrap(),
        );

        let local = dir_owned_by(&ring, ServerId(1));
        let remote = dir_owned_by(&ring, ServerId(2));
        let child = |d: &str, n: &str| format!("{d}/{n}");
        let pending = |d: &str, n: &str, ino| InodeRecord {
            inode: inode(ino, FileKind::File),
            state: RecordState::Pending {
                parent: d.into(),
                name: n.into(),
            },
        };
        let entry = |n: &str, ino, kind| DirEntry {
            name: n.into(),
            kind,
            ino,
        };
        let mut unl = InodeRecord {
            inode: inode(13, FileKind::Dir),
            state: RecordState::Unlinking {
                parent: local.clone(),
                name: "unl".into(),
            },
        };
        let mut dir_rec = InodeRecord::normal(inode(10, FileKind::Dir));
        dir_rec.inode.attr.nlink = 3; // "unl" is a subdirectory
        meta.commit(&[
            MetaOp::PutInode(local.clone(), dir_rec),
            MetaOp::PutInode(child(&local, "absent"), pending(&local, "absent", 11)),
            MetaOp::PutInode(child(&local, "linked"), pending(&local, "linked", 12)),
            MetaOp::PutEntry(local.clone(), entry("linked", 12, FileKind::File)),
            MetaOp::PutInode(child(&local, "other"), pending(&local, "other", 14)),
            MetaOp::PutEntry(local.clone(), entry("other", 99, FileKind::File)),
            MetaOp::PutInode(child(&local, "unl"), unl.clone()),
            MetaOp::PutEntry(local.clone(), entry("unl", 13, FileKind::Dir)),
            MetaOp::PutInode(child(&remote, "far"), pending(&remote, "far", 15)),
        ])
        .unwrap();

        assert_eq!(
            recover_once(&node).await,
            1,
            "only the record whose parent is unreachable is left"
        );
        assert_eq!(meta.get_inode(&child(&local, "absent")).unwrap(), None);
        assert_eq!(meta.get_inode(&child(&local, "other")).unwrap(), None);
        assert_eq!(
            meta.get_entry(&local, "other").unwrap().map(|e| e.ino),
            Some(99)
        );
        let linked = meta.get_inode(&child(&local, "linked")).unwrap().unwrap();
        assert!(linked.is_normal());
        assert_eq!(meta.get_inode(&child(&local, "unl")).unwrap(), None);
        assert_eq!(meta.get_entry(&local, "unl").unwrap(), None);
        assert_eq!(meta.get_inode(&local).unwrap().unwrap().inode.attr.nlink, 2);
        let far = meta.get_inode(&child(&remote, "far")).unwrap().unwrap();
        assert!(!far.is_normal());
        assert_eq!(meta.unsettled().unwrap().len(), 1);

        // An Unlinking record whose name is already gone is just deleted.
        unl.inode.attr.ino = 16;
        meta.commit(&[MetaOp::PutInode(child(&local, "unl2"), unl)])
            .unwrap();
        assert_eq!(recover_once(&node).await, 1);
        assert_eq!(meta.get_inode(&child(&local, "unl2")).unwrap(), None);
        assert!(node.locks.is_empty());
    }
}

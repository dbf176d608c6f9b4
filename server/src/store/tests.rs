//! Tests of the redb meta store and the chunk-file data store.

use super::*;
use sealfs_proto::{Attr, FileKind, Inode, Timespec};
use std::path::Path;

fn inode(ino: u64, kind: FileKind) -> Inode {
    let t = Timespec {
        sec: 1_700_000_000,
        nsec: 5,
    };
    Inode {
        attr: Attr {
            ino,
            kind,
            mode: 0o644,
            uid: 1,
            gid: 2,
            size: 0,
            nlink: 1,
            atime: t,
            mtime: t,
            ctime: t,
        },
        target: None,
    }
}

fn entry(name: &str, ino: u64) -> DirEntry {
    DirEntry {
        name: name.into(),
        kind: FileKind::File,
        ino,
    }
}

fn open_meta(dir: &Path) -> RedbMetaStore {
    RedbMetaStore::open(dir, true).unwrap()
}

#[test]
fn meta_put_get_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = open_meta(dir.path());
        assert_eq!(m.get_inode("/a").unwrap(), None);
        let rec = InodeRecord::normal(inode(7, FileKind::File));
        m.commit(&[
            MetaOp::PutInode("/a".into(), rec.clone()),
            MetaOp::PutEntry("/".into(), entry("a", 7)),
        ])
        .unwrap();
        assert_eq!(m.get_inode("/a").unwrap(), Some(rec));
        assert_eq!(m.get_entry("/", "a").unwrap(), Some(entry("a", 7)));
        assert_eq!(m.get_entry("/", "b").unwrap(), None);
        m.set_ino_reserved(8192).unwrap();
        m.commit(&[
            MetaOp::PutInode(
                "/gone".into(),
                InodeRecord::normal(inode(9, FileKind::File)),
            ),
            MetaOp::DelInode("/gone".into()),
        ])
        .unwrap();
    }
    // Reopen = restart.
    let m = open_meta(dir.path());
    assert_eq!(m.get_inode("/a").unwrap().unwrap().inode.attr.ino, 7);
    assert_eq!(m.get_inode("/gone").unwrap(), None);
    assert_eq!(m.get_entry("/", "a").unwrap(), Some(entry("a", 7)));
    assert_eq!(m.ino_reserved().unwrap(), 8192);
}

#[test]
fn meta_new_store_has_no_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let m = open_meta(dir.path());
    assert_eq!(m.ino_reserved().unwrap(), 0);
    assert!(m.unsettled().unwrap().is_empty());
}

#[test]
fn meta_listing_is_in_name_order_paged_and_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let m = open_meta(dir.path());
    let mut ops = Vec::new();
    for (i, n) in ["zeta", "alpha", "Mid", "beta", "a b", "é"]
        .iter()
        .enumerate()
    {
        ops.push(MetaOp::PutEntry("/d".into(), entry(n, i as u64 + 10)));
    }
    // Neighbouring directories whose names share the prefix.
    ops.push(MetaOp::PutEntry("/d2".into(), entry("x", 1)));
    ops.push(MetaOp::PutEntry("/".into(), entry("d", 2)));
    ops.push(MetaOp::PutEntry("/d/sub".into(), entry("y", 3)));
    m.commit(&ops).unwrap();

    let all: Vec<String> = m
        .list_entries("/d", None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(all, ["Mid", "a b", "alpha", "beta", "zeta", "é"]);
    let page: Vec<String> = m
        .list_entries("/d", Some("alpha"), 2)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(page, ["beta", "zeta"]);
    // A cursor that is not itself an entry still works.
    let page: Vec<String> = m
        .list_entries("/d", Some("b"), 10)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(page, ["beta", "zeta", "é"]);
    assert!(m.list_entries("/d", Some("é"), 10).unwrap().is_empty());
    assert!(m.has_entries("/d").unwrap());
    assert!(m.has_entries("/d/sub").unwrap());
    assert!(!m.has_entries("/e").unwrap());
    assert_eq!(m.list_entries("/", None, 10).unwrap(), vec![entry("d", 2)]);

    m.commit(&[MetaOp::DelEntry("/d/sub".into(), "y".into())])
        .unwrap();
    assert!(!m.has_entries("/d/sub").unwrap());
}

#[test]
fn meta_unsettled_tracks_states() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = open_meta(dir.path());
        let pending = InodeRecord {
            inode: inode(1, FileKind::File),
            state: RecordState::Pending {
                parent: "/".into(),
                name: "p".into(),
            },
        };
        let unlinking = InodeRecord {
            inode: inode(2, FileKind::Dir),
            state: RecordState::Unlinking {
                parent: "/".into(),
                name: "u".into(),
            },
        };
        m.commit(&[
            MetaOp::PutInode("/p".into(), pending.clone()),
            MetaOp::PutInode("/u".into(), unlinking),
            MetaOp::PutInode("/n".into(), InodeRecord::normal(inode(3, FileKind::File))),
        ])
        .unwrap();
        let mut u = m.unsettled().unwrap();
        u.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            u.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["/p", "/u"]
        );
        assert_eq!(u[0].1, pending);
        // Settling: Normal and deletion both leave the list.
        m.commit(&[MetaOp::PutInode(
            "/p".into(),
            InodeRecord::normal(inode(1, FileKind::File)),
        )])
        .unwrap();
    }
    let m = open_meta(dir.path());
    let u = m.unsettled().unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].0, "/u");
    m.commit(&[MetaOp::DelInode("/u".into())]).unwrap();
    assert!(m.unsettled().unwrap().is_empty());
}

#[test]
fn meta_unsynced_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = RedbMetaStore::open(dir.path(), false).unwrap();
        m.commit(&[MetaOp::PutEntry("/".into(), entry("a", 1))])
            .unwrap();
        m.flush().unwrap();
    }
    let m = RedbMetaStore::open(dir.path(), false).unwrap();
    assert_eq!(m.get_entry("/", "a").unwrap(), Some(entry("a", 1)));
}

#[test]
fn meta_refuses_a_second_open() {
    let dir = tempfile::tempdir().unwrap();
    let _m = open_meta(dir.path());
    assert!(RedbMetaStore::open(dir.path(), true).is_err());
}

// ---------------- data store ----------------

fn chunk_len(dir: &Path, ino: u64, chunk: u64) -> Option<u64> {
    std::fs::metadata(
        dir.join("chunks")
            .join(format!("{ino:016x}"))
            .join(chunk.to_string()),
    )
    .ok()
    .map(|m| m.len())
}

#[test]
fn data_write_read_sparse_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = FileDataStore::open(dir.path(), false).unwrap();
    assert!(
        d.read(5, 0, 0, 100).unwrap().is_empty(),
        "missing chunk reads empty"
    );
    d.write(5, 0, 10, b"hello").unwrap();
    // Hole before the data reads as zeros; short read at the end.
    let r = d.read(5, 0, 0, 100).unwrap();
    assert_eq!(r.len(), 15);
    assert_eq!(&r[..10], &[0u8; 10]);
    assert_eq!(&r[10..], b"hello");
    assert_eq!(d.read(5, 0, 12, 2).unwrap(), &b"ll"[..]);
    assert!(d.read(5, 0, 15, 10).unwrap().is_empty());
    assert!(d.read(5, 0, 1000, 10).unwrap().is_empty());
    // Overwrite in place, other chunks untouched.
    d.write(5, 0, 11, b"EL").unwrap();
    assert_eq!(d.read(5, 0, 10, 5).unwrap(), &b"hELlo"[..]);
    assert!(d.read(5, 1, 0, 10).unwrap().is_empty());
    assert!(d.read(6, 0, 0, 10).unwrap().is_empty());
}

#[test]
fn data_survives_reopen_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = FileDataStore::open(dir.path(), true).unwrap();
        d.write(1, 3, 0, b"abc").unwrap();
        d.sync(Some(1)).unwrap();
        d.sync(Some(99)).unwrap();
        d.sync(None).unwrap();
    }
    let d = FileDataStore::open(dir.path(), false).unwrap();
    assert_eq!(d.read(1, 3, 0, 3).unwrap(), &b"abc"[..]);
}

#[test]
fn data_truncate_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let cs = 100u32;
    let d = FileDataStore::open(dir.path(), false).unwrap();
    let full = vec![7u8; cs as usize];
    for c in 0..4 {
        d.write(9, c, 0, &full).unwrap();
    }
    // Inside chunk 2: chunk 3 goes, chunk 2 is shortened, 0 and 1 stay.
    d.truncate(9, 250, cs).unwrap();
    assert_eq!(chunk_len(dir.path(), 9, 0), Some(100));
    assert_eq!(chunk_len(dir.path(), 9, 1), Some(100));
    assert_eq!(chunk_len(dir.path(), 9, 2), Some(50));
    assert_eq!(chunk_len(dir.path(), 9, 3), None);
    // Exactly on a chunk boundary: chunk 2 (start 200 ≥ 200) goes entirely.
    d.truncate(9, 200, cs).unwrap();
    assert_eq!(chunk_len(dir.path(), 9, 1), Some(100));
    assert_eq!(chunk_len(dir.path(), 9, 2), None);
    // Growing is a no-op on the data (holes read as zeros).
    d.truncate(9, 10_000, cs).unwrap();
    assert_eq!(chunk_len(dir.path(), 9, 1), Some(100));
    // A chunk already shorter than the cut stays as it is.
    d.write(9, 1, 0, b"x").unwrap();
    d.truncate(9, 190, cs).unwrap();
    assert_eq!(chunk_len(dir.path(), 9, 1), Some(90));
    // To zero: nothing left; truncating nothing is fine.
    d.truncate(9, 0, cs).unwrap();
    assert_eq!(chunk_len(dir.path(), 9, 0), None);
    assert_eq!(chunk_len(dir.path(), 9, 1), None);
    d.truncate(12345, 0, cs).unwrap();
    // Huge chunk index does not overflow.
    d.write(9, u64::MAX, 0, b"z").unwrap();
    d.truncate(9, 1, cs).unwrap();
    assert_eq!(chunk_len(dir.path(), 9, u64::MAX), None);
}

#[test]
fn data_remove_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let d = FileDataStore::open(dir.path(), true).unwrap();
    d.write(4, 0, 0, b"a").unwrap();
    d.write(4, 7, 0, b"b").unwrap();
    d.remove(4).unwrap();
    assert!(d.read(4, 0, 0, 1).unwrap().is_empty());
    assert!(d.read(4, 7, 0, 1).unwrap().is_empty());
    d.remove(4).unwrap();
    d.remove(5).unwrap();
}

#[test]
fn errno_of_store_errors() {
    let e = StoreError::io("write x", std::io::Error::from_raw_os_error(libc::ENOSPC));
    assert_eq!(e.errno(), sealfs_proto::Errno::ENOSPC);
    let e = StoreError::io("x", std::io::Error::other("no code"));
    assert_eq!(e.errno(), sealfs_proto::Errno::EIO);
    assert_eq!(
        StoreError::Corrupt("x".into()).errno(),
        sealfs_proto::Errno::EIO
    );
}

//! A full data or meta device. With the data dir on a 32 MiB tmpfs, writes fail
//! with ENOSPC, and keep failing until space is freed (also when the disk
//! is met at a segment roll), everything written before stays readable
//! (also after a restart), deleting files works on the full disk, and
//! freeing space makes the store writable again. Needs root (mount); skips with the reason if
//! the mount fails.

use sealfs_proto::{DirEntry, Errno, FileKind};
use sealfs_server::engine::EngineOptions;
use sealfs_server::{DataStore, InodeRecord, LogDataStore, LogMetaStore, MetaOp, MetaStore};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path) -> Result<Tmpfs, String> {
    std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(at)
        .status()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !st.success() {
        return Err(format!("mount -t tmpfs failed ({st})"));
    }
    Ok(Tmpfs(at.to_path_buf()))
}

/// A 32 MiB tmpfs at `base/tmpfs`, or `None` once it said why `test`
/// skips.
fn tmpfs_or_skip(base: &Path, test: &str) -> Option<Tmpfs> {
    match mount_tmpfs(&base.join("tmpfs")) {
        Ok(m) => Some(m),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

fn open(data: &Path, meta: &Path) -> LogDataStore {
    open_with(data, meta, 1 << 20)
}

fn open_with(data: &Path, meta: &Path, segment_size: u64) -> LogDataStore {
    let o = EngineOptions {
        segment_size,
        tick: Duration::from_millis(5),
        ..EngineOptions::default()
    };
    LogDataStore::open(data, meta, 64 << 10, false, true, o).unwrap()
}

#[test]
fn full_data_device_gives_enospc_and_recovers() {
    let base = tempfile::tempdir().unwrap();
    let Some(m) = tmpfs_or_skip(base.path(), "full_data_device_gives_enospc_and_recovers") else {
        return;
    };
    let mnt = m.0.clone();
    let data = mnt.join("data");
    let meta = base.path().join("meta");
    // Ballast the user can delete later.
    std::fs::write(mnt.join("ballast"), vec![1u8; 4 << 20]).unwrap();
    let s = open(&data, &meta);
    let block = |i: u64| vec![(i % 253) as u8; 4096];
    let mut written = 0u64;
    let mut big_failed = false;
    let err = loop {
        // Mostly small files in the log, some large chunks as files.
        let r = if written % 50 == 49 {
            s.write(written, 0, 0, &vec![3u8; 200_000])
        } else {
            s.write(written, 0, 0, &block(written))
        };
        match r {
            Ok(()) => written += 1,
            Err(e) if written % 50 == 49 && !big_failed => {
                // A big write may fail first while small ones still fit.
                assert_eq!(e.errno(), Errno::ENOSPC, "{e}");
                big_failed = true;
                written += 1;
            }
            Err(e) => break e,
        }
        assert!(written < 100_000, "never got ENOSPC");
    };
    assert_eq!(err.errno(), Errno::ENOSPC, "{err}");
    assert!(written > 1000, "only {written} writes fit");
    let readable = |s: &LogDataStore, upto: u64| {
        for i in 0..upto {
            let r = s.read(i, 0, 0, 8192).unwrap();
            if i % 50 == 49 {
                // A write that failed may have landed in part (as on a
                // local file system after a short write).
                assert!(r.iter().all(|&b| b == 3 || b == 0), "ino {i}");
            } else {
                assert_eq!(r, block(i), "ino {i} after ENOSPC");
            }
        }
    };
    readable(&s, written);
    // Still full: another write fails the same way, nothing breaks.
    assert_eq!(
        s.write(written, 0, 0, &block(written)).unwrap_err().errno(),
        Errno::ENOSPC
    );
    // Deletes work on a full disk (the space reserve).
    for i in (0..200).step_by(2) {
        s.remove(i).unwrap();
    }
    s.sync(None)
        .unwrap_or_else(|e| panic!("sync on a full disk: {e}"));
    drop(s);
    // A restart on the full disk serves the same data.
    let s = open(&data, &meta);
    for i in (0..200).step_by(2) {
        assert!(s.read(i, 0, 0, 10).unwrap().is_empty());
    }
    readable(&s, 0);
    for i in (201..written).step_by(7) {
        if i % 50 != 49 {
            assert_eq!(s.read(i, 0, 0, 8192).unwrap(), block(i));
        }
    }
    // Freeing space makes it writable again.
    std::fs::remove_file(mnt.join("ballast")).unwrap();
    for i in 0..100u64 {
        s.write(1_000_000 + i, 0, 0, &block(i)).unwrap();
    }
    s.write(2_000_000, 0, 0, &vec![5u8; 300_000]).unwrap();
    s.sync(None).unwrap();
    assert_eq!(s.read(1_000_050, 0, 0, 8192).unwrap(), block(50));
    drop(s);
}

/// With segments of 64 KiB (a roll every 15 writes, so the full disk is
/// mostly met at a roll: the new segment's file or its zeros written
/// ahead), 50 writes after the first ENOSPC all fail the same way, every
/// write before stays readable, deletes work and freeing space makes the
/// store writable. A write gets ENOSPC only when no lane of the log has
/// room: run beside the other test, this one failed 15 runs in 80 when a
/// writer that found its own lane busy (the background checkpoint holds
/// each lane a moment) wrote into another lane's zeros written ahead,
/// after an ENOSPC in its own. (It does not reproduce the roll that
/// trimmed the old segment before creating the new one: with that order
/// restored it still passed 10 runs alone.)
#[test]
fn a_full_disk_met_at_segment_rolls_stays_full() {
    let base = tempfile::tempdir().unwrap();
    let Some(m) = tmpfs_or_skip(base.path(), "a_full_disk_met_at_segment_rolls_stays_full") else {
        return;
    };
    let mnt = m.0.clone();
    let data = mnt.join("data");
    let meta = base.path().join("meta");
    std::fs::write(mnt.join("ballast"), vec![1u8; 2 << 20]).unwrap();
    let s = open_with(&data, &meta, 64 << 10);
    let block = |i: u64| vec![(i % 251) as u8; 4096];
    let mut written = 0u64;
    let err = loop {
        match s.write(written, 0, 0, &block(written)) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100_000, "never got ENOSPC");
    };
    assert_eq!(err.errno(), Errno::ENOSPC, "{err}");
    assert!(written > 1000, "only {written} writes fit");
    for k in 0..50 {
        let i = written + 1 + k;
        match s.write(i, 0, 0, &block(i)) {
            Err(e) => assert_eq!(
                e.errno(),
                Errno::ENOSPC,
                "write {k} after the first ENOSPC: {e}"
            ),
            Ok(()) => panic!("write {k} after the first ENOSPC succeeded: space came back"),
        }
    }
    for i in 0..written {
        assert_eq!(s.read(i, 0, 0, 8192).unwrap(), block(i), "ino {i}");
    }
    for i in (0..64).step_by(2) {
        s.remove(i).unwrap();
    }
    std::fs::remove_file(mnt.join("ballast")).unwrap();
    for i in 0..100u64 {
        s.write(1_000_000 + i, 0, 0, &block(i)).unwrap();
    }
    s.sync(None).unwrap();
    assert!(s.read(0, 0, 0, 10).unwrap().is_empty());
    assert_eq!(s.read(1, 0, 0, 8192).unwrap(), block(1));
    assert_eq!(s.read(1_000_099, 0, 0, 8192).unwrap(), block(99));
}

/// The meta store on a 32 MiB tmpfs, its index there too (as on a server
/// whose `--meta-dir` is its own small device).
fn open_meta(meta: &Path) -> LogMetaStore {
    let o = EngineOptions {
        segment_size: 1 << 20,
        tick: Duration::from_millis(5),
        ..EngineOptions::default()
    };
    LogMetaStore::open(meta, meta, false, o).unwrap()
}

/// A name of 200 bytes, so that the device fills in some 30 000 creates.
fn long_name(i: u64) -> String {
    format!("{i:0>200}")
}

fn create(s: &LogMetaStore, i: u64) -> Result<(), sealfs_server::StoreError> {
    s.commit(&[
        MetaOp::PutInode(
            format!("/d/{}", long_name(i)),
            InodeRecord::normal(common::file_inode(i, 0)),
        ),
        MetaOp::PutEntry(
            "/d".into(),
            DirEntry {
                name: long_name(i),
                kind: FileKind::File,
                ino: i,
            },
        ),
    ])
}

/// A full meta device (its log and the index of its records): creates fail
/// with ENOSPC, and keep failing, while every file made before stays
/// there with its entry (also after a restart); deletes work on the full
/// device; freeing space makes it writable again.
#[test]
fn full_meta_device_gives_enospc_and_recovers() {
    let base = tempfile::tempdir().unwrap();
    let Some(m) = tmpfs_or_skip(base.path(), "full_meta_device_gives_enospc_and_recovers") else {
        return;
    };
    let mnt = m.0.clone();
    let meta = mnt.join("meta");
    std::fs::write(mnt.join("ballast"), vec![1u8; 4 << 20]).unwrap();
    let s = open_meta(&meta);
    let mut made = 0u64;
    let err = loop {
        match create(&s, made) {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 1_000_000, "never got ENOSPC");
    };
    assert_eq!(err.errno(), Errno::ENOSPC, "{err}");
    assert!(made > 1000, "only {made} creates fit");
    let there = |s: &LogMetaStore, i: u64| {
        let r = s.get_inode(&format!("/d/{}", long_name(i))).unwrap();
        let e = s.get_entry("/d", &long_name(i)).unwrap();
        (r.map(|r| r.inode.attr.ino), e.map(|e| e.ino))
    };
    for i in 0..made {
        assert_eq!(there(&s, i), (Some(i), Some(i)), "file {i} after ENOSPC");
    }
    // The failed create left nothing half made.
    assert_eq!(there(&s, made), (None, None));
    for _ in 0..20 {
        assert_eq!(create(&s, made).unwrap_err().errno(), Errno::ENOSPC);
    }
    // Deletes work on a full device (the space reserve).
    for i in (0..200).step_by(2) {
        s.commit(&[
            MetaOp::DelInode(format!("/d/{}", long_name(i))),
            MetaOp::DelEntry("/d".into(), long_name(i)),
        ])
        .unwrap_or_else(|e| panic!("delete {i} on a full device: {e}"));
    }
    s.flush()
        .unwrap_or_else(|e| panic!("sync on a full device: {e}"));
    drop(s);
    // A restart on the full device serves the same files.
    let s = open_meta(&meta);
    for i in 0..made {
        let want = (i >= 200 || i % 2 == 1).then_some(i);
        assert_eq!(there(&s, i), (want, want), "file {i} after a restart");
    }
    // Freeing space makes it writable again.
    std::fs::remove_file(mnt.join("ballast")).unwrap();
    for i in made..made + 1000 {
        create(&s, i).unwrap_or_else(|e| panic!("create {i} after freeing space: {e}"));
    }
    s.flush().unwrap();
    assert_eq!(there(&s, made + 500), (Some(made + 500), Some(made + 500)));
}

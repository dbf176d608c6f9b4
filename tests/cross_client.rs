//! Data written through one client is read back byte-exact through another,
//! including from many threads at once and across paged directory listings.

mod common;

use common::{ids, Cluster, Opts};
use rand::{RngCore, SeedableRng};
use std::collections::BTreeSet;
use std::sync::Arc;

#[test]
fn one_client_writes_another_reads() {
    let cl = Cluster::start(Opts::default());
    let a = cl.client();
    let b = cl.client();
    let (uid, gid) = ids();
    a.mkdir("/x", 0o755, uid, gid).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut files = Vec::new();
    for (i, len) in [
        0usize,
        1,
        4095,
        4096,
        65536,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        3 << 20,
    ]
    .iter()
    .enumerate()
    {
        let mut d = vec![0u8; *len];
        rng.fill_bytes(&mut d);
        let p = format!("/x/f{i}");
        a.write_file(&p, &d, 0o644).unwrap();
        files.push((p, d));
    }
    for (p, d) in &files {
        let got = b.read_file(p).unwrap();
        assert_eq!(got.len(), d.len(), "{p}");
        assert!(&got == d, "{p}: contents differ");
        assert_eq!(b.lstat(p).unwrap().attr.size, d.len() as u64);
    }
    // an overwrite in the middle, crossing a chunk boundary, seen by the other client
    let (p, mut d) = files.pop().unwrap();
    let ino = a.lstat(&p).unwrap().attr.ino;
    let patch = vec![0xAB; 10_000];
    let off = (1 << 20) - 5000;
    a.write_at(&p, ino, off as u64, &patch).unwrap();
    d[off..off + patch.len()].copy_from_slice(&patch);
    assert!(b.read_file(&p).unwrap() == d);
    // unaligned reads through the second client
    let part = b.read_at(&p, ino, (off - 3) as u64, 20_000).unwrap();
    assert!(part == d[off - 3..off - 3 + 20_000]);
}

#[test]
fn threads_write_distinct_files_and_one_shared_file() {
    let cl = Cluster::start(Opts::default());
    let c = Arc::new(cl.client());
    let (uid, gid) = ids();
    c.mkdir("/t", 0o755, uid, gid).unwrap();
    let shared = c
        .open("/t/shared", libc::O_CREAT | libc::O_WRONLY, 0o644, uid, gid)
        .unwrap()
        .attr
        .ino;
    let threads = 8;
    let per = 50;
    let block = 8192usize;
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let p = format!("/t/f{t}_{i}");
                    c.write_file(&p, format!("{t}:{i}").as_bytes(), 0o644)
                        .unwrap();
                }
                let data = vec![t as u8 + 1; block];
                c.write_at("/t/shared", shared, (t * block) as u64, &data)
                    .unwrap();
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let other = cl.client();
    // a small page size forces many readdir pages
    let mut names = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = other.readdir_page("/t", after.as_deref(), 7).unwrap();
        assert!(page.len() <= 7);
        for e in page {
            assert!(names.insert(e.name.clone()), "{} listed twice", e.name);
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(names.len(), threads * per + 1);
    for t in 0..threads {
        for i in 0..per {
            assert_eq!(
                other.read_file(&format!("/t/f{t}_{i}")).unwrap(),
                format!("{t}:{i}").as_bytes()
            );
        }
    }
    let s = other.read_file("/t/shared").unwrap();
    assert_eq!(s.len(), threads * block);
    for t in 0..threads {
        assert!(
            s[t * block..(t + 1) * block]
                .iter()
                .all(|&b| b == t as u8 + 1),
            "block {t}"
        );
    }
}

#[test]
fn attributes_and_statfs_seen_by_another_client() {
    use sealfs_proto::{SetAttr, TimeSet, Timespec};
    let cl = Cluster::start(Opts::default());
    let a = cl.client();
    let b = cl.client();
    a.write_file("/f", b"0123456789", 0o644).unwrap();
    let before = b.lstat("/f").unwrap().attr;
    let t = Timespec {
        sec: 1_000_000_000,
        nsec: 123,
    };
    a.setattr(
        "/f",
        SetAttr {
            mode: Some(0o4751),
            uid: Some(4242),
            gid: Some(4343),
            atime: Some(TimeSet::At(t)),
            mtime: Some(TimeSet::At(Timespec {
                sec: 2_000_000_000,
                nsec: 7,
            })),
            ..Default::default()
        },
    )
    .unwrap();
    let after = b.lstat("/f").unwrap().attr;
    assert_eq!(after.mode, 0o4751);
    assert_eq!((after.uid, after.gid), (4242, 4343));
    assert_eq!(after.atime, t);
    assert_eq!(
        after.mtime,
        Timespec {
            sec: 2_000_000_000,
            nsec: 7
        }
    );
    assert!(after.ctime >= before.ctime, "ctime moves on a change");
    assert_eq!(after.ino, before.ino);
    // a write moves mtime and size as seen by the other client
    a.write_at("/f", after.ino, 20, b"x").unwrap();
    let w = b.lstat("/f").unwrap().attr;
    assert_eq!(w.size, 21);
    assert!(
        w.mtime.sec < 2_000_000_000 && w.mtime >= before.mtime,
        "mtime is the write's time: {:?}",
        w.mtime
    );
    // statfs sums every server
    let s = b.statfs().unwrap();
    assert!(
        s.blocks > 0 && s.bsize > 0 && s.bfree <= s.blocks && s.namemax == 255,
        "{s:?}"
    );
}

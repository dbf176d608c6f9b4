//! A large file (64 MiB of random bytes) is striped over every server and
//! reads back with the same SHA-256.

mod common;

use common::{ids, Cluster, Opts};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += count_files(&p);
            } else {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn striped_64mib_file_round_trips() {
    let cl = Cluster::start(Opts {
        sync: "none",
        ..Opts::default()
    });
    let c = cl.client();
    let (uid, gid) = ids();
    let mut data = vec![0u8; 64 << 20];
    rand::rngs::StdRng::seed_from_u64(64).fill_bytes(&mut data);
    let want = Sha256::digest(&data);
    let ino = c
        .open("/big", libc::O_CREAT | libc::O_WRONLY, 0o644, uid, gid)
        .unwrap()
        .attr
        .ino;
    for (i, part) in data.chunks(16 << 20).enumerate() {
        assert_eq!(
            c.write_at("/big", ino, (i * (16 << 20)) as u64, part)
                .unwrap(),
            part.len()
        );
    }
    c.fsync("/big", ino).unwrap();
    assert_eq!(c.lstat("/big").unwrap().attr.size, 64 << 20);
    let back = c.read_file("/big").unwrap();
    assert_eq!(Sha256::digest(&back), want);
    // another client, reading in odd-sized pieces
    let d = cl.client();
    let mut h = Sha256::new();
    let mut off = 0u64;
    loop {
        let part = d.read_at("/big", ino, off, 3_333_333).unwrap();
        if part.is_empty() {
            break;
        }
        off += part.len() as u64;
        h.update(&part);
    }
    assert_eq!(h.finalize(), want);
    // every server holds some of the 64 chunks
    for i in 1..=3 {
        let n = count_files(&cl.server_dir(i).join("data"));
        assert!(n >= 5, "server {i} holds only {n} chunk files of 64");
    }
    // truncating down and unlinking free the chunks
    c.truncate("/big", 1000).unwrap();
    assert_eq!(c.read_file("/big").unwrap(), data[..1000]);
    c.truncate("/big", 5 << 20).unwrap();
    let grown = c.read_file("/big").unwrap();
    assert_eq!(grown.len(), 5 << 20);
    assert!(
        grown[1000..].iter().all(|&b| b == 0),
        "bytes past a truncate must read as zeros"
    );
    c.unlink("/big").unwrap();
    let left: usize = (1..=3)
        .map(|i| count_files(&cl.server_dir(i).join("data")))
        .sum();
    assert_eq!(left, 0, "unlink left chunk files behind");
}

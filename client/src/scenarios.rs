//! Behaviour of the whole client against the in-memory cluster of
//! [`crate::fake`]: routing, retries, striping, namespace rules.

use crate::fake::Cluster;
use crate::{Errno, FileKind, SetAttr};
use sealfs_proto::{ServerId, ServerState};

const RW: i32 = libc::O_RDWR;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn namespace_basics() {
    let c = Cluster::new(3, 64);
    let cl = c.client();
    assert_eq!(cl.chunk_size(), 64);
    cl.mkdir("/d", 0o755, 1, 2).unwrap();
    assert_eq!(cl.mkdir("/d", 0o755, 1, 2), Err(Errno::EEXIST));
    assert_eq!(cl.mkdir("/", 0o755, 1, 2), Err(Errno::EEXIST));
    let (f, created) = cl.create("/d//f", 0o640, 1, 2, true).unwrap();
    assert!(created);
    assert_eq!(f.attr.mode, 0o640);
    let (again, created) = cl.create("/d/f", 0o600, 1, 2, false).unwrap();
    assert!(!created);
    assert_eq!(again.attr.ino, f.attr.ino);
    assert_eq!(cl.create("/d/f", 0o600, 1, 2, true), Err(Errno::EEXIST));
    assert_eq!(cl.stat("/d/./f").unwrap().attr.ino, f.attr.ino);
    assert_eq!(cl.lstat("/nope"), Err(Errno::ENOENT));
    assert_eq!(cl.lstat("relative"), Err(Errno::EINVAL));
    let names: Vec<String> = cl
        .readdir("/d")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["f"]);
    assert_eq!(cl.rmdir("/d"), Err(Errno::ENOTEMPTY));
    assert_eq!(cl.rmdir("/"), Err(Errno::EBUSY));
    assert_eq!(cl.unlink("/d"), Err(Errno::EISDIR));
    cl.unlink("/d/f").unwrap();
    assert_eq!(cl.unlink("/d/f"), Err(Errno::ENOENT));
    cl.rmdir("/d").unwrap();
    assert!(cl.readdir("/").unwrap().is_empty());
    assert!(c.m.lock().misrouted.is_empty());
}

#[test]
fn readdir_reads_every_page() {
    let c = Cluster::new(2, 64);
    let cl = c.client();
    cl.mkdir("/d", 0o755, 0, 0).unwrap();
    for i in 0..2500 {
        cl.create(&format!("/d/f{i:05}"), 0o644, 0, 0, true)
            .unwrap();
    }
    let all = cl.readdir("/d").unwrap();
    assert_eq!(all.len(), 2500);
    assert!(all.windows(2).all(|w| w[0].name < w[1].name));
    let (page, next) = cl.readdir_page("/d", None, 10).unwrap();
    assert_eq!(page.len(), 10);
    let (page2, _) = cl.readdir_page("/d", next.as_deref(), 10).unwrap();
    assert_eq!(page2[0].name, "f00010");
}

#[test]
fn striped_writes_and_reads() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    let (f, _) = cl.create("/f", 0o644, 0, 0, true).unwrap();
    let ino = f.attr.ino;
    let data = pattern(200, 7);
    assert_eq!(cl.write_at("/f", ino, 5, &data).unwrap(), 200);
    assert_eq!(cl.stat("/f").unwrap().attr.size, 205);
    let back = cl.read_at("/f", ino, 0, 1000).unwrap();
    assert_eq!(back.len(), 205);
    assert!(back[..5].iter().all(|b| *b == 0));
    assert_eq!(&back[5..], &data[..]);
    assert_eq!(cl.read_at("/f", ino, 100, 10).unwrap(), &data[95..105]);
    assert!(cl.read_at("/f", ino, 205, 10).unwrap().is_empty());
    assert!(cl.read_at("/f", ino, 5000, 10).unwrap().is_empty());
    // Spread over every server, each chunk on its owner.
    let m = c.m.lock();
    assert!(m.misrouted.is_empty(), "{:?}", m.misrouted);
    let servers: std::collections::BTreeSet<ServerId> = m.chunks.keys().map(|k| k.0).collect();
    assert_eq!(servers.len(), 3);
}

#[test]
fn holes_read_as_zeros() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    let ino = cl.create("/h", 0o644, 0, 0, true).unwrap().0.attr.ino;
    cl.write_at("/h", ino, 0, b"abc").unwrap();
    cl.write_at("/h", ino, 70, b"xyz").unwrap();
    let back = cl.read_at("/h", ino, 0, 100).unwrap();
    assert_eq!(back.len(), 73);
    assert_eq!(&back[..3], b"abc");
    assert!(back[3..70].iter().all(|b| *b == 0));
    assert_eq!(&back[70..], b"xyz");
    // Grown by truncate: zeros, not stale bytes.
    cl.truncate("/h", 1).unwrap();
    cl.truncate("/h", 80).unwrap();
    let back = cl.read_file("/h").unwrap();
    assert_eq!(back.len(), 80);
    assert_eq!(back[0], b'a');
    assert!(back[1..].iter().all(|b| *b == 0));
    assert_eq!(c.m.lock().stored(ino), 1);
}

#[test]
fn large_writes_run_across_servers() {
    let c = Cluster::new(4, 1024);
    let cl = c.client();
    let data = pattern(300 * 1024 + 17, 3);
    cl.write_file("/big", &data, 0o600).unwrap();
    assert_eq!(cl.read_file("/big").unwrap(), data);
    let ino = cl.stat("/big").unwrap().attr.ino;
    assert_eq!(cl.append("/big", ino, b"tail").unwrap(), data.len() as u64);
    let back = cl.read_at("/big", ino, data.len() as u64 - 2, 100).unwrap();
    assert_eq!(back, [&data[data.len() - 2..], b"tail"].concat());
    // Rewriting through write_file truncates first.
    cl.write_file("/big", b"small", 0o600).unwrap();
    assert_eq!(cl.read_file("/big").unwrap(), b"small");
    assert_eq!(c.m.lock().stored(ino), 5);
    cl.unlink("/big").unwrap();
    assert_eq!(c.m.lock().stored(ino), 0);
}

#[test]
fn unlink_drops_data_everywhere() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    let small = cl.create("/s", 0o644, 0, 0, true).unwrap().0.attr.ino;
    let big = cl.create("/b", 0o644, 0, 0, true).unwrap().0.attr.ino;
    cl.write_at("/s", small, 0, b"tiny").unwrap();
    cl.write_at("/b", big, 0, &pattern(500, 1)).unwrap();
    cl.unlink("/s").unwrap();
    cl.unlink("/b").unwrap();
    let m = c.m.lock();
    assert_eq!(m.stored(small), 0);
    assert_eq!(m.stored(big), 0);
    // The small file's data went to one server only.
    assert_eq!(
        m.served.iter().filter(|n| **n == "remove_data").count(),
        1 + 3
    );
}

#[test]
fn setattr_and_truncate() {
    let c = Cluster::new(2, 16);
    let cl = c.client();
    let ino = cl.create("/f", 0o644, 0, 0, true).unwrap().0.attr.ino;
    cl.write_at("/f", ino, 0, &pattern(100, 9)).unwrap();
    let i = cl
        .setattr(
            "/f",
            SetAttr {
                mode: Some(0o600),
                size: Some(20),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((i.attr.mode, i.attr.size), (0o600, 20));
    assert_eq!(c.m.lock().stored(ino), 20);
    assert_eq!(cl.read_file("/f").unwrap(), &pattern(100, 9)[..20]);
    cl.mkdir("/d", 0o755, 0, 0).unwrap();
    assert_eq!(cl.truncate("/d", 0), Err(Errno::EISDIR));
    assert_eq!(
        cl.setattr(
            "/d",
            SetAttr {
                size: Some(0),
                ..Default::default()
            }
        ),
        Err(Errno::EISDIR)
    );
    assert_eq!(
        cl.setattr(
            "/d",
            SetAttr {
                mode: Some(0o700),
                ..Default::default()
            }
        )
        .unwrap()
        .attr
        .mode,
        0o700
    );
}

#[test]
fn open_flags_end_to_end() {
    let c = Cluster::new(2, 16);
    let cl = c.client();
    let f = cl.open("/f", libc::O_CREAT | RW, 0o644, 0, 0).unwrap();
    assert_eq!(f.attr.kind, FileKind::File);
    cl.write_at("/f", f.attr.ino, 0, b"hello world").unwrap();
    assert_eq!(
        cl.open("/f", libc::O_CREAT | libc::O_EXCL | RW, 0o644, 0, 0),
        Err(Errno::EEXIST)
    );
    assert_eq!(
        cl.open("/f", libc::O_RDONLY | libc::O_DIRECTORY, 0, 0, 0),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(
        cl.open("/nope", libc::O_RDONLY, 0, 0, 0),
        Err(Errno::ENOENT)
    );
    assert_eq!(
        cl.open("/f", libc::O_RDONLY, 0, 0, 0).unwrap().attr.size,
        11
    );
    // O_TRUNC truncates even with O_RDONLY, as Linux does.
    assert_eq!(
        cl.open("/f", libc::O_RDONLY | libc::O_TRUNC, 0, 0, 0)
            .unwrap()
            .attr
            .size,
        0
    );
    assert_eq!(c.m.lock().stored(f.attr.ino), 0);
    cl.write_at("/f", f.attr.ino, 0, b"hello world").unwrap();
    let t = cl
        .open("/f", libc::O_WRONLY | libc::O_TRUNC, 0, 0, 0)
        .unwrap();
    assert_eq!(t.attr.size, 0);
    assert_eq!(c.m.lock().stored(f.attr.ino), 0);
    cl.mkdir("/d", 0o755, 0, 0).unwrap();
    assert!(cl
        .open("/d", libc::O_RDONLY | libc::O_DIRECTORY, 0, 0, 0)
        .is_ok());
    assert_eq!(cl.open("/d", RW, 0, 0, 0), Err(Errno::EISDIR));
    assert_eq!(
        cl.open("/d", libc::O_CREAT | libc::O_RDONLY, 0o644, 0, 0),
        Err(Errno::EISDIR)
    );
    assert_eq!(
        cl.open("/", libc::O_CREAT | libc::O_RDONLY, 0o644, 0, 0),
        Err(Errno::EISDIR)
    );
    assert_eq!(
        cl.open("/missing/f", libc::O_CREAT | RW, 0o644, 0, 0),
        Err(Errno::ENOENT)
    );
    assert_eq!(
        cl.open("/f/x", libc::O_CREAT | RW, 0o644, 0, 0),
        Err(Errno::ENOTDIR)
    );
}

#[test]
fn symlinks() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    cl.mkdir("/a", 0o755, 0, 0).unwrap();
    cl.write_file("/a/t", b"target", 0o644).unwrap();
    cl.symlink("t", "/a/rel", 0, 0).unwrap();
    cl.symlink("/a/t", "/abs", 0, 0).unwrap();
    cl.symlink("../a/rel", "/a/chain", 0, 0).unwrap();
    assert_eq!(cl.readlink("/a/rel").unwrap(), "t");
    assert_eq!(cl.readlink("/a/t"), Err(Errno::EINVAL));
    assert_eq!(cl.lstat("/a/rel").unwrap().attr.kind, FileKind::Symlink);
    let t = cl.stat("/a/t").unwrap().attr.ino;
    for l in ["/a/rel", "/abs", "/a/chain"] {
        assert_eq!(cl.stat(l).unwrap().attr.ino, t, "{l}");
    }
    assert_eq!(cl.read_file("/a/chain").unwrap(), b"target");
    // open follows, O_NOFOLLOW refuses.
    assert_eq!(
        cl.open("/abs", libc::O_RDONLY, 0, 0, 0).unwrap().attr.ino,
        t
    );
    assert_eq!(
        cl.open("/abs", libc::O_RDONLY | libc::O_NOFOLLOW, 0, 0, 0),
        Err(Errno::ELOOP)
    );
    // O_CREAT through a dangling link creates its target; with O_EXCL it fails.
    cl.symlink("made", "/dangling", 0, 0).unwrap();
    assert_eq!(
        cl.open("/dangling", libc::O_CREAT | libc::O_EXCL | RW, 0o644, 0, 0),
        Err(Errno::EEXIST)
    );
    let (p, made) = cl
        .open_resolved("/dangling", libc::O_CREAT | RW, 0o644, 0, 0)
        .unwrap();
    assert_eq!(p, "/made");
    assert_eq!(cl.stat("/made").unwrap().attr.ino, made.attr.ino);
    // Loops.
    cl.symlink("loop2", "/loop1", 0, 0).unwrap();
    cl.symlink("loop1", "/loop2", 0, 0).unwrap();
    assert_eq!(cl.stat("/loop1"), Err(Errno::ELOOP));
    assert_eq!(
        cl.open("/loop1", libc::O_RDONLY, 0, 0, 0),
        Err(Errno::ELOOP)
    );
    assert_eq!(cl.symlink("", "/e", 0, 0), Err(Errno::ENOENT));
    // A chain of exactly 40 links resolves, 41 does not.
    cl.write_file("/end", b"x", 0o644).unwrap();
    let mut prev = "end".to_string();
    for i in 0..41 {
        let name = format!("l{i}");
        cl.symlink(&prev, &format!("/{name}"), 0, 0).unwrap();
        prev = name;
    }
    assert!(cl.stat("/l39").is_ok());
    assert_eq!(cl.stat("/l40"), Err(Errno::ELOOP));
}

#[test]
fn rename_files_and_dirs() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    cl.write_file("/f", &pattern(100, 2), 0o644).unwrap();
    let ino = cl.stat("/f").unwrap().attr.ino;
    cl.rename("/f", "/g", 0).unwrap();
    assert_eq!(cl.lstat("/f"), Err(Errno::ENOENT));
    assert_eq!(cl.stat("/g").unwrap().attr.ino, ino);
    assert_eq!(cl.read_file("/g").unwrap(), pattern(100, 2));

    // Over an existing file: the old one's data goes.
    cl.write_file("/h", b"old", 0o644).unwrap();
    let old = cl.stat("/h").unwrap().attr.ino;
    cl.rename("/g", "/h", 0).unwrap();
    assert_eq!(cl.read_file("/h").unwrap(), pattern(100, 2));
    assert_eq!(c.m.lock().stored(old), 0);
    cl.write_file("/k", b"k", 0o644).unwrap();
    assert_eq!(
        cl.rename("/h", "/k", libc::RENAME_NOREPLACE),
        Err(Errno::EEXIST)
    );
    assert_eq!(
        cl.rename("/h", "/k", libc::RENAME_EXCHANGE),
        Err(Errno::EINVAL)
    );
    assert_eq!(cl.rename("/h", "/h", 0), Ok(()));
    assert_eq!(cl.rename("/nope", "/x", 0), Err(Errno::ENOENT));
    assert_eq!(cl.rename("/h", "/nodir/x", 0), Err(Errno::ENOENT));
    assert_eq!(cl.rename("/h", "/k/x", 0), Err(Errno::ENOTDIR));
    assert_eq!(cl.rename("/", "/x", 0), Err(Errno::EBUSY));
    assert_eq!(cl.rename("/h", "/", 0), Err(Errno::EBUSY));

    // A tree.
    cl.mkdir("/t", 0o755, 0, 0).unwrap();
    cl.mkdir("/t/sub", 0o700, 0, 0).unwrap();
    cl.write_file("/t/sub/deep", b"deep", 0o644).unwrap();
    cl.write_file("/t/top", b"top", 0o644).unwrap();
    cl.symlink("sub/deep", "/t/link", 0, 0).unwrap();
    let t_ino = cl.stat("/t").unwrap().attr.ino;
    assert_eq!(cl.rename("/t", "/t/sub/in", 0), Err(Errno::EINVAL));
    assert_eq!(cl.rename("/t", "/k", 0), Err(Errno::ENOTDIR));
    assert_eq!(cl.rename("/k", "/t", 0), Err(Errno::EISDIR));
    cl.mkdir("/full", 0o755, 0, 0).unwrap();
    cl.write_file("/full/x", b"", 0o644).unwrap();
    assert_eq!(cl.rename("/t", "/full", 0), Err(Errno::ENOTEMPTY));
    cl.mkdir("/empty", 0o755, 0, 0).unwrap();
    cl.rename("/t", "/empty", 0).unwrap();
    assert_eq!(cl.lstat("/t"), Err(Errno::ENOENT));
    let moved = cl.stat("/empty").unwrap();
    assert_eq!(moved.attr.ino, t_ino);
    assert_eq!(moved.attr.nlink, 3);
    assert_eq!(cl.stat("/empty/sub").unwrap().attr.mode, 0o700);
    assert_eq!(cl.read_file("/empty/sub/deep").unwrap(), b"deep");
    assert_eq!(cl.read_file("/empty/link").unwrap(), b"deep");
    let names: Vec<String> = cl
        .readdir("/empty")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["link", "sub", "top"]);
    assert!(c.m.lock().misrouted.is_empty());
}

#[test]
fn stale_epochs_refresh_the_map() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    cl.write_file("/f", b"data", 0o644).unwrap();
    let before = cl.map().epoch;
    c.change_map(|_| {});
    assert_eq!(cl.read_file("/f").unwrap(), b"data");
    assert_eq!(cl.map().epoch, before + 1);
    assert_eq!(cl.refresh_map().unwrap().epoch, before + 1);
}

#[test]
fn restarted_server_at_a_new_address() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    cl.write_file("/f", &pattern(100, 5), 0o644).unwrap();
    // Every server moves; the old addresses refuse connections.
    c.change_map(|m| {
        for s in &mut m.servers {
            s.addr = format!("{}-new", s.addr);
        }
    });
    {
        let mut m = c.m.lock();
        for i in 1..=3 {
            m.dead.insert(format!("s{i}:1"));
        }
    }
    assert_eq!(cl.read_file("/f").unwrap(), pattern(100, 5));
}

#[test]
fn unreachable_and_down_servers_give_eio() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    cl.mkdir("/d", 0o755, 0, 0).unwrap();
    let owner = sealfs_proto::Ring::of_map(&cl.map())
        .owner_path("/d")
        .unwrap();
    let addr = cl.map().server(owner).unwrap().addr.clone();
    // Dead at the same address: EIO (after one refresh).
    c.m.lock().dead.insert(addr.clone());
    assert_eq!(cl.stat("/d"), Err(Errno::EIO));
    c.m.lock().dead.remove(&addr);
    assert!(cl.stat("/d").is_ok());
    // Marked down: EIO without a call to it.
    c.change_map(|m| {
        for s in &mut m.servers {
            if s.id == owner {
                s.state = ServerState::Down;
            }
        }
    });
    cl.refresh_map().unwrap();
    let served = c.m.lock().served.len();
    assert_eq!(cl.stat("/d"), Err(Errno::EIO));
    assert_eq!(c.m.lock().served.len(), served);
    // statfs sums the servers that are up.
    let s = cl.statfs().unwrap();
    assert_eq!(
        (s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namemax),
        (200, 120, 100, 2000, 1800, 4096, 255)
    );
    cl.fsync("/d", 1).unwrap();
}

#[test]
fn many_threads_share_one_client() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let cl = &cl;
            s.spawn(move || {
                for i in 0..20 {
                    let p = format!("/t{t}-{i}");
                    let data = pattern(50 + i, t);
                    cl.write_file(&p, &data, 0o644).unwrap();
                    assert_eq!(cl.read_file(&p).unwrap(), data);
                }
            });
        }
    });
    assert_eq!(cl.readdir("/").unwrap().len(), 80);
}

#[test]
fn reads_clip_to_the_size_without_huge_buffers() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    cl.write_file("/f", b"0123456789", 0o644).unwrap();
    let ino = cl.stat("/f").unwrap().attr.ino;
    assert_eq!(cl.read_at("/f", ino, 3, usize::MAX).unwrap(), b"3456789");
    assert_eq!(
        cl.read_at("/f", ino, u64::MAX - 1, usize::MAX).unwrap(),
        b""
    );
    assert!(cl.read_at("/f", ino, 0, 0).unwrap().is_empty());
    // The path names another inode now.
    cl.unlink("/f").unwrap();
    cl.write_file("/f", b"new", 0o644).unwrap();
    assert_eq!(cl.read_at("/f", ino, 0, 10), Err(Errno::ESTALE));
    assert_eq!(cl.read_at("/", 1, 0, 10), Err(Errno::EISDIR));
    assert_eq!(cl.read_file("/"), Err(Errno::EISDIR));
    assert_eq!(
        cl.write_at("/f", ino, u64::MAX - 1, b"xy"),
        Err(Errno::EFBIG)
    );
}

#[test]
fn connections_can_be_reset() {
    let c = Cluster::new(2, 16);
    let cl = c.client();
    cl.write_file("/f", b"before", 0o644).unwrap();
    cl.reset_connections();
    assert_eq!(cl.read_file("/f").unwrap(), b"before");
    c.change_map(|_| {});
    cl.reset_connections();
    assert_eq!(cl.read_file("/f").unwrap(), b"before");
}

#[test]
fn a_file_in_the_middle_of_a_path_gives_enotdir() {
    let c = Cluster::new(3, 16);
    let cl = c.client();
    cl.mkdir("/a", 0o755, 0, 0).unwrap();
    cl.write_file("/a/f", b"x", 0o644).unwrap();
    assert_eq!(cl.lstat("/a/f/g"), Err(Errno::ENOTDIR));
    assert_eq!(cl.stat("/a/f/g/h"), Err(Errno::ENOTDIR));
    assert_eq!(cl.unlink("/a/f/x"), Err(Errno::ENOTDIR));
    assert_eq!(cl.rmdir("/a/f/x"), Err(Errno::ENOTDIR));
    assert_eq!(cl.mkdir("/a/f/g/h", 0o755, 0, 0), Err(Errno::ENOTDIR));
    assert_eq!(
        cl.open("/a/f/g", libc::O_RDONLY, 0, 0, 0),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(cl.readdir("/a/f/g"), Err(Errno::ENOTDIR));
    assert_eq!(cl.truncate("/a/f/g", 0), Err(Errno::ENOTDIR));
    assert_eq!(cl.rename("/a/f/g", "/z", 0), Err(Errno::ENOTDIR));
    assert_eq!(cl.lstat("/nope/x"), Err(Errno::ENOENT));
    assert_eq!(cl.lstat("/a/nope"), Err(Errno::ENOENT));
    assert_eq!(cl.unlink("/a/nope/x"), Err(Errno::ENOENT));
}

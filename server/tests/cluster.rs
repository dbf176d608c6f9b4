//! Two servers in this process (the public `run`, each on its own thread)
//! with a minimal in-test manager: the request semantics over real TCP,
//! including creates and removes whose parent lives on the other server.
//! The end-to-end tests with real processes and the real manager live in
//! the workspace's `tests/`.

mod common;

use sealfs_proto::{
    ClusterMap, DirEntry, Errno, FileKind, Inode, NewInode, Reply, Request, Ring, ServerId,
    SetAttr, Timespec,
};
use sealfs_server::{ServerConfig, SyncPolicy};
use sealfs_transport::tcp::TcpPool;
use sealfs_transport::{ClientConfig, Transport};
use std::time::{Duration, Instant};

const CHUNK: u32 = 64 * 1024;

struct Cluster {
    mgr: common::Manager,
    _dirs: Vec<tempfile::TempDir>,
}

enum Key<'a> {
    Path(&'a str),
    Chunk(u64, u64),
    Server(ServerId),
}

impl Cluster {
    fn start(n: usize, sync: SyncPolicy) -> Cluster {
        let mgr = common::Manager::start(CHUNK);
        let maddr = mgr.addr.clone();
        let mut dirs = Vec::new();
        for _ in 0..n {
            let d = tempfile::tempdir().unwrap();
            let cfg = ServerConfig {
                manager: maddr.clone(),
                listen: "127.0.0.1:0".into(),
                advertise: None,
                meta_dir: d.path().join("meta"),
                data_dir: d.path().join("data"),
                sync,
                heartbeat: Duration::from_millis(50),
                ..ServerConfig::default()
            };
            dirs.push(d);
            std::thread::spawn(move || {
                if let Err(e) = sealfs_server::run(cfg) {
                    panic!("server failed: {e}");
                }
            });
        }
        let c = Cluster { mgr, _dirs: dirs };
        // Wait until every server registered and answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ids: Vec<ServerId> = c.map().servers.iter().map(|s| s.id).collect();
            if ids.len() == n
                && ids
                    .iter()
                    .all(|id| c.call(Key::Server(*id), Request::StatFs).is_ok())
            {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    fn map(&self) -> ClusterMap {
        self.mgr.map()
    }

    fn pool(&self, id: ServerId) -> TcpPool {
        let map = self.map();
        TcpPool::new(
            map.server(id).unwrap().addr.clone(),
            ClientConfig::default(),
        )
    }

    fn owner(&self, key: &Key) -> ServerId {
        let ring = Ring::of_map(&self.map());
        match key {
            Key::Path(p) => ring.owner_path(p).unwrap(),
            Key::Chunk(i, c) => ring.owner_chunk(*i, *c).unwrap(),
            Key::Server(id) => *id,
        }
    }

    fn call(&self, key: Key, req: Request) -> Result<Reply, String> {
        let id = self.owner(&key);
        self.pool(id)
            .call(self.map().epoch, req)
            .map_err(|e| e.to_string())
    }

    fn req(&self, key: Key, req: Request) -> Reply {
        self.call(key, req).unwrap()
    }

    fn create(&self, path: &str, kind: FileKind, excl: bool) -> Reply {
        let target = (kind == FileKind::Symlink).then(|| "target/x".to_string());
        let new = NewInode {
            kind,
            mode: 0o40755,
            uid: 10,
            gid: 20,
            target,
        };
        self.req(
            Key::Path(path),
            Request::Create {
                path: path.into(),
                new,
                excl,
            },
        )
    }

    fn mk(&self, path: &str, kind: FileKind) -> Inode {
        match self.create(path, kind, true) {
            Reply::Created {
                inode,
                created: true,
            } => inode,
            r => panic!("create {path}: {r:?}"),
        }
    }

    fn stat(&self, path: &str) -> Result<Inode, Errno> {
        match self.req(Key::Path(path), Request::GetAttr { path: path.into() }) {
            Reply::Inode(i) => Ok(i),
            Reply::Err(e) => Err(e),
            r => panic!("getattr {path}: {r:?}"),
        }
    }

    fn remove(&self, path: &str, dir: bool) -> Reply {
        self.req(
            Key::Path(path),
            Request::Remove {
                path: path.into(),
                dir,
            },
        )
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            match self.req(
                Key::Path(dir),
                Request::ReadDir {
                    path: dir.into(),
                    after: after.clone(),
                    limit: 2,
                },
            ) {
                Reply::Entries { entries, next } => {
                    assert!(entries.len() <= 2);
                    out.extend(entries.into_iter().map(|e| e.name));
                    match next {
                        Some(n) => after = Some(n),
                        None => return out,
                    }
                }
                r => panic!("readdir {dir}: {r:?}"),
            }
        }
    }
}

fn err(e: Errno) -> Reply {
    Reply::Err(e)
}

#[test]
fn namespace_semantics_across_two_servers() {
    let c = Cluster::start(2, SyncPolicy::Fsync);

    let root = c.stat("/").unwrap();
    assert_eq!(root.attr.ino, 1);
    assert_eq!(root.attr.kind, FileKind::Dir);
    assert_eq!(root.attr.nlink, 2);

    let d = c.mk("/d", FileKind::Dir);
    assert_eq!(d.attr.mode, 0o755, "type bits are dropped");
    assert_eq!(d.attr.nlink, 2);
    assert_eq!(c.stat("/").unwrap().attr.nlink, 3);
    let mut files = Vec::new();
    for i in 0..12 {
        let p = format!("/d/f{i:02}");
        let f = c.mk(&p, FileKind::File);
        assert_eq!(
            (f.attr.size, f.attr.nlink, f.attr.uid, f.attr.gid),
            (0, 1, 10, 20)
        );
        assert_eq!(
            f.attr.ino >> 40,
            u64::from(c.owner(&Key::Path(&p)).0),
            "ino carries the creator's id"
        );
        files.push(f);
    }
    let inos: std::collections::HashSet<u64> = files.iter().map(|f| f.attr.ino).collect();
    assert_eq!(inos.len(), files.len(), "inode numbers are unique");
    c.mk("/d/sub", FileKind::Dir);
    let l = c.mk("/d/link", FileKind::Symlink);
    assert_eq!(l.target.as_deref(), Some("target/x"));
    assert_eq!(l.attr.size, 8);
    assert_eq!(c.stat("/d").unwrap().attr.nlink, 3);

    // Create again.
    assert_eq!(c.create("/d/f00", FileKind::File, true), err(Errno::EEXIST));
    match c.create("/d/f00", FileKind::File, false) {
        Reply::Created {
            inode,
            created: false,
        } => assert_eq!(inode, files[0]),
        r => panic!("{r:?}"),
    }
    assert_eq!(c.create("/", FileKind::Dir, true), err(Errno::EEXIST));
    // Missing parent, parent not a directory: nothing left behind.
    assert_eq!(
        c.create("/nope/x", FileKind::File, true),
        err(Errno::ENOENT)
    );
    assert_eq!(c.stat("/nope/x"), Err(Errno::ENOENT));
    assert_eq!(
        c.create("/d/f00/x", FileKind::File, true),
        err(Errno::ENOTDIR)
    );
    assert_eq!(c.stat("/d/f00/x"), Err(Errno::ENOENT));

    // Listing: name order, paged.
    let mut want: Vec<String> = (0..12).map(|i| format!("f{i:02}")).collect();
    want.push("link".into());
    want.push("sub".into());
    assert_eq!(c.list("/d"), want);
    assert_eq!(c.list("/"), ["d"]);
    let r = c.req(
        Key::Path("/d/f00"),
        Request::ReadDir {
            path: "/d/f00".into(),
            after: None,
            limit: 10,
        },
    );
    assert_eq!(r, err(Errno::ENOTDIR));
    assert_eq!(
        c.req(
            Key::Path("/zz"),
            Request::ReadDir {
                path: "/zz".into(),
                after: None,
                limit: 0
            }
        ),
        err(Errno::ENOENT)
    );

    // Remove errors.
    assert_eq!(c.remove("/d", true), err(Errno::ENOTEMPTY));
    assert_eq!(c.remove("/d", false), err(Errno::EISDIR));
    assert_eq!(c.remove("/d/f01", true), err(Errno::ENOTDIR));
    assert_eq!(c.remove("/", true), err(Errno::EBUSY));
    assert_eq!(c.remove("/d/none", false), err(Errno::ENOENT));

    // Attributes.
    let set = SetAttr {
        size: Some(5),
        ..Default::default()
    };
    assert_eq!(
        c.req(
            Key::Path("/d"),
            Request::SetAttr {
                path: "/d".into(),
                set
            }
        ),
        err(Errno::EISDIR)
    );
    let set = SetAttr {
        mode: Some(0o100600),
        size: Some(3),
        ..Default::default()
    };
    match c.req(
        Key::Path("/d/f01"),
        Request::SetAttr {
            path: "/d/f01".into(),
            set,
        },
    ) {
        Reply::Inode(i) => {
            assert_eq!((i.attr.mode, i.attr.size), (0o600, 3));
            assert!(i.attr.ctime >= files[1].attr.ctime);
        }
        r => panic!("{r:?}"),
    }
    let t = Timespec {
        sec: 2_000_000_000,
        nsec: 7,
    };
    match c.req(
        Key::Path("/d/f01"),
        Request::Extend {
            path: "/d/f01".into(),
            size: 2,
            mtime: t,
        },
    ) {
        Reply::Inode(i) => assert_eq!((i.attr.size, i.attr.mtime, i.attr.ctime), (3, t, t)),
        r => panic!("{r:?}"),
    }
    match c.req(
        Key::Path("/d/f01"),
        Request::Extend {
            path: "/d/f01".into(),
            size: 100,
            mtime: t,
        },
    ) {
        Reply::Inode(i) => assert_eq!(i.attr.size, 100),
        r => panic!("{r:?}"),
    }

    // Rename = Adopt at the new path + Remove at the old one.
    let f2 = c.stat("/d/f02").unwrap();
    match c.req(
        Key::Path("/d/sub/moved"),
        Request::Adopt {
            path: "/d/sub/moved".into(),
            inode: f2.clone(),
        },
    ) {
        Reply::Inode(i) => assert_eq!(i.attr.ino, f2.attr.ino),
        r => panic!("{r:?}"),
    }
    assert!(matches!(c.remove("/d/f02", false), Reply::Inode(i) if i.attr.ino == f2.attr.ino));
    assert_eq!(c.stat("/d/sub/moved").unwrap().attr.ino, f2.attr.ino);
    assert_eq!(c.list("/d/sub"), ["moved"]);
    assert_eq!(
        c.req(
            Key::Path("/d/f03"),
            Request::Adopt {
                path: "/d/f03".into(),
                inode: f2
            }
        ),
        err(Errno::EEXIST)
    );

    // Tear down everything.
    assert!(matches!(c.remove("/d/sub/moved", false), Reply::Inode(_)));
    assert!(matches!(c.remove("/d/sub", true), Reply::Inode(_)));
    assert_eq!(c.stat("/d").unwrap().attr.nlink, 2);
    for name in c.list("/d") {
        assert!(matches!(
            c.remove(&format!("/d/{name}"), false),
            Reply::Inode(_)
        ));
    }
    assert!(c.list("/d").is_empty());
    assert!(matches!(c.remove("/d", true), Reply::Inode(_)));
    assert_eq!(c.stat("/d"), Err(Errno::ENOENT));
    assert_eq!(c.stat("/").unwrap().attr.nlink, 2);
    assert!(c.list("/").is_empty());
}

#[test]
fn routing_validation_and_data() {
    let c = Cluster::start(2, SyncPolicy::Always);
    let ids: Vec<ServerId> = c.map().servers.iter().map(|s| s.id).collect();
    let owner = c.owner(&Key::Path("/x"));
    let other = *ids.iter().find(|i| **i != owner).unwrap();
    let epoch = c.map().epoch;

    // Not the owner: StaleEpoch with the server's epoch.
    assert_eq!(
        c.req(Key::Server(other), Request::GetAttr { path: "/x".into() }),
        Reply::StaleEpoch { epoch }
    );
    // A newer epoch than the server knows makes it ask the manager first.
    let r = c
        .pool(owner)
        .call(epoch + 5, Request::GetAttr { path: "/x".into() })
        .unwrap();
    assert_eq!(r, err(Errno::ENOENT));
    // Cluster messages and bad paths.
    assert_eq!(
        c.req(Key::Server(owner), Request::GetMap),
        err(Errno::EINVAL)
    );
    assert_eq!(
        c.req(Key::Server(owner), Request::GetAttr { path: "x".into() }),
        err(Errno::EINVAL)
    );
    assert_eq!(
        c.req(Key::Server(owner), Request::GetAttr { path: "/a/".into() }),
        err(Errno::EINVAL)
    );
    let long = format!("/{}", "n".repeat(256));
    assert_eq!(
        c.req(Key::Server(owner), Request::GetAttr { path: long }),
        err(Errno::ENAMETOOLONG)
    );
    let entry = DirEntry {
        name: "..".into(),
        kind: FileKind::File,
        ino: 3,
    };
    assert_eq!(
        c.req(
            Key::Server(owner),
            Request::AddEntry {
                dir: "/".into(),
                entry
            }
        ),
        err(Errno::EINVAL)
    );

    // Chunks.
    let ino = 77u64;
    let w = Request::Write {
        ino,
        chunk: 2,
        offset: 100,
        data: b"hello".to_vec().into(),
    };
    assert_eq!(c.req(Key::Chunk(ino, 2), w), Reply::Written(5));
    let r = Request::Read {
        ino,
        chunk: 2,
        offset: 0,
        len: 200,
    };
    match c.req(Key::Chunk(ino, 2), r) {
        Reply::Data(d) => {
            assert_eq!(d.len(), 105);
            assert!(d[..100].iter().all(|b| *b == 0));
            assert_eq!(&d[100..], b"hello");
        }
        r => panic!("{r:?}"),
    }
    let r = Request::Read {
        ino,
        chunk: 2,
        offset: CHUNK - 10,
        len: 11,
    };
    assert_eq!(c.req(Key::Chunk(ino, 2), r), err(Errno::EINVAL));
    let w = Request::Write {
        ino,
        chunk: 2,
        offset: CHUNK,
        data: vec![1].into(),
    };
    assert_eq!(c.req(Key::Chunk(ino, 2), w), err(Errno::EINVAL));
    let chunk_owner = c.owner(&Key::Chunk(ino, 2));
    let not_chunk_owner = *ids.iter().find(|i| **i != chunk_owner).unwrap();
    let r = Request::Read {
        ino,
        chunk: 2,
        offset: 0,
        len: 1,
    };
    assert!(matches!(
        c.req(Key::Server(not_chunk_owner), r),
        Reply::StaleEpoch { .. }
    ));

    for id in &ids {
        assert_eq!(
            c.req(Key::Server(*id), Request::Fsync { ino: Some(ino) }),
            Reply::Ok
        );
        assert_eq!(
            c.req(Key::Server(*id), Request::Fsync { ino: None }),
            Reply::Ok
        );
        assert_eq!(
            c.req(
                Key::Server(*id),
                Request::TruncateData {
                    ino,
                    size: 2 * u64::from(CHUNK) + 102
                }
            ),
            Reply::Ok
        );
    }
    match c.req(
        Key::Chunk(ino, 2),
        Request::Read {
            ino,
            chunk: 2,
            offset: 0,
            len: 200,
        },
    ) {
        Reply::Data(d) => assert_eq!(&d[100..], b"he"),
        r => panic!("{r:?}"),
    }
    for id in &ids {
        assert_eq!(
            c.req(Key::Server(*id), Request::RemoveData { ino }),
            Reply::Ok
        );
        match c.req(Key::Server(*id), Request::StatFs) {
            Reply::StatFs(s) => assert!(s.blocks > 0 && s.namemax == 255 && s.bsize > 0),
            r => panic!("{r:?}"),
        }
    }
    match c.req(
        Key::Chunk(ino, 2),
        Request::Read {
            ino,
            chunk: 2,
            offset: 0,
            len: 200,
        },
    ) {
        Reply::Data(d) => assert!(d.is_empty()),
        r => panic!("{r:?}"),
    }
}

#[test]
fn start_up_failures_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let base = ServerConfig {
        manager: "127.0.0.1:1".into(),
        meta_dir: d.path().join("meta"),
        data_dir: d.path().join("data"),
        ..ServerConfig::default()
    };
    let e = sealfs_server::run(ServerConfig {
        meta_dir: file.clone(),
        ..base.clone()
    })
    .unwrap_err();
    assert!(e.to_string().contains("plain-file"), "{e}");
    let e = sealfs_server::run(ServerConfig {
        data_dir: file,
        ..base.clone()
    })
    .unwrap_err();
    assert!(e.to_string().contains("plain-file"), "{e}");
    let e = sealfs_server::run(ServerConfig {
        listen: "not an address".into(),
        ..base
    })
    .unwrap_err();
    assert!(matches!(e, sealfs_server::ServerError::Bind { .. }), "{e}");
    assert_eq!("always".parse::<SyncPolicy>().unwrap(), SyncPolicy::Always);
    assert_eq!(SyncPolicy::default().to_string(), "fsync");
    assert!("sometimes".parse::<SyncPolicy>().is_err());
}

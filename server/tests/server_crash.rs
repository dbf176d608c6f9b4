//! Crash loop with a real server process: a storage server (this test
//! binary re-run as `server_child`, calling `sealfs_server::run` with the
//! default store and sync policy) serves three client threads doing
//! creates, appends, renames and deletes with fsync, over TCP. The test
//! SIGKILLs the server at a random moment, starts it again on the same
//! directories, and checks: every file whose last operation was
//! acknowledged has exactly that content (SHA-256), a file whose operation
//! failed with the kill is in the state before or after it, every name in
//! the directory leads to an inode, and no file is missing from it.
//! Iterations: `SEALFS_SERVER_CRASH_ITERS` (default 50).

mod common;

use common::{content, sha};
use parking_lot::Mutex;
use sealfs_proto::{Errno, FileKind, Inode, NewInode, Reply, Request, Timespec};
use sealfs_server::{ServerConfig, SyncPolicy};
use sealfs_transport::tcp::TcpPool;
use sealfs_transport::{ClientConfig, Transport};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHUNK: u32 = 64 * 1024;
const CLIENTS: u64 = 3;
const NAMES: u64 = 6;

/// The server process: runs until killed.
#[test]
#[ignore = "run by server_crash_loop as a child process"]
fn server_child() {
    let Ok(dir) = std::env::var("SEALFS_SRV_DIR") else {
        return;
    };
    let manager = std::env::var("SEALFS_SRV_MANAGER").unwrap();
    let dir = std::path::PathBuf::from(dir);
    let cfg = ServerConfig {
        manager,
        meta_dir: dir.join("meta"),
        data_dir: dir.join("data"),
        sync: SyncPolicy::Fsync,
        heartbeat: Duration::from_millis(50),
        ..ServerConfig::default()
    };
    if let Err(e) = sealfs_server::run(cfg) {
        panic!("server failed: {e}");
    }
}

struct Conn {
    mgr: Arc<common::Manager>,
    pool: TcpPool,
    epoch: u64,
}

impl Conn {
    fn to_server(mgr: &Arc<common::Manager>) -> Option<Conn> {
        let m = mgr.map();
        let s = m.servers.first()?;
        let cfg = ClientConfig {
            io_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            ..ClientConfig::default()
        };
        Some(Conn {
            mgr: mgr.clone(),
            pool: TcpPool::new(s.addr.clone(), cfg),
            epoch: m.epoch,
        })
    }

    fn call(&self, req: Request) -> Result<Reply, String> {
        let _ = &self.mgr;
        match self.pool.call(self.epoch, req) {
            Ok(Reply::Err(e)) => Err(format!("errno {e:?}")),
            Ok(r) => Ok(r),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn write_all(c: &Conn, ino: u64, at: u64, data: &[u8]) -> Result<(), String> {
    let mut done = 0usize;
    while done < data.len() {
        let pos = at + done as u64;
        let (chunk, off) = (pos / u64::from(CHUNK), (pos % u64::from(CHUNK)) as u32);
        let n = ((CHUNK - off) as usize).min(data.len() - done);
        c.call(Request::Write {
            ino,
            chunk,
            offset: off,
            data: data[done..done + n].to_vec().into(),
        })?;
        done += n;
    }
    Ok(())
}

fn read_all(c: &Conn, ino: u64, size: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut chunk = 0;
    while (out.len() as u64) < size {
        let want = (size - out.len() as u64).min(u64::from(CHUNK)) as u32;
        let mut part = match c.call(Request::Read {
            ino,
            chunk,
            offset: 0,
            len: want,
        })? {
            Reply::Data(d) => Vec::from(d),
            r => return Err(format!("read: {r:?}")),
        };
        part.resize(want as usize, 0);
        out.extend(part);
        chunk += 1;
    }
    Ok(out)
}

fn stat(c: &Conn, path: &str) -> Result<Option<Inode>, String> {
    match c.pool.call(c.epoch, Request::GetAttr { path: path.into() }) {
        Ok(Reply::Inode(i)) => Ok(Some(i)),
        Ok(Reply::Err(Errno::ENOENT)) => Ok(None),
        Ok(r) => Err(format!("getattr {path}: {r:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A file's state: (ino, sha of content), or absent.
type State = Option<(u64, String)>;

#[derive(Default)]
struct Journal {
    /// path → (acknowledged state, states of failed operations since)
    paths: HashMap<String, (State, Vec<State>)>,
}

impl Journal {
    fn begin(&mut self, path: &str, st: State) {
        self.paths.entry(path.into()).or_default().1.push(st);
    }
    fn ack(&mut self, path: &str) {
        let e = self.paths.entry(path.into()).or_default();
        if let Some(st) = e.1.pop() {
            e.0 = st;
        }
        e.1.clear();
    }
}

fn client(
    t: u64,
    iter: u64,
    mgr: Arc<common::Manager>,
    stop: Arc<AtomicBool>,
    journal: Arc<Mutex<Journal>>,
) {
    let Some(c) = Conn::to_server(&mgr) else {
        return;
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let seed = iter << 40 | t << 32 | n;
        let name = format!("c{t}-{}", seed % NAMES);
        let path = format!("/{name}");
        let cur = match stat(&c, &path) {
            Ok(cur) => cur,
            Err(_) => return,
        };
        let res: Result<(), String> = (|| match cur {
            None => {
                let len = [10usize, 4096, 50_000, 150_000][(seed % 4) as usize];
                let body = content(seed, len);
                let new = NewInode {
                    kind: FileKind::File,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    target: None,
                };
                // The ino is known only after the create: log the content;
                // verification matches any ino for a create.
                {
                    // Killed between the create and the size update, the
                    // file exists and is empty.
                    let mut j = journal.lock();
                    j.begin(&path, Some((0, sha(&[]))));
                    j.begin(&path, Some((0, sha(&body))));
                }
                let ino = match c.call(Request::Create {
                    path: path.clone(),
                    new,
                    excl: true,
                })? {
                    Reply::Created { inode, .. } => inode.attr.ino,
                    r => return Err(format!("create: {r:?}")),
                };
                write_all(&c, ino, 0, &body)?;
                c.call(Request::Extend {
                    path: path.clone(),
                    size: len as u64,
                    mtime: Timespec::now(),
                })?;
                c.call(Request::Fsync { ino: Some(ino) })?;
                journal.lock().ack(&path);
                Ok(())
            }
            Some(inode) => {
                let ino = inode.attr.ino;
                match seed % 3 {
                    0 => {
                        journal.lock().begin(&path, None);
                        c.call(Request::Remove {
                            path: path.clone(),
                            dir: false,
                        })?;
                        c.call(Request::RemoveData { ino })?;
                        journal.lock().ack(&path);
                        Ok(())
                    }
                    1 => {
                        let mut body = read_all(&c, ino, inode.attr.size)?;
                        let extra = content(seed, 7000);
                        body.extend_from_slice(&extra);
                        journal.lock().begin(&path, Some((ino, sha(&body))));
                        write_all(&c, ino, inode.attr.size, &extra)?;
                        c.call(Request::Extend {
                            path: path.clone(),
                            size: body.len() as u64,
                            mtime: Timespec::now(),
                        })?;
                        c.call(Request::Fsync { ino: Some(ino) })?;
                        journal.lock().ack(&path);
                        Ok(())
                    }
                    _ => {
                        // rename to a free name: drop the old record, adopt
                        // it at the new path (the data stays with the ino)
                        let to = format!("/c{t}-{}", (seed / 3 + 1) % NAMES);
                        if stat(&c, &to)?.is_some() || to == path {
                            return Ok(());
                        }
                        let body = read_all(&c, ino, inode.attr.size)?;
                        {
                            let mut j = journal.lock();
                            j.begin(&to, Some((ino, sha(&body))));
                            j.begin(&path, None);
                        }
                        // Old name first: the client-coordinated rename is
                        // not atomic (docs/design.md), and two names left
                        // on one ino by a crash would let a later delete of
                        // one take the other's data.
                        c.call(Request::Remove {
                            path: path.clone(),
                            dir: false,
                        })?;
                        journal.lock().ack(&path);
                        c.call(Request::Adopt {
                            path: to.clone(),
                            inode,
                        })?;
                        c.call(Request::Fsync { ino: None })?;
                        journal.lock().ack(&to);
                        Ok(())
                    }
                }
            }
        })();
        if res.is_err() {
            // The server is gone (or going): stop this client.
            return;
        }
    }
}

fn start_server(dir: &std::path::Path, maddr: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "server_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SEALFS_SRV_DIR", dir)
        .env("SEALFS_SRV_MANAGER", maddr)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the server registered at a new epoch and answers.
fn wait_up(mgr: &Arc<common::Manager>, after_epoch: u64) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if mgr.map().epoch > after_epoch {
            if let Some(c) = Conn::to_server(mgr) {
                if matches!(c.pool.call(c.epoch, Request::StatFs), Ok(Reply::StatFs(_))) {
                    return c;
                }
            }
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn verify(c: &Conn, journal: &Journal, iter: u64) -> Result<(), String> {
    for (path, (acked, failed)) in &journal.paths {
        let got: State = match stat(c, path)? {
            Some(i) => Some((i.attr.ino, sha(&read_all(c, i.attr.ino, i.attr.size)?))),
            None => None,
        };
        let same = |s: &State| match (s, &got) {
            (None, None) => true,
            // ino 0: a create, whose ino was not known when it began.
            (Some((si, ss)), Some((gi, gs))) => ss == gs && (*si == 0 || si == gi),
            _ => false,
        };
        // An append that failed may have written part of its data before
        // its fsync (no atomicity promised without one).
        let partial_append = match (&got, acked) {
            (Some((gi, _)), Some((ai, _))) => {
                gi == ai
                    && failed
                        .iter()
                        .any(|f| matches!(f, Some((fi, _)) if fi == gi))
            }
            _ => false,
        };
        if !(same(acked) || failed.iter().any(same) || partial_append) {
            return Err(format!(
                "iteration {iter}: {path} is {got:?}; acknowledged {acked:?}, failed operations {failed:?}"
            ));
        }
    }
    let mut after = None;
    loop {
        let (entries, next) = match c.call(Request::ReadDir {
            path: "/".into(),
            after: after.clone(),
            limit: 100,
        })? {
            Reply::Entries { entries, next } => (entries, next),
            r => return Err(format!("readdir: {r:?}")),
        };
        for e in entries {
            let p = format!("/{}", e.name);
            match stat(c, &p)? {
                Some(i) if i.attr.ino == e.ino => {}
                other => {
                    return Err(format!(
                        "iteration {iter}: entry {p} (ino {}) leads to {other:?}",
                        e.ino
                    ))
                }
            }
        }
        match next {
            Some(n) => after = Some(n),
            None => return Ok(()),
        }
    }
}

#[test]
fn server_crash_loop() {
    use rand::Rng;
    let iters: u64 = std::env::var("SEALFS_SERVER_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mgr = Arc::new(common::Manager::start(CHUNK));
    let maddr = mgr.addr.clone();
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Mutex::new(Journal::default()));
    let mut rng = rand::thread_rng();
    let mut acked_total = 0;
    for iter in 1..=iters {
        let epoch = mgr.map().epoch;
        let mut child = start_server(dir.path(), &maddr);
        let c = wait_up(&mgr, epoch);
        // Recovery of half-done creates/removes runs in the background:
        // give the check a few tries.
        let mut res = verify(&c, &journal.lock(), iter);
        for _ in 0..40 {
            if res.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            res = verify(&c, &journal.lock(), iter);
        }
        if let Err(e) = res {
            let _ = child.kill();
            panic!("{e}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let hs: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let (mgr, stop, journal) = (mgr.clone(), stop.clone(), journal.clone());
                std::thread::spawn(move || client(t, iter, mgr, stop, journal))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
        // Child::kill is SIGKILL on Unix.
        child.kill().unwrap();
        let st = child.wait().unwrap();
        assert!(
            st.code().is_none(),
            "iteration {iter}: server ended by itself ({st})"
        );
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        acked_total = journal
            .lock()
            .paths
            .values()
            .filter(|v| v.0.is_some())
            .count();
    }
    let epoch = mgr.map().epoch;
    let mut child = start_server(dir.path(), &maddr);
    let c = wait_up(&mgr, epoch);
    let mut res = verify(&c, &journal.lock(), iters + 1);
    for _ in 0..40 {
        if res.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        res = verify(&c, &journal.lock(), iters + 1);
    }
    let _ = child.kill();
    let _ = child.wait();
    res.unwrap();
    eprintln!("server crash loop: {iters} kills, {acked_total} files present at the end");
}

//! Crash loop with real processes: a child process (this test binary,
//! re-run as `crash_child`) runs a multi-threaded workload of creates,
//! overwrites, appends, renames and deletes on the log-engine stores under
//! the default `fsync` policy, logging each operation before it starts
//! (`B`) and after its fsync returned (`A`). The parent SIGKILLs it at a
//! random moment, reopens the stores and checks: every path is in its last
//! acknowledged state or in the state of the operation in flight (contents
//! by SHA-256), every directory entry points at an inode record, and every
//! inode record has its entry. Iterations: `SEALFS_CRASH_ITERS` (default 50).

mod common;

use common::{content, sha};
use sealfs_proto::{DirEntry, FileKind};
use sealfs_server::engine::EngineOptions;
use sealfs_server::{DataStore, InodeRecord, LogDataStore, LogMetaStore, MetaOp, MetaStore};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const THREADS: u64 = 3;
const FILES_PER_THREAD: u64 = 12;
const SMALL_MAX: u32 = 16 * 1024;

fn stores(dir: &Path) -> (LogMetaStore, LogDataStore) {
    let o = EngineOptions {
        segment_size: 256 << 10,
        tick: Duration::from_millis(5),
        ..EngineOptions::default()
    };
    let m = LogMetaStore::open(&dir.join("meta"), &dir.join("meta"), true, o.clone()).unwrap();
    let d = LogDataStore::open(
        &dir.join("data"),
        &dir.join("meta"),
        SMALL_MAX,
        false,
        true,
        o,
    )
    .unwrap();
    (m, d)
}

fn read_all(d: &LogDataStore, ino: u64, size: u64) -> Vec<u8> {
    let cs = 1u64 << 20;
    let mut out = Vec::new();
    let mut c = 0;
    while (out.len() as u64) < size {
        let want = (size - out.len() as u64).min(cs) as u32;
        let mut part = Vec::from(d.read(ino, c, 0, want).unwrap());
        part.resize(want as usize, 0);
        out.extend(part);
        c += 1;
    }
    out
}

fn write_all(d: &LogDataStore, ino: u64, at: u64, data: &[u8]) {
    let cs = 1u64 << 20;
    let mut done = 0usize;
    while done < data.len() {
        let pos = at + done as u64;
        let (c, off) = (pos / cs, (pos % cs) as u32);
        let n = ((cs - u64::from(off)) as usize).min(data.len() - done);
        d.write(ino, c, off, &data[done..done + n]).unwrap();
        done += n;
    }
}

/// The child: runs until killed.
#[test]
#[ignore = "run by crash_loop as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var("SEALFS_CRASH_DIR") else {
        return;
    };
    let iter: u64 = std::env::var("SEALFS_CRASH_ITER").unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(dir);
    let (m, d) = stores(&dir);
    let (m, d) = (std::sync::Arc::new(m), std::sync::Arc::new(d));
    let journal = std::sync::Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("journal"))
            .unwrap(),
    ));
    let mut hs = Vec::new();
    for t in 0..THREADS {
        let (m, d, journal) = (m.clone(), d.clone(), journal.clone());
        hs.push(std::thread::spawn(move || {
            let log = |line: String| {
                // One write(2) per line: the page cache keeps it past SIGKILL.
                journal
                    .lock()
                    .unwrap()
                    .write_all(format!("{line} $\n").as_bytes())
                    .unwrap();
            };
            let mut n = 0u64;
            loop {
                n += 1;
                let f = (n * 7 + iter) % FILES_PER_THREAD;
                let dir = format!("/t{t}");
                let name = format!("f{f}");
                let path = format!("{dir}/{name}");
                let seed = iter << 32 | t << 24 | n;
                match m.get_inode(&path).unwrap() {
                    None => {
                        // create: one commit of record + entry, then data.
                        let len = [100usize, 4096, 15_000, 40_000, 1_300_000][(seed % 5) as usize];
                        let body = content(seed, len);
                        let ino = iter << 40 | t << 32 | n;
                        log(format!("B {path} {} {ino}", sha(&body)));
                        write_all(&d, ino, 0, &body);
                        d.sync(Some(ino)).unwrap();
                        m.commit(&[
                            MetaOp::PutInode(
                                path.clone(),
                                InodeRecord::normal(common::file_inode(ino, len as u64)),
                            ),
                            MetaOp::PutEntry(
                                dir.clone(),
                                DirEntry {
                                    name: name.clone(),
                                    kind: FileKind::File,
                                    ino,
                                },
                            ),
                        ])
                        .unwrap();
                        log(format!("A {path}"));
                    }
                    Some(rec) => {
                        let ino = rec.inode.attr.ino;
                        let size = rec.inode.attr.size;
                        match seed % 4 {
                            0 => {
                                // delete
                                log(format!("B {path} - 0"));
                                m.commit(&[
                                    MetaOp::DelInode(path.clone()),
                                    MetaOp::DelEntry(dir.clone(), name.clone()),
                                ])
                                .unwrap();
                                d.remove(ino).unwrap();
                                log(format!("A {path}"));
                            }
                            1 => {
                                // append
                                let mut body = read_all(&d, ino, size);
                                let extra = content(seed, 3000);
                                body.extend_from_slice(&extra);
                                log(format!("B {path} {} {ino}", sha(&body)));
                                write_all(&d, ino, size, &extra);
                                d.sync(Some(ino)).unwrap();
                                m.commit(&[MetaOp::PutInode(
                                    path.clone(),
                                    InodeRecord::normal(common::file_inode(ino, body.len() as u64)),
                                )])
                                .unwrap();
                                log(format!("A {path}"));
                            }
                            2 => {
                                // overwrite in place (same size)
                                let mut body = read_all(&d, ino, size);
                                let patch = content(seed, body.len().min(2000));
                                body[..patch.len()].copy_from_slice(&patch);
                                log(format!("B {path} {} {ino}", sha(&body)));
                                write_all(&d, ino, 0, &patch);
                                d.sync(Some(ino)).unwrap();
                                log(format!("A {path}"));
                            }
                            _ => {
                                // rename to a free name in the same directory
                                let to_name = format!("f{}", (f + 1 + seed % 5) % FILES_PER_THREAD);
                                let to = format!("{dir}/{to_name}");
                                if m.get_inode(&to).unwrap().is_some() {
                                    continue;
                                }
                                let body = read_all(&d, ino, size);
                                log(format!("B {path} - 0"));
                                log(format!("B {to} {} {ino}", sha(&body)));
                                m.commit(&[
                                    MetaOp::DelInode(path.clone()),
                                    MetaOp::DelEntry(dir.clone(), name.clone()),
                                    MetaOp::PutInode(
                                        to.clone(),
                                        InodeRecord::normal(common::file_inode(ino, size)),
                                    ),
                                    MetaOp::PutEntry(
                                        dir.clone(),
                                        DirEntry {
                                            name: to_name,
                                            kind: FileKind::File,
                                            ino,
                                        },
                                    ),
                                ])
                                .unwrap();
                                log(format!("A {path}"));
                                log(format!("A {to}"));
                            }
                        }
                    }
                }
            }
        }));
    }
    for h in hs {
        let _ = h.join();
    }
}

/// (acknowledged state, states of operations begun since and never
/// acknowledged: each may have happened, in a crashed child) per path; a
/// state is `Some((sha, ino))` or `None` (absent).
type States = HashMap<String, (Option<(String, u64)>, Vec<Option<(String, u64)>>)>;

fn parse_journal(dir: &Path, states: &mut States) {
    let Ok(text) = std::fs::read_to_string(dir.join("journal")) else {
        return;
    };
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            // Lines end with " $": a line cut by the kill (a write can stop
            // at a page boundary) never parses.
            ["B", path, sha, ino, "$"] => {
                let st = if *sha == "-" {
                    None
                } else {
                    Some((sha.to_string(), ino.parse().unwrap()))
                };
                states
                    .entry(path.to_string())
                    .or_insert((None, Vec::new()))
                    .1
                    .push(st);
            }
            ["A", path, "$"] => {
                let e = states.entry(path.to_string()).or_insert((None, Vec::new()));
                if let Some(st) = e.1.pop() {
                    e.0 = st;
                }
                e.1.clear();
            }
            // A line cut by the kill.
            _ => {}
        }
    }
}

fn verify(dir: &Path, iter: u64) {
    let (m, d) = stores(dir);
    let mut states = States::new();
    parse_journal(dir, &mut states);
    for (path, (acked, inflight)) in &states {
        let got = m.get_inode(path).unwrap();
        let got_state = got.as_ref().map(|r| {
            let body = read_all(&d, r.inode.attr.ino, r.inode.attr.size);
            (sha(&body), r.inode.attr.ino)
        });
        let ok = got_state == *acked || inflight.contains(&got_state);
        // An overwrite in flight may have landed partly (no atomicity of
        // data writes is promised before fsync): same ino, other content.
        // Only for a file that existed before that operation (a create
        // syncs its data before the record exists).
        let partial_overwrite = match &got_state {
            Some((_, gi)) => {
                let before = matches!(acked, Some((_, ai)) if ai == gi);
                let ops_on_it = inflight
                    .iter()
                    .filter(|f| matches!(f, Some((_, fi)) if fi == gi))
                    .count();
                before && ops_on_it >= 1 || ops_on_it >= 2
            }
            None => false,
        };
        if !(ok || partial_overwrite) {
            let text = std::fs::read_to_string(dir.join("journal")).unwrap_or_default();
            let hist: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(&format!("{path} ")) || l.ends_with(path.as_str()))
                .collect();
            let keep = dir.with_extension("kept");
            let _ = std::process::Command::new("cp")
                .arg("-a")
                .arg(dir)
                .arg(&keep)
                .status();
            panic!(
                "iteration {iter}: {path} is {got_state:?} (record {got:?}), acknowledged {acked:?}, in flight {inflight:?}; history {hist:#?}; copy in {}",
                keep.display()
            );
        }
        if let Some(r) = &got {
            let (parent, name) = path.rsplit_once('/').unwrap();
            let e = m.get_entry(parent, name).unwrap();
            assert_eq!(
                e.map(|e| e.ino),
                Some(r.inode.attr.ino),
                "iteration {iter}: {path} has no entry"
            );
        }
    }
    for t in 0..THREADS {
        let dir_path = format!("/t{t}");
        for e in m.list_entries(&dir_path, None, 1000).unwrap() {
            let p = format!("{dir_path}/{}", e.name);
            let r = m.get_inode(&p).unwrap();
            assert_eq!(
                r.map(|r| r.inode.attr.ino),
                Some(e.ino),
                "iteration {iter}: entry {p} points at a missing inode"
            );
        }
    }
    if iter.is_multiple_of(2) {
        m.abandon();
        d.abandon();
    }
}

#[test]
fn crash_loop() {
    use rand::Rng;
    let iters: u64 = std::env::var("SEALFS_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    for iter in 1..=iters {
        // A line cut by the last kill must not swallow the next child's first.
        let jp = dir.path().join("journal");
        if std::fs::read(&jp).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n')) {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&jp)
                .unwrap()
                .write_all(b"\n")
                .unwrap();
        }
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("SEALFS_CRASH_DIR", dir.path())
            .env("SEALFS_CRASH_ITER", iter.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..300)));
        // Child::kill is SIGKILL on Unix.
        child.kill().unwrap();
        let st = child.wait().unwrap();
        assert!(
            st.code().is_none(),
            "iteration {iter}: child ended by itself ({st}); see crash_child"
        );
        verify(dir.path(), iter);
    }
    // The children did work (not just start and die).
    let journal = std::fs::read_to_string(dir.path().join("journal")).unwrap();
    let acks = journal.lines().filter(|l| l.starts_with("A ")).count() as u64;
    assert!(
        acks > iters,
        "only {acks} acknowledged operations in {iters} iterations"
    );
    eprintln!("crash loop: {iters} kills, {acks} acknowledged operations verified");
}

//! Round-trip times of the transports on this machine, in one run:
//! `cargo run --release -p sealfs-transport --example rtt [-- ROUNDS]`.
//!
//! Each row: median and p99 of ROUNDS sequential round trips (after a
//! warm-up) of an empty request (`StatFs` → `Ok`) and of a 4 KiB read
//! (`Read` → 4096 bytes), through the same echo handler and the same
//! `sealfs_proto` frames: shared-memory rings back to back (both sides
//! spinning), rings with a 2 ms pause before each request (both sides asleep:
//! the wake-up path), TCP over loopback (`tcp::serve` + `TcpPool`), a Unix
//! socket (a blocking thread answering frames), and, as the physical
//! reference, the kernel's `stat()` and 4 KiB `pread()` of a file in /dev/shm.

use sealfs_proto::frame::{decode_payload, encode_frame};
use sealfs_proto::{Envelope, Errno, FrameHeader, FrameKind, Reply, Request, FRAME_HEADER_LEN};
use sealfs_transport::shm::{RingServer, ShmPool};
use sealfs_transport::tcp::{Handler, TcpPool};
use sealfs_transport::{ClientConfig, Transport};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Echo;

fn answer(req: Request) -> Reply {
    match req {
        Request::StatFs => Reply::Ok,
        Request::Read { len, .. } => Reply::Data(vec![7u8; len as usize].into()),
        _ => Reply::Err(Errno::ENOSYS),
    }
}

impl Handler for Echo {
    async fn handle(self: Arc<Self>, env: Envelope) -> Reply {
        answer(env.req)
    }
}

fn empty() -> Request {
    Request::StatFs
}

fn read4k() -> Request {
    Request::Read {
        ino: 1,
        chunk: 0,
        offset: 0,
        len: 4096,
    }
}

/// Median and p99 in µs of `rounds` calls of `f`, with `pause` before each.
fn measure(rounds: usize, pause: Duration, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..rounds / 10 + 10 {
        f();
    }
    let mut t = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let s = Instant::now();
        f();
        t.push(s.elapsed().as_nanos() as f64 / 1000.0);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[t.len() / 2], t[t.len() * 99 / 100])
}

fn call(t: &dyn Transport, r: Request) {
    match t.call(0, r) {
        Ok(Reply::Ok) | Ok(Reply::Data(_)) => {}
        other => panic!("{other:?}"),
    }
}

/// A blocking Unix-socket server answering frames with the echo handler.
fn unix_server(path: &std::path::Path) {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.unwrap();
            std::thread::spawn(move || {
                let mut hdr = [0u8; FRAME_HEADER_LEN];
                let mut out = Vec::new();
                while s.read_exact(&mut hdr).is_ok() {
                    let h = FrameHeader::parse(&hdr).unwrap();
                    let mut p = vec![0u8; h.payload_len()];
                    s.read_exact(&mut p).unwrap();
                    let env: Envelope = decode_payload(&p).unwrap();
                    encode_frame(FrameKind::Reply, h.id, &answer(env.req), &mut out).unwrap();
                    s.write_all(&out).unwrap();
                }
            });
        }
    });
}

fn unix_call(s: &mut UnixStream, buf: &mut Vec<u8>, r: Request) {
    encode_frame(FrameKind::Request, 1, &Envelope { epoch: 0, req: r }, buf).unwrap();
    s.write_all(buf).unwrap();
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    s.read_exact(&mut hdr).unwrap();
    let h = FrameHeader::parse(&hdr).unwrap();
    buf.resize(h.payload_len(), 0);
    s.read_exact(buf).unwrap();
    let _: Reply = decode_payload(buf).unwrap();
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = ClientConfig::default();
    type Row = (String, (f64, f64), (f64, f64));
    let mut rows: Vec<Row> = Vec::new();

    let addr = format!("rtt-bench-{}", std::process::id());
    let _ring = RingServer::start(&addr, Arc::new(Echo), rt.handle().clone()).unwrap();
    let shm = ShmPool::new(addr, cfg.clone());
    rows.push((
        "shared-memory rings (spinning)".into(),
        measure(rounds, Duration::ZERO, || call(&shm, empty())),
        measure(rounds, Duration::ZERO, || call(&shm, read4k())),
    ));
    let slow = (rounds / 20).max(200);
    rows.push((
        "shared-memory rings, idle 2 ms before each (futex/poll wake-ups)".into(),
        measure(slow, Duration::from_millis(2), || call(&shm, empty())),
        measure(slow, Duration::from_millis(2), || call(&shm, read4k())),
    ));

    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let taddr = listener.local_addr().unwrap().to_string();
    rt.spawn(sealfs_transport::tcp::serve(listener, Arc::new(Echo)));
    let tcp = TcpPool::new(taddr, cfg.clone());
    rows.push((
        "TCP loopback (tokio server, TCP_NODELAY)".into(),
        measure(rounds, Duration::ZERO, || call(&tcp, empty())),
        measure(rounds, Duration::ZERO, || call(&tcp, read4k())),
    ));

    let dir = tempfile_dir();
    let sock = dir.join("rtt.sock");
    unix_server(&sock);
    let mut us = UnixStream::connect(&sock).unwrap();
    let mut buf = Vec::new();
    let e = measure(rounds, Duration::ZERO, || {
        unix_call(&mut us, &mut buf, empty())
    });
    let r = measure(rounds, Duration::ZERO, || {
        unix_call(&mut us, &mut buf, read4k())
    });
    rows.push(("Unix socket (blocking thread server)".into(), e, r));

    let f = std::path::Path::new("/dev/shm").join(format!("sealfs-rtt-{}", std::process::id()));
    std::fs::write(&f, vec![1u8; 8192]).unwrap();
    let file = std::fs::File::open(&f).unwrap();
    let mut b = vec![0u8; 4096];
    let e = measure(rounds, Duration::ZERO, || {
        std::fs::metadata(&f).unwrap();
    });
    let r = measure(rounds, Duration::ZERO, || {
        file.read_at(&mut b, 0).unwrap();
    });
    rows.push((
        "kernel stat() / 4 KiB pread() of a /dev/shm file".into(),
        e,
        r,
    ));
    let _ = std::fs::remove_file(&f);
    let _ = std::fs::remove_dir_all(&dir);

    println!("{rounds} round trips per row (the idle-ring row: {slow}), median / p99 in µs");
    println!();
    println!("| path | empty request median | p99 | 4 KiB read median | p99 |");
    println!("|---|---|---|---|---|");
    for (name, (em, ep), (rm, rp)) in &rows {
        println!("| {name} | {em:.2} | {ep:.2} | {rm:.2} | {rp:.2} |");
    }
    let ring = rows[0].1 .0;
    let tcp = rows[2].1 .0;
    println!();
    println!(
        "ring vs TCP loopback (empty request, median): {:.1}× faster",
        tcp / ring
    );
    drop(rt);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sealfs-rtt-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

//! Shared-memory rings against a real ring server with a small echo
//! handler: a stress run with every reply matched and every payload checked,
//! clients and servers that die (real processes, SIGKILL), clients that
//! write garbage into the shared region, and timeouts.
//!
//! `SEALFS_RING_STRESS_N` sets the requests per stress thread (default
//! 100 000, the full run: about 15 s here).

mod common;

use common::{cfg, pattern, runtime, Echo};
use rand::{Rng, SeedableRng};
use sealfs_proto::{Errno, Reply, Request};
use sealfs_transport::shm::testing::RawRing;
use sealfs_transport::shm::{RingServer, ShmPool};
use sealfs_transport::{Transport, TransportError};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn unique_addr(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn start(rt: &tokio::runtime::Runtime, tag: &str) -> (RingServer, String) {
    let addr = unique_addr(tag);
    let s = RingServer::start(&addr, Arc::new(Echo), rt.handle().clone()).expect("ring server");
    (s, addr)
}

/// Payload sizes from 0 B to 1 MiB, log-uniform (so small and large both
/// occur often), with the two ends forced now and then.
fn size(r: &mut impl Rng) -> usize {
    match r.gen_range(0..100) {
        0 => 0,
        1 => 1 << 20,
        _ => {
            let bits = r.gen_range(0..=20);
            r.gen_range(0..=(1usize << bits)).min(1 << 20)
        }
    }
}

#[test]
fn stress_eight_threads_mixed_payloads_all_matched() {
    let per_thread: usize = std::env::var("SEALFS_RING_STRESS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = runtime();
    let (server, addr) = start(&rt, "stress");
    let pool = Arc::new(ShmPool::new(addr, cfg(Duration::from_secs(30))));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut r = rand::rngs::StdRng::seed_from_u64(t);
                let p = pattern();
                let mut done = 0usize;
                let mut bytes = 0usize;
                while done < per_thread {
                    let batch = r.gen_range(1..=8).min(per_thread - done);
                    let mut reqs = Vec::with_capacity(batch);
                    let mut want: Vec<Vec<u8>> = Vec::with_capacity(batch);
                    for _ in 0..batch {
                        let delay = u64::from(r.gen_range(0..200) == 0);
                        match r.gen_range(0..3) {
                            0 => {
                                let n = size(&mut r);
                                let off = r.gen_range(0..=(p.len() - n));
                                let data = p[off..off + n].to_vec();
                                want.push(data.clone());
                                reqs.push(Request::Write {
                                    ino: t,
                                    chunk: delay,
                                    offset: 0,
                                    data: data.into(),
                                });
                            }
                            1 => {
                                let n = size(&mut r);
                                let off = r.gen_range(0..=(p.len() - n));
                                want.push(p[off..off + n].to_vec());
                                reqs.push(Request::Read {
                                    ino: t,
                                    chunk: delay,
                                    offset: off as u32,
                                    len: n as u32,
                                });
                            }
                            _ => {
                                let path = format!("/t{t}/{}", r.gen::<u64>());
                                want.push(path.clone().into_bytes());
                                reqs.push(Request::GetAttr { path });
                            }
                        }
                    }
                    let replies = pool.call_many(0, reqs);
                    assert_eq!(replies.len(), batch);
                    for (i, (got, want)) in replies.into_iter().zip(want).enumerate() {
                        match got {
                            Ok(Reply::Data(d)) => {
                                assert!(
                                    d == want,
                                    "thread {t} request {} ({} of batch): payload differs",
                                    done + i,
                                    i
                                );
                                bytes += d.len();
                            }
                            other => panic!("thread {t} request {}: {other:?}", done + i),
                        }
                    }
                    done += batch;
                }
                bytes
            })
        })
        .collect();
    let bytes: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
    let el = t0.elapsed();
    let served = server.stats().requests.load(Ordering::Relaxed);
    eprintln!(
        "8 × {per_thread} requests, {} MiB echoed, in {el:?}; server accepted {} rings",
        bytes >> 20,
        server.stats().accepted.load(Ordering::Relaxed)
    );
    assert_eq!(served, 8 * per_thread as u64);
    assert!(
        server.stats().accepted.load(Ordering::Relaxed) <= 8 * 2,
        "rings are pooled, not one per call"
    );
    assert_eq!(server.stats().violations.load(Ordering::Relaxed), 0);
}

fn write_req(n: usize, delay_ms: u64) -> Request {
    Request::Write {
        ino: 0,
        chunk: delay_ms,
        offset: 0,
        data: vec![0xab; n].into(),
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Re-runs this test binary as a child process running one `child_*`
/// entry point with `SEALFS_RING_CHILD=<addr>`.
fn child(entry: &str, addr: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env("SEALFS_RING_CHILD", addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn read_line(c: &mut std::process::Child, want: &str) {
    use std::io::BufRead;
    let out = c.stdout.as_mut().unwrap();
    let mut r = std::io::BufReader::new(out);
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "child ended before saying {want:?}"
        );
        if line.trim().ends_with(want) {
            return;
        }
    }
}

/// Child entry point: a client that sends a slow request and then blocks.
#[test]
fn child_slow_client() {
    let Ok(addr) = std::env::var("SEALFS_RING_CHILD") else {
        return;
    };
    let pool = ShmPool::new(addr, cfg(Duration::from_secs(60)));
    // One quick call so the ring exists, then a slow one to be killed in.
    assert!(matches!(pool.call(0, write_req(10, 0)), Ok(Reply::Data(_))));
    println!("connected");
    let _ = pool.call_many(0, vec![write_req(300_000, 2000), write_req(1000, 2000)]);
    std::process::exit(3);
}

/// Child entry point: a ring server that serves until killed.
#[test]
fn child_server() {
    let Ok(addr) = std::env::var("SEALFS_RING_CHILD") else {
        return;
    };
    let rt = runtime();
    let s = RingServer::start(&addr, Arc::new(Echo), rt.handle().clone()).unwrap();
    println!("serving");
    std::thread::sleep(Duration::from_secs(120));
    drop(s);
}

#[test]
fn client_killed_mid_request_does_not_wedge_the_server() {
    let rt = runtime();
    let (server, addr) = start(&rt, "kill");
    let good = ShmPool::new(addr.clone(), cfg(Duration::from_secs(10)));
    for round in 0..3 {
        let mut c = child("child_slow_client", &addr);
        read_line(&mut c, "connected");
        std::thread::sleep(Duration::from_millis(100)); // the slow request is in the handler
        c.kill().unwrap(); // SIGKILL
        let _ = c.wait();
        let closed_before = round;
        wait_until(
            "the dead client's ring to be reclaimed",
            Duration::from_secs(20),
            || server.stats().closed.load(Ordering::Relaxed) > closed_before as u64,
        );
        // Everyone else is still served (a wedged server would make this
        // call fail with the 10 s io timeout).
        match good.call(0, write_req(4096, 0)) {
            Ok(Reply::Data(d)) => assert_eq!(d.len(), 4096),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.stats().violations.load(Ordering::Relaxed), 0);
    // The dead clients' late replies (2 s handlers) are dropped quietly.
    std::thread::sleep(Duration::from_millis(2200));
    assert!(matches!(good.call(0, write_req(1, 0)), Ok(Reply::Data(_))));
}

#[test]
fn server_killed_mid_request_fails_the_call_quickly() {
    let addr = unique_addr("srvkill");
    let mut srv = child("child_server", &addr);
    read_line(&mut srv, "serving");
    let pool = Arc::new(ShmPool::new(addr, cfg(Duration::from_secs(20))));
    assert!(matches!(pool.call(0, write_req(10, 0)), Ok(Reply::Data(_))));
    let p = pool.clone();
    let caller = std::thread::spawn(move || {
        let t = Instant::now();
        let r = p.call(0, write_req(10, 5000));
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200)); // the client is asleep on its futex
    srv.kill().unwrap();
    let _ = srv.wait();
    let (r, el) = caller.join().unwrap();
    let e = r.expect_err("a dead server cannot answer");
    assert!(matches!(e, TransportError::Io { .. }), "{e}");
    assert_eq!(e.errno(), Errno::EIO);
    // Noticed by the liveness check, not by the 20 s io timeout.
    assert!(el < Duration::from_secs(10), "noticed after {el:?}");
    // And a new call fails (no server), not hangs.
    let t = Instant::now();
    assert!(pool.call(0, write_req(10, 0)).is_err());
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn slow_server_times_out() {
    let rt = runtime();
    let (_server, addr) = start(&rt, "timeout");
    let pool = ShmPool::new(addr, cfg(Duration::from_millis(300)));
    let e = pool.call(0, write_req(10, 3000)).expect_err("times out");
    assert!(matches!(e, TransportError::Timeout { .. }), "{e}");
}

/// Each kind of garbage a client can write: the server disconnects that
/// client (its socket is shut down) and keeps serving a well-behaved one.
#[test]
fn garbage_in_the_region_disconnects_only_that_client() {
    let rt = runtime();
    let (server, addr) = start(&rt, "garbage");
    let good = ShmPool::new(addr.clone(), cfg(Duration::from_secs(10)));
    assert!(matches!(good.call(0, write_req(10, 0)), Ok(Reply::Data(_))));
    type Poison = Box<dyn Fn(&RawRing)>;
    let cases: Vec<(&str, Poison)> = vec![
        (
            "offset past the data area",
            Box::new(|r: &RawRing| r.submit(0, 1, u32::MAX - 4, 100)),
        ),
        (
            "length past the data area",
            Box::new(|r: &RawRing| r.submit(0, 1, 16, u32::MAX)),
        ),
        (
            "frame shorter than a header",
            Box::new(|r: &RawRing| r.submit(0, 1, 0, 3)),
        ),
        (
            "producer index far ahead",
            Box::new(|r: &RawRing| r.set_sq_prod(1 << 40)),
        ),
        (
            "bad frame header",
            Box::new(|r: &RawRing| {
                r.write_data(0, &[0xff; 64]);
                r.submit(0, 1, 0, 64)
            }),
        ),
        (
            "entry id differs from the frame's",
            Box::new(|r: &RawRing| {
                let mut f = Vec::new();
                let env = sealfs_proto::Envelope {
                    epoch: 0,
                    req: Request::GetAttr { path: "/x".into() },
                };
                sealfs_proto::frame::encode_frame(
                    sealfs_proto::FrameKind::Request,
                    9,
                    &env,
                    &mut f,
                )
                .unwrap();
                r.write_data(0, &f);
                r.submit(0, 10, 0, f.len() as u32)
            }),
        ),
        (
            "consumer index of completions moved backwards",
            Box::new(|r: &RawRing| {
                let mut f = Vec::new();
                let env = sealfs_proto::Envelope {
                    epoch: 0,
                    req: Request::GetAttr { path: "/x".into() },
                };
                sealfs_proto::frame::encode_frame(
                    sealfs_proto::FrameKind::Request,
                    1,
                    &env,
                    &mut f,
                )
                .unwrap();
                r.write_data(0, &f);
                r.submit(0, 1, 0, f.len() as u32);
                wait_until("the first reply", Duration::from_secs(20), || {
                    r.cq_prod() == 1
                });
                r.set_cq_cons(7); // past what was produced
                r.write_data(0, &f);
                r.submit(1, 1, 0, f.len() as u32);
            }),
        ),
    ];
    for (i, (what, poison)) in cases.iter().enumerate() {
        let raw = RawRing::connect(&addr).unwrap();
        poison(&raw);
        wait_until(what, Duration::from_secs(20), || raw.closed_by_server());
        assert_eq!(
            server.stats().violations.load(Ordering::Relaxed),
            i as u64 + 1,
            "{what}"
        );
        match good.call(0, write_req(100_000, 0)) {
            Ok(Reply::Data(d)) => assert_eq!(d, vec![0xab; 100_000], "{what}"),
            other => panic!("after {what}: {other:?}"),
        }
    }
    // An undecodable payload in a well-formed frame is an error reply, not a
    // disconnect (as on TCP).
    let raw = RawRing::connect(&addr).unwrap();
    let mut f = vec![0u8; 14];
    f.extend_from_slice(&[0xff; 8]);
    let len = (f.len() - 4) as u32;
    f[0..4].copy_from_slice(&len.to_le_bytes());
    f[4] = sealfs_proto::PROTO_VERSION;
    f[5] = 0;
    f[6..14].copy_from_slice(&5u64.to_le_bytes());
    raw.write_data(0, &f);
    raw.submit(0, 5, 0, f.len() as u32);
    wait_until("an EPROTO reply", Duration::from_secs(20), || {
        raw.cq_prod() == 1
    });
    assert!(!raw.closed_by_server());
}

/// A client that stops taking its completions fills its completion ring:
/// the server must stop at the ring's end (never write over a completion
/// the client has not taken), keep the replies that did not fit, and
/// deliver each of them, once and intact, when the client takes the rest.
#[test]
fn a_full_completion_ring_holds_the_rest_of_the_replies_until_there_is_room() {
    const ENTRIES: u64 = 64;
    const EXTRA: u64 = 6;
    let rt = runtime();
    let (_server, addr) = start(&rt, "cqfull");
    let raw = RawRing::connect(&addr).unwrap();
    let frame = |id: u64| {
        let env = sealfs_proto::Envelope {
            epoch: 0,
            req: Request::GetAttr {
                path: format!("/full-{id}"),
            },
        };
        let mut f = Vec::new();
        sealfs_proto::frame::encode_frame(sealfs_proto::FrameKind::Request, id, &env, &mut f)
            .unwrap();
        f
    };
    for k in 0..ENTRIES + EXTRA {
        // Entry k reuses the ring slot and data of entry k - ENTRIES: wait
        // until the server has copied that one out.
        wait_until(
            "room in the submission ring",
            Duration::from_secs(20),
            || k - raw.sq_cons() < ENTRIES,
        );
        let f = frame(k + 1);
        let off = (k % ENTRIES) as u32 * 256;
        raw.write_data(off as usize, &f);
        raw.submit(k, k + 1, off, f.len() as u32);
    }
    wait_until("a full completion ring", Duration::from_secs(20), || {
        raw.cq_prod() >= ENTRIES
    });
    // The server has all the requests: the rest wait for room. Nothing may
    // be published past the ring's end, now or a little later.
    wait_until("every request taken", Duration::from_secs(20), || {
        raw.sq_cons() == ENTRIES + EXTRA
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        raw.cq_prod(),
        ENTRIES,
        "completions published over untaken ones"
    );
    let mut seen = std::collections::BTreeSet::new();
    let check = |idx: u64, seen: &mut std::collections::BTreeSet<u64>| {
        let (id, reply) = raw
            .completion(idx)
            .unwrap_or_else(|e| panic!("entry {idx}: {e}"));
        match reply {
            Reply::Data(d) => assert_eq!(&d[..], format!("/full-{id}").as_bytes(), "entry {idx}"),
            other => panic!("entry {idx}: {other:?}"),
        }
        assert!(seen.insert(id), "reply {id} delivered twice");
    };
    for idx in 0..ENTRIES {
        check(idx, &mut seen);
    }
    raw.set_cq_cons(ENTRIES);
    wait_until("the replies that waited", Duration::from_secs(20), || {
        raw.cq_prod() == ENTRIES + EXTRA
    });
    for idx in ENTRIES..ENTRIES + EXTRA {
        check(idx, &mut seen);
    }
    assert_eq!(seen, (1..=ENTRIES + EXTRA).collect());
    // And nothing after them: a reply pushed twice would show here.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        raw.cq_prod(),
        ENTRIES + EXTRA,
        "more completions than requests"
    );
    assert!(!raw.closed_by_server());
}

#[test]
fn idle_rings_burn_no_cpu() {
    let rt = runtime();
    let (_server, addr) = start(&rt, "idle");
    let pool = ShmPool::new(addr, cfg(Duration::from_secs(10)));
    assert!(pool.call(0, write_req(10, 0)).is_ok());
    std::thread::sleep(Duration::from_millis(50));
    let cpu = || {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap();
        let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    std::thread::sleep(Duration::from_millis(1000));
    let ticks = cpu() - before;
    // 100 ticks = one core busy for the whole second.
    assert!(
        ticks <= 5,
        "idle server + client used {ticks} ticks of CPU in 1 s"
    );
}

/// `send` without waiting: the reply is polled (`try_reply`) or waited for
/// (`wait`), a slow reply is still matched, several in flight at once each
/// get their own, and the ring goes back to the pool for the next call.
#[test]
fn send_then_poll_or_wait_matches_each_reply() {
    let rt = runtime();
    let (server, addr) = start(&rt, "send");
    let pool = ShmPool::new(addr, cfg(Duration::from_secs(10)));
    let req = |n: usize, delay: u64| Request::Write {
        ino: 1,
        chunk: delay,
        offset: 0,
        data: vec![n as u8; n].into(),
    };
    // Polled until it arrives.
    let mut t = pool
        .send(0, &req(5, 0))
        .expect("rings can send")
        .expect("sent");
    let got = loop {
        if let Some(r) = t.try_reply() {
            break r;
        }
        std::hint::spin_loop();
    };
    assert_eq!(got.unwrap(), Reply::Data(vec![5; 5].into()));
    // A slow one (answered from a task after 50 ms) is not there at once,
    // and `wait` gets it.
    let mut slow = pool.send(0, &req(7, 50)).unwrap().unwrap();
    assert!(slow.try_reply().is_none());
    // Others in flight meanwhile, on rings of their own.
    let quick: Vec<_> = (1..=4)
        .map(|n| pool.send(0, &req(n, 0)).unwrap().unwrap())
        .collect();
    for (n, q) in (1..=4).zip(quick) {
        assert_eq!(q.wait().unwrap(), Reply::Data(vec![n as u8; n].into()));
    }
    assert_eq!(slow.wait().unwrap(), Reply::Data(vec![7; 7].into()));
    // The rings were returned: a plain call works and opens no new ring
    // beyond the five already made.
    let opened = server.stats().accepted.load(Ordering::Relaxed);
    assert!(matches!(pool.call(0, req(3, 0)), Ok(Reply::Data(d)) if d == vec![3; 3]));
    assert_eq!(server.stats().accepted.load(Ordering::Relaxed), opened);
    // A request that times out fails with Timeout, not a hang.
    let short = ShmPool::new(pool.addr().to_string(), cfg(Duration::from_millis(200)));
    let t = short.send(0, &req(1, 3000)).unwrap().unwrap();
    assert!(matches!(t.wait(), Err(TransportError::Timeout { .. })));
}

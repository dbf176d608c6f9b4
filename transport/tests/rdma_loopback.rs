//! The RDMA protocol (transport/src/rdma) on the in-process loopback
//! fabric, against a real TCP front door serving an echo handler: the
//! connection exchange, every message path (inline, a big request READ by
//! the server, a big reply WRITTEN into the client's area, a big reply
//! staged and READ by the client, then released), pipelining, many
//! threads, a client that sends garbage, a server that does not answer in
//! time, and a server without RDMA. The ibverbs fabric cannot run here (no
//! device); it sits under the same trait.

mod common;

use common::{cfg, pattern, runtime, Echo};
use rand::{Rng, SeedableRng};
use sealfs_proto::{Reply, Request};
use sealfs_transport::rdma::loopback::Loopback;
use sealfs_transport::rdma::{Acceptor, Fabric, FrontDoor, Qp, RdmaPool, INLINE, SEND_OFF};
use sealfs_transport::tcp::TcpPool;
use sealfs_transport::{Transport, TransportError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP server whose front door accepts RDMA on `fabric` (or not).
fn serve(rt: &tokio::runtime::Runtime, fabric: Option<Loopback>) -> String {
    serve_limited(rt, fabric, sealfs_transport::rdma::MAX_CONNS)
}

/// As [`serve`], with at most `max_conns` RDMA connections at once.
fn serve_limited(
    rt: &tokio::runtime::Runtime,
    fabric: Option<Loopback>,
    max_conns: usize,
) -> String {
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let acc = fabric.map(|f| Arc::new(f) as Arc<dyn Acceptor<Echo>>);
        let door = FrontDoor::with_limit(Arc::new(Echo), acc, max_conns);
        tokio::spawn(sealfs_transport::tcp::serve(l, door));
        addr
    })
}

/// A runtime serving RDMA on a fresh loopback fabric, and a pool connected
/// to it with the given io timeout.
fn connected(
    timeout: Duration,
) -> (
    tokio::runtime::Runtime,
    Loopback,
    String,
    RdmaPool<Loopback>,
) {
    let rt = runtime();
    let fabric = Loopback::new();
    let addr = serve(&rt, Some(fabric.clone()));
    let pool = RdmaPool::connect(&addr, &cfg(timeout), Arc::new(fabric.clone())).unwrap();
    (rt, fabric, addr, pool)
}

fn write(data: Vec<u8>) -> Request {
    Request::Write {
        ino: 1,
        chunk: 0,
        offset: 0,
        data: data.into(),
    }
}

fn read(offset: u32, len: u32) -> Request {
    Request::Read {
        ino: 1,
        chunk: 0,
        offset,
        len,
    }
}

fn data(r: Result<Reply, TransportError>) -> Vec<u8> {
    match r {
        Ok(Reply::Data(d)) => d.into(),
        other => panic!("unexpected reply {other:?}"),
    }
}

#[test]
fn every_message_path_round_trips_byte_exact() {
    let (_rt, fabric, _, pool) = connected(Duration::from_secs(20));
    // One each: inline both ways; big request READ by the server with its
    // big echo WRITTEN back; a pipeline of big reads where the first reply
    // is written into the client's area and the others are staged, READ
    // and released one by one.
    for size in [
        0usize,
        1,
        INLINE - 200,
        INLINE + 1,
        300_000,
        1 << 20,
        4 << 20,
    ] {
        let d: Vec<u8> = pattern()[..size].to_vec();
        assert_eq!(
            data(pool.call(1, write(d.clone()))),
            d,
            "echo of {size} bytes"
        );
    }
    let reqs: Vec<Request> = (0..12).map(|i| read(i * 1000, (1 << 20) - i * 7)).collect();
    let out = pool.call_many(1, reqs);
    assert_eq!(out.len(), 12);
    for (i, r) in out.into_iter().enumerate() {
        let (off, len) = (i * 1000, (1 << 20) - i * 7);
        assert_eq!(data(r), &pattern()[off..off + len], "read {i}");
    }
    // Server and client endpoints of the one connection.
    assert_eq!(fabric.endpoints(), 2);
    let s = pool.stats();
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(n(&s.pulled_requests), 4, "{s:?}");
    assert_eq!(n(&s.inline_requests), 3 + 12, "{s:?}");
    assert_eq!(n(&s.inline_replies), 3, "{s:?}");
    // A request sent while area A is free holds it for its reply; in the
    // pipeline only the first ones can, the others are staged.
    assert_eq!(
        n(&s.written_replies) + n(&s.staged_replies),
        4 + 12,
        "{s:?}"
    );
    assert!(n(&s.written_replies) >= 5, "{s:?}");
    assert!(n(&s.staged_replies) >= 1, "{s:?}");
}

#[test]
fn threads_pipelining_random_sizes_get_their_own_replies() {
    let (_rt, _, _, pool) = connected(Duration::from_secs(30));
    let pool = Arc::new(pool);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                let mut checked = 0;
                while checked < 400 {
                    let n = rng.gen_range(1..=12);
                    let mut want = Vec::new();
                    let reqs: Vec<Request> = (0..n)
                        .map(|_| {
                            let big = rng.gen_bool(0.1);
                            let len = if big {
                                rng.gen_range(0..=1 << 20)
                            } else {
                                rng.gen_range(0..20_000)
                            };
                            let off = rng.gen_range(0..(4 << 20) - len);
                            want.push((off, len));
                            if rng.gen_bool(0.5) {
                                write(pattern()[off..off + len].to_vec())
                            } else {
                                read(off as u32, len as u32)
                            }
                        })
                        .collect();
                    for (r, (off, len)) in pool.call_many(1, reqs).into_iter().zip(want) {
                        assert_eq!(data(r), &pattern()[off..off + len]);
                        checked += 1;
                    }
                }
                checked
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total >= 1600);
}

/// Connects a raw endpoint to the server, as `RdmaPool` would, and posts a
/// receive.
fn raw_endpoint(fabric: &Loopback, addr: &str) -> <Loopback as Fabric>::Qp {
    let (mut qp, mine) = fabric.endpoint().unwrap();
    let tcp = TcpPool::new(addr.to_string(), cfg(Duration::from_secs(5)));
    let theirs = match tcp.call(0, Request::RdmaConnect { params: mine }).unwrap() {
        Reply::RdmaAccept(p) => p,
        other => panic!("{other:?}"),
    };
    fabric.connect(&mut qp, &theirs).unwrap();
    qp.post_recv(1 << 32, 0, INLINE).unwrap();
    qp
}

fn wait_endpoints(fabric: &Loopback, n: usize) {
    let t = Instant::now();
    while fabric.endpoints() != n {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} endpoints, want {n}",
            fabric.endpoints()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_client_sending_garbage_is_disconnected_and_others_are_served() {
    let (_rt, fabric, addr, pool) = connected(Duration::from_secs(20));
    assert_eq!(data(pool.call(1, write(vec![5; 10]))), vec![5; 10]);
    wait_endpoints(&fabric, 2);

    let msg = |bytes: &dyn Fn(&mut [u8])| {
        let mut qp = raw_endpoint(&fabric, &addr);
        wait_endpoints(&fabric, 4);
        qp.with_local(SEND_OFF, 48, |m| bytes(m));
        qp.post_send(2 << 32, SEND_OFF, 48).unwrap();
        // The server drops its endpoint; ours notices.
        wait_endpoints(&fabric, 3);
        let mut c = Vec::new();
        let _ = qp.poll(&mut c);
        drop(qp);
        wait_endpoints(&fabric, 2);
    };
    // Not a message at all.
    msg(&|m| m.fill(0xAB));
    // A Pull of a frame far past the client's region (remote access error
    // on the server's READ).
    msg(&|m| {
        m.fill(0);
        m[0..4].copy_from_slice(b"SRDM");
        m[4] = 2;
        m[8..16].copy_from_slice(&1u64.to_le_bytes());
        m[16..20].copy_from_slice(&100_000u32.to_le_bytes());
        m[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    });
    // A Pull longer than any frame.
    msg(&|m| {
        m.fill(0);
        m[0..4].copy_from_slice(b"SRDM");
        m[4] = 2;
        m[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    });
    // A Release with nothing staged.
    msg(&|m| {
        m.fill(0);
        m[0..4].copy_from_slice(b"SRDM");
        m[4] = 4;
    });
    // The well-behaved client kept its connection throughout.
    let d = pattern()[..200_000].to_vec();
    assert_eq!(data(pool.call(1, write(d.clone()))), d);
}

#[test]
fn a_slow_server_gives_a_timeout_and_a_fresh_connection_works() {
    let (_rt, _, _, pool) = connected(Duration::from_millis(300));
    let slow = Request::Read {
        ino: 1,
        chunk: 2000,
        offset: 0,
        len: 10,
    };
    let t = Instant::now();
    match pool.call(1, slow) {
        Err(TransportError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "gave up after {:?}",
        t.elapsed()
    );
    // The timed-out connection was dropped; the next call opens another.
    assert_eq!(data(pool.call(1, read(5, 100))), &pattern()[5..105]);
}

#[test]
fn a_server_without_rdma_refuses_and_still_serves_tcp() {
    let rt = runtime();
    let addr = serve(&rt, None);
    let fabric = Loopback::new();
    match RdmaPool::connect(
        &addr,
        &cfg(Duration::from_secs(5)),
        Arc::new(fabric.clone()),
    ) {
        Err(e) => assert!(e.to_string().contains("refused"), "{e}"),
        Ok(_) => panic!("connected to a server without RDMA"),
    }
    let tcp = TcpPool::new(addr, cfg(Duration::from_secs(5)));
    assert_eq!(data(tcp.call(1, write(vec![1, 2, 3]))), vec![1, 2, 3]);
}

#[test]
fn connections_beyond_the_limit_are_refused_until_one_ends() {
    let rt = runtime();
    let fabric = Loopback::new();
    let addr = serve_limited(&rt, Some(fabric.clone()), 1);
    let c = cfg(Duration::from_secs(5));
    let first = RdmaPool::connect(&addr, &c, Arc::new(fabric.clone())).unwrap();
    match RdmaPool::connect(&addr, &c, Arc::new(fabric.clone())) {
        Err(e) => assert!(e.to_string().contains("EAGAIN"), "{e}"),
        Ok(_) => panic!("a second connection past a limit of one"),
    }
    assert_eq!(data(first.call(1, read(0, 10))), &pattern()[..10]);
    // The first client goes away; its server thread notices and frees the slot.
    drop(first);
    let t = Instant::now();
    let second = loop {
        match RdmaPool::connect(&addr, &c, Arc::new(fabric.clone())) {
            Ok(p) => break p,
            Err(e) => {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "slot never freed: {e}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    assert_eq!(data(second.call(1, read(3, 10))), &pattern()[3..13]);
}

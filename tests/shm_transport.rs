//! A real 3-server cluster on this host is reached over shared-memory rings
//! by default (`SEALFS_TRANSPORT` unset = `auto`): every server gets rings,
//! the manager (which has no ring socket) TCP; data round-trips byte-exact
//! from many threads; a killed server fails its calls with EIO instead of
//! hanging a ring.

mod common;

use common::{ids, Cluster, Opts};
use rand::{RngCore, SeedableRng};
use sealfs_client::Errno;
use sealfs_transport::shm::{choices, Choice, RINGS_OPENED};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn forced_tcp() -> bool {
    std::env::var("SEALFS_TRANSPORT").is_ok_and(|v| v == "tcp")
}

#[test]
fn local_servers_are_reached_over_rings() {
    if forced_tcp() {
        eprintln!("SEALFS_TRANSPORT=tcp: rings are off for this run; nothing to check");
        return;
    }
    let mut cl = Cluster::start(Opts::default());
    let c = Arc::new(cl.client_with_timeout(Duration::from_secs(5)));
    let (uid, gid) = ids();
    c.mkdir("/r", 0o755, uid, gid).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                for i in 0..40 {
                    let len = [0usize, 1, 4096, 65_537, (1 << 20) + 3][i % 5];
                    let mut d = vec![0u8; len];
                    rng.fill_bytes(&mut d);
                    let p = format!("/r/t{t}-{i}");
                    c.write_file(&p, &d, 0o644).unwrap();
                    assert_eq!(c.stat(&p).unwrap().attr.size, len as u64);
                    assert!(c.read_file(&p).unwrap() == d, "{p}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.readdir("/r").unwrap().len(), 8 * 40);

    let map = c.map();
    let got = choices();
    for s in &map.servers {
        assert!(
            got.iter().any(|(a, k)| a == &s.addr && *k == Choice::Shm),
            "server {} at {} not on rings: {got:?}",
            s.id,
            s.addr
        );
    }
    assert!(
        got.iter()
            .any(|(a, k)| *a == cl.manager_addr() && *k == Choice::Tcp),
        "{got:?}"
    );
    assert!(RINGS_OPENED.load(Ordering::Relaxed) >= 3);

    // A server killed while the client holds rings to it: calls that need it
    // fail with EIO within the io timeout, never hang.
    cl.kill_server(2);
    let t = Instant::now();
    let mut eio = 0;
    for i in 0..40 {
        match c.stat(&format!("/r/t0-{i}")) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e, Errno::EIO);
                eio += 1;
            }
        }
    }
    assert!(eio > 0, "some of 40 paths must live on the killed server");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
}

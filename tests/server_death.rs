//! A server killed with SIGKILL is reported down by `sealfs status` within
//! the heartbeat timeout, its keys give EIO (not a hang) while the rest of
//! the cluster keeps serving, and it serves its files again after a restart.

mod common;

use common::{ids, Cluster, Opts};
use sealfs_proto::{Errno, Ring, ServerId};
use std::time::Duration;

#[test]
fn killed_server_is_down_and_its_keys_give_eio() {
    let mut cl = Cluster::start(Opts {
        heartbeat_timeout: "2s",
        ..Opts::default()
    });
    let c = cl.client_with_timeout(Duration::from_secs(5));
    let (uid, gid) = ids();
    c.mkdir("/d", 0o755, uid, gid).unwrap();
    for i in 0..60 {
        c.write_file(&format!("/d/f{i}"), format!("{i}").as_bytes(), 0o644)
            .unwrap();
    }
    let map = c.map();
    let victim_addr = format!("127.0.0.1:{}", cl.port + 2);
    let victim: ServerId = map
        .servers
        .iter()
        .find(|s| s.addr == victim_addr)
        .unwrap()
        .id;
    let ring = Ring::of_map(&map);
    let (on_victim, elsewhere): (Vec<usize>, Vec<usize>) =
        (0..60).partition(|i| ring.owner_path(&format!("/d/f{i}")) == Some(victim));
    assert!(!on_victim.is_empty() && !elsewhere.is_empty());

    cl.kill_server(2);
    let took = cl.wait_down(2);
    assert!(
        took < Duration::from_secs(6),
        "reported down only after {took:?} (timeout 2s)"
    );
    let out = cl.cli(&["status"]);
    assert!(
        !out.status.success(),
        "status must fail while a server is down"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&victim_addr) && l.contains("down")),
        "status said:\n{text}"
    );

    for i in &on_victim {
        assert_eq!(
            c.lstat(&format!("/d/f{i}")).unwrap_err(),
            Errno::EIO,
            "/d/f{i}"
        );
    }
    for i in &elsewhere {
        // metadata elsewhere still answers; reading may need the dead server's chunk
        let p = format!("/d/f{i}");
        let a = c.lstat(&p).unwrap().attr;
        if ring.owner_chunk(a.ino, 0) != Some(victim) {
            assert_eq!(c.read_file(&p).unwrap(), format!("{i}").as_bytes());
        } else {
            assert_eq!(c.read_file(&p).unwrap_err(), Errno::EIO);
        }
    }

    cl.start_server(2);
    cl.wait_all_up();
    let out = cl.cli(&["status"]);
    assert!(
        out.status.success(),
        "status after restart: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for i in 0..60 {
        assert_eq!(
            c.read_file(&format!("/d/f{i}")).unwrap(),
            format!("{i}").as_bytes()
        );
    }
}

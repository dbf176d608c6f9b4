//! Hostile bytes on a server port (a 4 GiB length, a truncated frame, random
//! bytes, undecodable payloads, out-of-range requests) get an error reply or
//! a closed connection; the server keeps serving everyone else.

mod common;

use common::{Cluster, Opts};
use rand::{RngCore, SeedableRng};
use sealfs_proto::frame::{decode_payload, encode_frame};
use sealfs_proto::{
    Envelope, Errno, FrameHeader, FrameKind, Reply, Request, FRAME_HEADER_LEN, PROTO_VERSION,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn conn(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until EOF or reset; true if the server closed the connection.
fn closed(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn raw_call(s: &mut TcpStream, id: u64, payload_frame: &[u8]) -> (FrameHeader, Vec<u8>) {
    s.write_all(payload_frame).unwrap();
    let mut h = [0u8; FRAME_HEADER_LEN];
    s.read_exact(&mut h).unwrap();
    let h = FrameHeader::parse(&h).unwrap();
    assert_eq!(h.id, id);
    let mut p = vec![0u8; h.payload_len()];
    s.read_exact(&mut p).unwrap();
    (h, p)
}

fn request(s: &mut TcpStream, id: u64, epoch: u64, req: Request) -> Reply {
    let mut f = Vec::new();
    encode_frame(FrameKind::Request, id, &Envelope { epoch, req }, &mut f).unwrap();
    let (_, p) = raw_call(s, id, &f);
    decode_payload(&p).unwrap()
}

#[test]
fn hostile_frames_are_refused_and_the_server_keeps_serving() {
    let cl = Cluster::start(Opts::default());
    let c = cl.client();
    c.write_file("/ok", b"still here", 0o644).unwrap();
    let map = c.map();
    let addr = map.servers[0].addr.clone();

    // 1. a 4 GiB length: the connection is closed without allocating it
    let mut s = conn(&addr);
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    h[4] = PROTO_VERSION;
    s.write_all(&h).unwrap();
    assert!(closed(s), "a 4 GiB frame must close the connection");

    // 2. a truncated frame, then the client goes away
    let mut s = conn(&addr);
    let mut f = Vec::new();
    encode_frame(
        FrameKind::Request,
        1,
        &Envelope {
            epoch: 0,
            req: Request::StatFs,
        },
        &mut f,
    )
    .unwrap();
    s.write_all(&f[..f.len() - 1]).unwrap();
    drop(s);

    // 3. random bytes
    for seed in 0..20u64 {
        let mut junk = vec![0u8; 1 + (seed as usize * 997) % 70_000];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut junk);
        if let Ok(mut s) = TcpStream::connect(&addr) {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let _ = s.write_all(&junk);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }

    // 4. a well-framed payload that is not a request: EPROTO, connection stays
    let mut s = conn(&addr);
    let mut bad = vec![0u8; FRAME_HEADER_LEN];
    bad.extend_from_slice(&[0xff; 40]);
    let len = (bad.len() - 4) as u32;
    bad[0..4].copy_from_slice(&len.to_le_bytes());
    bad[4] = PROTO_VERSION;
    bad[5] = 0;
    bad[6..14].copy_from_slice(&9u64.to_le_bytes());
    let (_, p) = raw_call(&mut s, 9, &bad);
    assert_eq!(
        decode_payload::<Reply>(&p).unwrap(),
        Reply::Err(Errno::EPROTO)
    );

    // 5. well-formed but out-of-range requests on the same connection
    let e = map.epoch;
    let r = request(
        &mut s,
        10,
        e,
        Request::Read {
            ino: 5,
            chunk: 0,
            offset: 0,
            len: u32::MAX,
        },
    );
    assert!(
        matches!(r, Reply::Err(Errno::EINVAL) | Reply::StaleEpoch { .. }),
        "{r:?}"
    );
    let r = request(
        &mut s,
        11,
        e,
        Request::GetAttr {
            path: "/a/../../etc/passwd".into(),
        },
    );
    assert!(
        matches!(r, Reply::Err(Errno::EINVAL) | Reply::StaleEpoch { .. }),
        "{r:?}"
    );
    let r = request(
        &mut s,
        12,
        e,
        Request::GetAttr {
            path: format!("/{}", "x".repeat(300)),
        },
    );
    assert!(
        matches!(
            r,
            Reply::Err(Errno::ENAMETOOLONG) | Reply::StaleEpoch { .. }
        ),
        "{r:?}"
    );
    let r = request(
        &mut s,
        13,
        e,
        Request::GetAttr {
            path: "relative".into(),
        },
    );
    assert!(
        matches!(r, Reply::Err(Errno::EINVAL) | Reply::StaleEpoch { .. }),
        "{r:?}"
    );
    let r = request(
        &mut s,
        14,
        e,
        Request::Write {
            ino: 5,
            chunk: 0,
            offset: u32::MAX - 2,
            data: vec![1; 10].into(),
        },
    );
    assert!(
        matches!(r, Reply::Err(Errno::EINVAL) | Reply::StaleEpoch { .. }),
        "{r:?}"
    );
    let r = request(
        &mut s,
        15,
        0,
        Request::Register {
            uuid: "x".into(),
            addr: "y".into(),
        },
    );
    assert_eq!(
        r,
        Reply::Err(Errno::EINVAL),
        "cluster messages are the manager's"
    );
    assert!(matches!(
        request(&mut s, 16, e, Request::StatFs),
        Reply::StatFs(_)
    ));

    // the manager port refuses junk the same way
    let mut s = conn(&cl.manager_addr());
    s.write_all(&h).unwrap();
    assert!(closed(s));

    // everyone else was served all along
    assert_eq!(c.read_file("/ok").unwrap(), b"still here");
    assert_eq!(cl.client().read_file("/ok").unwrap(), b"still here");
    assert!(cl.cli(&["status"]).status.success());
}

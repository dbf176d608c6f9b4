//! An in-process fabric with reliable-connected semantics, for tests of
//! the RDMA protocol on machines without a device (this one).
//!
//! What it keeps of RC verbs: receives are consumed in the order they were
//! posted; a SEND with no posted receive, or larger than the receive, fails
//! (real hardware would retry and then fail: the protocol must never do
//! it); READ and WRITE check the remote key and bounds and fail with a
//! remote access error otherwise; every work request completes exactly
//! once; an endpoint whose peer is gone fails its posts and polls. Work
//! completes at once, in posting order.

use super::{Completion, Fabric, Qp, REGION_LEN};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;

/// Where endpoint `n`'s region appears to its peer.
const ADDR_STEP: u64 = 1 << 40;

struct Node {
    buf: Vec<u8>,
    recvs: VecDeque<(u64, usize, usize)>,
    cq: VecDeque<Completion>,
    peer: Option<u64>,
    rkey: u32,
}

#[derive(Default)]
struct World {
    nodes: HashMap<u64, Node>,
    next: u64,
}

/// The loopback fabric; endpoints of one instance can connect to each other.
#[derive(Clone, Default)]
pub struct Loopback {
    world: Arc<Mutex<World>>,
}

impl Loopback {
    /// A fabric with no endpoints.
    pub fn new() -> Loopback {
        Loopback::default()
    }

    /// Endpoints alive (not yet dropped).
    pub fn endpoints(&self) -> usize {
        self.world.lock().nodes.len()
    }
}

/// An endpoint of [`Loopback`].
pub struct LoopQp {
    world: Arc<Mutex<World>>,
    id: u64,
}

impl Drop for LoopQp {
    fn drop(&mut self) {
        self.world.lock().nodes.remove(&self.id);
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "the peer endpoint is gone")
}

impl Fabric for Loopback {
    type Qp = LoopQp;

    fn name(&self) -> String {
        "loopback".into()
    }

    fn endpoint(&self) -> io::Result<(LoopQp, Vec<u8>)> {
        let mut w = self.world.lock();
        w.next += 1;
        let id = w.next;
        w.nodes.insert(
            id,
            Node {
                buf: vec![0; REGION_LEN],
                recvs: VecDeque::new(),
                cq: VecDeque::new(),
                peer: None,
                rkey: (id as u32).wrapping_mul(0x9e37_79b9) | 1,
            },
        );
        Ok((
            LoopQp {
                world: self.world.clone(),
                id,
            },
            id.to_le_bytes().to_vec(),
        ))
    }

    fn connect(&self, qp: &mut LoopQp, peer: &[u8]) -> io::Result<()> {
        let peer: [u8; 8] = peer
            .try_into()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad loopback parameters"))?;
        let peer = u64::from_le_bytes(peer);
        let mut w = self.world.lock();
        if !w.nodes.contains_key(&peer) || peer == qp.id {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such loopback endpoint",
            ));
        }
        w.nodes.get_mut(&qp.id).ok_or_else(gone)?.peer = Some(peer);
        Ok(())
    }
}

impl LoopQp {
    /// Runs `f` on this node and its peer; posts a failed completion for
    /// `wr_id` when the peer is gone.
    fn with_pair(
        &mut self,
        wr_id: u64,
        f: impl FnOnce(&mut Node, &mut Node) -> Result<u32, String>,
    ) -> io::Result<()> {
        let mut w = self.world.lock();
        let peer = w.nodes.get(&self.id).ok_or_else(gone)?.peer;
        let res = match peer.and_then(|p| {
            let [a, b] = w.nodes.get_disjoint_mut([&self.id, &p]);
            Some((a?, b?))
        }) {
            Some((me, them)) => f(me, them),
            None => Err("the peer endpoint is gone (flushed)".into()),
        };
        let me = w.nodes.get_mut(&self.id).ok_or_else(gone)?;
        me.cq.push_back(Completion { wr_id, result: res });
        Ok(())
    }

    /// An RDMA READ (`write == false`: peer → us) or WRITE (us → peer) of
    /// `len` bytes between our `off` and the peer's `remote`.
    fn one_sided(
        &mut self,
        wr_id: u64,
        off: usize,
        len: usize,
        remote: u64,
        rkey: u32,
        write: bool,
    ) -> io::Result<()> {
        let peer_id = self
            .world
            .lock()
            .nodes
            .get(&self.id)
            .and_then(|n| n.peer)
            .unwrap_or(0);
        self.with_pair(wr_id, |me, them| {
            let roff = Self::remote_range(them, remote, rkey, len, peer_id)?;
            if write {
                them.buf[roff..roff + len].copy_from_slice(&me.buf[off..off + len]);
            } else {
                me.buf[off..off + len].copy_from_slice(&them.buf[roff..roff + len]);
            }
            Ok(len as u32)
        })
    }

    fn remote_range(
        node: &Node,
        remote: u64,
        rkey: u32,
        len: usize,
        who: u64,
    ) -> Result<usize, String> {
        let base = who * ADDR_STEP;
        if rkey != node.rkey {
            return Err("remote access error: wrong rkey".into());
        }
        let off = remote
            .checked_sub(base)
            .ok_or("remote access error: below the region")? as usize;
        if off.checked_add(len).is_none_or(|e| e > node.buf.len()) {
            return Err("remote access error: past the region".into());
        }
        Ok(off)
    }
}

impl Qp for LoopQp {
    fn with_local<R>(&mut self, off: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut w = self.world.lock();
        let me = w
            .nodes
            .get_mut(&self.id)
            .expect("a live endpoint has its node");
        f(&mut me.buf[off..off + len])
    }

    fn region(&self) -> (u64, u32) {
        let w = self.world.lock();
        let rkey = w.nodes.get(&self.id).map_or(0, |n| n.rkey);
        (self.id * ADDR_STEP, rkey)
    }

    fn post_recv(&mut self, wr_id: u64, off: usize, len: usize) -> io::Result<()> {
        if off + len > REGION_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive past the region",
            ));
        }
        let mut w = self.world.lock();
        w.nodes
            .get_mut(&self.id)
            .ok_or_else(gone)?
            .recvs
            .push_back((wr_id, off, len));
        Ok(())
    }

    fn post_send(&mut self, wr_id: u64, off: usize, len: usize) -> io::Result<()> {
        self.with_pair(wr_id, |me, them| {
            let (rwr, roff, rlen) = them
                .recvs
                .pop_front()
                .ok_or("receiver not ready: no posted receive (RNR)")?;
            if len > rlen {
                them.cq.push_back(Completion {
                    wr_id: rwr,
                    result: Err("local length error".into()),
                });
                return Err("remote operation error: message longer than the receive".into());
            }
            them.buf[roff..roff + len].copy_from_slice(&me.buf[off..off + len]);
            them.cq.push_back(Completion {
                wr_id: rwr,
                result: Ok(len as u32),
            });
            Ok(len as u32)
        })
    }

    fn post_read(
        &mut self,
        wr_id: u64,
        off: usize,
        len: usize,
        remote: u64,
        rkey: u32,
    ) -> io::Result<()> {
        self.one_sided(wr_id, off, len, remote, rkey, false)
    }

    fn post_write(
        &mut self,
        wr_id: u64,
        off: usize,
        len: usize,
        remote: u64,
        rkey: u32,
    ) -> io::Result<()> {
        self.one_sided(wr_id, off, len, remote, rkey, true)
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let mut w = self.world.lock();
        let peer = {
            let me = w.nodes.get_mut(&self.id).ok_or_else(gone)?;
            out.extend(me.cq.drain(..));
            me.peer
        };
        if out.is_empty() && peer.is_some_and(|p| !w.nodes.contains_key(&p)) {
            return Err(gone());
        }
        Ok(())
    }
}

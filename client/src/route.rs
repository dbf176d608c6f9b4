//! Request routing: which server a request goes to, the retry rules, and the
//! scatter helper every multi-server operation uses.
//!
//! Rules (the contract with the servers and the manager):
//! * a path message goes to `ring.owner_path(path)`, a chunk message to
//!   `ring.owner_chunk(ino, chunk)`, a per-server message to the server named
//!   by the caller; the envelope carries the epoch of the map routed by;
//! * `StaleEpoch` → refresh the map and retry, at most [`MAX_STALE_RETRIES`]
//!   times, then `EIO`;
//! * a transport error → refresh the map once; retry once if the request now
//!   routes to another address (a restarted server), otherwise `EIO`;
//! * a server marked down → refresh (rate-limited), and if it is still down,
//!   `EIO` without trying to connect.
//!
//! Replies always come back in request order, one per request.

use crate::state::{Shared, State};
use sealfs_proto::{Errno, Reply, Request, ServerId};
use sealfs_transport::TransportError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How often a request is retried after `StaleEpoch`.
pub(crate) const MAX_STALE_RETRIES: u32 = 3;
/// First wait before retrying at a server whose map is older than ours
/// (then ×4 per round: 20, 80, 320 ms).
const STALE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum To {
    /// The owner of the request's key (its path, or its chunk).
    Owner,
    /// This server.
    Server(ServerId),
}

/// The server a request goes to under `st`; `None` when the ring is empty or
/// the request has no key of its own.
pub(crate) fn resolve(st: &State, to: To, req: &Request) -> Option<ServerId> {
    match to {
        To::Server(id) => Some(id),
        To::Owner => match req {
            Request::GetAttr { path }
            | Request::Create { path, .. }
            | Request::SetAttr { path, .. }
            | Request::Extend { path, .. }
            | Request::Remove { path, .. }
            | Request::Adopt { path, .. }
            | Request::ReadDir { path, .. } => st.ring.owner_path(path),
            Request::AddEntry { dir, .. }
            | Request::RemoveEntry { dir, .. }
            | Request::GetEntry { dir, .. } => st.ring.owner_path(dir),
            Request::Read { ino, chunk, .. } | Request::Write { ino, chunk, .. } => {
                st.ring.owner_chunk(*ino, *chunk)
            }
            _ => None,
        },
    }
}

/// Bytes a request moves (for the sequential/concurrent choice).
fn payload(req: &Request) -> u64 {
    match req {
        Request::Write { data, .. } => data.len() as u64,
        Request::Read { len, .. } => u64::from(*len),
        _ => 0,
    }
}

/// Threads one scatter runs its server groups on at most.
const MAX_SCATTER_THREADS: usize = 16;

enum Outcome {
    Done(Result<Reply, Errno>),
    /// `StaleEpoch` with the server's epoch.
    Stale(u64),
    Broken,
}

impl Shared {
    /// Sends one request and returns its reply (`Reply::Err` and
    /// `StaleEpoch` already handled: `Reply::Err(e)` becomes `Err(e)`).
    pub(crate) fn call(&self, to: To, req: Request) -> Result<Reply, Errno> {
        self.scatter(vec![(to, req)])
            .pop()
            .unwrap_or(Err(Errno::EIO))
    }

    /// Sends a request to the owner of its key.
    pub(crate) fn call_owner(&self, req: Request) -> Result<Reply, Errno> {
        self.call(To::Owner, req)
    }

    /// Sends many requests, grouped by server and pipelined per server;
    /// the groups run concurrently when more than one server is involved and
    /// the payload is at least two chunks. Replies in request order;
    /// `Reply::Err(e)` becomes `Err(e)`.
    pub(crate) fn scatter(&self, reqs: Vec<(To, Request)>) -> Vec<Result<Reply, Errno>> {
        let n = reqs.len();
        let mut out: Vec<Option<Result<Reply, Errno>>> = vec![None; n];
        let mut pending: Vec<usize> = (0..n).collect();
        let mut stale_rounds = 0u32;
        let mut transport_retried = false;
        let mut st = self.state();
        while !pending.is_empty() {
            // Route, giving servers marked down one (rate-limited) chance to
            // come back in a fresher map.
            let mut groups = self.group(&st, &reqs, &pending, &mut out);
            if groups.keys().any(|id| st.is_down(*id)) {
                st = self.refresh_if_due();
                groups = self.group(&st, &reqs, &pending, &mut out);
                groups.retain(|id, idxs| {
                    if st.is_down(*id) {
                        tracing::debug!(server = %id, "server marked down: failing {} request(s) with EIO", idxs.len());
                        for &i in idxs.iter() {
                            out[i] = Some(Err(Errno::EIO));
                        }
                        false
                    } else {
                        true
                    }
                });
            }

            let results = self.run_groups(&st, &reqs, groups);

            let mut stale = Vec::new();
            let mut server_epoch = u64::MAX;
            let mut broken: Vec<(usize, ServerId, String)> = Vec::new();
            for (i, id, outcome) in results {
                match outcome {
                    Outcome::Done(r) => out[i] = Some(r),
                    Outcome::Stale(e) => {
                        server_epoch = server_epoch.min(e);
                        stale.push(i);
                    }
                    Outcome::Broken => broken.push((i, id, st.addr(id).unwrap_or("").to_string())),
                }
            }
            if stale.is_empty() && broken.is_empty() {
                break;
            }

            let stale_ok = !stale.is_empty() && stale_rounds < MAX_STALE_RETRIES;
            let broken_ok = !broken.is_empty() && !transport_retried;
            let fresh = if stale_ok || broken_ok {
                let seen = st.map.epoch;
                let r = if broken_ok {
                    self.refresh()
                } else {
                    self.refresh_after(seen)
                };
                r.ok()
            } else {
                None
            };
            if let Some(f) = &fresh {
                if stale_ok && server_epoch < f.map.epoch {
                    // The server is behind the manager (it refuses keys it no
                    // longer or not yet owns by its older map): give its
                    // heartbeat time to bring the new map.
                    std::thread::sleep(STALE_BACKOFF * 4u32.pow(stale_rounds));
                }
            }
            if !stale.is_empty() {
                stale_rounds += 1;
            }
            if !broken.is_empty() {
                transport_retried = true;
            }

            pending.clear();
            match fresh {
                Some(f) => {
                    for i in stale {
                        if stale_ok {
                            pending.push(i);
                        } else {
                            out[i] = Some(Err(Errno::EIO));
                        }
                    }
                    for (i, old_id, old_addr) in broken {
                        let (to, req) = &reqs[i];
                        let now = resolve(&f, *to, req);
                        let moved = match now {
                            Some(id) => id != old_id || f.addr(id).unwrap_or("") != old_addr,
                            None => false,
                        };
                        if broken_ok && moved {
                            pending.push(i);
                        } else {
                            out[i] = Some(Err(Errno::EIO));
                        }
                    }
                    pending.sort_unstable();
                    st = f;
                }
                None => {
                    for i in stale {
                        out[i] = Some(Err(Errno::EIO));
                    }
                    for (i, _, _) in broken {
                        out[i] = Some(Err(Errno::EIO));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(Errno::EIO)))
            .collect()
    }

    /// Groups pending requests by server; unroutable ones fail with `EIO`.
    fn group(
        &self,
        st: &State,
        reqs: &[(To, Request)],
        pending: &[usize],
        out: &mut [Option<Result<Reply, Errno>>],
    ) -> BTreeMap<ServerId, Vec<usize>> {
        let mut groups: BTreeMap<ServerId, Vec<usize>> = BTreeMap::new();
        for &i in pending {
            let (to, req) = &reqs[i];
            match resolve(st, *to, req) {
                Some(id) if st.conns.contains_key(&id) => groups.entry(id).or_default().push(i),
                _ => {
                    tracing::debug!(req = req.name(), "no server to route to");
                    out[i] = Some(Err(Errno::EIO));
                }
            }
        }
        groups
    }

    /// Runs each group as one pipelined `call_many`.
    fn run_groups(
        &self,
        st: &Arc<State>,
        reqs: &[(To, Request)],
        groups: BTreeMap<ServerId, Vec<usize>>,
    ) -> Vec<(usize, ServerId, Outcome)> {
        let total: u64 = groups
            .values()
            .flatten()
            .map(|&i| payload(&reqs[i].1))
            .sum();
        let big = total >= 2 * u64::from(st.map.chunk_size);
        let groups: Vec<(ServerId, Vec<usize>)> = groups.into_iter().collect();
        if groups.len() > 1 && big {
            // Groups dealt round-robin to at most MAX_SCATTER_THREADS lanes;
            // lane 0 runs on the calling thread.
            let lanes = groups.len().min(MAX_SCATTER_THREADS);
            let lane = |k: usize| groups.iter().skip(k).step_by(lanes);
            std::thread::scope(|s| {
                let handles: Vec<_> = (1..lanes)
                    .map(|k| {
                        let mine: Vec<&(ServerId, Vec<usize>)> = lane(k).collect();
                        (
                            s.spawn(move || {
                                mine.iter()
                                    .flat_map(|(id, idxs)| self.run_group(st, reqs, *id, idxs))
                                    .collect::<Vec<_>>()
                            }),
                            k,
                        )
                    })
                    .collect();
                let mut all: Vec<_> = lane(0)
                    .flat_map(|(id, idxs)| self.run_group(st, reqs, *id, idxs))
                    .collect();
                for (h, k) in handles {
                    match h.join() {
                        Ok(v) => all.extend(v),
                        Err(_) => {
                            tracing::warn!("request thread panicked");
                            for (id, idxs) in lane(k) {
                                all.extend(
                                    idxs.iter()
                                        .map(|&i| (i, *id, Outcome::Done(Err(Errno::EIO)))),
                                );
                            }
                        }
                    }
                }
                all
            })
        } else {
            groups
                .iter()
                .flat_map(|(id, idxs)| self.run_group(st, reqs, *id, idxs))
                .collect()
        }
    }

    fn run_group(
        &self,
        st: &State,
        reqs: &[(To, Request)],
        id: ServerId,
        idxs: &[usize],
    ) -> Vec<(usize, ServerId, Outcome)> {
        let Some(conn) = st.conns.get(&id) else {
            return idxs
                .iter()
                .map(|&i| (i, id, Outcome::Done(Err(Errno::EIO))))
                .collect();
        };
        let batch: Vec<Request> = idxs.iter().map(|&i| reqs[i].1.clone()).collect();
        let mut replies = conn.call_many(st.map.epoch, batch).into_iter();
        let mut logged = false;
        idxs.iter()
            .map(|&i| {
                let r: Option<Result<Reply, TransportError>> = replies.next();
                let outcome = match r {
                    Some(Ok(Reply::StaleEpoch { epoch })) => {
                        tracing::debug!(server = %id, ours = st.map.epoch, theirs = epoch, "stale epoch");
                        Outcome::Stale(epoch)
                    }
                    Some(Ok(Reply::Err(e))) => Outcome::Done(Err(e)),
                    Some(Ok(reply)) => Outcome::Done(Ok(reply)),
                    Some(Err(e)) => {
                        if !logged {
                            tracing::warn!(server = %id, addr = conn.addr(), "cannot reach SealFS server: {e}");
                            logged = true;
                        }
                        Outcome::Broken
                    }
                    None => Outcome::Done(Err(Errno::EPROTO)),
                };
                (i, id, outcome)
            })
            .collect()
    }
}

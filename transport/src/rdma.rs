//! RDMA transport (cargo feature `rdma`, on `rdma-sys` / ibverbs).
//!
//! **Status: compiled, not run, and not able to carry requests yet.** This
//! machine has no RDMA device and its kernel has no soft-RoCE (`rdma_rxe`)
//! or `siw`, so none of this can be exercised here. What exists:
//!
//! * device discovery and the verbs resources a connection needs, owned by
//!   RAII wrappers: device context, protection domain, completion queue, a
//!   registered buffer pool (the memory RDMA WRITE/READ would target), and
//!   a reliable-connected queue pair;
//! * [`RdmaPool`], a [`Transport`] that is chosen by `SEALFS_TRANSPORT=rdma`
//!   only when a device exists, and that answers every call with a clear
//!   error, because the connection exchange (QP number, LID/GID, buffer
//!   keys, e.g. over `rdma_cm` or a TCP side channel) and the SEND/RECV +
//!   WRITE/READ data path are not written.
//!
//! Without a device, [`RdmaPool::connect`] fails with "no RDMA device" and the
//! selector falls back to TCP with a warning.

use crate::{ClientConfig, Reply, Request, Transport, TransportError};
use rdma_sys::*;
use std::io;
use std::ptr::NonNull;

/// Bytes of the registered buffer pool per connection.
pub const POOL_BYTES: usize = 8 << 20;
/// Completion queue depth.
pub const CQ_DEPTH: i32 = 256;

/// An open device with its protection domain and completion queue.
struct Verbs {
    ctx: NonNull<ibv_context>,
    pd: NonNull<ibv_pd>,
    cq: NonNull<ibv_cq>,
    name: String,
}

// SAFETY: ibverbs objects may be used from any thread (libibverbs is
// thread-safe); the pointers are owned by this struct alone.
unsafe impl Send for Verbs {}
// SAFETY: as above; no method mutates through a shared reference.
unsafe impl Sync for Verbs {}

impl Verbs {
    /// Opens the first RDMA device.
    fn open_first() -> io::Result<Verbs> {
        let mut n: i32 = 0;
        // SAFETY: `n` is a valid out-pointer; the list is freed below.
        let list = unsafe { ibv_get_device_list(&mut n) };
        if list.is_null() {
            return Err(io::Error::last_os_error());
        }
        if n <= 0 {
            // SAFETY: `list` came from ibv_get_device_list.
            unsafe { ibv_free_device_list(list) };
            return Err(io::Error::new(io::ErrorKind::NotFound, "no RDMA device"));
        }
        // SAFETY: `list` holds `n` ≥ 1 valid device pointers.
        let dev = unsafe { *list };
        // SAFETY: `dev` is valid while the list lives; the name is a C string.
        let name = unsafe { std::ffi::CStr::from_ptr(ibv_get_device_name(dev)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `dev` is valid; the list may be freed once the device is open.
        let ctx = unsafe { ibv_open_device(dev) };
        // SAFETY: `list` came from ibv_get_device_list and is freed once.
        unsafe { ibv_free_device_list(list) };
        let ctx = NonNull::new(ctx).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: `ctx` is an open device context.
        let pd = match NonNull::new(unsafe { ibv_alloc_pd(ctx.as_ptr()) }) {
            Some(p) => p,
            None => {
                let e = io::Error::last_os_error();
                // SAFETY: closing the context we opened.
                unsafe { ibv_close_device(ctx.as_ptr()) };
                return Err(e);
            }
        };
        // SAFETY: `ctx` is open; no completion channel, vector 0.
        let cq = match NonNull::new(unsafe {
            ibv_create_cq(
                ctx.as_ptr(),
                CQ_DEPTH,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        }) {
            Some(c) => c,
            None => {
                let e = io::Error::last_os_error();
                // SAFETY: releasing what we allocated, in reverse order.
                unsafe {
                    ibv_dealloc_pd(pd.as_ptr());
                    ibv_close_device(ctx.as_ptr());
                }
                return Err(e);
            }
        };
        Ok(Verbs { ctx, pd, cq, name })
    }
}

impl Drop for Verbs {
    fn drop(&mut self) {
        // SAFETY: each object was created by `open_first` and is destroyed
        // once, children before parents.
        unsafe {
            ibv_destroy_cq(self.cq.as_ptr());
            ibv_dealloc_pd(self.pd.as_ptr());
            ibv_close_device(self.ctx.as_ptr());
        }
    }
}

/// A registered buffer pool and a reliable-connected queue pair on it.
struct Endpoint {
    qp: NonNull<ibv_qp>,
    mr: NonNull<ibv_mr>,
    _buf: Box<[u8]>,
    verbs: Verbs,
}

// SAFETY: see `Verbs`; the buffer is owned and only reached through the MR.
unsafe impl Send for Endpoint {}
// SAFETY: as above.
unsafe impl Sync for Endpoint {}

impl Endpoint {
    fn new(verbs: Verbs) -> io::Result<Endpoint> {
        let mut buf = vec![0u8; POOL_BYTES].into_boxed_slice();
        let access = (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ)
            .0 as i32;
        // SAFETY: `buf` outlives the MR (dropped after it in `Drop`).
        let mr = NonNull::new(unsafe {
            ibv_reg_mr(
                verbs.pd.as_ptr(),
                buf.as_mut_ptr() as *mut _,
                buf.len(),
                access,
            )
        })
        .ok_or_else(io::Error::last_os_error)?;
        // SAFETY: an all-zero init attr is valid; the fields we need are set below.
        let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = verbs.cq.as_ptr();
        attr.recv_cq = verbs.cq.as_ptr();
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        attr.cap.max_send_wr = 64;
        attr.cap.max_recv_wr = 64;
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        // SAFETY: `pd` is live and `attr` is a valid init attr.
        let qp = match NonNull::new(unsafe { ibv_create_qp(verbs.pd.as_ptr(), &mut attr) }) {
            Some(q) => q,
            None => {
                let e = io::Error::last_os_error();
                // SAFETY: deregistering the MR we registered.
                unsafe { ibv_dereg_mr(mr.as_ptr()) };
                return Err(e);
            }
        };
        Ok(Endpoint {
            qp,
            mr,
            _buf: buf,
            verbs,
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // SAFETY: QP and MR were created in `new` and are destroyed once,
        // before the PD/CQ/context (dropped with `verbs` afterwards).
        unsafe {
            ibv_destroy_qp(self.qp.as_ptr());
            ibv_dereg_mr(self.mr.as_ptr());
        }
    }
}

/// The RDMA transport to one server (see the module docs: not functional).
pub struct RdmaPool {
    addr: String,
    ep: Endpoint,
}

impl RdmaPool {
    /// Opens a device and prepares a queue pair for `addr`. Fails with
    /// "no RDMA device" on machines without one (this one).
    pub fn connect(addr: &str, _cfg: &ClientConfig) -> io::Result<RdmaPool> {
        let verbs = Verbs::open_first()?;
        let ep = Endpoint::new(verbs)?;
        Ok(RdmaPool {
            addr: addr.to_string(),
            ep,
        })
    }
}

impl Transport for RdmaPool {
    fn call_many(&self, _epoch: u64, reqs: Vec<Request>) -> Vec<Result<Reply, TransportError>> {
        reqs.iter()
            .map(|_| {
                Err(TransportError::Io {
                    addr: self.addr.clone(),
                    source: io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "RDMA on {}: queue pair ready, but connection exchange and the data path are not implemented",
                            self.ep.verbs.name
                        ),
                    ),
                })
            })
            .collect()
    }

    fn addr(&self) -> &str {
        &self.addr
    }
}

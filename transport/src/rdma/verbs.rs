//! The ibverbs fabric (cargo feature `rdma`, on `rdma-sys`).
//!
//! **Compiled, never run**: this machine has no RDMA device and its kernel
//! has no soft-RoCE (`rdma_rxe`) or `siw`. The protocol above it is tested
//! on the loopback fabric; this file is the thin layer that maps the
//! [`Qp`] trait onto verbs: one device context and protection domain per
//! process ([`VerbsFabric`]), and per endpoint a completion queue, an
//! anonymous mapping of [`REGION_LEN`] bytes registered as one memory
//! region, and an RC queue pair moved RESET → INIT at creation and
//! INIT → RTR → RTS by [`Fabric::connect`] with the peer's parameters
//! (queue pair number, packet sequence number, LID and GID; the GID makes
//! it work on RoCE, where there are no LIDs).

use super::{Completion, Fabric, Qp, REGION_LEN, SLOTS};
use rdma_sys::*;
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

/// The port used on the device.
const PORT: u8 = 1;
/// The GID table index used for RoCE.
const GID_INDEX: u8 = 0;
/// Bytes of the connection parameters.
const PARAMS_LEN: usize = 32;

/// An open device and its protection domain.
struct Device {
    ctx: NonNull<ibv_context>,
    pd: NonNull<ibv_pd>,
    name: String,
    lid: u16,
    mtu: u32,
    gid: [u8; 16],
}

// SAFETY: libibverbs objects may be used from any thread; these pointers
// are owned by this struct alone and freed once in `Drop`.
unsafe impl Send for Device {}
// SAFETY: as above; nothing is mutated through a shared reference.
unsafe impl Sync for Device {}

impl Device {
    /// Opens the first device.
    fn open_first() -> io::Result<Device> {
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
        let mut dev = Device {
            ctx,
            pd,
            name,
            lid: 0,
            mtu: ibv_mtu::IBV_MTU_1024,
            gid: [0; 16],
        };
        // SAFETY: an all-zero port attribute is a valid out-parameter.
        let mut port: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `ctx` is open and `port` is a valid out-pointer.
        if unsafe { ___ibv_query_port(ctx.as_ptr(), PORT, &mut port) } != 0 {
            return Err(io::Error::last_os_error());
        }
        dev.lid = port.lid;
        dev.mtu = port.active_mtu;
        // SAFETY: an all-zero GID is valid; ibv_query_gid fills it.
        let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
        // SAFETY: `ctx` is open and `gid` is a valid out-pointer.
        if unsafe { ibv_query_gid(ctx.as_ptr(), PORT, GID_INDEX as i32, &mut gid) } == 0 {
            // SAFETY: every bit pattern of the union is a valid byte array.
            dev.gid = unsafe { gid.raw };
        }
        Ok(dev)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: created by `open_first`, destroyed once, child first.
        unsafe {
            ibv_dealloc_pd(self.pd.as_ptr());
            ibv_close_device(self.ctx.as_ptr());
        }
    }
}

/// The verbs fabric on the first RDMA device.
pub struct VerbsFabric {
    dev: Arc<Device>,
}

impl VerbsFabric {
    /// Opens the first device; fails with "no RDMA device" without one.
    pub fn open() -> io::Result<VerbsFabric> {
        Ok(VerbsFabric {
            dev: Arc::new(Device::open_first()?),
        })
    }
}

/// One endpoint: completion queue, registered region and RC queue pair.
pub struct VerbsQp {
    qp: NonNull<ibv_qp>,
    cq: NonNull<ibv_cq>,
    mr: NonNull<ibv_mr>,
    buf: memmap2::MmapMut,
    psn: u32,
    dev: Arc<Device>,
}

// SAFETY: see `Device`; the region is owned and reached through `&mut self`.
unsafe impl Send for VerbsQp {}

impl Drop for VerbsQp {
    fn drop(&mut self) {
        // SAFETY: created in `endpoint`, destroyed once, QP before the MR
        // and CQ it uses; the mapping is unmapped after (field drop).
        unsafe {
            ibv_destroy_qp(self.qp.as_ptr());
            ibv_dereg_mr(self.mr.as_ptr());
            ibv_destroy_cq(self.cq.as_ptr());
        }
    }
}

fn check(rc: i32, what: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: {}",
            io::Error::from_raw_os_error(rc)
        )))
    }
}

impl Fabric for VerbsFabric {
    type Qp = VerbsQp;

    fn name(&self) -> String {
        self.dev.name.clone()
    }

    fn endpoint(&self) -> io::Result<(VerbsQp, Vec<u8>)> {
        let dev = &self.dev;
        let depth = (4 * (SLOTS + 1)) as i32;
        // SAFETY: `ctx` is open; no completion channel, vector 0.
        let cq = unsafe {
            ibv_create_cq(
                dev.ctx.as_ptr(),
                depth,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        let cq = NonNull::new(cq).ok_or_else(io::Error::last_os_error)?;
        let mut buf = match memmap2::MmapMut::map_anon(REGION_LEN) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: destroying the CQ created above.
                unsafe { ibv_destroy_cq(cq.as_ptr()) };
                return Err(e);
            }
        };
        let access = (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ)
            .0 as i32;
        // SAFETY: the mapping outlives the MR (`VerbsQp` drops the MR first).
        let mr =
            unsafe { ibv_reg_mr(dev.pd.as_ptr(), buf.as_mut_ptr().cast(), REGION_LEN, access) };
        let Some(mr) = NonNull::new(mr) else {
            let e = io::Error::last_os_error();
            // SAFETY: destroying the CQ created above.
            unsafe { ibv_destroy_cq(cq.as_ptr()) };
            return Err(e);
        };
        // SAFETY: an all-zero init attr is valid; the fields we need are set below.
        let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = cq.as_ptr();
        attr.recv_cq = cq.as_ptr();
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        attr.cap.max_send_wr = (2 * (SLOTS + 1)) as u32;
        attr.cap.max_recv_wr = (SLOTS + 1) as u32;
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        // SAFETY: `pd` is live and `attr` is a valid init attr.
        let Some(qp) = NonNull::new(unsafe { ibv_create_qp(dev.pd.as_ptr(), &mut attr) }) else {
            let e = io::Error::last_os_error();
            // SAFETY: releasing what we made, in reverse order.
            unsafe {
                ibv_dereg_mr(mr.as_ptr());
                ibv_destroy_cq(cq.as_ptr());
            }
            return Err(e);
        };
        let psn = rand_psn();
        let ep = VerbsQp {
            qp,
            cq,
            mr,
            buf,
            psn,
            dev: dev.clone(),
        };
        // RESET → INIT.
        // SAFETY: an all-zero attr is valid; the masked fields are set.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = PORT;
        a.qp_access_flags = access as u32;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask::IBV_QP_PORT
            | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        // SAFETY: `qp` is live; `a` is valid for the mask.
        check(
            unsafe { ibv_modify_qp(qp.as_ptr(), &mut a, mask.0 as i32) },
            "queue pair to INIT",
        )?;

        let mut p = vec![0u8; PARAMS_LEN];
        // SAFETY: `qp` is live.
        let qpn = unsafe { (*qp.as_ptr()).qp_num };
        p[0..4].copy_from_slice(&qpn.to_le_bytes());
        p[4..8].copy_from_slice(&psn.to_le_bytes());
        p[8..10].copy_from_slice(&dev.lid.to_le_bytes());
        p[10..12].copy_from_slice(&(dev.mtu as u16).to_le_bytes());
        p[16..32].copy_from_slice(&dev.gid);
        Ok((ep, p))
    }

    fn connect(&self, ep: &mut VerbsQp, peer: &[u8]) -> io::Result<()> {
        if peer.len() != PARAMS_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad RDMA connection parameters",
            ));
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([peer[o], peer[o + 1], peer[o + 2], peer[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([peer[o], peer[o + 1]]);
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&peer[16..32]);
        let mtu = u32::from(u16_at(10)).clamp(ibv_mtu::IBV_MTU_256, ibv_mtu::IBV_MTU_4096);

        // INIT → RTR.
        // SAFETY: an all-zero attr is valid; the masked fields are set.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = mtu.min(ep.dev.mtu);
        a.dest_qp_num = u32_at(0);
        a.rq_psn = u32_at(4);
        a.max_dest_rd_atomic = 1;
        a.min_rnr_timer = 12;
        a.ah_attr.dlid = u16_at(8);
        a.ah_attr.sl = 0;
        a.ah_attr.src_path_bits = 0;
        a.ah_attr.port_num = PORT;
        if gid != [0u8; 16] {
            a.ah_attr.is_global = 1;
            a.ah_attr.grh.dgid = ibv_gid { raw: gid };
            a.ah_attr.grh.sgid_index = GID_INDEX;
            a.ah_attr.grh.hop_limit = 64;
        }
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_AV
            | ibv_qp_attr_mask::IBV_QP_PATH_MTU
            | ibv_qp_attr_mask::IBV_QP_DEST_QPN
            | ibv_qp_attr_mask::IBV_QP_RQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
            | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
        // SAFETY: `qp` is live; `a` is valid for the mask.
        check(
            unsafe { ibv_modify_qp(ep.qp.as_ptr(), &mut a, mask.0 as i32) },
            "queue pair to RTR",
        )?;

        // RTR → RTS.
        // SAFETY: as above.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        a.timeout = 14;
        a.retry_cnt = 7;
        a.rnr_retry = 7;
        a.sq_psn = ep.psn;
        a.max_rd_atomic = 1;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_TIMEOUT
            | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
            | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
            | ibv_qp_attr_mask::IBV_QP_SQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
        // SAFETY: as above.
        check(
            unsafe { ibv_modify_qp(ep.qp.as_ptr(), &mut a, mask.0 as i32) },
            "queue pair to RTS",
        )
    }
}

/// A 24-bit starting packet sequence number.
fn rand_psn() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ std::process::id().rotate_left(12)) & 0x00ff_ffff
}

impl VerbsQp {
    fn sge(&mut self, off: usize, len: usize) -> io::Result<ibv_sge> {
        if off.checked_add(len).is_none_or(|e| e > REGION_LEN) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "work request past the region",
            ));
        }
        Ok(ibv_sge {
            addr: self.buf.as_ptr() as u64 + off as u64,
            length: len as u32,
            // SAFETY: the MR is live while `self` is.
            lkey: unsafe { (*self.mr.as_ptr()).lkey },
        })
    }

    fn post(
        &mut self,
        wr_id: u64,
        opcode: u32,
        off: usize,
        len: usize,
        remote: Option<(u64, u32)>,
    ) -> io::Result<()> {
        let mut sge = self.sge(off, len)?;
        // SAFETY: an all-zero work request is valid; the used fields are set.
        let mut w: ibv_send_wr = unsafe { std::mem::zeroed() };
        w.wr_id = wr_id;
        w.sg_list = &mut sge;
        w.num_sge = 1;
        w.opcode = opcode;
        w.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        if let Some((addr, rkey)) = remote {
            w.wr.rdma = rdma_t {
                remote_addr: addr,
                rkey,
            };
        }
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: `qp` is live; `w` and `sge` outlive the call (the
        // provider copies the request); the range is inside the MR.
        check(
            unsafe { ibv_post_send(self.qp.as_ptr(), &mut w, &mut bad) },
            "post send",
        )
    }
}

impl Qp for VerbsQp {
    fn with_local<R>(&mut self, off: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        f(&mut self.buf[off..off + len])
    }

    fn region(&self) -> (u64, u32) {
        // SAFETY: the MR is live while `self` is.
        (self.buf.as_ptr() as u64, unsafe {
            (*self.mr.as_ptr()).rkey
        })
    }

    fn post_recv(&mut self, wr_id: u64, off: usize, len: usize) -> io::Result<()> {
        let mut sge = self.sge(off, len)?;
        // SAFETY: an all-zero receive request is valid; fields set below.
        let mut w: ibv_recv_wr = unsafe { std::mem::zeroed() };
        w.wr_id = wr_id;
        w.sg_list = &mut sge;
        w.num_sge = 1;
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: as in `post`.
        check(
            unsafe { ibv_post_recv(self.qp.as_ptr(), &mut w, &mut bad) },
            "post receive",
        )
    }

    fn post_send(&mut self, wr_id: u64, off: usize, len: usize) -> io::Result<()> {
        self.post(wr_id, ibv_wr_opcode::IBV_WR_SEND, off, len, None)
    }

    fn post_read(
        &mut self,
        wr_id: u64,
        off: usize,
        len: usize,
        remote: u64,
        rkey: u32,
    ) -> io::Result<()> {
        self.post(
            wr_id,
            ibv_wr_opcode::IBV_WR_RDMA_READ,
            off,
            len,
            Some((remote, rkey)),
        )
    }

    fn post_write(
        &mut self,
        wr_id: u64,
        off: usize,
        len: usize,
        remote: u64,
        rkey: u32,
    ) -> io::Result<()> {
        self.post(
            wr_id,
            ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            off,
            len,
            Some((remote, rkey)),
        )
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        // SAFETY: an all-zero work completion is a valid out-parameter.
        let mut wc: [ibv_wc; 16] = unsafe { std::mem::zeroed() };
        // SAFETY: `cq` is live; `wc` holds 16 entries.
        let n = unsafe { ibv_poll_cq(self.cq.as_ptr(), wc.len() as i32, wc.as_mut_ptr()) };
        if n < 0 {
            return Err(io::Error::other("ibv_poll_cq failed"));
        }
        for c in &wc[..n as usize] {
            let result = if c.status == ibv_wc_status::IBV_WC_SUCCESS {
                Ok(c.byte_len)
            } else {
                // SAFETY: ibv_wc_status_str returns a static C string.
                let s = unsafe { std::ffi::CStr::from_ptr(ibv_wc_status_str(c.status)) };
                Err(s.to_string_lossy().into_owned())
            };
            out.push(Completion {
                wr_id: c.wr_id,
                result,
            });
        }
        Ok(())
    }
}

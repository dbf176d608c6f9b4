//! The few system calls the rings need, each behind a small safe wrapper:
//! a memfd-backed shared mapping, futex wait/wake on a word of it, passing a
//! descriptor over a Unix socket (`SCM_RIGHTS`) and a readiness poll.
//!
//! Every `unsafe` block of the shared-memory transport lives here or in
//! `layout.rs` (the typed view of the mapping).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Turns a `-1` return into the thread's `errno`.
macro_rules! syscall {
    ($e:expr) => {{
        let r = $e;
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }};
}

/// A `MAP_SHARED` mapping of a whole memfd, unmapped on drop.
pub(crate) struct Mapping {
    map: memmap2::MmapRaw,
}

impl Mapping {
    /// Creates an anonymous memory file of `len` bytes (pages are allocated
    /// when first touched) and maps it. Returns the mapping and the file,
    /// which the caller passes to its peer.
    pub fn create(name: &str, len: usize) -> io::Result<(Mapping, OwnedFd)> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `cname` is a valid NUL-terminated string; the flags are plain bits.
        let fd = syscall!(unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) })?;
        // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on a descriptor we own; `len` fits off_t on 64-bit Linux.
        syscall!(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) })?;
        let map = Self::map(&fd, len)?;
        Ok((map, fd))
    }

    /// Maps `len` bytes of `fd`, refusing a file shorter than that (a
    /// mapping past the end of a file faults on access).
    pub fn map(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        let file = std::fs::File::from(fd.try_clone()?);
        let size = file.metadata()?.len();
        if size != len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shared region is {size} bytes, expected {len}"),
            ));
        }
        let map = memmap2::MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Mapping { map })
    }

    /// Start of the mapping (page aligned).
    pub fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// Sleeps while `*word == expected`, at most `timeout`. Returns on a wake,
/// a value change, a signal or the timeout; the caller re-checks its
/// condition in every case. Shared (not process-private) futex: the word
/// lives in memory mapped by two processes.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned 32-bit atomic for the whole call and
    // `ts` outlives it; FUTEX_WAIT only reads both. Errors (EAGAIN when the
    // value already changed, EINTR, ETIMEDOUT) all mean "re-check".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every thread sleeping on `word` (in any process).
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE does not
    // write memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Sends `data` and one descriptor over a connected Unix socket.
pub(crate) fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    assert!(space <= std::mem::size_of_val(&cbuf));
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space;
    // SAFETY: `msg` points at `cbuf`, which has room for one cmsg carrying one
    // fd (checked above); CMSG_FIRSTHDR/CMSG_DATA stay inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
    }
    // SAFETY: `msg` and everything it points at live across the call.
    let n = syscall!(unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) })?;
    if n as usize != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short send of the ring hello",
        ));
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and at most one descriptor (close-on-exec).
/// Returns the byte count and the descriptor, if one came.
pub(crate) fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: `msg` points at live buffers of the stated sizes.
    let n = syscall!(unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    let mut got: Option<OwnedFd> = None;
    // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes of
    // well-formed cmsgs; CMSG_NXTHDR stops at its end. Every descriptor
    // received is taken into an OwnedFd so none leaks.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let bytes = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned((data as *const RawFd).add(i));
                    let owned = OwnedFd::from_raw_fd(fd);
                    if got.is_none() {
                        got = Some(owned);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptor truncated",
        ));
    }
    Ok((n as usize, got))
}

/// `poll(2)` over `fds` for at most `timeout` (`None`: forever). Returns the
/// number of ready entries (0 on timeout or EINTR).
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
    };
    // SAFETY: `fds` is a live, exclusively borrowed array of pollfd.
    match syscall!(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Whether the peer of `sock` has closed or reset its end (a zero-timeout poll).
pub(crate) fn peer_gone(sock: RawFd) -> bool {
    let mut p = [libc::pollfd {
        fd: sock,
        events: libc::POLLRDHUP,
        revents: 0,
    }];
    match poll(&mut p, Some(Duration::ZERO)) {
        Ok(_) => {
            p[0].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
        }
        Err(_) => true,
    }
}

/// This process's id.
pub(crate) fn pid() -> u32 {
    std::process::id()
}

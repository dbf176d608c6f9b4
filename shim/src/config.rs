//! Configuration from the environment, the lazily connected client and the
//! optional log.

use crate::{fdtable, real};
use sealfs_client::{Client, ClientOptions, Errno};
use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
use std::sync::OnceLock;

/// What the environment asked for.
pub struct Config {
    /// `SEALFS_MANAGER`, `host:port`.
    pub manager: String,
    /// `SEALFS_MOUNT`, normalised, without a trailing slash.
    pub prefix: String,
    /// `SEALFS_LOG`.
    pub log: Option<String>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();
/// A manager given by `sealfs_init` before the first connection.
static MANAGER_OVERRIDE: parking_lot::Mutex<Option<String>> = parking_lot::const_mutex(None);

fn env(name: &CStr) -> Option<String> {
    // SAFETY: getenv with a NUL-terminated name; the result is copied at once.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: getenv returned a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    (!s.is_empty()).then_some(s)
}

/// The configuration, read from the environment on first use.
#[inline]
pub fn config() -> &'static Config {
    CONFIG.get_or_init(|| {
        let manager = env(c"SEALFS_MANAGER").unwrap_or_else(|| "127.0.0.1:7700".to_string());
        let prefix = env(c"SEALFS_MOUNT")
            .and_then(|m| sealfs_proto::path::normalize(&m).ok())
            .filter(|m| m != "/")
            .unwrap_or_else(|| "/sealfs".to_string());
        Config {
            manager,
            prefix,
            log: env(c"SEALFS_LOG"),
        }
    })
}

static CLIENT: AtomicPtr<Client> = AtomicPtr::new(std::ptr::null_mut());

/// Sets the manager address used by the next connection (`sealfs_init`).
pub fn set_manager(addr: &str) {
    *MANAGER_OVERRIDE.lock() = Some(addr.to_string());
}

/// The client, connected on first use. A client, once published, is never
/// freed (a forked child leaks its parent's), so the reference is `'static`.
pub fn client() -> Result<&'static Client, Errno> {
    let p = CLIENT.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: published clients are leaked boxes, never freed.
        return Ok(unsafe { &*p });
    }
    let manager = MANAGER_OVERRIDE
        .lock()
        .clone()
        .unwrap_or_else(|| config().manager.clone());
    let opts = ClientOptions {
        mount_prefix: Some(config().prefix.clone()),
        ..ClientOptions::default()
    };
    let c = match Client::connect(&manager, opts) {
        Ok(c) => c,
        Err(e) => {
            log(&format!("connect: {e}"));
            return Err(Errno::EIO);
        }
    };
    let b = Box::into_raw(Box::new(c));
    match CLIENT.compare_exchange(std::ptr::null_mut(), b, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `b` was just leaked and published.
        Ok(_) => Ok(unsafe { &*b }),
        Err(other) => {
            // SAFETY: `b` was never published; `other` is a published client.
            unsafe {
                drop(Box::from_raw(b));
                Ok(&*other)
            }
        }
    }
}

/// Whether a client is connected in this process.
pub fn connected() -> bool {
    !CLIENT.load(Ordering::Acquire).is_null()
}

/// In a forked child: forget the parent's client (its connections are
/// shared with the parent) without touching its locks; it is leaked.
pub fn forget_client() {
    CLIENT.store(std::ptr::null_mut(), Ordering::Release);
}

static LOG_FD: AtomicI32 = AtomicI32::new(-2);

/// Appends a line to `SEALFS_LOG` if set. Call only inside the guard.
pub fn log(msg: &str) {
    let mut fd = LOG_FD.load(Ordering::Relaxed);
    if fd == -2 {
        fd = -1;
        if let Some(path) = &config().log {
            if let Ok(c) = std::ffi::CString::new(path.as_str()) {
                // SAFETY: real open of a NUL-terminated path.
                fd = unsafe {
                    real::open(
                        c.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                if fd >= 0 {
                    fd = fdtable::relocate_internal(fd);
                }
            }
        }
        LOG_FD.store(fd, Ordering::Relaxed);
    }
    if fd >= 0 {
        // SAFETY: getpid has no preconditions.
        let line = format!("sealfs[{}]: {msg}\n", unsafe { libc::getpid() });
        // SAFETY: writing a valid buffer to our own log fd.
        unsafe { real::write(fd, line.as_ptr().cast(), line.len()) };
    }
}

/// Whether logging is on (to skip formatting otherwise).
pub fn logging() -> bool {
    config().log.is_some()
}

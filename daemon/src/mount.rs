//! Mounting, serving and unmounting: the life of one `sealfs mount`.
//!
//! Order of a mount: check the mount point (a stale mount left by a killed
//! daemon is reported with the command that clears it), block the stop
//! signals, connect to the cluster and stat its root, mount (fuser talks to
//! `/dev/fuse` directly as root, through `fusermount3` otherwise), report
//! "live" (to the `--background` parent), then serve until the file system
//! is unmounted — by `sealfs umount`, `fusermount3 -u`, `umount`, or a
//! SIGINT/SIGTERM/SIGHUP, which unmounts (lazily if files are still open).

use crate::fs::{FsOptions, SealFs};
use crate::sys;
use fuser::{Config, MountOption, SessionACL};
use sealfs_client::{Client, ClientOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// What a mount needs.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// The manager's address (`host:port`).
    pub manager: String,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Kernel caching.
    pub fs: FsOptions,
    /// How long one server request may take before the caller gets `EIO`.
    pub io_timeout: Duration,
    /// Request-serving threads.
    pub threads: usize,
    /// Let every user in (`allow_other` + `default_permissions`); the
    /// default when mounting as root.
    pub allow_other: bool,
}

/// Why a mount failed or ended badly.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// A dead daemon's mount is still there.
    #[error("{0} is a stale SealFS mount (Transport endpoint is not connected): its daemon died; clear it with `fusermount3 -u {0}` (or `umount -l {0}`) and mount again")]
    Stale(String),
    /// The mount point is unusable.
    #[error("mount point {path}: {reason}")]
    MountPoint {
        /// The mount point.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The cluster could not be reached.
    #[error(transparent)]
    Connect(#[from] sealfs_client::ClientError),
    /// The cluster answered, but its root could not be read.
    #[error("cannot read the SealFS root through the manager at {0}: {1}")]
    Root(String, sealfs_client::Errno),
    /// The kernel refused the mount.
    #[error("cannot mount on {0}: {1}")]
    Mount(String, io::Error),
    /// Serving ended with an error.
    #[error("the FUSE session on {0} ended with an error: {1}")]
    Session(String, io::Error),
    /// Unmounting failed.
    #[error("cannot unmount {0}: {1}")]
    Umount(String, String),
}

/// Checks that `mnt` is a usable directory, recognising a stale mount.
pub fn check_mountpoint(mnt: &Path) -> Result<(), DaemonError> {
    let shown = mnt.display().to_string();
    match std::fs::metadata(mnt) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(DaemonError::MountPoint {
                path: shown,
                reason: "not a directory".into(),
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(DaemonError::Stale(shown))
        }
        Err(e) => {
            return Err(DaemonError::MountPoint {
                path: shown,
                reason: e.to_string(),
            })
        }
    }
    if let Some(source) = sealfs_mount_source(mnt) {
        return Err(DaemonError::MountPoint {
            path: shown.clone(),
            reason: format!(
                "SealFS ({source}) is already mounted there; `sealfs umount {shown}` first"
            ),
        });
    }
    Ok(())
}

/// The source (`sealfs:MANAGER`) of a live SealFS mount at `mnt`, if any,
/// from `/proc/self/mountinfo` (fields: … mount-point … `-` fstype source …).
fn sealfs_mount_source(mnt: &Path) -> Option<String> {
    let mnt = mnt.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|l| {
        let mut fields = l.split(' ');
        let at = fields.clone().nth(4)?;
        if Path::new(at) != mnt.as_path() {
            return None;
        }
        let mut rest = fields.by_ref().skip_while(|f| *f != "-").skip(1);
        let (fstype, source) = (rest.next()?, rest.next()?);
        (fstype.starts_with("fuse") && source.starts_with("sealfs:")).then(|| source.to_string())
    })
}

/// Mounts and serves until unmounted. `ready` is called once: with `Ok`
/// when the mount is live, or with the error that prevented it.
pub fn run(
    cfg: MountConfig,
    ready: impl FnOnce(Result<(), &DaemonError>),
) -> Result<(), DaemonError> {
    let res = mount(&cfg);
    let session = match res {
        Ok(s) => s,
        Err(e) => {
            ready(Err(&e));
            return Err(e);
        }
    };
    let shown = cfg.mountpoint.display().to_string();
    tracing::info!(mountpoint = %shown, manager = %cfg.manager, "SealFS mounted");
    ready(Ok(()));
    serve(session, &cfg.mountpoint)
}

fn mount(cfg: &MountConfig) -> Result<fuser::Session<SealFs>, DaemonError> {
    check_mountpoint(&cfg.mountpoint)?;
    // Before any thread exists, so that every thread inherits the mask and
    // only the signal thread receives these.
    sys::block_stop_signals()
        .map_err(|e| DaemonError::Session(cfg.mountpoint.display().to_string(), e))?;
    let mut copts = ClientOptions::default();
    copts.transport.io_timeout = cfg.io_timeout;
    copts.transport.connect_timeout = cfg.io_timeout.min(copts.transport.connect_timeout);
    let client = Client::connect(&cfg.manager, copts)?;
    client
        .lstat("/")
        .map_err(|e| DaemonError::Root(cfg.manager.clone(), e))?;
    let fs = SealFs::new(Arc::new(client), cfg.fs);

    let mut options = vec![
        MountOption::FSName(format!("sealfs:{}", cfg.manager)),
        MountOption::Subtype("sealfs".into()),
        MountOption::RW,
        MountOption::NoDev,
        MountOption::Exec,
        MountOption::Suid,
    ];
    let mut config = Config::default();
    if cfg.allow_other {
        options.push(MountOption::DefaultPermissions);
        config.acl = SessionACL::All;
    }
    config.mount_options = options;
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = true;
    let session = fuser::Session::new(fs, &cfg.mountpoint, &config)
        .map_err(|e| DaemonError::Mount(cfg.mountpoint.display().to_string(), e))?;
    raise_readahead(&cfg.mountpoint);
    Ok(session)
}

/// The kernel starts a FUSE mount with the default 128 KiB read-ahead;
/// raise it to [`crate::MAX_WRITE`] so sequential reads arrive as 1 MiB
/// requests. Best effort (needs root and sysfs).
///
/// The device number comes from `/proc/self/mountinfo`: a `stat` of the
/// mount point would wait for this daemon, which does not serve yet.
fn raise_readahead(mnt: &Path) {
    let Ok(mnt) = mnt.canonicalize() else { return };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // Fields: id parent major:minor root mount-point …; the last match is the newest mount.
    let Some(dev) = info
        .lines()
        .rev()
        .filter(|l| l.split(' ').nth(4).map(Path::new) == Some(mnt.as_path()))
        .find_map(|l| l.split(' ').nth(2))
    else {
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, format!("{}", crate::MAX_WRITE / 1024)) {
        tracing::debug!("read-ahead left at the kernel's default ({knob}: {e})");
    }
}

fn serve(mut session: fuser::Session<SealFs>, mnt: &Path) -> Result<(), DaemonError> {
    let mut unmounter = session.unmount_callable();
    let mnt_owned = mnt.to_path_buf();
    let spawned = std::thread::Builder::new().name("sealfs-signals".into()).spawn(move || {
        let sig = sys::wait_stop_signal();
        tracing::info!(signal = sig, "unmounting on signal");
        if let Err(e) = unmounter.unmount() {
            if e.raw_os_error() == Some(libc::EBUSY) {
                tracing::warn!("mount busy (files open): detaching lazily; the daemon ends when the last file is closed");
                if let Err(e) = sys::umount2(&mnt_owned, sys::MNT_DETACH) {
                    tracing::error!("lazy unmount failed: {e}");
                }
            } else {
                tracing::error!("unmount failed: {e}");
            }
        }
    });
    if let Err(e) = spawned {
        return Err(DaemonError::Session(mnt.display().to_string(), e));
    }
    session
        .run()
        .map_err(|e| DaemonError::Session(mnt.display().to_string(), e))?;
    tracing::info!(mountpoint = %mnt.display(), "SealFS unmounted");
    Ok(())
}

/// Unmounts `mnt` (a live or a stale SealFS mount); `lazy` detaches it even
/// while files are open. Falls back to `fusermount3 -u` when not root.
pub fn umount(mnt: &Path, lazy: bool) -> Result<(), DaemonError> {
    let shown = mnt.display().to_string();
    let flags = if lazy { sys::MNT_DETACH } else { 0 };
    match sys::umount2(mnt, flags) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && sys::euid() != 0 => {
            let mut cmd = std::process::Command::new("fusermount3");
            cmd.arg("-u");
            if lazy {
                cmd.arg("-z");
            }
            let out = cmd
                .arg(mnt)
                .output()
                .map_err(|e| DaemonError::Umount(shown.clone(), format!("fusermount3: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(DaemonError::Umount(
                    shown,
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ))
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(DaemonError::Umount(
            shown.clone(),
            format!("{e}: files are open in it; `sealfs umount --lazy {shown}` detaches it now"),
        )),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            Err(DaemonError::Umount(shown, "not a mount point".into()))
        }
        Err(e) => Err(DaemonError::Umount(shown, e.to_string())),
    }
}

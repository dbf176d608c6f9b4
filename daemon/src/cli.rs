//! The `sealfs mount` and `sealfs umount` subcommands: argument parsing,
//! `--background` (a detached child that reports back once the mount is
//! live), and error reporting. `src/main.rs` only forwards to these.

use crate::fs::FsOptions;
use crate::mount::{self, MountConfig};
use crate::sys;
use clap::Args;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// `sealfs mount`.
#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// Directory to mount SealFS on.
    pub mountpoint: PathBuf,
    /// Manager address.
    #[arg(long, env = "SEALFS_MANAGER")]
    pub manager: String,
    /// Detach once the mount is live (the daemon keeps running).
    #[arg(long)]
    pub background: bool,
    /// How long the kernel caches attributes (e.g. 1s, 200ms, 0).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub attr_timeout: Duration,
    /// How long the kernel caches names (default: the attribute timeout).
    #[arg(long, value_parser = parse_duration)]
    pub entry_timeout: Option<Duration>,
    /// How long the kernel remembers that a name does not exist
    /// (default: the entry timeout; 0 disables).
    #[arg(long, value_parser = parse_duration)]
    pub negative_timeout: Option<Duration>,
    /// A server request taking longer than this fails with EIO.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub io_timeout: Duration,
    /// Request-serving threads.
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// With --background: the daemon's log file (default: discarded).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Internal: the fd a `--background` parent waits on.
    #[arg(long, hide = true)]
    pub notify_fd: Option<i32>,
}

/// `sealfs umount`.
#[derive(Args, Debug, Clone)]
pub struct UmountArgs {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// Detach even while files are open (the daemon ends after the last close).
    #[arg(long, short = 'l')]
    pub lazy: bool,
}

/// Parses `1s`, `250ms`, `2m`, `0` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 1s, 500ms)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn config(a: &MountArgs) -> MountConfig {
    MountConfig {
        manager: a.manager.clone(),
        mountpoint: a.mountpoint.clone(),
        fs: FsOptions {
            attr_ttl: a.attr_timeout,
            entry_ttl: a.entry_timeout.unwrap_or(a.attr_timeout),
            negative_ttl: a
                .negative_timeout
                .or(a.entry_timeout)
                .unwrap_or(a.attr_timeout),
        },
        io_timeout: a.io_timeout,
        threads: a.threads,
        allow_other: sys::euid() == 0,
    }
}

/// Runs `sealfs mount`.
pub fn mount(a: MountArgs) -> ExitCode {
    if a.background && a.notify_fd.is_none() {
        return background(&a);
    }
    let notify = match a.notify_fd.map(sys::file_from_fd).transpose() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("sealfs mount: --notify-fd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if notify.is_some() {
        let _ = sys::setsid();
    }
    let mut notify = notify;
    let res = mount::run(config(&a), |r| {
        if let Some(mut f) = notify.take() {
            let msg = match r {
                Ok(()) => "ok\n".to_string(),
                Err(e) => format!("{e}\n"),
            };
            let _ = f.write_all(msg.as_bytes());
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealfs mount: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the daemon as a detached child and returns once its mount is
/// live (exit 0) or it failed (its error, exit 1).
fn background(a: &MountArgs) -> ExitCode {
    let fail = |m: String| {
        eprintln!("sealfs mount: {m}");
        ExitCode::FAILURE
    };
    if let Err(e) = mount::check_mountpoint(&a.mountpoint) {
        return fail(e.to_string());
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot find the sealfs binary: {e}")),
    };
    let (mut rd, wr) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => return fail(format!("pipe: {e}")),
    };
    use std::os::fd::AsRawFd;
    let wfd = wr.as_raw_fd();
    if let Err(e) = sys::inherit(wfd) {
        return fail(format!("pipe: {e}"));
    }
    let stderr = match &a.log {
        Some(p) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(f) => Stdio::from(f),
            Err(e) => return fail(format!("log file {}: {e}", p.display())),
        },
        None => Stdio::null(),
    };
    let args: Vec<_> = std::env::args_os()
        .skip(1)
        .filter(|x| x != "--background")
        .collect();
    let child = Command::new(exe)
        .args(args)
        .arg("--notify-fd")
        .arg(wfd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn();
    drop(wr);
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start the daemon: {e}")),
    };
    let mut msg = String::new();
    let _ = rd.read_to_string(&mut msg);
    if msg.trim() == "ok" {
        println!(
            "mounted SealFS on {} (daemon pid {})",
            a.mountpoint.display(),
            child.id()
        );
        return ExitCode::SUCCESS;
    }
    let _ = child.wait();
    if msg.trim().is_empty() {
        msg = "the daemon exited before the mount was live".into();
    }
    fail(msg.trim().to_string())
}

/// Runs `sealfs umount`.
pub fn umount(a: UmountArgs) -> ExitCode {
    match mount::umount(&a.mountpoint, a.lazy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealfs umount: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("1h").is_err());
    }
}

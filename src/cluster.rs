//! `sealfs up` (a local cluster of real processes) and `sealfs status`.
//!
//! `up` starts `sealfs manager` and N × `sealfs server` as child processes of
//! itself, with fixed ports (manager on P, server i on P+i) so that running
//! `up` again on the same DIR brings back the same cluster at the same
//! addresses. Children are tied to `up` with `PR_SET_PDEATHSIG`, so a killed
//! `up` leaves no orphans.

use clap::Args;
use sealfs_proto::{ClusterMap, Reply, Request, ServerState};
use sealfs_transport::{tcp::TcpPool, ClientConfig, Transport};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Arguments of `sealfs up`.
#[derive(Args, Clone, Debug)]
pub struct UpArgs {
    /// Directory holding the manager's and every server's state.
    #[arg(long)]
    pub dir: PathBuf,
    /// Number of storage servers.
    #[arg(long, default_value_t = 3)]
    pub servers: u16,
    /// Manager port; server i listens on port + i.
    #[arg(long, default_value_t = 7700)]
    pub port: u16,
    /// Sync policy of the servers: fsync, always, none.
    #[arg(long, default_value = "fsync")]
    pub sync: String,
    /// Chunk size of file data for a new cluster.
    #[arg(long, default_value = "1M")]
    pub chunk_size: String,
    /// A server silent for this long is marked down.
    #[arg(long, default_value = "3s")]
    pub heartbeat_timeout: String,
}

/// A running local cluster: the child processes and the manager's address.
pub struct LocalCluster {
    /// `127.0.0.1:PORT` of the manager.
    pub manager: String,
    children: Vec<(String, Child)>,
}

fn spawn(exe: &Path, name: &str, args: &[String], log: &Path) -> Result<Child, String> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open log {}: {e}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf);
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("cannot start {name}: {e}"))
}

/// Fetches the map from a manager.
pub fn get_map(manager: &str) -> Result<ClusterMap, String> {
    let cfg = ClientConfig {
        io_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let pool = TcpPool::new(manager, cfg);
    match pool.call(0, Request::GetMap) {
        Ok(Reply::Map(m)) => Ok(m),
        Ok(other) => Err(format!("manager at {manager} answered {other:?}")),
        Err(e) => Err(format!("cannot reach the SealFS manager at {manager}: {e}")),
    }
}

impl LocalCluster {
    /// Starts a manager and `a.servers` servers under `a.dir` and waits until
    /// every server serves.
    pub fn start(a: &UpArgs) -> Result<LocalCluster, String> {
        if a.servers == 0 {
            return Err("--servers must be at least 1".into());
        }
        if a.port as u32 + a.servers as u32 > u16::MAX as u32 {
            return Err("--port + --servers exceeds 65535".into());
        }
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the sealfs binary: {e}"))?;
        std::fs::create_dir_all(&a.dir)
            .map_err(|e| format!("cannot create {}: {e}", a.dir.display()))?;
        let manager = format!("127.0.0.1:{}", a.port);
        let mut cl = LocalCluster {
            manager: manager.clone(),
            children: Vec::new(),
        };
        let mdir = a.dir.join("manager");
        let margs = vec![
            "manager".into(),
            "--listen".into(),
            manager.clone(),
            "--dir".into(),
            mdir.display().to_string(),
            "--chunk-size".into(),
            a.chunk_size.clone(),
            "--heartbeat-timeout".into(),
            a.heartbeat_timeout.clone(),
        ];
        cl.children.push((
            "manager".into(),
            spawn(&exe, "manager", &margs, &a.dir.join("manager.log"))?,
        ));
        for i in 1..=a.servers {
            let sdir = a.dir.join(format!("server{i}"));
            let sargs = vec![
                "server".into(),
                "--manager".into(),
                manager.clone(),
                "--listen".into(),
                format!("127.0.0.1:{}", a.port + i),
                "--meta-dir".into(),
                sdir.join("meta").display().to_string(),
                "--data-dir".into(),
                sdir.join("data").display().to_string(),
                "--sync".into(),
                a.sync.clone(),
            ];
            let name = format!("server{i}");
            let child = spawn(&exe, &name, &sargs, &a.dir.join(format!("{name}.log")))?;
            cl.children.push((name, child));
        }
        cl.wait_serving(a.servers as usize, Duration::from_secs(60), &a.dir)?;
        Ok(cl)
    }

    fn wait_serving(&mut self, n: usize, limit: Duration, dir: &Path) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            if let Some(dead) = self.dead_child() {
                return Err(format!(
                    "{dead} exited during start-up; see its log in {}",
                    dir.display()
                ));
            }
            if let Ok(m) = get_map(&self.manager) {
                let up = m
                    .servers
                    .iter()
                    .filter(|s| s.state == ServerState::Up)
                    .count();
                if up >= n && m.all_up() {
                    return Ok(());
                }
            }
            if t0.elapsed() > limit {
                return Err(format!(
                    "the cluster did not come up within {limit:?}; see the logs in {}",
                    dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The name of a child that has exited, if any.
    pub fn dead_child(&mut self) -> Option<String> {
        for (name, c) in &mut self.children {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(format!("{name} ({st})"));
            }
        }
        None
    }

    /// Stops every child: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        // servers first, then the manager
        for (_, c) in self.children.iter_mut().rev() {
            // SAFETY: kill(2) with a pid we own; failure (already gone) is fine.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let t0 = Instant::now();
        for (name, c) in self.children.iter_mut().rev() {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if t0.elapsed() > Duration::from_secs(5) => {
                        tracing::warn!("{name} ignored SIGTERM; killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

fn install_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// `sealfs up`: start, print the manager address, run until SIGINT/SIGTERM.
pub fn up(a: UpArgs) -> Result<(), String> {
    install_stop_signals();
    let mut cl = LocalCluster::start(&a)?;
    println!("SEALFS_MANAGER={}", cl.manager);
    let _ = std::io::stdout().flush();
    tracing::info!(
        "{} servers serving; state under {}; Ctrl-C stops",
        a.servers,
        a.dir.display()
    );
    while SIGNALLED.load(Ordering::SeqCst) == 0 {
        if let Some(dead) = cl.dead_child() {
            tracing::error!("{dead} exited; stopping the cluster");
            cl.stop();
            return Err(format!(
                "{dead} exited unexpectedly; see its log in {}",
                a.dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("stopping");
    cl.stop();
    Ok(())
}

/// `sealfs status`: one line per server; exit 0 only when every server is
/// up in the map and answers a request.
pub fn status(manager: &str, expect: usize) -> ExitCode {
    let map = match get_map(manager) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("sealfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "epoch {}  chunk size {}  servers {}",
        map.epoch,
        map.chunk_size,
        map.servers.len()
    );
    let cfg = ClientConfig {
        io_timeout: Duration::from_secs(3),
        ..ClientConfig::default()
    };
    let mut ok = !map.servers.is_empty() && map.servers.len() >= expect;
    if map.servers.len() < expect {
        println!(
            "waiting for servers: {} of {expect} registered",
            map.servers.len()
        );
    }
    for s in &map.servers {
        let stat = match s.state {
            ServerState::Up => {
                match TcpPool::new(s.addr.clone(), cfg.clone()).call(map.epoch, Request::StatFs) {
                    Ok(Reply::StatFs(st)) => Some(st),
                    _ => None,
                }
            }
            ServerState::Down => None,
        };
        let answers = stat.is_some();
        let state = match (s.state, stat) {
            (ServerState::Up, Some(st)) if st.writes_slowed => {
                "up, writes slowed (its compaction is behind)"
            }
            (ServerState::Up, Some(_)) => "up",
            (ServerState::Up, None) => "up (not answering)",
            (ServerState::Down, _) => "down",
        };
        ok &= answers;
        println!("{:<6} {:<22} {}", s.id.to_string(), s.addr, state);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

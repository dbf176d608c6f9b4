//! Shared helpers for the integration tests: start a real cluster (the
//! `sealfs` binary as manager and server processes on loopback ports), kill
//! and restart its members, and connect clients.
#![allow(dead_code)]

use rand::Rng;
use sealfs_client::{Client, ClientOptions};
use sealfs_proto::{ClusterMap, Reply, Request, ServerState};
use sealfs_transport::{tcp::TcpPool, ClientConfig, Transport};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `sealfs` binary under test.
pub fn sealfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealfs")
}

/// Options of a test cluster.
#[derive(Clone)]
pub struct Opts {
    pub servers: u16,
    pub sync: &'static str,
    pub chunk_size: &'static str,
    pub heartbeat_timeout: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            servers: 3,
            sync: "fsync",
            chunk_size: "1M",
            heartbeat_timeout: "2s",
        }
    }
}

/// A cluster of real processes in a temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub opts: Opts,
    manager: Option<Child>,
    servers: Vec<Option<Child>>,
}

/// The pjdfstest binary: `$PJDFSTEST`, on `PATH`, where `.ci/run`
/// installs it, or in `~/.cargo/bin`; `None` if it is not installed.
pub fn pjdfstest_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PJDFSTEST") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/opt/pjdfstest/bin"), home.join(".cargo/bin")])
        .map(|d| d.join("pjdfstest"))
        .find(|p| p.exists())
}

/// Runs `tests/pjdfstest/run.sh` in `dir` with pjdfstest `bin` and the
/// extra environment `envs`; prints its counts and asserts that every
/// failure is explained.
pub fn run_pjdfstest_script(dir: &Path, bin: &Path, envs: &[(&str, &std::ffi::OsStr)]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pjdfstest/run.sh");
    let mut c = Command::new("bash");
    c.arg(script).arg(dir).arg(bin);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().expect("run pjdfstest");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` consecutive free loopback ports.
pub fn free_ports(n: u16) -> u16 {
    let mut rng = rand::thread_rng();
    for _ in 0..500 {
        // Below Linux's ephemeral range (32768..60999), where an outgoing
        // connection could take a port between this probe and the bind.
        let base: u16 = rng.gen_range(10000..32000);
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free ports");
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("log file")
}

impl Cluster {
    /// Starts a manager and `opts.servers` servers and waits until all serve.
    pub fn start(opts: Opts) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("sealfs-test")
            .tempdir()
            .expect("tempdir");
        let port = free_ports(opts.servers + 1);
        let mut c = Cluster {
            dir,
            port,
            opts: opts.clone(),
            manager: None,
            servers: Vec::new(),
        };
        c.start_manager();
        for i in 1..=opts.servers {
            c.servers.push(None);
            c.start_server(i);
        }
        c.wait_all_up();
        c
    }

    pub fn manager_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn server_dir(&self, i: u16) -> PathBuf {
        self.dir.path().join(format!("server{i}"))
    }

    pub fn start_manager(&mut self) {
        let child = Command::new(sealfs_bin())
            .args(["manager", "--listen", &self.manager_addr(), "--dir"])
            .arg(self.dir.path().join("manager"))
            .args([
                "--chunk-size",
                self.opts.chunk_size,
                "--heartbeat-timeout",
                self.opts.heartbeat_timeout,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(self.dir.path(), "manager"))
            .spawn()
            .expect("spawn manager");
        self.manager = Some(child);
    }

    pub fn start_server(&mut self, i: u16) {
        let d = self.server_dir(i);
        let child = Command::new(sealfs_bin())
            .args([
                "server",
                "--manager",
                &self.manager_addr(),
                "--listen",
                &format!("127.0.0.1:{}", self.port + i),
            ])
            .arg("--meta-dir")
            .arg(d.join("meta"))
            .arg("--data-dir")
            .arg(d.join("data"))
            .args(["--sync", self.opts.sync, "--heartbeat", "200ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(self.dir.path(), &format!("server{i}")))
            .spawn()
            .expect("spawn server");
        self.servers[i as usize - 1] = Some(child);
    }

    /// SIGKILLs server `i` (1-based) and reaps it.
    pub fn kill_server(&mut self, i: u16) {
        if let Some(mut c) = self.servers[i as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILLs the manager.
    pub fn kill_manager(&mut self) {
        if let Some(mut c) = self.manager.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills every process and starts them all again on the same dirs.
    pub fn restart_all(&mut self) {
        for i in 1..=self.opts.servers {
            self.kill_server(i);
        }
        self.kill_manager();
        self.start_manager();
        for i in 1..=self.opts.servers {
            self.start_server(i);
        }
        self.wait_all_up();
    }

    pub fn map(&self) -> Option<ClusterMap> {
        let pool = TcpPool::new(
            self.manager_addr(),
            ClientConfig {
                io_timeout: Duration::from_secs(5),
                ..Default::default()
            },
        );
        match pool.call(0, Request::GetMap) {
            Ok(Reply::Map(m)) => Some(m),
            _ => None,
        }
    }

    /// Waits (bounded) until the manager reports every server up and each answers.
    pub fn wait_all_up(&self) {
        let t0 = Instant::now();
        loop {
            if let Some(m) = self.map() {
                if m.servers.len() == self.opts.servers as usize && m.all_up() {
                    let cfg = ClientConfig {
                        io_timeout: Duration::from_secs(5),
                        ..Default::default()
                    };
                    if m.servers.iter().all(|s| {
                        matches!(
                            TcpPool::new(s.addr.clone(), cfg.clone())
                                .call(m.epoch, Request::StatFs),
                            Ok(Reply::StatFs(_))
                        )
                    }) {
                        return;
                    }
                }
            }
            if t0.elapsed() >= Duration::from_secs(60) {
                // The temp dir goes with the panic: show the logs' ends.
                let mut tails = String::new();
                if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
                    for e in rd
                        .flatten()
                        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    {
                        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                        let last: Vec<&str> = text.lines().rev().take(8).collect();
                        tails.push_str(&format!("--- {}\n", e.path().display()));
                        for l in last.iter().rev() {
                            tails.push_str(l);
                            tails.push('\n');
                        }
                    }
                }
                panic!("cluster did not come up within 60 s:\n{tails}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until server `i` is reported down, returning how long it took.
    pub fn wait_down(&self, i: u16) -> Duration {
        let t0 = Instant::now();
        loop {
            if let Some(m) = self.map() {
                if m.servers.iter().any(|s| {
                    s.addr.ends_with(&format!(":{}", self.port + i)) && s.state == ServerState::Down
                }) {
                    return t0.elapsed();
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "server {i} never reported down"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.manager_addr(), ClientOptions::default()).expect("connect")
    }

    /// A client whose calls give up after `t`.
    pub fn client_with_timeout(&self, t: Duration) -> Client {
        let mut o = ClientOptions::default();
        o.transport.io_timeout = t;
        o.transport.connect_timeout = t;
        Client::connect(&self.manager_addr(), o).expect("connect")
    }

    /// Runs the `sealfs` CLI against this cluster.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(sealfs_bin())
            .args(args)
            .env("SEALFS_MANAGER", self.manager_addr())
            .output()
            .expect("run sealfs")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 1..=self.servers.len() as u16 {
            self.kill_server(i);
        }
        self.kill_manager();
    }
}

/// Uid/gid of this process.
pub fn ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

// ---------------------------------------------------------------- shim helpers

/// `target/<profile>` of the running test binary (`…/target/<profile>/deps/x`).
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds `libsealfs.so` with the test's profile (so a plain
/// `cargo test --release` works from a clean checkout) and returns its
/// path. If cargo cannot get its build lock in time (another cargo holds
/// it), an existing library is used.
pub fn shim_lib() -> PathBuf {
    let dir = target_profile_dir();
    let lib = dir.join("libsealfs.so");
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "sealfs-shim"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        cmd.arg("--release");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .expect("run cargo build -p sealfs-shim");
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait cargo") {
            assert!(st.success(), "cargo build -p sealfs-shim failed");
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) && lib.exists() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "cargo build -p sealfs-shim did not finish; using the existing {}",
                lib.display()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        lib.exists(),
        "{} is missing: build it with `cargo build -p sealfs-shim`",
        lib.display()
    );
    lib
}

/// Compiles a C program from `c-tests/` with the system `cc`.
pub fn compile_c(src: &str, out: &Path, extra: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(out)
        .arg(root.join("c-tests").join(src))
        .args(extra)
        .status()
        .expect("run cc");
    assert!(st.success(), "cc {src} failed");
}

// ---- FUSE mount helpers (sealfs mount) ----

/// Whether `path` is a mount point now (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let want = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .any(|l| l.split(' ').nth(4).map(Path::new) == Some(want.as_path()))
}

/// The POSIX behaviour suite program (built by the `sealfs-daemon` crate,
/// next to the `sealfs` binary; built on demand when missing).
pub fn posix_suite_bin() -> PathBuf {
    let dir = Path::new(sealfs_bin())
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let bin = dir.join("sealfs-posix-suite");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "sealfs-daemon",
            "--bin",
            "sealfs-posix-suite",
        ]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build of sealfs-posix-suite");
        assert!(st.success(), "cannot build sealfs-posix-suite");
    }
    bin
}

/// A FUSE mount of a test cluster: `sealfs mount` as a foreground child.
/// Dropping it unmounts (lazily if needed) and reaps the daemon, so no
/// test leaves a mount behind.
pub struct FuseMount {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl FuseMount {
    /// Mounts `cluster` with extra `sealfs mount` arguments and waits
    /// (bounded) until the mount is live.
    pub fn start(cluster: &Cluster, extra: &[&str]) -> FuseMount {
        let dir = tempfile::Builder::new()
            .prefix("sealfs-mnt")
            .tempdir()
            .expect("mount dir");
        let log = cluster
            .dir
            .path()
            .join(format!("mount-{}.log", rand::thread_rng().gen::<u32>()));
        let mut m = FuseMount {
            dir,
            child: None,
            log,
        };
        m.mount(cluster, extra);
        m
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Mounts again on the same directory (after [`FuseMount::unmount`]).
    pub fn mount(&mut self, cluster: &Cluster, extra: &[&str]) {
        let child = Command::new(sealfs_bin())
            .arg("mount")
            .arg(self.dir.path())
            .args(["--manager", &cluster.manager_addr()])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(
                self.log.parent().expect("log dir"),
                self.log
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("log name"),
            ))
            .spawn()
            .expect("spawn sealfs mount");
        self.child = Some(child);
        let t0 = Instant::now();
        while !is_mounted(self.dir.path()) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "sealfs mount exited with {st}; log {}:\n{}",
                        self.log.display(),
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "mount never became live; log in {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `sealfs umount`, then waits (bounded) for the daemon to exit.
    pub fn unmount(&mut self) {
        let out = Command::new(sealfs_bin())
            .arg("umount")
            .arg(self.dir.path())
            .output()
            .expect("sealfs umount");
        assert!(
            out.status.success(),
            "sealfs umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.reap(Duration::from_secs(30));
    }

    fn reap(&mut self, bound: Duration) {
        if let Some(mut c) = self.child.take() {
            let t0 = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if t0.elapsed() < bound => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if is_mounted(self.dir.path()) {
            let ok = Command::new(sealfs_bin())
                .arg("umount")
                .arg(self.dir.path())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new(sealfs_bin())
                    .args(["umount", "--lazy"])
                    .arg(self.dir.path())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        self.reap(Duration::from_secs(10));
    }
}

/// Runs the POSIX suite program on `dir` (as root: permission cases drop to
/// uid 65534). Returns `(case, outcome)` lines.
pub fn run_posix_suite(dir: &Path) -> Vec<(String, String)> {
    let out = Command::new(posix_suite_bin())
        .arg(dir)
        .output()
        .expect("run sealfs-posix-suite");
    assert!(
        out.status.success(),
        "sealfs-posix-suite on {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('\t')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect()
}

/// A cluster, the shim and a scratch dir: runs programs with
/// `LD_PRELOAD=libsealfs.so` and `SEALFS_MOUNT` set to a prefix that does
/// not exist on the local disk.
pub struct Preloaded {
    pub cl: Cluster,
    pub lib: PathBuf,
    pub tmp: tempfile::TempDir,
    pub mount: &'static str,
}

impl Preloaded {
    /// Starts a default cluster for programs preloaded under `mount`.
    pub fn new(mount: &'static str) -> Preloaded {
        let lib = shim_lib();
        assert!(
            !Path::new(mount).exists(),
            "{mount} exists on the local disk before the test"
        );
        Preloaded {
            cl: Cluster::start(Opts::default()),
            lib,
            tmp: tempfile::tempdir().expect("tempdir"),
            mount,
        }
    }

    /// A command with the shim preloaded (its log in the scratch dir).
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("LD_PRELOAD", &self.lib)
            .env("SEALFS_MANAGER", self.cl.manager_addr())
            .env("SEALFS_MOUNT", self.mount)
            .env("SEALFS_LOG", self.tmp.path().join("shim.log"));
        c
    }

    /// Runs `c` and asserts that it succeeded, showing its output if not.
    pub fn run(&self, mut c: Command) -> std::process::Output {
        let out = c.output().expect("spawn");
        assert!(
            out.status.success(),
            "{c:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

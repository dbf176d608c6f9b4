//! `sealfs`: the one command users run. Each subcommand is a thin layer over
//! its crate: `manager` (sealfs-manager), `server` (sealfs-server), `up` (a
//! whole local cluster as child processes), `status`, `demo`, and debugging
//! commands over the client library (`ls`, `stat`, `put`, `get`, `cat`,
//! `mkdir`, `rm`, `mv`).

mod bench;
mod cluster;
mod demo;
mod fsops;
mod units;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sealfs",
    version,
    about = "SealFS: a user-space distributed file system"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the manager (membership and the cluster map).
    Manager {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: String,
        /// Directory for the member list.
        #[arg(long)]
        dir: PathBuf,
        /// Chunk size of file data for a new cluster (e.g. 1M, 512K; at most 4M).
        #[arg(long, default_value = "1M", value_parser = units::parse_size)]
        chunk_size: u64,
        /// A server silent for this long is marked down (e.g. 3s, 500ms).
        #[arg(long, default_value = "3s", value_parser = units::parse_duration)]
        heartbeat_timeout: Duration,
    },
    /// Run a storage server.
    Server {
        /// Manager address.
        #[arg(long, env = "SEALFS_MANAGER")]
        manager: String,
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Directory for metadata (the fast device).
        #[arg(long)]
        meta_dir: PathBuf,
        /// Directory for file data (the bulk device).
        #[arg(long)]
        data_dir: PathBuf,
        /// When acknowledged writes reach stable storage: fsync, always, none.
        #[arg(long, default_value = "fsync")]
        sync: String,
        /// Heartbeat period (e.g. 500ms).
        #[arg(long, default_value = "500ms", value_parser = units::parse_duration)]
        heartbeat: Duration,
        /// Store engine: log (packed log + mapped index) or redb (interim).
        #[arg(long, default_value = "log")]
        store: String,
        /// Directory for the index regions (a DAX or /dev/shm mount; default: --meta-dir).
        #[arg(long)]
        pmem: Option<PathBuf>,
        /// Largest first chunk of a file kept in the packed log (e.g. 64K).
        #[arg(long, default_value = "64K", value_parser = units::parse_size)]
        small_file_max: u64,
    },
    /// Start a whole local cluster (one manager, N servers) in the foreground.
    Up(cluster::UpArgs),
    /// Show the cluster's servers; exit 0 only when every server serves
    /// (and, with `--expect N`, at least N are members).
    Status {
        /// Manager address.
        #[arg(long, env = "SEALFS_MANAGER")]
        manager: String,
        /// Fail until at least this many servers have registered: a script
        /// that starts N servers waits for all N, not for the first ones
        /// (files created before a server joins stay on their old owners:
        /// rebalancing is not built).
        #[arg(long, default_value_t = 1)]
        expect: usize,
    },
    /// Start a throw-away local cluster, run a small workload, print what happened.
    Demo(demo::DemoArgs),
    /// List a directory.
    Ls(fsops::PathArgs),
    /// Show a path's attributes.
    Stat(fsops::PathArgs),
    /// Print a file.
    Cat(fsops::PathArgs),
    /// Make a directory.
    Mkdir(fsops::MkdirArgs),
    /// Remove a file or (with -r) a tree.
    Rm(fsops::RmArgs),
    /// Rename.
    Mv(fsops::MvArgs),
    /// Copy a local file into SealFS.
    Put(fsops::CopyArgs),
    /// Copy a SealFS file to the local disk.
    Get(fsops::CopyArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Mount SealFS with FUSE (foreground; --background to detach once live).
    Mount(sealfs_daemon::MountArgs),
    /// Unmount a SealFS FUSE mount (also a stale one).
    Umount(sealfs_daemon::UmountArgs),
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Lets `sealfs ls | head` end quietly when the reader goes away, as
/// coreutils do: Rust starts with SIGPIPE ignored, so a `println!` into a
/// closed pipe would panic with EPIPE.
fn default_sigpipe() {
    // SAFETY: sets one signal's disposition to its default, at start-up
    // before any thread exists; no handler code is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(
        cli.cmd,
        Cmd::Manager { .. } | Cmd::Server { .. } | Cmd::Up(_)
    );
    let long_running = daemon || matches!(cli.cmd, Cmd::Mount(_) | Cmd::Bench(_));
    if !long_running {
        default_sigpipe();
    }
    // fuser's session warns "Failed to umount filesystem: Invalid
    // argument" when its session ends after an unmount from outside
    // (`sealfs umount`, `fusermount3 -u`): the normal way to stop a mount,
    // so that target logs errors only unless RUST_LOG says otherwise.
    init_logs(if daemon {
        "info"
    } else if matches!(cli.cmd, Cmd::Mount(_)) {
        "warn,fuser::session=error"
    } else {
        "warn"
    });
    let res: Result<(), String> = match cli.cmd {
        Cmd::Manager {
            listen,
            dir,
            chunk_size,
            heartbeat_timeout,
        } => {
            if chunk_size == 0 || chunk_size > sealfs_proto::frame::MAX_CHUNK_SIZE as u64 {
                Err(format!(
                    "--chunk-size must be between 1 byte and 4M, got {chunk_size}"
                ))
            } else {
                sealfs_manager::run(sealfs_manager::ManagerConfig {
                    listen,
                    dir,
                    chunk_size: chunk_size as u32,
                    vnodes: sealfs_proto::placement::DEFAULT_VNODES,
                    heartbeat_timeout,
                })
                .map_err(|e| e.to_string())
            }
        }
        Cmd::Server {
            manager,
            listen,
            meta_dir,
            data_dir,
            sync,
            heartbeat,
            store,
            pmem,
            small_file_max,
        } => match (sync.parse(), store.parse()) {
            (Ok(sync), Ok(store)) => sealfs_server::run(sealfs_server::ServerConfig {
                manager,
                listen,
                advertise: None,
                meta_dir,
                data_dir,
                sync,
                heartbeat,
                store,
                pmem,
                small_file_max: small_file_max.min(u64::from(u32::MAX)) as u32,
            })
            .map_err(|e| e.to_string()),
            (Err(e), _) => Err(format!("--sync: {e}")),
            (_, Err(e)) => Err(format!("--store: {e}")),
        },
        Cmd::Up(a) => cluster::up(a),
        Cmd::Status { manager, expect } => return cluster::status(&manager, expect),
        Cmd::Mount(a) => return sealfs_daemon::mount_command(a),
        Cmd::Umount(a) => return sealfs_daemon::umount_command(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Bench(b) => bench::run(b),
        Cmd::Ls(a) => fsops::ls(a),
        Cmd::Stat(a) => fsops::stat(a),
        Cmd::Cat(a) => fsops::cat(a),
        Cmd::Mkdir(a) => fsops::mkdir(a),
        Cmd::Rm(a) => fsops::rm(a),
        Cmd::Mv(a) => fsops::mv(a),
        Cmd::Put(a) => fsops::put(a),
        Cmd::Get(a) => fsops::get(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealfs: {e}");
            ExitCode::FAILURE
        }
    }
}

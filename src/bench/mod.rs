//! `sealfs bench …`: benchmarks that print ratios against a baseline
//! measured in the same run.

pub mod io500;
pub mod shim;

use clap::Subcommand;

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// The IO500 phases with N worker processes doing plain POSIX calls on
    /// a target directory (a local dir, a FUSE mount, or the SealFS prefix
    /// under LD_PRELOAD).
    Io500(io500::Io500Args),
    /// One worker of `bench io500` (started by it; not for direct use).
    #[command(hide = true)]
    Io500Worker(io500::WorkerArgs),
    /// The preload library: per-operation latency and throughput through
    /// `libsealfs.so` against a local cluster vs. tmpfs and the local disk,
    /// and the passthrough overhead on local paths.
    Shim(shim::ShimArgs),
    /// One worker of `bench shim` (started by it; not for direct use).
    #[command(hide = true)]
    ShimWorker(shim::ShimWorkerArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCmd) -> Result<(), String> {
    match cmd {
        BenchCmd::Io500(a) => io500::run(a),
        BenchCmd::Io500Worker(a) => io500::worker(a),
        BenchCmd::Shim(a) => shim::run(a),
        BenchCmd::ShimWorker(a) => shim::worker(a),
    }
}

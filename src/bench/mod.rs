//! `sealfs bench …`: benchmarks that print ratios against a baseline
//! measured in the same run.

pub mod io500;

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
}

/// Runs a benchmark.
pub fn run(cmd: BenchCmd) -> Result<(), String> {
    match cmd {
        BenchCmd::Io500(a) => io500::run(a),
        BenchCmd::Io500Worker(a) => io500::worker(a),
    }
}

//! The command line: one module per subcommand.
//!
//! To add a subcommand, write `src/cmd/<name>.rs` with an `Args` struct and a `run` function,
//! then add one variant to [`Command`] and one arm to [`Command::run`].

use crate::error::CliResult;
use clap::{Parser, Subcommand};

pub mod bench;
pub mod bench_blob;
pub mod bs;
pub mod fs;
pub mod mount;

/// oxblob — a user-space storage stack: block devices, blobstore, blob file system.
#[derive(Parser, Debug)]
#[command(name = "oxblob", version, propagate_version = true)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Measure the performance of a layer (IOPS, bandwidth, latency).
    Bench(bench::BenchArgs),
    /// Manage a blobstore image: init, dump, fsck, create, ls, stat, xattr, import, export,
    /// rm, resize, snapshot, clone.
    Bs(bs::BsArgs),
    /// The file-system commands: mkfs, fsck, ls, tree, mkdir, cp, cat, rm, mv, stat, df,
    /// shell.
    #[command(flatten)]
    Fs(fs::FsCommand),
    /// Mount an image as a directory tree through FUSE (in the background unless
    /// --foreground).
    Mount(mount::MountArgs),
    /// Unmount an oxblob FUSE mount and wait until the image is released.
    Umount(mount::UmountArgs),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self) -> CliResult<()> {
        match self {
            Command::Bench(args) => bench::run(args),
            Command::Bs(args) => bs::run(args),
            Command::Fs(c) => fs::run(c),
            Command::Mount(a) => mount::run_mount(a),
            Command::Umount(a) => mount::run_umount(a),
        }
    }
}

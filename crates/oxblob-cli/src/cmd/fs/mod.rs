//! The file-system commands: `oxblob mkfs|fsck|ls|tree|mkdir|cp|cat|rm|mv|stat|df|shell IMAGE
//! [ARGS]`, front ends over `oxblob_blobfs`.
//!
//! IMAGE is a device spec string or a path (`disk.img`, `file:/x.img`, `malloc:64M`), or
//! `--config FILE.json --bdev NAME` in its place. Paths inside the image are absolute
//! (`/docs/notes.txt`); `cp` marks them with a leading `:` (`:/docs/`) to tell them from host
//! paths. Commands that only read (`ls`, `tree`, `cat`, `stat`, `df`, `cp` out of the image)
//! mount read-only and write nothing. Every command mounts, works and unmounts cleanly; the
//! image is locked while it is open, so a second command on an image in use (by an
//! `oxblob shell`, say) fails with "in use".
//!
//! Errors read like coreutils': `oxblob: cannot remove '/a': Directory not empty`, exit 1.

use crate::device_args::DeviceArgs;
use crate::error::{CliError, CliResult};
use clap::{Args, Subcommand};
use oxblob_blobfs::{BlobFs, FsError, FsErrorKind, MountOptions};
use oxblob_blobstore::BsError;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;

pub mod bench;
pub mod cat;
pub mod cp;
pub mod df;
pub mod fsck;
pub mod ls;
pub mod mkdir;
pub mod mkfs;
pub mod mv;
pub mod ops;
pub mod rm;
pub mod shell;
pub mod stat;

/// The file-system commands, flattened into the top level of `oxblob`.
#[derive(Subcommand, Debug)]
pub enum FsCommand {
    /// Format IMAGE as an empty file system (creates the image file with --size).
    Mkfs(mkfs::MkfsArgs),
    /// Check a file system: the blobstore, then the namespace (exit 0 clean, 1 damaged).
    Fsck(fsck::FsckArgs),
    /// List a directory (or show a file).
    Ls(ls::LsArgs),
    /// Show a directory tree.
    Tree(ls::TreeArgs),
    /// Create directories.
    Mkdir(mkdir::MkdirArgs),
    /// Copy files between the host and the image, or inside the image (image paths start
    /// with ':').
    Cp(cp::CpArgs),
    /// Print files to standard output.
    Cat(cat::CatArgs),
    /// Remove files (and directories with -r).
    Rm(rm::RmArgs),
    /// Rename or move a file or directory.
    Mv(mv::MvArgs),
    /// Show an entry's type, size, allocation, times and inode.
    Stat(stat::StatArgs),
    /// Show space, file counts and metadata use.
    Df(df::DfArgs),
    /// An interactive shell on the image (reads commands from a pipe too).
    Shell(shell::ShellArgs),
}

/// Runs a file-system command.
pub fn run(c: FsCommand) -> CliResult<()> {
    match c {
        FsCommand::Mkfs(a) => mkfs::run(a),
        FsCommand::Fsck(a) => fsck::run(a),
        FsCommand::Ls(a) => ls::run(a),
        FsCommand::Tree(a) => ls::run_tree(a),
        FsCommand::Mkdir(a) => mkdir::run(a),
        FsCommand::Cp(a) => cp::run(a),
        FsCommand::Cat(a) => cat::run(a),
        FsCommand::Rm(a) => rm::run(a),
        FsCommand::Mv(a) => mv::run(a),
        FsCommand::Stat(a) => stat::run(a),
        FsCommand::Df(a) => df::run(a),
        FsCommand::Shell(a) => shell::run(a),
    }
}

/// `--config FILE --bdev NAME`, in place of IMAGE.
#[derive(Args, Debug, Clone, Default)]
pub struct ImageOpts {
    /// SPDK-style JSON bdev config file (with --bdev), in place of IMAGE.
    #[arg(long, value_name = "FILE.json", requires = "bdev")]
    pub config: Option<PathBuf>,
    /// Name of the bdev to open from the --config file (in place of IMAGE).
    #[arg(long, value_name = "NAME", requires = "config")]
    pub bdev: Option<String>,
}

/// The device of a command and the rest of its positional arguments.
#[derive(Debug, Clone)]
pub struct Target {
    /// How to open the device.
    pub dev: DeviceArgs,
    /// IMAGE as given (or the bdev name), for messages.
    pub name: String,
    /// The positional arguments after IMAGE.
    pub rest: VecDeque<String>,
}

impl Target {
    /// Splits IMAGE off `args` (unless `--config`/`--bdev` name the device) and checks the
    /// number of remaining arguments is within `min..=max`.
    pub fn new(
        cmd: &str,
        image: ImageOpts,
        args: Vec<String>,
        min: usize,
        max: usize,
        usage: &str,
    ) -> CliResult<Target> {
        let mut rest: VecDeque<String> = args.into();
        let err = |why: String| CliError::new(format!("usage: {cmd} {usage}"), why);
        let (dev, name) = match (image.config, image.bdev) {
            (Some(c), Some(b)) => (
                DeviceArgs {
                    dev: None,
                    config: Some(c),
                    bdev: Some(b.clone()),
                },
                b,
            ),
            _ => {
                let Some(spec) = rest.pop_front() else {
                    return Err(err(
                        "IMAGE is required (a device spec or path, or --config FILE --bdev NAME)"
                            .into(),
                    ));
                };
                (
                    DeviceArgs {
                        dev: Some(spec.clone()),
                        config: None,
                        bdev: None,
                    },
                    spec,
                )
            }
        };
        if rest.len() < min {
            return Err(err("missing operand".into()));
        }
        if rest.len() > max {
            return Err(err(format!("unexpected argument '{}'", rest[max])));
        }
        Ok(Target { dev, name, rest })
    }

    /// Opens the device and mounts the file system.
    pub fn mount(&self, read_only: bool) -> CliResult<BlobFs> {
        let dev = self.dev.open()?;
        BlobFs::mount(
            dev,
            MountOptions {
                read_only,
                ..Default::default()
            },
        )
        .map_err(|e| CliError::new(format!("cannot mount {}", self.name), mount_why(&e)))
    }
}

/// Why a mount failed, in words (a missing or foreign superblock says how to fix it).
pub fn mount_why(e: &FsError) -> String {
    if e.detail.contains(&BsError::NotABlobstore.to_string()) {
        return "not an oxblob file system (no superblock; run 'oxblob mkfs' first)".into();
    }
    if e.detail.contains("blobstore type mismatch") {
        return format!("not an oxblob file system ({})", e.detail);
    }
    if e.kind == FsErrorKind::Corrupt {
        return format!("{} (run 'oxblob fsck')", e.detail);
    }
    e.detail.clone()
}

/// The strerror text of a kind.
pub fn strerror(kind: FsErrorKind) -> &'static str {
    match kind {
        FsErrorKind::NotFound => "No such file or directory",
        FsErrorKind::Exists => "File exists",
        FsErrorKind::NotADirectory => "Not a directory",
        FsErrorKind::IsADirectory => "Is a directory",
        FsErrorKind::NotEmpty => "Directory not empty",
        FsErrorKind::NameTooLong => "File name too long",
        FsErrorKind::NoSpace => "No space left on device",
        FsErrorKind::InvalidArgument => "Invalid argument",
        FsErrorKind::ReadOnly => "Read-only file system",
        FsErrorKind::BadHandle => "Bad file descriptor",
        FsErrorKind::Io => "Input/output error",
        FsErrorKind::Corrupt => "Structure needs cleaning",
    }
}

/// A file-system error as the CLI says it: `<verb> '<path>': <strerror>`, with the detail
/// added for kinds whose strerror alone does not say enough.
pub fn fs_err(verb: &str, path: &str, e: &FsError) -> CliError {
    let why = match e.kind {
        FsErrorKind::InvalidArgument
        | FsErrorKind::Io
        | FsErrorKind::Corrupt
        | FsErrorKind::NoSpace
        | FsErrorKind::NameTooLong => format!("{} ({})", strerror(e.kind), e.detail),
        k => strerror(k).to_string(),
    };
    CliError::new(format!("{verb} '{path}'"), why)
}

/// Writes `text` and a newline to `out`.
pub fn line(out: &mut dyn Write, text: &str) -> CliResult<()> {
    writeln!(out, "{text}").map_err(|e| CliError::new("writing the output", e))
}

/// Pretty JSON text.
pub fn to_json(v: &serde_json::Value) -> CliResult<String> {
    serde_json::to_string_pretty(v).map_err(|e| CliError::new("formatting JSON", e))
}

/// Runs `f` on a mounted file system and unmounts it cleanly afterwards (also after an
/// error, reporting the first error). Output goes to a locked, flushed stdout.
pub fn with_fs(
    t: &Target,
    read_only: bool,
    f: impl FnOnce(&BlobFs, &mut dyn Write) -> CliResult<()>,
) -> CliResult<()> {
    let fs = t.mount(read_only)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r = f(&fs, &mut out);
    let flushed = out
        .flush()
        .map_err(|e| CliError::new("writing the output", e));
    let un = fs
        .unmount()
        .map_err(|e| CliError::new(format!("unmounting {}", t.name), e.detail));
    r.and(flushed).and(un)
}

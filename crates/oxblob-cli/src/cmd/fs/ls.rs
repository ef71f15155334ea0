//! `oxblob ls IMAGE [-l] [-R] [PATH]` and `oxblob tree IMAGE [PATH]`.

use super::{ops, with_fs, ImageOpts, Target};
use crate::error::CliResult;
use clap::Args;

/// `oxblob ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Long listing: type (d or -), size, mtime (UTC), inode, name.
    #[arg(short = 'l')]
    pub long: bool,
    /// List subdirectories recursively.
    #[arg(short = 'R')]
    pub recursive: bool,
    /// IMAGE [PATH] (default /).
    #[arg(value_name = "IMAGE [PATH]")]
    pub args: Vec<String>,
}

/// `oxblob tree`.
#[derive(Args, Debug)]
pub struct TreeArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// IMAGE [PATH] (default /).
    #[arg(value_name = "IMAGE [PATH]")]
    pub args: Vec<String>,
}

/// Runs `oxblob ls` (read-only mount).
pub fn run(a: LsArgs) -> CliResult<()> {
    let t = Target::new("ls", a.image, a.args, 0, 1, "IMAGE [-l] [-R] [PATH]")?;
    with_fs(&t, true, |fs, out| {
        let p = t.rest.front().map_or("/", String::as_str);
        let path = ops::resolve("/", p).map_err(|e| super::fs_err("cannot access", p, &e))?;
        ops::ls(fs, out, &path, a.long, a.recursive)
    })
}

/// Runs `oxblob tree` (read-only mount).
pub fn run_tree(a: TreeArgs) -> CliResult<()> {
    let t = Target::new("tree", a.image, a.args, 0, 1, "IMAGE [PATH]")?;
    with_fs(&t, true, |fs, out| {
        let p = t.rest.front().map_or("/", String::as_str);
        let path = ops::resolve("/", p).map_err(|e| super::fs_err("cannot access", p, &e))?;
        ops::tree(fs, out, &path)
    })
}

//! `oxblob rm IMAGE [-r] PATH...`.

use super::{ops, with_fs, ImageOpts, Target};
use crate::error::CliResult;
use clap::Args;

/// `oxblob rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Remove directories and their contents. Without it, only files and empty directories
    /// are removed (a non-empty directory is "Directory not empty").
    #[arg(short = 'r', short_alias = 'R', long)]
    pub recursive: bool,
    /// IMAGE PATH...
    #[arg(value_name = "IMAGE PATH...")]
    pub args: Vec<String>,
}

/// Runs `oxblob rm`.
pub fn run(a: RmArgs) -> CliResult<()> {
    let t = Target::new("rm", a.image, a.args, 1, usize::MAX, "IMAGE [-r] PATH...")?;
    with_fs(&t, false, |fs, _| {
        for p in &t.rest {
            let path = ops::resolve("/", p).map_err(|e| super::fs_err("cannot remove", p, &e))?;
            ops::rm(fs, &path, a.recursive)?;
        }
        Ok(())
    })
}

//! `oxblob mkdir IMAGE [-p] PATH...`.

use super::{ops, with_fs, ImageOpts, Target};
use crate::error::CliResult;
use clap::Args;

/// `oxblob mkdir`.
#[derive(Args, Debug)]
pub struct MkdirArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Create missing parents too; an existing directory is not an error.
    #[arg(short = 'p', long)]
    pub parents: bool,
    /// IMAGE PATH...
    #[arg(value_name = "IMAGE PATH...")]
    pub args: Vec<String>,
}

/// Runs `oxblob mkdir`.
pub fn run(a: MkdirArgs) -> CliResult<()> {
    let t = Target::new(
        "mkdir",
        a.image,
        a.args,
        1,
        usize::MAX,
        "IMAGE [-p] PATH...",
    )?;
    with_fs(&t, false, |fs, _| {
        for p in &t.rest {
            let path = ops::resolve("/", p)
                .map_err(|e| super::fs_err("cannot create directory", p, &e))?;
            ops::mkdir(fs, &path, a.parents)?;
        }
        Ok(())
    })
}

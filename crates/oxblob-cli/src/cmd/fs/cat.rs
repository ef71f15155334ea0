//! `oxblob cat IMAGE PATH...`.

use super::{ops, with_fs, ImageOpts, Target};
use crate::error::CliResult;
use clap::Args;

/// `oxblob cat`.
#[derive(Args, Debug)]
pub struct CatArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// IMAGE PATH...
    #[arg(value_name = "IMAGE PATH...")]
    pub args: Vec<String>,
}

/// Runs `oxblob cat` (read-only mount).
pub fn run(a: CatArgs) -> CliResult<()> {
    let t = Target::new("cat", a.image, a.args, 1, usize::MAX, "IMAGE PATH...")?;
    with_fs(&t, true, |fs, out| {
        for p in &t.rest {
            let path = ops::resolve("/", p).map_err(|e| super::fs_err("cannot open", p, &e))?;
            ops::cat(fs, out, &path)?;
        }
        Ok(())
    })
}

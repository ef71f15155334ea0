//! `oxblob mv IMAGE SRC DST`.

use super::{ops, with_fs, ImageOpts, Target};
use crate::error::CliResult;
use clap::Args;

/// `oxblob mv`.
#[derive(Args, Debug)]
pub struct MvArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// IMAGE SRC DST (into DST if it is an existing directory). One transaction: atomic.
    #[arg(value_name = "IMAGE SRC DST")]
    pub args: Vec<String>,
}

/// Runs `oxblob mv`.
pub fn run(a: MvArgs) -> CliResult<()> {
    let t = Target::new("mv", a.image, a.args, 2, 2, "IMAGE SRC DST")?;
    let (src, dst) = (&t.rest[0], &t.rest[1]);
    with_fs(&t, false, |fs, _| {
        let s = ops::resolve("/", src).map_err(|e| super::fs_err("cannot move", src, &e))?;
        let d = ops::resolve("/", dst).map_err(|e| super::fs_err("cannot move to", dst, &e))?;
        ops::mv(fs, &s, &d)
    })
}

//! `oxblob stat IMAGE PATH [--json]`.

use super::{ops, with_fs, ImageOpts, Target};
use crate::error::CliResult;
use clap::Args;

/// `oxblob stat`.
#[derive(Args, Debug)]
pub struct StatArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Print one JSON object (path, type, ino, size, allocated_bytes, mtime_ns, ctime_ns).
    #[arg(long)]
    pub json: bool,
    /// IMAGE PATH
    #[arg(value_name = "IMAGE PATH")]
    pub args: Vec<String>,
}

/// Runs `oxblob stat` (read-only mount).
pub fn run(a: StatArgs) -> CliResult<()> {
    let t = Target::new("stat", a.image, a.args, 1, 1, "IMAGE PATH")?;
    with_fs(&t, true, |fs, out| {
        let p = &t.rest[0];
        let path = ops::resolve("/", p).map_err(|e| super::fs_err("cannot stat", p, &e))?;
        ops::stat(fs, out, &path, a.json)
    })
}

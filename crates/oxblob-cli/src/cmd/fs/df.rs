//! `oxblob df IMAGE [--json]`.

use super::{ops, with_fs, ImageOpts, Target};
use crate::error::CliResult;
use clap::Args;

/// `oxblob df`.
#[derive(Args, Debug)]
pub struct DfArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Print one JSON object (total_bytes, used_bytes, free_bytes, files, cluster_size).
    #[arg(long)]
    pub json: bool,
    /// IMAGE
    #[arg(value_name = "IMAGE")]
    pub args: Vec<String>,
}

/// Runs `oxblob df` (read-only mount).
pub fn run(a: DfArgs) -> CliResult<()> {
    let t = Target::new("df", a.image, a.args, 0, 0, "IMAGE")?;
    with_fs(&t, true, |fs, out| ops::df(fs, out, &t.name, a.json))
}

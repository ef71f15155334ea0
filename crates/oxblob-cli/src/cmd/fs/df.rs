//! `oxblob df IMAGE [--json]`.

use super::{ops, with_fs, ImageOpts, Target};
use crate::error::CliResult;
use clap::Args;

/// `oxblob df`.
#[derive(Args, Debug)]
#[command(
    after_help = "Meta% is the metadata (inodes, names, extents) against the most it may grow \
to, a quarter of the metadata region: at 100% creates fail with 'No space left on device' \
while deletes still work. More room takes a lower --md-fraction at mkfs."
)]
pub struct DfArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Print one JSON object (total_bytes, used_bytes, free_bytes, files, cluster_size,
    /// metadata_used_bytes, metadata_limit_bytes).
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

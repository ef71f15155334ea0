//! `oxblob cp IMAGE [-r] SRC... DST`: paths inside the image start with `:`.

use super::{ops, with_fs, ImageOpts, Target};
use crate::error::CliResult;
use clap::Args;

const EXAMPLES: &str = "Examples:
  oxblob cp disk.img notes.txt :/docs/            host -> image (into /docs)
  oxblob cp disk.img :/docs/notes.txt ./out.txt   image -> host
  oxblob cp disk.img :/a :/b                      image -> image
  oxblob cp disk.img -r ./docs :/                 a directory tree, host -> image
  oxblob cp disk.img -r :/docs ./restored         a directory tree, image -> host";

/// `oxblob cp`.
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct CpArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Copy directories recursively.
    #[arg(short = 'r', short_alias = 'R', long)]
    pub recursive: bool,
    /// IMAGE SRC... DST. A path starting with ':' is inside the image (`:/docs/a.txt`); others
    /// are on the host. Into DST when it is a directory (or ends with '/').
    #[arg(value_name = "IMAGE SRC... DST")]
    pub args: Vec<String>,
}

/// Runs `oxblob cp`. Files are streamed in 4 MiB chunks; large copies show a progress bar on
/// stderr when it is a terminal. The mount is read-only when nothing is written to the image.
pub fn run(a: CpArgs) -> CliResult<()> {
    let t = Target::new(
        "cp",
        a.image,
        a.args,
        2,
        usize::MAX,
        "IMAGE [-r] SRC... DST",
    )?;
    let mut ends = Vec::new();
    for arg in &t.rest {
        ends.push(ops::endpoint(arg, "/")?);
    }
    let dst_arg = t.rest.back().cloned().unwrap_or_default();
    let Some(dst) = ends.pop() else {
        return Ok(());
    };
    let read_only = matches!(dst, ops::Endpoint::Host(_));
    let dst_is_dir = dst_arg.ends_with('/');
    with_fs(&t, read_only, |fs, _| {
        ops::copy(fs, &ends, &dst, a.recursive, dst_is_dir).map(|_| ())
    })
}

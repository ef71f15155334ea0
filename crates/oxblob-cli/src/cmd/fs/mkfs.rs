//! `oxblob mkfs IMAGE [--size SIZE] [--cluster-size SIZE] [--md-fraction N] [--force]`.

use super::{line, to_json, ImageOpts, Target};
use crate::error::{CliError, CliResult};
use crate::size::{format_size, parse_nonzero_size};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use oxblob_bdev::{blocking, BlockDevice, FileOptions};
use oxblob_blobfs::{BlobFs, MkfsOptions, MountOptions, DEFAULT_MD_FRACTION};
use oxblob_format::superblock::SUPERBLOCK_MAGIC;
use oxblob_format::Superblock;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

const EXAMPLES: &str = "Examples:
  oxblob mkfs disk.img --size 4GiB          create a 4 GiB image file and format it
  oxblob mkfs disk.img --force              reformat an existing image (its data is lost)
  oxblob mkfs disk.img --size 8GiB --preallocate   write the whole image once (no sparse holes)
  oxblob mkfs /dev/nvme0n1 --cluster-size 4MiB --md-fraction 4";

/// `oxblob mkfs`.
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct MkfsArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Create the image file if it is missing and grow it to SIZE (e.g. 4GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_nonzero_size)]
    pub size: Option<u64>,
    /// Cluster size (power of two, 64KiB..256MiB).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_nonzero_size)]
    pub cluster_size: u64,
    /// The metadata region is 1/N of the device (N=8: about 100,000 small files per 4 GiB;
    /// lower N for millions of files).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MD_FRACTION,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub md_fraction: u64,
    /// Overwrite an existing oxblob image.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Write zeroes over the whole device before formatting. An image file then has every
    /// block allocated on the host file system (like qemu-img's preallocation=full), so no
    /// later write pays for a host block allocation and a flush is only a device flush.
    #[arg(long)]
    pub preallocate: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// IMAGE
    #[arg(value_name = "IMAGE")]
    pub args: Vec<String>,
}

/// The bstype of an existing oxblob store on `dev`, if either superblock slot has the magic.
fn existing_store(dev: &Arc<dyn BlockDevice>) -> CliResult<Option<String>> {
    let mut ch = dev
        .channel()
        .map_err(|e| CliError::new("reading the superblock", e))?;
    if dev.info().size_bytes() < 8192 {
        return Ok(None);
    }
    let buf = blocking::read(ch.as_mut(), 0, 8192)
        .map_err(|e| CliError::new("reading the superblock", e))?;
    for slot in buf.as_slice().chunks(4096) {
        if slot.starts_with(&SUPERBLOCK_MAGIC) {
            let tag = Superblock::decode(slot)
                .map(|sb| {
                    String::from_utf8_lossy(&sb.bstype)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default();
            return Ok(Some(tag));
        }
    }
    Ok(None)
}

/// Writes zeroes over all of `dev` (1 MiB writes, 8 in flight), with a progress bar on a
/// terminal, then flushes.
pub(crate) fn preallocate(
    dev: &Arc<dyn BlockDevice>,
    show: bool,
) -> Result<(), oxblob_bdev::BdevError> {
    use oxblob_bdev::{IoBuf, IoOp};
    let size = dev.info().size_bytes();
    let bar = (show && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(size);
        b.set_style(
            ProgressStyle::with_template("preallocating {bar:30} {bytes}/{total_bytes} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let mut ch = dev.channel()?;
    const PIECE: u64 = 1 << 20;
    let mut next = 0u64;
    let mut in_flight = 0usize;
    let mut out = Vec::new();
    let mut first_err = None;
    while next < size || in_flight > 0 {
        while first_err.is_none() && next < size && in_flight < 8 {
            let n = PIECE.min(size - next);
            let op = IoOp::Write {
                offset: next,
                buf: IoBuf::zeroed(n as usize),
            };
            match ch.submit(next, op) {
                Ok(()) => {
                    next += n;
                    in_flight += 1;
                }
                Err(r) => {
                    first_err = Some(r.error);
                    next = size;
                }
            }
        }
        if in_flight == 0 {
            break;
        }
        out.clear();
        ch.poll(&mut out, 1)?;
        for c in out.drain(..) {
            in_flight -= 1;
            if let Err(e) = c.result {
                first_err.get_or_insert(e);
                next = size;
            }
            if let Some(b) = &bar {
                b.inc(PIECE);
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    blocking::flush(ch.as_mut())
}

/// Runs `oxblob mkfs`.
pub fn run(a: MkfsArgs) -> CliResult<()> {
    let t = Target::new(
        "mkfs",
        a.image,
        a.args,
        0,
        0,
        "IMAGE [--size SIZE] [--cluster-size SIZE] [--force]",
    )?;
    let what = format!("mkfs {}", t.name);
    let dev = match (a.size, &t.dev.dev) {
        (Some(s), Some(spec)) => {
            let opts = FileOptions {
                create_size: Some(s),
                ..Default::default()
            };
            oxblob_bdev::spec::open_with(spec, &opts)
                .map_err(|e| CliError::new(format!("opening device '{spec}'"), e))?
        }
        (Some(_), None) => {
            return Err(CliError::new(
                &what,
                "--size creates an image file; it cannot be used with --config",
            ))
        }
        (None, _) => t.dev.open()?,
    };
    if !a.force {
        if let Some(tag) = existing_store(&dev)? {
            let kind = if tag == oxblob_blobfs::BSTYPE {
                "an oxblob file system".to_string()
            } else {
                format!("an oxblob blobstore (type '{tag}')")
            };
            return Err(CliError::new(
                &what,
                format!("the device already holds {kind}; use --force to overwrite it"),
            ));
        }
    }
    let info = dev.info().clone();
    let show = !a.json;
    if a.preallocate {
        preallocate(&dev, show).map_err(|e| CliError::new(format!("{what}: preallocating"), e))?;
    }
    if show {
        print!("Initializing filesystem on bdev {}...", info.name);
        let _ = std::io::stdout().flush();
    }
    let spinner = (std::io::stderr().is_terminal() && info.size_bytes() >= 1 << 30).then(|| {
        let s = ProgressBar::new_spinner();
        s.set_style(
            ProgressStyle::with_template("{spinner} formatting {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        s.set_message(format_size(info.size_bytes()));
        s.enable_steady_tick(Duration::from_millis(100));
        s
    });
    let opts = MkfsOptions {
        cluster_size: a.cluster_size,
        md_fraction: a.md_fraction,
        ..Default::default()
    };
    let r = BlobFs::mkfs(Arc::clone(&dev), opts).and_then(|()| {
        BlobFs::mount(
            Arc::clone(&dev),
            MountOptions {
                read_only: true,
                ..Default::default()
            },
        )
    });
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let fs = r.map_err(|e| {
        if show {
            println!("failed.");
        }
        CliError::new(&what, e.detail)
    })?;
    let st = fs.statfs();
    let md = fs.store().superblock();
    let un = fs.unmount();
    let st = st.map_err(|e| CliError::new(&what, e.detail))?;
    let md_bytes = md.map(|sb| sb.md_page_count * 4096).unwrap_or(0);
    un.map_err(|e| CliError::new(&what, e.detail))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        return line(
            &mut out,
            &to_json(&json!({
                "bdev": info.name,
                "size_bytes": info.size_bytes(),
                "cluster_size": st.cluster_size,
                "data_bytes": st.total_bytes,
                "clusters": st.total_bytes / st.cluster_size,
                "free_bytes": st.free_bytes,
                "md_bytes": md_bytes,
            }))?,
        );
    }
    line(&mut out, "done.")?;
    line(
        &mut out,
        &format!(
            "  size:         {} ({} bytes)\n  cluster size: {}\n  data:         {} ({} clusters)\n  free:         {}\n  metadata:     {} (1/{} of the device)",
            format_size(info.size_bytes()),
            info.size_bytes(),
            format_size(st.cluster_size),
            format_size(st.total_bytes),
            st.total_bytes / st.cluster_size,
            format_size(st.free_bytes),
            format_size(md_bytes),
            a.md_fraction
        ),
    )
}

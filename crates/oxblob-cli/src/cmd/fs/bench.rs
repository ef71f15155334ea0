//! `oxblob bench meta` and `oxblob bench fs`: the file system's metadata and data paths.
//! Engines in [`crate::meta_bench`]. Both re-format the device.

use crate::device_args::DeviceArgs;
use crate::error::{CliError, CliResult};
use crate::meta_bench::{self, FsParams, Layout, MetaParams, MetaResult};
use crate::size::{format_size, parse_nonzero_size};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use oxblob_bdev::BlockDevice;
use oxblob_blobfs::MkfsOptions;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// The device of a benchmark: IMAGE, `--dev SPEC`, or `--config FILE --bdev NAME`.
#[derive(Args, Debug, Clone)]
pub struct BenchDevice {
    /// Image path or device spec (its contents are destroyed).
    #[arg(value_name = "IMAGE", conflicts_with_all = ["dev", "config"])]
    pub image: Option<String>,
    /// Device spec in place of IMAGE (e.g. `malloc:4GiB`, `file:/var/tmp/b.img?create=8GiB`).
    #[arg(long, value_name = "SPEC", conflicts_with = "config")]
    pub dev: Option<String>,
    /// SPDK-style JSON bdev config file (with --bdev).
    #[arg(long, value_name = "FILE.json", requires = "bdev")]
    pub config: Option<PathBuf>,
    /// Name of the bdev in the --config file.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub bdev: Option<String>,
}

impl BenchDevice {
    fn open(&self) -> CliResult<Arc<dyn BlockDevice>> {
        let d = DeviceArgs {
            dev: self.image.clone().or_else(|| self.dev.clone()),
            config: self.config.clone(),
            bdev: self.bdev.clone(),
        };
        if d.dev.is_none() && d.config.is_none() {
            return Err(CliError::new(
                "usage",
                "give IMAGE, --dev SPEC, or --config FILE.json --bdev NAME",
            ));
        }
        d.open()
    }
}

const META_EXAMPLES: &str = "Examples:
  oxblob bench meta --dev malloc:2GiB --files 10000,100000
  oxblob bench meta --dev malloc:6GiB --md-fraction 2 --files 1000000 --layout tree
  oxblob bench meta /var/tmp/meta.img --files 10000 --json";

/// `oxblob bench meta`.
#[derive(Args, Debug)]
#[command(after_help = META_EXAMPLES)]
pub struct MetaBenchArgs {
    /// The device (re-formatted for every run).
    #[command(flatten)]
    pub device: BenchDevice,
    /// File counts, comma separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "10000,100000",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub files: Vec<u64>,
    /// Layouts: flat (one directory) or tree (1,000 directories); repeat or comma-separate.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "flat,tree")]
    pub layout: Vec<Layout>,
    /// Random stats measured per run (with repeats, the same number at every size), and
    /// renames (at most the file count).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub sample: u64,
    /// Metadata region as 1/N of the device (millions of files need a large one).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub md_fraction: u64,
    /// Cluster size.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_nonzero_size)]
    pub cluster_size: u64,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 0x0b10_bf5e_ed00_0003)]
    pub seed: u64,
    /// Runs of every size and layout; each figure is the median over the runs. By default
    /// enough runs for about 300,000 files of work, at least 3 and at most 9 (10k files: 9,
    /// 100k and 1M: 3): a 10k-file phase lasts only milliseconds, and a 1M-file run pays for
    /// its fresh memory as much as the host happens to charge, so one run of either is noisy.
    /// The sizes' runs are interleaved (each size's spread over the whole measurement), so
    /// every size sees the same machine.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=99))]
    pub rounds: Option<u64>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs of one size: `--rounds`, or enough for about 300,000 files, 3 to 9, odd so the
/// median is one of the runs.
fn rounds_for(files: u64, rounds: Option<u64>) -> u64 {
    rounds.unwrap_or_else(|| {
        let r = 300_000u64.div_ceil(files.max(1)).clamp(3, 9);
        r | 1
    })
}

fn bar() -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(1);
        b.set_style(
            ProgressStyle::with_template("{msg:>28} [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    })
}

fn k(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Runs `oxblob bench meta`.
pub fn run_meta(a: MetaBenchArgs) -> CliResult<()> {
    let dev = a.device.open()?;
    // Every block written once before the first size: a RAM device's memory (or an image
    // file's blocks) is then in place for every run, so the first size does not pay the page
    // faults (or host block allocations) the later ones skip.
    super::mkfs::preallocate(&dev, !a.json)
        .map_err(|e| CliError::new("bench meta: writing the device once", e))?;
    let pb = bar();
    let mut results: Vec<MetaResult> = Vec::new();
    for &layout in &a.layout {
        // The sizes' runs are interleaved, each size's spread evenly over the whole layout's
        // time (with 9 runs at 10k and 3 at 1M: three 10k runs, then a 1M run, and so on), so
        // that every size sees the machine as it is during the whole measurement: a 10k run
        // lasts milliseconds, and all of them back to back would sample one moment of a
        // shared host against minutes of 1M runs.
        let rounds: Vec<u64> = a.files.iter().map(|&n| rounds_for(n, a.rounds)).collect();
        let slots = rounds.iter().copied().max().unwrap_or(1);
        let mut runs: Vec<Vec<MetaResult>> = vec![Vec::new(); a.files.len()];
        for slot in 0..slots {
            for (i, &n) in a.files.iter().enumerate() {
                let r = rounds[i];
                // Run k of r happens in the slot where (k + 1) * slots / r is first reached.
                if (slot + 1) * r / slots == slot * r / slots {
                    continue;
                }
                let p = MetaParams {
                    files: n,
                    layout,
                    sample: a.sample,
                    mkfs: MkfsOptions {
                        cluster_size: a.cluster_size,
                        md_fraction: a.md_fraction,
                        ..Default::default()
                    },
                    seed: a.seed,
                };
                let label = format!("{n} {layout:?}").to_lowercase();
                let k = runs[i].len() + 1;
                let mut tick = |phase: &str, done: u64, total: u64| {
                    if let Some(b) = &pb {
                        b.set_message(format!("{label} {phase} {k}/{r}"));
                        b.set_length(total.max(1));
                        b.set_position(done);
                    }
                };
                let res = meta_bench::run_meta(&dev, &p, &mut tick)
                    .map_err(|e| CliError::new(format!("bench meta ({n} files, {label})"), e))?;
                runs[i].push(res);
            }
        }
        for r in &runs {
            results.push(meta_bench::median(r));
        }
    }
    if let Some(b) = pb {
        b.finish_and_clear();
    }
    // Scaling: each rate at the largest count over the same rate at the smallest, per layout.
    let mut scaling = Vec::new();
    for &layout in &a.layout {
        let rs: Vec<&MetaResult> = results.iter().filter(|r| r.layout == layout).collect();
        let (Some(lo), Some(hi)) = (
            rs.iter().min_by_key(|r| r.files),
            rs.iter().max_by_key(|r| r.files),
        ) else {
            continue;
        };
        if lo.files == hi.files {
            continue;
        }
        let f = |h: f64, l: f64| h / l.max(1e-9);
        // What the ratio hides: the time each operation (readdir: each entry) takes more at
        // the largest count than at the smallest, in nanoseconds. A structure whose cost does
        // not grow with the count still adds the memory misses of a working set that no
        // longer fits the CPU caches; this shows how many.
        let added = |h: f64, l: f64| 1e9 / h.max(1e-9) - 1e9 / l.max(1e-9);
        scaling.push(json!({
            "layout": layout,
            "from_files": lo.files,
            "to_files": hi.files,
            "create": f(hi.create_ops, lo.create_ops),
            "stat": f(hi.stat_ops, lo.stat_ops),
            "readdir": f(hi.readdir_entries, lo.readdir_entries),
            "rename": f(hi.rename_ops, lo.rename_ops),
            "delete": f(hi.delete_ops, lo.delete_ops),
            "added_ns": {
                "create": added(hi.create_ops, lo.create_ops),
                "stat": added(hi.stat_ops, lo.stat_ops),
                "readdir": added(hi.readdir_entries, lo.readdir_entries),
                "rename": added(hi.rename_ops, lo.rename_ops),
                "delete": added(hi.delete_ops, lo.delete_ops),
            },
        }));
    }
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock, s: String| {
        writeln!(out, "{s}").map_err(|e| CliError::new("writing the output", e))
    };
    if a.json {
        let v = json!({ "results": results, "scaling": scaling, "md_fraction": a.md_fraction });
        return w(&mut out, super::to_json(&v)?);
    }
    w(
        &mut out,
        format!(
            "{:>9} {:>6} {:>9} {:>9} {:>11} {:>9} {:>9} {:>11} {:>11} {:>4}",
            "files",
            "layout",
            "create/s",
            "stat/s",
            "readdir e/s",
            "rename/s",
            "delete/s",
            "mount clean",
            "mount crash",
            "runs"
        ),
    )?;
    for r in &results {
        w(
            &mut out,
            format!(
                "{:>9} {:>6} {:>9} {:>9} {:>11} {:>9} {:>9} {:>9.1}ms {:>9.1}ms {:>4}",
                r.files,
                format!("{:?}", r.layout).to_lowercase(),
                k(r.create_ops),
                k(r.stat_ops),
                k(r.readdir_entries),
                k(r.rename_ops),
                k(r.delete_ops),
                r.mount_clean_ms,
                r.mount_crash_ms,
                r.rounds
            ),
        )?;
    }
    for s in &scaling {
        w(
            &mut out,
            format!(
                "scaling {} {} -> {} files (1.00 = flat; target >= 0.50): create {:.2}  stat {:.2}  readdir {:.2}  rename {:.2}  delete {:.2}",
                s["layout"].as_str().unwrap_or(""),
                s["from_files"],
                s["to_files"],
                s["create"].as_f64().unwrap_or(0.0),
                s["stat"].as_f64().unwrap_or(0.0),
                s["readdir"].as_f64().unwrap_or(0.0),
                s["rename"].as_f64().unwrap_or(0.0),
                s["delete"].as_f64().unwrap_or(0.0),
            ),
        )?;
        let ns = |k: &str| s["added_ns"][k].as_f64().unwrap_or(0.0);
        w(
            &mut out,
            format!(
                "  time added per operation (readdir: per entry): create {:+.0} ns  stat {:+.0} ns  readdir {:+.1} ns  rename {:+.0} ns  delete {:+.0} ns",
                ns("create"),
                ns("stat"),
                ns("readdir"),
                ns("rename"),
                ns("delete"),
            ),
        )?;
    }
    Ok(())
}

/// `oxblob bench fs`.
#[derive(Args, Debug)]
pub struct FsBenchArgs {
    /// The device (re-formatted).
    #[command(flatten)]
    pub device: BenchDevice,
    /// File size (and size of the raw range).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_nonzero_size)]
    pub size: u64,
    /// Request size of the sequential patterns.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_nonzero_size)]
    pub seq_bs: u64,
    /// Request size of the random patterns.
    #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = parse_nonzero_size)]
    pub rand_bs: u64,
    /// Seconds per random pattern.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub seconds: f64,
    /// Cluster size.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_nonzero_size)]
    pub cluster_size: u64,
    /// Seed of the random offsets.
    #[arg(long, default_value_t = 0x0b10_bf5e_ed00_0004)]
    pub seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `oxblob bench fs`.
pub fn run_fs(a: FsBenchArgs) -> CliResult<()> {
    let dev = a.device.open()?;
    let bs_ok = |b: u64| b % 4096 == 0 && b <= a.size;
    if !bs_ok(a.seq_bs) || !bs_ok(a.rand_bs) || a.seconds.is_nan() || a.seconds <= 0.0 {
        return Err(CliError::new(
            "bench fs",
            "--seq-bs and --rand-bs must be multiples of 4 KiB no larger than --size; --seconds > 0",
        ));
    }
    let p = FsParams {
        size: a.size / a.seq_bs * a.seq_bs,
        seq_bs: a.seq_bs as usize,
        rand_bs: a.rand_bs as usize,
        seconds: a.seconds,
        mkfs: MkfsOptions {
            cluster_size: a.cluster_size,
            ..Default::default()
        },
        seed: a.seed,
    };
    let pb = bar();
    let mut tick = |phase: &str, done: u64, total: u64| {
        if let Some(b) = &pb {
            b.set_message(phase.to_string());
            b.set_length(total.max(1));
            b.set_position(done);
        }
    };
    let cases =
        meta_bench::run_fs(&dev, &p, &mut tick).map_err(|e| CliError::new("bench fs", e))?;
    if let Some(b) = pb {
        b.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock, s: String| {
        writeln!(out, "{s}").map_err(|e| CliError::new("writing the output", e))
    };
    if a.json {
        let v = json!({ "size": p.size, "cases": cases, "device": dev.info().name });
        return w(&mut out, super::to_json(&v)?);
    }
    w(
        &mut out,
        format!(
            "file of {} through blobfs vs the raw device range (QD1, one thread)",
            format_size(p.size)
        ),
    )?;
    w(
        &mut out,
        format!(
            "{:>10} {:>7} {:>12} {:>12} {:>10} {:>10} {:>6}",
            "rw", "bs", "blobfs MiB/s", "raw MiB/s", "blobfs IOPS", "raw IOPS", "ratio"
        ),
    )?;
    for c in &cases {
        w(
            &mut out,
            format!(
                "{:>10} {:>7} {:>12.1} {:>12.1} {:>10} {:>10} {:>6.2}",
                c.rw,
                format_size(c.bs as u64),
                c.fs_mib_s,
                c.raw_mib_s,
                k(c.fs_iops),
                k(c.raw_iops),
                c.ratio
            ),
        )?;
    }
    Ok(())
}

//! `oxblob bench ...`: benchmarks. Today: `oxblob bench bdev`, the raw block device.

use crate::bdev_bench::{self, BenchParams, BenchReport, Pattern, Tick};
use crate::device_args::DeviceArgs;
use crate::error::{CliError, CliResult};
use crate::size::{format_size, parse_nonzero_size};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// `oxblob bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to benchmark.
    #[command(subcommand)]
    pub target: BenchTarget,
}

/// The layers that can be benchmarked.
#[derive(Subcommand, Debug)]
pub enum BenchTarget {
    /// Raw block device: keeps QD requests in flight per thread and reports IOPS, MiB/s and
    /// latency (mean, p99), like fio with the io_uring engine. Write patterns overwrite the
    /// device's contents.
    #[command(after_help = BDEV_EXAMPLES)]
    Bdev(BdevBenchArgs),
    /// Blobstore: random I/O through a blob vs the raw device (ratio), metadata operations per
    /// second (--meta), or load time (--load). Re-initializes the device.
    Blob(super::bench_blob::BlobBenchArgs),
    /// File system metadata: create, stat, readdir, rename and delete per second with N files
    /// (flat and in 1,000 directories), and mount time clean and after a crash; per layout,
    /// each rate at the largest N over the smallest, and the time each operation adds.
    /// Re-formats the device.
    Meta(super::fs::bench::MetaBenchArgs),
    /// File system data: sequential and random I/O on a blobfs file vs the raw device range
    /// (ratio). Re-formats the device.
    Fs(super::fs::bench::FsBenchArgs),
}

const BDEV_EXAMPLES: &str = "Examples:
  oxblob bench bdev --dev malloc:1GiB
  oxblob bench bdev --dev file:/var/tmp/disk.img --rw randwrite --bs 4k --qd 32 --seconds 10
  oxblob bench bdev --config bdevs.json --bdev Disk0 --rw read --bs 128k --qd 8 --json";

/// `oxblob bench bdev`.
#[derive(Args, Debug)]
pub struct BdevBenchArgs {
    /// The device to benchmark.
    #[command(flatten)]
    pub device: DeviceArgs,

    /// Access pattern.
    #[arg(long, value_enum, default_value = "randread")]
    pub rw: Pattern,

    /// Bytes per request (k, M, G are powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "4k", value_parser = parse_nonzero_size)]
    pub bs: u64,

    /// Requests kept in flight per thread.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub qd: u32,

    /// Measured run time in seconds (after the warm-up).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_seconds)]
    pub seconds: f64,

    /// Warm-up time in seconds, excluded from the results.
    #[arg(long, value_name = "SECS", default_value_t = 0.5, value_parser = parse_warmup)]
    pub warmup: f64,

    /// Worker threads; each gets its own I/O channel.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// Bytes of the device to address, from offset 0 (default: the whole device).
    #[arg(long, value_name = "SIZE", value_parser = parse_nonzero_size)]
    pub span: Option<u64>,

    /// Seed of the random offset generator.
    #[arg(long, default_value_t = 0x0b10_b5ee_d000_0001)]
    pub seed: u64,

    /// Print one JSON object on stdout instead of the readable report.
    #[arg(long)]
    pub json: bool,
}

fn parse_secs(text: &str, allow_zero: bool) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    let ok = v.is_finite() && v <= 86_400.0 && if allow_zero { v >= 0.0 } else { v > 0.0 };
    if ok {
        Ok(v)
    } else if allow_zero {
        Err(format!("'{text}': must be between 0 and 86400 seconds"))
    } else {
        Err(format!(
            "'{text}': must be more than 0 and at most 86400 seconds"
        ))
    }
}

pub(crate) fn parse_seconds(text: &str) -> Result<f64, String> {
    parse_secs(text, false)
}

pub(crate) fn parse_warmup(text: &str) -> Result<f64, String> {
    parse_secs(text, true)
}

/// Runs `oxblob bench ...`.
pub fn run(args: BenchArgs) -> CliResult<()> {
    match args.target {
        BenchTarget::Bdev(a) => run_bdev(a),
        BenchTarget::Blob(a) => super::bench_blob::run(a),
        BenchTarget::Meta(a) => super::fs::bench::run_meta(a),
        BenchTarget::Fs(a) => super::fs::bench::run_fs(a),
    }
}

fn run_bdev(a: BdevBenchArgs) -> CliResult<()> {
    let dev = a.device.open()?;
    let params = BenchParams {
        pattern: a.rw,
        bs: a.bs,
        qd: a.qd as usize,
        threads: a.threads as usize,
        duration: Duration::from_secs_f64(a.seconds),
        warmup: Duration::from_secs_f64(a.warmup),
        span: a.span,
        seed: a.seed,
    };
    let what = format!("benchmarking device {}", a.device.describe());
    let result = if std::io::stderr().is_terminal() {
        let bar = progress_bar(&params);
        let mut last = (Duration::ZERO, 0u64);
        let r = bdev_bench::run(dev.as_ref(), &params, &mut |t: Tick| {
            bar.set_position(t.elapsed.as_millis() as u64);
            let dt = (t.elapsed - last.0).as_secs_f64();
            if dt > 0.0 {
                bar.set_message(format!(
                    "{} IOPS",
                    human_count((t.ios - last.1) as f64 / dt)
                ));
            }
            last = (t.elapsed, t.ios);
        });
        bar.finish_and_clear();
        r
    } else {
        bdev_bench::run(dev.as_ref(), &params, &mut |_| {})
    };
    dev.close();
    let report = result.map_err(|e| CliError::new(what, e))?;
    let text = if a.json {
        serde_json::to_string(&report)
            .map_err(|e| CliError::new("formatting the JSON report", e))?
    } else {
        human_report(&report, params.warmup)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new("writing the report", e))
}

fn progress_bar(p: &BenchParams) -> ProgressBar {
    let bar = ProgressBar::new((p.warmup + p.duration).as_millis() as u64);
    let style = ProgressStyle::with_template(
        "{spinner} {prefix} [{bar:30}] {elapsed_precise} / {len_secs}  {msg}",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style.with_key(
            "len_secs",
            |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", st.len().unwrap_or(0) as f64 / 1000.0);
            },
        ));
    }
    bar.set_prefix(format!(
        "{} bs={} qd={}",
        p.pattern.name(),
        format_size(p.bs),
        p.qd
    ));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The readable report: three labelled lines.
pub fn human_report(r: &BenchReport, warmup: Duration) -> String {
    let io = if r.direct_io {
        "direct I/O"
    } else {
        "buffered/RAM"
    };
    format!(
        "device   {} ({}, {io}), span {}\n\
         job      {} bs={} qd={} threads={}, {:.2} s measured after {:.2} s warm-up\n\
         result   {} IOPS  {:.1} MiB/s  lat mean {:.1} us  p50 {:.1} us  p99 {:.1} us  \
         max {:.1} us  ({} I/Os)",
        r.device,
        r.backend,
        format_size(r.span),
        r.rw.name(),
        format_size(r.bs),
        r.qd,
        r.threads,
        r.seconds,
        warmup.as_secs_f64(),
        human_count(r.iops),
        r.mib_s,
        r.lat_mean_us,
        r.lat_p50_us,
        r.lat_p99_us,
        r.lat_max_us,
        r.ios
    )
}

pub(crate) fn human_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn seconds_parse_and_reject() {
        assert_eq!(parse_seconds("1"), Ok(1.0));
        assert_eq!(parse_seconds("0.25"), Ok(0.25));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("nan").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("ten").is_err());
        assert_eq!(parse_warmup("0"), Ok(0.0));
        assert!(parse_warmup("-0.5").is_err());
    }

    #[test]
    fn counts_are_readable() {
        assert_eq!(human_count(812_345.0), "812.3k");
        assert_eq!(human_count(1_234_567.0), "1.23M");
        assert_eq!(human_count(950.0), "950");
    }

    #[test]
    fn bench_bdev_arguments_parse() {
        let cli = crate::cmd::Cli::try_parse_from([
            "oxblob",
            "bench",
            "bdev",
            "--dev",
            "malloc:1G",
            "--rw",
            "write",
            "--bs",
            "128k",
            "--qd",
            "8",
            "--threads",
            "2",
            "--span",
            "64M",
            "--json",
        ])
        .unwrap();
        let crate::cmd::Command::Bench(BenchArgs {
            target: BenchTarget::Bdev(a),
        }) = cli.command
        else {
            unreachable!("parsed as another command")
        };
        assert_eq!(a.device.dev.as_deref(), Some("malloc:1G"));
        assert_eq!(a.rw, Pattern::Write);
        assert_eq!(a.bs, 128 * 1024);
        assert_eq!(a.qd, 8);
        assert_eq!(a.threads, 2);
        assert_eq!(a.span, Some(64 << 20));
        assert!(a.json);
        assert_eq!(a.seconds, 10.0);
    }

    #[test]
    fn device_selection_is_exclusive_and_required() {
        let parse = |extra: &[&str]| {
            let mut v = vec!["oxblob", "bench", "bdev"];
            v.extend_from_slice(extra);
            crate::cmd::Cli::try_parse_from(v)
        };
        assert!(parse(&[]).is_err(), "a device is required");
        assert!(parse(&["--dev", "malloc:1M", "--config", "c.json", "--bdev", "x"]).is_err());
        assert!(
            parse(&["--config", "c.json"]).is_err(),
            "--config needs --bdev"
        );
        assert!(parse(&["--bdev", "x"]).is_err(), "--bdev needs --config");
        assert!(parse(&["--config", "c.json", "--bdev", "x"]).is_ok());
        assert!(parse(&["--dev", "malloc:1M", "--qd", "0"]).is_err());
        assert!(parse(&["--dev", "malloc:1M", "--bs", "0"]).is_err());
    }
}

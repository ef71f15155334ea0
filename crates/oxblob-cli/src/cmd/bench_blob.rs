//! `oxblob bench blob`: the blobstore's data path against the raw device, metadata operations
//! per second (`--meta N`), and load time (`--load N`). Engines in [`crate::blob_bench`].

use super::bench::{human_count, parse_seconds, parse_warmup};
use crate::bdev_bench::Pattern;
use crate::blob_bench::{
    self, DataParams, DataReport, LoadReport, MetaReport, Phase, QdParams, QdResult,
};
use crate::device_args::DeviceArgs;
use crate::error::{CliError, CliResult};
use crate::size::{format_size, parse_nonzero_size};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// `oxblob bench blob`.
#[derive(Args, Debug)]
pub struct BlobBenchArgs {
    /// The device (its contents are destroyed: every mode starts with a fresh init).
    #[command(flatten)]
    pub device: DeviceArgs,

    /// Access pattern of the data-path run.
    #[arg(long, value_enum, default_value = "randread")]
    pub rw: Pattern,

    /// Bytes per request.
    #[arg(long, value_name = "SIZE", default_value = "4k", value_parser = parse_nonzero_size)]
    pub bs: u64,

    /// Requests kept in flight (one thread).
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub qd: u32,

    /// Measured seconds of each run (blob, then raw).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_seconds)]
    pub seconds: f64,

    /// Warm-up seconds before each run.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_warmup)]
    pub warmup: f64,

    /// Cluster size of the store.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_nonzero_size)]
    pub cluster_size: u64,

    /// Fraction of the free clusters the benchmark blob takes.
    #[arg(long, value_name = "F", default_value_t = 0.9, value_parser = parse_fill)]
    pub fill: f64,

    /// Alternating blob/raw rounds; each run lasts --seconds, figures are summed.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Seed of the offset generator.
    #[arg(long, default_value_t = 0x0b10_b5ee_d000_0002)]
    pub seed: u64,

    /// Metadata mode: operations per second with N blobs (create + sync_md + close, xattr set
    /// + sync_md, delete).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "100000",
          conflicts_with = "load", value_parser = clap::value_parser!(u64).range(1..))]
    pub meta: Option<u64>,

    /// Load-time mode: time and I/O of loading a store with N blobs, clean and after a crash.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "100000",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub load: Option<u64>,

    /// Load-time mode: synced changes made before the simulated crash.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub changes: u64,

    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_fill(t: &str) -> Result<f64, String> {
    match t.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("'{t}': must be a fraction in (0, 1]")),
    }
}

fn bar(len: u64, prefix: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(len);
    if let Ok(s) = ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}") {
        b.set_style(s.progress_chars("=> "));
    }
    b.set_prefix(prefix.to_string());
    b.enable_steady_tick(Duration::from_millis(200));
    Some(b)
}

fn print(text: &str) -> CliResult<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{text}")
        .and_then(|()| o.flush())
        .map_err(|e| CliError::new("writing the report", e))
}

fn json<T: serde::Serialize>(v: &T) -> CliResult<String> {
    serde_json::to_string(v).map_err(|e| CliError::new("formatting the JSON report", e))
}

/// Runs `oxblob bench blob`.
pub fn run(a: BlobBenchArgs) -> CliResult<()> {
    let dev = a.device.open()?;
    let what = format!("benchmarking the blobstore on {}", a.device.describe());
    if let Some(n) = a.meta {
        let pb = bar(3 * n, "metadata ops");
        let r = blob_bench::run_meta(dev, n, &|phase, done| {
            if let Some(b) = &pb {
                b.set_position(phase as u64 * n + done);
            }
        });
        if let Some(b) = pb {
            b.finish_and_clear();
        }
        let r = r.map_err(|e| CliError::new(&what, e))?;
        return print(&if a.json { json(&r)? } else { meta_text(&r) });
    }
    if let Some(n) = a.load {
        let pb = bar(n, "setup");
        let r = blob_bench::run_load(dev, n, a.changes, &|label, done, total| {
            if let Some(b) = &pb {
                b.set_message(label.to_string());
                b.set_length(total);
                b.set_position(done);
            }
        });
        if let Some(b) = pb {
            b.finish_and_clear();
        }
        let r = r.map_err(|e| CliError::new(&what, e))?;
        return print(&if a.json { json(&r)? } else { load_text(&r) });
    }
    if !matches!(a.rw, Pattern::Randread | Pattern::Randwrite) {
        return Err(CliError::new(
            &what,
            "--rw must be randread or randwrite for the blob benchmark",
        ));
    }
    let p = DataParams {
        qd: QdParams {
            pattern: a.rw,
            bs: a.bs,
            qd: a.qd as usize,
            span: 0,
            warmup: Duration::from_secs_f64(a.warmup),
            duration: Duration::from_secs_f64(a.seconds),
            seed: a.seed,
        },
        cluster_size: a.cluster_size,
        fill: a.fill,
        rounds: a.rounds,
    };
    let pb = bar(100, "prefill");
    let r = blob_bench::run_data(dev, &p, &|phase, n| {
        if let Some(b) = &pb {
            match phase {
                Phase::Prefill => {
                    b.set_prefix("prefill");
                    b.set_message(format_size(n));
                }
                Phase::Blob | Phase::Raw => {
                    b.set_prefix(if phase == Phase::Blob { "blob" } else { "raw" });
                    b.set_message(format!("{} I/Os", human_count(n as f64)));
                }
            }
        }
    });
    if let Some(b) = pb {
        b.finish_and_clear();
    }
    let r = r.map_err(|e| CliError::new(&what, e))?;
    print(&if a.json { json(&r)? } else { data_text(&r) })
}

fn line(name: &str, q: &QdResult) -> String {
    format!(
        "{name:<6} {:>9} IOPS  {:>8.1} MiB/s  lat mean {:.1} us  p50 {:.1} us  p99 {:.1} us  \
         ({} I/Os in {:.2} s)",
        human_count(q.iops),
        q.mib_s,
        q.lat_mean_us,
        q.lat_p50_us,
        q.lat_p99_us,
        q.ios,
        q.seconds
    )
}

/// The readable data-path report.
pub fn data_text(r: &DataReport) -> String {
    format!(
        "device {} ({}, {}), cluster {}, blob of {} in {} extent(s), prefill {:.1} s\n\
         job    {} bs={} qd={} one thread, {} alternating rounds\n{}\n{}\nratio  blob/raw = {:.3}",
        r.device,
        r.backend,
        if r.direct_io {
            "direct I/O"
        } else {
            "buffered/RAM"
        },
        format_size(r.cluster_size),
        format_size(r.span),
        r.blob_extents,
        r.prefill_seconds,
        r.rw.name(),
        format_size(r.bs),
        r.qd,
        r.rounds,
        line("blob", &r.blob),
        line("raw", &r.raw),
        r.ratio
    )
}

/// The readable metadata report.
pub fn meta_text(r: &MetaReport) -> String {
    let mut t = format!("device {} ({}), {} blobs", r.device, r.backend, r.blobs);
    for p in &r.phases {
        t += &format!(
            "\n{:<36} {:>10} ops/s  ({} ops in {:.2} s)",
            p.op,
            human_count(p.ops_per_sec),
            p.ops,
            p.seconds
        );
    }
    t
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// The readable load-time report.
pub fn load_text(r: &LoadReport) -> String {
    let mut t = format!(
        "device {} ({}, {}), {} blobs, setup {:.1} s",
        r.device,
        r.backend,
        if r.direct_io {
            "direct I/O"
        } else {
            "buffered/RAM"
        },
        r.blobs,
        r.setup_seconds
    );
    for s in &r.samples {
        t += &format!(
            "\nload {:<5} {:>9.1} ms  checkpoint {}  log {} records in {} segments  \
             reads {} ({})  writes {} ({})  flushes {}",
            s.state,
            s.millis,
            mib(s.checkpoint_bytes),
            s.log_records,
            s.log_segments,
            s.io.reads,
            mib(s.io.read_bytes),
            s.io.writes,
            mib(s.io.write_bytes),
            s.io.flushes
        );
    }
    t += &format!(
        "\n(crash = {} synced xattr changes, then the store dropped without unload)",
        r.changes_before_crash
    );
    t
}

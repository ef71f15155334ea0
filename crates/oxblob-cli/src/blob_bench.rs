//! The blobstore benchmarks behind `oxblob bench blob`:
//!
//! - **Data path** ([`run_data`]): on a freshly initialized store, one thick blob filling most
//!   of it is created and prefilled; then one thread keeps `qd` requests in flight through a
//!   [`BsChannel`], and right after, the same workload (same engine, same offsets, same seed)
//!   runs on the raw device over the blob's physical range. The report gives both and the ratio.
//! - **Metadata** ([`run_meta`]): operations per second for N blobs: create + sync_md + close,
//!   xattr set + sync_md (+ close), delete.
//! - **Load time** ([`run_load`]): the time and the I/O (counted by [`CountingDevice`], a
//!   wrapper of this module) of `BlobStore::load` of a store with N blobs, clean (after
//!   `unload`) and after a crash (many synced changes, then the store dropped without unload).
//!
//! Every phase destroys what was on the device: the benchmarks start with `BlobStore::init`.
//!
//! The engine ([`run_qd`]) is generic over [`QdTarget`], so the blob and the raw device run the
//! exact same loop: fill `qd` slots, poll for at least one completion, one timestamp per batch,
//! record latencies, resubmit each buffer at a new offset.

use crate::bdev_bench::{Pattern, WyRand};
use hdrhistogram::Histogram;
use oxblob_bdev::{
    BdevError, BlockDevice, Completion, DeviceInfo, IoBuf, IoChannel, IoKind, IoOp, Rejected,
};
use oxblob_blobstore::{
    Blob, BlobStore, BsChannel, BsCompletion, BsError, CreateOptions, InitOptions, LoadOptions,
};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a blob benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobBenchError {
    /// A parameter does not fit.
    #[error("{0}")]
    Invalid(String),
    /// The blobstore failed.
    #[error("{0}")]
    Store(#[from] BsError),
    /// The raw device failed.
    #[error("{0}")]
    Device(#[from] BdevError),
}

type R<T> = Result<T, BlobBenchError>;

/// Something one thread can keep `qd` requests in flight on.
pub trait QdTarget {
    /// Submits a read or write of `buf` at `offset` (bytes, relative to the target).
    fn submit(&mut self, token: u64, write: bool, offset: u64, buf: IoBuf) -> R<()>;
    /// Reaps at least `min` completions into `out` as (token, result, buffer).
    fn poll(&mut self, out: &mut Vec<(u64, R<()>, IoBuf)>, min: usize) -> R<()>;
    /// Requests submitted and not yet reaped.
    fn in_flight(&self) -> usize;
}

/// The raw device, offset by `base` bytes.
pub struct RawTarget {
    ch: Box<dyn IoChannel>,
    base: u64,
    scratch: Vec<Completion>,
}

impl RawTarget {
    /// A target on a new channel of `dev`, addressing from byte `base`.
    pub fn new(dev: &dyn BlockDevice, base: u64) -> R<RawTarget> {
        Ok(RawTarget {
            ch: dev.channel()?,
            base,
            scratch: Vec::new(),
        })
    }
}

impl QdTarget for RawTarget {
    fn submit(&mut self, token: u64, write: bool, offset: u64, buf: IoBuf) -> R<()> {
        let offset = self.base + offset;
        let op = if write {
            IoOp::Write { offset, buf }
        } else {
            IoOp::Read { offset, buf }
        };
        self.ch.submit(token, op).map_err(|r| r.error.into())
    }

    fn poll(&mut self, out: &mut Vec<(u64, R<()>, IoBuf)>, min: usize) -> R<()> {
        self.scratch.clear();
        self.ch.poll(&mut self.scratch, min)?;
        for c in self.scratch.drain(..) {
            let buf = c.op.into_buf().unwrap_or_else(|| IoBuf::zeroed(0));
            out.push((c.token, c.result.map_err(Into::into), buf));
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.ch.in_flight()
    }
}

/// One blob through a [`BsChannel`].
pub struct BlobTarget {
    ch: BsChannel,
    blob: Blob,
    scratch: Vec<BsCompletion>,
}

impl BlobTarget {
    /// A target on a new channel of `bs`, on `blob`.
    pub fn new(bs: &BlobStore, blob: Blob) -> R<BlobTarget> {
        Ok(BlobTarget {
            ch: bs.channel()?,
            blob,
            scratch: Vec::new(),
        })
    }
}

impl QdTarget for BlobTarget {
    fn submit(&mut self, token: u64, write: bool, offset: u64, buf: IoBuf) -> R<()> {
        let r = if write {
            self.blob.submit_write(&mut self.ch, offset, buf, token)
        } else {
            self.blob.submit_read(&mut self.ch, offset, buf, token)
        };
        r.map_err(|r| r.error.into())
    }

    fn poll(&mut self, out: &mut Vec<(u64, R<()>, IoBuf)>, min: usize) -> R<()> {
        self.scratch.clear();
        self.ch.poll(&mut self.scratch, min)?;
        for c in self.scratch.drain(..) {
            let token = c.token;
            let result = c.result.clone().map_err(Into::into);
            let buf = c.into_buf().unwrap_or_else(|| IoBuf::zeroed(0));
            out.push((token, result, buf));
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.ch.in_flight()
    }
}

/// One measured run of the engine.
#[derive(Debug, Clone, Serialize)]
pub struct QdResult {
    /// Requests completed in the measured window.
    pub ios: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Requests per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// Mean latency, microseconds.
    pub lat_mean_us: f64,
    /// Median latency, microseconds.
    pub lat_p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub lat_p99_us: f64,
}

/// What [`run_qd`] runs.
#[derive(Debug, Clone)]
pub struct QdParams {
    /// Access pattern.
    pub pattern: Pattern,
    /// Bytes per request.
    pub bs: u64,
    /// Requests in flight.
    pub qd: usize,
    /// Bytes addressed from offset 0 of the target.
    pub span: u64,
    /// Warm-up, excluded.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Offset generator seed.
    pub seed: u64,
}

/// Runs `p` on `t` (one thread). `progress` is bumped with the completions seen.
pub fn run_qd_measured(t: &mut dyn QdTarget, p: &QdParams, progress: &AtomicU64) -> R<Measured> {
    let slots = p.span / p.bs;
    if slots == 0 || p.qd == 0 {
        return Err(BlobBenchError::Invalid(format!(
            "span {} holds no {}-byte request (or qd is 0)",
            p.span, p.bs
        )));
    }
    let bs = usize::try_from(p.bs)
        .map_err(|_| BlobBenchError::Invalid("request size too large".into()))?;
    let mut rng = WyRand::new(p.seed);
    let write = p.pattern.is_write();
    let mut cursor = 0u64;
    let mut next_off = move |rng: &mut WyRand| {
        let s = if p.pattern.is_random() {
            rng.below(slots)
        } else {
            let s = cursor;
            cursor = (cursor + 1) % slots;
            s
        };
        s * p.bs
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| BlobBenchError::Invalid(format!("histogram: {e}")))?;
    let mut at = vec![Instant::now(); p.qd];
    for (slot, a) in at.iter_mut().enumerate() {
        let mut b = IoBuf::zeroed(bs);
        if write {
            for c in b.chunks_exact_mut(8) {
                c.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
        }
        *a = Instant::now();
        let off = next_off(&mut rng);
        t.submit(slot as u64, write, off, b)?;
    }
    let t0 = Instant::now();
    let warm_end = t0 + p.warmup;
    let mut measuring = p.warmup.is_zero();
    let mut start = t0;
    let mut end = t0 + p.warmup + p.duration;
    let mut ios = 0u64;
    let mut comps = Vec::with_capacity(p.qd);
    let mut failure = None;
    let stop_at = loop {
        comps.clear();
        t.poll(&mut comps, 1)?;
        let now = Instant::now();
        let count = measuring;
        if !measuring && now >= warm_end {
            measuring = true;
            start = now;
            end = now + p.duration;
        }
        let stop = measuring && now >= end;
        progress.fetch_add(comps.len() as u64, Ordering::Relaxed);
        for (token, result, buf) in comps.drain(..) {
            if let Err(e) = result {
                failure = Some(e);
                continue;
            }
            let slot = token as usize;
            if count {
                let lat = now.saturating_duration_since(at[slot]);
                hist.saturating_record(lat.as_nanos().min(60_000_000_000) as u64);
                ios += 1;
            }
            if !stop && failure.is_none() {
                at[slot] = now;
                let off = next_off(&mut rng);
                t.submit(token, write, off, buf)?;
            }
        }
        if stop || failure.is_some() {
            break now;
        }
    };
    while t.in_flight() > 0 {
        comps.clear();
        let n = t.in_flight();
        t.poll(&mut comps, n)?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Measured {
        ios,
        seconds: stop_at.saturating_duration_since(start).as_secs_f64(),
        hist,
    })
}

/// Raw figures of one or more runs, merged before they are summarized.
pub struct Measured {
    /// Requests completed in the measured windows.
    pub ios: u64,
    /// Total length of the measured windows.
    pub seconds: f64,
    /// Latencies, nanoseconds.
    pub hist: Histogram<u64>,
}

impl Measured {
    /// Adds another run.
    pub fn merge(&mut self, o: &Measured) -> R<()> {
        self.ios += o.ios;
        self.seconds += o.seconds;
        self.hist
            .add(&o.hist)
            .map_err(|e| BlobBenchError::Invalid(format!("merging histograms: {e}")))
    }

    /// The summary for requests of `bs` bytes.
    pub fn result(&self, bs: u64) -> QdResult {
        let secs = self.seconds;
        let iops = if secs > 0.0 {
            self.ios as f64 / secs
        } else {
            0.0
        };
        let us = |ns: u64| ns as f64 / 1000.0;
        QdResult {
            ios: self.ios,
            seconds: secs,
            iops,
            mib_s: iops * bs as f64 / f64::from(1u32 << 20),
            lat_mean_us: if self.hist.is_empty() {
                0.0
            } else {
                self.hist.mean() / 1000.0
            },
            lat_p50_us: us(self.hist.value_at_quantile(0.5)),
            lat_p99_us: us(self.hist.value_at_quantile(0.99)),
        }
    }
}

/// Runs `p` on `t` and summarizes.
pub fn run_qd(t: &mut dyn QdTarget, p: &QdParams, progress: &AtomicU64) -> R<QdResult> {
    Ok(run_qd_measured(t, p, progress)?.result(p.bs))
}

/// What `oxblob bench blob` (data path) runs.
#[derive(Debug, Clone)]
pub struct DataParams {
    /// Pattern, request size, qd, durations, seed; `span` is ignored (the blob's size is used).
    pub qd: QdParams,
    /// Cluster size of the store.
    pub cluster_size: u64,
    /// Fraction of the free clusters the blob takes.
    pub fill: f64,
    /// Alternating rounds (blob then raw, raw then blob, ...); each run lasts the full
    /// duration and the figures are summed over the rounds.
    pub rounds: u32,
}

/// The data-path report.
#[derive(Debug, Clone, Serialize)]
pub struct DataReport {
    /// Device name.
    pub device: String,
    /// Backend.
    pub backend: String,
    /// Whether the device bypasses the page cache.
    pub direct_io: bool,
    /// Pattern.
    pub rw: Pattern,
    /// Request size.
    pub bs: u64,
    /// Queue depth.
    pub qd: usize,
    /// Alternating rounds run.
    pub rounds: u32,
    /// Cluster size.
    pub cluster_size: u64,
    /// Blob size in bytes (the span of both runs).
    pub span: u64,
    /// Extents of the blob (1 = physically contiguous).
    pub blob_extents: usize,
    /// Seconds spent on the prefill.
    pub prefill_seconds: f64,
    /// Through the blobstore.
    pub blob: QdResult,
    /// The raw device over the blob's physical range.
    pub raw: QdResult,
    /// blob IOPS / raw IOPS.
    pub ratio: f64,
}

/// Phases of a data run, for progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing the blob once.
    Prefill,
    /// The blob run.
    Blob,
    /// The raw run.
    Raw,
}

/// Runs the data-path comparison on `dev` (destroys its contents). `tick(phase, done)` is
/// called from the worker between batches with a running count (bytes for the prefill,
/// completions otherwise).
pub fn run_data(
    dev: Arc<dyn BlockDevice>,
    p: &DataParams,
    tick: &(dyn Fn(Phase, u64) + Sync),
) -> R<DataReport> {
    let info = dev.info().clone();
    let bs = BlobStore::init(
        Arc::clone(&dev),
        InitOptions {
            cluster_size: p.cluster_size,
            ..Default::default()
        },
    )?;
    let free = bs.free_clusters()?;
    let n = ((free as f64) * p.fill).floor() as u64;
    if n == 0 {
        return Err(BlobBenchError::Invalid(format!(
            "the store has {free} free clusters: too small for a blob"
        )));
    }
    let id = bs.create_blob(CreateOptions {
        num_clusters: n,
        ..Default::default()
    })?;
    let blob = bs.open_blob(id)?;
    let span = n * bs.cluster_size();
    let extents = blob.extents();
    let base = bs.superblock()?.data_first_byte
        + extents.first().map_or(0, |e| e.physical) * bs.cluster_size();
    // Prefill sequentially with 1 MiB writes at QD 8 through the blob.
    let t0 = Instant::now();
    let done = AtomicU64::new(0);
    {
        let chunk = (1u64 << 20).min(span);
        let mut t = BlobTarget::new(&bs, bs.open_blob(id)?)?;
        let pre = QdParams {
            pattern: Pattern::Write,
            bs: chunk,
            qd: 8,
            span,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(3600),
            seed: p.qd.seed ^ 0x5eed,
        };
        prefill(&mut t, &pre, &done, &|b| tick(Phase::Prefill, b))?;
    }
    blob.sync_md()?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let mut q = p.qd.clone();
    q.span = span;
    if extents.len() != 1 {
        return Err(BlobBenchError::Invalid(format!(
            "the blob has {} extents; the raw comparison needs one contiguous range",
            extents.len()
        )));
    }
    let mut blob_m: Option<Measured> = None;
    let mut raw_m: Option<Measured> = None;
    let counter = AtomicU64::new(0);
    for round in 0..p.rounds.max(1) {
        // Alternate the order so neither side always runs on a warmer (or more tired) device.
        for blob_turn in [round % 2 == 0, round % 2 == 1] {
            let m = if blob_turn {
                with_ticks(&counter, &|c| tick(Phase::Blob, c), || {
                    let mut t = BlobTarget::new(&bs, bs.open_blob(id)?)?;
                    run_qd_measured(&mut t, &q, &counter)
                })?
            } else {
                with_ticks(&counter, &|c| tick(Phase::Raw, c), || {
                    let mut t = RawTarget::new(dev.as_ref(), base)?;
                    run_qd_measured(&mut t, &q, &counter)
                })?
            };
            let slot = if blob_turn { &mut blob_m } else { &mut raw_m };
            match slot {
                Some(acc) => acc.merge(&m)?,
                None => *slot = Some(m),
            }
        }
    }
    let (Some(blob_m), Some(raw_m)) = (blob_m, raw_m) else {
        return Err(BlobBenchError::Invalid("no round ran".into()));
    };
    let (blob_r, raw_r) = (blob_m.result(q.bs), raw_m.result(q.bs));
    drop(blob);
    bs.unload()?;
    let ratio = if raw_r.iops > 0.0 {
        blob_r.iops / raw_r.iops
    } else {
        0.0
    };
    Ok(DataReport {
        device: info.name.clone(),
        backend: info.backend.clone(),
        direct_io: info.caps.direct_io,
        rw: p.qd.pattern,
        bs: p.qd.bs,
        qd: p.qd.qd,
        rounds: p.rounds.max(1),
        cluster_size: bs.cluster_size(),
        span,
        blob_extents: extents.len(),
        prefill_seconds,
        blob: blob_r,
        raw: raw_r,
        ratio,
    })
}

/// Writes the whole span once (sequential, `p.qd` in flight).
fn prefill(t: &mut dyn QdTarget, p: &QdParams, done: &AtomicU64, tick: &dyn Fn(u64)) -> R<()> {
    let total = p.span / p.bs;
    let mut rng = WyRand::new(p.seed);
    let mut next = 0u64;
    let mut comps = Vec::new();
    let bs = p.bs as usize;
    while next < total.min(p.qd as u64) {
        let mut b = IoBuf::zeroed(bs);
        for c in b.chunks_exact_mut(8) {
            c.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        t.submit(next, true, next * p.bs, b)?;
        next += 1;
    }
    let mut last = Instant::now();
    while t.in_flight() > 0 {
        comps.clear();
        t.poll(&mut comps, 1)?;
        for (_, r, buf) in comps.drain(..) {
            r?;
            let d = done.fetch_add(p.bs, Ordering::Relaxed) + p.bs;
            if next < total {
                t.submit(next, true, next * p.bs, buf)?;
                next += 1;
            }
            if last.elapsed() > Duration::from_millis(100) {
                tick(d);
                last = Instant::now();
            }
        }
    }
    Ok(())
}

/// Runs `f` while a helper thread reports `counter` through `tick` every 100 ms.
fn with_ticks<T>(counter: &AtomicU64, tick: &(dyn Fn(u64) + Sync), f: impl FnOnce() -> T) -> T {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                tick(counter.load(Ordering::Relaxed));
            }
        });
        let r = f();
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// One metadata phase.
#[derive(Debug, Clone, Serialize)]
pub struct MetaPhase {
    /// What one operation is.
    pub op: String,
    /// Operations done.
    pub ops: u64,
    /// Seconds.
    pub seconds: f64,
    /// Operations per second.
    pub ops_per_sec: f64,
}

/// The metadata report.
#[derive(Debug, Clone, Serialize)]
pub struct MetaReport {
    /// Device name.
    pub device: String,
    /// Backend.
    pub backend: String,
    /// Blobs.
    pub blobs: u64,
    /// The phases, in order.
    pub phases: Vec<MetaPhase>,
}

/// An md region big enough for `n` blobs with a small xattr each: room for the log (a
/// quarter), the checkpoint being replaced and the new one.
pub fn md_pages_for(n: u64) -> u64 {
    (n * 128 * 8 / 4096).max(4096)
}

/// Metadata operations per second with `n` blobs (destroys the device's contents). `tick`
/// gets (phase index, operations done).
pub fn run_meta(dev: Arc<dyn BlockDevice>, n: u64, tick: &dyn Fn(usize, u64)) -> R<MetaReport> {
    let info = dev.info().clone();
    let bs = BlobStore::init(
        Arc::clone(&dev),
        InitOptions {
            md_pages: Some(md_pages_for(n)),
            ..Default::default()
        },
    )?;
    let mut phases = Vec::new();
    let mut ids = Vec::with_capacity(n as usize);
    let timed = |name: &str, f: &mut dyn FnMut(u64) -> R<()>, idx: usize| -> R<MetaPhase> {
        let t0 = Instant::now();
        let mut last = t0;
        for i in 0..n {
            f(i)?;
            if last.elapsed() > Duration::from_millis(100) {
                tick(idx, i + 1);
                last = Instant::now();
            }
        }
        let s = t0.elapsed().as_secs_f64();
        Ok(MetaPhase {
            op: name.to_string(),
            ops: n,
            seconds: s,
            ops_per_sec: if s > 0.0 { n as f64 / s } else { 0.0 },
        })
    };
    phases.push(timed(
        "create + sync_md + close",
        &mut |_| {
            let id = bs.create_blob(CreateOptions::default())?;
            let b = bs.open_blob(id)?;
            b.sync_md()?;
            b.close()?;
            ids.push(id);
            Ok(())
        },
        0,
    )?);
    phases.push(timed(
        "open + xattr set + sync_md + close",
        &mut |i| {
            let b = bs.open_blob(ids[i as usize])?;
            b.set_xattr("name", format!("blob-{i:08}").as_bytes())?;
            b.sync_md()?;
            b.close()?;
            Ok(())
        },
        1,
    )?);
    phases.push(timed(
        "delete",
        &mut |i| Ok(bs.delete_blob(ids[i as usize])?),
        2,
    )?);
    bs.unload()?;
    Ok(MetaReport {
        device: info.name.clone(),
        backend: info.backend.clone(),
        blobs: n,
        phases,
    })
}

/// I/O counted by [`CountingDevice`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Reads.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Writes.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Flushes.
    pub flushes: u64,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    writes: AtomicU64,
    write_bytes: AtomicU64,
    flushes: AtomicU64,
}

/// A device wrapper that counts completed requests and bytes by kind (reads, writes, flushes).
pub struct CountingDevice {
    inner: Arc<dyn BlockDevice>,
    c: Arc<Counters>,
}

impl CountingDevice {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn BlockDevice>) -> Arc<CountingDevice> {
        Arc::new(CountingDevice {
            inner,
            c: Arc::new(Counters::default()),
        })
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            reads: l(&self.c.reads),
            read_bytes: l(&self.c.read_bytes),
            writes: l(&self.c.writes),
            write_bytes: l(&self.c.write_bytes),
            flushes: l(&self.c.flushes),
        }
    }
}

impl BlockDevice for CountingDevice {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(CountingChannel {
            inner: self.inner.channel()?,
            c: Arc::clone(&self.c),
        }))
    }

    fn close(&self) {
        self.inner.close();
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

struct CountingChannel {
    inner: Box<dyn IoChannel>,
    c: Arc<Counters>,
}

impl IoChannel for CountingChannel {
    fn submit(&mut self, token: u64, op: IoOp) -> Result<(), Rejected> {
        self.inner.submit(token, op)
    }

    fn poll(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, BdevError> {
        let start = out.len();
        let n = self.inner.poll(out, min)?;
        for c in &out[start..] {
            if c.result.is_err() {
                continue;
            }
            let len = c.op.len();
            match c.op.kind() {
                IoKind::Read => {
                    self.c.reads.fetch_add(1, Ordering::Relaxed);
                    self.c.read_bytes.fetch_add(len, Ordering::Relaxed);
                }
                IoKind::Write => {
                    self.c.writes.fetch_add(1, Ordering::Relaxed);
                    self.c.write_bytes.fetch_add(len, Ordering::Relaxed);
                }
                IoKind::Flush => {
                    self.c.flushes.fetch_add(1, Ordering::Relaxed);
                }
                IoKind::Unmap | IoKind::WriteZeroes => {}
            }
        }
        Ok(n)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

/// One measured load.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSample {
    /// `clean` or `crash`.
    pub state: String,
    /// Wall time of `BlobStore::load`, milliseconds.
    pub millis: f64,
    /// Log records replayed (from `inspect` before the load).
    pub log_records: u64,
    /// Log segments read.
    pub log_segments: u64,
    /// Checkpoint payload bytes.
    pub checkpoint_bytes: u64,
    /// The load's I/O.
    pub io: Counts,
}

/// The load-time report.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Device name.
    pub device: String,
    /// Backend.
    pub backend: String,
    /// Whether the device bypasses the page cache.
    pub direct_io: bool,
    /// Blobs in the store.
    pub blobs: u64,
    /// Synced changes made before the crash.
    pub changes_before_crash: u64,
    /// Seconds spent building the store.
    pub setup_seconds: f64,
    /// Clean load, then load after a crash.
    pub samples: Vec<LoadSample>,
}

/// Measures `load` with `n` blobs: clean (after unload), then after `changes` synced xattr
/// updates with the store dropped without unload. Destroys the device's contents.
pub fn run_load(
    dev: Arc<dyn BlockDevice>,
    n: u64,
    changes: u64,
    tick: &dyn Fn(&str, u64, u64),
) -> R<LoadReport> {
    let info = dev.info().clone();
    let t0 = Instant::now();
    let bs = BlobStore::init(
        Arc::clone(&dev),
        InitOptions {
            md_pages: Some(md_pages_for(n)),
            ..Default::default()
        },
    )?;
    // Thin blobs of 4 clusters with one xattr, created 500 per transaction.
    let mut ids = Vec::with_capacity(n as usize);
    let mut made = 0u64;
    while made < n {
        let k = (n - made).min(500);
        let new = bs.transaction(|t| {
            (0..k)
                .map(|i| {
                    t.create(CreateOptions {
                        num_clusters: 4,
                        thin: true,
                        xattrs: vec![("name".into(), format!("blob-{:08}", made + i).into_bytes())],
                    })
                })
                .collect::<Result<Vec<u64>, BsError>>()
        })?;
        ids.extend(new);
        made += k;
        tick("creating blobs", made, n);
    }
    bs.unload()?;
    let setup_seconds = t0.elapsed().as_secs_f64();
    let mut samples = Vec::new();
    let measure = |state: &str| -> R<(LoadSample, BlobStore)> {
        let ins = oxblob_blobstore::inspect(dev.as_ref())?;
        let log_records = ins.log.iter().filter(|e| e.link.is_none()).count() as u64;
        let cd = CountingDevice::new(Arc::clone(&dev));
        let d: Arc<dyn BlockDevice> = cd.clone();
        let t = Instant::now();
        let bs = BlobStore::load(d, LoadOptions::default())?;
        let millis = t.elapsed().as_secs_f64() * 1000.0;
        Ok((
            LoadSample {
                state: state.to_string(),
                millis,
                log_records,
                log_segments: ins.log_segments.len() as u64,
                checkpoint_bytes: ins.superblock.checkpoint.len,
                io: cd.counts(),
            },
            bs,
        ))
    };
    let (clean, bs) = measure("clean")?;
    samples.push(clean);
    if bs.blobs()?.len() as u64 != n {
        return Err(BlobBenchError::Invalid("the store lost blobs".into()));
    }
    // Synced changes, then a crash (no unload).
    let mut rng = WyRand::new(0x10ad);
    for i in 0..changes {
        let id = ids[rng.below(ids.len() as u64) as usize];
        let b = bs.open_blob(id)?;
        b.set_xattr("gen", &i.to_le_bytes())?;
        b.sync_md()?;
        b.close()?;
        if i % 256 == 0 {
            tick("synced changes", i, changes);
        }
    }
    drop(bs);
    let (crash, bs) = measure("crash")?;
    samples.push(crash);
    bs.unload()?;
    Ok(LoadReport {
        device: info.name.clone(),
        backend: info.backend.clone(),
        direct_io: info.caps.direct_io,
        blobs: n,
        changes_before_crash: changes,
        setup_seconds,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxblob_bdev::MallocDevice;

    fn malloc(mib: u64) -> Arc<dyn BlockDevice> {
        Arc::new(MallocDevice::new("m", 4096, mib * 256).unwrap())
    }

    #[test]
    fn data_run_compares_blob_and_raw_on_the_same_range() {
        let p = DataParams {
            qd: QdParams {
                pattern: Pattern::Randread,
                bs: 4096,
                qd: 8,
                span: 0,
                warmup: Duration::from_millis(10),
                duration: Duration::from_millis(100),
                seed: 3,
            },
            cluster_size: 1 << 20,
            fill: 0.9,
            rounds: 2,
        };
        let r = run_data(malloc(64), &p, &|_, _| {}).unwrap();
        assert_eq!(r.blob_extents, 1);
        assert!(r.blob.ios > 0 && r.raw.ios > 0);
        assert!(r.ratio > 0.0);
        assert_eq!(r.span % (1 << 20), 0);
        assert!(r.span >= 40 << 20, "most of the store: {}", r.span);
    }

    #[test]
    fn counting_device_counts_reads_writes_and_flushes() {
        let d = malloc(8);
        let cd = CountingDevice::new(d);
        let mut ch = cd.channel().unwrap();
        oxblob_bdev::blocking::write_slice(ch.as_mut(), 8192, &[7u8; 8192]).unwrap();
        oxblob_bdev::blocking::read(ch.as_mut(), 0, 4096).unwrap();
        oxblob_bdev::blocking::flush(ch.as_mut()).unwrap();
        assert_eq!(
            cd.counts(),
            Counts {
                reads: 1,
                read_bytes: 4096,
                writes: 1,
                write_bytes: 8192,
                flushes: 1
            }
        );
    }

    #[test]
    fn meta_and_load_runs_on_a_small_store() {
        let r = run_meta(malloc(256), 50, &|_, _| {}).unwrap();
        assert_eq!(r.phases.len(), 3);
        assert!(r.phases.iter().all(|p| p.ops == 50 && p.ops_per_sec > 0.0));
        // Enough changes to fill more than one log segment with packed records.
        let r = run_load(malloc(256), 600, 2500, &|_, _, _| {}).unwrap();
        let clean = &r.samples[0];
        let crash = &r.samples[1];
        assert_eq!(clean.log_records, 0);
        assert_eq!(crash.log_records, 2500, "every synced change is one record");
        // A clean load reads the two slots, the checkpoint and one log segment.
        assert_eq!(clean.io.reads, 3);
        // After the crash: both slots, the checkpoint, then one read per log segment.
        assert!(crash.log_segments >= 2, "{crash:?}");
        assert_eq!(crash.io.reads, 2 + crash.log_segments);
        assert!(crash.io.read_bytes > clean.io.read_bytes);
        // The crash load takes a checkpoint; the clean one writes one superblock page.
        assert_eq!(clean.io.writes, 1);
        assert_eq!(clean.io.write_bytes, 4096);
        assert!(crash.io.writes >= 2);
    }
}

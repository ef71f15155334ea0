//! The block-device benchmark engine behind `oxblob bench bdev`.
//!
//! Each worker thread opens its own [`IoChannel`], fills it with exactly `qd` requests, then
//! loops: poll for at least one completion, take one timestamp for the whole batch, record each
//! completion's latency and resubmit its buffer at a new offset. Buffers are allocated once per
//! slot and travel through the channel and back; the loop allocates nothing and makes no system
//! call beyond what the channel itself does. Random offsets come from a seeded wyrand generator,
//! aligned to the block size of the request; sequential offsets wrap around at the end of the
//! span.
//!
//! A warm-up phase runs first and is excluded from every figure. A completion counts when it is
//! reaped inside the measured window; the window ends at the first reap at or past the deadline.
//! Requests still in flight then are drained and not counted.

use hdrhistogram::Histogram;
use oxblob_bdev::{BdevError, BlockDevice, Completion, IoBuf, IoChannel, IoOp};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The access pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Sequential reads, wrapping at the end of the span.
    Read,
    /// Sequential writes, wrapping at the end of the span.
    Write,
}

impl Pattern {
    /// The name used on the command line and in JSON (`randread`, ...), as fio spells it.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Randread => "randread",
            Pattern::Randwrite => "randwrite",
            Pattern::Read => "read",
            Pattern::Write => "write",
        }
    }

    /// True for the write patterns.
    pub fn is_write(self) -> bool {
        matches!(self, Pattern::Randwrite | Pattern::Write)
    }

    /// True for the random patterns.
    pub fn is_random(self) -> bool {
        matches!(self, Pattern::Randread | Pattern::Randwrite)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchParams {
    /// Access pattern.
    pub pattern: Pattern,
    /// Bytes per request; a multiple of the device's block size.
    pub bs: u64,
    /// Requests kept in flight per thread.
    pub qd: usize,
    /// Worker threads, each with its own channel.
    pub threads: usize,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Length of the warm-up phase, excluded from the results.
    pub warmup: Duration,
    /// Bytes of the device to address, from offset 0; `None` means the whole device.
    pub span: Option<u64>,
    /// Seed of the offset generator (thread `i` uses a seed derived from it and `i`).
    pub seed: u64,
}

/// Results of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The bdev name.
    pub device: String,
    /// The backend (`malloc`, `uring`, `psync`, ...).
    pub backend: String,
    /// Whether the backend bypasses the page cache.
    pub direct_io: bool,
    /// The access pattern.
    pub rw: Pattern,
    /// Bytes per request.
    pub bs: u64,
    /// Requests in flight per thread.
    pub qd: usize,
    /// Worker threads.
    pub threads: usize,
    /// Bytes addressed.
    pub span: u64,
    /// Measured seconds (the mean over threads of each one's measured window).
    pub seconds: f64,
    /// Requests completed in the measured windows, over all threads.
    pub ios: u64,
    /// Requests per second (sum over threads).
    pub iops: f64,
    /// MiB (2^20 bytes) per second.
    pub mib_s: f64,
    /// Mean latency from submit to reap, in microseconds.
    pub lat_mean_us: f64,
    /// Median latency, in microseconds.
    pub lat_p50_us: f64,
    /// 99th percentile latency, in microseconds.
    pub lat_p99_us: f64,
    /// Largest latency seen, in microseconds.
    pub lat_max_us: f64,
}

/// Why a benchmark could not run or stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BenchError {
    /// A parameter does not fit the device or makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// Opening a channel failed.
    #[error("cannot open an I/O channel: {0}")]
    Channel(BdevError),
    /// The channel refused a request.
    #[error("request refused: {0}")]
    Submit(BdevError),
    /// Polling the channel failed.
    #[error("polling the channel failed: {0}")]
    Poll(BdevError),
    /// A request completed with an error.
    #[error("{0}")]
    Io(BdevError),
    /// The device returned a completion the benchmark did not submit.
    #[error("unexpected completion: {0}")]
    Protocol(String),
    /// A worker thread died.
    #[error("a worker thread panicked")]
    WorkerPanicked,
}

/// Progress, given to the caller's callback about ten times a second.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Time since the workers started.
    pub elapsed: Duration,
    /// Warm-up plus measured duration.
    pub total: Duration,
    /// Requests completed so far over all threads, warm-up included.
    pub ios: u64,
}

/// Upper bound of the latency histogram: 60 s in nanoseconds (larger values saturate).
const LAT_MAX_NS: u64 = 60_000_000_000;

/// A fast seeded generator (wyrand). Not for cryptography; ample for offsets.
#[derive(Debug, Clone)]
pub struct WyRand(u64);

impl WyRand {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        WyRand(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A value in `0..n` (Lemire's multiply-shift; `n` must be non-zero).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Produces the offsets of one thread.
#[derive(Debug, Clone)]
struct Offsets {
    random: bool,
    rng: WyRand,
    bs: u64,
    slots: u64,
    cursor: u64,
}

impl Offsets {
    #[inline]
    fn next(&mut self) -> u64 {
        let slot = if self.random {
            self.rng.below(self.slots)
        } else {
            let s = self.cursor;
            self.cursor += 1;
            if self.cursor == self.slots {
                self.cursor = 0;
            }
            s
        };
        slot * self.bs
    }
}

struct ThreadResult {
    ios: u64,
    measured: Duration,
    hist: Histogram<u64>,
}

/// Per-thread progress counter on its own cache line.
#[repr(align(128))]
#[derive(Default)]
struct Counter(AtomicU64);

/// Checks the parameters against the device; returns the span in bytes.
fn check(dev: &dyn BlockDevice, p: &BenchParams) -> Result<u64, BenchError> {
    let info = dev.info();
    let block = u64::from(info.block_size);
    let size = info.size_bytes();
    if p.bs == 0 || p.bs % block != 0 {
        return Err(BenchError::Invalid(format!(
            "block size {} is not a multiple of the device's {block}-byte blocks",
            p.bs
        )));
    }
    if usize::try_from(p.bs).is_err() {
        return Err(BenchError::Invalid(format!(
            "block size {} is too large",
            p.bs
        )));
    }
    if p.qd == 0 {
        return Err(BenchError::Invalid("queue depth must be at least 1".into()));
    }
    if p.threads == 0 {
        return Err(BenchError::Invalid(
            "thread count must be at least 1".into(),
        ));
    }
    if p.duration.is_zero() {
        return Err(BenchError::Invalid(
            "run time must be greater than zero".into(),
        ));
    }
    let span = p.span.unwrap_or(size);
    if span > size {
        return Err(BenchError::Invalid(format!(
            "span of {span} bytes is larger than the device ({size} bytes)"
        )));
    }
    let span = span - span % p.bs;
    if span == 0 {
        return Err(BenchError::Invalid(format!(
            "block size {} is larger than the span ({} bytes)",
            p.bs,
            p.span.unwrap_or(size)
        )));
    }
    let buf_bytes =
        p.bs.checked_mul(p.qd as u64)
            .and_then(|b| b.checked_mul(p.threads as u64));
    if buf_bytes.is_none_or(|b| b > 1 << 34) {
        return Err(BenchError::Invalid(format!(
            "bs x qd x threads needs more than 16 GiB of buffers ({} x {} x {})",
            p.bs, p.qd, p.threads
        )));
    }
    Ok(span)
}

/// Runs the benchmark on `dev`. `on_tick` is called from the calling thread about every 100 ms
/// while the workers run.
pub fn run(
    dev: &dyn BlockDevice,
    p: &BenchParams,
    on_tick: &mut dyn FnMut(Tick),
) -> Result<BenchReport, BenchError> {
    let span = check(dev, p)?;
    let counters: Vec<Counter> = (0..p.threads).map(|_| Counter::default()).collect();
    let abort = AtomicBool::new(false);
    let barrier = Barrier::new(p.threads + 1);
    let total = p.warmup + p.duration;

    let results: Vec<Result<ThreadResult, BenchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..p.threads)
            .map(|t| {
                let (counters, abort, barrier) = (&counters, &abort, &barrier);
                s.spawn(move || {
                    let r = worker(dev, p, t, span, &counters[t].0, abort, barrier);
                    if r.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            let ios = counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
            on_tick(Tick {
                elapsed: start.elapsed().min(total),
                total,
                ios,
            });
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(BenchError::WorkerPanicked)))
            .collect()
    });

    let mut hist = new_histogram()?;
    let mut ios = 0u64;
    let mut iops = 0.0f64;
    let mut secs = 0.0f64;
    for r in results {
        let r = r?;
        ios += r.ios;
        let s = r.measured.as_secs_f64();
        secs += s;
        if s > 0.0 {
            iops += r.ios as f64 / s;
        }
        hist.add(&r.hist)
            .map_err(|e| BenchError::Invalid(format!("merging latency histograms: {e}")))?;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    let info = dev.info();
    Ok(BenchReport {
        device: info.name.clone(),
        backend: info.backend.clone(),
        direct_io: info.caps.direct_io,
        rw: p.pattern,
        bs: p.bs,
        qd: p.qd,
        threads: p.threads,
        span,
        seconds: secs / p.threads as f64,
        ios,
        iops,
        mib_s: iops * p.bs as f64 / f64::from(1u32 << 20),
        lat_mean_us: if hist.is_empty() {
            0.0
        } else {
            hist.mean() / 1000.0
        },
        lat_p50_us: us(hist.value_at_quantile(0.50)),
        lat_p99_us: us(hist.value_at_quantile(0.99)),
        lat_max_us: us(hist.max()),
    })
}

fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, LAT_MAX_NS, 3)
        .map_err(|e| BenchError::Invalid(format!("latency histogram: {e}")))
}

fn make_op(write: bool, offset: u64, buf: IoBuf) -> IoOp {
    if write {
        IoOp::Write { offset, buf }
    } else {
        IoOp::Read { offset, buf }
    }
}

/// One worker: its own channel, `qd` slots, one buffer per slot.
fn worker(
    dev: &dyn BlockDevice,
    p: &BenchParams,
    thread: usize,
    span: u64,
    counter: &AtomicU64,
    abort: &AtomicBool,
    barrier: &Barrier,
) -> Result<ThreadResult, BenchError> {
    // Everything that can fail before the start is done before the barrier is passed, but the
    // barrier must be reached in every case or the other threads would wait forever.
    let setup = setup_worker(dev, p, thread, span);
    barrier.wait();
    let (mut ch, mut offsets, mut bufs) = setup?;
    let mut hist = new_histogram()?;
    let write = p.pattern.is_write();
    let qd = p.qd;
    let mut submitted_at: Vec<Instant> = vec![Instant::now(); qd];
    let mut comps: Vec<Completion> = Vec::with_capacity(qd.max(64));

    let t0 = Instant::now();
    for (slot, at) in submitted_at.iter_mut().enumerate() {
        let buf = bufs[slot]
            .take()
            .ok_or_else(|| BenchError::Protocol("buffer slot empty at start".into()))?;
        *at = Instant::now();
        ch.submit(slot as u64, make_op(write, offsets.next(), buf))
            .map_err(|r| BenchError::Submit(r.error))?;
    }

    let warm_end = t0 + p.warmup;
    let mut end = warm_end + p.duration;
    let mut measuring = p.warmup.is_zero();
    let mut measure_start = t0;
    let mut measure_end = t0;
    let mut ios = 0u64;
    let mut total = 0u64;
    let mut failure: Option<BenchError> = None;

    'run: loop {
        comps.clear();
        ch.poll(&mut comps, 1).map_err(BenchError::Poll)?;
        let now = Instant::now();
        // Completions reaped by the poll that crosses the warm-up deadline happened (mostly)
        // before it, so that batch is not counted; the window starts at this instant.
        let count = measuring;
        if !measuring && now >= warm_end {
            measuring = true;
            measure_start = now;
            end = now + p.duration;
        }
        let stop = measuring && now >= end || abort.load(Ordering::Relaxed);
        total += comps.len() as u64;
        for c in comps.drain(..) {
            let slot = c.token as usize;
            if slot >= qd {
                failure = Some(BenchError::Protocol(format!(
                    "token {} not submitted",
                    c.token
                )));
                break 'run;
            }
            if let Err(e) = c.result {
                failure = Some(BenchError::Io(e));
                break 'run;
            }
            if count {
                let lat = now.saturating_duration_since(submitted_at[slot]);
                hist.saturating_record(lat.as_nanos().min(u128::from(LAT_MAX_NS)) as u64);
                ios += 1;
            }
            let buf =
                c.op.into_buf()
                    .ok_or_else(|| BenchError::Protocol("completion without its buffer".into()))?;
            if stop {
                bufs[slot] = Some(buf);
            } else {
                submitted_at[slot] = now;
                if let Err(r) = ch.submit(slot as u64, make_op(write, offsets.next(), buf)) {
                    failure = Some(BenchError::Submit(r.error));
                    break 'run;
                }
            }
        }
        counter.store(total, Ordering::Relaxed);
        if stop {
            measure_end = now;
            break;
        }
    }
    // Drain what is still in flight so the channel is idle when it is dropped.
    while ch.in_flight() > 0 {
        comps.clear();
        let want = ch.in_flight();
        if ch.poll(&mut comps, want).is_err() {
            break;
        }
        if failure.is_none() {
            if let Some(e) = comps.iter().find_map(|c| c.result.clone().err()) {
                failure = Some(BenchError::Io(e));
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if abort.load(Ordering::Relaxed) {
        // Another thread failed; its error is the one reported.
        return Ok(ThreadResult {
            ios: 0,
            measured: Duration::ZERO,
            hist,
        });
    }
    Ok(ThreadResult {
        ios,
        measured: measure_end.saturating_duration_since(measure_start),
        hist,
    })
}

type WorkerSetup = (Box<dyn IoChannel>, Offsets, Vec<Option<IoBuf>>);

fn setup_worker(
    dev: &dyn BlockDevice,
    p: &BenchParams,
    thread: usize,
    span: u64,
) -> Result<WorkerSetup, BenchError> {
    let ch = dev.channel().map_err(BenchError::Channel)?;
    if p.qd > ch.capacity() {
        return Err(BenchError::Invalid(format!(
            "queue depth {} is more than the channel holds ({})",
            p.qd,
            ch.capacity()
        )));
    }
    let slots = span / p.bs;
    let seed = p
        .seed
        .wrapping_add((thread as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut rng = WyRand::new(seed);
    let bs = p.bs as usize;
    let bufs = (0..p.qd)
        .map(|_| {
            let mut b = IoBuf::zeroed(bs);
            if p.pattern.is_write() {
                // Incompressible data, like fio's default buffers.
                for chunk in b.chunks_exact_mut(8) {
                    chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
                }
            }
            Some(b)
        })
        .collect();
    let offsets = Offsets {
        random: p.pattern.is_random(),
        rng,
        bs: p.bs,
        slots,
        cursor: (slots as u128 * thread as u128 / p.threads as u128) as u64,
    };
    Ok((ch, offsets, bufs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxblob_bdev::{blocking, MallocDevice};

    fn params(pattern: Pattern) -> BenchParams {
        BenchParams {
            pattern,
            bs: 4096,
            qd: 8,
            threads: 1,
            duration: Duration::from_millis(100),
            warmup: Duration::from_millis(20),
            span: None,
            seed: 1,
        }
    }

    #[test]
    fn offsets_are_aligned_and_inside_the_span() {
        let mut o = Offsets {
            random: true,
            rng: WyRand::new(7),
            bs: 8192,
            slots: 100,
            cursor: 0,
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let off = o.next();
            assert_eq!(off % 8192, 0);
            assert!(off < 100 * 8192);
            seen.insert(off);
        }
        // 10k draws over 100 slots: every slot is hit (probability of a miss ~ 100 * e^-100).
        assert_eq!(seen.len(), 100);
    }

    #[test]
    fn sequential_offsets_wrap() {
        let mut o = Offsets {
            random: false,
            rng: WyRand::new(0),
            bs: 4096,
            slots: 3,
            cursor: 1,
        };
        let got: Vec<u64> = (0..5).map(|_| o.next()).collect();
        assert_eq!(got, vec![4096, 8192, 0, 4096, 8192]);
    }

    #[test]
    fn wyrand_is_seeded_and_spread() {
        let a: Vec<u64> = {
            let mut r = WyRand::new(42);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = WyRand::new(42);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = WyRand::new(43);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = WyRand::new(5);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[r.below(10) as usize] += 1;
        }
        for n in buckets {
            assert!(
                (9_000..11_000).contains(&n),
                "bucket count {n} far from 10000"
            );
        }
    }

    #[test]
    fn randread_runs_and_reports() {
        let dev = MallocDevice::new("t", 512, 2048).unwrap();
        let mut ticks = 0;
        let r = run(&dev, &params(Pattern::Randread), &mut |_| ticks += 1).unwrap();
        assert!(r.ios > 0);
        assert!(r.iops > 0.0);
        assert_eq!(r.backend, "malloc");
        assert_eq!(r.rw, Pattern::Randread);
        assert_eq!(r.span, 2048 * 512);
        assert!(r.seconds >= 0.1 && r.seconds < 5.0, "seconds {}", r.seconds);
        assert!(r.lat_p99_us >= r.lat_p50_us);
        assert!(r.lat_max_us >= r.lat_p99_us);
        assert!(ticks >= 1);
    }

    #[test]
    fn sequential_write_covers_the_span_with_the_pattern() {
        let dev = MallocDevice::new("t", 512, 64).unwrap();
        let mut p = params(Pattern::Write);
        p.span = Some(16 * 1024);
        let r = run(&dev, &p, &mut |_| {}).unwrap();
        assert!(r.ios >= 4, "only {} writes", r.ios);
        let mut ch = dev.channel().unwrap();
        let data = blocking::read(ch.as_mut(), 0, 32 * 1024).unwrap();
        // Inside the span every 8-byte word was written with random data (a zero word has
        // probability 2^-64); beyond it the device is untouched.
        assert!(data[..16 * 1024].chunks(8).all(|w| w != [0u8; 8]));
        assert!(data[16 * 1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn several_threads_add_up() {
        let dev = MallocDevice::new("t", 4096, 256).unwrap();
        let mut p = params(Pattern::Randwrite);
        p.threads = 2;
        let r = run(&dev, &p, &mut |_| {}).unwrap();
        assert_eq!(r.threads, 2);
        assert!(r.ios > 0);
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        let dev = MallocDevice::new("t", 4096, 16).unwrap();
        let cases: Vec<(BenchParams, &str)> = vec![
            (
                BenchParams {
                    bs: 512,
                    ..params(Pattern::Read)
                },
                "multiple",
            ),
            (
                BenchParams {
                    qd: 0,
                    ..params(Pattern::Read)
                },
                "queue depth",
            ),
            (
                BenchParams {
                    qd: 100_000,
                    ..params(Pattern::Read)
                },
                "channel holds",
            ),
            (
                BenchParams {
                    threads: 0,
                    ..params(Pattern::Read)
                },
                "thread",
            ),
            (
                BenchParams {
                    span: Some(1 << 30),
                    ..params(Pattern::Read)
                },
                "larger than the device",
            ),
            (
                BenchParams {
                    span: Some(100),
                    ..params(Pattern::Read)
                },
                "larger than the span",
            ),
            (
                BenchParams {
                    duration: Duration::ZERO,
                    ..params(Pattern::Read)
                },
                "run time",
            ),
        ];
        for (p, needle) in cases {
            match run(&dev, &p, &mut |_| {}) {
                Err(BenchError::Invalid(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("expected Invalid containing {needle:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn closed_device_is_a_channel_error() {
        let dev = MallocDevice::new("t", 4096, 16).unwrap();
        dev.close();
        let err = run(&dev, &params(Pattern::Randread), &mut |_| {}).unwrap_err();
        assert_eq!(err, BenchError::Channel(BdevError::Closed));
    }
}

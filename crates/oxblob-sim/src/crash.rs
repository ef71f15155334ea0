//! The crash device: a volatile write cache that a simulated power cut may drop, reorder and tear.
//!
//! ## Fault model (see `docs/fault-model.md`)
//! Until a flush that covers it completes, a completed write may be dropped, reordered against
//! other uncovered writes (so an older write to a block may overwrite a newer one), and torn at
//! block granularity (any subset of its blocks survives). A single block is never torn (the atomic
//! write unit). A flush covers every write that completed before the flush was *submitted*.
//! Unmap and write-zeroes are treated as writes of zeroes. Misdirected writes and bit rot are not
//! produced; use [`crate::corrupt_block`] on an image to flip bytes of durable data.
//!
//! ## How it works
//! All I/O goes through to the inner device, so reads always see the latest data. On top of that
//! the device keeps a **history** since the [mark](CrashDevice::mark): a *base image* (the
//! durable contents at the mark), the writes completed since then in completion order (offset and
//! payload; unmap and write-zeroes as ranges), and the completed flushes, each with the number of
//! writes it covers. Memory is the base image plus the payloads written, never an image per point.
//!
//! A **point** is a position in that history: point `p` is the state after the first `p` events
//! (an event is a completed write, unmap, write-zeroes or flush). Point 0 is the mark;
//! [`CrashDevice::history_len`] is now. [`CrashDevice::image_at`] builds the image a power cut at
//! point `p` would leave: the base, plus every write covered by a flush completed by `p`, plus,
//! by [`CrashMode`], some of the uncovered writes completed by `p`.
//!
//! ## A crash sweep
//! ```text
//! let crash = CrashDevice::new(malloc)?;            // Arc<CrashDevice>
//! setup(crash.clone())?;                            // format, create files ...
//! crash.mark();                                     // the sweep covers only what follows
//! operation_under_test(crash.clone())?;
//! for point in 0..=crash.history_len() {
//!     for seed in seeds {                           // a few in CI, many with OXBLOB_FULL=1
//!         let image = crash.image_at(point, seed, CrashMode::Random)?;
//!         let outcome = load_and_check(image);      // fsck + compare with the model
//!         assert!(outcome.is_ok(), "crash point {point} seed {seed}: {outcome:?}");
//!     }
//! }
//! ```
//! `flush_points()` lists the points right after each completed flush (where `DropAll` and
//! `KeepAll` must agree on what was made durable), for sweeps that only check those. Every image
//! is a pure function of (history, point, seed, mode), so a failure replays from the printed
//! `(point, seed)` after re-running the same workload.
//!
//! ## Cost
//! Memory: one copy of the device (the base image) plus every payload written since the mark;
//! call [`CrashDevice::mark`] again to drop history no longer needed. Building an image copies the
//! base and applies the writes up to the point. Measured by the `crash_image_cost` example
//! (release build, this 2-core machine): 3000 writes of 1–16 blocks with a flush every 8 writes on
//! 64 MiB record 101 MiB of payload; an image takes about 45 ms as bytes and 130 ms as a
//! `MallocDevice`.
//!
//! ## Concurrency
//! `Send + Sync` like every device; channels are per thread and wrap the inner device's channels.
//! Bookkeeping of completions and flush submissions takes one mutex (this is a test device; the
//! data path itself is the inner device's). Image building also takes that mutex while it copies.

use crate::rng::rng;
use crate::tokens::TokenMap;
use oxblob_bdev::{
    blocking, BdevError, BlockDevice, Completion, DeviceInfo, IoChannel, IoKind, IoOp,
    MallocDevice, Rejected,
};
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::{Arc, Mutex, MutexGuard};

/// Chunk size used to copy whole images to and from devices.
const COPY_CHUNK: usize = 1 << 20;

/// What happens, at a simulated power cut, to the writes no completed flush covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every uncovered write is lost: the image holds only durable data.
    DropAll,
    /// Every uncovered write survives, applied in completion order.
    KeepAll,
    /// Chosen from the seed, independently per write: dropped (1 in 4), kept whole (1 in 2), or
    /// torn to a random subset of its blocks (1 in 4); the survivors are applied in a random
    /// order.
    Random,
}

/// One recorded write-like request.
#[derive(Debug, Clone)]
struct Record {
    offset: u64,
    /// `None` for unmap and write-zeroes (the range becomes zeroes).
    data: Option<Vec<u8>>,
    len: u64,
}

impl Record {
    fn apply_blocks(&self, image: &mut [u8], bs: u64, blocks: impl Iterator<Item = u64>) {
        for b in blocks {
            let start = (b * bs) as usize;
            let dst_start = (self.offset + b * bs) as usize;
            let dst = &mut image[dst_start..dst_start + bs as usize];
            match &self.data {
                Some(d) => dst.copy_from_slice(&d[start..start + bs as usize]),
                None => dst.fill(0),
            }
        }
    }

    fn apply(&self, image: &mut [u8], bs: u64) {
        self.apply_blocks(image, bs, 0..self.len / bs);
    }
}

#[derive(Debug, Clone, Copy)]
enum Event {
    /// The next record in `History::writes` completed.
    Write,
    /// A flush completed; it covers the first `covers` writes (absolute count since creation).
    Flush { covers: u64 },
}

struct History {
    /// Durable contents at the mark.
    base: Vec<u8>,
    /// Writes completed before the mark that no flush covered by then.
    pre_mark: Vec<Record>,
    /// Writes completed since the mark, in completion order.
    writes: Vec<Record>,
    /// Events since the mark.
    events: Vec<Event>,
    /// Absolute number of writes folded into `base` (dropped from memory).
    folded: u64,
}

impl History {
    /// Absolute number of writes completed so far.
    fn total_writes(&self) -> u64 {
        self.folded + (self.pre_mark.len() + self.writes.len()) as u64
    }

    /// Record `i` counting from the first one not folded (pre-mark first).
    fn record(&self, i: usize) -> &Record {
        if i < self.pre_mark.len() {
            &self.pre_mark[i]
        } else {
            &self.writes[i - self.pre_mark.len()]
        }
    }

    /// At point `p`: (writes completed, writes durable), both relative to `folded`.
    fn counts_at(&self, point: usize) -> (usize, usize) {
        let mut done = self.pre_mark.len();
        let mut covered = self.folded;
        for e in &self.events[..point] {
            match *e {
                Event::Write => done += 1,
                Event::Flush { covers } => covered = covered.max(covers),
            }
        }
        let durable = covered.saturating_sub(self.folded) as usize;
        (done, durable.min(done))
    }
}

/// A device that remembers what a power cut could still take away. See the module docs.
pub struct CrashDevice {
    inner: Arc<dyn BlockDevice>,
    info: DeviceInfo,
    history: Arc<Mutex<History>>,
}

impl CrashDevice {
    /// Wraps `inner`. Its current contents are taken as durable (copied into the base image, so
    /// this costs one read of the whole device and its size in memory).
    pub fn new(inner: Arc<dyn BlockDevice>) -> Result<Arc<Self>, BdevError> {
        let base = read_image(inner.as_ref())?;
        let mut info = inner.info().clone();
        info.backend = "crash".to_string();
        info.caps.volatile_write_cache = true;
        Ok(Arc::new(CrashDevice {
            inner,
            info,
            history: Arc::new(Mutex::new(History {
                base,
                pre_mark: Vec::new(),
                writes: Vec::new(),
                events: Vec::new(),
                folded: 0,
            })),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        // A poisoned lock only means a test thread panicked while recording; the history is
        // still consistent (every update is a single push), so keep going.
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the interesting part of the history here: folds every durable write into the base
    /// image and forgets the events before now, so point 0 is now. Writes that completed but are
    /// not yet covered by a flush stay pending (a cut may still drop them). Call it after setup so
    /// a sweep covers only the operation under test; calling it again moves the mark (and frees
    /// the memory of the history before it).
    pub fn mark(&self) {
        let mut h = self.lock();
        let bs = u64::from(self.info.block_size);
        let (done, durable) = h.counts_at(h.events.len());
        debug_assert_eq!(done, h.pre_mark.len() + h.writes.len());
        let mut all: Vec<Record> = std::mem::take(&mut h.pre_mark);
        all.append(&mut h.writes);
        let pending = all.split_off(durable);
        for r in &all {
            r.apply(&mut h.base, bs);
        }
        h.folded += all.len() as u64;
        h.pre_mark = pending;
        h.events.clear();
    }

    /// Number of events (completed writes, unmaps, write-zeroes and flushes) since the mark: the
    /// last valid point.
    pub fn history_len(&self) -> usize {
        self.lock().events.len()
    }

    /// The points right after each flush completed since the mark, in order.
    pub fn flush_points(&self) -> Vec<usize> {
        let h = self.lock();
        h.events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Event::Flush { .. }))
            .map(|(i, _)| i + 1)
            .collect()
    }

    /// Writes completed since the mark and not covered by any completed flush, as of now.
    pub fn unflushed_writes(&self) -> usize {
        let h = self.lock();
        let (done, durable) = h.counts_at(h.events.len());
        done - durable
    }

    /// The image a power cut *now* would leave. Same as `image_at(history_len(), seed, mode)`.
    pub fn crash_image(
        &self,
        seed: u64,
        mode: CrashMode,
    ) -> Result<Arc<dyn BlockDevice>, BdevError> {
        let point = self.history_len();
        self.image_at(point, seed, mode)
    }

    /// The image a power cut at history point `point` (0 ..= `history_len()`) would leave, as a
    /// new [`MallocDevice`] of the same geometry. Same arguments, same bytes.
    pub fn image_at(
        &self,
        point: usize,
        seed: u64,
        mode: CrashMode,
    ) -> Result<Arc<dyn BlockDevice>, BdevError> {
        let bytes = self.image_bytes_at(point, seed, mode)?;
        let dev = MallocDevice::new(
            &format!("{}-crash-p{point}-s{seed}", self.info.name),
            self.info.block_size,
            self.info.num_blocks,
        )?;
        write_image(&dev, &bytes)?;
        Ok(Arc::new(dev))
    }

    /// Like [`CrashDevice::image_at`], but returns the image's bytes.
    pub fn image_bytes_at(
        &self,
        point: usize,
        seed: u64,
        mode: CrashMode,
    ) -> Result<Vec<u8>, BdevError> {
        let h = self.lock();
        if point > h.events.len() {
            return Err(BdevError::Config(format!(
                "crash point {point} is past the end of the history ({} events)",
                h.events.len()
            )));
        }
        let bs = u64::from(self.info.block_size);
        let (done, durable) = h.counts_at(point);
        let mut image = h.base.clone();
        for i in 0..durable {
            h.record(i).apply(&mut image, bs);
        }
        match mode {
            CrashMode::DropAll => {}
            CrashMode::KeepAll => {
                for i in durable..done {
                    h.record(i).apply(&mut image, bs);
                }
            }
            CrashMode::Random => {
                let mut r = rng(seed);
                // (record index, surviving blocks, or None for all of them)
                let mut survivors: Vec<(usize, Option<Vec<u64>>)> = Vec::new();
                for i in durable..done {
                    let blocks = h.record(i).len / bs;
                    match r.gen_range(0..4u32) {
                        0 => {}
                        1 | 2 => survivors.push((i, None)),
                        _ => {
                            let kept: Vec<u64> = (0..blocks).filter(|_| r.gen_bool(0.5)).collect();
                            if !kept.is_empty() {
                                survivors.push((i, Some(kept)));
                            }
                        }
                    }
                }
                survivors.shuffle(&mut r);
                for (i, blocks) in survivors {
                    let rec = h.record(i);
                    match blocks {
                        None => rec.apply(&mut image, bs),
                        Some(b) => rec.apply_blocks(&mut image, bs, b.into_iter()),
                    }
                }
            }
        }
        Ok(image)
    }
}

/// Reads the whole device into memory.
pub(crate) fn read_image(dev: &dyn BlockDevice) -> Result<Vec<u8>, BdevError> {
    let size = usize::try_from(dev.info().size_bytes())
        .map_err(|_| BdevError::Config("device too large to copy into memory".into()))?;
    let mut image = Vec::new();
    image
        .try_reserve_exact(size)
        .map_err(|_| BdevError::Config(format!("cannot allocate {size} bytes for an image")))?;
    let mut ch = dev.channel()?;
    let mut at = 0usize;
    while at < size {
        let n = COPY_CHUNK.min(size - at);
        let buf = blocking::read(ch.as_mut(), at as u64, n)?;
        image.extend_from_slice(&buf);
        at += n;
    }
    Ok(image)
}

/// Writes `image` over a device that reads as zeroes (skipping all-zero chunks).
fn write_image(dev: &dyn BlockDevice, image: &[u8]) -> Result<(), BdevError> {
    let mut ch = dev.channel()?;
    for (i, chunk) in image.chunks(COPY_CHUNK).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            blocking::write_slice(ch.as_mut(), (i * COPY_CHUNK) as u64, chunk)?;
        }
    }
    Ok(())
}

impl BlockDevice for CrashDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        if self.is_closed() {
            return Err(BdevError::Closed);
        }
        Ok(Box::new(CrashChannel {
            inner: self.inner.channel()?,
            history: Arc::clone(&self.history),
            tokens: TokenMap::new(),
            scratch: Vec::new(),
        }))
    }

    fn close(&self) {
        self.inner.close();
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// Per-request state: for a flush, the absolute write count at submission.
type FlushCovers = Option<u64>;

struct CrashChannel {
    inner: Box<dyn IoChannel>,
    history: Arc<Mutex<History>>,
    tokens: TokenMap<FlushCovers>,
    scratch: Vec<Completion>,
}

impl CrashChannel {
    fn lock(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, c: &Completion, covers: FlushCovers) {
        if c.result.is_err() {
            return;
        }
        let rec = match &c.op {
            IoOp::Write { offset, buf } => Record {
                offset: *offset,
                data: Some(buf.to_vec()),
                len: buf.len() as u64,
            },
            IoOp::Writev { offset, bufs } => {
                let data: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                Record {
                    offset: *offset,
                    len: data.len() as u64,
                    data: Some(data),
                }
            }
            IoOp::Unmap { offset, len } | IoOp::WriteZeroes { offset, len } => Record {
                offset: *offset,
                data: None,
                len: *len,
            },
            IoOp::Flush => {
                let mut h = self.lock();
                let covers = covers.unwrap_or(0);
                h.events.push(Event::Flush { covers });
                return;
            }
            IoOp::Read { .. } | IoOp::Readv { .. } => return,
        };
        let mut h = self.lock();
        h.writes.push(rec);
        h.events.push(Event::Write);
    }
}

impl IoChannel for CrashChannel {
    fn submit(&mut self, token: u64, op: IoOp) -> Result<(), Rejected> {
        let covers = if op.kind() == IoKind::Flush {
            Some(self.lock().total_writes())
        } else {
            None
        };
        let inner_token = self.tokens.insert(token, covers);
        self.inner.submit(inner_token, op).inspect_err(|_| {
            self.tokens.remove(inner_token);
        })
    }

    fn poll(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, BdevError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let r = self.inner.poll(&mut scratch, min);
        let mut n = 0;
        for mut c in scratch.drain(..) {
            let Some((caller, covers)) = self.tokens.remove(c.token) else {
                // Not ours (cannot happen with an exclusively owned inner channel): pass it on.
                out.push(c);
                n += 1;
                continue;
            };
            self.record(&c, covers);
            c.token = caller;
            out.push(c);
            n += 1;
        }
        self.scratch = scratch;
        r.map(|_| n)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

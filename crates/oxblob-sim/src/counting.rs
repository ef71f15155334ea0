//! The counting device: counts requests and bytes by kind, so tests can prove how much I/O an
//! operation does (for example "a clean load reads no per-blob metadata").
//!
//! Requests are counted when their completion is reaped: successful ones by kind (operations and
//! bytes), failed ones in [`IoCounts::errors`]. Requests rejected at submit are not counted.
//!
//! ## Concurrency
//! Counters are atomics shared by all channels; [`CountingDevice::counts`] is a snapshot that may
//! interleave with I/O completing on other threads.

use crate::tokens::TokenMap;
use oxblob_bdev::{
    BdevError, BlockDevice, Completion, DeviceInfo, IoChannel, IoKind, IoOp, Rejected,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A snapshot of a [`CountingDevice`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    /// Successful reads (plain and vectored).
    pub reads: u64,
    /// Bytes read by them.
    pub read_bytes: u64,
    /// Successful writes (plain and vectored).
    pub writes: u64,
    /// Bytes written by them.
    pub write_bytes: u64,
    /// Successful flushes.
    pub flushes: u64,
    /// Successful unmaps.
    pub unmaps: u64,
    /// Bytes unmapped.
    pub unmap_bytes: u64,
    /// Successful write-zeroes.
    pub write_zeroes: u64,
    /// Bytes zeroed by them.
    pub write_zeroes_bytes: u64,
    /// Requests that completed with an error.
    pub errors: u64,
}

impl IoCounts {
    /// Successful requests of `kind`.
    pub fn ops(&self, kind: IoKind) -> u64 {
        match kind {
            IoKind::Read => self.reads,
            IoKind::Write => self.writes,
            IoKind::Flush => self.flushes,
            IoKind::Unmap => self.unmaps,
            IoKind::WriteZeroes => self.write_zeroes,
        }
    }

    /// Bytes moved by successful requests of `kind` (0 for flush).
    pub fn bytes(&self, kind: IoKind) -> u64 {
        match kind {
            IoKind::Read => self.read_bytes,
            IoKind::Write => self.write_bytes,
            IoKind::Flush => 0,
            IoKind::Unmap => self.unmap_bytes,
            IoKind::WriteZeroes => self.write_zeroes_bytes,
        }
    }
}

const KINDS: [IoKind; 5] = [
    IoKind::Read,
    IoKind::Write,
    IoKind::Flush,
    IoKind::Unmap,
    IoKind::WriteZeroes,
];

fn slot(kind: IoKind) -> usize {
    match kind {
        IoKind::Read => 0,
        IoKind::Write => 1,
        IoKind::Flush => 2,
        IoKind::Unmap => 3,
        IoKind::WriteZeroes => 4,
    }
}

#[derive(Default)]
struct Counters {
    ops: [AtomicU64; 5],
    bytes: [AtomicU64; 5],
    errors: AtomicU64,
}

impl Counters {
    fn count(&self, c: &Completion) {
        if c.result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let s = slot(c.op.kind());
        self.ops[s].fetch_add(1, Ordering::Relaxed);
        self.bytes[s].fetch_add(c.op.len(), Ordering::Relaxed);
    }
}

/// A device that counts what goes through it. See the module docs.
pub struct CountingDevice {
    inner: Arc<dyn BlockDevice>,
    info: DeviceInfo,
    counters: Arc<Counters>,
}

impl CountingDevice {
    /// Wraps `inner` with every counter at zero.
    pub fn new(inner: Arc<dyn BlockDevice>) -> Arc<Self> {
        let mut info = inner.info().clone();
        info.backend = "counting".to_string();
        Arc::new(CountingDevice {
            inner,
            info,
            counters: Arc::new(Counters::default()),
        })
    }

    /// The counters now.
    pub fn counts(&self) -> IoCounts {
        let c = &self.counters;
        let get = |k: IoKind| {
            (
                c.ops[slot(k)].load(Ordering::Relaxed),
                c.bytes[slot(k)].load(Ordering::Relaxed),
            )
        };
        let (reads, read_bytes) = get(IoKind::Read);
        let (writes, write_bytes) = get(IoKind::Write);
        let (flushes, _) = get(IoKind::Flush);
        let (unmaps, unmap_bytes) = get(IoKind::Unmap);
        let (write_zeroes, write_zeroes_bytes) = get(IoKind::WriteZeroes);
        IoCounts {
            reads,
            read_bytes,
            writes,
            write_bytes,
            flushes,
            unmaps,
            unmap_bytes,
            write_zeroes,
            write_zeroes_bytes,
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        for k in KINDS {
            self.counters.ops[slot(k)].store(0, Ordering::Relaxed);
            self.counters.bytes[slot(k)].store(0, Ordering::Relaxed);
        }
        self.counters.errors.store(0, Ordering::Relaxed);
    }
}

impl BlockDevice for CountingDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        if self.is_closed() {
            return Err(BdevError::Closed);
        }
        Ok(Box::new(CountingChannel {
            inner: self.inner.channel()?,
            counters: Arc::clone(&self.counters),
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

struct CountingChannel {
    inner: Box<dyn IoChannel>,
    counters: Arc<Counters>,
    tokens: TokenMap<()>,
    scratch: Vec<Completion>,
}

impl IoChannel for CountingChannel {
    fn submit(&mut self, token: u64, op: IoOp) -> Result<(), Rejected> {
        let t = self.tokens.insert(token, ());
        self.inner.submit(t, op).inspect_err(|_| {
            self.tokens.remove(t);
        })
    }

    fn poll(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, BdevError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let r = self.inner.poll(&mut scratch, min);
        let mut n = 0;
        for mut c in scratch.drain(..) {
            if let Some((caller, ())) = self.tokens.remove(c.token) {
                c.token = caller;
            }
            self.counters.count(&c);
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

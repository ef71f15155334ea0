//! The error device: injects I/O failures by operation count, kind and byte range.
//!
//! A [`Fault`] says *which* requests fail (the Nth matching one, or every matching one; matching
//! by kind and by byte range) and *how* (`BdevError::Io` with a chosen errno; for writes,
//! optionally torn: the first blocks reach the inner device before the failure is reported).
//! Faults are armed and disarmed at runtime through a [`FaultHandle`] shared with the device, so a
//! test can let setup succeed and then fail, say, the 3rd write of the next operation.
//!
//! A failed request never reaches the inner device (except the torn prefix of a torn write), and
//! its failure is reported at completion (from `poll`), like a real I/O error. Requests the device
//! would reject anyway (misaligned, out of range, closed, queue full) are rejected as usual and
//! are not counted.
//!
//! Counting is atomic across all channels: every submitted request takes the device's rule lock
//! once, in submission order.

use crate::tokens::TokenMap;
use oxblob_bdev::{
    BdevError, BlockDevice, Completion, DeviceInfo, IoBuf, IoChannel, IoKind, IoOp, Rejected,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Which matching requests a [`Fault`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Only the Nth matching request (1-based) counted from when the fault was armed.
    Nth(u64),
    /// Every matching request.
    Always,
}

/// A failure to inject. Build it with [`Fault::nth`] or [`Fault::always`], narrow it with
/// [`Fault::kind`] and [`Fault::range`], and arm it with [`FaultHandle::arm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    when: When,
    kind: Option<IoKind>,
    range: Option<(u64, u64)>,
    errno: i32,
    torn_blocks: Option<u64>,
}

/// `EIO`, the default errno of an injected failure.
pub const EIO: i32 = 5;

impl Fault {
    /// Fails only the `n`th matching request (1-based) submitted after arming; then the fault is
    /// spent. `n == 0` never fires.
    pub fn nth(n: u64) -> Self {
        Fault {
            when: When::Nth(n),
            kind: None,
            range: None,
            errno: EIO,
            torn_blocks: None,
        }
    }

    /// Fails every matching request until disarmed.
    pub fn always() -> Self {
        Fault {
            when: When::Always,
            ..Fault::nth(0)
        }
    }

    /// Matches only requests of this kind (vectored reads and writes are reads and writes).
    pub fn kind(mut self, kind: IoKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Matches only requests touching at least one byte of `[offset, offset + len)`. Flushes
    /// touch no range and never match a ranged fault.
    pub fn range(mut self, offset: u64, len: u64) -> Self {
        self.range = Some((offset, len));
        self
    }

    /// The errno reported in `BdevError::Io` (default `EIO`).
    pub fn errno(mut self, errno: i32) -> Self {
        self.errno = errno;
        self
    }

    /// For writes: the first `blocks` blocks of a failed write reach the inner device before the
    /// failure is reported (a torn failed write). Other kinds are unaffected.
    pub fn torn(mut self, blocks: u64) -> Self {
        self.torn_blocks = Some(blocks);
        self
    }

    fn matches(&self, op: &IoOp) -> bool {
        if self.kind.is_some_and(|k| k != op.kind()) {
            return false;
        }
        match self.range {
            None => true,
            Some((off, len)) => {
                let (o, l) = (op.offset(), op.len());
                l > 0 && len > 0 && o < off.saturating_add(len) && off < o.saturating_add(l)
            }
        }
    }
}

/// Identifies an armed fault, to disarm it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

struct Rule {
    id: FaultId,
    fault: Fault,
    seen: u64,
}

struct FaultState {
    rules: Mutex<Vec<Rule>>,
    next_id: AtomicU64,
    injected: AtomicU64,
    checked: AtomicU64,
}

/// What a triggered fault asks for.
#[derive(Debug, Clone, Copy)]
struct Injection {
    errno: i32,
    torn_blocks: Option<u64>,
}

/// Shared control of an [`ErrorDevice`]'s faults; clone it freely, use it from any thread.
#[derive(Clone)]
pub struct FaultHandle {
    state: Arc<FaultState>,
}

impl FaultHandle {
    fn lock(&self) -> MutexGuard<'_, Vec<Rule>> {
        self.state.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms `fault`; it sees only requests submitted after this call.
    pub fn arm(&self, fault: Fault) -> FaultId {
        let id = FaultId(self.state.next_id.fetch_add(1, Ordering::Relaxed));
        self.lock().push(Rule { id, fault, seen: 0 });
        id
    }

    /// Disarms one fault. Returns false if it was not armed (already spent or disarmed).
    pub fn disarm(&self, id: FaultId) -> bool {
        let mut rules = self.lock();
        let before = rules.len();
        rules.retain(|r| r.id != id);
        rules.len() != before
    }

    /// Disarms every fault.
    pub fn disarm_all(&self) {
        self.lock().clear();
    }

    /// Number of faults armed (spent `nth` faults are gone).
    pub fn armed(&self) -> usize {
        self.lock().len()
    }

    /// Requests failed by injection so far.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// Requests that passed validation and were checked against the faults so far (failed or
    /// not): the count the `nth` faults run on, across all channels.
    pub fn requests_seen(&self) -> u64 {
        self.state.checked.load(Ordering::Relaxed)
    }

    /// Checks `op` against every armed fault (advancing their counters); the first that fires
    /// decides. Spent `nth` faults are removed.
    fn check(&self, op: &IoOp) -> Option<Injection> {
        let mut rules = self.lock();
        self.state.checked.fetch_add(1, Ordering::Relaxed);
        let mut hit = None;
        let mut spent = Vec::new();
        for rule in rules.iter_mut() {
            if !rule.fault.matches(op) {
                continue;
            }
            rule.seen += 1;
            let fires = match rule.fault.when {
                When::Always => true,
                When::Nth(n) => {
                    if rule.seen >= n {
                        spent.push(rule.id);
                    }
                    rule.seen == n
                }
            };
            if fires && hit.is_none() {
                hit = Some(Injection {
                    errno: rule.fault.errno,
                    torn_blocks: rule.fault.torn_blocks,
                });
            }
        }
        if !spent.is_empty() {
            rules.retain(|r| !spent.contains(&r.id));
        }
        if hit.is_some() {
            self.state.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }
}

/// A device that fails chosen requests. See the module docs.
pub struct ErrorDevice {
    inner: Arc<dyn BlockDevice>,
    info: DeviceInfo,
    faults: FaultHandle,
}

impl ErrorDevice {
    /// Wraps `inner` with no fault armed.
    pub fn new(inner: Arc<dyn BlockDevice>) -> Arc<Self> {
        let mut info = inner.info().clone();
        info.backend = "error".to_string();
        Arc::new(ErrorDevice {
            inner,
            info,
            faults: FaultHandle {
                state: Arc::new(FaultState {
                    rules: Mutex::new(Vec::new()),
                    next_id: AtomicU64::new(0),
                    injected: AtomicU64::new(0),
                    checked: AtomicU64::new(0),
                }),
            },
        })
    }

    /// The handle that arms and disarms this device's faults.
    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }
}

impl BlockDevice for ErrorDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        if self.is_closed() {
            return Err(BdevError::Closed);
        }
        Ok(Box::new(ErrorChannel {
            inner: self.inner.channel()?,
            device: Arc::clone(&self.inner),
            info: self.info.clone(),
            faults: self.faults.clone(),
            failed: VecDeque::new(),
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

/// What to do when an inner request completes.
enum Pending {
    /// Pass the completion on.
    Pass,
    /// The torn prefix of a failed write landed; report the failure with the original request.
    Torn { op: IoOp, errno: i32 },
}

struct ErrorChannel {
    inner: Box<dyn IoChannel>,
    device: Arc<dyn BlockDevice>,
    info: DeviceInfo,
    faults: FaultHandle,
    failed: VecDeque<Completion>,
    tokens: TokenMap<Pending>,
    scratch: Vec<Completion>,
}

fn io_error(op: &IoOp, errno: i32) -> BdevError {
    BdevError::Io {
        op: op.kind(),
        offset: op.offset(),
        errno,
    }
}

/// The first `blocks` blocks of a write's data, as one buffer.
fn torn_prefix(op: &IoOp, blocks: u64, block_size: u64) -> Option<IoBuf> {
    let want = usize::try_from(blocks.checked_mul(block_size)?).ok()?;
    let mut data = Vec::with_capacity(want);
    let bufs: &[IoBuf] = match op {
        IoOp::Write { buf, .. } => std::slice::from_ref(buf),
        IoOp::Writev { bufs, .. } => bufs,
        _ => return None,
    };
    for b in bufs {
        let take = (want - data.len()).min(b.len());
        data.extend_from_slice(&b[..take]);
        if data.len() == want {
            break;
        }
    }
    (!data.is_empty() && (data.len() as u64) < op.len()).then(|| IoBuf::from_slice(&data))
}

impl IoChannel for ErrorChannel {
    fn submit(&mut self, token: u64, op: IoOp) -> Result<(), Rejected> {
        if self.device.is_closed() {
            return Err(Rejected {
                error: BdevError::Closed,
                op,
            });
        }
        if self.in_flight() >= self.capacity() {
            return Err(Rejected {
                error: BdevError::QueueFull {
                    capacity: self.capacity(),
                },
                op,
            });
        }
        if let Err(error) = op.validate(&self.info) {
            return Err(Rejected { error, op });
        }
        let Some(inj) = self.faults.check(&op) else {
            let t = self.tokens.insert(token, Pending::Pass);
            return self.inner.submit(t, op).inspect_err(|_| {
                self.tokens.remove(t);
            });
        };
        let bs = u64::from(self.info.block_size);
        if let Some(prefix) = inj.torn_blocks.and_then(|n| torn_prefix(&op, n, bs)) {
            let offset = op.offset();
            let t = self.tokens.insert(
                token,
                Pending::Torn {
                    op,
                    errno: inj.errno,
                },
            );
            if self
                .inner
                .submit(
                    t,
                    IoOp::Write {
                        offset,
                        buf: prefix,
                    },
                )
                .is_err()
            {
                // The inner channel refused the prefix: fail the whole write untorn.
                if let Some((_, Pending::Torn { op, errno })) = self.tokens.remove(t) {
                    self.failed.push_back(Completion {
                        token,
                        result: Err(io_error(&op, errno)),
                        op,
                    });
                }
            }
            return Ok(());
        }
        self.failed.push_back(Completion {
            token,
            result: Err(io_error(&op, inj.errno)),
            op,
        });
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, BdevError> {
        let mut n = self.failed.len();
        out.extend(self.failed.drain(..));
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let r = self.inner.poll(&mut scratch, min.saturating_sub(n));
        for mut c in scratch.drain(..) {
            match self.tokens.remove(c.token) {
                Some((caller, Pending::Pass)) => c.token = caller,
                Some((caller, Pending::Torn { op, errno })) => {
                    c = Completion {
                        token: caller,
                        result: Err(io_error(&op, errno)),
                        op,
                    };
                }
                None => {}
            }
            out.push(c);
            n += 1;
        }
        self.scratch = scratch;
        r.map(|_| n)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.failed.len()
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

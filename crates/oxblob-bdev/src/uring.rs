//! The uring backend: a regular file or a block device driven by io_uring.
//!
//! The file is opened with `O_DIRECT` when asked (the default) and the file system accepts it:
//! the open is tried with `O_DIRECT` and one aligned block is read; if either answers `EINVAL`
//! (ramfs, some FUSE file systems, a block size below the device's) the device falls back to
//! buffered I/O and reports `caps.direct_io = false`. See [`FileOptions`] for the block size,
//! size and creation rules.
//!
//! **Each channel owns its own `IoUring`** (256 entries by default, which is also its request
//! capacity); channels share only the `File`. There is no lock anywhere on the I/O path.
//! In-flight requests live in a slab whose slot index is the SQE's `user_data`; the slot owns
//! the [`IoOp`] (and the iovec array of a vectored request), so every buffer stays alive and at
//! the same address while the kernel uses it.
//!
//! **Submission and reaping follow the device's load.** A read or write submitted to an idle
//! channel is held back: if the next [`IoChannel::poll`] waits for it and it is still alone,
//! the polling thread does it with one `pread`/`pwrite` — one system call per request at
//! queue depth 1, and 7–24% more 4 KiB `O_DIRECT` writes per second at that depth than
//! through the ring on a virtio disk (the same gap as fio's `psync` and `io_uring` engines
//! show there: a thread asleep in `pwrite` is woken by the interrupt's completion, one in
//! `io_uring_enter` only after the completion is posted as task work). A second request, a
//! flush or a `poll` that must not block sends it to the ring. While other requests of the
//! channel are in flight, `submit` enters
//! the ring at once, so a refill reaches the device as soon as a slot frees instead of waiting
//! for the next `poll` (as fio does with its default `iodepth_batch_submit=1`). `poll` first
//! reaps what the completion ring already holds and enters the kernel only when that is not
//! enough. The ring is set up with `COOP_TASKRUN` and `TASKRUN_FLAG`: completions are posted
//! by task work that runs only when the thread enters the kernel, and the flag tells a
//! submitting `io_uring_enter` to run it (`GETEVENTS`), so every submission also posts the
//! completions that are ready. Measured against holding refills until `poll` (and entering
//! without running task work): +15–25% IOPS at 4K QD32 on a virtio disk, and parity with fio
//! (`bench/README.md`).
//!
//! Reads and writes use `IORING_OP_READ`/`WRITE` (`READV`/`WRITEV` for vectored requests); a
//! short transfer is resubmitted for the remainder, and a transfer of zero bytes fails with
//! `EIO`. A flush is an `fdatasync` made by the thread that polls for it when nothing else of
//! the channel is in the kernel (io_uring would hand it to a worker thread: two context
//! switches more per flush), else `IORING_OP_FSYNC` with `DATASYNC`. Unmap is
//! `fallocate(PUNCH_HOLE|KEEP_SIZE)` and write-zeroes `fallocate(ZERO_RANGE|KEEP_SIZE)`, both
//! through `IORING_OP_FALLOCATE` (they work on block devices too); when the file system answers
//! `EOPNOTSUPP`, the same slot writes zero buffers instead, and the device remembers not to try
//! again. Negative results become [`BdevError::Io`] with the request's kind, offset and errno.
//!
//! [`BlockDevice::read_into`] (a read into the caller's own memory, for a reader that waits
//! for it anyway) is one `pread` on the shared file by the calling thread, outside the rings:
//! the ring would need the caller's memory for as long as the kernel may write into it, and
//! at queue depth 1 the system call is as fast (`bench/README.md`).
//!
//! Dropping a channel waits for every request still in flight, so the kernel never writes into
//! freed memory (if waiting itself fails, the buffers are leaked rather than freed).
//!
//! Pushing an SQE is the only `unsafe` in this module: the kernel reads and writes memory named
//! by raw pointers in the entry, which the slab keeps alive until the completion is reaped.

use crate::psync::{open_backing, zero_mode, FileOptions, FileShared, ZERO_CHUNK};
use crate::{
    BdevError, BlockDevice, Completion, DeviceInfo, IoBuf, IoChannel, IoKind, IoOp, Rejected,
};
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// Environment variable that, when set to anything but `""` or `"0"`, makes io_uring count as
/// unavailable (the `file:` spec then uses psync, and `uring:` fails).
pub const NO_URING_ENV: &str = "OXBLOB_NO_URING";

/// Largest byte count given to one SQE; longer transfers continue as "short" ones.
const MAX_SQE_BYTES: usize = 1 << 30;

/// Most iovecs given to one SQE (`IOV_MAX`); longer lists continue as "short" transfers.
const MAX_IOVECS: usize = 1024;

/// Smallest and largest ring size accepted in [`FileOptions::queue_depth`].
const QUEUE_DEPTH_RANGE: std::ops::RangeInclusive<u32> = 128..=32768;

/// Same layout as `struct iovec` (checked below) but made of plain integers, so the slab (and
/// with it the channel) stays `Send` without an `unsafe impl`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct IoVec {
    base: usize,
    len: usize,
}

const _: () = assert!(
    std::mem::size_of::<IoVec>() == std::mem::size_of::<libc::iovec>()
        && std::mem::align_of::<IoVec>() == std::mem::align_of::<libc::iovec>()
);

/// Why io_uring cannot be used here, or `None` if it can.
///
/// Checks [`NO_URING_ENV`] on every call; the kernel probe (ring setup plus the opcodes this
/// backend needs) runs once per process.
pub fn uring_unavailable_reason() -> Option<String> {
    if let Some(v) = std::env::var_os(NO_URING_ENV) {
        if !v.is_empty() && v != "0" {
            return Some(format!("{NO_URING_ENV} is set"));
        }
    }
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE.get_or_init(probe_kernel).clone()
}

fn probe_kernel() -> Option<String> {
    let ring: IoUring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => return Some(format!("io_uring_setup: {e}")),
    };
    let mut probe = io_uring::Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Some(format!("io_uring probe: {e}"));
    }
    let needed = [
        ("read", opcode::Read::CODE),
        ("write", opcode::Write::CODE),
        ("readv", opcode::Readv::CODE),
        ("writev", opcode::Writev::CODE),
        ("fsync", opcode::Fsync::CODE),
        ("fallocate", opcode::Fallocate::CODE),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(_, code)| !probe.is_supported(*code))
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!("kernel lacks io_uring ops: {}", missing.join(", ")))
    }
}

/// A file or block device accessed through io_uring, one ring per channel.
pub struct UringDevice {
    shared: Arc<FileShared>,
    path: PathBuf,
    queue_depth: u32,
    sqpoll: bool,
}

impl std::fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDevice")
            .field("path", &self.path)
            .field("info", &self.shared.info)
            .field("queue_depth", &self.queue_depth)
            .field("sqpoll", &self.sqpoll)
            .finish()
    }
}

impl UringDevice {
    /// Opens (or, with `opts.create_size`, creates) the file or block device at `path`.
    ///
    /// Fails with [`BdevError::Open`] if io_uring is unavailable (see
    /// [`uring_unavailable_reason`]) or the file cannot be opened, and with
    /// [`BdevError::Config`] for a bad block size or queue depth.
    pub fn open(path: impl AsRef<Path>, opts: &FileOptions) -> Result<Self, BdevError> {
        let path = path.as_ref();
        if !QUEUE_DEPTH_RANGE.contains(&opts.queue_depth) {
            return Err(BdevError::Config(format!(
                "{}: queue depth {} is outside {}..={}",
                path.display(),
                opts.queue_depth,
                QUEUE_DEPTH_RANGE.start(),
                QUEUE_DEPTH_RANGE.end()
            )));
        }
        if let Some(reason) = uring_unavailable_reason() {
            return Err(BdevError::Open {
                path: path.display().to_string(),
                message: format!("io_uring unavailable ({reason})"),
            });
        }
        let shared = Arc::new(open_backing(path, opts, "uring")?);
        let dev = UringDevice {
            shared,
            path: path.to_path_buf(),
            queue_depth: opts.queue_depth,
            sqpoll: opts.sqpoll,
        };
        // Fail at open rather than at the first channel if this ring configuration is refused.
        drop(dev.new_ring()?);
        Ok(dev)
    }

    /// The path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn new_ring(&self) -> Result<IoUring, BdevError> {
        let build = |coop: bool| -> io::Result<IoUring> {
            let mut b = IoUring::builder();
            if self.sqpoll {
                b.setup_sqpoll(1000);
            }
            if coop {
                // Kernel 5.19+; older kernels reject the flags and get a plain ring.
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            b.build(self.queue_depth)
        };
        build(true)
            .or_else(|_| build(false))
            .map_err(|e| BdevError::Open {
                path: self.path.display().to_string(),
                message: format!("io_uring_setup: {e}"),
            })
    }
}

impl BlockDevice for UringDevice {
    fn info(&self) -> &DeviceInfo {
        &self.shared.info
    }

    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        if self.is_closed() {
            return Err(BdevError::Closed);
        }
        let ring = self.new_ring()?;
        let cap = self.queue_depth as usize;
        let mut slots = Vec::with_capacity(cap);
        slots.resize_with(cap, || Slot {
            active: None,
            iov: Vec::new(),
        });
        Ok(Box::new(UringChannel {
            fd: types::Fd(self.shared.file.as_raw_fd()),
            shared: Arc::clone(&self.shared),
            ring,
            slots,
            free: (0..cap as u32).rev().collect(),
            in_flight: 0,
            unsubmitted: 0,
            cqes: Vec::with_capacity(cap),
            flushes: Vec::new(),
            lone: None,
            sqpoll: self.sqpoll,
        }))
    }

    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<bool, BdevError> {
        self.shared.read_into(offset, dst)
    }
}

/// A request in flight.
struct Active {
    token: u64,
    op: IoOp,
    /// Bytes transferred so far (reads, writes, and zero-buffer writes).
    done: u64,
    /// Set when an unmap or write-zeroes is carried out by writing this zero buffer.
    zero: Option<IoBuf>,
}

/// One slab entry; `iov` keeps its allocation between requests.
struct Slot {
    active: Option<Active>,
    iov: Vec<IoVec>,
}

/// Fills `iov` with the part of `bufs` after the first `skip` bytes (at most [`MAX_IOVECS`]).
fn fill_iovecs(iov: &mut Vec<IoVec>, bufs: &mut [IoBuf], mut skip: u64) {
    iov.clear();
    for b in bufs.iter_mut() {
        let len = b.len() as u64;
        if skip >= len {
            skip -= len;
            continue;
        }
        let rest = &mut b[skip as usize..];
        skip = 0;
        iov.push(IoVec {
            base: rest.as_mut_ptr() as usize,
            len: rest.len(),
        });
        if iov.len() == MAX_IOVECS {
            break;
        }
    }
}

/// The SQE for the current step of the request in `slot`.
fn build_entry(fd: types::Fd, idx: usize, slot: &mut Slot) -> Option<squeue::Entry> {
    let a = slot.active.as_mut()?;
    let done = a.done;
    let kind = a.op.kind();
    let total = a.op.len();
    let entry = match &mut a.op {
        IoOp::Read { offset, buf } => {
            let rest = &mut buf[done as usize..];
            let len = rest.len().min(MAX_SQE_BYTES) as u32;
            opcode::Read::new(fd, rest.as_mut_ptr(), len)
                .offset(*offset + done)
                .build()
        }
        IoOp::Write { offset, buf } => {
            let rest = &buf[done as usize..];
            let len = rest.len().min(MAX_SQE_BYTES) as u32;
            opcode::Write::new(fd, rest.as_ptr(), len)
                .offset(*offset + done)
                .build()
        }
        IoOp::Readv { offset, bufs } => {
            fill_iovecs(&mut slot.iov, bufs, done);
            opcode::Readv::new(
                fd,
                slot.iov.as_ptr().cast::<libc::iovec>(),
                slot.iov.len() as u32,
            )
            .offset(*offset + done)
            .build()
        }
        IoOp::Writev { offset, bufs } => {
            fill_iovecs(&mut slot.iov, bufs, done);
            opcode::Writev::new(
                fd,
                slot.iov.as_ptr().cast::<libc::iovec>(),
                slot.iov.len() as u32,
            )
            .offset(*offset + done)
            .build()
        }
        IoOp::Flush => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        IoOp::Unmap { offset, len } | IoOp::WriteZeroes { offset, len } => match &a.zero {
            Some(z) => {
                let n = (total - done).min(z.len() as u64) as u32;
                opcode::Write::new(fd, z.as_ptr(), n)
                    .offset(*offset + done)
                    .build()
            }
            None => opcode::Fallocate::new(fd, *len)
                .offset(*offset)
                .mode(zero_mode(kind))
                .build(),
        },
    };
    Some(entry.user_data(idx as u64))
}

/// A channel of a [`UringDevice`]: one ring and a slab of requests in flight.
struct UringChannel {
    fd: types::Fd,
    shared: Arc<FileShared>,
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    /// SQEs pushed since the last `io_uring_enter`.
    unsubmitted: usize,
    cqes: Vec<(u64, i32)>,
    /// Flushes submitted but not yet pushed to the ring (slot indices): see
    /// [`UringChannel::start_flushes`].
    flushes: Vec<usize>,
    /// A read or write submitted to an idle channel and not yet pushed to the ring (slot
    /// index): see [`UringChannel::start_lone`].
    lone: Option<usize>,
    /// The ring has a kernel submission thread: every request goes to the ring at once.
    sqpoll: bool,
}

fn enter_error(e: &io::Error) -> BdevError {
    BdevError::Io {
        op: IoKind::Read,
        offset: 0,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

impl UringChannel {
    /// Starts the flushes [`IoChannel::submit`] held back. io_uring always hands an fsync to
    /// a kernel worker thread (io-wq), which costs two context switches and a wake-up per
    /// flush; when nothing else of this channel is in the kernel, the flush is done here
    /// instead, as one `fdatasync` on the polling thread (the same operation with the same
    /// meaning: every write completed before it is durable). Otherwise the flushes go to the
    /// ring like any request — always when `wait` is false (a `poll` that must not block).
    /// Completions of flushes done here are appended to `out`.
    fn start_flushes(&mut self, out: &mut Vec<Completion>, wait: bool) -> usize {
        if self.flushes.is_empty() {
            return 0;
        }
        let flushes = std::mem::take(&mut self.flushes);
        if wait && self.in_flight == flushes.len() {
            let r = self.shared.file.sync_data().map_err(|e| BdevError::Io {
                op: IoKind::Flush,
                offset: 0,
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            });
            let mut n = 0;
            for idx in flushes {
                if let Some(c) = self.finish(idx, r.clone()) {
                    out.push(c);
                    n += 1;
                }
            }
            return n;
        }
        let mut n = 0;
        for idx in flushes {
            if let Err(e) = self.push(idx) {
                n += self.fail_slot(idx, &e, out);
            }
        }
        n
    }

    /// Pushes the held-back lone request, if any, to the ring.
    fn push_lone(&mut self, out: &mut Vec<Completion>) -> usize {
        let Some(idx) = self.lone.take() else {
            return 0;
        };
        match self.push(idx) {
            Ok(()) => 0,
            Err(e) => self.fail_slot(idx, &e, out),
        }
    }

    /// Starts the lone request [`IoChannel::submit`] held back. When it is the only request
    /// of the channel and the caller waits for it (`wait`), it is one `pread`/`pwrite` on the
    /// polling thread: the thread sleeps in the system call and the device's interrupt wakes
    /// it, where through the ring the completion is posted as task work and the thread woken
    /// from `io_uring_enter` — 6–10 µs more per 4 KiB `O_DIRECT` write on a virtio disk,
    /// which a synced commit (one write, one flush) pays every time. Otherwise it goes to the
    /// ring like any request. Completions are appended to `out`.
    fn start_lone(&mut self, out: &mut Vec<Completion>, wait: bool) -> usize {
        let Some(idx) = self.lone else {
            return 0;
        };
        if !(wait && self.in_flight == 1) {
            return self.push_lone(out);
        }
        self.lone = None;
        let Some(a) = self.slots[idx].active.as_mut() else {
            return 0;
        };
        let r = self
            .shared
            .execute(&mut a.op)
            .map_err(|e| crate::psync::io_error(&a.op, &e));
        match self.finish(idx, r) {
            Some(c) => {
                out.push(c);
                1
            }
            None => 0,
        }
    }

    /// Fails the request in slot `idx` with `e` (a push that could not be made).
    fn fail_slot(&mut self, idx: usize, e: &io::Error, out: &mut Vec<Completion>) -> usize {
        let Some(a) = self.slots[idx].active.as_ref() else {
            return 0;
        };
        let err = BdevError::Io {
            op: a.op.kind(),
            offset: a.op.offset(),
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        };
        match self.finish(idx, Err(err)) {
            Some(c) => {
                out.push(c);
                1
            }
            None => 0,
        }
    }

    /// Pushes the SQE for the current step of slot `idx`.
    fn push(&mut self, idx: usize) -> io::Result<()> {
        let entry = build_entry(self.fd, idx, &mut self.slots[idx])
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        if self.ring.submission().is_full() {
            self.ring.submit()?;
            self.unsubmitted = 0;
        }
        let mut sq = self.ring.submission();
        // SAFETY: every pointer in `entry` (data buffer, iovec array, zero buffer) points into
        // memory owned by `self.slots[idx]`, which stays in the slab — neither dropped, moved out
        // nor resized — until the completion carrying `user_data == idx` has been reaped in
        // `handle`. Channels wait for all in-flight requests in `Drop` (or leak the slab), so the
        // memory outlives the kernel's use of it. The fd is kept open by `self.shared`.
        #[allow(unsafe_code)]
        let pushed = unsafe { sq.push(&entry) };
        drop(sq);
        pushed.map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))?;
        self.unsubmitted += 1;
        Ok(())
    }

    /// Frees slot `idx` and returns its completion.
    fn finish(&mut self, idx: usize, result: Result<(), BdevError>) -> Option<Completion> {
        let a = self.slots[idx].active.take()?;
        self.free.push(idx as u32);
        self.in_flight -= 1;
        Some(Completion {
            token: a.token,
            result,
            op: a.op,
        })
    }

    /// Handles one CQE; returns the completion if the request is finished.
    fn handle(&mut self, user_data: u64, res: i32) -> Option<Completion> {
        let idx = usize::try_from(user_data).ok()?;
        let a = self.slots.get_mut(idx)?.active.as_mut()?;
        let kind = a.op.kind();
        let offset = a.op.offset();
        let io_err = |errno| BdevError::Io {
            op: kind,
            offset,
            errno,
        };
        if res < 0 {
            let errno = -res;
            if errno == libc::EAGAIN || errno == libc::EINTR {
                return match self.push(idx) {
                    Ok(()) => None,
                    Err(e) => self.finish(idx, Err(io_err(e.raw_os_error().unwrap_or(libc::EIO)))),
                };
            }
            if matches!(kind, IoKind::Unmap | IoKind::WriteZeroes)
                && a.zero.is_none()
                && errno == libc::EOPNOTSUPP
            {
                self.shared
                    .unsupported_flag(kind)
                    .store(true, Ordering::Relaxed);
                a.zero = Some(IoBuf::zeroed((a.op.len() as usize).min(ZERO_CHUNK)));
                a.done = 0;
                return match self.push(idx) {
                    Ok(()) => None,
                    Err(e) => self.finish(idx, Err(io_err(e.raw_os_error().unwrap_or(libc::EIO)))),
                };
            }
            return self.finish(idx, Err(io_err(errno)));
        }
        let moves_data = !matches!(kind, IoKind::Flush | IoKind::Unmap | IoKind::WriteZeroes)
            || a.zero.is_some();
        if !moves_data {
            return self.finish(idx, Ok(()));
        }
        if res == 0 {
            return self.finish(idx, Err(io_err(libc::EIO)));
        }
        a.done += res as u64;
        if a.done < a.op.len() {
            return match self.push(idx) {
                Ok(()) => None,
                Err(e) => self.finish(idx, Err(io_err(e.raw_os_error().unwrap_or(libc::EIO)))),
            };
        }
        self.finish(idx, Ok(()))
    }

    /// Reaps every available CQE; returns how many completions were appended to `out`.
    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result())),
        );
        let mut n = 0;
        for &(user_data, res) in &cqes {
            if let Some(c) = self.handle(user_data, res) {
                out.push(c);
                n += 1;
            }
        }
        self.cqes = cqes;
        n
    }

    /// One `io_uring_enter`: submits what is queued and waits for `want` CQEs.
    fn enter(&mut self, want: usize) -> io::Result<()> {
        if want == 0 && self.unsubmitted == 0 {
            return Ok(());
        }
        match self.ring.submit_and_wait(want) {
            Ok(_) => {
                self.unsubmitted = 0;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl IoChannel for UringChannel {
    fn submit(&mut self, token: u64, op: IoOp) -> Result<(), Rejected> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Rejected {
                error: BdevError::Closed,
                op,
            });
        }
        if let Err(error) = op.validate(&self.shared.info) {
            return Err(Rejected { error, op });
        }
        let Some(idx) = self.free.pop() else {
            return Err(Rejected {
                error: BdevError::QueueFull {
                    capacity: self.slots.len(),
                },
                op,
            });
        };
        let idx = idx as usize;
        let kind = op.kind();
        let zero = if matches!(kind, IoKind::Unmap | IoKind::WriteZeroes)
            && self.shared.unsupported_flag(kind).load(Ordering::Relaxed)
        {
            Some(IoBuf::zeroed((op.len() as usize).min(ZERO_CHUNK)))
        } else {
            None
        };
        self.slots[idx].active = Some(Active {
            token,
            op,
            done: 0,
            zero,
        });
        self.in_flight += 1;
        if kind == IoKind::Flush {
            // Started by the next `poll` (`start_flushes`).
            self.flushes.push(idx);
            return Ok(());
        }
        if self.in_flight == 1 && !self.sqpoll && matches!(kind, IoKind::Read | IoKind::Write) {
            // Alone on an idle channel: started by the next `poll` (`start_lone`).
            self.lone = Some(idx);
            return Ok(());
        }
        if let Some(lone) = self.lone {
            // No longer alone: to the ring first (a failure is met again by `poll`).
            if self.push(lone).is_ok() {
                self.lone = None;
            }
        }
        if let Err(e) = self.push(idx) {
            let offset;
            let op = match self.slots[idx].active.take() {
                Some(a) => {
                    offset = a.op.offset();
                    a.op
                }
                None => {
                    offset = 0;
                    IoOp::Flush
                }
            };
            self.free.push(idx as u32);
            self.in_flight -= 1;
            return Err(Rejected {
                error: BdevError::Io {
                    op: kind,
                    offset,
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                },
                op,
            });
        }
        if self.in_flight > 1 {
            // Others are in flight: the device is busy and this request should join them now,
            // not at the next `poll` (see the module docs). The SQE is in the ring either way;
            // an error here is met again, and returned, by the next `poll`.
            if let Err(e) = self.enter(0) {
                tracing::debug!(error = %e, "io_uring_enter on submit failed; left to poll");
            }
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, BdevError> {
        let min = min.min(self.in_flight);
        let mut got = self.start_lone(out, min > 0);
        got += self.start_flushes(out, min > 0);
        got += self.reap(out);
        if got >= min {
            // Enough was already there: only queued submissions need the kernel.
            if self.unsubmitted > 0 {
                self.enter(0).map_err(|e| enter_error(&e))?;
                got += self.reap(out);
            }
            return Ok(got);
        }
        loop {
            self.enter(min - got).map_err(|e| enter_error(&e))?;
            got += self.reap(out);
            if got >= min {
                return Ok(got);
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn capacity(&self) -> usize {
        self.slots.len()
    }
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        let mut sink = Vec::new();
        self.push_lone(&mut sink);
        self.start_flushes(&mut sink, true);
        while self.in_flight > 0 {
            if let Err(e) = self.enter(1) {
                tracing::error!(error = %e, in_flight = self.in_flight,
                    "cannot wait for io_uring requests; leaking their buffers");
                std::mem::forget(std::mem::take(&mut self.slots));
                return;
            }
            self.reap(&mut sink);
            sink.clear();
        }
    }
}

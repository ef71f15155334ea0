//! The psync backend: a regular file or a block device through `pread`/`pwrite`.
//!
//! This is the fallback for machines where io_uring is unavailable (old kernels, seccomp
//! filters, `io_uring_disabled` sysctl, or `OXBLOB_NO_URING=1`). It opens the file the same way
//! as the uring backend (same `O_DIRECT` probe, block size and size rules; see [`FileOptions`])
//! and executes requests one after the other inside [`IoChannel::poll`]; `submit` only queues.
//! A flush is `fdatasync`, unmap is `fallocate(PUNCH_HOLE|KEEP_SIZE)` and write-zeroes is
//! `fallocate(ZERO_RANGE)`; when the file system refuses either with `EOPNOTSUPP`, zero buffers
//! are written instead.
//!
//! This module also holds what both file backends share: [`FileOptions`], opening and probing
//! the file, and the `fallocate` call.
//!
//! Concurrency: every channel shares the one `File` (positional I/O needs no lock); each channel
//! has its own queue.

use crate::{
    check_read_into, BdevError, BlockDevice, Capabilities, Completion, DeviceInfo, IoBuf,
    IoChannel, IoKind, IoOp, Rejected,
};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Requests a psync channel holds at once.
pub const PSYNC_QUEUE_DEPTH: usize = 256;

/// Size of the zero buffer used when the file system cannot zero a range by itself.
pub(crate) const ZERO_CHUNK: usize = 1 << 20;

/// How to open a file or block device for the uring and psync backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// Try `O_DIRECT` (default `true`). When the file system refuses it, the device falls back to
    /// buffered I/O and reports `caps.direct_io = false`.
    pub direct: bool,
    /// Logical block size in bytes (a power of two from 512 to 65536). Default: the block
    /// device's logical block size (`BLKSSZGET`), or 4096 for a regular file.
    pub block_size: Option<u32>,
    /// Create the file if it is missing, and grow it to at least this many bytes. Never shrinks
    /// a file. For a block device it is an error if the device is smaller.
    pub create_size: Option<u64>,
    /// The bdev name reported by `info().name` (default: the path).
    pub name: Option<String>,
    /// uring only: ring entries, which is also the most requests in flight on one channel
    /// (default 256, at least 128, a power of two is not required).
    pub queue_depth: u32,
    /// uring only: use a kernel submission-polling thread (`IORING_SETUP_SQPOLL`, default off).
    pub sqpoll: bool,
    /// For the automatic `file:` backend: skip io_uring and use psync (default `false`).
    pub force_psync: bool,
    /// Take an exclusive advisory lock (`flock`) on the file for as long as the device is open
    /// (default `true`), so a second process — or a second open in this one — gets
    /// [`BdevError::InUse`] instead of two writers silently corrupting one image.
    pub lock: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            direct: true,
            block_size: None,
            create_size: None,
            name: None,
            queue_depth: 256,
            sqpoll: false,
            force_psync: false,
            lock: true,
        }
    }
}

/// What both file backends share: the open file and the device's identity.
#[derive(Debug)]
pub(crate) struct FileShared {
    pub(crate) file: File,
    pub(crate) info: DeviceInfo,
    pub(crate) closed: AtomicBool,
    /// Set once the file system answered `EOPNOTSUPP` to a `fallocate` zeroing mode.
    pub(crate) no_zero_range: AtomicBool,
    pub(crate) no_punch_hole: AtomicBool,
}

fn open_err(path: &Path, e: &io::Error) -> BdevError {
    BdevError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn open_rw(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// `BLKGETSIZE64` from `<linux/fs.h>`: `_IOR(0x12, 114, size_t)` (not exported by `libc`).
const BLKGETSIZE64: libc::Ioctl = libc::_IOR::<libc::size_t>(0x12, 114);

/// Logical block size and byte size of a block device.
#[allow(unsafe_code)]
fn blockdev_geometry(file: &File) -> io::Result<(u32, u64)> {
    let fd = file.as_raw_fd();
    let mut ssz: libc::c_int = 0;
    // SAFETY: `fd` is an open descriptor owned by `file`; BLKSSZGET writes one `int` through the
    // pointer, which points at a live local of that type.
    let r = unsafe { libc::ioctl(fd, libc::BLKSSZGET, &mut ssz as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut size: u64 = 0;
    // SAFETY: as above; BLKGETSIZE64 writes one `u64` through a pointer to a live local `u64`.
    let r = unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut size as *mut u64) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let ssz = u32::try_from(ssz).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok((ssz, size))
}

/// Takes an exclusive, non-blocking `flock(2)` on `file`; `Ok(false)` when another open file
/// description holds it. The lock goes away when the file is closed.
#[allow(unsafe_code)]
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: plain system call on a descriptor owned by `file`; no pointers are passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// `fallocate(2)` on `file`.
#[allow(unsafe_code)]
pub(crate) fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: plain system call on a descriptor owned by `file`; no pointers are passed.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, off, len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads one block at offset 0 to see whether `O_DIRECT` I/O with this block size works.
fn direct_probe(file: &File, block_size: u32) -> io::Result<()> {
    let mut buf = IoBuf::zeroed(block_size as usize);
    file.read_at(&mut buf, 0).map(|_| ())
}

/// Opens `path` for a file backend named `backend` ("uring" or "psync").
pub(crate) fn open_backing(
    path: &Path,
    opts: &FileOptions,
    backend: &str,
) -> Result<FileShared, BdevError> {
    if let Some(bs) = opts.block_size {
        if !(512..=65536).contains(&bs) || !bs.is_power_of_two() {
            return Err(BdevError::Config(format!(
                "{}: block size {bs} must be a power of two from 512 to 65536",
                path.display()
            )));
        }
    }
    // Create or grow first, with an ordinary descriptor.
    let meta = match std::fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound && opts.create_size.is_some() => None,
        Err(e) => return Err(open_err(path, &e)),
    };
    let is_blockdev = meta
        .as_ref()
        .is_some_and(|m| m.file_type().is_block_device());
    if let (Some(want), false) = (opts.create_size, is_blockdev) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| open_err(path, &e))?;
        let len = f.metadata().map_err(|e| open_err(path, &e))?.len();
        if len < want {
            f.set_len(want).map_err(|e| open_err(path, &e))?;
        }
    }
    if let Some(m) = &meta {
        if !m.file_type().is_block_device() && !m.file_type().is_file() {
            return Err(BdevError::Open {
                path: path.display().to_string(),
                message: "not a regular file or a block device".to_string(),
            });
        }
    }

    let mut direct = false;
    let mut file = None;
    if opts.direct {
        match open_rw(path, true) {
            Ok(f) => file = Some(f),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(open_err(path, &e)),
        }
    }
    let mut file = match file {
        Some(f) => {
            direct = true;
            f
        }
        None => open_rw(path, false).map_err(|e| open_err(path, &e))?,
    };

    if opts.lock {
        match try_lock_exclusive(&file) {
            Ok(true) => {}
            Ok(false) => {
                return Err(BdevError::InUse {
                    path: path.display().to_string(),
                })
            }
            Err(e) => return Err(open_err(path, &e)),
        }
    }

    let (dev_bs, size) = if is_blockdev {
        blockdev_geometry(&file).map_err(|e| open_err(path, &e))?
    } else {
        (4096, file.metadata().map_err(|e| open_err(path, &e))?.len())
    };
    let block_size = opts.block_size.unwrap_or(dev_bs);

    if direct {
        if let Err(e) = direct_probe(&file, block_size) {
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(open_err(path, &e));
            }
            file = open_rw(path, false).map_err(|e| open_err(path, &e))?;
            direct = false;
        }
    }
    if !direct && opts.direct {
        tracing::debug!(path = %path.display(), "O_DIRECT refused; using buffered I/O");
    }

    if let (Some(want), true) = (opts.create_size, is_blockdev) {
        if size < want {
            return Err(BdevError::Open {
                path: path.display().to_string(),
                message: format!("block device has {size} bytes, fewer than the {want} asked for"),
            });
        }
    }
    let num_blocks = size / u64::from(block_size);
    if num_blocks == 0 {
        return Err(BdevError::Open {
            path: path.display().to_string(),
            message: format!("{size} bytes is smaller than one {block_size}-byte block"),
        });
    }
    Ok(FileShared {
        file,
        info: DeviceInfo {
            name: opts
                .name
                .clone()
                .unwrap_or_else(|| path.display().to_string()),
            backend: backend.to_string(),
            block_size,
            num_blocks,
            caps: Capabilities {
                volatile_write_cache: true,
                atomic_write_unit: block_size,
                buf_align: if direct { block_size.min(4096) } else { 1 },
                unmap: true,
                write_zeroes: true,
                direct_io: direct,
            },
        },
        closed: AtomicBool::new(false),
        no_zero_range: AtomicBool::new(false),
        no_punch_hole: AtomicBool::new(false),
    })
}

/// The `fallocate` mode for an unmap or a write-zeroes.
pub(crate) fn zero_mode(kind: IoKind) -> libc::c_int {
    if kind == IoKind::Unmap {
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
    } else {
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
    }
}

impl FileShared {
    /// The flag remembering that the file system refuses this zeroing mode.
    pub(crate) fn unsupported_flag(&self, kind: IoKind) -> &AtomicBool {
        if kind == IoKind::Unmap {
            &self.no_punch_hole
        } else {
            &self.no_zero_range
        }
    }

    fn write_zero_buffers(&self, offset: u64, len: u64) -> io::Result<()> {
        let chunk = IoBuf::zeroed(ZERO_CHUNK.min(len as usize));
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = (end - at).min(chunk.len() as u64) as usize;
            self.file.write_all_at(&chunk[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// [`BlockDevice::read_into`] for both file backends: one `pread` loop (short reads
    /// continue; end of file is `EIO`, as for a read request).
    pub(crate) fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<bool, BdevError> {
        let closed = self.closed.load(Ordering::Acquire);
        if !check_read_into(&self.info, closed, offset, dst)? {
            return Ok(false);
        }
        self.file
            .read_exact_at(dst, offset)
            .map_err(|e| BdevError::Io {
                op: IoKind::Read,
                offset,
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            })?;
        Ok(true)
    }

    /// Carries out `op` with `pread`/`pwrite`/`fdatasync`/`fallocate` on the calling thread.
    pub(crate) fn execute(&self, op: &mut IoOp) -> io::Result<()> {
        match op {
            IoOp::Read { offset, buf } => self.file.read_exact_at(buf, *offset),
            IoOp::Write { offset, buf } => self.file.write_all_at(buf, *offset),
            IoOp::Readv { offset, bufs } => {
                let mut at = *offset;
                for b in bufs.iter_mut() {
                    self.file.read_exact_at(b, at)?;
                    at += b.len() as u64;
                }
                Ok(())
            }
            IoOp::Writev { offset, bufs } => {
                let mut at = *offset;
                for b in bufs.iter() {
                    self.file.write_all_at(b, at)?;
                    at += b.len() as u64;
                }
                Ok(())
            }
            IoOp::Flush => self.file.sync_data(),
            IoOp::Unmap { .. } | IoOp::WriteZeroes { .. } => {
                let kind = op.kind();
                let (offset, len) = (op.offset(), op.len());
                let flag = self.unsupported_flag(kind);
                if !flag.load(Ordering::Relaxed) {
                    match fallocate(&self.file, zero_mode(kind), offset, len) {
                        Ok(()) => return Ok(()),
                        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                            flag.store(true, Ordering::Relaxed);
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.write_zero_buffers(offset, len)
            }
        }
    }
}

/// Turns an I/O error into [`BdevError::Io`] (a short read at end of file counts as `EIO`).
pub(crate) fn io_error(op: &IoOp, e: &io::Error) -> BdevError {
    BdevError::Io {
        op: op.kind(),
        offset: op.offset(),
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// A file or block device accessed with `pread`/`pwrite`.
pub struct PsyncDevice {
    shared: Arc<FileShared>,
    path: PathBuf,
}

impl PsyncDevice {
    /// Opens (or, with `opts.create_size`, creates) the file or block device at `path`.
    pub fn open(path: impl AsRef<Path>, opts: &FileOptions) -> Result<Self, BdevError> {
        let path = path.as_ref();
        Ok(PsyncDevice {
            shared: Arc::new(open_backing(path, opts, "psync")?),
            path: path.to_path_buf(),
        })
    }

    /// The path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for PsyncDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsyncDevice")
            .field("path", &self.path)
            .field("info", &self.shared.info)
            .finish()
    }
}

impl BlockDevice for PsyncDevice {
    fn info(&self) -> &DeviceInfo {
        &self.shared.info
    }

    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        if self.is_closed() {
            return Err(BdevError::Closed);
        }
        Ok(Box::new(PsyncChannel {
            shared: Arc::clone(&self.shared),
            queued: VecDeque::with_capacity(PSYNC_QUEUE_DEPTH),
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

/// A channel of a [`PsyncDevice`]: a queue executed at `poll`.
struct PsyncChannel {
    shared: Arc<FileShared>,
    queued: VecDeque<(u64, IoOp)>,
}

impl IoChannel for PsyncChannel {
    fn submit(&mut self, token: u64, op: IoOp) -> Result<(), Rejected> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Rejected {
                error: BdevError::Closed,
                op,
            });
        }
        if self.queued.len() >= PSYNC_QUEUE_DEPTH {
            return Err(Rejected {
                error: BdevError::QueueFull {
                    capacity: PSYNC_QUEUE_DEPTH,
                },
                op,
            });
        }
        if let Err(error) = op.validate(&self.shared.info) {
            return Err(Rejected { error, op });
        }
        self.queued.push_back((token, op));
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, _min: usize) -> Result<usize, BdevError> {
        let n = self.queued.len();
        out.reserve(n);
        for (token, mut op) in self.queued.drain(..) {
            let result = self.shared.execute(&mut op).map_err(|e| io_error(&op, &e));
            out.push(Completion { token, result, op });
        }
        Ok(n)
    }

    fn in_flight(&self) -> usize {
        self.queued.len()
    }

    fn capacity(&self) -> usize {
        PSYNC_QUEUE_DEPTH
    }
}

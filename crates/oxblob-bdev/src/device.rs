//! The [`BlockDevice`] and [`IoChannel`] traits and the request types they share.

use crate::{BdevError, IoBuf, IO_BUF_ALIGN};
use std::fmt;

/// What a device can do and what it needs from its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Completed writes may sit in a volatile cache until a flush completes.
    pub volatile_write_cache: bool,
    /// Largest aligned write, in bytes, that the device never tears (at least one block).
    pub atomic_write_unit: u32,
    /// Required alignment of buffer addresses, in bytes.
    pub buf_align: u32,
    /// `unmap` is supported (afterwards the range reads as zeroes).
    pub unmap: bool,
    /// `write_zeroes` is supported.
    pub write_zeroes: bool,
    /// The backend bypasses the host page cache (`O_DIRECT`).
    pub direct_io: bool,
}

/// Identity and geometry of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The bdev name (from a JSON config, or derived from the spec).
    pub name: String,
    /// Backend name: "malloc", "uring", "psync", or a wrapper's name.
    pub backend: String,
    /// Logical block size in bytes: offsets and lengths are multiples of it.
    pub block_size: u32,
    /// Number of logical blocks.
    pub num_blocks: u64,
    /// What the device can do.
    pub caps: Capabilities,
}

impl DeviceInfo {
    /// Device size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks * u64::from(self.block_size)
    }
}

/// The kind of an I/O request, used in errors and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoKind {
    /// A read.
    Read,
    /// A write.
    Write,
    /// A flush of the volatile write cache.
    Flush,
    /// A deallocation of a range (reads as zeroes afterwards).
    Unmap,
    /// Writing zeroes over a range without a data buffer.
    WriteZeroes,
}

impl fmt::Display for IoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoKind::Read => "read",
            IoKind::Write => "write",
            IoKind::Flush => "flush",
            IoKind::Unmap => "unmap",
            IoKind::WriteZeroes => "write-zeroes",
        })
    }
}

/// One I/O request. The buffers are owned by the request while it is in flight and come back in
/// its [`Completion`].
#[derive(Debug)]
pub enum IoOp {
    /// Read `buf.len()` bytes at `offset` into `buf`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Destination.
        buf: IoBuf,
    },
    /// Write `buf` at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Source.
        buf: IoBuf,
    },
    /// Read consecutive bytes at `offset` into several buffers in order.
    Readv {
        /// Byte offset.
        offset: u64,
        /// Destinations, filled in order.
        bufs: Vec<IoBuf>,
    },
    /// Write several buffers in order as one request at `offset`.
    Writev {
        /// Byte offset.
        offset: u64,
        /// Sources, written in order.
        bufs: Vec<IoBuf>,
    },
    /// Make every write completed before this flush was submitted durable.
    Flush,
    /// Deallocate `len` bytes at `offset`; they read as zeroes afterwards.
    Unmap {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
    },
    /// Write `len` zero bytes at `offset`.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
    },
}

impl IoOp {
    /// The request's kind.
    pub fn kind(&self) -> IoKind {
        match self {
            IoOp::Read { .. } | IoOp::Readv { .. } => IoKind::Read,
            IoOp::Write { .. } | IoOp::Writev { .. } => IoKind::Write,
            IoOp::Flush => IoKind::Flush,
            IoOp::Unmap { .. } => IoKind::Unmap,
            IoOp::WriteZeroes { .. } => IoKind::WriteZeroes,
        }
    }

    /// Byte offset (0 for flush).
    pub fn offset(&self) -> u64 {
        match self {
            IoOp::Read { offset, .. }
            | IoOp::Write { offset, .. }
            | IoOp::Readv { offset, .. }
            | IoOp::Writev { offset, .. }
            | IoOp::Unmap { offset, .. }
            | IoOp::WriteZeroes { offset, .. } => *offset,
            IoOp::Flush => 0,
        }
    }

    /// Byte length (0 for flush).
    pub fn len(&self) -> u64 {
        match self {
            IoOp::Read { buf, .. } | IoOp::Write { buf, .. } => buf.len() as u64,
            IoOp::Readv { bufs, .. } | IoOp::Writev { bufs, .. } => {
                bufs.iter().map(|b| b.len() as u64).sum()
            }
            IoOp::Unmap { len, .. } | IoOp::WriteZeroes { len, .. } => *len,
            IoOp::Flush => 0,
        }
    }

    /// True for a flush (the only request without a range).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the single buffer back out of a `Read` or `Write`.
    pub fn into_buf(self) -> Option<IoBuf> {
        match self {
            IoOp::Read { buf, .. } | IoOp::Write { buf, .. } => Some(buf),
            _ => None,
        }
    }

    /// Takes every buffer back out of the request, in order.
    pub fn into_bufs(self) -> Vec<IoBuf> {
        match self {
            IoOp::Read { buf, .. } | IoOp::Write { buf, .. } => vec![buf],
            IoOp::Readv { bufs, .. } | IoOp::Writev { bufs, .. } => bufs,
            _ => Vec::new(),
        }
    }

    /// Checks the request against a device's geometry: ranges inside the device, offsets,
    /// lengths and buffer addresses aligned, no empty transfer. Every backend and wrapper calls
    /// this before doing anything, so bad input is always the same typed error.
    pub fn validate(&self, info: &DeviceInfo) -> Result<(), BdevError> {
        let op = self.kind();
        if op == IoKind::Flush {
            return Ok(());
        }
        let bs = u64::from(info.block_size);
        let offset = self.offset();
        let len = self.len();
        if len == 0 {
            return Err(BdevError::Empty { op });
        }
        if offset % bs != 0 {
            return Err(BdevError::Misaligned {
                op,
                what: "offset",
                value: offset,
                align: bs,
            });
        }
        let check_buf = |b: &IoBuf| -> Result<(), BdevError> {
            if b.len() as u64 % bs != 0 {
                return Err(BdevError::Misaligned {
                    op,
                    what: "length",
                    value: b.len() as u64,
                    align: bs,
                });
            }
            let align = u64::from(info.caps.buf_align.max(1));
            let addr = b.as_ptr() as u64;
            if align as usize <= IO_BUF_ALIGN && addr % align != 0 {
                return Err(BdevError::Misaligned {
                    op,
                    what: "buffer address",
                    value: addr,
                    align,
                });
            }
            Ok(())
        };
        match self {
            IoOp::Read { buf, .. } | IoOp::Write { buf, .. } => check_buf(buf)?,
            IoOp::Readv { bufs, .. } | IoOp::Writev { bufs, .. } => {
                for b in bufs {
                    check_buf(b)?;
                }
            }
            _ => {
                if len % bs != 0 {
                    return Err(BdevError::Misaligned {
                        op,
                        what: "length",
                        value: len,
                        align: bs,
                    });
                }
            }
        }
        check_in_range(info, op, offset, len)
    }
}

/// A finished request: the caller's token, the result, and the request with its buffers.
#[derive(Debug)]
pub struct Completion {
    /// The token given at submit.
    pub token: u64,
    /// Success, or what failed.
    pub result: Result<(), BdevError>,
    /// The request, returned with its buffers (read data is in them).
    pub op: IoOp,
}

/// A request the channel refused at submit, returned to the caller with the reason.
#[derive(Debug)]
pub struct Rejected {
    /// Why the request was refused.
    pub error: BdevError,
    /// The request, so its buffers are not lost.
    pub op: IoOp,
}

/// A block device. Shared by every thread (`Send + Sync`); each thread does its I/O through its
/// own [`IoChannel`], obtained from [`BlockDevice::channel`].
pub trait BlockDevice: Send + Sync {
    /// Geometry and capabilities.
    fn info(&self) -> &DeviceInfo;

    /// A new I/O channel for the calling thread. Channels share no lock with each other on the
    /// I/O path; each has its own queue (an io_uring ring for the uring backend).
    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError>;

    /// Closes the device: channels refuse new requests with [`BdevError::Closed`]. Requests
    /// already in flight still complete. Idempotent.
    fn close(&self);

    /// True once [`BlockDevice::close`] was called.
    fn is_closed(&self) -> bool;

    /// Reads `dst.len()` bytes at `offset` straight into the caller's memory, on the calling
    /// thread and without a channel, when the backend can: `Ok(true)` once the bytes are in
    /// `dst`, `Ok(false)` when it cannot (the default, and for a `dst` whose address is not
    /// aligned as [`Capabilities::buf_align`] asks), and the caller then reads through a
    /// channel. `offset` and `dst.len()` follow the rules of a read request (see
    /// [`check_read_into`]); breaking them is an error, not `Ok(false)`.
    ///
    /// For a reader that waits for each read anyway and owns an aligned buffer: the bytes
    /// land where they are wanted, with no staging buffer and no copy. The file backends do
    /// it with one `pread` (at queue depth 1 as fast as a request through the ring, measured
    /// in `bench/README.md`); the RAM backend copies once. Wrappers that simulate faults or
    /// crashes, or count requests, keep the default, so their reads still pass through them.
    fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<bool, BdevError> {
        check_read_into(self.info(), self.is_closed(), offset, dst)?;
        Ok(false)
    }
}

/// `OutOfRange` unless `[offset, offset + len)` lies on the device.
fn check_in_range(info: &DeviceInfo, op: IoKind, offset: u64, len: u64) -> Result<(), BdevError> {
    let size = info.size_bytes();
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(BdevError::OutOfRange {
            op,
            offset,
            len,
            size,
        });
    }
    Ok(())
}

/// Checks a [`BlockDevice::read_into`] of `dst` at `offset` on a device with `info`, closed
/// or not: `Ok(true)` if it may go ahead, `Ok(false)` if only `dst`'s address is not aligned
/// as the device needs, and the error a read request with the same range would get (closed,
/// empty, misaligned offset or length, out of range) otherwise.
pub fn check_read_into(
    info: &DeviceInfo,
    closed: bool,
    offset: u64,
    dst: &[u8],
) -> Result<bool, BdevError> {
    if closed {
        return Err(BdevError::Closed);
    }
    let op = IoKind::Read;
    let bs = u64::from(info.block_size);
    let len = dst.len() as u64;
    if len == 0 {
        return Err(BdevError::Empty { op });
    }
    for (what, value) in [("offset", offset), ("length", len)] {
        if value % bs != 0 {
            return Err(BdevError::Misaligned {
                op,
                what,
                value,
                align: bs,
            });
        }
    }
    check_in_range(info, op, offset, len)?;
    let align = usize::try_from(info.caps.buf_align.max(1)).unwrap_or(usize::MAX);
    Ok(dst.as_ptr() as usize % align == 0)
}

/// A per-thread submission and completion queue. `Send` (it may move to another thread) but not
/// `Sync`: one thread uses a channel at a time.
///
/// Requests are started by [`IoChannel::submit`] and finish in any order; [`IoChannel::poll`]
/// reaps their [`Completion`]s. A channel accepts at least 128 requests in flight.
pub trait IoChannel: Send {
    /// Queues a request. The backend may start it at once or at the next `poll`. Validation
    /// errors, a full queue and a closed device return the request in [`Rejected`].
    fn submit(&mut self, token: u64, op: IoOp) -> Result<(), Rejected>;

    /// Starts every queued request, then reaps completions into `out` (appending), waiting until
    /// at least `min` have been reaped (`min` is capped at the number in flight). Returns how many
    /// were appended.
    fn poll(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, BdevError>;

    /// Requests submitted and not yet reaped.
    fn in_flight(&self) -> usize;

    /// Most requests this channel holds at once.
    fn capacity(&self) -> usize;
}

/// Rounds `value` up to a multiple of `align` (a power of two or any non-zero value).
pub fn round_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

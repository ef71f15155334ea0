//! The one conformance suite every backend and every wrapper must pass.
//!
//! Each check takes a factory, `make`, and calls it for a fresh device, so checks never see each
//! other's data. Checks **return** a [`ConformanceFailure`] naming the check instead of
//! panicking, so a test can also prove that a broken device fails. Run them all with
//! [`run_all`] (stops at the first failure) or [`run_each`] (reports every check):
//!
//! ```
//! use oxblob_bdev::{conformance, BlockDevice, MallocDevice};
//! use std::sync::Arc;
//! let make = || Arc::new(MallocDevice::new("t", 4096, 2048).unwrap()) as Arc<dyn BlockDevice>;
//! conformance::run_all(&make).unwrap();
//! ```
//!
//! What the suite requires of a device (see also the [`BlockDevice`] and [`IoChannel`] docs):
//!
//! | check | requirement |
//! |---|---|
//! | `geometry` | block size a power of two in 512..=65536; at least [`MIN_DEVICE_BYTES`] and [`MIN_DEVICE_BLOCKS`]; atomic write unit a non-zero multiple of the block size; buffer alignment a power of two no larger than [`IO_BUF_ALIGN`]; channel capacity at least 128 and nothing in flight on a fresh channel |
//! | `write_read` | writes of 1 block to 1 MiB at many offsets (first and last block included) read back byte for byte; overwrites too |
//! | `vectored` | `Writev` equals the concatenation of its buffers; `Readv` splits the same bytes back out |
//! | `unmap_zeroes` | after `Unmap` / `WriteZeroes` the range reads as zeroes and neighbours are untouched (each skipped where the capabilities say unsupported) |
//! | `queue_depth` | 128+ requests in flight on one channel; every token completes exactly once, with the right data |
//! | `errors` | out-of-range, misaligned offset, misaligned length and empty requests are rejected at submit with the matching [`BdevError`] variant and the request handed back |
//! | `closed` | after `close()`, submit is rejected with [`BdevError::Closed`]; `close` is idempotent |
//! | `queue_full` | a channel accepts exactly `capacity()` requests in flight and rejects the next with [`BdevError::QueueFull`] |
//! | `flush` | after a write and a flush complete, the data reads back (also through a new channel) |
//! | `threads` | 4 threads, each with its own channel, write and verify disjoint regions at once |
//! | `read_into` | [`BlockDevice::read_into`] of an aligned buffer, where the device does it, returns what channels wrote, byte for byte (first and last block included); a buffer at a misaligned address is declined (`Ok(false)`) where the device asks for alignment, and read correctly or declined where it does not; a bad range gets the error a read request would, and a closed device [`BdevError::Closed`] |
//!
//! Data is patterned (never zeroes) and derived from the offset and a generation number, so a
//! misplaced, stale or dropped write is caught.

use crate::{
    blocking, BdevError, BlockDevice, Completion, IoBuf, IoChannel, IoKind, IoOp, IO_BUF_ALIGN,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Smallest device the suite runs on: 8 MiB, and at least [`MIN_DEVICE_BLOCKS`] blocks.
pub const MIN_DEVICE_BYTES: u64 = 8 << 20;

/// Fewest blocks the suite runs on.
pub const MIN_DEVICE_BLOCKS: u64 = 512;

/// Largest number of requests the `queue_full` check fills a channel with; a larger capacity is
/// checked only up to 128 in flight.
const QUEUE_FULL_MAX: usize = 8192;

/// A failed conformance check: which one, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceFailure {
    /// The check's name (the first column of the table in the module docs).
    pub check: &'static str,
    /// What was expected and what happened.
    pub message: String,
}

impl fmt::Display for ConformanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance check '{}' failed: {}",
            self.check, self.message
        )
    }
}

impl std::error::Error for ConformanceFailure {}

/// A device factory: each call returns a fresh device.
pub type MakeDevice<'a> = &'a dyn Fn() -> Arc<dyn BlockDevice>;

/// A conformance check.
pub type Check = fn(MakeDevice<'_>) -> Result<(), ConformanceFailure>;

/// Every check, by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("geometry", geometry),
    ("write_read", write_read),
    ("vectored", vectored),
    ("unmap_zeroes", unmap_zeroes),
    ("queue_depth", queue_depth),
    ("errors", errors),
    ("closed", closed),
    ("queue_full", queue_full),
    ("flush", flush),
    ("threads", threads),
    ("read_into", read_into),
];

/// Runs every check on fresh devices from `make`; returns the first failure.
pub fn run_all(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    for (_, check) in CHECKS {
        check(make)?;
    }
    Ok(())
}

/// Runs every check on fresh devices from `make`; returns each check's name and result.
pub fn run_each(make: MakeDevice<'_>) -> Vec<(&'static str, Result<(), ConformanceFailure>)> {
    CHECKS
        .iter()
        .map(|(name, check)| (*name, check(make)))
        .collect()
}

/// Builds a failure of `check`.
fn fail(check: &'static str, message: impl Into<String>) -> ConformanceFailure {
    ConformanceFailure {
        check,
        message: message.into(),
    }
}

/// Fails `check` with a formatted message unless `cond`.
macro_rules! ensure {
    ($check:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(fail($check, format!($($arg)+)));
        }
    };
}

/// Maps a device error into a failure of `check`, saying what was being done.
fn io<T>(
    check: &'static str,
    what: &str,
    r: Result<T, BdevError>,
) -> Result<T, ConformanceFailure> {
    r.map_err(|e| fail(check, format!("{what}: unexpected error: {e}")))
}

/// Deterministic, non-zero-heavy bytes for `len` bytes at byte `offset`, generation `gen`.
/// Every 8-byte word depends on its absolute position, so a misplaced block never matches.
pub fn pattern(offset: u64, len: usize, gen: u64) -> IoBuf {
    let mut buf = IoBuf::zeroed(len);
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let pos = offset + (i as u64) * 8;
        let mut x = pos ^ gen.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa076_1d64_78bd_642f;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let bytes = (x | 0x0101_0101_0101_0101).to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    buf
}

/// Index of the first differing byte, if any.
fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn open_channel(
    check: &'static str,
    dev: &dyn BlockDevice,
) -> Result<Box<dyn IoChannel>, ConformanceFailure> {
    io(check, "opening a channel", dev.channel())
}

/// Reads `len` bytes at `offset` and compares them with `expect`.
fn verify(
    check: &'static str,
    ch: &mut dyn IoChannel,
    offset: u64,
    expect: &[u8],
    what: &str,
) -> Result<(), ConformanceFailure> {
    let got = io(
        check,
        &format!("reading {what}"),
        blocking::read(ch, offset, expect.len()),
    )?;
    if let Some(i) = first_diff(&got, expect) {
        return Err(fail(
            check,
            format!(
                "{what}: {} bytes at offset {offset}: first difference at byte {i} \
                 (offset {}): got {:#04x}, expected {:#04x}",
                expect.len(),
                offset + i as u64,
                got.get(i).copied().unwrap_or(0),
                expect.get(i).copied().unwrap_or(0)
            ),
        ));
    }
    Ok(())
}

/// Polls until every submitted request is reaped; checks each token completes exactly once.
fn drain(
    check: &'static str,
    ch: &mut dyn IoChannel,
    expected: usize,
) -> Result<HashMap<u64, Completion>, ConformanceFailure> {
    let mut done: HashMap<u64, Completion> = HashMap::with_capacity(expected);
    let mut out = Vec::with_capacity(expected);
    let mut idle_polls = 0u32;
    while done.len() < expected {
        out.clear();
        let n = io(check, "polling", ch.poll(&mut out, 1))?;
        if n != out.len() {
            return Err(fail(
                check,
                format!("poll returned {n} but appended {}", out.len()),
            ));
        }
        if n == 0 {
            idle_polls += 1;
            ensure!(
                check,
                idle_polls < 1_000_000,
                "{} of {expected} completions never arrived (in_flight {})",
                expected - done.len(),
                ch.in_flight()
            );
            std::thread::yield_now();
        }
        for c in out.drain(..) {
            let token = c.token;
            if done.insert(token, c).is_some() {
                return Err(fail(check, format!("token {token} completed twice")));
            }
        }
    }
    ensure!(
        check,
        ch.in_flight() == 0,
        "in_flight is {} after every completion",
        ch.in_flight()
    );
    Ok(done)
}

/// Geometry and capabilities are sane, and a fresh channel is idle.
pub fn geometry(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "geometry";
    let dev = make();
    let info = dev.info();
    let bs = info.block_size;
    ensure!(
        C,
        bs.is_power_of_two() && (512..=65536).contains(&bs),
        "block size {bs}"
    );
    ensure!(C, info.num_blocks > 0, "no blocks");
    ensure!(
        C,
        info.num_blocks.checked_mul(u64::from(bs)) == Some(info.size_bytes()),
        "size_bytes {} is not num_blocks * block_size",
        info.size_bytes()
    );
    ensure!(
        C,
        info.size_bytes() >= MIN_DEVICE_BYTES,
        "device has {} bytes; the suite needs at least {MIN_DEVICE_BYTES}",
        info.size_bytes()
    );
    ensure!(
        C,
        info.num_blocks >= MIN_DEVICE_BLOCKS,
        "device has {} blocks; the suite needs at least {MIN_DEVICE_BLOCKS}",
        info.num_blocks
    );
    let awu = info.caps.atomic_write_unit;
    ensure!(
        C,
        awu >= bs && awu % bs == 0,
        "atomic write unit {awu} with block size {bs}"
    );
    let align = info.caps.buf_align;
    ensure!(
        C,
        align.is_power_of_two() && align as usize <= IO_BUF_ALIGN,
        "buffer alignment {align} (IoBuf gives {IO_BUF_ALIGN})"
    );
    ensure!(
        C,
        !info.name.is_empty() && !info.backend.is_empty(),
        "empty name or backend"
    );
    ensure!(C, !dev.is_closed(), "a fresh device reports closed");
    let ch = open_channel(C, dev.as_ref())?;
    ensure!(
        C,
        ch.capacity() >= 128,
        "channel capacity {} < 128",
        ch.capacity()
    );
    ensure!(
        C,
        ch.in_flight() == 0,
        "fresh channel has {} in flight",
        ch.in_flight()
    );
    Ok(())
}

/// Writes of many sizes at many offsets read back byte for byte, and so do overwrites.
pub fn write_read(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "write_read";
    let dev = make();
    let bs = u64::from(dev.info().block_size);
    let size = dev.info().size_bytes();
    let mut ch = open_channel(C, dev.as_ref())?;
    // (offset, len): non-overlapping, sizes from 1 block to 1 MiB, first and last block included.
    let mut plan: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    for len in [
        bs,
        2 * bs,
        3 * bs,
        7 * bs,
        64 << 10,
        4 * bs + (128 << 10),
        1 << 20,
        bs,
        5 * bs,
    ] {
        let len = crate::round_up(len, bs);
        plan.push((at, len));
        at += len + 3 * bs; // gaps, so a write spilling over is caught
    }
    plan.push((size - bs, bs));
    plan.push((size - (1 << 20) - 2 * bs, 1 << 20));
    ensure!(
        C,
        at + (1 << 20) + 2 * bs < size,
        "device too small for the plan"
    );
    for gen in 1..=2u64 {
        for &(off, len) in &plan {
            let data = pattern(off, len as usize, gen);
            io(
                C,
                &format!("writing {len} bytes at {off}"),
                blocking::write(ch.as_mut(), off, data),
            )?;
        }
        for &(off, len) in &plan {
            let expect = pattern(off, len as usize, gen);
            verify(
                C,
                ch.as_mut(),
                off,
                &expect,
                &format!("generation {gen} write"),
            )?;
        }
        // The gaps between writes are untouched (still zero on a fresh device, or unwritten).
        let (off, len) = plan[0];
        let gap = io(
            C,
            "reading a gap",
            blocking::read(ch.as_mut(), off + len, bs as usize),
        )?;
        let bleed = pattern(off + len, bs as usize, gen);
        ensure!(
            C,
            gap.as_slice() != bleed.as_slice(),
            "a write spilled past its end at {}",
            off + len
        );
    }
    Ok(())
}

/// Vectored writes and reads move the same bytes as plain ones.
pub fn vectored(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "vectored";
    let dev = make();
    let bs = dev.info().block_size as usize;
    let mut ch = open_channel(C, dev.as_ref())?;
    let off = 16 * bs as u64;
    let whole = pattern(off, 7 * bs, 3);
    let bufs = vec![
        IoBuf::from_slice(&whole[..bs]),
        IoBuf::from_slice(&whole[bs..3 * bs]),
        IoBuf::from_slice(&whole[3 * bs..]),
    ];
    let op = io(
        C,
        "writev",
        blocking::run(ch.as_mut(), IoOp::Writev { offset: off, bufs }),
    )?;
    let back = op.into_bufs();
    ensure!(
        C,
        back.len() == 3,
        "writev gave back {} buffers, not 3",
        back.len()
    );
    let joined: Vec<u8> = back.iter().flat_map(|b| b.iter().copied()).collect();
    ensure!(
        C,
        joined == whole.as_slice(),
        "writev changed its source buffers"
    );
    verify(C, ch.as_mut(), off, &whole, "writev read with a plain read")?;
    let bufs = vec![
        IoBuf::zeroed(4 * bs),
        IoBuf::zeroed(2 * bs),
        IoBuf::zeroed(bs),
    ];
    let op = io(
        C,
        "readv",
        blocking::run(ch.as_mut(), IoOp::Readv { offset: off, bufs }),
    )?;
    let parts = op.into_bufs();
    ensure!(
        C,
        parts.len() == 3,
        "readv gave back {} buffers, not 3",
        parts.len()
    );
    let joined: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
    if let Some(i) = first_diff(&joined, &whole) {
        return Err(fail(
            C,
            format!("readv differs from the written bytes at byte {i}"),
        ));
    }
    Ok(())
}

/// Unmap and write-zeroes leave zeroes, and only where asked.
pub fn unmap_zeroes(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "unmap_zeroes";
    let dev = make();
    let bs = u64::from(dev.info().block_size);
    let caps = dev.info().caps.clone();
    let mut ch = open_channel(C, dev.as_ref())?;
    let kinds = [
        (IoKind::Unmap, caps.unmap, 0u64),
        (IoKind::WriteZeroes, caps.write_zeroes, 64),
    ];
    for (kind, supported, first_block) in kinds {
        if !supported {
            continue;
        }
        let off = first_block * bs;
        let data = pattern(off, (16 * bs) as usize, 5);
        io(
            C,
            "writing the pattern",
            blocking::write(ch.as_mut(), off, data.clone()),
        )?;
        let (z_off, z_len) = (off + 4 * bs, 8 * bs);
        let op = match kind {
            IoKind::Unmap => IoOp::Unmap {
                offset: z_off,
                len: z_len,
            },
            _ => IoOp::WriteZeroes {
                offset: z_off,
                len: z_len,
            },
        };
        io(C, &format!("{kind}"), blocking::run(ch.as_mut(), op))?;
        let mut expect = data.to_vec();
        expect[(4 * bs) as usize..(12 * bs) as usize].fill(0);
        verify(C, ch.as_mut(), off, &expect, &format!("range after {kind}"))?;
    }
    Ok(())
}

/// 128+ requests in flight on one channel; each token completes exactly once with its data.
pub fn queue_depth(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "queue_depth";
    let dev = make();
    let bs = dev.info().block_size as usize;
    let mut ch = open_channel(C, dev.as_ref())?;
    let n = ch.capacity().clamp(128, 256);
    // Tokens are deliberately sparse and large, to catch backends that index by token.
    let token = |i: usize| 0xdead_0000_0000 + (i as u64) * 977;
    for i in 0..n {
        let off = (i * bs) as u64;
        let op = IoOp::Write {
            offset: off,
            buf: pattern(off, bs, 11),
        };
        ch.submit(token(i), op)
            .map_err(|r| fail(C, format!("write {i} of {n} rejected: {}", r.error)))?;
    }
    ensure!(
        C,
        ch.in_flight() == n,
        "in_flight {} after {n} submits",
        ch.in_flight()
    );
    let done = drain(C, ch.as_mut(), n)?;
    for i in 0..n {
        let c = done
            .get(&token(i))
            .ok_or_else(|| fail(C, format!("write token {} never completed", token(i))))?;
        io(C, &format!("write {i}"), c.result.clone())?;
    }
    for i in 0..n {
        let op = IoOp::Read {
            offset: (i * bs) as u64,
            buf: IoBuf::zeroed(bs),
        };
        ch.submit(token(i), op)
            .map_err(|r| fail(C, format!("read {i} of {n} rejected: {}", r.error)))?;
    }
    let done = drain(C, ch.as_mut(), n)?;
    for i in 0..n {
        let c = done
            .get(&token(i))
            .ok_or_else(|| fail(C, format!("read token {} never completed", token(i))))?;
        io(C, &format!("read {i}"), c.result.clone())?;
        let off = (i * bs) as u64;
        let IoOp::Read { offset, buf } = &c.op else {
            return Err(fail(
                C,
                format!("read token {} came back as {:?}", token(i), c.op.kind()),
            ));
        };
        ensure!(
            C,
            *offset == off,
            "read token {} came back with offset {offset}",
            token(i)
        );
        ensure!(
            C,
            buf.as_slice() == pattern(off, bs, 11).as_slice(),
            "block {i} read back wrong"
        );
    }
    Ok(())
}

/// Submits `op` and expects it rejected with an error accepted by `expected`.
fn expect_rejected(
    check: &'static str,
    ch: &mut dyn IoChannel,
    op: IoOp,
    what: &str,
    expected: impl Fn(&BdevError) -> bool,
) -> Result<(), ConformanceFailure> {
    let (len, bufs) = (op.len(), op_buf_lens(&op));
    let before = ch.in_flight();
    match ch.submit(1, op) {
        Ok(()) => {
            // Drain it so the channel is usable, then report.
            let mut out = Vec::new();
            let _ = ch.poll(&mut out, 1);
            let result = out.pop().map(|c| c.result);
            Err(fail(
                check,
                format!("{what}: accepted at submit (completion: {result:?})"),
            ))
        }
        Err(rej) => {
            ensure!(
                check,
                expected(&rej.error),
                "{what}: rejected with the wrong error: {:?}",
                rej.error
            );
            ensure!(
                check,
                rej.op.len() == len,
                "{what}: the rejected request came back changed"
            );
            ensure!(
                check,
                op_buf_lens(&rej.op) == bufs,
                "{what}: buffers not handed back"
            );
            ensure!(
                check,
                ch.in_flight() == before,
                "{what}: in_flight changed on rejection"
            );
            Ok(())
        }
    }
}

fn op_buf_lens(op: &IoOp) -> Vec<usize> {
    match op {
        IoOp::Read { buf, .. } | IoOp::Write { buf, .. } => vec![buf.len()],
        IoOp::Readv { bufs, .. } | IoOp::Writev { bufs, .. } => {
            bufs.iter().map(|b| b.len()).collect()
        }
        _ => Vec::new(),
    }
}

/// Bad requests are rejected at submit with the right error kind.
pub fn errors(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "errors";
    let dev = make();
    let bs = u64::from(dev.info().block_size);
    let size = dev.info().size_bytes();
    let caps = dev.info().caps.clone();
    let mut ch = open_channel(C, dev.as_ref())?;
    let ch = ch.as_mut();
    let b = bs as usize;
    let out_of_range = |op: IoKind, o: u64, l: u64| {
        move |e: &BdevError| {
            *e == BdevError::OutOfRange {
                op,
                offset: o,
                len: l,
                size,
            }
        }
    };
    expect_rejected(
        C,
        ch,
        IoOp::Read {
            offset: size,
            buf: IoBuf::zeroed(b),
        },
        "read at the end",
        out_of_range(IoKind::Read, size, bs),
    )?;
    expect_rejected(
        C,
        ch,
        IoOp::Write {
            offset: size - bs,
            buf: IoBuf::zeroed(2 * b),
        },
        "write across the end",
        out_of_range(IoKind::Write, size - bs, 2 * bs),
    )?;
    expect_rejected(
        C,
        ch,
        IoOp::Read {
            offset: u64::MAX - bs + 1,
            buf: IoBuf::zeroed(b),
        },
        "read at u64::MAX",
        |e| {
            matches!(
                e,
                BdevError::OutOfRange {
                    op: IoKind::Read,
                    ..
                }
            )
        },
    )?;
    let misaligned = |op: IoKind, what: &'static str| move |e: &BdevError| matches!(e, BdevError::Misaligned { op: o, what: w, .. } if *o == op && *w == what);
    expect_rejected(
        C,
        ch,
        IoOp::Write {
            offset: bs / 2,
            buf: IoBuf::zeroed(b),
        },
        "write at a misaligned offset",
        misaligned(IoKind::Write, "offset"),
    )?;
    expect_rejected(
        C,
        ch,
        IoOp::Read {
            offset: 0,
            buf: IoBuf::zeroed(b + b / 2),
        },
        "read of a misaligned length",
        misaligned(IoKind::Read, "length"),
    )?;
    expect_rejected(
        C,
        ch,
        IoOp::Writev {
            offset: 0,
            bufs: vec![IoBuf::zeroed(b), IoBuf::zeroed(b / 2)],
        },
        "writev with a misaligned buffer length",
        misaligned(IoKind::Write, "length"),
    )?;
    expect_rejected(
        C,
        ch,
        IoOp::Read {
            offset: 0,
            buf: IoBuf::zeroed(0),
        },
        "empty read",
        |e| *e == BdevError::Empty { op: IoKind::Read },
    )?;
    expect_rejected(
        C,
        ch,
        IoOp::Writev {
            offset: 0,
            bufs: Vec::new(),
        },
        "empty writev",
        |e| *e == BdevError::Empty { op: IoKind::Write },
    )?;
    if caps.unmap {
        expect_rejected(
            C,
            ch,
            IoOp::Unmap {
                offset: 0,
                len: bs / 2,
            },
            "unmap of a misaligned length",
            misaligned(IoKind::Unmap, "length"),
        )?;
        expect_rejected(
            C,
            ch,
            IoOp::Unmap { offset: 0, len: 0 },
            "empty unmap",
            |e| *e == BdevError::Empty { op: IoKind::Unmap },
        )?;
    }
    if caps.write_zeroes {
        expect_rejected(
            C,
            ch,
            IoOp::WriteZeroes {
                offset: size,
                len: bs,
            },
            "write-zeroes at the end",
            out_of_range(IoKind::WriteZeroes, size, bs),
        )?;
    }
    // The channel still works after all those rejections.
    let data = pattern(0, b, 13);
    io(
        C,
        "write after rejections",
        blocking::write(ch, 0, data.clone()),
    )?;
    verify(C, ch, 0, &data, "write after rejections")
}

/// A closed device refuses new requests with `Closed`.
pub fn closed(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "closed";
    let dev = make();
    let bs = dev.info().block_size as usize;
    let mut ch = open_channel(C, dev.as_ref())?;
    io(
        C,
        "write before close",
        blocking::write(ch.as_mut(), 0, pattern(0, bs, 17)),
    )?;
    dev.close();
    ensure!(C, dev.is_closed(), "is_closed() is false after close()");
    dev.close();
    ensure!(C, dev.is_closed(), "a second close() reopened the device");
    let closed = |e: &BdevError| *e == BdevError::Closed;
    expect_rejected(
        C,
        ch.as_mut(),
        IoOp::Read {
            offset: 0,
            buf: IoBuf::zeroed(bs),
        },
        "read after close",
        closed,
    )?;
    expect_rejected(
        C,
        ch.as_mut(),
        IoOp::Write {
            offset: 0,
            buf: IoBuf::zeroed(bs),
        },
        "write after close",
        closed,
    )?;
    expect_rejected(C, ch.as_mut(), IoOp::Flush, "flush after close", closed)?;
    match dev.channel() {
        Err(BdevError::Closed) => Ok(()),
        Err(e) => Err(fail(
            C,
            format!("channel() after close failed with {e:?}, not Closed"),
        )),
        Ok(mut ch2) => expect_rejected(
            C,
            ch2.as_mut(),
            IoOp::Flush,
            "flush on a channel opened after close",
            closed,
        ),
    }
}

/// Exactly `capacity()` requests fit in a channel; the next is `QueueFull`.
pub fn queue_full(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "queue_full";
    let dev = make();
    let bs = dev.info().block_size as usize;
    let blocks = dev.info().num_blocks as usize;
    let mut ch = open_channel(C, dev.as_ref())?;
    let cap = ch.capacity();
    if cap > QUEUE_FULL_MAX {
        // Too big to fill cheaply; queue_depth already checked 128+ in flight.
        return Ok(());
    }
    for i in 0..cap {
        let op = IoOp::Read {
            offset: ((i % blocks) * bs) as u64,
            buf: IoBuf::zeroed(bs),
        };
        ch.submit(i as u64, op).map_err(|r| {
            fail(
                C,
                format!("request {i} of capacity {cap} rejected: {}", r.error),
            )
        })?;
    }
    let full = |e: &BdevError| *e == BdevError::QueueFull { capacity: cap };
    expect_rejected(
        C,
        ch.as_mut(),
        IoOp::Read {
            offset: 0,
            buf: IoBuf::zeroed(bs),
        },
        "request above capacity",
        full,
    )?;
    let done = drain(C, ch.as_mut(), cap)?;
    for i in 0..cap {
        let c = done
            .get(&(i as u64))
            .ok_or_else(|| fail(C, format!("token {i} never completed")))?;
        io(C, &format!("read {i}"), c.result.clone())?;
    }
    // Room again after reaping.
    io(C, "flush after draining", blocking::flush(ch.as_mut()))
}

/// After a write and a flush complete, the data reads back, also through another channel.
pub fn flush(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "flush";
    let dev = make();
    let bs = dev.info().block_size as usize;
    let mut ch = open_channel(C, dev.as_ref())?;
    io(C, "flush of an idle device", blocking::flush(ch.as_mut()))?;
    let off = 100 * bs as u64;
    let data = pattern(off, 9 * bs, 19);
    io(C, "write", blocking::write(ch.as_mut(), off, data.clone()))?;
    io(C, "flush", blocking::flush(ch.as_mut()))?;
    verify(C, ch.as_mut(), off, &data, "flushed write")?;
    drop(ch);
    let mut other = open_channel(C, dev.as_ref())?;
    verify(
        C,
        other.as_mut(),
        off,
        &data,
        "flushed write through a new channel",
    )
}

/// Four threads, each with its own channel, write and verify disjoint regions at once.
pub fn threads(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "threads";
    const THREADS: usize = 4;
    const BLOCKS_PER_THREAD: usize = 64;
    const DEPTH: usize = 8;
    let dev = make();
    let bs = dev.info().block_size as usize;
    let results: Vec<Result<(), ConformanceFailure>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let dev = Arc::clone(&dev);
                s.spawn(move || -> Result<(), ConformanceFailure> {
                    let mut ch = open_channel(C, dev.as_ref())?;
                    let base = (t * BLOCKS_PER_THREAD * bs) as u64;
                    for round in 0..3u64 {
                        let gen = 100 + round * 10 + t as u64;
                        for chunk in (0..BLOCKS_PER_THREAD).collect::<Vec<_>>().chunks(DEPTH) {
                            for &i in chunk {
                                let off = base + (i * bs) as u64;
                                ch.submit(
                                    i as u64,
                                    IoOp::Write {
                                        offset: off,
                                        buf: pattern(off, bs, gen),
                                    },
                                )
                                .map_err(|r| {
                                    fail(C, format!("thread {t}: write rejected: {}", r.error))
                                })?;
                            }
                            for (_, c) in drain(C, ch.as_mut(), chunk.len())? {
                                io(C, &format!("thread {t} write"), c.result)?;
                            }
                        }
                        let all = pattern(base, BLOCKS_PER_THREAD * bs, gen);
                        verify(
                            C,
                            ch.as_mut(),
                            base,
                            &all,
                            &format!("thread {t} round {round}"),
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(t, h)| {
                h.join()
                    .unwrap_or_else(|_| Err(fail(C, format!("thread {t} panicked"))))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Check `read_into`: see the module docs.
pub fn read_into(make: MakeDevice<'_>) -> Result<(), ConformanceFailure> {
    const C: &str = "read_into";
    let dev = make();
    let info = dev.info().clone();
    let bs = u64::from(info.block_size);
    let size = info.size_bytes();
    let mut ch = open_channel(C, dev.as_ref())?;
    let plan = [
        (0, bs),
        (3 * bs, 5 * bs),
        (64 * bs, 256 << 10),
        (size - bs, bs),
    ];
    for &(off, len) in &plan {
        let len = crate::round_up(len, bs);
        io(
            C,
            &format!("writing {len} bytes at {off}"),
            blocking::write(ch.as_mut(), off, pattern(off, len as usize, 7)),
        )?;
    }
    for &(off, len) in &plan {
        let len = crate::round_up(len, bs) as usize;
        let mut got = IoBuf::zeroed(len);
        let done = io(
            C,
            &format!("read_into of {len} bytes at {off}"),
            dev.read_into(off, &mut got),
        )?;
        if done {
            let want = pattern(off, len, 7);
            if let Some(i) = first_diff(&got, &want) {
                return Err(fail(
                    C,
                    format!("read_into at {off}: byte {i} differs from what was written"),
                ));
            }
        }
    }
    // A buffer one byte past an aligned address.
    let mut wide = IoBuf::zeroed(2 * bs as usize);
    let skewed = &mut wide[1..1 + bs as usize];
    let done = io(
        C,
        "read_into at a skewed address",
        dev.read_into(bs * 3, skewed),
    )?;
    if info.caps.buf_align > 1 {
        ensure!(
            C,
            !done,
            "a buffer at a misaligned address was accepted (alignment {})",
            info.caps.buf_align
        );
    } else if done {
        ensure!(
            C,
            first_diff(skewed, &pattern(3 * bs, bs as usize, 7)).is_none(),
            "read_into at a skewed address returned other bytes"
        );
    }
    let mut one = IoBuf::zeroed(bs as usize);
    type Case = (&'static str, u64, usize, fn(&BdevError) -> bool);
    let cases: [Case; 4] = [
        ("out of range", size, bs as usize, |e| {
            matches!(e, BdevError::OutOfRange { .. })
        }),
        ("misaligned offset", bs + 1, bs as usize, |e| {
            matches!(e, BdevError::Misaligned { what: "offset", .. })
        }),
        ("misaligned length", 0, (bs / 2) as usize, |e| {
            matches!(e, BdevError::Misaligned { what: "length", .. })
        }),
        ("empty", 0, 0, |e| matches!(e, BdevError::Empty { .. })),
    ];
    for (what, off, len, is) in cases {
        match dev.read_into(off, &mut one[..len]) {
            Err(e) if is(&e) => {}
            other => return Err(fail(C, format!("{what}: got {other:?}"))),
        }
    }
    drop(ch);
    dev.close();
    match dev.read_into(0, &mut one) {
        Err(BdevError::Closed) => Ok(()),
        other => Err(fail(C, format!("after close: got {other:?}"))),
    }
}

//! Blocking helpers: a thin layer over submit + poll for callers that want one I/O at a time.
//!
//! Each helper needs an idle channel (nothing in flight), so it can never swallow another
//! caller's completion; otherwise it returns [`BdevError::Busy`].

use crate::{BdevError, Completion, IoBuf, IoChannel, IoOp};

/// Token used by the blocking helpers.
const BLOCKING_TOKEN: u64 = u64::MAX;

/// Submits `op` on an idle channel and waits for its completion.
pub fn run(ch: &mut dyn IoChannel, op: IoOp) -> Result<IoOp, BdevError> {
    if ch.in_flight() != 0 {
        return Err(BdevError::Busy {
            in_flight: ch.in_flight(),
        });
    }
    ch.submit(BLOCKING_TOKEN, op).map_err(|r| r.error)?;
    let mut out: Vec<Completion> = Vec::with_capacity(1);
    while out.is_empty() {
        ch.poll(&mut out, 1)?;
    }
    let c = out.swap_remove(0);
    c.result.map(|()| c.op)
}

/// Reads `len` bytes at `offset` into a new buffer.
pub fn read(ch: &mut dyn IoChannel, offset: u64, len: usize) -> Result<IoBuf, BdevError> {
    read_into(ch, offset, IoBuf::zeroed(len))
}

/// Reads `buf.len()` bytes at `offset` into `buf` and gives it back.
pub fn read_into(ch: &mut dyn IoChannel, offset: u64, buf: IoBuf) -> Result<IoBuf, BdevError> {
    let op = run(ch, IoOp::Read { offset, buf })?;
    op.into_buf()
        .ok_or(BdevError::Config("read returned no buffer".into()))
}

/// Writes `buf` at `offset` and gives the buffer back.
pub fn write(ch: &mut dyn IoChannel, offset: u64, buf: IoBuf) -> Result<IoBuf, BdevError> {
    let op = run(ch, IoOp::Write { offset, buf })?;
    op.into_buf()
        .ok_or(BdevError::Config("write returned no buffer".into()))
}

/// Writes a copy of `bytes` at `offset`.
pub fn write_slice(ch: &mut dyn IoChannel, offset: u64, bytes: &[u8]) -> Result<(), BdevError> {
    write(ch, offset, IoBuf::from_slice(bytes)).map(|_| ())
}

/// Flushes the device's volatile cache.
pub fn flush(ch: &mut dyn IoChannel) -> Result<(), BdevError> {
    run(ch, IoOp::Flush).map(|_| ())
}

/// Deallocates a range.
pub fn unmap(ch: &mut dyn IoChannel, offset: u64, len: u64) -> Result<(), BdevError> {
    run(ch, IoOp::Unmap { offset, len }).map(|_| ())
}

/// Writes zeroes over a range.
pub fn write_zeroes(ch: &mut dyn IoChannel, offset: u64, len: u64) -> Result<(), BdevError> {
    run(ch, IoOp::WriteZeroes { offset, len }).map(|_| ())
}

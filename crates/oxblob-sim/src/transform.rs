//! The transform device: stores every block scrambled by a key derived from its block number.
//!
//! Written data is transformed block by block before it reaches the inner device and restored
//! after it comes back, so everything going through the [`BlockDevice`] trait reads back exactly,
//! while anything that read the inner device directly (a layer bypassing the trait, a stale
//! mapping, a direct file read) would see garbage. Running a layer's tests over this device proves
//! the layer does all its I/O through the trait.
//!
//! The transform of block `b` (of `bs` bytes) rotates the bytes by `r_b` positions and multiplies
//! each by an odd constant `m_b` (mod 256), with `r_b` and `m_b` drawn from `mix64(key ^ b)`. It
//! is a bijection that maps an all-zero block to itself, so unmap and write-zeroes pass through
//! unchanged and still read back as zeroes. Every non-zero byte pattern is stored differently
//! from how it was written, except for rare patterns invariant under the chosen rotation and
//! multiplier (bytes `0x00` and `0x80` are fixed by every multiplier).
//!
//! The caller's write buffers are transformed in place while the request is in flight and
//! restored before the completion is handed back.
//!
//! ## Concurrency
//! Channels share nothing but the inner device; blocks are transformed in place.

use crate::rng::mix64;
use crate::tokens::TokenMap;
use oxblob_bdev::{BdevError, BlockDevice, Completion, DeviceInfo, IoChannel, IoOp, Rejected};
use std::sync::Arc;

/// A device whose stored bytes are a per-block bijection of what was written. See the module docs.
pub struct TransformDevice {
    inner: Arc<dyn BlockDevice>,
    info: DeviceInfo,
    key: u64,
}

impl TransformDevice {
    /// Wraps `inner`, transforming with `key`. The inner device's current contents are taken as
    /// already transformed (an all-zero device reads as zeroes).
    pub fn new(inner: Arc<dyn BlockDevice>, key: u64) -> Arc<Self> {
        let mut info = inner.info().clone();
        info.backend = "transform".to_string();
        Arc::new(TransformDevice { inner, info, key })
    }

    /// Transforms `data` (whole blocks starting at byte `offset`) as they would be stored.
    pub fn encode(&self, offset: u64, data: &mut [u8]) {
        transform(self.key, self.info.block_size, offset, data, true);
    }

    /// Undoes [`TransformDevice::encode`].
    pub fn decode(&self, offset: u64, data: &mut [u8]) {
        transform(self.key, self.info.block_size, offset, data, false);
    }
}

/// Inverse of an odd `m` modulo 256 (Newton's iteration doubles the correct bits each step).
fn inverse_mod_256(m: u8) -> u8 {
    let mut inv = m;
    for _ in 0..3 {
        inv = inv.wrapping_mul(2u8.wrapping_sub(m.wrapping_mul(inv)));
    }
    inv
}

/// (rotation, multiplier) for block `block`.
fn block_key(key: u64, block: u64, bs: usize) -> (usize, u8) {
    let k = mix64(key ^ mix64(block));
    let mut m = (k as u8) | 1;
    if m == 1 {
        m = 0x9d;
    }
    let rot = ((k >> 8) % bs as u64) as usize;
    (rot.max(1), m)
}

/// Encodes (`forward`) or decodes every whole block of `data`, which starts at byte `offset`.
fn transform(key: u64, bs: u32, offset: u64, data: &mut [u8], forward: bool) {
    let bs = bs as usize;
    let first = offset / bs as u64;
    for (i, block) in data.chunks_exact_mut(bs).enumerate() {
        let (rot, m) = block_key(key, first + i as u64, bs);
        if forward {
            // stored[j] = data[(j + rot) % bs] * m
            block.rotate_left(rot);
            for b in block.iter_mut() {
                *b = b.wrapping_mul(m);
            }
        } else {
            let inv = inverse_mod_256(m);
            for b in block.iter_mut() {
                *b = b.wrapping_mul(inv);
            }
            block.rotate_right(rot);
        }
    }
}

fn transform_op(key: u64, bs: u32, op: &mut IoOp, forward: bool) {
    match op {
        IoOp::Read { offset, buf } | IoOp::Write { offset, buf } => {
            transform(key, bs, *offset, buf, forward)
        }
        IoOp::Readv { offset, bufs } | IoOp::Writev { offset, bufs } => {
            let mut at = *offset;
            for b in bufs.iter_mut() {
                transform(key, bs, at, b, forward);
                at += b.len() as u64;
            }
        }
        IoOp::Flush | IoOp::Unmap { .. } | IoOp::WriteZeroes { .. } => {}
    }
}

fn is_write(op: &IoOp) -> bool {
    matches!(op, IoOp::Write { .. } | IoOp::Writev { .. })
}

impl BlockDevice for TransformDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        if self.is_closed() {
            return Err(BdevError::Closed);
        }
        Ok(Box::new(TransformChannel {
            inner: self.inner.channel()?,
            info: self.info.clone(),
            key: self.key,
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

struct TransformChannel {
    inner: Box<dyn IoChannel>,
    info: DeviceInfo,
    key: u64,
    tokens: TokenMap<()>,
    scratch: Vec<Completion>,
}

impl IoChannel for TransformChannel {
    fn submit(&mut self, token: u64, mut op: IoOp) -> Result<(), Rejected> {
        // Validate first: never scramble a buffer the inner device will hand back rejected
        // for a reason the caller must see unchanged.
        if let Err(error) = op.validate(&self.info) {
            return Err(Rejected { error, op });
        }
        let bs = self.info.block_size;
        let write = is_write(&op);
        if write {
            transform_op(self.key, bs, &mut op, true);
        }
        let t = self.tokens.insert(token, ());
        self.inner.submit(t, op).map_err(|mut rej| {
            self.tokens.remove(t);
            if write {
                transform_op(self.key, bs, &mut rej.op, false);
            }
            rej
        })
    }

    fn poll(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, BdevError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let r = self.inner.poll(&mut scratch, min);
        let bs = self.info.block_size;
        let mut n = 0;
        for mut c in scratch.drain(..) {
            if let Some((caller, ())) = self.tokens.remove(c.token) {
                c.token = caller;
                // Writes get their caller's bytes back whatever the result; reads are decoded
                // only when they succeeded (a failed read's buffer holds nothing meaningful).
                if is_write(&c.op) || c.result.is_ok() {
                    transform_op(self.key, bs, &mut c.op, false);
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_is_an_inverse() {
        for m in (1..=255u8).step_by(2) {
            assert_eq!(m.wrapping_mul(inverse_mod_256(m)), 1, "m = {m}");
        }
    }

    #[test]
    fn transform_round_trips_and_keeps_zero_blocks() {
        let bs = 512u32;
        let mut data: Vec<u8> = (0..4 * bs as usize).map(|i| (i * 7 + 3) as u8).collect();
        let orig = data.clone();
        transform(42, bs, 8192, &mut data, true);
        assert_ne!(data, orig);
        transform(42, bs, 8192, &mut data, false);
        assert_eq!(data, orig);
        let mut zero = vec![0u8; bs as usize];
        transform(42, bs, 0, &mut zero, true);
        assert!(zero.iter().all(|&b| b == 0));
    }
}

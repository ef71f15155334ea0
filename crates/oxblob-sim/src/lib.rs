//! # oxblob-sim — test-only block devices: faults, crashes, byte transforms, counters
//!
//! **Production binaries never link this crate**: it appears only in `[dev-dependencies]`, fuzz
//! targets, benches and xtask. It owns the simulation side of the fault model written in
//! `docs/fault-model.md`:
//!
//! - [`CrashDevice`]: records writes and flushes and builds the image a power cut would leave —
//!   now ([`CrashDevice::crash_image`]) or at any point of a recorded workload
//!   ([`CrashDevice::image_at`]) — with unflushed writes dropped, kept, or (seeded) dropped,
//!   reordered and torn at block granularity ([`CrashMode`]). This is what crash sweeps use.
//! - [`ErrorDevice`]: injects `BdevError::Io` failures (the Nth operation, every operation of a
//!   kind, operations touching a byte range), re-armable at runtime through a [`FaultHandle`];
//!   failed writes never reach the inner device, or reach it torn if asked.
//! - [`TransformDevice`]: stores every block transformed by a per-block key and undoes it on read,
//!   proving that no layer bypasses the [`BlockDevice`] trait.
//! - [`CountingDevice`]: counts operations and bytes by kind, resettable.
//! - [`corrupt_block`]: flips bytes of one block of a device (bit rot in durable data).
//! - [`rng`]: the one seeded PRNG (`SmallRng::seed_from_u64`) everything random draws from.
//! - [`panic_message`]: the text of a panic caught by a sweep, to re-raise it with the seed.
//!
//! It does **not** own the block-device trait or the real backends (`oxblob-bdev`), nor any
//! reference model of the blobstore or blobfs (those live with their crates' tests for now).
//!
//! Every wrapper implements `BlockDevice` over an inner `Arc<dyn BlockDevice>`, and each of its
//! channels wraps a channel of the inner device: there is no side door to the inner data. Wrappers
//! stack (for example `ErrorDevice` over `CrashDevice` over `MallocDevice`, so an injected torn
//! write is also what the crash image sees).
//!
//! ## Concurrency contract
//! - Every wrapper is `Send + Sync`; its channels are `Send`, not `Sync`, one per thread, as for
//!   any device.
//! - `CrashDevice` and `ErrorDevice` serialise their bookkeeping (history, fault rules) on one
//!   mutex per device; `CountingDevice` uses atomics; `TransformDevice` shares nothing. None of
//!   them blocks beyond what the inner device does. These are test devices: their bookkeeping is
//!   not on any production I/O path.
//! - Reconfiguring faults through a [`FaultHandle`] from another thread takes effect for requests
//!   submitted after the call returns.

pub mod counting;
pub mod crash;
pub mod fault;
pub mod rng;
mod tokens;
pub mod transform;

pub use counting::{CountingDevice, IoCounts};
pub use crash::{CrashDevice, CrashMode};
pub use fault::{ErrorDevice, Fault, FaultHandle, FaultId};
pub use transform::TransformDevice;

use oxblob_bdev::{blocking, BdevError, BlockDevice};
use rand::Rng;

/// Flips bytes of block `block` of `dev`, chosen from `seed`: between 1 and 8 bytes, each XORed
/// with a non-zero value, so the block is guaranteed to differ from before. Models bit rot in
/// durable data (apply it to a crash image). Returns the offsets within the block that changed.
pub fn corrupt_block(
    dev: &dyn BlockDevice,
    block: u64,
    seed: u64,
) -> Result<Vec<usize>, BdevError> {
    let bs = dev.info().block_size as usize;
    let offset = block
        .checked_mul(bs as u64)
        .ok_or_else(|| BdevError::Config(format!("block {block} is out of range")))?;
    let mut ch = dev.channel()?;
    let mut buf = blocking::read(ch.as_mut(), offset, bs)?;
    let mut r = rng::rng(seed);
    let count = r.gen_range(1..=8usize);
    let mut flipped = rand::seq::index::sample(&mut r, bs, count).into_vec();
    flipped.sort_unstable();
    for &at in &flipped {
        let mask: u8 = r.gen_range(1..=255);
        buf[at] ^= mask;
    }
    blocking::write(ch.as_mut(), offset, buf)?;
    Ok(flipped)
}

/// The message of a panic caught with `std::panic::catch_unwind` (its payload is a `String`
/// or a `&str` for every `panic!`/`assert!`), so a sweep can re-raise it naming the crash
/// point and seed; empty for any other payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

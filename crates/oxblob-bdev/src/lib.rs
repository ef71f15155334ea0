//! # oxblob-bdev — block devices and per-thread I/O channels
//!
//! This crate owns the lowest layer of oxblob: the [`BlockDevice`] trait, the per-thread
//! [`IoChannel`] through which all I/O is submitted and polled, owned aligned buffers
//! ([`IoBuf`]), and the backends:
//!
//! - **malloc** ([`MallocDevice`]): RAM, for tests and benchmarks;
//! - **uring**: a regular file or a block device through io_uring, with `O_DIRECT` where the file
//!   system allows it;
//! - **psync**: the same through `pread`/`pwrite`, chosen where io_uring is unavailable.
//!
//! Devices are named by spec strings (`malloc:1GiB`, `file:/path/disk.img`, `uring:/dev/loop0`)
//! or by an SPDK-style JSON config plus a bdev name; see the `spec` and `config` modules.
//!
//! It does **not** own anything about what is stored on a device (that is `oxblob-format` and
//! `oxblob-blobstore`), nor fault injection (that is `oxblob-sim`, linked by tests only).
//!
//! ## Concurrency contract
//! - A [`BlockDevice`] is `Send + Sync` and shared by all threads (usually as
//!   `Arc<dyn BlockDevice>`).
//! - Each thread gets its own [`IoChannel`] with [`BlockDevice::channel`]. A channel is `Send`
//!   but not `Sync`. Channels share no lock on the I/O path: the malloc backend copies through
//!   atomics, the uring backend gives every channel its own ring.
//! - [`IoChannel::submit`] never blocks (a full queue is an error). [`IoChannel::poll`] blocks
//!   only while waiting for the `min` completions asked for.
//! - Requests on one channel may complete in any order. A flush makes durable every write that
//!   *completed* before the flush was submitted; writes still in flight are not covered.
//! - The helpers in [`blocking`] are a thin layer on submit + poll.

pub mod blocking;
mod buf;
pub mod config;
pub mod conformance;
mod device;
mod error;
mod malloc;
mod psync;
pub mod spec;
mod uring;

pub use buf::{IoBuf, IO_BUF_ALIGN};
pub use device::{
    check_read_into, round_up, BlockDevice, Capabilities, Completion, DeviceInfo, IoChannel,
    IoKind, IoOp, Rejected,
};
pub use error::{BdevError, Result};
pub use malloc::{MallocDevice, MALLOC_QUEUE_DEPTH};
pub use psync::{FileOptions, PsyncDevice, PSYNC_QUEUE_DEPTH};
pub use spec::{parse_size, DeviceSpec};
pub use uring::{uring_unavailable_reason, UringDevice, NO_URING_ENV};

//! Errors of the block-device layer, by kind.

use crate::IoKind;

/// Everything that can go wrong below the blobstore.
///
/// Errors compare by value so tests can check the exact kind, and clone so a wrapper can hand the
/// same error to several waiters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BdevError {
    /// The request reaches past the end of the device.
    #[error("{op} of {len} bytes at offset {offset} is out of range (device has {size} bytes)")]
    OutOfRange {
        /// The operation.
        op: IoKind,
        /// Byte offset of the request.
        offset: u64,
        /// Byte length of the request.
        len: u64,
        /// Device size in bytes.
        size: u64,
    },
    /// An offset, a length or a buffer address is not a multiple of what the device needs.
    #[error("{op}: {what} {value:#x} is not a multiple of {align}")]
    Misaligned {
        /// The operation.
        op: IoKind,
        /// Which value is misaligned: "offset", "length" or "buffer address".
        what: &'static str,
        /// The offending value.
        value: u64,
        /// The required alignment in bytes.
        align: u64,
    },
    /// A request had no bytes to transfer.
    #[error("{op}: zero-length request")]
    Empty {
        /// The operation.
        op: IoKind,
    },
    /// The device was closed; channels refuse new I/O.
    #[error("device is closed")]
    Closed,
    /// The channel already holds as many I/Os as it can.
    #[error("channel queue is full ({capacity} I/Os in flight)")]
    QueueFull {
        /// The channel's capacity.
        capacity: usize,
    },
    /// A blocking helper was called on a channel that still had I/O in flight.
    #[error("channel has {in_flight} I/Os in flight; blocking helpers need an idle channel")]
    Busy {
        /// I/Os in flight at the call.
        in_flight: usize,
    },
    /// The device does not support this operation.
    #[error("{op} is not supported by this device")]
    Unsupported {
        /// The operation.
        op: IoKind,
    },
    /// The operating system (or an injected fault) failed an I/O.
    #[error("I/O error during {op} at offset {offset}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Io {
        /// The operation.
        op: IoKind,
        /// Byte offset of the request (0 for flush).
        offset: u64,
        /// The OS error number (for example `libc::EIO`).
        errno: i32,
    },
    /// A device could not be opened or created.
    #[error("cannot open {path}: {message}")]
    Open {
        /// What was being opened.
        path: String,
        /// Why it failed.
        message: String,
    },
    /// The image is already open (locked) by another process or another open in this one.
    #[error("{path} is in use: another oxblob process (or mount) has it open")]
    InUse {
        /// The image's path.
        path: String,
    },
    /// A device spec string or a JSON bdev config could not be understood.
    #[error("{0}")]
    Config(String),
}

/// Result alias for this crate.
pub type Result<T, E = BdevError> = std::result::Result<T, E>;

//! # oxblob-format — the on-disk structures of the oxblob blobstore
//!
//! This crate owns the byte layout of everything the blobstore writes: the two superblock slots
//! ([`superblock`]), the metadata-log records and the transactions they carry ([`record`]), blob
//! records ([`blob`]) and the checkpoint ([`checkpoint`]). Each structure has an `encode` and a
//! `decode`; decoders return a typed [`DecodeError`] for every malformed input, never panic, and
//! never allocate more memory than the input could describe (every length field is checked
//! against the bytes that remain before anything is reserved). Checksums are CRC-32C.
//!
//! It does **not** do I/O, choose where structures go, decide recovery policy or check
//! invariants that span structures (a cluster owned by two blobs, a checkpoint pointing outside
//! the md region of *another* superblock): that is `oxblob-blobstore`. The layout is described
//! in `docs/format.md`; the table at the head of each module repeats it.
//!
//! ## Concurrency contract
//! Pure functions over byte slices and plain values: everything is `Send + Sync`, nothing blocks,
//! nothing is shared mutably ([`Mutation::PutBlob`] holds its record in an `Arc`, so a caller
//! can share one record between a transaction and its own state; it is read only).

pub mod blob;
pub mod checkpoint;
mod codec;
pub mod record;
pub mod superblock;
mod xattr;

pub use blob::{BlobRecord, Extent, XattrRef, Xattrs};
pub use checkpoint::{Checkpoint, CheckpointEncoder};
pub use record::{DataCheck, DataWrite, Mutation, RecordHeader, RecordKind};
pub use superblock::{CheckpointRef, Superblock};

/// Size of a metadata page in bytes: every metadata I/O is whole, aligned pages.
pub const MD_PAGE_SIZE: usize = 4096;
/// Current (and only) format version.
pub const FORMAT_VERSION: u32 = 1;
/// Smallest cluster size accepted (64 KiB).
pub const MIN_CLUSTER_SIZE: u64 = 64 * 1024;
/// Largest cluster size accepted (256 MiB).
pub const MAX_CLUSTER_SIZE: u64 = 256 * 1024 * 1024;
/// Longest xattr name in bytes.
pub const MAX_XATTR_NAME: usize = 255;
/// Longest xattr value in bytes.
pub const MAX_XATTR_VALUE: usize = 64 * 1024;

/// CRC-32C (Castagnoli) of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// CRC-32C of the bytes hashed into `crc` followed by `bytes` (`crc32c_append(0, b)` is
/// `crc32c(b)`).
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// Why a byte string is not a valid encoding of a structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the structure does.
    #[error("{what}: truncated (need {need} bytes, have {have})")]
    Truncated {
        /// The structure or field being decoded.
        what: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The magic bytes are wrong: this is not that structure.
    #[error("{what}: bad magic")]
    BadMagic {
        /// The structure.
        what: &'static str,
    },
    /// A stored checksum does not match the bytes.
    #[error("{what}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// The structure.
        what: &'static str,
        /// The checksum found on disk.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// The format version is not one this code reads.
    #[error("{what}: unsupported format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The structure.
        what: &'static str,
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// A field holds a value outside its domain (unknown tag, zero count, overlap, ...).
    #[error("{what}: invalid field: {detail}")]
    Invalid {
        /// The structure and field.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Bytes remain after the structure where none may.
    #[error("{what}: {extra} trailing bytes")]
    TrailingBytes {
        /// The structure.
        what: &'static str,
        /// Number of extra bytes.
        extra: u64,
    },
}

impl DecodeError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        DecodeError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

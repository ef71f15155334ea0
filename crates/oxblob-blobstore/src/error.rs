//! The blobstore's errors, by kind.

use oxblob_bdev::BdevError;
use oxblob_format::DecodeError;

/// Everything a blobstore call can fail with. Tests match on the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BsError {
    /// Neither superblock slot carries the blobstore magic.
    #[error("not a blobstore (no superblock magic in either slot)")]
    NotABlobstore,
    /// A structure decoded but violates an invariant, or could not be decoded.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// The structure.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A checksum did not match.
    #[error("bad checksum in {what} at md page {location}")]
    BadChecksum {
        /// The structure.
        what: String,
        /// Md page number (absolute) where it was read.
        location: u64,
    },
    /// The on-disk format version is not supported.
    #[error("unsupported format version {found}")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// The superblock sets incompatible feature bits this build does not know.
    #[error("unknown incompatible features {bits:#x}")]
    UnknownFeature {
        /// The unknown bits.
        bits: u64,
    },
    /// The store was created with another `bstype`.
    #[error("blobstore type mismatch: expected {expected:?}, found {found:?}")]
    WrongType {
        /// What the caller asked for.
        expected: [u8; 16],
        /// What the superblock holds.
        found: [u8; 16],
    },
    /// The device is too small for the requested layout (or smaller than at init).
    #[error("device too small: {0}")]
    DeviceTooSmall(String),
    /// No free cluster is left.
    #[error("no space: {needed} clusters needed, {free} free")]
    NoSpace {
        /// Clusters asked for.
        needed: u64,
        /// Clusters free.
        free: u64,
    },
    /// The md region has no room for the log or a checkpoint.
    #[error("no metadata space left")]
    NoMetadataSpace,
    /// No blob with this id exists.
    #[error("blob {0:#x} not found")]
    NotFound(u64),
    /// The blob is open and the operation needs it closed.
    #[error("blob {0:#x} is open")]
    BlobOpen(u64),
    /// The request cannot be accepted now (channel queue full).
    #[error("busy: {0}")]
    Busy(String),
    /// The blob or the store is read-only.
    #[error("read-only")]
    ReadOnly,
    /// An argument is out of range or misaligned.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A snapshot has more than one clone (or clones that block the operation).
    #[error("blob {0:#x} has clones")]
    HasClones(u64),
    /// The store was unloaded or destroyed; the handle is dead.
    #[error("blobstore is unloaded")]
    Unloaded,
    /// The device failed.
    #[error("device error: {0}")]
    Io(#[from] BdevError),
}

impl BsError {
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        BsError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// Maps a decode error found at `location` (absolute md page).
    pub(crate) fn from_decode(e: DecodeError, location: u64) -> Self {
        match e {
            DecodeError::BadChecksum { what, .. } => BsError::BadChecksum {
                what: what.to_string(),
                location,
            },
            DecodeError::UnsupportedVersion { found, .. } => BsError::UnsupportedVersion { found },
            other => BsError::corrupt(format!("md page {location}"), other.to_string()),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = BsError> = std::result::Result<T, E>;

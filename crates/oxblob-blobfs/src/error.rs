//! File-system errors: a POSIX-like kind, the path it concerns, and a detail.

use oxblob_blobstore::BsError;

/// What went wrong, as a POSIX-like kind. [`FsError::errno`] maps it to an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsErrorKind {
    /// No such file or directory (`ENOENT`).
    NotFound,
    /// The name already exists (`EEXIST`).
    Exists,
    /// A path component, or the operand, is not a directory (`ENOTDIR`).
    NotADirectory,
    /// The operand is a directory where a file is needed (`EISDIR`).
    IsADirectory,
    /// The directory is not empty (`ENOTEMPTY`).
    NotEmpty,
    /// A path component is longer than 255 bytes (`ENAMETOOLONG`).
    NameTooLong,
    /// No data or metadata space is left (`ENOSPC`).
    NoSpace,
    /// A bad argument: a relative path, a rename into its own subtree, the root (`EINVAL`).
    InvalidArgument,
    /// The file system is mounted read-only (`EROFS`).
    ReadOnly,
    /// The handle does not allow the operation (written when opened read-only, used after
    /// close) (`EBADF`).
    BadHandle,
    /// The device failed, or the file system was unmounted (`EIO`).
    Io,
    /// On-disk state violates an invariant (`EUCLEAN`).
    Corrupt,
}

impl FsErrorKind {
    /// The Linux errno of this kind.
    pub fn errno(self) -> i32 {
        match self {
            FsErrorKind::NotFound => libc::ENOENT,
            FsErrorKind::Exists => libc::EEXIST,
            FsErrorKind::NotADirectory => libc::ENOTDIR,
            FsErrorKind::IsADirectory => libc::EISDIR,
            FsErrorKind::NotEmpty => libc::ENOTEMPTY,
            FsErrorKind::NameTooLong => libc::ENAMETOOLONG,
            FsErrorKind::NoSpace => libc::ENOSPC,
            FsErrorKind::InvalidArgument => libc::EINVAL,
            FsErrorKind::ReadOnly => libc::EROFS,
            FsErrorKind::BadHandle => libc::EBADF,
            FsErrorKind::Io => libc::EIO,
            FsErrorKind::Corrupt => libc::EUCLEAN,
        }
    }
}

/// A file-system error: its kind, the path it concerns (empty when none), and a detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind:?}: {detail}")]
pub struct FsError {
    /// The kind; match on this.
    pub kind: FsErrorKind,
    /// The path the operation was about.
    pub path: String,
    /// Human-readable detail.
    pub detail: String,
}

impl FsError {
    /// A new error.
    pub fn new(kind: FsErrorKind, path: &str, detail: impl Into<String>) -> Self {
        FsError {
            kind,
            path: path.to_string(),
            detail: detail.into(),
        }
    }

    /// The Linux errno for FUSE and the RocksDB plugin.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    /// Maps a blobstore error met while working on `path`.
    pub fn from_bs(e: BsError, path: &str) -> Self {
        let kind = match &e {
            BsError::NoSpace { .. } | BsError::NoMetadataSpace => FsErrorKind::NoSpace,
            BsError::ReadOnly => FsErrorKind::ReadOnly,
            BsError::Io(_) | BsError::Unloaded | BsError::Busy(_) => FsErrorKind::Io,
            BsError::InvalidArgument(_) | BsError::DeviceTooSmall(_) => {
                FsErrorKind::InvalidArgument
            }
            BsError::NotFound(_) => FsErrorKind::NotFound,
            _ => FsErrorKind::Corrupt,
        };
        FsError::new(kind, path, e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = FsError> = std::result::Result<T, E>;

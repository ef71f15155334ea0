//! # oxblob-blobfs — files and real directories on the blobstore
//!
//! placeholder
mod attr;
mod error;
mod file;
mod fs;
mod path;

pub use attr::INLINE_MAX;
pub use error::{FsError, FsErrorKind, Result};
pub use file::FileHandle;
pub use fs::{
    BlobFs, DirEntry, FileType, Metadata, MkfsOptions, MountOptions, OpenFlags, StatFs, BSTYPE,
    DEFAULT_MD_FRACTION,
};
pub use path::{components, NAME_MAX};

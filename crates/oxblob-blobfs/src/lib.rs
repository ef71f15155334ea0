//! # oxblob-blobfs — files and real directories on the blobstore
//!
//! This crate owns the file system on top of `oxblob-blobstore`: the mapping of inodes to
//! blobs (one blob per inode, the inode number is the blob id), inode attributes in blob
//! xattrs, the in-memory directory index built at mount, path resolution, the namespace
//! operations (create, mkdir, rmdir, unlink, rename) each as one blobstore transaction,
//! orphan handling for files unlinked while open, inline storage of small files, and the file
//! data path (reads and writes at any offset, truncate, holes, fsync). The on-disk
//! representation and the atomicity argument are in `docs/blobfs.md`.
//!
//! It does **not** own: space allocation, the metadata log, recovery or crash atomicity of a
//! single record (the blobstore); devices (`oxblob-bdev`); permissions, owners, links, symbolic
//! links (there are none); a page cache (there is no read-ahead or write-behind cache yet:
//! every read and write goes to the blobstore); fsck of the tree (a mount refuses a tree that
//! names a missing parent or holds a duplicate name with `Corrupt`).
//!
//! ## Durability
//! - Durable on return: [`BlobFs::mkfs`], every namespace operation ([`BlobFs::open`] with
//!   create, [`BlobFs::create`], [`BlobFs::mkdir`], [`BlobFs::mkdir_all`] per directory,
//!   [`BlobFs::rmdir`], [`BlobFs::unlink`], [`BlobFs::rename`]), [`FileHandle::fsync`],
//!   [`FileHandle::fdatasync`] (size and data; a change of times alone is not persisted),
//!   [`FileHandle::close`], [`BlobFs::unmount`].
//! - In memory until the file's next fsync/fdatasync/close: its size, times, inline data and
//!   cluster map after `write_at`/`append`/`truncate`. Data of a file in clusters may reach
//!   the device earlier, but a durable size never covers unwritten data (fsync flushes the
//!   device before it writes the size).
//! - After a crash, every namespace operation happened entirely or not at all, and a file
//!   unlinked while open is gone (`docs/fault-model.md`, promise 3).
//!
//! ## Concurrency contract
//! [`BlobFs`] (cheap to clone) and [`FileHandle`] are `Send + Sync`; every call blocks until
//! done. There is no file-system thread.
//! - **Namespace** (open, create, mkdir, rmdir, unlink, rename, and the last close of a
//!   file): one `RwLock` over the directory index, taken exclusive for the whole operation,
//!   including its blobstore transaction (one md record and a flush). Namespace operations are
//!   therefore totally ordered; the order is the order of their log records.
//! - **Lookups** (stat, readdir, exists, statfs): the same lock, shared; they run in parallel
//!   with each other and with all data I/O.
//! - **File data**: `read_at` takes the file's own lock shared, `write_at`/`append`/
//!   `truncate`/`fsync`/`fdatasync` take it exclusive; no namespace lock, no lock shared with
//!   other files. I/O uses a blobstore channel from a per-mount pool (a mutex held only to pop
//!   and push a channel). Writes that allocate a cluster, truncate and fsync also take the
//!   blobstore's metadata mutex inside the blobstore. All handles of one file share one
//!   in-memory inode: a write is visible to every handle as soon as it returns; appends from
//!   several handles never interleave (each is atomic under the file lock).
//! - Lock order: namespace lock, then a file's lock, then the blobstore's locks.
//! - `unmount` persists every open file and ends the mount; later calls on the file system or
//!   its handles fail with [`FsErrorKind::Io`].

mod attr;
mod cache;
mod error;
mod file;
mod fs;
mod fsck;
mod ino;
mod path;

pub use attr::INLINE_MAX;
pub use cache::{CacheStats, DEFAULT_CACHE_BYTES};
pub use error::{FsError, FsErrorKind, Result};
pub use file::FileHandle;
pub use fs::{
    BlobFs, DirEntry, FileType, Metadata, MkfsOptions, MountOptions, OpenFlags, StatFs, BSTYPE,
    DEFAULT_MD_FRACTION,
};
pub use fsck::{fsck, FsckOptions, FsckReport, NsFinding, NsFindingKind, LOST_FOUND};
pub use ino::RenameFlags;
pub use path::{components, NAME_MAX};

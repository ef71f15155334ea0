//! # oxblob-blobstore — blobs on a block device
//!
//! This crate owns the blobstore: the md region (a metadata log with checkpoints and two
//! superblock slots, format in `docs/format.md`), blobs (cluster maps, xattrs, thin
//! provisioning, read-only), the derived cluster allocation, the data path ([`BsChannel`]),
//! multi-blob transactions ([`Txn`]) and recovery after a crash. It does **not** own byte
//! layouts (that is `oxblob-format`), the devices (`oxblob-bdev`), files and directories
//! (`oxblob-blobfs`) or fsck policy (the CLI; it uses [`inspect`]).
//!
//! ## Durability
//! Durable on return: [`BlobStore::init`], [`BlobStore::create_blob`],
//! [`BlobStore::delete_blob`], [`BlobStore::set_super_blob`], [`Txn::commit`],
//! [`Blob::sync_md`], [`Blob::close`] (of a dirty blob), [`BlobStore::flush`],
//! [`BlobStore::unload`]. Deferred ([`Txn::commit_deferred`], [`Blob::commit_md_deferred`],
//! [`Durability::Deferred`]): the record is written without a flush and is durable with the
//! next flush of the store; after a crash the log keeps a prefix of the records in commit
//! order. Concurrent durable commits and flushes share one device flush (group commit). A
//! clean blob's close does no I/O. In memory until the blob's next
//! `sync_md`/close: [`Blob::resize`], xattr changes, [`Blob::set_read_only`], and thin
//! allocations made by writes. Data writes are durable after a later `sync_md`/close of any
//! blob (each is a device flush covering every write completed before it). After a crash the
//! store reloads to a state where every metadata operation happened entirely or not at all
//! (`docs/fault-model.md`).
//!
//! Two one-flush commits serve an appending fsync: [`Blob::write_commit_checked`] writes the
//! data beside a record that checks it; [`Blob::write_commit_inline`] puts small data inside
//! the record (one device write), keeps it in memory and writes it in place later, in bulk
//! and always before a checkpoint drops the log that holds it (the overlay).
//!
//! ## Concurrency contract
//! - [`BlobStore`] (cheap to clone) and [`Blob`] are `Send + Sync`. Metadata operations from
//!   any number of threads are serialized on one metadata mutex; each blocks for its device
//!   I/O (md writes and flushes run on the store's own md channel).
//! - Data I/O uses one [`BsChannel`] per thread (`Send`, not `Sync`). Submitting translates
//!   offsets under the blob's own read lock (never a store-wide lock) and never blocks, except a
//!   write to an unallocated cluster of a thin blob or clone, which takes the metadata mutex to
//!   allocate and fill the cluster, and a write over inline-logged bytes not yet in place,
//!   which takes it to write them first. Completions arrive through [`BsChannel::poll`] in
//!   any order.
//! - Lock order: metadata mutex, then the blob table, then one blob's lock; the overlay's
//!   lock last.
//! - Callers must not shrink a blob while I/O beyond the new size is in flight; deleting needs
//!   the blob closed. Overlapping concurrent writes to the same bytes give an unspecified mix.

mod alloc;
mod blob;
mod error;
mod fsck;
mod io;
mod md;
mod overlay;
mod snapshot;
mod store;
mod table;

pub use blob::Blob;
pub use error::{BsError, Result};
pub use fsck::{fsck, Finding, FindingKind, FsckCounts, FsckOptions, FsckReport, Severity};
pub use io::{BsChannel, BsCompletion, BsRejected};
pub use oxblob_format::{BlobRecord, Extent};
pub use store::{
    bstype, inspect, BlobInfo, BlobStore, CreateOptions, Durability, InitOptions, Inspection,
    LoadOptions, LogEntry, MdUsage, Txn, DEFAULT_CLUSTER_SIZE, DEFAULT_SEGMENT_PAGES,
};

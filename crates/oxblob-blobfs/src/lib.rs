//! # oxblob-blobfs — files and real directories on the blobstore
//!
//! This crate owns the file system on top of `oxblob-blobstore`: the mapping of inodes to
//! blobs (one blob per inode, the inode number is the blob id), inode attributes in blob
//! xattrs, the in-memory directory index built at mount, path resolution, the namespace
//! operations (create, mkdir, rmdir, unlink, rename) each as one blobstore transaction,
//! orphan handling for files unlinked while open, inline storage of small files, the file
//! data path (reads and writes at any offset, truncate, holes, fsync), and the data cache
//! (write-behind, read-ahead, clean chunks under one memory bound, `cache.rs`). The on-disk
//! representation and the atomicity argument are in `docs/format.md` (blobfs section); the cache in `docs/blobfs.md`.
//!
//! It does **not** own: space allocation, the metadata log, recovery or crash atomicity of a
//! single record (the blobstore); devices (`oxblob-bdev`); permissions, owners, links, symbolic
//! links (there are none); fsck of the tree (a mount refuses a tree that names a missing
//! parent or holds a duplicate name with `Corrupt`).
//!
//! ## In-memory namespace
//! Built at mount from every blob's xattrs, changed by each namespace operation, never on
//! disk (`ns.rs`, `Ns`). Laid out so that with a million files a random path `stat` costs
//! about **one** cache miss — the line holding the entry's record — where a table of entries
//! pointing into a separate inode array cost two (the entry, then the inode):
//! - **Records inside the directory tables**: per directory, an open-addressing hash table
//!   whose buckets are one control byte (empty, or 8 bits of the name's keyed SipHash) and one
//!   64-byte, cache-line-aligned inode record, in two parallel arrays; linear probing, at
//!   most 3/4 full, deletion by backward shift. A record holds everything `stat` reports, 32
//!   bits of its name's hash (its home bucket and control byte come from it alone, so
//!   growing, shrinking and deleting never read a name) and the entry name — up to 15 bytes
//!   inline, longer ones in a side map — so comparing the name of a candidate entry and
//!   stating it read one line. A lookup per path component probes the control bytes (1 byte
//!   an entry: 2 MiB for a million-entry directory, which stays in the CPU caches) and reads
//!   the record only where its byte matches (a wrong match once in 255 bytes compared).
//!   The price is memory: an empty bucket is 65 bytes too, so records take 128 bytes an
//!   entry after mount (tables half full) and 85 to 170 as a table fills and doubles, where a
//!   dense inode array took 64 plus 11 to 21 for the table.
//! - **Huge pages**: the records are read at random, and with 4 KiB pages nearly every read
//!   of a large table would also miss the TLB. Large tables' buffers, and the shared pool
//!   holding every small table (up to 16,384 buckets, by power-of-two size class: a thousand
//!   directories of a thousand files are one 128 MiB array, not a thousand allocations), are
//!   advised for transparent huge pages (`madvise(MADV_HUGEPAGE)`) before they are touched,
//!   once they reach 32 MiB: smaller buffers may come from the allocator's heap, where the
//!   advice would outlive them and make the heap fault in 2 MiB pages for small allocations.
//! - **Stable handles**: records move (a table grows or shrinks, a delete shifts the rest of
//!   a probe run back, a rename moves an entry to another directory), so positions are only
//!   used under one hold of the namespace lock. Inode numbers map to their record's current
//!   position (updated on every move) for the inode-level API; a directory keeps its index
//!   in the namespace's directory array for life, and its record names it by that index, so
//!   moving a directory touches none of its children. The parent of a record is the table it
//!   sits in. The root and files unlinked while open are in a small side array.
//! - Per directory, the entries in name order for `readdir` and its cursor: a sorted array
//!   with the recent changes logged beside it and merged in every n/4 changes (`order.rs`),
//!   so that a create, rename or delete does not search a tree of every name.
//!
//! ## Cache
//! [`MountOptions::cache_bytes`] (default [`DEFAULT_CACHE_BYTES`], 64 MiB; 0 = every read
//! and write goes to the device) bounds the memory of:
//! - **write-behind**: per file, one contiguous dirty extent of at most 1 MiB (a quarter of
//!   the bound if smaller) in the shared in-memory inode, so every handle and thread sees the
//!   latest bytes. Small writes inside or right after it are copied into it; it goes to the
//!   device as one write (unaligned edges read-modify-written once) on fsync, fdatasync,
//!   close, truncate, a write elsewhere in the file, or memory pressure. Writes of at least
//!   the buffer size go to the device directly.
//! - **read-ahead**: a read starting where the previous one of the file ended is sequential;
//!   on a miss it fetches a window (128 KiB doubling to 2 MiB, at most a quarter of the
//!   bound) in 64 KiB chunks, every run submitted at once on one channel. A random-read miss
//!   caches its 64 KiB chunk while the cache has room; under memory pressure random reads go
//!   to the device and only a chunk missed twice recently is cached (index and filter
//!   blocks). [`FileHandle::readahead`] is a hint that fills the cache ahead of reads.
//! - Accounting is one atomic counter; over the bound, eviction takes other files' clean
//!   chunks, then their buffers (only files whose locks are free), then the caller's own.
//!   [`BlobFs::cache_stats`] reports the use.
//!
//! ## Durability
//! - Durable on return: [`BlobFs::mkfs`], every namespace operation ([`BlobFs::open`] with
//!   create, [`BlobFs::create`], [`BlobFs::mkdir`], [`BlobFs::mkdir_all`] per directory,
//!   [`BlobFs::rmdir`], [`BlobFs::unlink`], [`BlobFs::rename`]), [`FileHandle::fsync`],
//!   [`FileHandle::fdatasync`] (size and data; a change of times alone is not persisted),
//!   [`FileHandle::close`], [`BlobFs::unmount`].
//! - In memory until the file's next fsync/fdatasync/close: its size, times, inline data and
//!   cluster map after `write_at`/`append`/`truncate`, and data in its write-behind buffer.
//!   Data of a file in clusters may reach the device earlier (a full buffer, memory
//!   pressure), but a durable size never covers unwritten data (fsync writes the buffer,
//!   flushes the device, then writes the size; after pure appends the data and a record
//!   checking it share one flush, and appends of up to 32 KiB go inside the record itself:
//!   one write, one flush, the blobstore's *inline data*). After a crash, a byte inside the
//!   durable size is the byte of the last fsync or a byte written after it, never anything else
//!   (tested by the crash sweep in `tests/cache.rs`).
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
//!   other files (the cache's read state is a per-file mutex never held across I/O; its
//!   global accounting is atomic; eviction only `try_lock`s other files). I/O uses a blobstore channel from a per-mount pool (a mutex held only to pop
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
mod ns;
mod order;
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

//! # oxblob-rocksdb — a RocksDB `FileSystem` on blobfs
//!
//! The crate builds `liboxblob_rocksdb.so`. Loaded into any RocksDB 7.8 process (for stock
//! Debian `db_bench`: `LD_PRELOAD=liboxblob_rocksdb.so db_bench --fs_uri=oxblob://...`), it
//! registers the `oxblob://` scheme in `ObjectLibrary::Default()`, and RocksDB then keeps
//! every file of the database — `LOCK`, `LOG`, `OPTIONS`, `MANIFEST`, `CURRENT`, WALs and SSTs
//! — inside one blobfs image. See the crate README for usage and [`uri`] for the URI syntax.
//!
//! Layers: a thin C++ `FileSystem` (`cpp/oxblob_fs.cc`) maps RocksDB calls to a small C ABI
//! implemented in the private `ffi` module (the only one with `unsafe`), over the safe [`mount`] module:
//! process-wide mounts, the `LockFile` table, and buffered writable files. [`Db`] is a
//! small Rust API over RocksDB itself, opened through the same registry path.
//!
//! Durability: only what RocksDB syncs (`Sync`/`Fsync`, i.e. `sync=true` writes, flushed
//! and compacted SSTs, the MANIFEST) survives a crash, of the process or of the machine.
//! Unsynced WAL tails are lost when the process is killed.

pub mod db;
mod ffi;
pub mod mount;
pub mod uri;

pub use db::{Code, Db, Error, Iter, Options, SubCode, WriteBatch};
pub use uri::{Uri, UriError, SCHEME};

//! A small Rust API over RocksDB, opened through the plugin: `Env::CreateFromUri` with the
//! `oxblob://` URI, then `DB::Open` — the same registry path `db_bench --fs_uri` takes.

use crate::ffi::{RawBatch, RawDb, RawIter};

/// A RocksDB status code (`rocksdb::Status::Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// `kNotFound`.
    NotFound,
    /// `kCorruption`.
    Corruption,
    /// `kNotSupported`.
    NotSupported,
    /// `kInvalidArgument`.
    InvalidArgument,
    /// `kIOError`.
    IoError,
    /// `kBusy`.
    Busy,
    /// `kAborted` (also a C++ exception caught in the shim).
    Aborted,
    /// Any other code (its number).
    Other(i32),
}

/// A RocksDB status subcode that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubCode {
    /// None.
    None,
    /// `kNoSpace`.
    NoSpace,
    /// `kPathNotFound`.
    PathNotFound,
    /// Any other subcode (its number).
    Other(i32),
}

/// A failed RocksDB call: its status code, subcode and `Status::ToString()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// The status code.
    pub code: Code,
    /// The subcode.
    pub subcode: SubCode,
    /// RocksDB's text of the status.
    pub message: String,
}

impl Error {
    pub(crate) fn from_status(code: i32, subcode: i32, message: String) -> Self {
        let code = match code {
            1 => Code::NotFound,
            2 => Code::Corruption,
            3 => Code::NotSupported,
            4 => Code::InvalidArgument,
            5 => Code::IoError,
            10 => Code::Aborted,
            11 => Code::Busy,
            n => Code::Other(n),
        };
        let subcode = match subcode {
            0 => SubCode::None,
            4 => SubCode::NoSpace,
            9 => SubCode::PathNotFound,
            n => SubCode::Other(n),
        };
        Error {
            code,
            subcode,
            message,
        }
    }

    pub(crate) fn invalid(message: String) -> Self {
        Error {
            code: Code::InvalidArgument,
            subcode: SubCode::None,
            message,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Options of [`Db::open`] (a subset of `rocksdb::Options`; `None` keeps RocksDB's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Create the database if missing (default `true`).
    pub create_if_missing: bool,
    /// Fail if the database exists (default `false`).
    pub error_if_exists: bool,
    /// Sync every write (`WriteOptions::sync`) done through [`Db`] (default `false`).
    pub sync: bool,
    /// Memtable size in bytes.
    pub write_buffer_size: Option<u64>,
    /// Target SST file size in bytes.
    pub target_file_size_base: Option<u64>,
    /// Size of level 1 in bytes.
    pub max_bytes_for_level_base: Option<u64>,
    /// Turn background compactions off (default `false`).
    pub disable_auto_compactions: bool,
    /// RocksDB's `paranoid_checks` (default `true`).
    pub paranoid_checks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            error_if_exists: false,
            sync: false,
            write_buffer_size: None,
            target_file_size_base: None,
            max_bytes_for_level_base: None,
            disable_auto_compactions: false,
            paranoid_checks: true,
        }
    }
}

/// An open database. `Send + Sync`. Closed by [`Db::close`] (which reports errors) or on drop.
#[derive(Debug)]
pub struct Db {
    raw: RawDb,
    sync: bool,
}

impl Db {
    /// Opens the database at `path` inside the file system named by `fs_uri` (for example
    /// `oxblob:///var/tmp/db.img?mkfs=1&size=1GiB`; see [`crate::uri`]). Any URI RocksDB's
    /// registry knows works, so a wrong scheme gives RocksDB's own error.
    pub fn open(fs_uri: &str, path: &str, options: &Options) -> Result<Db> {
        Ok(Db {
            raw: RawDb::open(fs_uri, path, options)?,
            sync: options.sync,
        })
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.raw.put(key, value, self.sync)
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.raw.get(key)
    }

    /// Deletes `key` (no error if missing).
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.raw.delete(key, self.sync)
    }

    /// Applies a batch atomically.
    pub fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        self.raw.write(&batch.raw, self.sync)
    }

    /// Flushes the memtable to an SST file.
    pub fn flush(&self) -> Result<()> {
        self.raw.flush()
    }

    /// Compacts the key range `[begin, end]` (`None`: unbounded).
    pub fn compact_range(&self, begin: Option<&[u8]>, end: Option<&[u8]>) -> Result<()> {
        self.raw.compact_range(begin, end)
    }

    /// A RocksDB property (for example `rocksdb.num-files-at-level0`), if known.
    pub fn property(&self, name: &str) -> Option<String> {
        self.raw.property(name)
    }

    /// An iterator over the whole key space; call [`Iter::seek`] or
    /// [`Iter::seek_to_first`] first.
    pub fn iter(&self) -> Result<Iter<'_>> {
        Ok(Iter {
            raw: self.raw.iter()?,
        })
    }

    /// Closes the database; the last user of an image unmounts it.
    pub fn close(self) -> Result<()> {
        self.raw.close()
    }
}

/// A batch of puts and deletes, applied atomically by [`Db::write_batch`].
#[derive(Debug)]
pub struct WriteBatch {
    raw: RawBatch,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Result<Self> {
        Ok(WriteBatch {
            raw: RawBatch::new()?,
        })
    }

    /// Adds a put.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.raw.put(key, value);
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: &[u8]) {
        self.raw.delete(key);
    }
}

/// An iterator in key order.
#[derive(Debug)]
pub struct Iter<'a> {
    raw: RawIter<'a>,
}

impl Iter<'_> {
    /// Positions at the first key `>= key`.
    pub fn seek(&mut self, key: &[u8]) {
        self.raw.seek(key);
    }

    /// Positions at the first key.
    pub fn seek_to_first(&mut self) {
        self.raw.seek_to_first();
    }

    /// Moves to the next key (no-op when not valid).
    pub fn next(&mut self) {
        self.raw.next();
    }

    /// Whether the iterator is at an entry.
    pub fn valid(&self) -> bool {
        self.raw.valid()
    }

    /// The current key.
    pub fn key(&self) -> Option<&[u8]> {
        self.raw.key()
    }

    /// The current value.
    pub fn value(&self) -> Option<&[u8]> {
        self.raw.value()
    }

    /// The iterator's status: an error stops iteration (`valid()` turns false).
    pub fn status(&self) -> Result<()> {
        self.raw.status()
    }
}

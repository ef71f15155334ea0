//! Process-wide mounts, the lock table, and the file objects the C++ `FileSystem` drives.
//!
//! One image is mounted once per process: every `FileSystem` made from a URI naming the same
//! image shares the mount, counted by [`MountRef`]s. The last reference unmounts (persisting
//! every open file and unloading the blobstore cleanly, which also releases the image's
//! `flock`). Mounts still referenced when the process exits are unmounted by an `atexit`
//! handler.
//!
//! The mount's blobfs data cache is sized by the URI's `cache=` (default
//! [`crate::uri::default_cache_bytes`], a quarter of the RAM). Writable files buffer appends
//! once: with the cache on, appends to tables and other files go straight to blobfs, whose
//! write-behind buffer holds them (no second copy here); with `cache=0` (no write-behind in
//! blobfs), and for logs being written (`*.log`, `LOG`) with the cache on too, [`WFile`]
//! buffers them itself, in an aligned I/O buffer that blobfs writes to the device as it is
//! (`FileHandle::write_buf_at`: one copy of each byte, into the buffer), and data reaches
//! blobfs every [`WRITE_CHUNK`] bytes and on `sync`, `fsync`, `truncate` and `close`. A full
//! buffer is written by a short-lived thread of its own while appends go on into a fresh one
//! (at most one such write in flight per file; every other operation waits for it first), so
//! the appending thread — RocksDB's writer, on the WAL — does not wait for the device, as it
//! would not on a kernel file system's page cache. A failed write is reported by the file's
//! next operation, and the handle then fails every later one (`EIO`). Either way only synced
//! data is durable, against a process crash as against a power cut.

use crate::uri::{Device, Uri};
use oxblob_bdev::IoBuf;
use oxblob_blobfs::{BlobFs, FileHandle, FsError, MkfsOptions, MountOptions};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;

/// With the blobfs cache off, buffered appends are written to blobfs once this many bytes
/// are pending.
pub const WRITE_CHUNK: usize = 1 << 20;

/// Stack of the thread that writes a full buffer (it only calls into blobfs).
const DRAIN_STACK: usize = 256 << 10;

/// An error crossing the C ABI: an errno and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Linux errno (`ENOENT`, `ENOSPC`, `EBUSY`, `EINVAL`, `EIO`, ...).
    pub errno: i32,
    /// Human-readable message, naming the path or image.
    pub message: String,
}

impl Error {
    /// A new error.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Error {
            errno,
            message: message.into(),
        }
    }
}

impl From<FsError> for Error {
    fn from(e: FsError) -> Self {
        Error::new(e.errno(), e.to_string())
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A mounted image.
#[derive(Debug)]
pub struct Mount {
    key: String,
    fs: BlobFs,
    /// Paths locked with `LockFile`.
    locks: Mutex<HashSet<String>>,
}

struct Entry {
    mount: Arc<Mount>,
    refs: usize,
}

fn registry() -> &'static Mutex<HashMap<String, Entry>> {
    static REG: std::sync::OnceLock<Mutex<HashMap<String, Entry>>> = std::sync::OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

extern "C" fn unmount_all_at_exit() {
    let all: Vec<Arc<Mount>> = lock(registry()).drain().map(|(_, e)| e.mount).collect();
    for m in all {
        // Best effort: the process is ending; an error here has nobody to report to.
        let _ = m.fs.unmount();
    }
}

fn register_exit_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(crate::ffi::register_atexit(unmount_all_at_exit));
}

/// Maps a device open error to an errno and message.
fn bdev_error(uri: &str, e: oxblob_bdev::BdevError) -> Error {
    use oxblob_bdev::BdevError as B;
    let errno = match &e {
        B::InUse { .. } => libc::EBUSY,
        B::Config(_) => libc::EINVAL,
        B::Open { message, .. } if message.contains("No such file") => libc::ENOENT,
        _ => libc::EIO,
    };
    Error::new(errno, format!("cannot open the image of {uri}: {e}"))
}

/// A counted reference to a process-wide mount. Dropping the last one unmounts.
#[derive(Debug)]
pub struct MountRef {
    mount: Arc<Mount>,
}

impl MountRef {
    /// Mounts the image `uri` names (formatting it first with `mkfs=1` if it does not exist),
    /// or shares the mount already made in this process.
    pub fn mount(uri: &str) -> Result<MountRef> {
        let u = Uri::parse(uri).map_err(|e| Error::new(libc::EINVAL, e.to_string()))?;
        let (mut key, exists) = match &u.device {
            Device::File { path, .. } => match std::fs::canonicalize(path) {
                Ok(p) => (p.display().to_string(), true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !u.mkfs {
                        return Err(Error::new(
                            libc::ENOENT,
                            format!(
                                "image {} does not exist (create it with `?mkfs:1&size:4GiB` in \
                                 the URI, or `oxblob mkfs`)",
                                path.display()
                            ),
                        ));
                    }
                    (path.display().to_string(), false)
                }
                Err(e) => {
                    return Err(Error::new(
                        e.raw_os_error().unwrap_or(libc::EIO),
                        format!("image {}: {e}", path.display()),
                    ))
                }
            },
            Device::Malloc { .. } => (uri.to_string(), false),
        };
        let mut reg = lock(registry());
        if let Some(e) = reg.get_mut(&key) {
            e.refs += 1;
            return Ok(MountRef {
                mount: Arc::clone(&e.mount),
            });
        }
        let spec = u.device_spec();
        let mount_opts = MountOptions {
            cache_bytes: u.cache_bytes,
            ..MountOptions::default()
        };
        let fs = if exists {
            let dev = oxblob_bdev::spec::open(&spec).map_err(|e| bdev_error(uri, e))?;
            BlobFs::mount(dev, mount_opts).map_err(|e| {
                Error::new(
                    e.errno(),
                    format!("cannot mount {key} (is it a blobfs image?): {e}"),
                )
            })?
        } else {
            let opts = oxblob_bdev::FileOptions {
                create_size: matches!(u.device, Device::File { .. }).then_some(u.size),
                ..Default::default()
            };
            let dev = oxblob_bdev::spec::open_with(&spec, &opts).map_err(|e| bdev_error(uri, e))?;
            let mut mo = MkfsOptions::default();
            if let Some(c) = u.cluster_size {
                mo.cluster_size = c;
            }
            let made = BlobFs::mkfs(Arc::clone(&dev), mo)
                .map_err(|e| Error::new(e.errno(), format!("mkfs of {key} failed: {e}")))
                .and_then(|()| {
                    BlobFs::mount(Arc::clone(&dev), mount_opts)
                        .map_err(|e| Error::new(e.errno(), format!("cannot mount {key}: {e}")))
                });
            match (made, &u.device) {
                (Ok(fs), Device::File { path, .. }) => {
                    // Key by the canonical path, as every later mount of this image will be.
                    if let Ok(p) = std::fs::canonicalize(path) {
                        key = p.display().to_string();
                    }
                    fs
                }
                (Ok(fs), Device::Malloc { .. }) => fs,
                (Err(e), dev_kind) => {
                    // Leave no half-formatted image behind: a retry with mkfs=1 starts afresh.
                    dev.close();
                    drop(dev);
                    if let Device::File { path, .. } = dev_kind {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e);
                }
            }
        };
        let mount = Arc::new(Mount {
            key: key.clone(),
            fs,
            locks: Mutex::new(HashSet::new()),
        });
        reg.insert(
            key,
            Entry {
                mount: Arc::clone(&mount),
                refs: 1,
            },
        );
        drop(reg);
        register_exit_hook();
        Ok(MountRef { mount })
    }

    /// The mounted file system.
    pub fn fs(&self) -> &BlobFs {
        &self.mount.fs
    }

    /// The registry key: the image's canonical path (or the URI of a RAM device).
    pub fn key(&self) -> &str {
        &self.mount.key
    }

    /// Releases this reference; the last one unmounts, and its result is returned.
    pub fn release(self) -> Result<()> {
        let mut reg = lock(registry());
        let last = match reg.get_mut(&self.mount.key) {
            Some(e) if Arc::ptr_eq(&e.mount, &self.mount) => {
                e.refs = e.refs.saturating_sub(1);
                e.refs == 0
            }
            _ => false, // already unmounted at exit
        };
        if !last {
            return Ok(());
        }
        reg.remove(&self.mount.key);
        drop(reg);
        self.mount.fs.unmount().map_err(Error::from)
    }

    /// Takes the lock named `path`: fails with `EBUSY` ("lock held") if it is held.
    pub fn lock_file(&self, path: &str) -> Result<()> {
        let mut held = lock(&self.mount.locks);
        if held.contains(path) {
            return Err(Error::new(
                libc::EBUSY,
                format!(
                    "lock held: {path} is locked by another user of this image in this process"
                ),
            ));
        }
        // RocksDB expects the lock file to exist afterwards.
        if !self.fs().exists(path)? {
            let h = self.fs().open(
                path,
                oxblob_blobfs::OpenFlags {
                    write: true,
                    create: true,
                    ..Default::default()
                },
            )?;
            h.close()?;
        }
        held.insert(path.to_string());
        Ok(())
    }

    /// Releases the lock named `path`.
    pub fn unlock_file(&self, path: &str) -> Result<()> {
        if lock(&self.mount.locks).remove(path) {
            Ok(())
        } else {
            Err(Error::new(libc::ENOLCK, format!("{path} is not locked")))
        }
    }
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read an existing file.
    Read,
    /// Create or truncate, then write (append).
    Truncate,
    /// Open or create without truncating; appends go to the end.
    Append,
}

#[derive(Debug)]
struct Pending {
    /// File offset where `buf` starts.
    base: u64,
    /// An aligned I/O buffer: [`WFile::drain`] hands it to blobfs, which writes whole blocks
    /// of it to the device as they are (no second copy).
    buf: IoBuf,
    /// A write of the buffer to blobfs failed. What reached the device is unknown and the
    /// bytes are gone from the buffer, so every later operation of the handle fails too,
    /// rather than writing later bytes where the lost ones belong.
    failed: bool,
    /// The write of the previous full buffer (the bytes before `base`), running on a thread
    /// of its own.
    inflight: Option<JoinHandle<std::result::Result<(), FsError>>>,
}

impl Pending {
    fn new(base: u64) -> Self {
        Pending {
            base,
            buf: IoBuf::with_capacity(0),
            failed: false,
            inflight: None,
        }
    }

    /// Waits for the write in flight, if any (only if it is done, without `wait`); its
    /// failure fails the handle and is returned here, once.
    fn settle(&mut self, wait: bool) -> Result<()> {
        if !wait && !self.inflight.as_ref().is_some_and(|j| j.is_finished()) {
            return self.check();
        }
        let Some(j) = self.inflight.take() else {
            return self.check();
        };
        let r = match j.join() {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::new(
                libc::EIO,
                "a buffered write of this file panicked",
            )),
        };
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// `EIO` once a write of the buffer failed.
    fn check(&self) -> Result<()> {
        if self.failed {
            return Err(Error::new(
                libc::EIO,
                "an earlier write of this file's buffered appends failed",
            ));
        }
        Ok(())
    }
}

/// An open file: a blobfs handle and, for writers on a mount with the cache off, a buffer of
/// appended bytes not yet written to blobfs.
#[derive(Debug)]
pub struct WFile {
    /// Shared with the thread writing a full buffer, while one runs.
    h: Option<Arc<FileHandle>>,
    pending: Mutex<Pending>,
    writable: bool,
    /// Buffer appends here: the blobfs cache is off (blobfs would write each one), or the
    /// file is a log being written (see [`WFile::open`]).
    buffered: bool,
    /// The mount's blobfs cache is off.
    cache_off: bool,
}

fn closed() -> Error {
    Error::new(libc::EBADF, "file is closed")
}

impl WFile {
    /// Opens `path` on the mount.
    pub fn open(m: &MountRef, path: &str, mode: OpenMode) -> Result<WFile> {
        use oxblob_blobfs::OpenFlags;
        let mut flags = match mode {
            OpenMode::Read => OpenFlags::read(),
            OpenMode::Truncate => OpenFlags::create_truncate(),
            OpenMode::Append => OpenFlags {
                read: true,
                write: true,
                create: true,
                ..Default::default()
            },
        };
        // A write-ahead log (`NNNNNN.log`) or the info log (`LOG`): read back only by a
        // recovery or a person, never while written. Caching what is written to them would
        // spend a copy and fresh memory on every byte, in the writing thread, and crowd out
        // SST blocks that are read.
        let name = path.rsplit('/').next().unwrap_or(path);
        let log = mode != OpenMode::Read && (name.ends_with(".log") || name == "LOG");
        flags.no_reuse = log;
        let h = m.fs().open(path, flags)?;
        let base = h.len();
        let cache_off = m.fs().cache_stats().limit_bytes == 0;
        Ok(WFile {
            h: Some(Arc::new(h)),
            pending: Mutex::new(Pending::new(base)),
            writable: mode != OpenMode::Read,
            // A log's appends are gathered here with the cache on too: blobfs's write-behind
            // buffer would write each full megabyte on the appending thread — RocksDB's
            // writer, for the WAL, which then waited on the device for 16% of a buffered
            // `overwrite` (786 ms of 4.8 s, `bpftrace`), where on ext4 it only copies into
            // the page cache. Gathered here, a full buffer is written in the background.
            buffered: cache_off || log,
            cache_off,
        })
    }

    fn handle(&self) -> Result<&FileHandle> {
        self.h.as_deref().ok_or_else(closed)
    }

    /// Writes the whole buffer (with `all`: on this thread, after the write in flight), or,
    /// when at least [`WRITE_CHUNK`] bytes are pending, its prefix up to an io-unit boundary
    /// (on a thread of its own, once the previous such write is done).
    fn drain(&self, p: &mut Pending, all: bool) -> Result<()> {
        p.settle(all)?;
        if p.buf.is_empty() || (!all && p.buf.len() < WRITE_CHUNK) {
            return Ok(());
        }
        let h = self.h.as_ref().ok_or_else(closed)?;
        let n = if all {
            p.buf.len()
        } else {
            let end = (p.base + p.buf.len() as u64) / 4096 * 4096;
            usize::try_from(end.saturating_sub(p.base)).unwrap_or(p.buf.len())
        };
        if n == 0 {
            return Ok(());
        }
        if !all {
            // One write in flight per file: the previous one first.
            p.settle(true)?;
        }
        // The buffer itself goes to blobfs (a prefix of whole blocks; a short rest stays).
        let mut rest = IoBuf::with_capacity(WRITE_CHUNK + 4096);
        rest.extend_from_slice(&p.buf[n..]);
        let mut head = std::mem::replace(&mut p.buf, rest);
        head.resize(n);
        let base = p.base;
        p.base += n as u64;
        if all {
            if let Err(e) = h.write_buf_at(base, head) {
                p.failed = true;
                return Err(e.into());
            }
            return Ok(());
        }
        let h = Arc::clone(h);
        let spawned = std::thread::Builder::new()
            .name("oxblob-wb".into())
            .stack_size(DRAIN_STACK)
            .spawn(move || h.write_buf_at(base, head));
        match spawned {
            Ok(j) => {
                p.inflight = Some(j);
                Ok(())
            }
            Err(e) => {
                p.failed = true;
                Err(Error::new(
                    libc::EIO,
                    format!("cannot start a buffered write: {e}"),
                ))
            }
        }
    }

    /// Size including buffered bytes.
    pub fn size(&self) -> u64 {
        if !self.writable {
            return self.h.as_ref().map_or(0, |h| h.len());
        }
        let p = lock(&self.pending);
        let on_fs = self.h.as_ref().map_or(0, |h| h.len());
        on_fs.max(p.base + p.buf.len() as u64)
    }

    /// Reads at `offset` into `buf`; returns the bytes read (0 at the end). Sees buffered
    /// appends of this handle.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if self.writable {
            // Rare (RocksDB reads files it is writing only through other handles): make the
            // buffer visible first. Readers never take this lock.
            let mut p = lock(&self.pending);
            self.drain(&mut p, true)?;
        }
        let h = self.handle()?;
        let mut done = 0;
        while done < buf.len() {
            let n = h.read_at(offset + done as u64, &mut buf[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    /// Appends `data` at the end of the file.
    pub fn append(&self, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::new(libc::EBADF, "file is opened read-only"));
        }
        let mut p = lock(&self.pending);
        p.settle(false)?;
        if !self.buffered {
            // blobfs's write-behind buffers it (one copy, one buffer).
            self.handle()?.write_at(p.base, data)?;
            p.base += data.len() as u64;
            return Ok(());
        }
        // Large appends too (RocksDB hands flush and compaction output over in 1 MiB pieces):
        // copying one into the buffer costs less than waiting for its write here. Written
        // from the caller's bytes on this thread instead, a direct `overwrite` ran 8% slower
        // (medians of ten alternating rounds).
        p.buf.extend_from_slice(data);
        self.drain(&mut p, false)
    }

    /// Writes `data` at `offset` (after writing buffered appends).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut p = lock(&self.pending);
        self.drain(&mut p, true)?;
        self.handle()?.write_at(offset, data)?;
        p.base = self.handle()?.len();
        Ok(())
    }

    /// Writes buffered appends to blobfs (not durable yet).
    pub fn flush(&self) -> Result<()> {
        let mut p = lock(&self.pending);
        self.drain(&mut p, true)
    }

    /// Writes buffered appends and makes the file's data and size durable (one blobfs
    /// `fdatasync`).
    pub fn datasync(&self) -> Result<()> {
        let mut p = lock(&self.pending);
        p.settle(true)?;
        if self.writable && !p.buf.is_empty() {
            let h = self.handle()?;
            if h.len() == p.base {
                // A WAL: the appends and the size record in one device round trip.
                h.append_fdatasync(&p.buf)?;
                p.base += p.buf.len() as u64;
                p.buf.resize(0);
                return Ok(());
            }
        }
        self.drain(&mut p, true)?;
        if self.writable {
            self.handle()?.fdatasync()?;
        }
        Ok(())
    }

    /// A hint that `[offset, offset + len)` will be read soon: blobfs reads it into its
    /// cache now if there is room. With the cache off there is nowhere to read it to: the
    /// answer is `EOPNOTSUPP`, which the glue reports to RocksDB as `NotSupported` — RocksDB
    /// then reads ahead into its own buffer (one large read) instead of assuming the file
    /// system did and issuing one small read per block.
    pub fn readahead(&self, offset: u64, len: u64) -> Result<()> {
        let h = self.handle()?;
        if self.cache_off {
            return Err(Error::new(
                libc::EOPNOTSUPP,
                format!("{}: no read-ahead with the blobfs cache off", h.path()),
            ));
        }
        h.readahead(offset, len)?;
        Ok(())
    }

    /// Writes buffered appends and makes the file durable (data, size, times; one blobfs
    /// `fsync`).
    pub fn sync(&self) -> Result<()> {
        let mut p = lock(&self.pending);
        self.drain(&mut p, true)?;
        if self.writable {
            self.handle()?.fsync()?;
        }
        Ok(())
    }

    /// Sets the size (after writing buffered appends).
    pub fn truncate(&self, size: u64) -> Result<()> {
        let mut p = lock(&self.pending);
        self.drain(&mut p, true)?;
        self.handle()?.truncate(size)?;
        p.base = size;
        Ok(())
    }

    /// Writes buffered appends, persists (for writers) and closes. Idempotent.
    pub fn close(&mut self) -> Result<()> {
        let r = {
            let mut p = lock(&self.pending);
            self.drain(&mut p, true)
        };
        // No write is in flight after `drain`, even a failed one: the handle is ours alone.
        let r2 = match self.h.take().map(Arc::try_unwrap) {
            Some(Ok(h)) => h.close().map_err(Error::from),
            Some(Err(_)) => Err(Error::new(libc::EIO, "a buffered write is still running")),
            None => Ok(()),
        };
        r.and(r2)
    }
}

impl Drop for WFile {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn buffered_appends_read_back_byte_for_byte_and_survive_remount() {
        // Cache on: appends to "/d/f" go to blobfs's write-behind, a log's are gathered by
        // the plugin. Cache off: the plugin gathers both.
        appends_round_trip("");
        appends_round_trip("&cache=0");
    }

    /// Write-ahead logs and the info log are opened `no_reuse`: what RocksDB writes to them
    /// is not kept in the blobfs cache; a table file's is.
    #[test]
    fn logs_are_not_cached_tables_are() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let uri = format!("oxblob://{}/m.img?mkfs=1&size=256MiB", dir.path().display());
        let m = MountRef::mount(&uri).unwrap();
        m.fs().mkdir("/d").unwrap();
        let mut kept = Vec::new();
        for name in ["/d/000007.log", "/d/LOG", "/d/000008.sst"] {
            let before = m.fs().cache_stats().used_bytes;
            let mut w = WFile::open(&m, name, OpenMode::Truncate).unwrap();
            let p = pattern(3 << 20, 9);
            w.append(&p).unwrap();
            w.sync().unwrap();
            kept.push(m.fs().cache_stats().used_bytes - before);
            w.close().unwrap();
            let r = WFile::open(&m, name, OpenMode::Read).unwrap();
            let mut got = vec![0u8; p.len()];
            assert_eq!(r.read_at(0, &mut got).unwrap(), p.len());
            assert!(got == p, "{name}: contents");
        }
        assert!(kept[0] == 0 && kept[1] == 0, "logs kept {kept:?}");
        assert!(kept[2] >= 2 << 20, "the table kept {kept:?}");
    }

    /// A log written like RocksDB writes a WAL: small records, a `datasync` every so often.
    /// Every synced byte is there, through a second handle and after a remount, with the
    /// cache on and off.
    #[test]
    fn logs_synced_while_the_writer_thread_writes_keep_every_byte() {
        for opt in ["", "&cache=0"] {
            let dir = tempfile::tempdir_in("/var/tmp").unwrap();
            let uri = format!(
                "oxblob://{}/m.img?mkfs=1&size=256MiB{opt}",
                dir.path().display()
            );
            let m = MountRef::mount(&uri).unwrap();
            let mut w = WFile::open(&m, "/000003.log", OpenMode::Truncate).unwrap();
            let mut all = Vec::new();
            for i in 0..5000usize {
                let rec = pattern(900 + i % 300, i as u8);
                w.append(&rec).unwrap();
                all.extend_from_slice(&rec);
                if i % 700 == 699 {
                    w.datasync().unwrap();
                }
                assert_eq!(w.size(), all.len() as u64);
            }
            w.datasync().unwrap();
            // Synced: a second handle sees it all, before any close.
            assert_holds(&m, "/000003.log", &all, &format!("{opt}: contents"));
            w.close().unwrap();
            m.release().unwrap();
            let m = MountRef::mount(&format!(
                "oxblob://{}/m.img?mkfs=0{opt}",
                dir.path().display()
            ))
            .unwrap();
            assert_holds(
                &m,
                "/000003.log",
                &all,
                &format!("{opt}: contents after remount"),
            );
            m.release().unwrap();
        }
    }

    /// A new reader of `path` reads exactly `want` (no byte more).
    fn assert_holds(m: &MountRef, path: &str, want: &[u8], what: &str) {
        let r = WFile::open(m, path, OpenMode::Read).unwrap();
        let mut got = vec![0u8; want.len() + 1];
        assert_eq!(r.read_at(0, &mut got).unwrap(), want.len(), "{what}");
        assert!(got[..want.len()] == *want, "{what}");
    }

    fn appends_round_trip(opt: &str) {
        for name in ["/d/f", "/d/000001.log"] {
            appends_round_trip_of(opt, name);
        }
    }

    fn appends_round_trip_of(opt: &str, name: &str) {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let uri = format!(
            "oxblob://{}/m.img?mkfs=1&size=256MiB{opt}",
            dir.path().display()
        );
        let m = MountRef::mount(&uri).unwrap();
        m.fs().mkdir("/d").unwrap();
        let mut w = WFile::open(&m, name, OpenMode::Truncate).unwrap();
        // Odd-sized appends across several WRITE_CHUNKs; the size includes the buffer. The
        // first, and the 1 MiB one after a flush emptied the buffer at an unaligned offset,
        // fill the buffer past WRITE_CHUNK in one call.
        let mut all = Vec::new();
        for (i, n) in [
            2_000_003usize,
            1,
            4095,
            4097,
            700_000,
            1 << 20,
            13,
            2_000_001,
        ]
        .iter()
        .enumerate()
        {
            if *n == 1 << 20 {
                w.flush().unwrap();
            }
            let p = pattern(*n, i as u8);
            w.append(&p).unwrap();
            all.extend_from_slice(&p);
            assert_eq!(w.size(), all.len() as u64);
        }
        // The writer reads its own buffered bytes.
        let mut buf = vec![0u8; 5000];
        assert_eq!(w.read_at(all.len() as u64 - 5000, &mut buf).unwrap(), 5000);
        assert_eq!(&buf[..], &all[all.len() - 5000..]);
        w.sync().unwrap();
        let r = WFile::open(&m, name, OpenMode::Read).unwrap();
        assert_eq!(r.size(), all.len() as u64);
        let mut got = vec![0u8; all.len() + 10];
        assert_eq!(r.read_at(0, &mut got).unwrap(), all.len());
        assert!(got[..all.len()] == all[..], "contents differ after sync");
        // Reading is not allowed to write.
        assert_eq!(r.append(b"x").unwrap_err().errno, libc::EBADF);
        w.truncate(10).unwrap();
        assert_eq!(w.size(), 10);
        w.append(b"tail").unwrap();
        w.close().unwrap();
        drop(r);
        m.release().unwrap();

        let m = MountRef::mount(&format!(
            "oxblob://{}/m.img?mkfs=0{opt}",
            dir.path().display()
        ))
        .unwrap();
        let r = WFile::open(&m, name, OpenMode::Read).unwrap();
        let mut got = vec![0u8; 64];
        let n = r.read_at(0, &mut got).unwrap();
        assert_eq!(n, 14);
        assert_eq!(&got[..10], &all[..10]);
        assert_eq!(&got[10..14], b"tail");
        drop(r);
        m.release().unwrap();
    }

    /// A full image fails a gathered buffer's write to blobfs (any file with the cache off,
    /// a log with it on); the next operation reports it (`ENOSPC`: an append, as the write
    /// runs in the background), every later operation of the handle fails (`EIO`: its
    /// buffered bytes are gone), and the file holds a prefix of what was appended, byte for
    /// byte — nothing written where the lost bytes belong.
    #[test]
    fn a_failed_buffered_write_fails_the_handle_and_misplaces_nothing() {
        for (opt, name) in [("&cache=0", "/full"), ("", "/000009.log")] {
            failed_buffered_write(opt, name);
        }
    }

    fn failed_buffered_write(opt: &str, name: &str) {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let uri = format!(
            "oxblob://{}/m.img?mkfs=1&size=64MiB{opt}",
            dir.path().display()
        );
        let m = MountRef::mount(&uri).unwrap();
        let mut w = WFile::open(&m, name, OpenMode::Truncate).unwrap();
        let mut all = Vec::new();
        let err = loop {
            // Odd sizes, so the buffer keeps a short rest between drains.
            let p = pattern(300_001, all.len() as u8);
            match w.append(&p) {
                Ok(()) => all.extend_from_slice(&p),
                Err(e) => break e,
            }
            assert!(all.len() < 256 << 20, "a 64 MiB image never filled");
        };
        assert_eq!(err.errno, libc::ENOSPC, "{name}: {err:?}");
        for (what, r) in [
            ("append", w.append(b"more")),
            ("flush", w.flush()),
            ("datasync", w.datasync()),
            ("sync", w.sync()),
        ] {
            assert_eq!(r.unwrap_err().errno, libc::EIO, "{name}: {what}");
        }
        assert_eq!(w.close().unwrap_err().errno, libc::EIO, "{name}");
        let r = WFile::open(&m, name, OpenMode::Read).unwrap();
        let n = r.size() as usize;
        assert!(
            n <= all.len(),
            "{name}: {n} bytes of {} appended",
            all.len()
        );
        let mut got = vec![0u8; n];
        assert_eq!(r.read_at(0, &mut got).unwrap(), n);
        assert!(
            got == all[..n],
            "{name}: the file is not a prefix of the appends"
        );
        drop(r);
        m.release().unwrap();
    }

    #[test]
    fn readahead_is_unsupported_only_with_the_cache_off() {
        // RocksDB reads ahead into its own buffer only when the file system says it cannot.
        for (opt, supported) in [("", true), ("?cache=0", false)] {
            let m = MountRef::mount(&format!("oxblob://malloc:64MiB{opt}")).unwrap();
            let mut w = WFile::open(&m, "/f", OpenMode::Truncate).unwrap();
            let data = pattern(300_000, 7);
            w.append(&data).unwrap();
            w.sync().unwrap();
            let r = WFile::open(&m, "/f", OpenMode::Read).unwrap();
            match r.readahead(0, 256 << 10) {
                Ok(()) => assert!(supported, "read-ahead accepted with the cache off"),
                Err(e) => {
                    assert!(!supported, "read-ahead refused with the cache on: {e:?}");
                    assert_eq!(e.errno, libc::EOPNOTSUPP);
                }
            }
            // Either way the bytes read back unchanged.
            let mut got = vec![0u8; data.len()];
            assert_eq!(r.read_at(0, &mut got).unwrap(), data.len());
            assert!(got == data, "contents differ ({opt})");
            drop(r);
            w.close().unwrap();
            m.release().unwrap();
        }
    }

    #[test]
    fn mounts_are_shared_and_locks_exclude() {
        let uri = "oxblob://malloc:64MiB";
        let a = MountRef::mount(uri).unwrap();
        let b = MountRef::mount(uri).unwrap();
        a.fs().mkdir("/x").unwrap();
        assert!(b.fs().exists("/x").unwrap(), "second mount is not shared");
        a.lock_file("/x/LOCK").unwrap();
        let e = b.lock_file("/x/LOCK").unwrap_err();
        assert_eq!(e.errno, libc::EBUSY);
        assert!(e.message.contains("lock held"), "{}", e.message);
        assert!(b.fs().exists("/x/LOCK").unwrap());
        b.unlock_file("/x/LOCK").unwrap();
        assert_eq!(a.unlock_file("/x/LOCK").unwrap_err().errno, libc::ENOLCK);
        b.lock_file("/x/LOCK").unwrap();
        a.release().unwrap();
        b.release().unwrap();
        // The last release unmounted: a new mount of the RAM device starts empty.
        let c = MountRef::mount(uri).unwrap();
        assert!(!c.fs().exists("/x").unwrap());
        c.release().unwrap();
    }

    #[test]
    fn missing_image_without_mkfs_is_enoent() {
        let e = MountRef::mount("oxblob:///var/tmp/definitely-not-here-oxblob.img").unwrap_err();
        assert_eq!(e.errno, libc::ENOENT);
        let e = MountRef::mount("oxblob:///x?mkfs=2").unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
    }

    #[test]
    fn failed_mkfs_leaves_no_image_and_new_images_share_by_canonical_path() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("small.img");
        let e =
            MountRef::mount(&format!("oxblob://{}?mkfs=1&size=64KiB", img.display())).unwrap_err();
        assert!(e.message.contains("mkfs"), "{}", e.message);
        assert!(!img.exists(), "a half-formatted image was left behind");
        // Created through a path with a redundant component; mounted again by its plain path:
        // one shared mount, not an "in use" error.
        let img = dir.path().join("new.img");
        let odd = format!("{}/./new.img", dir.path().display());
        let a = MountRef::mount(&format!("oxblob://{odd}?mkfs=1&size=128MiB")).unwrap();
        let b = MountRef::mount(&format!("oxblob://{}", img.display())).unwrap();
        assert_eq!(a.key(), b.key());
        a.release().unwrap();
        b.release().unwrap();
    }
}

//! Open files: the shared in-memory inode of an open file (size, times, inline data, the
//! blob handle, its own lock) and the per-open [`FileHandle`].

use crate::attr::*;
use crate::cache::{ReadState, Wb, CHUNK, RA_MAX, RA_MIN};
use crate::error::{FsError, FsErrorKind, Result};
use crate::fs::{last_close, FsInner, OpenFlags};
use crate::ns::Inode;
use oxblob_bdev::IoBuf;
use oxblob_blobstore::{Blob, BsChannel, BsCompletion, Durability};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

/// Largest blob I/O submitted at once, in clusters (keeps every request within a channel's
/// queue depth).
const CHUNK_CLUSTERS: u64 = 8;

/// What the per-file lock protects.
struct Data {
    /// `None` after the last close or unmount.
    blob: Option<Blob>,
    /// `Some` while the file is inline: its whole contents (`len() == size`).
    inline: Option<Vec<u8>>,
    /// Size, times or inline data differ from what was last persisted.
    meta_dirty: bool,
    /// Size or inline data (what `fdatasync` must persist) changed.
    size_dirty: bool,
    /// The size the device's contents are valid for: bytes at or past it (and not in `wb`)
    /// read as zeroes whatever the device holds. Equals the size unless `wb` extends the
    /// file; never more than the size.
    dsize: u64,
    /// Write-behind buffer (cache on, file in clusters).
    wb: Option<Wb>,
    /// The io-unit block this file last wrote at its unaligned end, as the device holds it
    /// (offset, bytes): the next append's read-modify-write of that block needs no read.
    /// Dropped by any other write of the block and by a failed write.
    tail: Option<(u64, Vec<u8>)>,
    /// Bytes appended since the size was last committed, with their CRC (see
    /// [`Appended`]); `None` once anything else changed bytes at or past that size.
    append: Option<Appended>,
}

/// The bytes `[from, end)` a file gained by pure appends since its last metadata record
/// (whose size was `from`), and their CRC-32C. An fsync then commits the new size with a
/// blobstore data check over exactly those bytes (`Blob::commit_md_checked`): the data and
/// the record share one flush, and a replay drops the record if the data did not make it.
/// When all of them are at hand and there are at most [`INLINE_APPEND_MAX`], they go inside
/// the record instead (`Blob::write_commit_inline`), and the crc is not needed.
#[derive(Debug, Clone, Copy)]
struct Appended {
    from: u64,
    end: u64,
    crc: u32,
}

impl Appended {
    fn at(size: u64) -> Self {
        Appended {
            from: size,
            end: size,
            crc: 0,
        }
    }
}

/// Largest append an fsync commits with a data check (one flush); larger ones keep the
/// ordered commit (flush, record, flush), whose extra flush they amortize, and a replay
/// never reads more than this back per record.
const CHECKED_APPEND_MAX: u64 = 4 << 20;

/// What an appending commit makes durable: `bytes`, which sit at `start` (the file then ends
/// at `a.end`), the file's appends since its last record (`a`), and its new times.
#[derive(Clone, Copy)]
struct AppendCommit<'a> {
    start: u64,
    bytes: &'a [u8],
    a: Appended,
    mtime: u64,
    ctime: u64,
}

/// Sets a file blob's size and times xattrs (in memory until its next record).
fn set_size_times(
    blob: &oxblob_blobstore::Blob,
    size: u64,
    mtime: u64,
    ctime: u64,
) -> oxblob_blobstore::Result<()> {
    blob.set_xattr(X_SIZE, &enc_u64(size))?;
    blob.set_xattr(X_MTIME, &enc_u64(mtime))?;
    blob.set_xattr(X_CTIME, &enc_u64(ctime))
}

/// Largest append an fsync logs **inline**, inside the inode record
/// (`Blob::write_commit_inline`): one device write and one flush, where a checked commit
/// writes the data and the record apart (two writes, one flush). The blobstore writes the
/// bytes in place later, in bulk. Larger appends are cheaper written once, in place.
const INLINE_APPEND_MAX: u64 = 32 << 10;

/// The in-memory inode of an open file, shared by all its handles.
pub(crate) struct OpenInode {
    ino: u64,
    size: AtomicU64,
    mtime: AtomicU64,
    ctime: AtomicU64,
    orphan: AtomicBool,
    /// Written bytes are not kept as clean chunks ([`crate::OpenFlags::no_reuse`]).
    no_reuse: AtomicBool,
    data: RwLock<Data>,
    /// Read-ahead state and recent misses; never held across I/O. Lock order: `data`, then
    /// this, then the mount's clean chunks. (The chunks themselves are the mount's, keyed by
    /// inode number: they outlive this open.)
    rs: Mutex<ReadState>,
    /// Bytes of write-behind buffer this file holds, for eviction.
    cached: AtomicU64,
}

/// Runs of consecutive values in a sorted list, as `[first, last + 1)`.
fn runs(v: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &x in v {
        match out.last_mut() {
            Some(r) if r.1 == x => r.1 = x + 1,
            _ => out.push((x, x + 1)),
        }
    }
    out
}

/// One device read of [`OpenInode::read_pieces`]: `bufs`, filled in order from byte `start`.
struct Piece {
    start: u64,
    bufs: Vec<IoBuf>,
}

/// Fills `dst` (the bytes of `[at, at + dst.len())`) from `pieces` (single-buffer pieces in
/// ascending order, not overlapping); what no piece covers is zero. Each byte of `dst` is
/// written once.
fn copy_from(pieces: &[Piece], at: u64, dst: &mut [u8]) {
    let end = at + dst.len() as u64;
    let mut cur = at;
    for p in pieces {
        let mut ps = p.start;
        for b in &p.bufs {
            let pe = ps + b.len() as u64;
            let (s, e) = (at.max(ps), end.min(pe));
            if s < e {
                if cur < s {
                    dst[(cur - at) as usize..(s - at) as usize].fill(0);
                }
                dst[(s - at) as usize..(e - at) as usize]
                    .copy_from_slice(&b.as_slice()[(s - ps) as usize..(e - ps) as usize]);
                cur = cur.max(e);
            }
            ps = pe;
        }
    }
    if cur < end {
        dst[(cur - at) as usize..].fill(0);
    }
}

/// Largest per-thread read buffer kept between reads.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    /// This thread's aligned read buffer and completion list, reused by every small device
    /// read (any mount): a read allocates nothing but what the channel itself needs.
    static SCRATCH: std::cell::RefCell<(Option<IoBuf>, Vec<BsCompletion>)> =
        const { std::cell::RefCell::new((None, Vec::new())) };
}

/// Reads `len` bytes at `off` of `blob` on `ch` (which has nothing in flight) into this
/// thread's reused buffer and hands them to `f`.
fn scratch_read<T>(
    blob: &Blob,
    ch: &mut BsChannel,
    off: u64,
    len: usize,
    f: impl FnOnce(&[u8]) -> T,
) -> oxblob_blobstore::Result<T> {
    let (buf, mut done) = SCRATCH
        .try_with(|s| {
            let mut s = s.borrow_mut();
            (s.0.take(), std::mem::take(&mut s.1))
        })
        .unwrap_or((None, Vec::new()));
    let mut buf = buf.unwrap_or_else(|| IoBuf::zeroed(0));
    buf.resize(len);
    let token = u64::MAX - 1;
    let r = match blob.submit_read(ch, off, buf, token) {
        Ok(()) => (|| loop {
            ch.poll(&mut done, 1)?;
            if let Some(i) = done.iter().position(|c| c.token == token) {
                let c = done.swap_remove(i);
                c.result?;
                return Ok(c
                    .bufs
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| IoBuf::zeroed(0)));
            }
            if ch.in_flight() == 0 {
                return Err(oxblob_blobstore::BsError::InvalidArgument(
                    "read vanished".into(),
                ));
            }
        })(),
        Err(r) => Err(r.error),
    };
    done.clear();
    let b = r?;
    let out = f(&b.as_slice()[..len.min(b.len())]);
    let keep = (b.len() <= SCRATCH_KEEP).then_some(b);
    let _ = SCRATCH.try_with(|s| {
        let mut s = s.borrow_mut();
        s.0 = keep;
        s.1 = done;
    });
    Ok(out)
}

/// Bytes to write: borrowed, or an I/O buffer handed over (see [`FileHandle::write_buf_at`]).
enum Src<'a> {
    Slice(&'a [u8]),
    Buf(IoBuf),
}

impl Src<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Src::Slice(s) => s,
            Src::Buf(b) => b.as_slice(),
        }
    }
}

fn gone(path: &str) -> FsError {
    FsError::new(FsErrorKind::Io, path, "file system is unmounted")
}

impl OpenInode {
    /// From now on, written bytes are not kept in the cache ([`crate::OpenFlags::no_reuse`]).
    pub(crate) fn set_no_reuse(&self) {
        self.no_reuse.store(true, Ordering::Relaxed);
    }

    pub(crate) fn new(ino: u64, blob: Blob, meta: &Inode) -> Self {
        let inline = match blob.get_internal_xattr(X_INLINE) {
            Some(mut v) => {
                v.resize(usize::try_from(meta.size).unwrap_or(0), 0);
                Some(v)
            }
            None if blob.num_clusters() == 0 && meta.size <= INLINE_MAX => {
                Some(vec![0; usize::try_from(meta.size).unwrap_or(0)])
            }
            None => None,
        };
        OpenInode {
            ino,
            size: AtomicU64::new(meta.size),
            mtime: AtomicU64::new(meta.mtime),
            ctime: AtomicU64::new(meta.ctime),
            orphan: AtomicBool::new(false),
            no_reuse: AtomicBool::new(false),
            data: RwLock::new(Data {
                blob: Some(blob),
                inline,
                meta_dirty: false,
                size_dirty: false,
                dsize: meta.size,
                wb: None,
                tail: None,
                append: Some(Appended::at(meta.size)),
            }),
            rs: Mutex::new(ReadState::default()),
            cached: AtomicU64::new(0),
        }
    }

    pub(crate) fn ino(&self) -> u64 {
        self.ino
    }

    fn rs(&self) -> MutexGuard<'_, ReadState> {
        self.rs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of cache memory held by this file.
    pub(crate) fn cached_bytes(&self) -> u64 {
        self.cached.load(Ordering::Acquire)
    }

    fn add_cached(self: &Arc<Self>, fs: &FsInner, n: u64) {
        if n > 0 {
            self.cached.fetch_add(n, Ordering::AcqRel);
            fs.cache.register(self);
        }
    }

    fn sub_cached(&self, n: u64) {
        let _ = self
            .cached
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            });
    }

    /// Eviction by another file: writes this file's write-behind buffer to the device if its
    /// data lock is free right now. A failed write keeps the buffer (the next fsync reports
    /// the error).
    pub(crate) fn try_flush(&self, fs: &FsInner) {
        let mut d = match self.data.try_write() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let _ = self.flush_wb_as(fs, &mut d, "", false);
    }

    /// Bytes of clusters the write-behind buffer will allocate when flushed (reported by
    /// `stat` as allocated, like a delayed allocation).
    pub(crate) fn pending_alloc_bytes(&self, cluster_size: u64) -> u64 {
        let d = self.read_lock();
        let (Some(w), Some(blob)) = (d.wb.as_ref(), d.blob.as_ref()) else {
            return 0;
        };
        if w.data.is_empty() {
            return 0;
        }
        let extents = blob.extents();
        let mapped = |c: u64| {
            let i = extents.partition_point(|e| e.logical + e.count <= c);
            extents.get(i).is_some_and(|e| e.logical <= c)
        };
        let (c0, c1) = (w.start / cluster_size, (w.end() - 1) / cluster_size);
        (c0..=c1).filter(|&c| !mapped(c)).count() as u64 * cluster_size
    }

    /// Writes the write-behind buffer to the device (one write of the whole extent; the
    /// unaligned edges are read-modify-written here), keeping what it wrote as clean chunks
    /// while the cache has room (see [`Self::keep_written`]). On failure the buffer is kept.
    fn flush_wb(&self, fs: &FsInner, d: &mut Data, path: &str) -> Result<()> {
        self.flush_wb_as(fs, d, path, true)
    }

    /// [`Self::flush_wb`]; `keep` false when the flush is to free memory (eviction): the
    /// written bytes are then not kept as chunks.
    fn flush_wb_as(&self, fs: &FsInner, d: &mut Data, path: &str, keep: bool) -> Result<()> {
        let Some(wb) = d.wb.take() else {
            return Ok(());
        };
        let Some(blob) = d.blob.as_ref() else {
            d.wb = Some(wb);
            return Err(gone(path));
        };
        if let Err(e) =
            Self::write_clusters(fs, blob, wb.start, &wb.data, d.dsize, &mut d.tail, path)
        {
            // What reached the device is unknown: cached chunks of the range go.
            fs.cache.forget(self.ino, wb.start, wb.data.len() as u64);
            d.wb = Some(wb);
            return Err(e);
        }
        self.wb_written(fs, d, &wb, keep);
        Ok(())
    }

    /// After the write-behind buffer `wb` (taken from `d`) reached the device: the device is
    /// valid past it, cached chunks are patched, its memory is released and, with `keep`,
    /// turned into clean chunks.
    fn wb_written(&self, fs: &FsInner, d: &mut Data, wb: &Wb, keep: bool) {
        d.dsize = d.dsize.max(wb.end());
        fs.cache.patch(self.ino, wb.start, &wb.data);
        let cap = wb.data.capacity() as u64;
        fs.cache.release(cap);
        self.sub_cached(cap);
        if keep {
            // The buffer's memory is released first: it turns into (at most) as many chunks.
            self.keep_written(fs, wb.start, &wb.data, d.dsize);
        }
    }

    /// `fsync` after pure appends whose bytes are still in the write-behind buffer (a WAL):
    /// the buffer, as whole io blocks, and the inode record with a check over the appended
    /// bytes are written in one device round trip, then one flush
    /// (`Blob::write_commit_checked`). `Ok(false)`: the case does not apply (the buffer
    /// does not end at the size, starts in a block whose device bytes are not at hand, or
    /// reaches an unallocated cluster) and nothing was written.
    fn append_commit(&self, fs: &FsInner, d: &mut Data, path: &str) -> Result<bool> {
        let size = self.size.load(Ordering::Acquire);
        let Some(a) = d.append else {
            return Ok(false);
        };
        let Some(wb) = d.wb.take() else {
            return Ok(false);
        };
        let applies = d.inline.is_none() && d.size_dirty && a.end == size && wb.end() == size;
        let (_, mtime, ctime) = self.times_and_size();
        let r = if applies {
            let c = AppendCommit {
                start: wb.start,
                bytes: &wb.data,
                a,
                mtime,
                ctime,
            };
            self.commit_with_bytes(fs, d, c, path)
        } else {
            Ok(false)
        };
        match r {
            Ok(true) => {
                self.wb_written(fs, d, &wb, true);
                d.meta_dirty = false;
                d.size_dirty = false;
                d.append = Some(Appended::at(size));
                Ok(true)
            }
            Ok(false) => {
                d.wb = Some(wb);
                Ok(false)
            }
            Err(e) => {
                // The buffer stays for the next fsync; the device's copy of its range is
                // unknown.
                fs.cache.forget(self.ino, wb.start, wb.data.len() as u64);
                d.wb = Some(wb);
                Err(e)
            }
        }
    }

    /// `append` + `fdatasync` of `data` with the cache off (nothing buffered): when the
    /// file's bytes since its last record are pure appends, `data` and the record with its
    /// check go to the device in one round trip, then one flush. `Ok(None)`: the case does
    /// not apply and nothing changed (the caller appends and syncs the ordinary way).
    fn append_sync_direct(&self, fs: &FsInner, data: &[u8], path: &str) -> Result<Option<u64>> {
        let mut d = self.write_lock();
        let size = self.size.load(Ordering::Acquire);
        let len = data.len() as u64;
        let Some(mut a) = d.append else {
            return Ok(None);
        };
        if fs.read_only
            || fs.cache.enabled()
            || d.blob.is_none()
            || d.wb.is_some()
            || d.inline.is_some()
            || len == 0
            || a.end != size
            || size.checked_add(len).is_none()
        {
            return Ok(None);
        }
        a.crc = crc32c::crc32c_append(a.crc, data);
        a.end = size + len;
        let now = now_ns();
        let ctime = self.ctime.load(Ordering::Acquire);
        let c = AppendCommit {
            start: size,
            bytes: data,
            a,
            mtime: now,
            ctime,
        };
        if !self.commit_with_bytes(fs, &mut d, c, path)? {
            return Ok(None);
        }
        self.size.store(a.end, Ordering::Release);
        self.mtime.store(now, Ordering::Release);
        d.dsize = a.end;
        d.meta_dirty = false;
        d.size_dirty = false;
        d.append = Some(Appended::at(a.end));
        Ok(Some(size))
    }

    /// The common core of [`Self::append_commit`] and [`Self::append_sync_direct`]: commits
    /// `bytes` at `start` (the device valid up to `d.dsize`, `start` not past it) with the
    /// inode record — size `a.end`, the given times — and one flush. When every byte since
    /// the last record is at hand and there are at most [`INLINE_APPEND_MAX`] of them, they
    /// go **inside** the record (one device write); otherwise, or when the log has no room
    /// for them, [`Self::commit_placed`] writes them in place beside a checked record.
    /// `Ok(false)`: not applicable (the range is too long, reaches an unallocated cluster,
    /// or the head block is not at hand), nothing written. On error the blob's size and
    /// times are reset to the file's in-memory ones.
    fn commit_with_bytes(
        &self,
        fs: &FsInner,
        d: &mut Data,
        c: AppendCommit,
        path: &str,
    ) -> Result<bool> {
        let AppendCommit {
            start,
            bytes,
            a,
            mtime,
            ctime,
        } = c;
        let Some(blob) = d.blob.as_ref() else {
            return Ok(false);
        };
        let unit = fs.io_unit;
        let end = a.end;
        if start > d.dsize
            || start + bytes.len() as u64 != end
            || a.end <= a.from
            || a.end - a.from > CHECKED_APPEND_MAX
        {
            return Ok(false);
        }
        let a0 = start / unit * unit;
        let a1 = end.div_ceil(unit) * unit;
        if a1 - a0 > CHECKED_APPEND_MAX || !blob.is_allocated(a0, a1 - a0) {
            return Ok(false);
        }
        if start > a.from || a.end - a.from > INLINE_APPEND_MAX {
            return self.commit_placed(fs, d, c, path);
        }
        let bs = |e| FsError::from_bs(e, path);
        let logged = &bytes[(a.from - start) as usize..];
        set_size_times(blob, end, mtime, ctime).map_err(bs)?;
        match blob.write_commit_inline(a.from, logged, Durability::Durable) {
            Ok(()) => {}
            // A log too full for the bytes: they go in place instead.
            Err(oxblob_blobstore::BsError::NoMetadataSpace) => {
                return self.commit_placed(fs, d, c, path);
            }
            Err(e) => {
                self.undo_commit(blob, &mut d.tail);
                return Err(bs(e));
            }
        }
        // The end block as reads now see it, for the next commit's head.
        let tb = end / unit * unit;
        d.tail = match &d.tail {
            _ if end % unit == 0 => None,
            Some((o, b)) if *o == tb && b.len() as u64 == unit && tb < start => {
                let mut blk = b.clone();
                blk[(start - tb) as usize..(end - tb) as usize].copy_from_slice(bytes);
                blk[(end - tb) as usize..].fill(0);
                Some((tb, blk))
            }
            _ if tb >= start => {
                let mut blk = vec![0u8; unit as usize];
                blk[..(end - tb) as usize].copy_from_slice(&bytes[(tb - start) as usize..]);
                Some((tb, blk))
            }
            _ => None,
        };
        Ok(true)
    }

    /// [`Self::commit_with_bytes`] with the bytes written in place: padded to whole io
    /// blocks (the head block from the end-block memo) and written together with the inode
    /// record, which carries a check over `[a.from, a.end)`; then one flush. The caller
    /// checked the range (allocated, not too long).
    fn commit_placed(
        &self,
        fs: &FsInner,
        d: &mut Data,
        c: AppendCommit,
        path: &str,
    ) -> Result<bool> {
        let Some(blob) = d.blob.as_ref() else {
            return Ok(false);
        };
        let (start, bytes, a) = (c.start, c.bytes, c.a);
        let unit = fs.io_unit;
        let end = a.end;
        let a0 = start / unit * unit;
        let a1 = end.div_ceil(unit) * unit;
        let mut buf = vec![0u8; (a1 - a0) as usize];
        let head = (start - a0) as usize;
        if head > 0 {
            match &d.tail {
                Some((o, b)) if *o == a0 && b.len() as u64 == unit => {
                    buf[..head].copy_from_slice(&b[..head]);
                }
                _ => return Ok(false),
            }
        }
        buf[head..head + bytes.len()].copy_from_slice(bytes);
        let bs = |e| FsError::from_bs(e, path);
        set_size_times(blob, end, c.mtime, c.ctime).map_err(bs)?;
        let r =
            blob.write_commit_checked(a0, &buf, a.from, a.end - a.from, a.crc, Durability::Durable);
        if let Err(e) = r {
            self.undo_commit(blob, &mut d.tail);
            return Err(bs(e));
        }
        d.tail = (end % unit != 0).then(|| (a1 - unit, buf[buf.len() - unit as usize..].to_vec()));
        Ok(true)
    }

    /// After a failed commit: the end-block memo is unknown, and the blob's size and times go
    /// back to the file's in-memory ones.
    fn undo_commit(&self, blob: &oxblob_blobstore::Blob, tail: &mut Option<(u64, Vec<u8>)>) {
        *tail = None;
        let (size, mtime, ctime) = self.times_and_size();
        let _ = set_size_times(blob, size, mtime, ctime);
    }

    /// Write-through: after `data` was written to the device at `off` (the device now valid
    /// up to `dsize`), keeps the chunks it fully determines and that are not cached yet —
    /// those it covers whole, and the one it ends in when it ends at `dsize` (zeroes past
    /// it) — while each fits under the bound; nothing is evicted for them. Chunks already
    /// cached were patched by the caller.
    fn keep_written(&self, fs: &FsInner, off: u64, data: &[u8], dsize: u64) {
        let end = off + data.len() as u64;
        if data.is_empty() || fs.cache.ra_max() == 0 || self.no_reuse.load(Ordering::Relaxed) {
            return;
        }
        for c in off.div_ceil(CHUNK)..end.div_ceil(CHUNK) {
            let base = c * CHUNK;
            let stop = (base + CHUNK).min(end);
            if stop < (base + CHUNK).min(dsize) {
                break; // the last piece, with device bytes after it that are not in `data`
            }
            if fs.cache.contains(self.ino, c) {
                continue;
            }
            if fs.cache.used() + CHUNK > fs.cache.limit {
                break;
            }
            // The written bytes, then zeroes past the end of the file (each byte written once).
            let mut chunk = fs.cache.frame();
            chunk.extend_from_slice(&data[(base - off) as usize..(stop - off) as usize]);
            chunk.resize(CHUNK as usize);
            if !fs.cache.insert_if_room(self.ino, c, chunk) {
                break;
            }
        }
    }

    /// Drops the write-behind buffer without writing it (the file is gone, or was
    /// persisted), and with `keep_clean` false the file's clean chunks (its blob is deleted).
    fn discard_cache(&self, fs: &FsInner, d: &mut Data, keep_clean: bool) {
        if let Some(wb) = d.wb.take() {
            let cap = wb.data.capacity() as u64;
            fs.cache.release(cap);
            self.sub_cached(cap);
        }
        if !keep_clean {
            fs.cache.drop_file(self.ino);
        }
        fs.cache.unregister(self.ino);
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Data> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn times_and_size(&self) -> (u64, u64, u64) {
        (
            self.size.load(Ordering::Acquire),
            self.mtime.load(Ordering::Acquire),
            self.ctime.load(Ordering::Acquire),
        )
    }

    pub(crate) fn set_ctime(&self, t: u64) {
        self.ctime.store(t, Ordering::Release);
        self.write_lock().meta_dirty = true;
    }

    /// Sets modification and change times (`BlobFs::set_times`); persisted like a write's.
    pub(crate) fn set_times(&self, mtime: u64, ctime: u64) {
        self.mtime.store(mtime, Ordering::Release);
        self.ctime.store(ctime, Ordering::Release);
        self.write_lock().meta_dirty = true;
    }

    pub(crate) fn mark_orphan(&self) {
        self.orphan.store(true, Ordering::Release);
    }

    pub(crate) fn is_orphan(&self) -> bool {
        self.orphan.load(Ordering::Acquire)
    }

    /// Drops the blob handle (after the last close), syncing it if still dirty, and the
    /// file's write-behind buffer (unwritten buffered data is dropped: the file was persisted
    /// by its close, or it is an orphan and deleted). With `keep_clean` the file's clean
    /// chunks stay cached (they match the device, like a page cache after close); without
    /// (an orphan, unmount) they are dropped.
    pub(crate) fn release_blob(&self, fs: &FsInner, keep_clean: bool) {
        let mut d = self.write_lock();
        self.discard_cache(fs, &mut d, keep_clean);
        if let Some(b) = d.blob.take() {
            if b.is_dirty() {
                // Best effort: `unload` writes dirty blobs anyway.
                let _ = b.close();
            }
        }
    }

    /// Persists and releases the blob (unmount).
    pub(crate) fn shutdown(&self, fs: &FsInner) -> Result<()> {
        let r = {
            let mut d = self.write_lock();
            // Deferred: the unload's checkpoint makes it durable.
            self.persist(fs, &mut d, "", Durability::Deferred)
        };
        self.release_blob(fs, false);
        r
    }

    /// Writes back buffered data and commits size and times deferred (`close`,
    /// `BlobFs::sync`): no flush unless the size grew (see [`OpenInode::persist`]).
    pub(crate) fn write_back(&self, fs: &FsInner, path: &str) -> Result<()> {
        let mut d = self.write_lock();
        self.persist(fs, &mut d, path, Durability::Deferred)
    }

    /// Writes buffered data, then size, times and inline data to the blob's record.
    ///
    /// `Durable` (fsync): the record is flushed, which also makes every earlier deferred
    /// namespace operation durable; with no metadata change, one flush still covers the data
    /// and those operations. `Deferred` (close, sync, unmount): the record is written without
    /// a flush. Either way, when the size of a file in clusters changed, a device flush comes
    /// before the record, so a size that reaches the media never covers unwritten data (the
    /// "zero from the old size" writes included). A size unchanged needs no such ordering:
    /// bytes inside it are old or new after a crash, as for any unsynced write. New clusters
    /// are flushed before the record by the blobstore (they usually share that same flush).
    /// So an fsync costs one flush when the size did not change, two when it did — except
    /// after pure appends (see [`Appended`]): then the record carries a check of the
    /// appended bytes and needs no flush before it (one flush in all), and when those bytes
    /// are still buffered they go to the device with the record ([`Self::append_commit`]).
    fn persist(&self, fs: &FsInner, d: &mut Data, path: &str, dur: Durability) -> Result<()> {
        if fs.read_only {
            return Ok(());
        }
        if dur == Durability::Durable && self.append_commit(fs, d, path)? {
            return Ok(());
        }
        self.flush_wb(fs, d, path)?;
        if !d.meta_dirty {
            if dur == Durability::Durable {
                fs.flush_device(path)?;
            }
            return Ok(());
        }
        let blob = d.blob.as_ref().ok_or_else(|| gone(path))?;
        let bs = |e| FsError::from_bs(e, path);
        let (size, mtime, ctime) = self.times_and_size();
        // An fsync after pure appends: the record carries a check of the appended bytes
        // instead of waiting for a flush of them (one flush instead of two).
        let checked = d.append.filter(|a| {
            dur == Durability::Durable
                && d.inline.is_none()
                && d.size_dirty
                && a.end == size
                && a.end > a.from
                && a.end - a.from <= CHECKED_APPEND_MAX
        });
        if d.inline.is_none() && d.size_dirty && checked.is_none() {
            fs.flush_device(path)?;
        }
        blob.set_xattr(X_SIZE, &enc_u64(size)).map_err(bs)?;
        blob.set_xattr(X_MTIME, &enc_u64(mtime)).map_err(bs)?;
        blob.set_xattr(X_CTIME, &enc_u64(ctime)).map_err(bs)?;
        if let Some(v) = &d.inline {
            blob.set_internal_xattr(X_INLINE, v).map_err(bs)?;
        }
        match checked {
            Some(a) => blob.commit_md_checked(a.from, a.end - a.from, a.crc, dur),
            None => blob.commit_md(dur),
        }
        .map_err(bs)?;
        d.meta_dirty = false;
        d.size_dirty = false;
        d.append = Some(Appended::at(size));
        Ok(())
    }

    fn read(
        self: &Arc<Self>,
        fs: &FsInner,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<usize> {
        let d = self.read_lock();
        let blob = d.blob.as_ref().ok_or_else(|| gone(path))?;
        let size = self.size.load(Ordering::Acquire);
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from((size - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        if let Some(v) = &d.inline {
            let s = usize::try_from(offset).unwrap_or(usize::MAX);
            buf[..n].copy_from_slice(&v[s..s + n]);
            return Ok(n);
        }
        let buf = &mut buf[..n];
        if !fs.cache.enabled() {
            Self::read_device(fs, blob, offset, buf, path)?;
            return Ok(n);
        }
        let end = offset + n as u64;
        // The device's bytes up to `dsize`; zeroes past it; the write-behind buffer on top.
        let k = usize::try_from(end.min(d.dsize).saturating_sub(offset)).unwrap_or(n);
        if k > 0 {
            let ra_max = fs.cache.ra_max();
            if n as u64 >= RA_MAX || ra_max == 0 {
                // Large reads gain nothing from read-ahead and would flush the cache.
                Self::read_device(fs, blob, offset, &mut buf[..k], path)?;
                self.rs().next = end;
            } else {
                self.read_cached(fs, blob, offset, &mut buf[..k], d.dsize, end, path)?;
            }
        }
        buf[k..].fill(0);
        if let Some(w) = &d.wb {
            let (s, e) = (offset.max(w.start), end.min(w.end()));
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&w.data[(s - w.start) as usize..(e - w.start) as usize]);
            }
        }
        Ok(n)
    }

    /// Reads the device's bytes of `[offset, offset + buf.len())` into `buf` (bytes past the
    /// blob's clusters read as zeroes): straight into `buf` when the range is whole io units
    /// and the device reads into it as it is ([`Blob::read_into`]), else through this
    /// thread's reused aligned buffer (no allocation per read, one copy out).
    fn read_device(
        fs: &FsInner,
        blob: &Blob,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<()> {
        let unit = fs.io_unit;
        let blob_bytes = blob.size_bytes();
        let end = offset + buf.len() as u64;
        // Whole io units inside the blob, into a buffer the device can fill as it is (an
        // `O_DIRECT` file wants an aligned address): one read, no staging copy.
        if !buf.is_empty() && offset % unit == 0 && end % unit == 0 && end <= blob_bytes {
            match blob.read_into(offset, buf) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(FsError::from_bs(e, path)),
            }
        }
        let a0 = offset / unit * unit;
        let a1 = end.div_ceil(unit) * unit;
        let chunk = CHUNK_CLUSTERS * fs.cluster_size;
        fs.with_channel(path, |ch| {
            let mut at = a0;
            while at < a1 {
                let stop = ((at / chunk + 1) * chunk).min(a1);
                // Copy the overlap of [at, stop) with [offset, end); past the blob, zeroes.
                let (s, e) = (at.max(offset), stop.min(end));
                let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
                let from = (s - at) as usize;
                let avail = if at < blob_bytes {
                    let len = usize::try_from(stop.min(blob_bytes) - at).unwrap_or(0);
                    scratch_read(blob, ch, at, len, |got| {
                        let avail = got.len().saturating_sub(from).min(dst.len());
                        if avail > 0 {
                            dst[..avail].copy_from_slice(&got[from..from + avail]);
                        }
                        avail
                    })
                    .map_err(|e| FsError::from_bs(e, path))?
                } else {
                    0
                };
                dst[avail..].fill(0);
                at = stop;
            }
            Ok(())
        })
    }

    /// Reads `[offset, offset + buf.len())` (all below `dsize`) through the clean chunks:
    /// hits are copied; a sequential miss fetches the read-ahead window from the first
    /// missing chunk; a random miss fetches the whole chunk while the cache has room, and
    /// under memory pressure reads only the needed blocks, or the whole chunk if it was
    /// missed recently. `read_end` is where the caller's read ends (the next sequential
    /// offset).
    #[allow(clippy::too_many_arguments)]
    fn read_cached(
        self: &Arc<Self>,
        fs: &FsInner,
        blob: &Blob,
        offset: u64,
        buf: &mut [u8],
        dsize: u64,
        read_end: u64,
        path: &str,
    ) -> Result<()> {
        let end = offset + buf.len() as u64;
        let (c0, c1) = (offset / CHUNK, (end - 1) / CHUNK);
        let last = (dsize - 1) / CHUNK;
        let mut fetch: Vec<u64> = Vec::new();
        let mut direct: Vec<u64> = Vec::new();
        let ra_max = fs.cache.ra_max();
        {
            let mut rs = self.rs();
            let seq = offset == rs.next;
            rs.window = match (seq, rs.window) {
                (false, _) => 0,
                (true, 0) => RA_MIN.min(ra_max),
                (true, w) => (w * 2).min(ra_max),
            };
            rs.next = read_end;
            // Room for every chunk of this read: random misses are cached at once. Under
            // pressure only a second miss of the same chunk is (one-off reads must not evict).
            let room = fs.cache.used() + (c1 - c0 + 1) * CHUNK <= fs.cache.limit;
            let misses = fs.cache.copy_out(self.ino, c0, c1, offset, end, buf);
            if !seq {
                for &c in &misses {
                    if room || rs.ghost_hit(c) {
                        fetch.push(c);
                    } else {
                        direct.push(c);
                    }
                }
            }
            if let (true, Some(&fm)) = (seq, misses.first()) {
                let wend = (fm * CHUNK + rs.window)
                    .div_ceil(CHUNK)
                    .max(c1 + 1)
                    .min(last + 1);
                fetch.extend(fs.cache.missing(self.ino, fm..wend));
            }
        }
        if fetch.is_empty() && direct.is_empty() {
            return Ok(());
        }
        // Whole chunks to cache, read straight into their own buffers, and the needed blocks
        // of direct chunks, all in one batch.
        let unit = fs.io_unit;
        let ranges: Vec<(u64, u64)> = runs(&direct)
            .into_iter()
            .map(|run| {
                let (s, e) = (offset.max(run.0 * CHUNK), end.min(run.1 * CHUNK));
                (s / unit * unit, e.div_ceil(unit) * unit)
            })
            .collect();
        let (chunks, got) = Self::read_chunks(fs, blob, &fetch, &ranges, dsize, path)?;
        for &c in &direct {
            let (s, e) = (offset.max(c * CHUNK), end.min((c + 1) * CHUNK));
            copy_from(
                &got,
                s,
                &mut buf[(s - offset) as usize..(e - offset) as usize],
            );
        }
        for (c, data) in &chunks {
            let base = c * CHUNK;
            let (s, e) = (offset.max(base), end.min(base + CHUNK));
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&data[(s - base) as usize..(e - base) as usize]);
            }
        }
        if chunks.is_empty() {
            return Ok(());
        }
        fs.cache.insert(self.ino, chunks);
        Ok(())
    }

    /// Fetches the chunks of `[offset, offset + len)` (at most a read-ahead window) that are
    /// not cached, if the cache has room for them; a hint, so under memory pressure it does
    /// nothing.
    fn prefetch(self: &Arc<Self>, fs: &FsInner, offset: u64, len: u64, path: &str) -> Result<()> {
        let ra_max = fs.cache.ra_max();
        if ra_max == 0 || len == 0 {
            return Ok(());
        }
        let d = self.read_lock();
        let blob = d.blob.as_ref().ok_or_else(|| gone(path))?;
        if d.inline.is_some() {
            return Ok(());
        }
        let dsize = d.dsize;
        let end = offset.saturating_add(len.min(ra_max)).min(dsize);
        if offset >= end {
            return Ok(());
        }
        let fetch = fs
            .cache
            .missing(self.ino, offset / CHUNK..=(end - 1) / CHUNK);
        let want = fetch.len() as u64 * CHUNK;
        if fetch.is_empty() || fs.cache.used() + want > fs.cache.limit {
            return Ok(());
        }
        let (chunks, _) = Self::read_chunks(fs, blob, &fetch, &[], dsize, path)?;
        fs.cache.insert(self.ino, chunks);
        Ok(())
    }

    /// Reads the whole chunks `fetch` (ascending) into chunk buffers of their own, the device
    /// filling them directly (no staging copy), and the io-unit aligned byte ranges `ranges`
    /// (ascending) into pieces for [`copy_from`]; every read is submitted on one channel
    /// before any is waited for. Chunk bytes past the blob's clusters or at or past `dsize`
    /// are zeroes. Returns the chunks as `(index, bytes)` and the pieces of `ranges`.
    #[allow(clippy::type_complexity)]
    fn read_chunks(
        fs: &FsInner,
        blob: &Blob,
        fetch: &[u64],
        ranges: &[(u64, u64)],
        dsize: u64,
        path: &str,
    ) -> Result<(Vec<(u64, IoBuf)>, Vec<Piece>)> {
        let blob_bytes = blob.size_bytes();
        // Reads stay within one cluster: the blobstore then hands the buffers to the device
        // as they are, where a read across clusters would be split into buffers of its own
        // and copied back.
        let piece = fs.cluster_size;
        // Chunks past the blob's clusters are zeroes and need no read; the others are grouped
        // into one read per run within a cluster.
        let mut zero = Vec::new();
        let mut reads: Vec<Piece> = Vec::new();
        for &c in fetch {
            let base = c * CHUNK;
            let mut buf = fs.cache.frame();
            buf.resize(CHUNK as usize);
            if base >= blob_bytes {
                zero.push((c, buf));
                continue;
            }
            match reads.last_mut() {
                Some(p) if p.start + p.bufs.len() as u64 * CHUNK == base && base % piece != 0 => {
                    p.bufs.push(buf)
                }
                _ => reads.push(Piece {
                    start: base,
                    bufs: vec![buf],
                }),
            }
        }
        let nfetch = reads.len();
        for &(s, e) in ranges {
            let e = e.min(blob_bytes);
            let mut at = s;
            while at < e {
                let stop = ((at / piece + 1) * piece).min(e);
                let len = usize::try_from(stop - at).unwrap_or(0);
                reads.push(Piece {
                    start: at,
                    bufs: vec![IoBuf::zeroed(len)],
                });
                at = stop;
            }
        }
        Self::read_pieces(fs, blob, &mut reads, path)?;
        let got = reads.split_off(nfetch);
        let mut chunks = zero;
        for p in reads {
            for (i, mut data) in p.bufs.into_iter().enumerate() {
                let base = p.start + i as u64 * CHUNK;
                if dsize < base + CHUNK {
                    let keep = usize::try_from(dsize.saturating_sub(base)).unwrap_or(0);
                    data[keep..].fill(0);
                }
                chunks.push((base / CHUNK, data));
            }
        }
        chunks.sort_unstable_by_key(|c| c.0);
        Ok((chunks, got))
    }

    /// Reads every piece (its buffers in order from its start, all inside the blob), all
    /// submitted on one channel before any is waited for; each piece's buffers are back in
    /// it, filled, when this returns `Ok`.
    fn read_pieces(fs: &FsInner, blob: &Blob, pieces: &mut [Piece], path: &str) -> Result<()> {
        let bs = |e| FsError::from_bs(e, path);
        fs.with_channel(path, |ch| {
            let mut done: Vec<BsCompletion> = Vec::new();
            let take = |done: &mut Vec<BsCompletion>, pieces: &mut [Piece]| {
                for BsCompletion {
                    token,
                    result,
                    bufs,
                } in done.drain(..)
                {
                    result.map_err(bs)?;
                    if let Some(p) = pieces.get_mut(token as usize) {
                        p.bufs = bufs;
                    }
                }
                Ok::<(), FsError>(())
            };
            for i in 0..pieces.len() {
                let (start, mut bufs) = (pieces[i].start, std::mem::take(&mut pieces[i].bufs));
                loop {
                    match blob.submit_readv(ch, start, bufs, i as u64) {
                        Ok(()) => break,
                        Err(r) if ch.in_flight() > 0 => {
                            // Queue full: reap what is in flight, then retry.
                            bufs = r.bufs;
                            ch.poll(&mut done, 1).map_err(bs)?;
                            take(&mut done, pieces)?;
                        }
                        Err(r) => return Err(bs(r.error)),
                    }
                }
            }
            while ch.in_flight() > 0 {
                ch.poll(&mut done, usize::MAX).map_err(bs)?;
                take(&mut done, pieces)?;
            }
            Ok(())
        })
    }

    /// One io-unit block at `off`, with every byte at or past `valid` zeroed (bytes past the
    /// size must read as zeroes, whatever a crash left there).
    /// Taken from `memo` (the file's end block as last written) when it is that block, else
    /// read from the device.
    #[allow(clippy::too_many_arguments)]
    fn block(
        memo: Option<&(u64, Vec<u8>)>,
        blob: &Blob,
        ch: &mut BsChannel,
        unit: u64,
        off: u64,
        valid: u64,
        path: &str,
    ) -> Result<Vec<u8>> {
        let u = usize::try_from(unit).unwrap_or(4096);
        if off >= valid || off >= blob.size_bytes() {
            return Ok(vec![0; u]);
        }
        let mut b = match memo {
            Some((o, b)) if *o == off && b.len() == u => b.clone(),
            _ => blob
                .read(ch, off, u)
                .map_err(|e| FsError::from_bs(e, path))?,
        };
        let keep = usize::try_from(valid - off).unwrap_or(u).min(u);
        b[keep..].fill(0);
        Ok(b)
    }

    /// Zeroes `[from, to)` rounded up to the io unit and clipped to the blob, keeping the
    /// bytes before `from` in its block. Unallocated clusters are left alone (they read as
    /// zeroes already).
    fn zero_from(
        fs: &FsInner,
        blob: &Blob,
        ch: &mut BsChannel,
        from: u64,
        to: u64,
        path: &str,
    ) -> Result<()> {
        let unit = fs.io_unit;
        let to = to.min(blob.size_bytes());
        if from >= to {
            return Ok(());
        }
        let b0 = from / unit * unit;
        let mut start = from;
        if from != b0 {
            let blk = Self::block(None, blob, ch, unit, b0, from, path)?;
            blob.write(ch, b0, &blk)
                .map_err(|e| FsError::from_bs(e, path))?;
            start = b0 + unit;
        }
        let end = to.div_ceil(unit) * unit;
        let chunk = CHUNK_CLUSTERS * fs.cluster_size;
        while start < end {
            let stop = ((start / chunk + 1) * chunk).min(end);
            blob.write_zeroes(ch, start, stop - start)
                .map_err(|e| FsError::from_bs(e, path))?;
            start = stop;
        }
        Ok(())
    }

    /// Moves inline data to clusters (the blob grows to hold at least `min_bytes`).
    fn migrate(&self, fs: &FsInner, d: &mut Data, min_bytes: u64, path: &str) -> Result<()> {
        let Some(v) = d.inline.take() else {
            return Ok(());
        };
        let blob = d.blob.as_ref().ok_or_else(|| gone(path))?;
        let bs = |e| FsError::from_bs(e, path);
        let cs = fs.cluster_size;
        let need = min_bytes.max(v.len() as u64).div_ceil(cs);
        let r = (|| {
            if need > blob.num_clusters() {
                blob.resize(need).map_err(bs)?;
            }
            if !v.is_empty() {
                let unit = usize::try_from(fs.io_unit).unwrap_or(4096);
                let mut pad = v.clone();
                pad.resize(v.len().div_ceil(unit) * unit, 0);
                fs.with_channel(path, |ch| blob.write(ch, 0, &pad).map_err(bs))?;
            }
            // Never inline and in clusters at once, in memory or in any record.
            blob.remove_internal_xattr(X_INLINE).map_err(bs)?;
            Ok(())
        })();
        d.tail = None;
        d.append = None;
        if r.is_err() {
            d.inline = Some(v);
        } else {
            d.dsize = v.len() as u64;
            d.meta_dirty = true;
            d.size_dirty = true;
        }
        r
    }

    /// Before bytes `[off, off + len)` below the size change in place: if a data check in
    /// the blobstore log covers any of them, a plain record is made durable first (see
    /// `Blob::commit_md_checked`), else a crash could drop an acknowledged fsync's record.
    /// Never the case for appends; costs a flush when it is.
    fn confirm_before_rewrite(d: &Data, off: u64, len: u64, path: &str) -> Result<()> {
        match d.blob.as_ref() {
            Some(b) if d.inline.is_none() && b.checked_overlaps(off, len) => {
                b.confirm_checked().map_err(|e| FsError::from_bs(e, path))
            }
            _ => Ok(()),
        }
    }

    fn write(
        self: &Arc<Self>,
        fs: &FsInner,
        offset: Option<u64>,
        data: &[u8],
        path: &str,
    ) -> Result<u64> {
        self.write_src(fs, offset, Src::Slice(data), path)
    }

    /// [`Self::write`] of bytes given as a slice or as an I/O buffer the caller hands over
    /// (written to the device as it is where it can be, see [`Self::write_clusters_buf`]).
    fn write_src(
        self: &Arc<Self>,
        fs: &FsInner,
        offset: Option<u64>,
        src: Src<'_>,
        path: &str,
    ) -> Result<u64> {
        let mut d = self.write_lock();
        if d.blob.is_none() {
            return Err(gone(path));
        }
        let size = self.size.load(Ordering::Acquire);
        let off = offset.unwrap_or(size);
        let len = src.bytes().len() as u64;
        let end = off.checked_add(len).ok_or_else(|| {
            FsError::new(
                FsErrorKind::InvalidArgument,
                path,
                "offset + length overflows",
            )
        })?;
        if len == 0 {
            return Ok(off);
        }
        if off < size {
            Self::confirm_before_rewrite(&d, off, len, path)?;
        }
        if d.inline.is_some() && end > INLINE_MAX {
            self.migrate(fs, &mut d, end, path)?;
        }
        // Taken once the bytes are written (computed first: a handed-over buffer is gone
        // after the write).
        let append = match d.append {
            Some(mut a) if off == size && a.end == size => {
                a.crc = crc32c::crc32c_append(a.crc, src.bytes());
                a.end = end;
                Some(a)
            }
            Some(a) if end <= a.from => Some(a),
            _ => None,
        };
        if let Some(v) = d.inline.as_mut() {
            let (o, e) = (off as usize, end as usize);
            if v.len() < e {
                v.resize(e, 0);
            }
            v[o..e].copy_from_slice(src.bytes());
            d.dsize = d.dsize.max(end);
        } else if fs.cache.enabled() {
            self.write_cached(fs, &mut d, off, src.bytes(), path)?;
        } else {
            let dd = &mut *d;
            let blob = dd.blob.as_ref().ok_or_else(|| gone(path))?;
            match src {
                Src::Slice(data) => {
                    Self::write_clusters(fs, blob, off, data, size, &mut dd.tail, path)?
                }
                Src::Buf(buf) => {
                    Self::write_clusters_buf(fs, blob, off, buf, size, &mut dd.tail, path)?
                }
            }
            d.dsize = d.dsize.max(end);
        }
        d.append = append;
        let new_size = size.max(end);
        self.size.store(new_size, Ordering::Release);
        self.mtime.store(now_ns(), Ordering::Release);
        d.meta_dirty = true;
        if new_size != size || d.inline.is_some() {
            d.size_dirty = true;
        }
        if fs.cache.over() {
            // The data is buffered already; a failed flush keeps it for the next fsync.
            let _ = self.make_room(fs, &mut d, path);
        }
        Ok(off)
    }

    /// A write with the cache on: small writes inside or right after the write-behind buffer
    /// go into it (a write elsewhere flushes it first); writes of at least a buffer's size go
    /// to the device directly.
    fn write_cached(
        self: &Arc<Self>,
        fs: &FsInner,
        d: &mut Data,
        off: u64,
        data: &[u8],
        path: &str,
    ) -> Result<()> {
        let len = data.len() as u64;
        let end = off + len;
        let wb_max = fs.cache.wb_max();
        if len >= wb_max {
            self.flush_wb(fs, d, path)?;
            let blob = d.blob.as_ref().ok_or_else(|| gone(path))?;
            if let Err(e) = Self::write_clusters(fs, blob, off, data, d.dsize, &mut d.tail, path) {
                fs.cache.forget(self.ino, off, len);
                return Err(e);
            }
            d.dsize = d.dsize.max(end);
            fs.cache.patch(self.ino, off, data);
            self.keep_written(fs, off, data, d.dsize);
            return Ok(());
        }
        let fits =
            d.wb.as_ref()
                .is_some_and(|w| off >= w.start && off <= w.end() && end - w.start <= wb_max);
        if d.wb.is_some() && !fits {
            self.flush_wb(fs, d, path)?;
        }
        let wb = d.wb.get_or_insert_with(|| Wb {
            start: off,
            data: Vec::new(),
        });
        let cap0 = wb.data.capacity();
        let rel = usize::try_from(off - wb.start).unwrap_or(0);
        let need = rel + data.len();
        if wb.data.len() < need {
            if wb.data.capacity() < need {
                // Grow geometrically, but never past the buffer's bound.
                let max = usize::try_from(wb_max).unwrap_or(usize::MAX).max(need);
                let target = need.next_power_of_two().clamp(need, max);
                wb.data.reserve_exact(target - wb.data.len());
            }
            wb.data.resize(need, 0);
        }
        wb.data[rel..need].copy_from_slice(data);
        let grown = (wb.data.capacity() - cap0) as u64;
        fs.cache.charge(grown);
        self.add_cached(fs, grown);
        Ok(())
    }

    /// Over the memory bound with the data lock held: reclaim the mount's clean chunks
    /// (those not used lately first), then other files' write-behind buffers, then this file's.
    fn make_room(self: &Arc<Self>, fs: &FsInner, d: &mut Data, path: &str) -> Result<()> {
        fs.cache.reclaim(fs, self.ino, 0, true);
        if fs.cache.over() {
            self.flush_wb_as(fs, d, path, false)?;
        }
        Ok(())
    }

    /// Drops buffered bytes at or past `new` (truncate).
    fn clip_wb(&self, fs: &FsInner, d: &mut Data, new: u64) {
        let drop_all = d.wb.as_ref().is_some_and(|w| new <= w.start);
        if drop_all {
            if let Some(w) = d.wb.take() {
                let cap = w.data.capacity() as u64;
                fs.cache.release(cap);
                self.sub_cached(cap);
            }
        } else if let Some(w) = d.wb.as_mut() {
            if new < w.end() {
                w.data.truncate(usize::try_from(new - w.start).unwrap_or(0));
            }
        }
    }

    /// Gives the blob the clusters a write ending at `end` needs; returns its size in bytes
    /// before (where a gap opened by the write starts needing no zeroes of its own).
    fn grow_blob(fs: &FsInner, blob: &Blob, end: u64, path: &str) -> Result<u64> {
        let old_blob_bytes = blob.size_bytes();
        let need = end.div_ceil(fs.cluster_size);
        if need > blob.num_clusters() {
            blob.resize(need).map_err(|e| FsError::from_bs(e, path))?;
        }
        Ok(old_blob_bytes)
    }

    /// [`Self::write_clusters`] of a buffer the caller hands over: when it covers whole io
    /// units it goes to the device as it is (no copy into a new I/O buffer), after zeroing a
    /// gap from `size` as any write past the end does; otherwise it is written as bytes.
    #[allow(clippy::too_many_arguments)]
    fn write_clusters_buf(
        fs: &FsInner,
        blob: &Blob,
        off: u64,
        buf: IoBuf,
        size: u64,
        tail: &mut Option<(u64, Vec<u8>)>,
        path: &str,
    ) -> Result<()> {
        let unit = fs.io_unit;
        let len = buf.len() as u64;
        if off % unit != 0 || len % unit != 0 {
            return Self::write_clusters(fs, blob, off, &buf, size, tail, path);
        }
        // The block memo may describe a block this write replaces.
        *tail = None;
        let bs = |e| FsError::from_bs(e, path);
        let old_blob_bytes = Self::grow_blob(fs, blob, off + len, path)?;
        fs.with_channel(path, |ch| {
            if off > size {
                Self::zero_from(fs, blob, ch, size, off.min(old_blob_bytes), path)?;
            }
            blob.write_buf_within(ch, off, buf, size).map_err(bs)
        })
    }

    /// Writes `data` at `off` (the device valid up to `size`): unaligned edges are
    /// read-modify-written, the block at the end from `tail` when it holds it; afterwards
    /// `tail` holds the new end block when the write ends unaligned. A cluster the write
    /// allocates is zeroed only where it is neither written nor past `size`
    /// (`Blob::write_buf_within`): bytes past the valid end are never read before they are
    /// written, and every extension of the file zeroes from the old valid end first.
    #[allow(clippy::too_many_arguments)]
    fn write_clusters(
        fs: &FsInner,
        blob: &Blob,
        off: u64,
        data: &[u8],
        size: u64,
        tail: &mut Option<(u64, Vec<u8>)>,
        path: &str,
    ) -> Result<()> {
        // Taken: on any error the device's copy of the block is unknown.
        let memo = tail.take();
        let mut last: Option<(u64, Vec<u8>)> = None;
        let bs = |e| FsError::from_bs(e, path);
        let (cs, unit) = (fs.cluster_size, fs.io_unit);
        let end = off + data.len() as u64;
        let old_blob_bytes = Self::grow_blob(fs, blob, end, path)?;
        fs.with_channel(path, |ch| {
            if off > size {
                Self::zero_from(fs, blob, ch, size, off.min(old_blob_bytes), path)?;
            }
            let a0 = off / unit * unit;
            let a1 = end.div_ceil(unit) * unit;
            let chunk = CHUNK_CLUSTERS * cs;
            let mut at = a0;
            while at < a1 {
                let stop = ((at / chunk + 1) * chunk).min(a1);
                let (s, e) = (at.max(off), stop.min(end));
                if s == at && e == stop {
                    // Aligned middle piece: write straight from the caller's bytes.
                    blob.write_buf_within(
                        ch,
                        at,
                        IoBuf::from_slice(&data[(s - off) as usize..(e - off) as usize]),
                        size,
                    )
                    .map_err(bs)?;
                } else {
                    // Built in the I/O buffer itself (recycled memory, no second copy),
                    // in order, each byte written once: the head block's bytes before the
                    // data, the data, the tail block's bytes after it.
                    let mut buf = IoBuf::with_capacity(usize::try_from(stop - at).unwrap_or(0));
                    let head = if s != at {
                        let b = Self::block(memo.as_ref(), blob, ch, unit, at, size, path)?;
                        buf.extend_from_slice(&b[..(s - at) as usize]);
                        Some(b)
                    } else {
                        None
                    };
                    buf.extend_from_slice(&data[(s - off) as usize..(e - off) as usize]);
                    if e != stop {
                        let tail_at = stop - unit;
                        let read;
                        let b: &[u8] = match &head {
                            // One block, read above: its bytes after the data.
                            Some(h) if tail_at == at => h,
                            _ => {
                                read = Self::block(
                                    memo.as_ref(),
                                    blob,
                                    ch,
                                    unit,
                                    tail_at,
                                    size,
                                    path,
                                )?;
                                &read
                            }
                        };
                        buf.extend_from_slice(&b[(e - tail_at) as usize..]);
                    }
                    debug_assert_eq!(buf.len() as u64, stop - at);
                    let u = unit as usize;
                    let end_block = (stop == a1 && end % unit != 0)
                        .then(|| (stop - unit, buf[buf.len() - u..].to_vec()));
                    blob.write_buf_within(ch, at, buf, size).map_err(bs)?;
                    if end_block.is_some() {
                        last = end_block;
                    }
                }
                at = stop;
            }
            Ok(())
        })?;
        // The block the write ends in; or, when the write ended aligned before a memo'd
        // block it did not touch, that block is still what the device holds.
        *tail = last.or_else(|| memo.filter(|(o, _)| *o >= end.div_ceil(unit) * unit));
        Ok(())
    }

    fn truncate(&self, fs: &FsInner, new: u64, path: &str) -> Result<()> {
        let mut d = self.write_lock();
        if d.blob.is_none() {
            return Err(gone(path));
        }
        let size = self.size.load(Ordering::Acquire);
        if new < size {
            Self::confirm_before_rewrite(&d, new, size - new, path)?;
        }
        d.append = None;
        if d.inline.is_some() && new > INLINE_MAX {
            self.migrate(fs, &mut d, new, path)?;
        }
        if let Some(v) = d.inline.as_mut() {
            v.resize(new as usize, 0);
            d.dsize = new;
        } else {
            // Buffered bytes past the new size are dropped, the rest written first, so the
            // device is valid up to `dsize` and nothing is buffered.
            self.clip_wb(fs, &mut d, new);
            self.flush_wb(fs, &mut d, path)?;
            let ds = d.dsize;
            if new > ds {
                d.tail = None;
            }
            if new != size || ds != new {
                let blob = d.blob.as_ref().ok_or_else(|| gone(path))?;
                let bs = |e| FsError::from_bs(e, path);
                let cs = fs.cluster_size;
                let need = new.div_ceil(cs);
                // Shrinking frees the clusters beyond. The tail of the last cluster is not
                // zeroed now: that would change bytes the durable (old) size still covers
                // before the record is written, so a crash could show neither the old nor
                // the new file. Every extension zeroes from the old size instead
                // (`docs/format.md`, blobfs section).
                if new > ds {
                    fs.with_channel(path, |ch| Self::zero_from(fs, blob, ch, ds, new, path))?;
                }
                if new < size && need < blob.num_clusters() {
                    blob.resize(need).map_err(bs)?;
                }
                if need > blob.num_clusters() {
                    blob.resize(need).map_err(bs)?;
                }
            }
            d.dsize = new;
            fs.cache.cut(self.ino, new);
        }
        let now = now_ns();
        self.size.store(new, Ordering::Release);
        self.mtime.store(now, Ordering::Release);
        self.ctime.store(now, Ordering::Release);
        d.meta_dirty = true;
        d.size_dirty = true;
        Ok(())
    }
}

/// An open file. `Send + Sync`: one handle may be used from several threads. Every handle of
/// one file shares its in-memory inode, so they all see one size. Dropping a handle closes it
/// (errors ignored); call [`FileHandle::close`] to see them.
pub struct FileHandle {
    fs: Arc<FsInner>,
    inode: Arc<OpenInode>,
    flags: OpenFlags,
    path: String,
    closed: bool,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHandle")
            .field("path", &self.path)
            .field("ino", &self.inode.ino)
            .field("flags", &self.flags)
            .finish()
    }
}

impl FileHandle {
    pub(crate) fn new(
        fs: Arc<FsInner>,
        inode: Arc<OpenInode>,
        flags: OpenFlags,
        path: &str,
    ) -> Self {
        FileHandle {
            fs,
            inode,
            flags,
            path: path.to_string(),
            closed: false,
        }
    }

    fn check(&self, write: bool) -> Result<()> {
        self.fs.live(&self.path)?;
        if write && !self.flags.write {
            return Err(FsError::new(
                FsErrorKind::BadHandle,
                &self.path,
                "opened without write",
            ));
        }
        if !write && !self.flags.read {
            return Err(FsError::new(
                FsErrorKind::BadHandle,
                &self.path,
                "opened without read",
            ));
        }
        Ok(())
    }

    /// The inode number.
    pub fn ino(&self) -> u64 {
        self.inode.ino
    }

    /// The path the handle was opened with.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The current size in bytes (shared by every handle of the file).
    pub fn len(&self) -> u64 {
        self.inode.size.load(Ordering::Acquire)
    }

    /// True when the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at or past the end).
    /// Holes read as zeroes. Takes the file's lock shared.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.check(false)?;
        self.inode.read(&self.fs, offset, buf, &self.path)
    }

    /// A hint that `[offset, offset + len)` will be read soon: with the cache on and room in
    /// it, the missing chunks of the range (up to one read-ahead window, 2 MiB) are read into
    /// the cache now. Does nothing with the cache off, for inline files or under memory
    /// pressure.
    pub fn readahead(&self, offset: u64, len: u64) -> Result<()> {
        self.check(false)?;
        self.inode.prefetch(&self.fs, offset, len, &self.path)
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the file) into a new vector.
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; len];
        let n = self.read_at(offset, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// Writes all of `data` at `offset` (at the end of the file if opened with `append`),
    /// growing the file as needed; a gap reads as zeroes. Takes the file's lock exclusive.
    /// In memory until `fsync`/`fdatasync`/close (the data may reach the device earlier).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(true)?;
        let off = (!self.flags.append).then_some(offset);
        self.inode
            .write(&self.fs, off, data, &self.path)
            .map(|_| ())
    }

    /// [`FileHandle::write_at`] of bytes in an I/O buffer the caller hands over. On a mount
    /// without a data cache, a write of whole io units at a whole io unit goes to the device
    /// in this buffer, with no copy (a writer that gathers its bytes in an aligned buffer
    /// anyway, such as the RocksDB plugin's append buffer, saves a copy of every byte);
    /// otherwise it is the same as `write_at`.
    pub fn write_buf_at(&self, offset: u64, buf: IoBuf) -> Result<()> {
        self.check(true)?;
        let off = (!self.flags.append).then_some(offset);
        self.inode
            .write_src(&self.fs, off, Src::Buf(buf), &self.path)
            .map(|_| ())
    }

    /// Appends `data` at the end of the file; returns the offset it was written at.
    pub fn append(&self, data: &[u8]) -> Result<u64> {
        self.check(true)?;
        self.inode.write(&self.fs, None, data, &self.path)
    }

    /// Appends `data` and makes the file's data and size durable: `append` then `fdatasync`,
    /// in fewer device round trips when it can. After pure appends (a log), the appended
    /// bytes and the inode record carrying their check go to the device together, then one
    /// flush — with the cache off too, where `append` would have written the data on its
    /// own first. Returns the offset `data` was written at.
    pub fn append_fdatasync(&self, data: &[u8]) -> Result<u64> {
        self.check(true)?;
        self.fs.live(&self.path)?;
        if let Some(off) = self.inode.append_sync_direct(&self.fs, data, &self.path)? {
            return Ok(off);
        }
        let off = self.inode.write(&self.fs, None, data, &self.path)?;
        self.fdatasync()?;
        Ok(off)
    }

    /// Sets the size: shrinking frees whole clusters beyond it and zeroes the tail of the
    /// last one; growing leaves a hole that reads as zeroes.
    pub fn truncate(&self, len: u64) -> Result<()> {
        self.check(true)?;
        self.inode.truncate(&self.fs, len, &self.path)
    }

    /// Makes the file's data, size and times durable, and every namespace operation that
    /// completed before the call (deferred records): if the size changed, a device flush,
    /// then the inode's record (size, times, inline data, cluster map) and one flush; with the
    /// size unchanged, one flush in all; after pure appends, the record carries a check of
    /// the appended bytes and one flush covers both (written together when still buffered).
    /// Blocks.
    pub fn fsync(&self) -> Result<()> {
        self.fs.live(&self.path)?;
        let mut d = self.inode.write_lock();
        self.inode
            .persist(&self.fs, &mut d, &self.path, Durability::Durable)
    }

    /// Like `fsync`, but a change of times alone is not written: one device flush.
    pub fn fdatasync(&self) -> Result<()> {
        self.fs.live(&self.path)?;
        let mut d = self.inode.write_lock();
        if d.size_dirty {
            // Size changed: the record is needed anyway (`persist` writes the buffer, with
            // the record in one round trip after pure appends).
            return self
                .inode
                .persist(&self.fs, &mut d, &self.path, Durability::Durable);
        }
        if !self.fs.read_only {
            self.inode.flush_wb(&self.fs, &mut d, &self.path)?;
        }
        let blob_dirty = d.blob.as_ref().is_some_and(|b| b.is_dirty());
        if d.size_dirty || blob_dirty || (d.meta_dirty && d.inline.is_some()) {
            self.inode
                .persist(&self.fs, &mut d, &self.path, Durability::Durable)
        } else {
            // Data written inside the size, and every deferred namespace record.
            self.fs.flush_device(&self.path)
        }
    }

    /// Writes back the file's buffered data and commits its size and times **deferred** (no
    /// fsync: durable with the next flush — a later fsync of any file, `fsync_dir`, `sync`,
    /// unmount; a flush is issued before the record only when the size grew), and releases
    /// the handle. The last close of an unlinked file deletes it (deferred too).
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        if self.fs.unmounted.load(Ordering::Acquire) {
            return Ok(());
        }
        let r = if self.inode.is_orphan() {
            Ok(())
        } else {
            self.inode.write_back(&self.fs, &self.path)
        };
        let r2 = last_close(&self.fs, self.inode.ino, &self.path);
        r.and(r2)
    }
}

impl Drop for FileHandle {
    fn drop(&mut self) {
        let _ = self.close_inner();
    }
}

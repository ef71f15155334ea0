//! Open files: the shared in-memory inode of an open file (size, times, inline data, the
//! blob handle, its own lock) and the per-open [`FileHandle`].

use crate::attr::*;
use crate::error::{FsError, FsErrorKind, Result};
use crate::fs::{last_close, FsInner, Inode, OpenFlags};
use oxblob_blobstore::{Blob, BsChannel};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

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
}

/// The in-memory inode of an open file, shared by all its handles.
pub(crate) struct OpenInode {
    ino: u64,
    size: AtomicU64,
    mtime: AtomicU64,
    ctime: AtomicU64,
    orphan: AtomicBool,
    data: RwLock<Data>,
}

fn gone(path: &str) -> FsError {
    FsError::new(FsErrorKind::Io, path, "file system is unmounted")
}

impl OpenInode {
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
            data: RwLock::new(Data {
                blob: Some(blob),
                inline,
                meta_dirty: false,
                size_dirty: false,
            }),
        }
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

    /// Drops the blob handle (after the last close), syncing it if still dirty.
    pub(crate) fn release_blob(&self) {
        if let Some(b) = self.write_lock().blob.take() {
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
            self.persist(fs, &mut d, "")
        };
        self.release_blob();
        r
    }

    /// Writes size, times and inline data to the blob's record and syncs it. For a file in
    /// clusters, a device flush comes first, so a durable size never covers unwritten data.
    fn persist(&self, fs: &FsInner, d: &mut Data, path: &str) -> Result<()> {
        if !d.meta_dirty || fs.read_only {
            return Ok(());
        }
        let blob = d.blob.as_ref().ok_or_else(|| gone(path))?;
        let bs = |e| FsError::from_bs(e, path);
        if d.inline.is_none() {
            fs.flush_device(path)?;
        }
        let (size, mtime, ctime) = self.times_and_size();
        blob.set_xattr(X_SIZE, &enc_u64(size)).map_err(bs)?;
        blob.set_xattr(X_MTIME, &enc_u64(mtime)).map_err(bs)?;
        blob.set_xattr(X_CTIME, &enc_u64(ctime)).map_err(bs)?;
        if let Some(v) = &d.inline {
            blob.set_internal_xattr(X_INLINE, v).map_err(bs)?;
        }
        blob.sync_md().map_err(bs)?;
        d.meta_dirty = false;
        d.size_dirty = false;
        Ok(())
    }

    fn read(&self, fs: &FsInner, offset: u64, buf: &mut [u8], path: &str) -> Result<usize> {
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
        let unit = fs.io_unit;
        let blob_bytes = blob.size_bytes();
        let end = offset + n as u64;
        let a0 = offset / unit * unit;
        let a1 = end.div_ceil(unit) * unit;
        let chunk = CHUNK_CLUSTERS * fs.cluster_size;
        fs.with_channel(path, |ch| {
            let mut at = a0;
            while at < a1 {
                let stop = ((at / chunk + 1) * chunk).min(a1);
                // Bytes past the blob's clusters read as zeroes.
                let got = if at < blob_bytes {
                    let len = usize::try_from(stop.min(blob_bytes) - at).unwrap_or(0);
                    blob.read(ch, at, len)
                        .map_err(|e| FsError::from_bs(e, path))?
                } else {
                    Vec::new()
                };
                // Copy the overlap of [at, stop) with [offset, end); past `got`, zeroes.
                let (s, e) = (at.max(offset), stop.min(end));
                let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
                let from = (s - at) as usize;
                let avail = got.len().saturating_sub(from).min(dst.len());
                if avail > 0 {
                    dst[..avail].copy_from_slice(&got[from..from + avail]);
                }
                dst[avail..].fill(0);
                at = stop;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// One io-unit block at `off`, with every byte at or past `valid` zeroed (bytes past the
    /// size must read as zeroes, whatever a crash left there).
    fn block(
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
        let mut b = blob
            .read(ch, off, u)
            .map_err(|e| FsError::from_bs(e, path))?;
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
            let blk = Self::block(blob, ch, unit, b0, from, path)?;
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
        if r.is_err() {
            d.inline = Some(v);
        } else {
            d.meta_dirty = true;
            d.size_dirty = true;
        }
        r
    }

    fn write(&self, fs: &FsInner, offset: Option<u64>, data: &[u8], path: &str) -> Result<u64> {
        let mut d = self.write_lock();
        if d.blob.is_none() {
            return Err(gone(path));
        }
        let size = self.size.load(Ordering::Acquire);
        let off = offset.unwrap_or(size);
        let len = data.len() as u64;
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
        if d.inline.is_some() && end > INLINE_MAX {
            self.migrate(fs, &mut d, end, path)?;
        }
        if let Some(v) = d.inline.as_mut() {
            let (o, e) = (off as usize, end as usize);
            if v.len() < e {
                v.resize(e, 0);
            }
            v[o..e].copy_from_slice(data);
        } else {
            let blob = d.blob.as_ref().ok_or_else(|| gone(path))?;
            Self::write_clusters(fs, blob, off, data, size, path)?;
        }
        let new_size = size.max(end);
        self.size.store(new_size, Ordering::Release);
        self.mtime.store(now_ns(), Ordering::Release);
        d.meta_dirty = true;
        if new_size != size || d.inline.is_some() {
            d.size_dirty = true;
        }
        Ok(off)
    }

    fn write_clusters(
        fs: &FsInner,
        blob: &Blob,
        off: u64,
        data: &[u8],
        size: u64,
        path: &str,
    ) -> Result<()> {
        let bs = |e| FsError::from_bs(e, path);
        let (cs, unit) = (fs.cluster_size, fs.io_unit);
        let end = off + data.len() as u64;
        let old_blob_bytes = blob.size_bytes();
        let need = end.div_ceil(cs);
        if need > blob.num_clusters() {
            blob.resize(need).map_err(bs)?;
        }
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
                let mut buf = if s == at && e == stop {
                    Vec::new()
                } else {
                    vec![0u8; usize::try_from(stop - at).unwrap_or(0)]
                };
                if buf.is_empty() {
                    // Aligned middle piece: write straight from the caller's bytes.
                    blob.write(ch, at, &data[(s - off) as usize..(e - off) as usize])
                        .map_err(bs)?;
                } else {
                    let u = unit as usize;
                    if s != at {
                        let b = Self::block(blob, ch, unit, at, size, path)?;
                        buf[..u].copy_from_slice(&b);
                    }
                    if e != stop && (stop - unit != at || s == at) {
                        let b = Self::block(blob, ch, unit, stop - unit, size, path)?;
                        let l = buf.len();
                        buf[l - u..].copy_from_slice(&b);
                    }
                    buf[(s - at) as usize..(e - at) as usize]
                        .copy_from_slice(&data[(s - off) as usize..(e - off) as usize]);
                    blob.write(ch, at, &buf).map_err(bs)?;
                }
                at = stop;
            }
            Ok(())
        })
    }

    fn truncate(&self, fs: &FsInner, new: u64, path: &str) -> Result<()> {
        let mut d = self.write_lock();
        if d.blob.is_none() {
            return Err(gone(path));
        }
        let size = self.size.load(Ordering::Acquire);
        if d.inline.is_some() && new > INLINE_MAX {
            self.migrate(fs, &mut d, new, path)?;
        }
        if let Some(v) = d.inline.as_mut() {
            v.resize(new as usize, 0);
        } else if new != size {
            let blob = d.blob.as_ref().ok_or_else(|| gone(path))?;
            let bs = |e| FsError::from_bs(e, path);
            let cs = fs.cluster_size;
            let need = new.div_ceil(cs);
            if new < size {
                // Free the clusters beyond. The tail of the last cluster is not zeroed now:
                // that would change bytes the durable (old) size still covers before the
                // record is written, so a crash could show neither the old nor the new file.
                // Every extension zeroes from the old size instead (`docs/blobfs.md`).
                if need < blob.num_clusters() {
                    blob.resize(need).map_err(bs)?;
                }
            } else {
                fs.with_channel(path, |ch| Self::zero_from(fs, blob, ch, size, new, path))?;
                if need > blob.num_clusters() {
                    blob.resize(need).map_err(bs)?;
                }
            }
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

    /// Appends `data` at the end of the file; returns the offset it was written at.
    pub fn append(&self, data: &[u8]) -> Result<u64> {
        self.check(true)?;
        self.inode.write(&self.fs, None, data, &self.path)
    }

    /// Sets the size: shrinking frees whole clusters beyond it and zeroes the tail of the
    /// last one; growing leaves a hole that reads as zeroes.
    pub fn truncate(&self, len: u64) -> Result<()> {
        self.check(true)?;
        self.inode.truncate(&self.fs, len, &self.path)
    }

    /// Makes the file's data, size and times durable: a device flush, then the inode's
    /// record (size, times, inline data, cluster map) and another flush. Blocks.
    pub fn fsync(&self) -> Result<()> {
        self.fs.live(&self.path)?;
        let mut d = self.inode.write_lock();
        self.inode.persist(&self.fs, &mut d, &self.path)
    }

    /// Like `fsync`, but a change of times alone only flushes the device.
    pub fn fdatasync(&self) -> Result<()> {
        self.fs.live(&self.path)?;
        let mut d = self.inode.write_lock();
        let blob_dirty = d.blob.as_ref().is_some_and(|b| b.is_dirty());
        if d.size_dirty || blob_dirty {
            self.inode.persist(&self.fs, &mut d, &self.path)
        } else if d.meta_dirty && d.inline.is_none() {
            self.fs.flush_device(&self.path)
        } else {
            Ok(())
        }
    }

    /// Persists the file (as `fsync`) and releases the handle. The last close of an unlinked
    /// file deletes it.
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
            let mut d = self.inode.write_lock();
            self.inode.persist(&self.fs, &mut d, &self.path)
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

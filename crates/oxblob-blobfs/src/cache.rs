//! The data cache of a mount: write-behind buffers, read-ahead and a small clean-chunk cache,
//! all under one memory bound ([`crate::MountOptions::cache_bytes`]).
//!
//! Write-behind and read-ahead are per open inode (in `file.rs`, under the inode's own
//! locks); clean chunks are the mount's:
//! - **Write-behind** ([`Wb`]): one contiguous dirty extent, at most [`Cache::wb_max`] bytes,
//!   kept under the inode's data lock. Small writes inside or right after it are copied into
//!   it; anything else (a write elsewhere, a full buffer, a read is *not* a reason: reads
//!   overlay it) flushes it first. Flushing is one `write_clusters` of the whole extent, so
//!   the read-modify-write of unaligned edges happens once per flush, not once per write.
//! - **Clean chunks** (mount-wide, in [`Cache`]): [`CHUNK`]-sized, chunk-aligned copies of
//!   what the device holds for a file (bytes at or past the device size are zero), keyed by
//!   inode number and chunk index — inode numbers are blob ids, never reused, so no
//!   generation is needed — in one CLOCK ring (see [`Clean`]) behind a reader-writer lock
//!   that is never held across I/O (cache hits share it). They
//!   do not belong to an open: a file's clean chunks stay cached after its last close (its
//!   dirty data is written back at close, so they match the device) and serve the next open,
//!   as a page cache does. They are dropped when the blob is deleted (unlink, rmdir, rename
//!   over a closed file; an orphan's at its last close) and at unmount. Filled by
//!   read-ahead, by [`crate::FileHandle::readahead`] hints, and by random-read misses: at
//!   once while the cache has room, and under memory pressure only on a second miss of the
//!   same chunk (a small per-open ghost list), so one-off random reads then go straight to
//!   the device and do not evict. Flushes patch the chunks they overlap (a failed write
//!   drops them), and keep the chunks they wrote whole (write-through, as a page cache keeps
//!   what was just written): chunk-aligned 64 KiB pieces of the written range, and its last
//!   piece when it ends the file (zeroes after), while the cache has room — never evicting
//!   anything for them, and not when the flush itself is reclaiming memory. Truncate drops
//!   the chunks past the new size and zeroes the tail of the last one. Every write reaches
//!   the device through an open inode's flush, so this keeps chunks coherent across opens.
//! - **Read-ahead**: a read that starts where the previous one ended is sequential; the
//!   window starts at [`RA_MIN`] and doubles to [`RA_MAX`]. A sequential read that misses
//!   fetches the whole window from the first missing chunk, every contiguous run submitted
//!   at once on one [`oxblob_blobstore::BsChannel`] and reaped together.
//!
//! - **Spare frames**: the buffers of chunks dropped because their bytes went away (a deleted
//!   or truncated file, a failed write) are kept, up to a sixteenth of the bound (256 MiB at
//!   most), for the next chunks, instead of being freed and the next chunks' memory faulted
//!   in and cleared by the kernel again; see [`Cache::frame`].
//!
//! Global: [`Cache`] counts the bytes held (buffer capacities, chunks and spare frames) in an
//! atomic. Spare frames are the first memory given up when room is needed.
//! Going over the bound reclaims the mount's clean chunks not used lately first (open
//! files' or not), then (for writers) other files' dirty buffers, each victim only if its
//! lock is free right now (`try_lock`), so eviction never waits on another file's I/O — and
//! then the caller's own buffer. The registry of open files holding write-behind buffers is
//! a map behind a mutex taken only to list victims.

use crate::file::OpenInode;
use oxblob_bdev::IoBuf;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

/// Default [`crate::MountOptions::cache_bytes`]: 64 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;
/// Clean-cache chunk size (every cluster size is a multiple of it).
pub(crate) const CHUNK: u64 = 64 * 1024;
/// Largest write-behind buffer per file.
pub(crate) const WB_MAX: u64 = 1 << 20;
/// First read-ahead window.
pub(crate) const RA_MIN: u64 = 128 * 1024;
/// Largest read-ahead window; reads at least this large bypass the clean cache.
pub(crate) const RA_MAX: u64 = 2 << 20;
/// Chunks remembered after a random miss (a second miss caches the chunk).
const GHOSTS: usize = 64;

/// A file's write-behind buffer: the bytes of `[start, start + data.len())`, newer than the
/// device.
#[derive(Debug)]
pub(crate) struct Wb {
    pub(crate) start: u64,
    pub(crate) data: Vec<u8>,
}

impl Wb {
    pub(crate) fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

/// One cached chunk: its bytes (an aligned buffer the device filled directly) and its slot
/// in the CLOCK ring.
struct Chunk {
    data: IoBuf,
    slot: u32,
}

/// A slot of the CLOCK ring: the chunk it holds (`ino` 0: free) and its reference bit,
/// which a hit sets under the shared (read) lock.
struct Slot {
    ino: u64,
    c: u64,
    referenced: AtomicBool,
}

impl Slot {
    fn new(ino: u64, c: u64) -> Slot {
        Slot {
            ino,
            c,
            referenced: AtomicBool::new(false),
        }
    }
}

/// The mount's clean chunks, keyed by inode number (a blob id, never reused, so a key never
/// names another file's bytes) and chunk index, with one CLOCK ring over all of them.
///
/// Replacement is CLOCK (second chance) rather than a strict LRU list: a hit only sets its
/// slot's reference bit, where an LRU must move the chunk to the front of an ordered
/// structure on every hit (a tree remove and insert, on the hot path of every cached read).
/// Eviction sweeps the hand over the ring, clearing reference bits, and takes the first
/// chunk not referenced since the hand last passed it. A new chunk goes into a free slot
/// (the one just evicted, usually: right behind the hand, so it gets a full turn before it
/// can go) with its bit clear.
#[derive(Default)]
struct Clean {
    files: HashMap<u64, HashMap<u64, Chunk>>,
    ring: Vec<Slot>,
    /// Free slots of `ring`.
    free: Vec<u32>,
    hand: usize,
}

impl Clean {
    fn contains(&self, ino: u64, c: u64) -> bool {
        self.files.get(&ino).is_some_and(|f| f.contains_key(&c))
    }

    /// Chunk `c` of `ino`, marked referenced (a shared borrow: hits of many readers proceed
    /// together).
    fn touch(&self, ino: u64, c: u64) -> Option<&Chunk> {
        let ch = self.files.get(&ino)?.get(&c)?;
        if let Some(s) = self.ring.get(ch.slot as usize) {
            // Only the hint bit: a plain store, no read-modify-write, and no store at all
            // when it is already set (the slot's cache line stays shared between readers).
            if !s.referenced.load(Ordering::Relaxed) {
                s.referenced.store(true, Ordering::Relaxed);
            }
        }
        Some(ch)
    }

    fn put(&mut self, ino: u64, c: u64, data: IoBuf) {
        if let Some(ch) = self.files.get_mut(&ino).and_then(|f| f.get_mut(&c)) {
            ch.data = data;
            return;
        }
        let slot = Slot::new(ino, c);
        let i = match self.free.pop() {
            Some(i) => {
                self.ring[i as usize] = slot;
                i
            }
            None => {
                self.ring.push(slot);
                (self.ring.len() - 1) as u32
            }
        };
        self.files
            .entry(ino)
            .or_default()
            .insert(c, Chunk { data, slot: i });
    }

    /// Frees slot `i` of the ring.
    fn free_slot(&mut self, i: u32) {
        if let Some(s) = self.ring.get_mut(i as usize) {
            *s = Slot::new(0, 0);
            self.free.push(i);
        }
    }

    /// Rebuilds the ring from the chunks held when most of it is free slots (after a large
    /// file's chunks were dropped, say), so that the hand never sweeps long runs of free
    /// slots and the ring's memory follows the cache's. O(chunks), at most once per
    /// three-quarters of the ring freed: amortized O(1) per removal.
    fn maybe_compact(&mut self) {
        if self.ring.len() < 1024 || self.free.len() * 4 < self.ring.len() * 3 {
            return;
        }
        let mut ring = Vec::with_capacity(self.ring.len() - self.free.len());
        for (&ino, f) in self.files.iter_mut() {
            for (&c, ch) in f.iter_mut() {
                let referenced = self
                    .ring
                    .get(ch.slot as usize)
                    .is_some_and(|s| s.referenced.load(Ordering::Relaxed));
                let slot = Slot::new(ino, c);
                slot.referenced.store(referenced, Ordering::Relaxed);
                ch.slot = ring.len() as u32;
                ring.push(slot);
            }
        }
        self.ring = ring;
        self.free.clear();
        self.hand = 0;
    }

    /// Removes chunk `c` of `ino`; returns its buffer.
    fn remove(&mut self, ino: u64, c: u64) -> Option<IoBuf> {
        let f = self.files.get_mut(&ino)?;
        let ch = f.remove(&c)?;
        if f.is_empty() {
            self.files.remove(&ino);
        }
        self.free_slot(ch.slot);
        self.maybe_compact();
        Some(ch.data)
    }

    /// Drops one chunk the CLOCK hand chooses; returns the bytes released (0 when the cache
    /// holds no chunk).
    fn evict_one(&mut self) -> u64 {
        let n = self.ring.len();
        if n == self.free.len() {
            return 0;
        }
        // Two turns at most: the first clears every reference bit.
        for _ in 0..2 * n + 1 {
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            let s = &mut self.ring[i];
            if s.ino == 0 {
                continue;
            }
            if std::mem::take(s.referenced.get_mut()) {
                continue;
            }
            let (ino, c) = (s.ino, s.c);
            return self.remove(ino, c).map_or(0, |b| b.len() as u64);
        }
        0
    }

    /// Removes every chunk of `ino`; returns their buffers.
    fn drop_file(&mut self, ino: u64) -> Vec<IoBuf> {
        let Some(f) = self.files.remove(&ino) else {
            return Vec::new();
        };
        let mut bufs = Vec::with_capacity(f.len());
        for ch in f.into_values() {
            self.free_slot(ch.slot);
            bufs.push(ch.data);
        }
        self.maybe_compact();
        bufs
    }
}

/// An open file's read-ahead state and recent random misses (behind the inode's read-state
/// mutex). Its clean chunks are the mount's ([`Cache`]), and outlive the open.
#[derive(Default)]
pub(crate) struct ReadState {
    ghosts: VecDeque<u64>,
    /// Where the next sequential read starts.
    pub(crate) next: u64,
    /// Current read-ahead window (0: not sequential).
    pub(crate) window: u64,
}

impl ReadState {
    /// Records a random miss of chunk `c`; true if it was missed recently (cache it now).
    pub(crate) fn ghost_hit(&mut self, c: u64) -> bool {
        if let Some(i) = self.ghosts.iter().position(|&g| g == c) {
            self.ghosts.remove(i);
            return true;
        }
        if self.ghosts.len() == GHOSTS {
            self.ghosts.pop_front();
        }
        self.ghosts.push_back(c);
        false
    }
}

/// The mount-wide cache: accounting, the clean chunks of every file (open or not), and the
/// registry of open files holding write-behind buffers.
pub(crate) struct Cache {
    /// The bound in bytes; 0 disables the cache (every read and write goes to the device).
    pub(crate) limit: u64,
    used: AtomicU64,
    /// Clean chunks; the lock is never held across I/O, and cache hits share it (a read
    /// lock: the CLOCK bit is atomic), so readers of different files, or of the same one,
    /// copy out at the same time. Lock order: an inode's `data`, then its read state, then
    /// this.
    clean: RwLock<Clean>,
    files: Mutex<HashMap<u64, Weak<OpenInode>>>,
    /// Spare frames: the buffers of chunks dropped because their bytes went away (a deleted
    /// or truncated file, a failed write), kept for the next chunks instead of being freed.
    /// Counted in `used`, and the first memory given up when room is needed. Lock order:
    /// after `clean` (never the other way round).
    spare: Mutex<Vec<IoBuf>>,
    /// Most spare frames kept: [`SPARE_MAX_BYTES`] or a sixteenth of the bound.
    spare_max: usize,
}

/// Most bytes of spare frames a mount keeps.
const SPARE_MAX_BYTES: u64 = 256 << 20;

impl Cache {
    pub(crate) fn new(limit: u64) -> Self {
        Cache {
            limit,
            used: AtomicU64::new(0),
            clean: RwLock::new(Clean::default()),
            files: Mutex::new(HashMap::new()),
            spare: Mutex::new(Vec::new()),
            spare_max: usize::try_from((limit / 16).min(SPARE_MAX_BYTES) / CHUNK).unwrap_or(0),
        }
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Vec<IoBuf>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for one chunk, for a new chunk: a spare frame when there is
    /// one (memory already mapped: no page faults, no clearing by the kernel), else a new
    /// buffer. Its bytes are no longer counted until the chunk is inserted.
    ///
    /// Why: a user-space cache that frees a deleted file's chunks and allocates new ones
    /// pays the kernel to fault in and clear fresh pages for every chunk it fills — in a
    /// RocksDB overwrite through the cache, page-fault handling and clearing were 13.7% of
    /// the samples, 8.9% with spare frames (compaction deletes its inputs as it writes its
    /// outputs). A page cache recycles its pages; the spare frames do the same.
    pub(crate) fn frame(&self) -> IoBuf {
        let spare = self.spare().pop();
        match spare {
            Some(mut b) => {
                self.release(CHUNK);
                b.clear();
                b
            }
            None => IoBuf::with_capacity(CHUNK as usize),
        }
    }

    /// Takes back the buffers of dropped chunks: kept as spare frames while there is room
    /// for them, freed (and uncounted) otherwise.
    fn retire(&self, bufs: impl IntoIterator<Item = IoBuf>) {
        let mut freed = 0;
        {
            let mut spare = self.spare();
            for b in bufs {
                let cap = b.capacity() as u64;
                if spare.len() < self.spare_max
                    && b.len() as u64 == CHUNK
                    && (CHUNK..=2 * CHUNK).contains(&cap)
                {
                    spare.push(b);
                } else {
                    freed += b.len() as u64;
                }
            }
        }
        self.release(freed);
    }

    /// Frees spare frames until `want` more bytes fit under the bound or none are left;
    /// true if they fit.
    fn shed_spare(&self, want: u64) -> bool {
        while self.used() + want > self.limit {
            let Some(b) = self.spare().pop() else {
                return false;
            };
            drop(b);
            self.release(CHUNK);
        }
        true
    }

    /// Spare frames held now.
    #[cfg(test)]
    fn spares(&self) -> usize {
        self.spare().len()
    }

    /// Whether the cache is on.
    pub(crate) fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Largest write-behind buffer: 1 MiB, or a quarter of the bound if that is smaller.
    pub(crate) fn wb_max(&self) -> u64 {
        WB_MAX.min(self.limit / 4)
    }

    /// Largest read-ahead window: 2 MiB, or a quarter of the bound if that is smaller, so
    /// a window always fits; 0 (no read-ahead, no clean chunks) when that is less than one
    /// chunk.
    pub(crate) fn ra_max(&self) -> u64 {
        let m = RA_MAX.min(self.limit / 4) / CHUNK * CHUNK;
        if m < CHUNK {
            0
        } else {
            m
        }
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub(crate) fn over(&self) -> bool {
        self.used() > self.limit
    }

    pub(crate) fn charge(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn release(&self, n: u64) {
        // Saturating: accounting must never wrap, whatever the order of updates.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    fn clean(&self) -> std::sync::RwLockWriteGuard<'_, Clean> {
        self.clean.write().unwrap_or_else(|e| e.into_inner())
    }

    fn clean_shared(&self) -> std::sync::RwLockReadGuard<'_, Clean> {
        self.clean.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the cached parts of chunks `c0..=c1` of `ino` overlapping `[from, to)` into
    /// `dst` (which holds `[from, to)`), marking them used; returns the chunks not cached.
    pub(crate) fn copy_out(
        &self,
        ino: u64,
        c0: u64,
        c1: u64,
        from: u64,
        to: u64,
        dst: &mut [u8],
    ) -> Vec<u64> {
        let mut misses = Vec::new();
        let cl = self.clean_shared();
        for c in c0..=c1 {
            let Some(ch) = cl.touch(ino, c) else {
                misses.push(c);
                continue;
            };
            let base = c * CHUNK;
            let (s, e) = (from.max(base), to.min(base + CHUNK));
            if s < e {
                dst[(s - from) as usize..(e - from) as usize]
                    .copy_from_slice(&ch.data[(s - base) as usize..(e - base) as usize]);
            }
        }
        misses
    }

    /// Which of `cs` are not cached for `ino`.
    pub(crate) fn missing(&self, ino: u64, cs: impl Iterator<Item = u64>) -> Vec<u64> {
        let cl = self.clean_shared();
        cs.filter(|&c| !cl.contains(ino, c)).collect()
    }

    /// Inserts chunks of `ino`, evicting the mount's chunks not used lately while over
    /// the bound; a chunk that cannot fit (the rest is write-behind memory) is not kept.
    pub(crate) fn insert(&self, ino: u64, chunks: Vec<(u64, IoBuf)>) {
        let mut cl = self.clean();
        for (c, data) in chunks {
            if cl.contains(ino, c) {
                continue;
            }
            let n = data.len() as u64;
            self.shed_spare(n);
            let mut fits = true;
            while self.used() + n > self.limit {
                let f = cl.evict_one();
                if f == 0 {
                    fits = false;
                    break;
                }
                self.release(f);
            }
            if !fits {
                break;
            }
            self.charge(n);
            cl.put(ino, c, data);
        }
    }

    /// Whether chunk `c` of `ino` is cached.
    pub(crate) fn contains(&self, ino: u64, c: u64) -> bool {
        self.clean_shared().contains(ino, c)
    }

    /// Inserts chunk `c` of `ino` only if it fits under the bound as things are (no
    /// eviction: used for data just written, which must not push out what readers cached).
    /// False if it did not fit.
    pub(crate) fn insert_if_room(&self, ino: u64, c: u64, data: IoBuf) -> bool {
        let n = data.len() as u64;
        let mut cl = self.clean();
        if cl.contains(ino, c) {
            return true;
        }
        if !self.shed_spare(n) {
            return false;
        }
        self.charge(n);
        cl.put(ino, c, data);
        true
    }

    /// Drops the mount's clean chunks not used lately until `want` more bytes fit under
    /// the bound or none are left.
    fn evict_clean(&self, want: u64) {
        if self.shed_spare(want) {
            return;
        }
        let mut cl = self.clean();
        while self.used() + want > self.limit {
            let f = cl.evict_one();
            if f == 0 {
                break;
            }
            self.release(f);
        }
    }

    /// Copies `data` (the new device bytes of `[off, off + len)` of `ino`) into the cached
    /// chunks it overlaps.
    pub(crate) fn patch(&self, ino: u64, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut cl = self.clean();
        let Some(f) = cl.files.get_mut(&ino) else {
            return;
        };
        let end = off + data.len() as u64;
        for c in off / CHUNK..=(end - 1) / CHUNK {
            if let Some(ch) = f.get_mut(&c) {
                let base = c * CHUNK;
                let (s, e) = (off.max(base), end.min(base + CHUNK));
                ch.data[(s - base) as usize..(e - base) as usize]
                    .copy_from_slice(&data[(s - off) as usize..(e - off) as usize]);
            }
        }
    }

    /// Drops the chunks of `ino` overlapping `[off, off + len)` (a write whose outcome on the
    /// device is unknown).
    pub(crate) fn forget(&self, ino: u64, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let gone: Vec<IoBuf> = {
            let mut cl = self.clean();
            (off / CHUNK..=(off + len - 1) / CHUNK)
                .filter_map(|c| cl.remove(ino, c))
                .collect()
        };
        self.retire(gone);
    }

    /// File `ino` is now `size` bytes long: chunks past it are dropped, and the bytes at or
    /// past it in its last chunk read as zeroes.
    pub(crate) fn cut(&self, ino: u64, size: u64) {
        let mut cl = self.clean();
        let first = size.div_ceil(CHUNK);
        let gone: Vec<u64> = cl
            .files
            .get(&ino)
            .map(|f| f.keys().copied().filter(|&c| c >= first).collect())
            .unwrap_or_default();
        let gone: Vec<IoBuf> = gone.into_iter().filter_map(|c| cl.remove(ino, c)).collect();
        if size % CHUNK != 0 {
            if let Some(ch) = cl
                .files
                .get_mut(&ino)
                .and_then(|f| f.get_mut(&(size / CHUNK)))
            {
                ch.data[(size % CHUNK) as usize..].fill(0);
            }
        }
        drop(cl);
        self.retire(gone);
    }

    /// Drops every chunk of `ino` (its blob is deleted); their buffers become spare frames.
    pub(crate) fn drop_file(&self, ino: u64) {
        let gone = self.clean().drop_file(ino);
        self.retire(gone);
    }

    /// Drops every clean chunk and spare frame (unmount).
    pub(crate) fn clear_clean(&self) {
        let mut cl = self.clean();
        let mut freed: u64 = cl
            .files
            .values()
            .flat_map(|f| f.values())
            .map(|ch| ch.data.len() as u64)
            .sum();
        *cl = Clean::default();
        drop(cl);
        let spare = std::mem::take(&mut *self.spare());
        freed += spare.len() as u64 * CHUNK;
        drop(spare);
        self.release(freed);
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<OpenInode>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists `inode` as holding a write-behind buffer (idempotent).
    pub(crate) fn register(&self, inode: &Arc<OpenInode>) {
        self.files()
            .entry(inode.ino())
            .or_insert_with(|| Arc::downgrade(inode));
    }

    pub(crate) fn unregister(&self, ino: u64) {
        self.files().remove(&ino);
    }

    /// Frees memory until `want` more bytes fit under the bound: the mount's clean chunks not
    /// used lately first (any file's, open or closed), then (with `flush_dirty`) the
    /// write-behind buffers of files other than `me`, largest first and only if their locks
    /// are free right now.
    pub(crate) fn reclaim(&self, fs: &crate::fs::FsInner, me: u64, want: u64, flush_dirty: bool) {
        let fits = |c: &Cache| c.used() + want <= c.limit;
        if fits(self) {
            return;
        }
        self.evict_clean(want);
        if fits(self) || !flush_dirty {
            return;
        }
        let mut victims: Vec<Arc<OpenInode>> = self
            .files()
            .iter()
            .filter(|(&ino, _)| ino != me)
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        victims.sort_by_key(|v| std::cmp::Reverse(v.cached_bytes()));
        for v in &victims {
            if fits(self) {
                return;
            }
            v.try_flush(fs);
        }
    }
}

/// What [`crate::BlobFs::cache_stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// The bound ([`crate::MountOptions::cache_bytes`]); 0 when the cache is off.
    pub limit_bytes: u64,
    /// Bytes held now: write-behind buffer capacity, clean chunks and spare frames.
    pub used_bytes: u64,
    /// Of `used_bytes`, the spare frames: memory of dropped chunks (a deleted or truncated
    /// file's) kept for the next chunks, at most a sixteenth of the bound (256 MiB at
    /// most), and the first memory given up when room is needed.
    pub spare_bytes: u64,
}

impl crate::BlobFs {
    /// The data cache's bound and current use. Eviction only takes locks that are free, so
    /// with concurrent I/O `used_bytes` may exceed the bound by what busy files hold; from
    /// one thread it stays within it.
    pub fn cache_stats(&self) -> CacheStats {
        let c = &self.inner.cache;
        let spare_bytes = c.spare().len() as u64 * CHUNK;
        CacheStats {
            limit_bytes: c.limit,
            used_bytes: c.used(),
            spare_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(byte: u8) -> IoBuf {
        IoBuf::filled(CHUNK as usize, byte)
    }

    fn cached(c: &Cache, ino: u64, idx: u64) -> Option<u8> {
        let mut buf = [0u8; 1];
        let base = idx * CHUNK;
        let missed = c.copy_out(ino, idx, idx, base, base + 1, &mut buf);
        missed.is_empty().then_some(buf[0])
    }

    #[test]
    fn clock_gives_a_hit_chunk_a_second_chance_and_keeps_the_bound() {
        let c = Cache::new(3 * CHUNK);
        c.insert(7, vec![(0, chunk(10)), (1, chunk(11)), (2, chunk(12))]);
        assert_eq!(c.used(), 3 * CHUNK);
        // A hit on chunk 0 sets its reference bit.
        assert_eq!(cached(&c, 7, 0), Some(10));
        // The hand passes chunk 0 (clearing its bit) and takes chunk 1.
        c.insert(7, vec![(3, chunk(13))]);
        assert_eq!(c.used(), 3 * CHUNK);
        assert!(!c.contains(7, 1));
        assert!(c.contains(7, 0) && c.contains(7, 2) && c.contains(7, 3));
        // Next, chunk 2 (not referenced) goes; 3 sits in the slot just freed, behind the hand.
        c.insert(8, vec![(0, chunk(20))]);
        assert!(!c.contains(7, 2));
        assert_eq!(cached(&c, 7, 0), Some(10));
        assert_eq!(cached(&c, 7, 3), Some(13));
        assert_eq!(cached(&c, 8, 0), Some(20));
        assert_eq!(c.used(), 3 * CHUNK);
    }

    /// Dropping most chunks compacts the ring: it shrinks to the chunks left, which keep
    /// their bytes and reference bits, and eviction still finds each of them.
    #[test]
    fn a_mostly_free_ring_is_compacted() {
        let small = CHUNK / 16; // small buffers: the bound counts bytes, not chunks
        let c = Cache::new(4096 * small);
        let buf = |b: u8| IoBuf::filled(small as usize, b);
        c.insert(1, (0..4000).map(|i| (i, buf(1))).collect());
        c.insert(2, (0..8).map(|i| (i, buf(2 + i as u8))).collect());
        assert_eq!(c.clean().ring.len(), 4008);
        // A hit on chunk 3 of file 2 sets its bit before the compaction.
        let mut one = [0u8; 1];
        assert!(c
            .copy_out(2, 3, 3, 3 * CHUNK, 3 * CHUNK + 1, &mut one)
            .is_empty());
        c.drop_file(1);
        {
            let cl = c.clean();
            assert_eq!(cl.ring.len(), 8, "the ring was not compacted");
            assert!(cl.free.is_empty());
            for (i, s) in cl.ring.iter().enumerate() {
                let ch = &cl.files[&s.ino][&s.c];
                assert_eq!(ch.slot as usize, i);
                assert_eq!(s.referenced.load(Ordering::Relaxed), s.c == 3, "{}", s.c);
            }
        }
        assert_eq!(c.used(), 8 * small);
        for i in 0..8u64 {
            let mut b = [0u8; 1];
            assert!(c
                .copy_out(2, i, i, i * CHUNK, i * CHUNK + 1, &mut b)
                .is_empty());
            assert_eq!(b[0], 2 + i as u8);
        }
        let mut cl = c.clean();
        let mut freed = 0;
        while cl.evict_one() > 0 {
            freed += small;
        }
        assert_eq!(freed, 8 * small);
    }

    #[test]
    fn removals_free_slots_and_accounting_follows() {
        let c = Cache::new(8 * CHUNK);
        c.insert(1, (0..4).map(|i| (i, chunk(i as u8))).collect());
        c.insert(2, (0..4).map(|i| (i, chunk(100 + i as u8))).collect());
        assert_eq!(c.used(), 8 * CHUNK);
        c.drop_file(1);
        assert_eq!(c.used(), 4 * CHUNK);
        c.forget(2, CHUNK, 1);
        assert_eq!(c.used(), 3 * CHUNK);
        assert!(!c.contains(2, 1));
        c.cut(2, 2 * CHUNK + 5);
        assert_eq!(c.used(), 2 * CHUNK);
        assert!(c.contains(2, 2) && !c.contains(2, 3));
        // Freed slots are reused: five more chunks fit with nothing evicted.
        c.insert(3, (0..6).map(|i| (i, chunk(200 + i as u8))).collect());
        assert_eq!(c.used(), 8 * CHUNK);
        for i in 0..6 {
            assert_eq!(cached(&c, 3, i), Some(200 + i as u8));
        }
        assert_eq!(cached(&c, 2, 0), Some(100));
        assert_eq!(cached(&c, 2, 2), Some(102));
        // Every chunk evictable: the ring empties completely.
        let mut cl = c.clean();
        let mut freed = 0;
        loop {
            let f = cl.evict_one();
            if f == 0 {
                break;
            }
            freed += f;
        }
        assert_eq!(freed, 8 * CHUNK);
        assert!(cl.files.is_empty());
    }

    /// Chunks dropped because their bytes went away become spare frames, up to a
    /// sixteenth of the bound, still counted; a new chunk takes one (the same memory,
    /// emptied); room needed for data sheds spares before any chunk is evicted.
    #[test]
    fn dropped_chunks_become_spare_frames_inside_the_bound() {
        let c = Cache::new(64 * CHUNK); // at most 4 spare frames
        c.insert(1, (0..8).map(|i| (i, chunk(i as u8 + 1))).collect());
        let ptrs: Vec<usize> = {
            let cl = c.clean();
            cl.files[&1]
                .values()
                .map(|ch| ch.data.as_ptr() as usize)
                .collect()
        };
        c.drop_file(1);
        assert_eq!(c.spares(), 4);
        assert_eq!(c.used(), 4 * CHUNK, "spares are counted, the rest freed");
        // A new chunk's buffer is a spare frame, empty, and no longer counted.
        let f = c.frame();
        assert!(f.is_empty());
        assert!(
            ptrs.contains(&(f.as_ptr() as usize)),
            "not a recycled frame"
        );
        assert_eq!((c.spares(), c.used()), (3, 3 * CHUNK));
        drop(f);
        // forget and cut retire their chunks the same way.
        c.insert(2, (0..4).map(|i| (i, chunk(50 + i as u8))).collect());
        c.forget(2, 0, 1);
        c.cut(2, 3 * CHUNK);
        assert_eq!(
            c.spares(),
            4,
            "one more from forget (the fourth from cut is freed)"
        );
        assert_eq!(c.used(), 2 * CHUNK + 4 * CHUNK);
        assert_eq!((cached(&c, 2, 1), cached(&c, 2, 2)), (Some(51), Some(52)));
        // Fill to the bound: spares go first, every chunk stays.
        c.insert(3, (0..62).map(|i| (i, chunk(100))).collect());
        assert_eq!((c.spares(), c.used()), (0, 64 * CHUNK));
        assert_eq!((cached(&c, 2, 1), cached(&c, 2, 2)), (Some(51), Some(52)));
        assert_eq!(cached(&c, 3, 61), Some(100));
        // insert_if_room sheds spares too, and refuses once none are left.
        c.forget(3, 0, 2 * CHUNK);
        assert_eq!((c.spares(), c.used()), (2, 64 * CHUNK));
        assert!(c.insert_if_room(4, 0, chunk(8)));
        assert!(c.insert_if_room(4, 1, chunk(9)));
        assert_eq!((c.spares(), c.used()), (0, 64 * CHUNK));
        assert!(!c.insert_if_room(4, 2, chunk(9)));
        assert_eq!((cached(&c, 4, 0), cached(&c, 4, 1)), (Some(8), Some(9)));
        assert_eq!(cached(&c, 3, 61), Some(100));
        // Unmount drops all of it.
        c.forget(4, 0, 2 * CHUNK);
        assert_eq!(c.spares(), 2);
        c.clear_clean();
        assert_eq!((c.spares(), c.used()), (0, 0));
    }

    /// A small bound keeps no spare frames at all (a sixteenth of it is under a chunk).
    #[test]
    fn a_small_bound_keeps_no_spares() {
        let c = Cache::new(8 * CHUNK);
        c.insert(1, (0..8).map(|i| (i, chunk(1))).collect());
        c.drop_file(1);
        assert_eq!((c.spares(), c.used()), (0, 0));
    }
}

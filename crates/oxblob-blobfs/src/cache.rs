//! The data cache of a mount: write-behind buffers, read-ahead and a small clean-chunk cache,
//! all under one memory bound ([`crate::MountOptions::cache_bytes`]).
//!
//! Per open inode (in `file.rs`, under the inode's own locks):
//! - **Write-behind** ([`Wb`]): one contiguous dirty extent, at most [`Cache::wb_max`] bytes,
//!   kept under the inode's data lock. Small writes inside or right after it are copied into
//!   it; anything else (a write elsewhere, a full buffer, a read is *not* a reason: reads
//!   overlay it) flushes it first. Flushing is one `write_clusters` of the whole extent, so
//!   the read-modify-write of unaligned edges happens once per flush, not once per write.
//! - **Clean chunks** ([`ReadState`]): [`CHUNK`]-sized, chunk-aligned copies of what the
//!   device holds for the file (bytes at or past the device size are zero), in a per-inode
//!   LRU behind a mutex that is never held across I/O. Filled by read-ahead, by
//!   [`crate::FileHandle::readahead`] hints, and by random-read misses: at once while the
//!   cache has room, and under memory pressure only on a second miss of the same chunk (a
//!   small ghost list), so one-off random reads then go straight to the device and do not
//!   evict. Flushes patch the chunks they overlap, and keep the chunks they wrote whole
//!   (write-through, as a page cache keeps what was just written): chunk-aligned 64 KiB
//!   pieces of the written range, and its last piece when it ends the file (zeroes after),
//!   while the cache has room — never evicting anything for them, and not when the flush
//!   itself is reclaiming memory. Truncate zeroes or drops the chunks past the new size.
//! - **Read-ahead**: a read that starts where the previous one ended is sequential; the
//!   window starts at [`RA_MIN`] and doubles to [`RA_MAX`]. A sequential read that misses
//!   fetches the whole window from the first missing chunk, every contiguous run submitted
//!   at once on one [`oxblob_blobstore::BsChannel`] and reaped together.
//!
//! Global: [`Cache`] counts the bytes held (buffer capacities and chunks) in an atomic.
//! Going over the bound reclaims from other files first — clean chunks, then (for writers)
//! dirty buffers, each victim only if its lock is free right now (`try_lock`), so eviction
//! never waits on another file's I/O — and then from the caller's own file. The registry of
//! files holding cache memory is a map behind a mutex taken only to list victims.

use crate::file::OpenInode;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

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

/// One cached chunk.
struct Chunk {
    data: Box<[u8]>,
    used: u64,
}

/// A file's clean chunks and read-ahead state (behind the inode's read-state mutex).
#[derive(Default)]
pub(crate) struct ReadState {
    chunks: HashMap<u64, Chunk>,
    ghosts: VecDeque<u64>,
    /// Where the next sequential read starts.
    pub(crate) next: u64,
    /// Current read-ahead window (0: not sequential).
    pub(crate) window: u64,
}

impl ReadState {
    /// Copies the cached part of chunk `c` overlapping `[from, to)` into `dst` (which holds
    /// `[from, to)`); false if the chunk is not cached.
    pub(crate) fn copy_out(
        &mut self,
        c: u64,
        tick: u64,
        from: u64,
        to: u64,
        dst: &mut [u8],
    ) -> bool {
        let Some(ch) = self.chunks.get_mut(&c) else {
            return false;
        };
        ch.used = tick;
        let base = c * CHUNK;
        let (s, e) = (from.max(base), to.min(base + CHUNK));
        if s < e {
            dst[(s - from) as usize..(e - from) as usize]
                .copy_from_slice(&ch.data[(s - base) as usize..(e - base) as usize]);
        }
        true
    }

    pub(crate) fn contains(&self, c: u64) -> bool {
        self.chunks.contains_key(&c)
    }

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

    /// Inserts chunk `c` if the bound allows (evicting this file's least recently used
    /// chunks first). Returns (bytes charged, bytes released by eviction).
    pub(crate) fn insert(&mut self, cache: &Cache, c: u64, data: Box<[u8]>) -> (u64, u64) {
        if self.chunks.contains_key(&c) {
            return (0, 0);
        }
        let n = data.len() as u64;
        let mut freed = 0;
        while cache.used() + n > cache.limit {
            let f = self.evict_oldest(cache);
            if f == 0 {
                return (0, freed);
            }
            freed += f;
        }
        cache.charge(n);
        self.chunks.insert(
            c,
            Chunk {
                data,
                used: cache.tick(),
            },
        );
        (n, freed)
    }

    /// Inserts chunk `c` only if it fits under the bound as things are (no eviction: used
    /// for data just written, which must not push out what readers cached). Returns the
    /// bytes charged.
    pub(crate) fn insert_if_room(&mut self, cache: &Cache, c: u64, data: Box<[u8]>) -> u64 {
        let n = data.len() as u64;
        if self.chunks.contains_key(&c) || cache.used() + n > cache.limit {
            return 0;
        }
        cache.charge(n);
        self.chunks.insert(
            c,
            Chunk {
                data,
                used: cache.tick(),
            },
        );
        n
    }

    /// Drops the least recently used chunk; returns the bytes released.
    pub(crate) fn evict_oldest(&mut self, cache: &Cache) -> u64 {
        let Some((&c, _)) = self.chunks.iter().min_by_key(|(_, ch)| ch.used) else {
            return 0;
        };
        self.chunks.remove(&c).map_or(0, |ch| {
            let n = ch.data.len() as u64;
            cache.release(n);
            n
        })
    }

    /// Copies `data` (the new device bytes of `[off, off + len)`) into the cached chunks it
    /// overlaps.
    pub(crate) fn patch(&mut self, off: u64, data: &[u8]) {
        if self.chunks.is_empty() || data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        for c in off / CHUNK..=(end - 1) / CHUNK {
            if let Some(ch) = self.chunks.get_mut(&c) {
                let base = c * CHUNK;
                let (s, e) = (off.max(base), end.min(base + CHUNK));
                ch.data[(s - base) as usize..(e - base) as usize]
                    .copy_from_slice(&data[(s - off) as usize..(e - off) as usize]);
            }
        }
    }

    /// The file is now `size` bytes long: bytes at or past it read as zeroes. Returns bytes
    /// released.
    pub(crate) fn cut(&mut self, cache: &Cache, size: u64) -> u64 {
        let first = size.div_ceil(CHUNK);
        let gone: Vec<u64> = self
            .chunks
            .keys()
            .copied()
            .filter(|&c| c >= first)
            .collect();
        let mut freed = 0;
        for c in gone {
            if let Some(ch) = self.chunks.remove(&c) {
                freed += ch.data.len() as u64;
            }
        }
        if size % CHUNK != 0 {
            if let Some(ch) = self.chunks.get_mut(&(size / CHUNK)) {
                ch.data[(size % CHUNK) as usize..].fill(0);
            }
        }
        cache.release(freed);
        freed
    }

    /// Drops every chunk; returns bytes released.
    pub(crate) fn clear(&mut self, cache: &Cache) -> u64 {
        let freed: u64 = self.chunks.values().map(|c| c.data.len() as u64).sum();
        self.chunks.clear();
        self.ghosts.clear();
        cache.release(freed);
        freed
    }
}

/// The mount-wide cache accounting and the registry of files holding cache memory.
pub(crate) struct Cache {
    /// The bound in bytes; 0 disables the cache (every read and write goes to the device).
    pub(crate) limit: u64,
    used: AtomicU64,
    clock: AtomicU64,
    files: Mutex<HashMap<u64, Weak<OpenInode>>>,
}

impl Cache {
    pub(crate) fn new(limit: u64) -> Self {
        Cache {
            limit,
            used: AtomicU64::new(0),
            clock: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
        }
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

    /// A logical clock for LRU stamps.
    pub(crate) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<OpenInode>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists `inode` as holding cache memory (idempotent).
    pub(crate) fn register(&self, inode: &Arc<OpenInode>) {
        self.files()
            .entry(inode.ino())
            .or_insert_with(|| Arc::downgrade(inode));
    }

    pub(crate) fn unregister(&self, ino: u64) {
        self.files().remove(&ino);
    }

    /// Frees memory held by files other than `me` until `want` more bytes fit under the
    /// bound: clean chunks first, then (with `flush_dirty`) write-behind buffers. Victims are
    /// taken largest first and only if their locks are free right now.
    pub(crate) fn reclaim(&self, fs: &crate::fs::FsInner, me: u64, want: u64, flush_dirty: bool) {
        let fits = |c: &Cache| c.used() + want <= c.limit;
        if fits(self) {
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
            while !fits(self) {
                if v.try_evict_clean(self) == 0 {
                    break;
                }
            }
            if fits(self) {
                return;
            }
        }
        if flush_dirty {
            for v in &victims {
                if fits(self) {
                    return;
                }
                v.try_flush(fs);
            }
        }
    }
}

/// What [`crate::BlobFs::cache_stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// The bound ([`crate::MountOptions::cache_bytes`]); 0 when the cache is off.
    pub limit_bytes: u64,
    /// Bytes held now: write-behind buffer capacity plus clean chunks.
    pub used_bytes: u64,
}

impl crate::BlobFs {
    /// The data cache's bound and current use. Eviction only takes locks that are free, so
    /// with concurrent I/O `used_bytes` may exceed the bound by what busy files hold; from
    /// one thread it stays within it.
    pub fn cache_stats(&self) -> CacheStats {
        let c = &self.inner.cache;
        CacheStats {
            limit_bytes: c.limit,
            used_bytes: c.used(),
        }
    }
}

//! The in-memory namespace ([`Ns`]): every inode's record, every directory's children, the
//! open files. Built at mount ([`Ns::build`]), changed by each namespace operation under the
//! namespace lock, never on disk.
//!
//! An inode's 64-byte record ([`Inode`]) lives **inside its parent directory's hash table**
//! ([`Dir`]), in the bucket its name hashes to. A table is two parallel arrays: one control
//! byte per bucket (empty, or 8 bits of the name's hash) and the 64-byte, cache-line-aligned
//! records. A lookup probes the control bytes (1 byte an entry: the control bytes of a
//! million-entry directory are 2 MiB, and stay in the CPU caches when nothing else does) and
//! reads a record only where its byte matches; that record holds the entry name (short names
//! inline), so comparing the name and stating the entry read one cache line. With a million
//! files a random `stat` thus costs about one cache miss, where a separate table of entries
//! pointing into a slab of inodes cost two (the entry, then the slot).
//!
//! Records are read at random, so their memory is advised for transparent huge pages: with
//! 4 KiB pages nearly every such read would also miss the TLB (a page walk, dear in a virtual
//! machine). A large table has buffers of its own; small tables (up to 16,384 buckets) are
//! blocks of a shared [`Pool`], one pair of arrays per power-of-two size class, so a thousand
//! directories of a thousand files are one 128 MiB array rather than a thousand allocations.
//!
//! Records move: when a table grows or shrinks, when a delete shifts the rest of a probe run
//! back (linear probing, no tombstones), when a rename moves an entry to another directory.
//! So nothing refers to a record by its position for longer than one lock hold:
//! - a position ([`Pos`]) is valid until the namespace next changes;
//! - the stable handles are the inode number (mapped to the record's current position in
//!   `by_ino`, updated on every move) and, for a directory, its index in `Ns::dirs`
//!   ([`DirId`]), which a directory keeps for life. A record names its own directory by
//!   `DirId`; its parent is the table it sits in; a directory knows its own inode number, so
//!   walking up (paths of inodes, rename's cycle check) goes `DirId` → inode → position →
//!   parent `DirId`.
//!
//! The root and files unlinked while open (orphans) are in no directory: their records are in
//! a small side array (`detached`).

use crate::error::{FsError, FsErrorKind, Result};
use crate::fs::{DirEntry, FileType, Loc, OpenEntry};
use crate::order::DirOrder;
use crate::path::check_name;
use compact_str::CompactString;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;

/// A directory's index in [`Ns`]'s `dirs`: stable while the directory exists (indices of
/// removed directories are reused).
pub(crate) type DirId = u32;
/// No directory: the `dir` of a file's record, the table of a detached record.
const NO_DIR: DirId = DirId::MAX;
/// Most inodes a namespace holds (every table index fits a `u32`).
const MAX_INODES: usize = 1 << 31;
/// Longest name kept inline in a record; longer names live in [`Ns`]'s `long_names`.
const INLINE_NAME: usize = 15;
/// `len` of a [`SlotName`] whose name is longer than [`INLINE_NAME`].
const LONG_NAME: u8 = u8::MAX;

/// Where an inode's record is now: bucket `i` of directory `dir`'s table, or, with
/// `dir == NO_DIR`, entry `i` of the detached records (the root, orphans). Valid until the
/// namespace next changes (see the module documentation); the stable handle is the inode
/// number ([`Ns::pos_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    dir: DirId,
    i: u32,
}

/// An entry name inside a record (16 bytes): the name itself if it has at most
/// [`INLINE_NAME`] bytes, so comparing it during a lookup reads no other cache line; else a
/// marker, and the name is in [`Ns`]'s `long_names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotName {
    len: u8,
    bytes: [u8; INLINE_NAME],
}

impl SlotName {
    const EMPTY: SlotName = SlotName {
        len: 0,
        bytes: [0; INLINE_NAME],
    };

    /// `name` inline, or the long-name marker.
    fn new(name: &str) -> SlotName {
        let mut bytes = [0; INLINE_NAME];
        match bytes.get_mut(..name.len()) {
            Some(b) => {
                b.copy_from_slice(name.as_bytes());
                SlotName {
                    len: name.len() as u8,
                    bytes,
                }
            }
            None => SlotName {
                len: LONG_NAME,
                bytes,
            },
        }
    }

    fn is_long(&self) -> bool {
        self.len == LONG_NAME
    }

    /// The inline name (empty for a long one).
    fn inline(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// An inode as the namespace knows it: one 64-byte, cache-line-aligned record in its parent
/// directory's table, holding everything `stat` reports and the entry name a lookup compares,
/// so resolving the last component of a path and stating it touches this one line (for an
/// open file, size, times and allocation are the open inode's; these are refreshed at its
/// last close).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
pub(crate) struct Inode {
    /// Inode number (blob id); 0 in an empty bucket.
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime: u64,
    pub(crate) ctime: u64,
    /// Allocated clusters of a closed file (from its blob record at mount, refreshed at its
    /// last close: only an open file changes its clusters), so `stat` never opens a blob.
    pub(crate) alloc_clusters: u64,
    /// The directory's own entries in `Ns::dirs`; [`NO_DIR`] for a file.
    dir: DirId,
    /// 32 bits of the name's keyed hash: the record's home bucket and control byte come from
    /// it alone, so a table grows, shrinks and shifts without reading a name.
    hash: u32,
    /// The entry name in the parent (empty for the root and orphans).
    name: SlotName,
}

const _: () = assert!(std::mem::size_of::<Inode>() == 64);

/// The record of an empty bucket.
const NO_INODE: Inode = Inode {
    ino: 0,
    size: 0,
    mtime: 0,
    ctime: 0,
    alloc_clusters: 0,
    dir: NO_DIR,
    hash: 0,
    name: SlotName::EMPTY,
};

impl Inode {
    pub(crate) fn kind(&self) -> FileType {
        if self.dir == NO_DIR {
            FileType::File
        } else {
            FileType::Dir
        }
    }
}

/// The control byte of an empty bucket.
const EMPTY: u8 = 0;

/// The control byte of a full bucket whose record's name hash is `hash`: 1..=255 from the low
/// 8 bits (the home bucket comes from the high ones; 0 counts as 1), so a probe reads a record
/// whose name differs about once in 255 control bytes compared.
fn ctrl_of(hash: u32) -> u8 {
    let b = hash as u8;
    b + u8::from(b == EMPTY)
}

/// Smallest non-empty directory table.
const MIN_TABLE: usize = 8;
/// Size classes of the shared [`Pool`]: tables of `MIN_TABLE << k` buckets for `k` below
/// this, up to 16,384 buckets (1 MiB of records). Larger tables have buffers of their own.
const POOL_CLASSES: usize = 12;

/// Bytes of a transparent huge page (x86-64, aarch64 with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// `n` copies of `v`; a large buffer is advised for transparent huge pages before it is first
/// touched (records of a big directory are read at random: with 4 KiB pages nearly every read
/// would also miss the TLB).
fn big_vec<T: Clone>(n: usize, v: T) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n);
    advise_huge(out.as_ptr() as usize, n * std::mem::size_of::<T>());
    out.resize(n, v);
    out
}

/// Moves `vec` to a new buffer of `cap` elements, advised for huge pages before anything is
/// copied into it (`Vec`'s own growth could not be advised before the copy touches it).
fn rebuffer<T: Copy>(vec: &mut Vec<T>, cap: usize) {
    let mut new: Vec<T> = Vec::with_capacity(cap.max(vec.len()));
    advise_huge(
        new.as_ptr() as usize,
        new.capacity() * std::mem::size_of::<T>(),
    );
    new.extend_from_slice(vec);
    *vec = new;
}

/// Appends `n` copies of `v` to `vec`; when its buffer is full, the new one has twice the
/// room.
fn grow<T: Copy>(vec: &mut Vec<T>, n: usize, v: T) {
    if vec.capacity() - vec.len() < n {
        rebuffer(vec, (vec.len() + n).max(vec.capacity() * 2));
    }
    vec.resize(vec.len() + n, v);
}

/// Halves the buffer of `vec` once at most a quarter of it is used (a new buffer, advised for
/// huge pages, as in [`grow`]).
fn shrink<T: Copy>(vec: &mut Vec<T>) {
    if vec.len() * 4 <= vec.capacity() {
        rebuffer(vec, vec.len() * 2);
    }
}

/// Smallest buffer advised for huge pages. The advice sticks to the address range, not to
/// the buffer: on memory the allocator carved from its heap it outlives the buffer, and the
/// heap then faults in (and clears) 2 MiB pages for small allocations as it is trimmed and
/// regrown — that cost creating a million files in one directory about 15% of its rate.
/// glibc maps every request of 32 MiB or more on its own (its mmap threshold never rises
/// above that) and unmaps it on free, so the advice dies with the buffer. Smaller tables
/// (under half a million entries) stay on 4 KiB pages.
const HUGE_ADVICE_MIN: usize = 32 << 20;

/// `madvise(MADV_HUGEPAGE)` on the whole 2 MiB pages inside `[addr, addr + len)` when the
/// buffer is at least [`HUGE_ADVICE_MIN`] bytes. Advice only: it never changes the memory's
/// contents, and a failure (no THP support) changes nothing.
#[allow(unsafe_code)]
fn advise_huge(addr: usize, len: usize) {
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = (addr + len) / HUGE_PAGE * HUGE_PAGE;
    if len >= HUGE_ADVICE_MIN && end > start {
        // SAFETY: the range lies inside one live allocation of ours; MADV_HUGEPAGE only
        // changes how the kernel backs it, never what it holds.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// Puts `x` in the slot of `v` that `free` gives back, or at the end: its index, and what
/// the reused slot held.
fn reuse_or_push<T>(v: &mut Vec<T>, free: &mut Vec<u32>, x: T) -> (u32, Option<T>) {
    match free.pop() {
        Some(i) => (i, Some(std::mem::replace(&mut v[i as usize], x))),
        None => {
            v.push(x);
            ((v.len() - 1) as u32, None)
        }
    }
}

/// The home bucket of `hash` in a table of `cap` buckets (a power of two): its top bits.
fn home(cap: usize, hash: u32) -> usize {
    let bits = cap.trailing_zeros();
    (u64::from(hash) >> (32 - bits)) as usize
}

/// The bucket of the entry with `hash` whose record `is_name` accepts, in the table
/// `(ctrl, recs)`.
fn table_find<'a>(
    ctrl: &[u8],
    recs: &'a [Inode],
    hash: u32,
    is_name: impl Fn(&Inode) -> bool,
) -> Option<(u32, &'a Inode)> {
    if ctrl.is_empty() {
        return None;
    }
    let c = ctrl_of(hash);
    let mask = ctrl.len() - 1;
    let mut i = home(ctrl.len(), hash);
    loop {
        let b = ctrl[i];
        if b == EMPTY {
            return None;
        }
        if b == c {
            let r = &recs[i];
            if r.hash == hash && is_name(r) {
                return Some((i as u32, r));
            }
        }
        i = (i + 1) & mask;
    }
}

/// Puts `r` in the first empty bucket of its probe run (the table has room); returns it.
fn table_put(ctrl: &mut [u8], recs: &mut [Inode], r: Inode) -> u32 {
    let mask = ctrl.len() - 1;
    let mut i = home(ctrl.len(), r.hash);
    while ctrl[i] != EMPTY {
        i = (i + 1) & mask;
    }
    ctrl[i] = ctrl_of(r.hash);
    recs[i] = r;
    i as u32
}

/// Takes the record out of full bucket `i`, then shifts later entries of its probe run back
/// into the hole unless their home lies cyclically in (hole, entry] (no tombstones).
fn table_take(
    ctrl: &mut [u8],
    recs: &mut [Inode],
    i: u32,
    moved: &mut impl FnMut(u64, u32),
) -> Inode {
    let mask = ctrl.len() - 1;
    let mut i = i as usize & mask;
    let out = std::mem::replace(&mut recs[i], NO_INODE);
    let mut j = i;
    loop {
        j = (j + 1) & mask;
        if ctrl[j] == EMPTY {
            break;
        }
        let k = home(ctrl.len(), recs[j].hash);
        let stays = if i <= j {
            i < k && k <= j
        } else {
            i < k || k <= j
        };
        if !stays {
            ctrl[i] = ctrl[j];
            recs[i] = std::mem::replace(&mut recs[j], NO_INODE);
            moved(recs[i].ino, i as u32);
            i = j;
        }
    }
    ctrl[i] = EMPTY;
    out
}

/// Where a directory table's buckets are: `cap` buckets (0 or a power of two) from bucket `at`
/// of the namespace's [`Pool`] arrays `arr`.
#[derive(Debug, Default, Clone, Copy)]
struct Store {
    arr: u32,
    at: usize,
    cap: usize,
}

/// One control array and one record array: the blocks of one size class of the [`Pool`], or
/// the buckets of one table too large to pool.
#[derive(Debug, Default)]
struct Arrays {
    ctrl: Vec<u8>,
    recs: Vec<Inode>,
    /// Free blocks (of a size class), lowest first taken.
    free: BTreeSet<u32>,
}

/// The buckets of every directory table, in a few large arrays advised for huge pages. Arrays
/// `k < POOL_CLASSES` hold the tables of `MIN_TABLE << k` buckets (up to 16,384), back to
/// back: with a thousand directories of a thousand files, the records are 128 MiB in a
/// thousand tables, and as separate allocations they would sit on 4 KiB pages, where nearly
/// every random lookup would miss the TLB (a page walk, dear in a virtual machine) as well as
/// the cache. A table takes the lowest free block of its size; free blocks at the end of a
/// size class's arrays are given back (so is the memory once the arrays are at most a quarter
/// used). Each larger table has arrays of its own.
#[derive(Debug)]
struct Pool {
    arrays: Vec<Arrays>,
    /// Free entries of `arrays` (past the size classes).
    free: Vec<u32>,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            arrays: (0..POOL_CLASSES).map(|_| Arrays::default()).collect(),
            free: Vec::new(),
        }
    }
}

impl Pool {
    /// Buckets for a table of `cap` buckets (a power of two, at least [`MIN_TABLE`]), all
    /// empty.
    fn alloc(&mut self, cap: usize) -> Store {
        let k = (cap.trailing_zeros() - MIN_TABLE.trailing_zeros()) as usize;
        if let Some(a) = self.arrays.get_mut(k).filter(|_| k < POOL_CLASSES) {
            let at = match a.free.pop_first() {
                Some(b) => {
                    let at = b as usize * cap;
                    a.ctrl[at..at + cap].fill(EMPTY);
                    at
                }
                None => {
                    let at = a.ctrl.len();
                    grow(&mut a.ctrl, cap, EMPTY);
                    grow(&mut a.recs, cap, NO_INODE);
                    at
                }
            };
            return Store {
                arr: k as u32,
                at,
                cap,
            };
        }
        let a = Arrays {
            ctrl: big_vec(cap, EMPTY),
            recs: big_vec(cap, NO_INODE),
            free: BTreeSet::new(),
        };
        let arr = reuse_or_push(&mut self.arrays, &mut self.free, a).0;
        Store { arr, at: 0, cap }
    }

    /// Room for `blocks` more tables of `cap` buckets without moving their size class's
    /// arrays (the bulk build at mount).
    fn reserve(&mut self, cap: usize, blocks: usize) {
        let k = (cap.trailing_zeros() - MIN_TABLE.trailing_zeros()) as usize;
        if let Some(a) = self.arrays.get_mut(k).filter(|_| k < POOL_CLASSES) {
            let want = a.ctrl.len() + blocks * cap;
            if a.ctrl.capacity() < want {
                rebuffer(&mut a.ctrl, want);
            }
            if a.recs.capacity() < want {
                rebuffer(&mut a.recs, want);
            }
        }
    }

    /// Gives a table's buckets back.
    fn free(&mut self, s: Store) {
        if s.cap == 0 {
            return;
        }
        let arr = s.arr as usize;
        let Some(a) = self.arrays.get_mut(arr) else {
            return;
        };
        if arr < POOL_CLASSES {
            a.free.insert((s.at / s.cap) as u32);
            // Give back the free blocks at the end.
            let mut blocks = a.ctrl.len() / s.cap;
            while blocks > 0 && a.free.last() == Some(&(blocks as u32 - 1)) {
                a.free.pop_last();
                blocks -= 1;
            }
            if blocks == 0 {
                *a = Arrays::default();
            } else if blocks * s.cap < a.ctrl.len() {
                a.ctrl.truncate(blocks * s.cap);
                a.recs.truncate(blocks * s.cap);
                shrink(&mut a.ctrl);
                shrink(&mut a.recs);
            }
        } else {
            *a = Arrays::default();
            self.free.push(s.arr);
        }
    }

    /// The control bytes and records of table `s`.
    fn slices(&self, s: Store) -> (&[u8], &[Inode]) {
        match self.arrays.get(s.arr as usize) {
            Some(a) => (&a.ctrl[s.at..s.at + s.cap], &a.recs[s.at..s.at + s.cap]),
            None => (&[], &[]),
        }
    }

    /// [`Pool::slices`], writable.
    fn slices_mut(&mut self, s: Store) -> (&mut [u8], &mut [Inode]) {
        match self.arrays.get_mut(s.arr as usize) {
            Some(a) => (
                &mut a.ctrl[s.at..s.at + s.cap],
                &mut a.recs[s.at..s.at + s.cap],
            ),
            None => (&mut [], &mut []),
        }
    }
}

/// One directory: its children's records in an open-addressing hash table — a control byte
/// and a 64-byte record per bucket, linear probing, at most 3/4 full, deletes by backward
/// shift (no tombstones), buckets in the namespace's [`Pool`] — and the same entries in name
/// order for `readdir` (a stable order and a cursor, no sort per call, no record read per
/// entry).
///
/// Every method that moves records reports each move as `moved(ino, new bucket)`.
#[derive(Debug, Default)]
pub(crate) struct Dir {
    /// The directory's own inode number.
    ino: u64,
    store: Store,
    len: usize,
    /// The entries in name order, for `readdir`. Changes go through `get_mut` (the
    /// namespace is held exclusively); a listing locks it to fold recent changes in while
    /// the namespace is shared.
    order: Mutex<DirOrder>,
}

impl Dir {
    fn new(ino: u64) -> Dir {
        Dir {
            ino,
            ..Dir::default()
        }
    }

    /// The name order, for a change (the namespace is held exclusively).
    fn order_mut(&mut self) -> &mut DirOrder {
        self.order.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries in the directory.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bucket and record of the entry with `hash` whose record `is_name` accepts.
    fn find<'a>(
        &self,
        pool: &'a Pool,
        hash: u32,
        is_name: impl Fn(&Inode) -> bool,
    ) -> Option<(u32, &'a Inode)> {
        let (ctrl, recs) = pool.slices(self.store);
        table_find(ctrl, recs, hash, is_name)
    }

    /// The record in bucket `i`.
    fn rec<'a>(&self, pool: &'a Pool, i: u32) -> &'a Inode {
        let s = self.store;
        &pool.arrays[s.arr as usize].recs[s.at + i as usize]
    }

    fn rec_mut<'a>(&self, pool: &'a mut Pool, i: u32) -> &'a mut Inode {
        let s = self.store;
        &mut pool.arrays[s.arr as usize].recs[s.at + i as usize]
    }

    /// Puts a record in the table (its name is not in the directory); returns its bucket.
    fn insert(&mut self, pool: &mut Pool, r: Inode, moved: &mut impl FnMut(u64, u32)) -> u32 {
        let cap = self.store.cap;
        if (self.len + 1) * 4 > cap * 3 {
            self.resize(pool, (cap * 2).max(MIN_TABLE), moved);
        }
        let (ctrl, recs) = pool.slices_mut(self.store);
        self.len += 1;
        table_put(ctrl, recs, r)
    }

    /// Takes the record out of bucket `i` (a full one).
    fn remove(&mut self, pool: &mut Pool, i: u32, moved: &mut impl FnMut(u64, u32)) -> Inode {
        let (ctrl, recs) = pool.slices_mut(self.store);
        let out = table_take(ctrl, recs, i, moved);
        self.len -= 1;
        // Give memory back after mass deletes once an eighth is used (O(n) every O(n)
        // removals: amortized O(1)).
        let cap = self.store.cap;
        if cap > 64 && self.len * 8 < cap {
            self.resize(
                pool,
                (self.len * 2).next_power_of_two().max(MIN_TABLE),
                moved,
            );
        }
        out
    }

    /// Rebuilds the table with `cap` buckets (a power of two above the entry count) from the
    /// hashes alone.
    fn resize(&mut self, pool: &mut Pool, cap: usize, moved: &mut impl FnMut(u64, u32)) {
        let old = self.store;
        // The old buckets: a large table's arrays are taken whole, a block is copied (at most
        // 1 MiB); then they are freed before the new ones are taken.
        let taken = if old.arr as usize >= POOL_CLASSES {
            pool.arrays
                .get_mut(old.arr as usize)
                .map(std::mem::take)
                .unwrap_or_default()
        } else {
            let (ctrl, recs) = pool.slices(old);
            Arrays {
                ctrl: ctrl.to_vec(),
                recs: recs.to_vec(),
                free: BTreeSet::new(),
            }
        };
        pool.free(old);
        self.store = pool.alloc(cap);
        let (ctrl, recs) = pool.slices_mut(self.store);
        for (&c, r) in taken.ctrl.iter().zip(&taken.recs) {
            if c != EMPTY {
                moved(r.ino, table_put(ctrl, recs, *r));
            }
        }
    }

    /// Gives the table's buckets back to the pool (the directory is going away).
    fn release(self, pool: &mut Pool) {
        pool.free(self.store);
    }

    /// Up to `limit` entries whose names sort after `after` (from the first with `None`), in
    /// name order.
    pub(crate) fn entries_after(&self, after: Option<&str>, limit: usize) -> Vec<DirEntry> {
        self.order
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries_after(after, limit)
    }
}

/// One inode for [`Ns::build`], decoded from its blob record at mount.
pub(crate) struct NewInode {
    pub(crate) ino: u64,
    pub(crate) kind: FileType,
    /// The parent directory's inode number (ignored for the root).
    pub(crate) parent: u64,
    pub(crate) name: Box<str>,
    pub(crate) size: u64,
    pub(crate) mtime: u64,
    pub(crate) ctime: u64,
    pub(crate) alloc_clusters: u64,
}

/// Slots per page of an [`InoMap`].
const INO_PAGE: usize = 512;
/// An empty slot of an [`InoMap`] (no real position: detached records are numbered from 0,
/// far below `u32::MAX`).
const NO_POS: Pos = Pos {
    dir: NO_DIR,
    i: u32::MAX,
};

/// One page of an [`InoMap`]: the positions of inode numbers `page * INO_PAGE ..` and how
/// many of its slots are set.
struct InoPage {
    slots: [Pos; INO_PAGE],
    used: u32,
}

/// Where each inode's record is, by inode number: a direct table in pages of [`INO_PAGE`]
/// slots, the pages under a B-tree keyed by `ino / INO_PAGE`.
///
/// Inode numbers are blob ids, handed out by a counter and never reused, so they are dense
/// and a page fills up. A lookup is then the B-tree's walk over a few thousand keys at most
/// (its nodes stay in the CPU caches) and one slot of 8 bytes: one cache miss at a million
/// inodes, where a hash map read a control byte and a slot in two arrays (two misses) after
/// hashing the key. It never rehashes as it grows (a hash map of a million entries moves them
/// all when it doubles), a page goes when its last slot is cleared, and an id from a damaged
/// image costs one page, not an array as large as the id.
#[derive(Default)]
struct InoMap {
    pages: BTreeMap<u64, Box<InoPage>>,
    len: usize,
}

impl InoMap {
    fn split(ino: u64) -> (u64, usize) {
        (ino / INO_PAGE as u64, (ino % INO_PAGE as u64) as usize)
    }

    fn get(&self, ino: u64) -> Option<Pos> {
        let (p, i) = Self::split(ino);
        let s = self.pages.get(&p)?.slots[i];
        (s != NO_POS).then_some(s)
    }

    fn insert(&mut self, ino: u64, pos: Pos) {
        debug_assert!(pos != NO_POS);
        let (p, i) = Self::split(ino);
        let page = self.pages.entry(p).or_insert_with(|| {
            Box::new(InoPage {
                slots: [NO_POS; INO_PAGE],
                used: 0,
            })
        });
        let slot = &mut page.slots[i];
        if *slot == NO_POS {
            page.used += 1;
            self.len += 1;
        }
        *slot = pos;
    }

    fn remove(&mut self, ino: u64) -> Option<Pos> {
        let (p, i) = Self::split(ino);
        let page = self.pages.get_mut(&p)?;
        let old = std::mem::replace(&mut page.slots[i], NO_POS);
        if old == NO_POS {
            return None;
        }
        page.used -= 1;
        self.len -= 1;
        if page.used == 0 {
            self.pages.remove(&p);
        }
        Some(old)
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// The namespace: every inode, every directory's children, the open files. See the module
/// documentation for the layout.
pub(crate) struct Ns {
    /// Directories, by [`DirId`].
    dirs: Vec<Dir>,
    /// The buckets of every directory table.
    pool: Pool,
    /// Free indices of `dirs`.
    free_dirs: Vec<DirId>,
    /// Records in no directory: the root and orphans still open.
    detached: Vec<Inode>,
    /// Free indices of `detached`.
    free_detached: Vec<u32>,
    /// Where each inode's record is now.
    by_ino: InoMap,
    /// Names over [`INLINE_NAME`] bytes, by inode number.
    long_names: HashMap<u64, Box<str>>,
    /// Keys the name hash of the directory tables (random per mount).
    hasher: RandomState,
    /// The root's record.
    root: Pos,
    /// The open files, by inode number.
    pub(crate) open: HashMap<u64, OpenEntry>,
}

/// The entry name of record `r` (empty for the root and orphans).
fn rec_name<'a>(long_names: &'a HashMap<u64, Box<str>>, r: &'a Inode) -> &'a str {
    if r.name.is_long() {
        long_names.get(&r.ino).map_or("", |l| l)
    } else {
        // A whole name copied from a `&str`: always UTF-8.
        std::str::from_utf8(r.name.inline()).unwrap_or_default()
    }
}

fn too_many(path: &str) -> FsError {
    FsError::new(
        FsErrorKind::Io,
        path,
        "too many inodes for the in-memory namespace",
    )
}

impl Ns {
    /// The namespace of a mount: the root and every other inode of `inodes` in its parent
    /// directory, every table pre-sized (at most half full), each directory's name order
    /// bulk-built from its sorted entries. Errors (`Corrupt`): no root directory, a parent
    /// that is not a directory, two entries with one name in one directory.
    pub(crate) fn build(root: u64, inodes: Vec<NewInode>) -> Result<Ns> {
        if inodes.len() >= MAX_INODES {
            return Err(too_many("/"));
        }
        let mut ns = Ns {
            dirs: Vec::new(),
            pool: Pool::default(),
            free_dirs: Vec::new(),
            detached: Vec::new(),
            free_detached: Vec::new(),
            by_ino: InoMap::default(),
            long_names: HashMap::new(),
            hasher: RandomState::new(),
            root: Pos { dir: NO_DIR, i: 0 },
            open: HashMap::new(),
        };
        // Every directory gets its `DirId` first, so entries can name their parent's.
        let mut dir_ids: HashMap<u64, DirId> = HashMap::new();
        for f in inodes.iter().filter(|f| f.kind == FileType::Dir) {
            dir_ids.insert(f.ino, ns.dirs.len() as DirId);
            ns.dirs.push(Dir::new(f.ino));
        }
        let own_dir = |ino: u64| dir_ids.get(&ino).copied().unwrap_or(NO_DIR);
        let record = |f: &NewInode, hash: u32, name: SlotName| Inode {
            ino: f.ino,
            size: f.size,
            mtime: f.mtime,
            ctime: f.ctime,
            alloc_clusters: f.alloc_clusters,
            dir: own_dir(f.ino),
            hash,
            name,
        };
        // Every directory's entries, gathered then sorted by name.
        let mut lists: Vec<Vec<(Box<str>, Inode)>> =
            (0..ns.dirs.len()).map(|_| Vec::new()).collect();
        let mut have_root = false;
        for f in inodes {
            if f.ino == root {
                if f.kind != FileType::Dir {
                    return Err(FsError::new(
                        FsErrorKind::Corrupt,
                        "/",
                        "root is not a directory",
                    ));
                }
                ns.root = ns.detach(record(&f, 0, SlotName::EMPTY));
                have_root = true;
                continue;
            }
            let list = dir_ids
                .get(&f.parent)
                .and_then(|&d| lists.get_mut(d as usize));
            let Some(list) = list else {
                return Err(FsError::new(
                    FsErrorKind::Corrupt,
                    "",
                    format!("inode {} names parent {}, not a directory", f.ino, f.parent),
                ));
            };
            let r = record(&f, ns.hash(&f.name), SlotName::new(&f.name));
            list.push((f.name, r));
        }
        if !have_root {
            return Err(FsError::new(
                FsErrorKind::Corrupt,
                "/",
                format!("no root directory (inode {root})"),
            ));
        }
        // At most half full after the bulk build.
        let table_cap = |n: usize| (n * 2).next_power_of_two().max(MIN_TABLE);
        let mut blocks: BTreeMap<usize, usize> = BTreeMap::new();
        for l in lists.iter().filter(|l| !l.is_empty()) {
            *blocks.entry(table_cap(l.len())).or_default() += 1;
        }
        for (cap, n) in blocks {
            ns.pool.reserve(cap, n);
        }
        for (d, mut list) in lists.into_iter().enumerate() {
            list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if let Some(w) = list.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(FsError::new(
                    FsErrorKind::Corrupt,
                    "",
                    format!(
                        "inodes {} and {} both named {:?} in directory {}",
                        w[0].1.ino, w[1].1.ino, w[0].0, ns.dirs[d].ino
                    ),
                ));
            }
            let Ns {
                dirs,
                pool,
                by_ino,
                long_names,
                ..
            } = &mut ns;
            let dir = &mut dirs[d];
            if !list.is_empty() {
                dir.resize(pool, table_cap(list.len()), &mut |_, _| {});
            }
            let mut order = Vec::with_capacity(list.len());
            for (name, r) in list {
                let i = dir.insert(pool, r, &mut |_, _| {});
                by_ino.insert(r.ino, Pos { dir: d as DirId, i });
                order.push((CompactString::from(&*name), r.ino, r.kind()));
                if r.name.is_long() {
                    long_names.insert(r.ino, name);
                }
            }
            dir.order = Mutex::new(DirOrder::build(order));
        }
        Ok(ns)
    }

    /// Inodes (files and directories, the root and orphans still open included).
    pub(crate) fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// The root's record.
    pub(crate) fn root(&self) -> Pos {
        self.root
    }

    /// The root directory.
    pub(crate) fn root_dir(&self) -> DirId {
        self.inode(self.root).dir
    }

    /// The record at `p` (a position from this namespace since its last change).
    pub(crate) fn inode(&self, p: Pos) -> &Inode {
        match self.dirs.get(p.dir as usize) {
            Some(d) => d.rec(&self.pool, p.i),
            None => &self.detached[p.i as usize],
        }
    }

    pub(crate) fn inode_mut(&mut self, p: Pos) -> &mut Inode {
        match self.dirs.get_mut(p.dir as usize) {
            Some(d) => d.rec_mut(&mut self.pool, p.i),
            None => &mut self.detached[p.i as usize],
        }
    }

    /// Where the record of inode number `ino` is now.
    pub(crate) fn pos_of(&self, ino: u64) -> Option<Pos> {
        self.by_ino.get(ino)
    }

    pub(crate) fn kind(&self, p: Pos) -> FileType {
        self.inode(p).kind()
    }

    /// The directory the record at `p` is, if it is one.
    pub(crate) fn dir_id(&self, p: Pos) -> Option<DirId> {
        let d = self.inode(p).dir;
        (d != NO_DIR).then_some(d)
    }

    pub(crate) fn is_dir(&self, p: Pos) -> bool {
        self.inode(p).dir != NO_DIR
    }

    /// The directory holding the record at `p` (`None` for the root and orphans).
    pub(crate) fn parent(&self, p: Pos) -> Option<DirId> {
        (p.dir != NO_DIR).then_some(p.dir)
    }

    /// The inode number of directory `d`.
    pub(crate) fn dir_ino(&self, d: DirId) -> u64 {
        self.dirs.get(d as usize).map_or(0, |d| d.ino)
    }

    /// Where directory `d`'s own record is now.
    pub(crate) fn dir_pos(&self, d: DirId) -> Option<Pos> {
        self.pos_of(self.dir_ino(d))
    }

    /// The entry name of the record at `p` (empty for the root and orphans).
    pub(crate) fn name(&self, p: Pos) -> &str {
        rec_name(&self.long_names, self.inode(p))
    }

    /// Whether record `r` is named `name`.
    fn name_is(&self, r: &Inode, name: &str) -> bool {
        if r.name.is_long() {
            self.long_names.get(&r.ino).is_some_and(|l| **l == *name)
        } else {
            r.name.inline() == name.as_bytes()
        }
    }

    /// The entries of directory `d`.
    pub(crate) fn dir(&self, d: DirId) -> Option<&Dir> {
        self.dirs.get(d as usize)
    }

    /// The entries of the directory at `p` (`None` for a file).
    pub(crate) fn dir_at(&self, p: Pos) -> Option<&Dir> {
        self.dirs.get(self.inode(p).dir as usize)
    }

    /// The directory-table hash of `name`.
    fn hash(&self, name: &str) -> u32 {
        (self.hasher.hash_one(name) >> 32) as u32
    }

    /// The child named `name` of directory `dir`.
    pub(crate) fn child(&self, dir: DirId, name: &str) -> Option<Pos> {
        self.child_rec(dir, name).map(|(p, _)| p)
    }

    /// The child named `name` of directory `dir`, and its record.
    #[inline]
    fn child_rec(&self, dir: DirId, name: &str) -> Option<(Pos, &Inode)> {
        let d = self.dir(dir)?;
        let (i, r) = d.find(&self.pool, self.hash(name), |r| self.name_is(r, name))?;
        Some((Pos { dir, i }, r))
    }

    /// Fails if the namespace has no room for another inode (checked before a transaction
    /// creates one, so [`Ns::add`] cannot fail after it).
    pub(crate) fn room(&self, path: &str) -> Result<()> {
        if self.by_ino.len() + 1 >= MAX_INODES || self.dirs.len() + 1 >= NO_DIR as usize {
            return Err(too_many(path));
        }
        Ok(())
    }

    /// Puts `r` in the detached records.
    fn detach(&mut self, r: Inode) -> Pos {
        let i = reuse_or_push(&mut self.detached, &mut self.free_detached, r).0;
        let p = Pos { dir: NO_DIR, i };
        self.by_ino.insert(r.ino, p);
        p
    }

    /// Enters record `r`, named `name`, in directory `dir` (`name` is not there); updates
    /// `by_ino` for it and every record the table moved.
    fn place(&mut self, dir: DirId, r: Inode, name: &str) -> Pos {
        let Ns {
            dirs,
            pool,
            by_ino,
            long_names,
            ..
        } = self;
        if r.name.is_long() {
            long_names.insert(r.ino, Box::from(name));
        }
        let Some(d) = dirs.get_mut(dir as usize) else {
            return self.detach(r);
        };
        let i = d.insert(pool, r, &mut |ino, i| {
            by_ino.insert(ino, Pos { dir, i });
        });
        d.order_mut().insert(name, r.ino, r.kind());
        let p = Pos { dir, i };
        by_ino.insert(r.ino, p);
        p
    }

    /// Takes the record at `p` out of its directory (or the detached records), with its long
    /// name; updates `by_ino` for every record moved, not for the one taken.
    fn unplace(&mut self, p: Pos) -> Inode {
        let Ns {
            dirs,
            pool,
            by_ino,
            long_names,
            detached,
            free_detached,
            ..
        } = self;
        let long = |r: &Inode, long_names: &mut HashMap<u64, Box<str>>| {
            if r.name.is_long() {
                long_names.remove(&r.ino);
            }
        };
        match dirs.get_mut(p.dir as usize) {
            Some(d) => {
                let r = *d.rec(pool, p.i);
                d.order_mut().remove(rec_name(long_names, &r));
                long(&r, long_names);
                let dir = p.dir;
                d.remove(pool, p.i, &mut |ino, i| {
                    by_ino.insert(ino, Pos { dir, i });
                })
            }
            None => {
                let r = std::mem::replace(&mut detached[p.i as usize], NO_INODE);
                free_detached.push(p.i);
                long(&r, long_names);
                r
            }
        }
    }

    /// Adds a new inode under `name` in directory `dir` (`name` is not there); for a
    /// directory, with empty entries.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        dir: DirId,
        ino: u64,
        kind: FileType,
        name: &str,
        size: u64,
        mtime: u64,
        ctime: u64,
        alloc_clusters: u64,
    ) -> Pos {
        let own = match kind {
            FileType::File => NO_DIR,
            FileType::Dir => {
                let (d, old) = reuse_or_push(&mut self.dirs, &mut self.free_dirs, Dir::new(ino));
                if let Some(old) = old {
                    old.release(&mut self.pool);
                }
                d
            }
        };
        let r = Inode {
            ino,
            size,
            mtime,
            ctime,
            alloc_clusters,
            dir: own,
            hash: self.hash(name),
            name: SlotName::new(name),
        };
        self.place(dir, r, name)
    }

    /// Removes the inode at `p` (a directory must be empty).
    pub(crate) fn remove(&mut self, p: Pos) {
        let r = self.unplace(p);
        self.by_ino.remove(r.ino);
        if let Some(d) = self.dirs.get_mut(r.dir as usize) {
            std::mem::take(d).release(&mut self.pool);
            self.free_dirs.push(r.dir);
        }
    }

    /// Makes the file at `p` an orphan: out of its directory, no name.
    pub(crate) fn orphan(&mut self, p: Pos) {
        let mut r = self.unplace(p);
        r.name = SlotName::EMPTY;
        r.hash = 0;
        self.detach(r);
    }

    /// Moves the entry at `p` to directory `dir` under `name` (not there), with change time
    /// `ctime`. A directory keeps its [`DirId`], so its subtree is untouched.
    pub(crate) fn rename(&mut self, p: Pos, dir: DirId, name: &str, ctime: u64) -> Pos {
        let mut r = self.unplace(p);
        r.name = SlotName::new(name);
        r.hash = self.hash(name);
        r.ctime = ctime;
        self.place(dir, r, name)
    }

    /// Whether directory `d` is `anc` or inside it (walking up through the parents).
    pub(crate) fn is_within(&self, mut d: DirId, anc: DirId) -> bool {
        // A cycle cannot exist (rename refuses to make one); the bound only guards the loop.
        for _ in 0..=self.dirs.len() {
            if d == anc {
                return true;
            }
            match self.dir_pos(d).and_then(|p| self.parent(p)) {
                Some(p) => d = p,
                None => return false, // the root
            }
        }
        false
    }

    /// The directory and the entry name a [`Loc`] names. Errors: as `lookup_parent` for a
    /// path; for `At`, `NotFound` (no such inode), `NotADirectory`, and the name checks.
    pub(crate) fn resolve<'a>(&self, loc: Loc<'a>, path: &str) -> Result<(DirId, &'a str)> {
        match loc {
            Loc::Path(comps) => self.lookup_parent(comps, path),
            Loc::At(dir, name) => {
                let p = self.pos_of(dir);
                let Some(d) = p.and_then(|p| self.dir_id(p)) else {
                    let kind = if p.is_some() {
                        FsErrorKind::NotADirectory
                    } else {
                        FsErrorKind::NotFound
                    };
                    return Err(FsError::new(kind, path, format!("directory inode {dir}")));
                };
                check_name(name, path)?;
                Ok((d, name))
            }
        }
    }

    /// Where the record of the inode a path names is.
    pub(crate) fn lookup(&self, comps: &[&str], path: &str) -> Result<Pos> {
        let (mut cur, mut rec) = (self.root, self.inode(self.root));
        for (i, c) in comps.iter().enumerate() {
            let d = rec.dir;
            if d == NO_DIR {
                let kind = if i == 0 {
                    FsErrorKind::Corrupt
                } else {
                    FsErrorKind::NotADirectory
                };
                return Err(FsError::new(
                    kind,
                    path,
                    format!("{:?} is not a directory", comps[..i].join("/")),
                ));
            }
            (cur, rec) = self.child_rec(d, c).ok_or_else(|| {
                FsError::new(FsErrorKind::NotFound, path, format!("no entry {c:?}"))
            })?;
        }
        Ok(cur)
    }

    /// The directory that holds the last component, and that component. The root itself has
    /// no parent: `InvalidArgument`.
    pub(crate) fn lookup_parent<'a>(
        &self,
        comps: &[&'a str],
        path: &str,
    ) -> Result<(DirId, &'a str)> {
        let Some((last, dir)) = comps.split_last() else {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                path,
                "the root directory has no parent entry",
            ));
        };
        let p = self.lookup(dir, path)?;
        let Some(d) = self.dir_id(p) else {
            return Err(FsError::new(
                FsErrorKind::NotADirectory,
                path,
                "parent is not a directory",
            ));
        };
        check_name(last, path)?;
        Ok((d, last))
    }

    /// [`Ns::resolve`] of an entry that must exist: its directory and its record.
    /// `missing` describes it in the `NotFound` error ("no such file", "no such directory",
    /// ...).
    pub(crate) fn resolve_existing(
        &self,
        loc: Loc<'_>,
        path: &str,
        missing: &str,
    ) -> Result<(DirId, Pos)> {
        let (dir, name) = self.resolve(loc, path)?;
        let p = self
            .child(dir, name)
            .ok_or_else(|| FsError::new(FsErrorKind::NotFound, path, missing))?;
        Ok((dir, p))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `InoMap` against a hash map under random inserts, overwrites and removes, with dense
    /// ids, ids at page edges and ids near `u64::MAX`; pages go when their last slot does.
    #[test]
    fn ino_map_matches_a_model() {
        let mut m = InoMap::default();
        let mut model: HashMap<u64, Pos> = HashMap::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ids: Vec<u64> = (1..3_000u64)
            .chain([511, 512, 1023, 1024, u64::MAX - 1, u64::MAX - 512, 1 << 40])
            .collect();
        for step in 0..50_000u32 {
            let r = next();
            let ino = ids[(r % ids.len() as u64) as usize];
            match (r >> 32) % 3 {
                0 | 1 => {
                    let pos = Pos {
                        dir: (r >> 40) as u32 % 8,
                        i: step,
                    };
                    m.insert(ino, pos);
                    model.insert(ino, pos);
                }
                _ => assert_eq!(m.remove(ino), model.remove(&ino)),
            }
            if step % 997 == 0 {
                assert_eq!(m.len(), model.len());
                for &i in &ids {
                    assert_eq!(m.get(i), model.get(&i).copied(), "ino {i}");
                }
            }
        }
        for &i in &ids {
            assert_eq!(m.remove(i), model.remove(&i));
        }
        assert_eq!(m.len(), 0);
        assert!(m.pages.is_empty(), "a page outlived its last slot");
        assert_eq!(m.get(5), None);
        assert_eq!(m.remove(5), None);
    }

    fn rec(ino: u64, hash: u32) -> Inode {
        Inode {
            ino,
            hash,
            ..NO_INODE
        }
    }

    /// The directory table with few distinct hashes (long collision runs, wrapping at the end
    /// of the table) against a model, through growth, backward-shift deletes and shrinking;
    /// every move is reported, so the model's positions stay right.
    #[test]
    fn dir_table_matches_a_model_under_collisions() {
        let mut d = Dir::default();
        let mut pool = Pool::default();
        // ino -> (hash, bucket)
        let mut model: HashMap<u64, (u32, u32)> = HashMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let check = |d: &Dir, pool: &Pool, model: &HashMap<u64, (u32, u32)>, round: u32| {
            assert_eq!(d.len(), model.len());
            for (&ino, &(h, i)) in model {
                assert_eq!(
                    d.find(pool, h, |r| r.ino == ino).map(|f| f.0),
                    Some(i),
                    "round {round}"
                );
                assert_eq!(d.rec(pool, i).ino, ino);
            }
            assert!(d.find(pool, 7, |_| true).is_none());
        };
        for round in 0..20_000u32 {
            let grow = round < 12_000 || round % 3 == 0;
            if grow || model.is_empty() {
                let ino = u64::from(round) + 1;
                // Hashes near the top of the range put home buckets at the end: runs wrap.
                let hash = [0u32, 1, u32::MAX, u32::MAX - 1, 0x8000_0000][(rnd() % 5) as usize]
                    ^ (rnd() % 4) as u32;
                let i = d.insert(&mut pool, rec(ino, hash), &mut |ino, i| {
                    model.get_mut(&ino).unwrap().1 = i;
                });
                model.insert(ino, (hash, i));
            } else {
                let ino = *model
                    .keys()
                    .nth((rnd() % model.len() as u64) as usize)
                    .unwrap();
                let (_, i) = model.remove(&ino).unwrap();
                let r = d.remove(&mut pool, i, &mut |ino, i| {
                    model.get_mut(&ino).unwrap().1 = i;
                });
                assert_eq!(r.ino, ino);
            }
            if round % 997 == 0 || round > 19_900 {
                check(&d, &pool, &model, round);
            }
        }
        // Shrinks once mostly empty, and keeps what is left.
        let mut keys: Vec<u64> = model.keys().copied().collect();
        keys.sort_unstable();
        for &ino in &keys[1..] {
            let (_, i) = model.remove(&ino).unwrap();
            d.remove(&mut pool, i, &mut |ino, i| {
                model.get_mut(&ino).unwrap().1 = i;
            });
        }
        assert!(d.store.cap <= 64);
        check(&d, &pool, &model, 0);
    }

    /// Directories whose tables grow through the pooled size classes and one past them (arrays
    /// of its own), renames across directories, then everything removed: every entry is found
    /// at the position `by_ino` gives throughout, and the pool gives all its memory back.
    #[test]
    fn pooled_tables_track_moves_and_give_memory_back() {
        let root = NewInode {
            ino: 1,
            kind: FileType::Dir,
            parent: 0,
            name: Box::from(""),
            size: 0,
            mtime: 0,
            ctime: 0,
            alloc_clusters: 0,
        };
        let mut ns = Ns::build(1, vec![root]).unwrap();
        let top = ns.root_dir();
        let mut next = 2u64;
        let mut dirs = Vec::new();
        for d in 0..20 {
            let p = ns.add(top, next, FileType::Dir, &format!("d{d}"), 0, 0, 0, 0);
            dirs.push(ns.dir_id(p).unwrap());
            next += 1;
        }
        // (ino, directory, name): 20 small directories, and 30,000 more entries in the first.
        let mut files: Vec<(u64, DirId, String)> = Vec::new();
        for i in 0..36_000u64 {
            let d = if i < 6_000 {
                dirs[i as usize % 20]
            } else {
                dirs[0]
            };
            // Every 7th name is long (kept outside the record).
            let name = if i % 7 == 0 {
                format!("a-long-file-name-{i:08}")
            } else {
                format!("f{i}")
            };
            ns.add(d, next, FileType::File, &name, i, 0, 0, 0);
            files.push((next, d, name));
            next += 1;
        }
        assert!(ns.dir(dirs[0]).unwrap().store.arr as usize >= POOL_CLASSES);
        let check = |ns: &Ns, files: &[(u64, DirId, String)]| {
            for (ino, d, name) in files {
                let p = ns.child(*d, name).unwrap();
                assert_eq!(ns.inode(p).ino, *ino);
                assert_eq!(ns.name(p), name);
                assert_eq!(ns.pos_of(*ino), Some(p));
                assert_eq!(ns.parent(p), Some(*d));
            }
        };
        check(&ns, &files);
        // Move a third of the entries to another directory under a new name.
        for (k, f) in files.iter_mut().enumerate().filter(|(k, _)| k % 3 == 0) {
            let p = ns.pos_of(f.0).unwrap();
            let d = dirs[(k / 3) % 20];
            let name = format!("r{k}");
            ns.rename(p, d, &name, 1);
            (f.1, f.2) = (d, name);
        }
        check(&ns, &files);
        // Remove them in an order unrelated to their placement.
        files.sort_by_key(|f| f.0.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        while let Some((ino, _, _)) = files.pop() {
            ns.remove(ns.pos_of(ino).unwrap());
            if files.len() % 5_000 == 0 {
                check(&ns, &files);
            }
        }
        for d in dirs {
            ns.remove(ns.dir_pos(d).unwrap());
        }
        assert_eq!(ns.len(), 1);
        assert!(ns.long_names.is_empty());
        // Only the root's (empty) table is left: the first block of its size class, so the
        // blocks after it were given back.
        let rs = ns.dir(top).unwrap().store;
        assert_eq!(rs.at, 0);
        for (k, a) in ns.pool.arrays.iter().enumerate() {
            if k == rs.arr as usize {
                assert_eq!((a.ctrl.len(), a.recs.len()), (rs.cap, rs.cap));
                assert!(a.recs.capacity() <= 4 * rs.cap);
            } else {
                assert_eq!((a.ctrl.capacity(), a.recs.capacity()), (0, 0), "array {k}");
            }
        }
    }

    #[test]
    fn slot_names_inline_up_to_fifteen_bytes() {
        assert_eq!(SlotName::new("").inline(), b"");
        assert_eq!(
            SlotName::new(&"a".repeat(15)).inline(),
            "a".repeat(15).as_bytes()
        );
        assert!(SlotName::new(&"a".repeat(16)).is_long());
        assert!(SlotName::new(&"a".repeat(255)).is_long());
    }
}

//! The mounted file system: mkfs, mount, the namespace (one `RwLock`), and channel pools.

use crate::attr::*;
use crate::cache::{Cache, DEFAULT_CACHE_BYTES};
use crate::error::{FsError, FsErrorKind, Result};
use crate::file::{FileHandle, OpenInode};
use crate::path::{check_name, components};
use oxblob_bdev::{BlockDevice, IoChannel};
use oxblob_blobstore::{
    bstype, BlobRecord, BlobStore, BsChannel, CreateOptions, InitOptions, LoadOptions, Txn,
    DEFAULT_CLUSTER_SIZE, DEFAULT_SEGMENT_PAGES,
};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The blobstore type tag of a blobfs image.
pub const BSTYPE: &str = "BLOBFS";
/// Default share of the device given to the metadata region: 1/8.
pub const DEFAULT_MD_FRACTION: u64 = 8;
/// Channels kept for reuse per pool; more are dropped when returned.
const POOL_MAX: usize = 64;

/// Options of [`BlobFs::mkfs`].
#[derive(Debug, Clone)]
pub struct MkfsOptions {
    /// Cluster size in bytes (power of two, 64 KiB ..= 256 MiB). Default 1 MiB.
    pub cluster_size: u64,
    /// The md region is `device size / md_fraction` (at least the blobstore's minimum).
    /// Default 8: room for about 100,000 inline 1 KiB files per 4 GiB (`docs/format.md`, blobfs section).
    pub md_fraction: u64,
    /// Pages per md segment. Default 64 (256 KiB).
    pub md_segment_pages: u32,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            cluster_size: DEFAULT_CLUSTER_SIZE,
            md_fraction: DEFAULT_MD_FRACTION,
            md_segment_pages: DEFAULT_SEGMENT_PAGES,
        }
    }
}

/// Options of [`BlobFs::mount`].
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Mount read-only: nothing is written (orphans are not reclaimed); every change fails
    /// with `ReadOnly`.
    pub read_only: bool,
    /// Memory bound of the data cache (write-behind buffers, read-ahead and clean chunks),
    /// shared by every file of the mount. Default [`DEFAULT_CACHE_BYTES`] (64 MiB); 0
    /// disables the cache: every read and write goes to the device.
    pub cache_bytes: u64,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// An inode's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// What [`BlobFs::stat`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Inode number (the blob id; never reused).
    pub ino: u64,
    /// File or directory.
    pub kind: FileType,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Bytes of clusters allocated to the inode (0 for inline files and directories).
    pub allocated_bytes: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: u64,
    /// Status-change time, ns since the Unix epoch.
    pub ctime_ns: u64,
}

/// One entry of [`BlobFs::readdir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Entry name.
    pub name: String,
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: FileType,
}

/// What [`BlobFs::statfs`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFs {
    /// Bytes in the data region.
    pub total_bytes: u64,
    /// Free bytes in the data region.
    pub free_bytes: u64,
    /// Inodes (files and directories, the root included).
    pub files: u64,
    /// Cluster size in bytes.
    pub cluster_size: u64,
}

/// Flags of [`BlobFs::open`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Allow reads.
    pub read: bool,
    /// Allow writes and truncation.
    pub write: bool,
    /// Create the file if it does not exist (needs `write`).
    pub create: bool,
    /// With `create`: fail with `Exists` if it exists.
    pub exclusive: bool,
    /// Truncate to 0 on open (needs `write`).
    pub truncate: bool,
    /// Every write goes to the end of the file.
    pub append: bool,
}

impl OpenFlags {
    /// Read only.
    pub fn read() -> Self {
        OpenFlags {
            read: true,
            ..Default::default()
        }
    }

    /// Read and write an existing file.
    pub fn read_write() -> Self {
        OpenFlags {
            read: true,
            write: true,
            ..Default::default()
        }
    }

    /// Read and write, creating the file if needed and truncating it (POSIX `creat`).
    pub fn create_truncate() -> Self {
        OpenFlags {
            read: true,
            write: true,
            create: true,
            truncate: true,
            ..Default::default()
        }
    }
}

/// Index of an inode in the namespace's slab ([`Ns`]). Slots are reused after a delete;
/// inode numbers are not.
pub(crate) type Slot = u32;
/// No slot: the parent of the root and of orphans, the empty entry of a directory table.
const NO_SLOT: Slot = Slot::MAX;
/// No directory: the `dir` of a file's slot.
const NO_DIR: u32 = u32::MAX;
/// Longest name kept inline in an inode's slot; longer names live in [`Ns`]'s `long_names`.
const INLINE_NAME: usize = 15;
/// `len` of a [`SlotName`] whose name is longer than [`INLINE_NAME`].
const LONG_NAME: u8 = u8::MAX;

/// An entry name inside an inode's slot (16 bytes): the name itself if it has at most
/// [`INLINE_NAME`] bytes, so comparing it during a lookup reads no other cache line; else a
/// marker, and the name is in [`Ns`]'s `long_names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotName {
    len: u8,
    bytes: [u8; INLINE_NAME],
}

impl SlotName {
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

/// An inode as the namespace knows it: one 64-byte, cache-line-aligned slot of [`Ns`]'s slab
/// holding everything `stat` reports and the entry name a lookup compares, so resolving the
/// last component of a path and stating it touches this one line (for an open file, size,
/// times and allocation are the open inode's; these are refreshed at its last close).
#[derive(Debug, Clone)]
#[repr(align(64))]
pub(crate) struct Inode {
    /// Inode number (blob id); 0 in a free slot.
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime: u64,
    pub(crate) ctime: u64,
    /// Allocated clusters of a closed file (from its blob record at mount, refreshed at its
    /// last close: only an open file changes its clusters), so `stat` never opens a blob.
    pub(crate) alloc_clusters: u64,
    /// The parent directory's slot; [`NO_SLOT`] for the root and for orphans.
    parent: Slot,
    /// The directory's entries in `Ns::dirs`; [`NO_DIR`] for a file.
    dir: u32,
    /// The entry name in the parent (empty for the root and orphans).
    name: SlotName,
}

const _: () = assert!(std::mem::size_of::<Inode>() == 64);

impl Inode {
    fn kind(&self) -> FileType {
        if self.dir == NO_DIR {
            FileType::File
        } else {
            FileType::Dir
        }
    }
}

/// One entry of a directory's hash table: the top 32 bits of the name's hash and the child's
/// slot. The tag alone places an entry (its home bucket is the tag's top bits), so the table
/// grows, shrinks and deletes without reading a name; a lookup compares a name only where the
/// tag matches, in the child's slot, which `stat` reads next anyway.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u32,
    slot: Slot,
}

const EMPTY: Entry = Entry {
    tag: 0,
    slot: NO_SLOT,
};

/// Smallest non-empty directory table.
const MIN_TABLE: usize = 8;

/// One directory's entries: an open-addressing hash table of (tag, slot) for lookups — 8
/// bytes an entry, linear probing, at most 3/4 full, deletes by backward shift (no
/// tombstones) — and the same entries in name order for `readdir` (a stable order and a
/// cursor, no sort per call, no slot read per entry).
#[derive(Debug, Default)]
pub(crate) struct Dir {
    table: Vec<Entry>,
    len: usize,
    order: BTreeMap<Box<str>, (u64, FileType)>,
}

impl Dir {
    /// Entries in the directory.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The home bucket of `tag` (the table is a non-empty power of two).
    fn home(&self, tag: u32) -> usize {
        let bits = self.table.len().trailing_zeros();
        (u64::from(tag) >> (32 - bits)) as usize
    }

    /// The slot of the entry with `tag` whose name `is_name` accepts.
    fn find(&self, tag: u32, is_name: impl Fn(Slot) -> bool) -> Option<Slot> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut i = self.home(tag);
        loop {
            let e = self.table[i];
            if e.slot == NO_SLOT {
                return None;
            }
            if e.tag == tag && is_name(e.slot) {
                return Some(e.slot);
            }
            i = (i + 1) & mask;
        }
    }

    /// Puts an entry in the table (the name is not in the directory).
    fn put(&mut self, e: Entry) {
        if (self.len + 1) * 4 > self.table.len() * 3 {
            self.resize((self.table.len() * 2).max(MIN_TABLE));
        }
        let mask = self.table.len() - 1;
        let mut i = self.home(e.tag);
        while self.table[i].slot != NO_SLOT {
            i = (i + 1) & mask;
        }
        self.table[i] = e;
        self.len += 1;
    }

    /// Removes the entry of `slot` (with `tag`) from the table.
    fn take(&mut self, tag: u32, slot: Slot) {
        if self.table.is_empty() {
            return;
        }
        let mask = self.table.len() - 1;
        let mut i = self.home(tag);
        loop {
            let e = self.table[i];
            if e.slot == NO_SLOT {
                return; // not there
            }
            if e.slot == slot {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward shift: move later entries of the run into the hole unless their home lies
        // cyclically in (hole, entry].
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = self.table[j];
            if e.slot == NO_SLOT {
                break;
            }
            let k = self.home(e.tag);
            let stays = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !stays {
                self.table[i] = e;
                i = j;
            }
        }
        self.table[i] = EMPTY;
        self.len -= 1;
        // Give memory back after mass deletes once an eighth is used (O(n) every O(n)
        // removals: amortized O(1)).
        if self.table.len() > 64 && self.len * 8 < self.table.len() {
            self.resize((self.len * 2).next_power_of_two().max(MIN_TABLE));
        }
    }

    /// Rebuilds the table with `cap` buckets (a power of two above the entry count) from the
    /// tags alone.
    fn resize(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.table, vec![EMPTY; cap]);
        let mask = cap - 1;
        for e in old.into_iter().filter(|e| e.slot != NO_SLOT) {
            let mut i = self.home(e.tag);
            while self.table[i].slot != NO_SLOT {
                i = (i + 1) & mask;
            }
            self.table[i] = e;
        }
    }

    /// Up to `limit` entries whose names sort after `after` (from the first with `None`), in
    /// name order.
    fn entries_after(&self, after: Option<&str>, limit: usize) -> Vec<DirEntry> {
        let lo = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.order
            .range::<str, _>((lo, Bound::Unbounded))
            .take(limit)
            .map(|(n, &(ino, kind))| DirEntry {
                name: n.to_string(),
                ino,
                kind,
            })
            .collect()
    }
}

pub(crate) struct OpenEntry {
    pub(crate) inode: Arc<OpenInode>,
    pub(crate) handles: usize,
}

/// The namespace: every inode, every directory's children, the open files.
///
/// Inodes live in a dense slab of 64-byte slots ([`Inode`]); a directory entry names its
/// child by slot, so a path lookup is, per component, one probe of the directory's table and
/// one read of the child's slot — which also holds the child's name (short names inline) and
/// everything `stat` reports. With a million files, where nothing fits in the CPU caches,
/// a `stat` thus costs about two cache misses instead of five (the hash bucket, the name's
/// heap string, and a second hash lookup by inode number). Inode numbers map to slots in
/// `by_ino`, used only by the inode-level API and the namespace operations.
pub(crate) struct Ns {
    slab: Vec<Inode>,
    /// Free slots of the slab.
    free: Vec<Slot>,
    by_ino: HashMap<u64, Slot>,
    /// Directory entries, indexed by a directory slot's `dir`.
    dirs: Vec<Dir>,
    /// Free indices of `dirs`.
    free_dirs: Vec<u32>,
    /// Names over [`INLINE_NAME`] bytes, by slot.
    long_names: HashMap<Slot, Box<str>>,
    /// Keys the name hash of the directory tables (random per mount).
    hasher: RandomState,
    root: Slot,
    pub(crate) open: HashMap<u64, OpenEntry>,
}

pub(crate) struct FsInner {
    pub(crate) bs: BlobStore,
    pub(crate) root: u64,
    pub(crate) ns: RwLock<Ns>,
    pub(crate) read_only: bool,
    pub(crate) unmounted: AtomicBool,
    pub(crate) cluster_size: u64,
    pub(crate) io_unit: u64,
    /// The data cache's accounting and registry (`cache.rs`).
    pub(crate) cache: Cache,
    chans: Mutex<Vec<BsChannel>>,
    raw: Mutex<Vec<Box<dyn IoChannel>>>,
}

/// A mounted blobfs. Cheap to clone (clones share the mount); `Send + Sync`. See the crate
/// documentation for the concurrency contract.
#[derive(Clone)]
pub struct BlobFs {
    pub(crate) inner: Arc<FsInner>,
}

impl std::fmt::Debug for BlobFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobFs")
            .field("root", &self.inner.root)
            .field("cluster_size", &self.inner.cluster_size)
            .field("read_only", &self.inner.read_only)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FsInner {
    pub(crate) fn ns_read(&self) -> RwLockReadGuard<'_, Ns> {
        self.ns.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn ns_write(&self) -> RwLockWriteGuard<'_, Ns> {
        self.ns.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn live(&self, path: &str) -> Result<()> {
        if self.unmounted.load(Ordering::Acquire) {
            return Err(FsError::new(
                FsErrorKind::Io,
                path,
                "file system is unmounted",
            ));
        }
        Ok(())
    }

    pub(crate) fn writable(&self, path: &str) -> Result<()> {
        self.live(path)?;
        if self.read_only {
            return Err(FsError::new(
                FsErrorKind::ReadOnly,
                path,
                "mounted read-only",
            ));
        }
        Ok(())
    }

    /// Runs `f` with a blob I/O channel from the pool (taken and returned under a mutex held
    /// only for the push/pop; the I/O itself runs without it).
    pub(crate) fn with_channel<T>(
        &self,
        path: &str,
        f: impl FnOnce(&mut BsChannel) -> Result<T>,
    ) -> Result<T> {
        let taken = lock(&self.chans).pop();
        let mut ch = match taken {
            Some(c) => c,
            None => self.bs.channel().map_err(|e| FsError::from_bs(e, path))?,
        };
        let r = f(&mut ch);
        let mut pool = lock(&self.chans);
        if pool.len() < POOL_MAX && ch.in_flight() == 0 {
            pool.push(ch);
        }
        r
    }

    /// A device flush: every write completed before it is durable on return.
    pub(crate) fn flush_device(&self, path: &str) -> Result<()> {
        // One device flush, shared with concurrent callers (blobstore group commit); it also
        // makes every deferred namespace record written so far durable.
        self.bs.flush().map_err(|e| FsError::from_bs(e, path))
    }

    /// Commits a namespace transaction as one record, **deferred**: applied at once, durable
    /// with the next flush (a later file fsync, `fsync_dir`, `sync`, unmount). After a crash
    /// the log holds a prefix of the operations in the order they completed.
    pub(crate) fn commit<T>(
        &self,
        path: &str,
        f: impl FnOnce(&mut Txn) -> oxblob_blobstore::Result<T>,
    ) -> Result<T> {
        self.bs
            .transaction_with(oxblob_blobstore::Durability::Deferred, f)
            .map_err(|e| FsError::from_bs(e, path))
    }
}

/// Where a namespace operation acts: a path's components, resolved under the namespace
/// lock, or a directory inode and a name in it (the inode-level API of `ino.rs`). Both forms
/// go through [`Ns::resolve`], so every operation has one implementation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loc<'a> {
    /// The components of an absolute path (from [`components`]).
    Path(&'a [&'a str]),
    /// A name in the directory with this inode number.
    At(u64, &'a str),
}

/// The entry name of slot `s` (the body of [`Ns::name`], on the fields it reads, so a caller
/// can hold it while changing a directory).
fn slot_name<'a>(slab: &'a [Inode], long_names: &'a HashMap<Slot, Box<str>>, s: Slot) -> &'a str {
    let n = &slab[s as usize].name;
    if n.is_long() {
        long_names.get(&s).map_or("", |l| l)
    } else {
        // A whole name copied from a `&str`: always UTF-8.
        std::str::from_utf8(n.inline()).unwrap_or_default()
    }
}

impl Ns {
    /// An empty namespace with room for `n` inodes.
    fn with_capacity(n: usize) -> Ns {
        Ns {
            slab: Vec::with_capacity(n),
            free: Vec::new(),
            by_ino: HashMap::with_capacity(n),
            dirs: Vec::new(),
            free_dirs: Vec::new(),
            long_names: HashMap::new(),
            hasher: RandomState::new(),
            root: NO_SLOT,
            open: HashMap::new(),
        }
    }

    /// Inodes (files and directories, the root and orphans still open included).
    pub(crate) fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// The root directory's slot.
    pub(crate) fn root(&self) -> Slot {
        self.root
    }

    /// The inode in slot `s` (a slot this namespace handed out).
    pub(crate) fn inode(&self, s: Slot) -> &Inode {
        &self.slab[s as usize]
    }

    pub(crate) fn inode_mut(&mut self, s: Slot) -> &mut Inode {
        &mut self.slab[s as usize]
    }

    /// The slot of inode number `ino`.
    pub(crate) fn slot_of(&self, ino: u64) -> Option<Slot> {
        self.by_ino.get(&ino).copied()
    }

    pub(crate) fn kind(&self, s: Slot) -> FileType {
        self.inode(s).kind()
    }

    pub(crate) fn is_dir(&self, s: Slot) -> bool {
        self.inode(s).dir != NO_DIR
    }

    /// The parent directory's slot (`None` for the root and orphans).
    pub(crate) fn parent(&self, s: Slot) -> Option<Slot> {
        let p = self.inode(s).parent;
        (p != NO_SLOT).then_some(p)
    }

    /// The entry name of slot `s` (empty for the root and orphans).
    pub(crate) fn name(&self, s: Slot) -> &str {
        slot_name(&self.slab, &self.long_names, s)
    }

    /// Whether slot `s` is named `name`.
    fn name_is(&self, s: Slot, name: &str) -> bool {
        let n = &self.inode(s).name;
        if n.is_long() {
            self.long_names.get(&s).is_some_and(|l| **l == *name)
        } else {
            n.inline() == name.as_bytes()
        }
    }

    fn set_name(&mut self, s: Slot, name: &str) {
        let n = SlotName::new(name);
        if n.is_long() {
            self.long_names.insert(s, Box::from(name));
        } else if self.inode(s).name.is_long() {
            self.long_names.remove(&s);
        }
        self.inode_mut(s).name = n;
    }

    /// The entries of directory `s` (`None` for a file).
    pub(crate) fn dir(&self, s: Slot) -> Option<&Dir> {
        self.dirs.get(self.inode(s).dir as usize)
    }

    /// The directory-table tag of `name`.
    fn tag(&self, name: &str) -> u32 {
        (self.hasher.hash_one(name) >> 32) as u32
    }

    /// The child named `name` of directory `dir` (`None` also when `dir` is a file).
    pub(crate) fn child(&self, dir: Slot, name: &str) -> Option<Slot> {
        let d = self.dir(dir)?;
        d.find(self.tag(name), |s| self.name_is(s, name))
    }

    /// Fails if the slab has no room for another inode (checked before a transaction
    /// creates one, so [`Ns::add`] cannot fail after it).
    fn room(&self, path: &str) -> Result<()> {
        if self.free.is_empty() && self.slab.len() >= NO_SLOT as usize {
            return Err(FsError::new(
                FsErrorKind::Io,
                path,
                "too many inodes for the in-memory namespace",
            ));
        }
        Ok(())
    }

    /// Puts an inode in a free slot (not yet linked into its parent: see [`Ns::link`]).
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        ino: u64,
        kind: FileType,
        parent: Slot,
        name: &str,
        size: u64,
        mtime: u64,
        ctime: u64,
        alloc_clusters: u64,
    ) -> Slot {
        let dir = match kind {
            FileType::File => NO_DIR,
            FileType::Dir => match self.free_dirs.pop() {
                Some(d) => d,
                None => {
                    self.dirs.push(Dir::default());
                    (self.dirs.len() - 1) as u32
                }
            },
        };
        let inode = Inode {
            ino,
            size,
            mtime,
            ctime,
            alloc_clusters,
            parent,
            dir,
            name: SlotName::new(""),
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = inode;
                s
            }
            None => {
                self.slab.push(inode);
                (self.slab.len() - 1) as Slot
            }
        };
        self.set_name(s, name);
        self.by_ino.insert(ino, s);
        s
    }

    /// Frees slot `s` (already unlinked from its parent; a directory must be empty).
    fn remove(&mut self, s: Slot) {
        let i = self.inode(s);
        let (ino, dir, long) = (i.ino, i.dir, i.name.is_long());
        if long {
            self.long_names.remove(&s);
        }
        if let Some(d) = self.dirs.get_mut(dir as usize) {
            *d = Dir::default();
            self.free_dirs.push(dir);
        }
        self.by_ino.remove(&ino);
        *self.inode_mut(s) = Inode {
            ino: 0,
            size: 0,
            mtime: 0,
            ctime: 0,
            alloc_clusters: 0,
            parent: NO_SLOT,
            dir: NO_DIR,
            name: SlotName::new(""),
        };
        self.free.push(s);
    }

    /// Makes slot `s` (already unlinked from its parent) an orphan: no parent, no name.
    fn orphan(&mut self, s: Slot) {
        self.set_name(s, "");
        self.inode_mut(s).parent = NO_SLOT;
    }

    /// Enters slot `s` under its name in directory `dir`.
    fn link(&mut self, dir: Slot, s: Slot) {
        let name = self.name(s);
        let tag = self.tag(name);
        let key: Box<str> = Box::from(name);
        let (ino, kind) = (self.inode(s).ino, self.kind(s));
        let d = self.inode(dir).dir as usize;
        if let Some(d) = self.dirs.get_mut(d) {
            d.put(Entry { tag, slot: s });
            d.order.insert(key, (ino, kind));
        }
    }

    /// Removes the entry of slot `s` (under its current name) from directory `dir`.
    fn unlink(&mut self, dir: Slot, s: Slot) {
        let tag = self.tag(self.name(s));
        let d = self.inode(dir).dir as usize;
        let name = slot_name(&self.slab, &self.long_names, s);
        if let Some(d) = self.dirs.get_mut(d) {
            d.take(tag, s);
            d.order.remove(name);
        }
    }

    /// The directory and the entry name a [`Loc`] names. Errors: as `lookup_parent` for a
    /// path; for `At`, `NotFound` (no such inode), `NotADirectory`, and the name checks.
    pub(crate) fn resolve<'a>(&self, loc: Loc<'a>, path: &str) -> Result<(Slot, &'a str)> {
        match loc {
            Loc::Path(comps) => self.lookup_parent(comps, path),
            Loc::At(dir, name) => {
                let s = self.slot_of(dir).filter(|&s| self.is_dir(s));
                let Some(s) = s else {
                    let kind = if self.slot_of(dir).is_some() {
                        FsErrorKind::NotADirectory
                    } else {
                        FsErrorKind::NotFound
                    };
                    return Err(FsError::new(kind, path, format!("directory inode {dir}")));
                };
                check_name(name, path)?;
                Ok((s, name))
            }
        }
    }

    /// The slot of the inode a path names.
    pub(crate) fn lookup(&self, comps: &[&str], path: &str) -> Result<Slot> {
        let mut cur = self.root;
        for (i, c) in comps.iter().enumerate() {
            let Some(children) = self.dir(cur) else {
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
            };
            cur = children
                .find(self.tag(c), |s| self.name_is(s, c))
                .ok_or_else(|| {
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
    ) -> Result<(Slot, &'a str)> {
        let Some((last, dir)) = comps.split_last() else {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                path,
                "the root directory has no parent entry",
            ));
        };
        let d = self.lookup(dir, path)?;
        if !self.is_dir(d) {
            return Err(FsError::new(
                FsErrorKind::NotADirectory,
                path,
                "parent is not a directory",
            ));
        }
        check_name(last, path)?;
        Ok((d, last))
    }

    /// [`Ns::resolve`] of an entry that must exist: its directory's slot and its own.
    /// `missing` describes it in the `NotFound` error ("no such file", "no such directory",
    /// ...).
    pub(crate) fn resolve_existing(
        &self,
        loc: Loc<'_>,
        path: &str,
        missing: &str,
    ) -> Result<(Slot, Slot)> {
        let (dir, name) = self.resolve(loc, path)?;
        let s = self
            .child(dir, name)
            .ok_or_else(|| FsError::new(FsErrorKind::NotFound, path, missing))?;
        Ok((dir, s))
    }
}

fn entry_xattrs(kind: FileType, parent: u64, name: &str, now: u64) -> Vec<(String, Vec<u8>)> {
    let t = match kind {
        FileType::File => TYPE_FILE,
        FileType::Dir => TYPE_DIR,
    };
    let mut v = vec![
        (X_TYPE.to_string(), vec![t]),
        (X_MTIME.to_string(), enc_u64(now)),
        (X_CTIME.to_string(), enc_u64(now)),
        (X_PARENT.to_string(), enc_u64(parent)),
        (X_NAME.to_string(), name.as_bytes().to_vec()),
    ];
    if kind == FileType::File {
        v.push((X_SIZE.to_string(), enc_u64(0)));
    }
    v
}

/// Decoded attributes of one blob at mount.
struct Found {
    ino: u64,
    kind: FileType,
    parent: u64,
    name: Box<str>,
    size: u64,
    mtime: u64,
    ctime: u64,
    alloc_clusters: u64,
    orphan: bool,
}

/// Decodes the user xattrs of one blob record (by reference: the only allocation is the
/// name).
fn decode_record(r: &BlobRecord) -> Result<Found> {
    let corrupt =
        |d: String| FsError::new(FsErrorKind::Corrupt, "", format!("inode {}: {d}", r.id));
    let (mut kind, mut name, mut orphan) = (None, None, false);
    let (mut parent, mut size, mut mtime, mut ctime) = (None, None, None, None);
    for x in r.xattrs.iter().filter(|x| !x.internal) {
        let v = x.value.as_slice();
        match x.name.as_str() {
            X_TYPE => kind = Some(v),
            X_NAME => name = Some(v),
            X_ORPHAN => orphan = true,
            X_PARENT => parent = Some(v),
            X_SIZE => size = Some(v),
            X_MTIME => mtime = Some(v),
            X_CTIME => ctime = Some(v),
            _ => {}
        }
    }
    let kind = match kind {
        Some([TYPE_FILE]) => FileType::File,
        Some([TYPE_DIR]) => FileType::Dir,
        other => return Err(corrupt(format!("bad type xattr {other:?}"))),
    };
    let u = |v: Option<&[u8]>, n: &str| -> Result<u64> {
        match v {
            Some(v) => dec_u64(v, n, r.id),
            None => Ok(0),
        }
    };
    let name: Box<str> = match name {
        Some(v) => {
            Box::from(std::str::from_utf8(v).map_err(|_| corrupt("name is not UTF-8".into()))?)
        }
        None => Box::from(""),
    };
    let parent = u(parent, X_PARENT)?;
    Ok(Found {
        ino: r.id,
        orphan: orphan || parent == 0,
        kind,
        parent,
        name,
        size: u(size, X_SIZE)?,
        mtime: u(mtime, X_MTIME)?,
        ctime: u(ctime, X_CTIME)?,
        alloc_clusters: r.allocated_clusters(),
    })
}

/// Builds the namespace from every blob record (by reference, under the store's lock): the
/// slab (one slot per inode, in record order) and every directory's table, pre-sized; each
/// directory's name order is bulk-built from its sorted entries. Returns it and the orphans
/// to delete.
fn build_ns(bs: &BlobStore, root: u64) -> Result<(Ns, Vec<u64>)> {
    let n = bs.blob_count().map_err(|e| FsError::from_bs(e, "/"))?;
    let mut found = Vec::with_capacity(n);
    let mut orphans = Vec::new();
    let mut bad = None;
    bs.for_each_blob(|r| match decode_record(r) {
        Ok(mut f) => {
            if f.ino == root {
                f.orphan = false;
            }
            if f.orphan {
                orphans.push(f.ino);
            } else {
                found.push(f);
            }
            ControlFlow::Continue(())
        }
        Err(e) => {
            bad = Some(e);
            ControlFlow::Break(())
        }
    })
    .map_err(|e| FsError::from_bs(e, "/"))?;
    if let Some(e) = bad {
        return Err(e);
    }
    if found.len() >= NO_SLOT as usize {
        return Err(FsError::new(
            FsErrorKind::Io,
            "/",
            "too many inodes for the in-memory namespace",
        ));
    }
    let mut ns = Ns::with_capacity(found.len());
    for f in &found {
        if f.ino == root && f.kind != FileType::Dir {
            return Err(FsError::new(
                FsErrorKind::Corrupt,
                "/",
                "root is not a directory",
            ));
        }
        let s = ns.add(
            f.ino,
            f.kind,
            NO_SLOT,
            if f.ino == root { "" } else { &f.name },
            f.size,
            f.mtime,
            f.ctime,
            f.alloc_clusters,
        );
        if f.ino == root {
            ns.root = s;
        }
    }
    if ns.root == NO_SLOT {
        return Err(FsError::new(
            FsErrorKind::Corrupt,
            "/",
            format!("no root directory (inode {root})"),
        ));
    }
    // Every directory's entries, gathered then sorted by name.
    let mut lists: Vec<Vec<(Box<str>, Slot)>> = (0..ns.dirs.len()).map(|_| Vec::new()).collect();
    for (s, f) in found.into_iter().enumerate() {
        if f.ino == root {
            continue;
        }
        let p = ns.slot_of(f.parent).map(|p| ns.inode(p).dir as usize);
        let Some(list) = p.and_then(|d| lists.get_mut(d)) else {
            return Err(FsError::new(
                FsErrorKind::Corrupt,
                "",
                format!("inode {} names parent {}, not a directory", f.ino, f.parent),
            ));
        };
        let s = s as Slot;
        ns.inode_mut(s).parent = ns.slot_of(f.parent).unwrap_or(NO_SLOT);
        list.push((f.name, s));
    }
    for (d, mut list) in lists.into_iter().enumerate() {
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = list.windows(2).find(|w| w[0].0 == w[1].0) {
            let (a, b) = (ns.inode(w[0].1), ns.inode(w[1].1));
            let parent = ns.inode(a.parent).ino;
            return Err(FsError::new(
                FsErrorKind::Corrupt,
                "",
                format!(
                    "inodes {} and {} both named {:?} in directory {parent}",
                    a.ino, b.ino, w[0].0
                ),
            ));
        }
        let mut table = Dir::default();
        if !list.is_empty() {
            // At most half full after the bulk build.
            table.resize((list.len() * 2).next_power_of_two().max(MIN_TABLE));
        }
        for (name, s) in &list {
            table.put(Entry {
                tag: ns.tag(name),
                slot: *s,
            });
        }
        table.order = list
            .into_iter()
            .map(|(name, s)| {
                let i = ns.inode(s);
                (name, (i.ino, i.kind()))
            })
            .collect();
        ns.dirs[d] = table;
    }
    Ok((ns, orphans))
}

impl BlobFs {
    /// Formats `dev` as an empty blobfs: a blobstore of type `BLOBFS` with the md region sized
    /// by `md_fraction`, and the root directory as its super blob. Blocks; durable on return
    /// (the store is unloaded cleanly).
    pub fn mkfs(dev: Arc<dyn BlockDevice>, opts: MkfsOptions) -> Result<()> {
        if opts.md_fraction == 0 {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                "",
                "md_fraction must be at least 1",
            ));
        }
        let md_pages = dev.info().size_bytes() / opts.md_fraction / 4096;
        let min = 4 * u64::from(opts.md_segment_pages);
        let bs = BlobStore::init(
            dev,
            InitOptions {
                cluster_size: opts.cluster_size,
                md_pages: Some(md_pages.max(min)),
                md_segment_pages: opts.md_segment_pages,
                bstype: bstype(BSTYPE),
            },
        )
        .map_err(|e| FsError::from_bs(e, "/"))?;
        let now = now_ns();
        bs.transaction(|t| {
            let mut x = entry_xattrs(FileType::Dir, 0, "", now);
            x.retain(|(k, _)| k != X_PARENT && k != X_NAME);
            let root = t.create(CreateOptions {
                num_clusters: 0,
                thin: true,
                xattrs: x,
            })?;
            t.set_super_blob(Some(root));
            Ok(())
        })
        .map_err(|e| FsError::from_bs(e, "/"))?;
        bs.unload().map_err(|e| FsError::from_bs(e, "/"))
    }

    /// Mounts the blobfs on `dev`: loads the store (clean or after a crash), builds the
    /// namespace from every blob's xattrs without opening a blob, and deletes orphans (inodes
    /// unlinked while open before a crash or unmount) in one transaction. Blocks.
    pub fn mount(dev: Arc<dyn BlockDevice>, opts: MountOptions) -> Result<BlobFs> {
        let bs = BlobStore::load(
            dev,
            LoadOptions {
                bstype: bstype(BSTYPE),
                read_only: opts.read_only,
            },
        )
        .map_err(|e| FsError::from_bs(e, "/"))?;
        let root = bs
            .super_blob()
            .map_err(|e| FsError::from_bs(e, "/"))?
            .ok_or_else(|| {
                FsError::new(FsErrorKind::Corrupt, "/", "no root directory (super blob)")
            })?;
        let (ns, orphans) = build_ns(&bs, root)?;
        if !orphans.is_empty() && !opts.read_only {
            bs.transaction(|t| {
                for &o in &orphans {
                    t.delete(o);
                }
                Ok(())
            })
            .map_err(|e| FsError::from_bs(e, "/"))?;
        }
        Ok(BlobFs {
            inner: Arc::new(FsInner {
                cluster_size: bs.cluster_size(),
                io_unit: bs.io_unit(),
                cache: Cache::new(opts.cache_bytes),
                read_only: opts.read_only,
                bs,
                root,
                ns: RwLock::new(ns),
                unmounted: AtomicBool::new(false),
                chans: Mutex::new(Vec::new()),
                raw: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Syncs the whole file system (like `syncfs`): writes back every open file's buffered
    /// data and its inode record (size, times), then one device flush makes them and every
    /// namespace operation completed before the call durable. Blocks.
    pub fn sync(&self) -> Result<()> {
        self.inner.live("/")?;
        if self.inner.read_only {
            return Ok(());
        }
        let open: Vec<Arc<OpenInode>> = {
            let ns = self.inner.ns_read();
            ns.open.values().map(|e| Arc::clone(&e.inode)).collect()
        };
        for inode in open {
            if !inode.is_orphan() {
                inode.write_back(&self.inner, "/")?;
            }
        }
        self.inner.flush_device("/")
    }

    /// `fsync` of a directory: makes every namespace operation completed before the call
    /// durable (creates, unlinks, renames of its entries — and of every other directory: one
    /// device flush covers the whole log). Errors: `NotFound`, `NotADirectory`.
    pub fn fsync_dir(&self, path: &str) -> Result<()> {
        self.inner.live(path)?;
        let m = self.stat(path)?;
        if m.kind != FileType::Dir {
            return Err(FsError::new(
                FsErrorKind::NotADirectory,
                path,
                "not a directory",
            ));
        }
        if self.inner.read_only {
            return Ok(());
        }
        self.inner.flush_device(path)
    }

    /// Persists every open file (as `fsync`), unloads the store cleanly, and ends the mount:
    /// every later call, on this `BlobFs` or its open handles, fails with `Io`. Blocks.
    pub fn unmount(&self) -> Result<()> {
        self.inner.live("/")?;
        let mut ns = self.inner.ns_write();
        let mut first_err = None;
        for e in ns.open.values() {
            if let Err(err) = e.inode.shutdown(&self.inner) {
                first_err.get_or_insert(err);
            }
        }
        ns.open.clear();
        self.inner.cache.clear_clean();
        self.inner.unmounted.store(true, Ordering::Release);
        lock(&self.inner.chans).clear();
        lock(&self.inner.raw).clear();
        if let Err(e) = self.inner.bs.unload() {
            first_err.get_or_insert(FsError::from_bs(e, "/"));
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The blobstore underneath (for tools: fsck, dump).
    pub fn store(&self) -> &BlobStore {
        &self.inner.bs
    }

    /// Creates (or truncates) a file and opens it read-write: `open(path, create_truncate)`.
    pub fn create(&self, path: &str) -> Result<FileHandle> {
        self.open(path, OpenFlags::create_truncate())
    }

    /// Opens a file. Creating is one transaction (durable on return). Errors: `NotFound`,
    /// `Exists` (create + exclusive), `IsADirectory`, `NotADirectory` (a path component),
    /// `InvalidArgument` (no access mode, truncate/create without write, the root).
    pub fn open(&self, path: &str, flags: OpenFlags) -> Result<FileHandle> {
        self.inner.live(path)?;
        let comps = components(path)?;
        if comps.is_empty() {
            return Err(FsError::new(
                FsErrorKind::IsADirectory,
                path,
                "the root is a directory",
            ));
        }
        self.open_in(Loc::Path(&comps), flags, path)
    }

    /// [`BlobFs::open`] of the entry `loc` names (`path` is for messages and the handle).
    pub(crate) fn open_in(&self, loc: Loc<'_>, flags: OpenFlags, path: &str) -> Result<FileHandle> {
        let fs = &self.inner;
        fs.live(path)?;
        if !flags.read && !flags.write {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                path,
                "open needs read or write",
            ));
        }
        if (flags.create || flags.truncate || flags.append) && !flags.write {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                path,
                "create, truncate and append need write",
            ));
        }
        if flags.write {
            fs.writable(path)?;
        }
        let inode = {
            let mut ns = fs.ns_write();
            let (dir, name) = ns.resolve(loc, path)?;
            let slot = match ns.child(dir, name) {
                Some(s) => {
                    if flags.create && flags.exclusive {
                        return Err(FsError::new(FsErrorKind::Exists, path, "file exists"));
                    }
                    if ns.is_dir(s) {
                        return Err(FsError::new(
                            FsErrorKind::IsADirectory,
                            path,
                            "is a directory",
                        ));
                    }
                    s
                }
                None => {
                    if !flags.create {
                        return Err(FsError::new(FsErrorKind::NotFound, path, "no such file"));
                    }
                    ns.room(path)?;
                    let now = now_ns();
                    let dir_ino = ns.inode(dir).ino;
                    let ino = fs.commit(path, |t| {
                        t.create(CreateOptions {
                            num_clusters: 0,
                            thin: true,
                            xattrs: entry_xattrs(FileType::File, dir_ino, name, now),
                        })
                    })?;
                    let s = ns.add(ino, FileType::File, dir, name, 0, now, now, 0);
                    ns.link(dir, s);
                    s
                }
            };
            let ino = ns.inode(slot).ino;
            if let Some(e) = ns.open.get_mut(&ino) {
                e.handles += 1;
                Arc::clone(&e.inode)
            } else {
                let meta = ns.inode(slot).clone();
                let blob = fs
                    .bs
                    .open_blob(ino)
                    .map_err(|e| FsError::from_bs(e, path))?;
                let oi = Arc::new(OpenInode::new(ino, blob, &meta));
                ns.open.insert(
                    ino,
                    OpenEntry {
                        inode: Arc::clone(&oi),
                        handles: 1,
                    },
                );
                oi
            }
        };
        let h = FileHandle::new(Arc::clone(fs), inode, flags, path);
        if flags.truncate {
            h.truncate(0)?;
        }
        Ok(h)
    }

    /// Creates a directory (one transaction; durable on return). Errors: `Exists`,
    /// `NotFound`/`NotADirectory` (parent), `NameTooLong`.
    pub fn mkdir(&self, path: &str) -> Result<u64> {
        let fs = &self.inner;
        fs.writable(path)?;
        let comps = components(path)?;
        if comps.is_empty() {
            return Err(FsError::new(FsErrorKind::Exists, path, "the root exists"));
        }
        let mut ns = fs.ns_write();
        let s = self.mkdir_locked(&mut ns, Loc::Path(&comps), path)?;
        Ok(ns.inode(s).ino)
    }

    /// [`BlobFs::mkdir`] of the entry `loc` names, under the namespace lock; the new
    /// directory's slot.
    pub(crate) fn mkdir_locked(&self, ns: &mut Ns, loc: Loc<'_>, path: &str) -> Result<Slot> {
        let fs = &self.inner;
        let (dir, name) = ns.resolve(loc, path)?;
        if ns.child(dir, name).is_some() {
            return Err(FsError::new(FsErrorKind::Exists, path, "entry exists"));
        }
        ns.room(path)?;
        let now = now_ns();
        let dir_ino = ns.inode(dir).ino;
        let ino = fs.commit(path, |t| {
            t.create(CreateOptions {
                num_clusters: 0,
                thin: true,
                xattrs: entry_xattrs(FileType::Dir, dir_ino, name, now),
            })
        })?;
        let s = ns.add(ino, FileType::Dir, dir, name, 0, now, now, 0);
        ns.link(dir, s);
        Ok(s)
    }

    /// Creates a directory and every missing ancestor (one transaction per directory created;
    /// a crash in between leaves a prefix). Existing directories are fine; an existing file on
    /// the way is `NotADirectory` (or `Exists` when it is the last component).
    pub fn mkdir_all(&self, path: &str) -> Result<()> {
        let fs = &self.inner;
        fs.writable(path)?;
        let comps = components(path)?;
        let mut ns = fs.ns_write();
        let mut cur = ns.root();
        for i in 0..comps.len() {
            match ns.child(cur, comps[i]) {
                Some(s) if ns.is_dir(s) => cur = s,
                Some(_) => {
                    let kind = if i + 1 == comps.len() {
                        FsErrorKind::Exists
                    } else {
                        FsErrorKind::NotADirectory
                    };
                    return Err(FsError::new(
                        kind,
                        path,
                        format!("{:?} is a file", comps[i]),
                    ));
                }
                None => cur = self.mkdir_locked(&mut ns, Loc::Path(&comps[..=i]), path)?,
            }
        }
        Ok(())
    }

    /// Removes an empty directory (one transaction). Errors: `NotFound`, `NotADirectory`,
    /// `NotEmpty`, `InvalidArgument` (the root).
    pub fn rmdir(&self, path: &str) -> Result<()> {
        let comps = components(path)?;
        self.rmdir_in(Loc::Path(&comps), path)
    }

    /// [`BlobFs::rmdir`] of the entry `loc` names.
    pub(crate) fn rmdir_in(&self, loc: Loc<'_>, path: &str) -> Result<()> {
        let fs = &self.inner;
        fs.writable(path)?;
        let mut ns = fs.ns_write();
        let (dir, s) = ns.resolve_existing(loc, path, "no such directory")?;
        match ns.dir(s) {
            None => {
                return Err(FsError::new(
                    FsErrorKind::NotADirectory,
                    path,
                    "not a directory",
                ))
            }
            Some(c) if c.len() > 0 => {
                return Err(FsError::new(
                    FsErrorKind::NotEmpty,
                    path,
                    format!("{} entries", c.len()),
                ))
            }
            Some(_) => {}
        }
        let ino = ns.inode(s).ino;
        fs.commit(path, |t| {
            t.delete(ino);
            Ok(())
        })?;
        ns.unlink(dir, s);
        ns.remove(s);
        fs.cache.drop_file(ino);
        Ok(())
    }

    /// Removes a file (one transaction). A file still open becomes an orphan: its handles keep
    /// working and the last close deletes it (a mount after a crash deletes it too).
    /// Errors: `NotFound`, `IsADirectory`.
    pub fn unlink(&self, path: &str) -> Result<()> {
        let comps = components(path)?;
        self.unlink_in(Loc::Path(&comps), path)
    }

    /// [`BlobFs::unlink`] of the entry `loc` names.
    pub(crate) fn unlink_in(&self, loc: Loc<'_>, path: &str) -> Result<()> {
        let fs = &self.inner;
        fs.writable(path)?;
        let mut ns = fs.ns_write();
        let (dir, s) = ns.resolve_existing(loc, path, "no such file")?;
        if ns.is_dir(s) {
            return Err(FsError::new(
                FsErrorKind::IsADirectory,
                path,
                "is a directory",
            ));
        }
        let ino = ns.inode(s).ino;
        let open = ns.open.get(&ino).map(|e| Arc::clone(&e.inode));
        fs.commit(path, |t| {
            drop_target(t, ino, open.is_some());
            Ok(())
        })?;
        ns.unlink(dir, s);
        finish_drop(fs, &mut ns, s, open);
        Ok(())
    }

    /// Renames `from` to `to` in one transaction: sets the moved inode's parent and name, and
    /// deletes (or orphans, if open) a replaced target. A directory moves with its whole
    /// subtree (its children name its inode). Errors: `NotFound`, `InvalidArgument` (a
    /// directory into its own subtree, the root), `IsADirectory` (file over directory),
    /// `NotADirectory` (directory over file), `NotEmpty` (over a non-empty directory).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let fc = components(from)?;
        let tc = components(to)?;
        self.rename_in(Loc::Path(&fc), from, Loc::Path(&tc), to, false)
    }

    /// [`BlobFs::rename`] between the entries `src` and `dst` name. With `noreplace`, an
    /// existing target is `Exists` (`RENAME_NOREPLACE`), checked under the namespace lock.
    pub(crate) fn rename_in(
        &self,
        src_loc: Loc<'_>,
        from: &str,
        dst_loc: Loc<'_>,
        to: &str,
        noreplace: bool,
    ) -> Result<()> {
        let fs = &self.inner;
        fs.writable(from)?;
        let mut ns = fs.ns_write();
        let (sdir, sname) = ns.resolve(src_loc, from)?;
        let src = ns
            .child(sdir, sname)
            .ok_or_else(|| FsError::new(FsErrorKind::NotFound, from, "no such entry"))?;
        let (ddir, dname) = ns.resolve(dst_loc, to)?;
        let skind = ns.kind(src);
        if skind == FileType::Dir {
            // Walk up from the destination directory: meeting `src` means a cycle.
            let mut cur = ddir;
            loop {
                if cur == src {
                    return Err(FsError::new(
                        FsErrorKind::InvalidArgument,
                        to,
                        format!("cannot move {from:?} into its own subtree"),
                    ));
                }
                match ns.parent(cur) {
                    Some(p) => cur = p,
                    None => break, // the root
                }
            }
        }
        let target = ns.child(ddir, dname);
        if noreplace && target.is_some() {
            return Err(FsError::new(FsErrorKind::Exists, to, "target exists"));
        }
        if target == Some(src) {
            return Ok(());
        }
        if let Some(t) = target {
            match (skind, ns.kind(t)) {
                (FileType::File, FileType::Dir) => {
                    return Err(FsError::new(
                        FsErrorKind::IsADirectory,
                        to,
                        "target is a directory",
                    ))
                }
                (FileType::Dir, FileType::File) => {
                    return Err(FsError::new(
                        FsErrorKind::NotADirectory,
                        to,
                        "target is a file",
                    ))
                }
                (FileType::Dir, FileType::Dir) => {
                    if ns.dir(t).is_some_and(|c| c.len() > 0) {
                        return Err(FsError::new(
                            FsErrorKind::NotEmpty,
                            to,
                            "target directory is not empty",
                        ));
                    }
                }
                (FileType::File, FileType::File) => {}
            }
        }
        let tino = target.map(|t| ns.inode(t).ino);
        let topen = tino.and_then(|t| ns.open.get(&t).map(|e| Arc::clone(&e.inode)));
        let (src_ino, ddir_ino) = (ns.inode(src).ino, ns.inode(ddir).ino);
        let now = now_ns();
        fs.commit(to, |t| {
            t.set_xattr(src_ino, X_PARENT, &enc_u64(ddir_ino));
            t.set_xattr(src_ino, X_NAME, dname.as_bytes());
            t.set_xattr(src_ino, X_CTIME, &enc_u64(now));
            if let Some(tino) = tino {
                drop_target(t, tino, topen.is_some());
            }
            Ok(())
        })?;
        if let Some(t) = target {
            ns.unlink(ddir, t);
            finish_drop(fs, &mut ns, t, topen);
        }
        ns.unlink(sdir, src);
        ns.set_name(src, dname);
        let i = ns.inode_mut(src);
        i.parent = ddir;
        i.ctime = now;
        ns.link(ddir, src);
        if let Some(e) = ns.open.get(&src_ino) {
            e.inode.set_ctime(now);
        }
        Ok(())
    }

    /// The entries of a directory, sorted by name (the directory's own order: no sort, O(n)
    /// for n entries).
    pub fn readdir(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.readdir_from(path, None, usize::MAX)
    }

    /// A page of a directory: up to `limit` entries whose names sort after `after` (from the
    /// first entry with `None`), sorted by name. To list a directory in pages, pass the last
    /// name returned as the next `after`; an empty page is the end. O(log n + limit) per
    /// call, under the namespace lock taken shared. While the directory changes between
    /// pages, an entry that exists throughout is returned exactly once; entries added or
    /// removed meanwhile may or may not be.
    pub fn readdir_from(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirEntry>> {
        let fs = &self.inner;
        fs.live(path)?;
        let comps = components(path)?;
        let ns = fs.ns_read();
        let s = ns.lookup(&comps, path)?;
        Self::readdir_of(&ns, s, after, limit, path)
    }

    /// Up to `limit` entries of the directory in slot `s` after the name `after`, sorted by
    /// name.
    pub(crate) fn readdir_of(
        ns: &Ns,
        s: Slot,
        after: Option<&str>,
        limit: usize,
        path: &str,
    ) -> Result<Vec<DirEntry>> {
        let children = ns
            .dir(s)
            .ok_or_else(|| FsError::new(FsErrorKind::NotADirectory, path, "not a directory"))?;
        Ok(children.entries_after(after, limit))
    }

    /// Type, size, allocation, times and inode of a path. For an open file, its current
    /// in-memory size and times (what every handle sees).
    pub fn stat(&self, path: &str) -> Result<Metadata> {
        let fs = &self.inner;
        fs.live(path)?;
        let comps = components(path)?;
        let ns = fs.ns_read();
        let s = ns.lookup(&comps, path)?;
        self.stat_slot(&ns, s, path)
    }

    /// [`BlobFs::stat`] of inode `ino`: `NotFound` if there is none.
    pub(crate) fn stat_of(&self, ns: &Ns, ino: u64, path: &str) -> Result<Metadata> {
        let s = ns
            .slot_of(ino)
            .ok_or_else(|| FsError::new(FsErrorKind::NotFound, path, format!("no inode {ino}")))?;
        self.stat_slot(ns, s, path)
    }

    /// [`BlobFs::stat`] of the inode in slot `s`.
    pub(crate) fn stat_slot(&self, ns: &Ns, s: Slot, path: &str) -> Result<Metadata> {
        let fs = &self.inner;
        let i = ns.inode(s);
        let (ino, kind) = (i.ino, i.kind());
        let open = ns.open.get(&ino);
        let (size, mtime, ctime) = match open {
            Some(e) => e.inode.times_and_size(),
            None => (i.size, i.mtime, i.ctime),
        };
        let allocated_bytes = match (kind, open) {
            (FileType::Dir, _) => 0,
            // A closed file's clusters do not change: the inode table has them.
            (FileType::File, None) => i.alloc_clusters * fs.cluster_size,
            // An open file's, from its blob record in memory (no blob opened); clusters a
            // write-behind buffer will allocate count as allocated already.
            (FileType::File, Some(e)) => {
                let c = fs
                    .bs
                    .allocated_clusters(ino)
                    .map_err(|e| FsError::from_bs(e, path))?;
                c * fs.cluster_size + e.inode.pending_alloc_bytes(fs.cluster_size)
            }
        };
        Ok(Metadata {
            ino,
            kind,
            size: if kind == FileType::File { size } else { 0 },
            allocated_bytes,
            mtime_ns: mtime,
            ctime_ns: ctime,
        })
    }

    /// Whether a path names an entry. Bad paths are errors; a missing entry or a file used as
    /// a directory on the way is `Ok(false)`.
    pub fn exists(&self, path: &str) -> Result<bool> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind, FsErrorKind::NotFound | FsErrorKind::NotADirectory) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Space and inode counts.
    pub fn statfs(&self) -> Result<StatFs> {
        let fs = &self.inner;
        fs.live("/")?;
        let files = fs.ns_read().len() as u64;
        let cs = fs.cluster_size;
        Ok(StatFs {
            total_bytes: fs.bs.total_clusters() * cs,
            free_bytes: fs
                .bs
                .free_clusters()
                .map_err(|e| FsError::from_bs(e, "/"))?
                * cs,
            files,
            cluster_size: cs,
        })
    }
}

/// In a transaction: delete `ino`, or make it an orphan if it is open.
fn drop_target(t: &mut Txn, ino: u64, open: bool) {
    if open {
        t.remove_xattr(ino, X_PARENT);
        t.remove_xattr(ino, X_NAME);
        t.set_xattr(ino, X_ORPHAN, &[1]);
    } else {
        t.delete(ino);
    }
}

/// After the transaction of [`drop_target`]: update the in-memory tables. A deleted file's
/// clean chunks are dropped now; an orphan's at its last close.
/// `s` is already unlinked from its directory.
fn finish_drop(fs: &FsInner, ns: &mut Ns, s: Slot, open: Option<Arc<OpenInode>>) {
    match open {
        Some(oi) => {
            oi.mark_orphan();
            ns.orphan(s);
        }
        None => {
            let ino = ns.inode(s).ino;
            ns.remove(s);
            fs.cache.drop_file(ino);
        }
    }
}

/// Called by the last close of an inode: removes it from the open table and deletes it if it
/// is an orphan. Holds the namespace lock.
pub(crate) fn last_close(fs: &FsInner, ino: u64, path: &str) -> Result<()> {
    let mut ns = fs.ns_write();
    let Some(e) = ns.open.get_mut(&ino) else {
        return Ok(()); // unmounted meanwhile
    };
    e.handles = e.handles.saturating_sub(1);
    if e.handles > 0 {
        return Ok(());
    }
    let Some(e) = ns.open.remove(&ino) else {
        return Ok(());
    };
    let (size, mtime, ctime) = e.inode.times_and_size();
    let orphan = e.inode.is_orphan();
    // A closed file's clean chunks stay cached (they match the device); an orphan's go with
    // its blob.
    e.inode.release_blob(fs, !orphan);
    let slot = ns.slot_of(ino);
    if orphan {
        if let Some(s) = slot {
            ns.remove(s);
        }
        if !fs.read_only {
            fs.commit(path, |t| {
                t.delete(ino);
                Ok(())
            })?;
        }
    } else {
        let alloc = fs.bs.allocated_clusters(ino).ok();
        if let Some(s) = slot {
            let i = ns.inode_mut(s);
            i.size = size;
            i.mtime = mtime;
            i.ctime = ctime;
            if let Some(a) = alloc {
                i.alloc_clusters = a;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The directory table with few distinct tags (long collision runs, wrapping at the end
    /// of the table) against a model, through growth, backward-shift deletes and shrinking.
    #[test]
    fn dir_table_matches_a_model_under_collisions() {
        let mut d = Dir::default();
        let mut model: HashMap<Slot, u32> = HashMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000u32 {
            let grow = round < 12_000 || round % 3 == 0;
            if grow || model.is_empty() {
                let slot = round;
                // Tags near the top of the range put home buckets at the end: runs wrap.
                let tag = [0u32, 1, u32::MAX, u32::MAX - 1, 0x8000_0000][(rnd() % 5) as usize]
                    ^ (rnd() % 4) as u32;
                d.put(Entry { tag, slot });
                model.insert(slot, tag);
            } else {
                let &slot = model
                    .keys()
                    .nth((rnd() % model.len() as u64) as usize)
                    .unwrap();
                let tag = model.remove(&slot).unwrap();
                d.take(tag, slot);
            }
            if round % 997 == 0 || round > 19_900 {
                assert_eq!(d.len(), model.len());
                for (&s, &t) in &model {
                    assert_eq!(d.find(t, |c| c == s), Some(s), "round {round}");
                }
                assert_eq!(d.find(7, |_| true), None);
            }
        }
        // Shrinks once mostly empty, and keeps what is left.
        let keys: Vec<(Slot, u32)> = model.iter().map(|(&s, &t)| (s, t)).collect();
        for &(s, t) in &keys[1..] {
            d.take(t, s);
        }
        assert!(d.table.len() <= 64);
        assert_eq!(d.find(keys[0].1, |c| c == keys[0].0), Some(keys[0].0));
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

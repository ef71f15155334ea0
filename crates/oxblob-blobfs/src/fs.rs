//! The mounted file system: mkfs, mount, the namespace (one `RwLock`), and channel pools.

use crate::attr::*;
use crate::cache::{Cache, DEFAULT_CACHE_BYTES};
use crate::error::{FsError, FsErrorKind, Result};
use crate::file::{FileHandle, OpenInode};
use crate::ns::{NewInode, Ns, Pos};
use crate::path::components;
use oxblob_bdev::{BlockDevice, IoChannel};
use oxblob_blobstore::{
    bstype, BlobRecord, BlobStore, BsChannel, CreateOptions, InitOptions, LoadOptions, Txn,
    DEFAULT_CLUSTER_SIZE, DEFAULT_SEGMENT_PAGES,
};
use std::ops::ControlFlow;
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
    /// Metadata the namespace takes, at most (inodes, names, extents: the blobstore's
    /// state; exact after a mount).
    pub md_used_bytes: u64,
    /// The most the metadata may grow to: creates past it fail with `NoSpace`, while deletes
    /// still work.
    pub md_limit_bytes: u64,
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
    /// What is written will not be read back soon (a write-ahead log): written bytes are
    /// not kept in the data cache, which would spend fresh memory and a copy on them. Holds
    /// for the open file (every handle) from this open on.
    pub no_reuse: bool,
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

pub(crate) struct OpenEntry {
    pub(crate) inode: Arc<OpenInode>,
    pub(crate) handles: usize,
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
/// go through `Ns::resolve`, so every operation has one implementation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loc<'a> {
    /// The components of an absolute path (from [`components`]).
    Path(&'a [&'a str]),
    /// A name in the directory with this inode number.
    At(u64, &'a str),
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
        let v = x.value;
        match x.name {
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

/// Builds the namespace from every blob record (by reference, under the store's lock):
/// every inode's record in its parent directory's table, pre-sized (`Ns::build`). Returns it
/// and the orphans to delete.
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
                found.push(NewInode {
                    ino: f.ino,
                    kind: f.kind,
                    parent: f.parent,
                    name: f.name,
                    size: f.size,
                    mtime: f.mtime,
                    ctime: f.ctime,
                    alloc_clusters: f.alloc_clusters,
                });
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
    Ok((Ns::build(root, found)?, orphans))
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
            let pos = match ns.child(dir, name) {
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
                    let dir_ino = ns.dir_ino(dir);
                    let ino = fs.commit(path, |t| {
                        t.create(CreateOptions {
                            num_clusters: 0,
                            thin: true,
                            xattrs: entry_xattrs(FileType::File, dir_ino, name, now),
                        })
                    })?;
                    ns.add(dir, ino, FileType::File, name, 0, now, now, 0)
                }
            };
            let ino = ns.inode(pos).ino;
            if let Some(e) = ns.open.get_mut(&ino) {
                e.handles += 1;
                Arc::clone(&e.inode)
            } else {
                let meta = *ns.inode(pos);
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
        if flags.no_reuse {
            inode.set_no_reuse();
        }
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

    /// [`BlobFs::mkdir`] of the entry `loc` names, under the namespace lock; where the new
    /// directory's record is.
    pub(crate) fn mkdir_locked(&self, ns: &mut Ns, loc: Loc<'_>, path: &str) -> Result<Pos> {
        let fs = &self.inner;
        let (dir, name) = ns.resolve(loc, path)?;
        if ns.child(dir, name).is_some() {
            return Err(FsError::new(FsErrorKind::Exists, path, "entry exists"));
        }
        ns.room(path)?;
        let now = now_ns();
        let dir_ino = ns.dir_ino(dir);
        let ino = fs.commit(path, |t| {
            t.create(CreateOptions {
                num_clusters: 0,
                thin: true,
                xattrs: entry_xattrs(FileType::Dir, dir_ino, name, now),
            })
        })?;
        Ok(ns.add(dir, ino, FileType::Dir, name, 0, now, now, 0))
    }

    /// Creates a directory and every missing ancestor (one transaction per directory created;
    /// a crash in between leaves a prefix). Existing directories are fine; an existing file on
    /// the way is `NotADirectory` (or `Exists` when it is the last component).
    pub fn mkdir_all(&self, path: &str) -> Result<()> {
        let fs = &self.inner;
        fs.writable(path)?;
        let comps = components(path)?;
        let mut ns = fs.ns_write();
        let mut cur = ns.root_dir();
        for i in 0..comps.len() {
            match ns.child(cur, comps[i]).map(|p| ns.dir_id(p)) {
                Some(Some(d)) => cur = d,
                Some(None) => {
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
                None => {
                    let p = self.mkdir_locked(&mut ns, Loc::Path(&comps[..=i]), path)?;
                    cur = ns.dir_id(p).ok_or_else(|| {
                        FsError::new(FsErrorKind::Io, path, "a new directory is not one")
                    })?;
                }
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
        let (_, s) = ns.resolve_existing(loc, path, "no such directory")?;
        match ns.dir_at(s) {
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
        let (_, s) = ns.resolve_existing(loc, path, "no such file")?;
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
        // Walk up from the destination directory: meeting `src` means a cycle.
        if ns.dir_id(src).is_some_and(|d| ns.is_within(ddir, d)) {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                to,
                format!("cannot move {from:?} into its own subtree"),
            ));
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
                    if ns.dir_at(t).is_some_and(|c| c.len() > 0) {
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
        let (src_ino, ddir_ino) = (ns.inode(src).ino, ns.dir_ino(ddir));
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
            finish_drop(fs, &mut ns, t, topen);
        }
        // Dropping the target may have moved the source's record (same table): find it anew.
        if let Some(src) = ns.pos_of(src_ino) {
            ns.rename(src, ddir, dname, now);
        }
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
    /// call (plus folding in the directory's changes since the last listing, amortized O(1)
    /// per change), under the namespace lock taken shared. While the directory changes between
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

    /// Up to `limit` entries of the directory whose record is at `s` after the name `after`,
    /// sorted by name.
    pub(crate) fn readdir_of(
        ns: &Ns,
        s: Pos,
        after: Option<&str>,
        limit: usize,
        path: &str,
    ) -> Result<Vec<DirEntry>> {
        let children = ns
            .dir_at(s)
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
        self.stat_pos(&ns, s, path)
    }

    /// [`BlobFs::stat`] of inode `ino`: `NotFound` if there is none.
    pub(crate) fn stat_of(&self, ns: &Ns, ino: u64, path: &str) -> Result<Metadata> {
        let s = ns
            .pos_of(ino)
            .ok_or_else(|| FsError::new(FsErrorKind::NotFound, path, format!("no inode {ino}")))?;
        self.stat_pos(ns, s, path)
    }

    /// [`BlobFs::stat`] of the inode whose record is at `s`.
    pub(crate) fn stat_pos(&self, ns: &Ns, s: Pos, path: &str) -> Result<Metadata> {
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

    /// The io unit: file reads and writes at offsets and of lengths that are multiples of it
    /// reach the device as they are (the device's block size).
    pub fn io_unit(&self) -> u64 {
        self.inner.io_unit
    }

    /// Space and inode counts.
    pub fn statfs(&self) -> Result<StatFs> {
        let fs = &self.inner;
        fs.live("/")?;
        let files = fs.ns_read().len() as u64;
        let cs = fs.cluster_size;
        let md = fs.bs.md_usage().map_err(|e| FsError::from_bs(e, "/"))?;
        Ok(StatFs {
            md_used_bytes: md.state_bytes,
            md_limit_bytes: md.limit_bytes,
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
/// clean chunks are dropped now; an orphan's at its last close. `s` is where the dropped
/// inode's record is; it leaves its directory here.
fn finish_drop(fs: &FsInner, ns: &mut Ns, s: Pos, open: Option<Arc<OpenInode>>) {
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
    let pos = ns.pos_of(ino);
    if orphan {
        if let Some(s) = pos {
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
        if let Some(s) = pos {
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

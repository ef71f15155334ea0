//! The `fuser::Filesystem` implementation over blobfs's inode-level API.

use fuser::{
    Errno, FileAttr, FileHandle as Fh, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    OpenFlags as FuseOpenFlags, RenameFlags as FuseRenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use oxblob_blobfs::{
    BlobFs, FileHandle, FileType, FsError, Metadata, OpenFlags, RenameFlags, NAME_MAX,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache attributes and entries. blobfs is the only writer of the
/// image while it is mounted (the image lock refuses every other opener, this process's
/// included), and every change goes through this mount, so the kernel's own updates keep its
/// cache right; the timeout only bounds how long a stale entry could live if that ever failed
/// (and how long `st_blocks` may lag behind blobfs's allocation after a write).
const TTL: Duration = Duration::from_secs(60);
/// Largest write request the kernel sends.
const MAX_WRITE: u32 = 1 << 20;
/// Preferred I/O size reported in `st_blksize` (tools size their buffers by it).
const BLKSIZE: u32 = 128 * 1024;
/// Smallest metadata record `statfs` assumes per inode when it estimates free inodes (a
/// file's record with a short name takes about 150 bytes).
const MIN_INODE_BYTES: u64 = 128;
/// Block size reported by `statfs`.
const STATFS_BSIZE: u64 = 4096;
/// Permission bits of every file.
pub(crate) const FILE_PERM: u16 = 0o644;
/// Permission bits of every directory.
pub(crate) const DIR_PERM: u16 = 0o755;

/// One directory listing taken at `opendir`: `.`, `..`, then the entries by name.
type DirSnapshot = Arc<Vec<(u64, FileType, String)>>;

/// The FUSE file system: blobfs plus the open-file and directory-snapshot tables.
pub struct OxFuse {
    fs: BlobFs,
    root: u64,
    uid: u32,
    gid: u32,
    next_fh: AtomicU64,
    files: RwLock<HashMap<u64, Arc<FileHandle>>>,
    dirs: Mutex<HashMap<u64, DirSnapshot>>,
    writeback_cache: bool,
}

impl std::fmt::Debug for OxFuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OxFuse").field("root", &self.root).finish()
    }
}

fn errno(e: &FsError) -> Errno {
    if matches!(
        e.kind,
        oxblob_blobfs::FsErrorKind::Io | oxblob_blobfs::FsErrorKind::Corrupt
    ) {
        tracing::warn!("{e}");
    }
    Errno::from_i32(e.errno())
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    // blobfs names are UTF-8; a name that is not cannot exist and cannot be created.
    name.to_str().ok_or(Errno::EINVAL)
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn ns_of(t: TimeOrNow) -> u64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        Err(_) => 0, // before 1970: blobfs times are unsigned
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OxFuse {
    /// A FUSE file system over a mounted blobfs. Owner is this process's effective user.
    pub fn new(fs: BlobFs) -> Self {
        OxFuse {
            root: fs.root_ino(),
            fs,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            next_fh: AtomicU64::new(1),
            files: RwLock::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            writeback_cache: false,
        }
    }

    /// Asks the kernel for its write-back cache (`FUSE_WRITEBACK_CACHE`): `write(2)` fills
    /// the page cache and returns; the kernel sends the dirty pages later (at the latest on
    /// `close`, `fsync`, `utimensat`, truncation and unmount), in large requests. The kernel
    /// then owns size and mtime while it caches (it trusts its own values over `getattr`'s
    /// and sends them back through `setattr`). Off unless asked for.
    pub fn with_writeback_cache(mut self, on: bool) -> Self {
        self.writeback_cache = on;
        self
    }

    /// FUSE inode → blob id: 1 and the root's blob id swap places.
    fn blob(&self, ino: INodeNo) -> u64 {
        match ino.0 {
            1 => self.root,
            x if x == self.root => 1,
            x => x,
        }
    }

    /// Blob id → FUSE inode (the same swap).
    fn fuse_ino(&self, blob: u64) -> INodeNo {
        INodeNo(match blob {
            x if x == self.root => 1,
            1 => self.root,
            x => x,
        })
    }

    fn attr(&self, m: &Metadata) -> FileAttr {
        let (kind, perm, nlink) = match m.kind {
            FileType::File => (fuser::FileType::RegularFile, FILE_PERM, 1),
            FileType::Dir => (fuser::FileType::Directory, DIR_PERM, 2),
        };
        // Inline files live in metadata: count their bytes so `du` is not 0.
        let bytes = if m.allocated_bytes > 0 {
            m.allocated_bytes
        } else {
            m.size
        };
        FileAttr {
            ino: self.fuse_ino(m.ino),
            size: m.size,
            blocks: bytes.div_ceil(512),
            atime: time(m.mtime_ns),
            mtime: time(m.mtime_ns),
            ctime: time(m.ctime_ns),
            crtime: time(m.ctime_ns),
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    fn handle(&self, fh: Fh) -> Option<Arc<FileHandle>> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .cloned()
    }

    fn insert(&self, h: FileHandle) -> Fh {
        let id = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(h));
        Fh(id)
    }

    fn open_flags(flags: i32) -> Result<OpenFlags, Errno> {
        // Every handle that may write can also read: with the write-back cache the kernel
        // reads the rest of a partly written page through whichever handle writes it, an
        // O_WRONLY one included. The kernel checks each descriptor's own access mode, so
        // this grants the caller nothing.
        let (read, write) = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => (true, false),
            libc::O_WRONLY | libc::O_RDWR => (true, true),
            _ => return Err(Errno::EINVAL),
        };
        Ok(OpenFlags {
            read,
            write,
            create: flags & libc::O_CREAT != 0,
            exclusive: flags & libc::O_EXCL != 0,
            truncate: write && flags & libc::O_TRUNC != 0,
            // The kernel computes the offset of every O_APPEND write from its i_size, which
            // is exact because every change goes through it: blobfs writes where told.
            append: false,
            no_reuse: false,
        })
    }

    /// The parent's inode of directory `blob` (for `..`).
    fn parent_of(&self, blob: u64) -> u64 {
        if blob == self.root {
            return blob;
        }
        self.fs
            .path_of(blob)
            .ok()
            .and_then(|p| {
                let parent = match p.rfind('/') {
                    Some(0) | None => "/".to_string(),
                    Some(i) => p[..i].to_string(),
                };
                self.fs.stat(&parent).ok()
            })
            .map_or(self.root, |m| m.ino)
    }

    #[allow(clippy::too_many_arguments)] // the setattr fields, each optional
    fn set_attr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
        fh: Option<Fh>,
    ) -> Result<Metadata, Errno> {
        let blob = self.blob(ino);
        let cur = self.fs.getattr(blob).map_err(|e| errno(&e))?;
        // Ownership and permissions are fixed: accept exactly the fixed values.
        if let Some(mode) = mode {
            let want = match cur.kind {
                FileType::File => FILE_PERM,
                FileType::Dir => DIR_PERM,
            };
            if mode & 0o7777 != u32::from(want) {
                return Err(Errno::EPERM);
            }
        }
        if uid.is_some_and(|u| u != self.uid) || gid.is_some_and(|g| g != self.gid) {
            return Err(Errno::EPERM);
        }
        if let Some(size) = size {
            if cur.kind == FileType::Dir {
                return Err(Errno::EISDIR);
            }
            match fh.and_then(|f| self.handle(f)) {
                Some(h) => match h.truncate(size) {
                    Ok(()) => {}
                    Err(e) if e.kind == oxblob_blobfs::FsErrorKind::BadHandle => {
                        self.truncate_by_ino(blob, size)?
                    }
                    Err(e) => return Err(errno(&e)),
                },
                None => self.truncate_by_ino(blob, size)?,
            }
        }
        if let Some(t) = mtime {
            self.fs.set_times(blob, ns_of(t)).map_err(|e| errno(&e))?;
        }
        self.fs.getattr(blob).map_err(|e| errno(&e))
    }

    fn truncate_by_ino(&self, blob: u64, size: u64) -> Result<(), Errno> {
        let h = self
            .fs
            .open_ino(blob, OpenFlags::read_write())
            .map_err(|e| errno(&e))?;
        let r = h.truncate(size);
        let c = h.close();
        r.and(c).map_err(|e| errno(&e))
    }

    fn snapshot(&self, blob: u64) -> Result<DirSnapshot, Errno> {
        let entries = self.fs.readdir_ino(blob).map_err(|e| errno(&e))?;
        let mut v = Vec::with_capacity(entries.len() + 2);
        v.push((blob, FileType::Dir, ".".to_string()));
        v.push((self.parent_of(blob), FileType::Dir, "..".to_string()));
        v.extend(entries.into_iter().map(|e| (e.ino, e.kind, e.name)));
        Ok(Arc::new(v))
    }

    fn dir_snapshot(&self, fh: Fh, blob: u64) -> Result<DirSnapshot, Errno> {
        if let Some(s) = lock(&self.dirs).get(&fh.0) {
            return Ok(Arc::clone(s));
        }
        // No opendir snapshot (fh 0): list now.
        self.snapshot(blob)
    }
}

fn ftype(k: FileType) -> fuser::FileType {
    match k {
        FileType::File => fuser::FileType::RegularFile,
        FileType::Dir => fuser::FileType::Directory,
    }
}

impl Filesystem for OxFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        let _ = config.set_max_readahead(MAX_WRITE);
        for cap in [
            fuser::InitFlags::FUSE_DO_READDIRPLUS,
            fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
            fuser::InitFlags::FUSE_PARALLEL_DIROPS,
            fuser::InitFlags::FUSE_ATOMIC_O_TRUNC,
            fuser::InitFlags::FUSE_ASYNC_READ,
        ] {
            // Capabilities the kernel lacks are simply not used.
            let _ = config.add_capabilities(cap);
        }
        if self.writeback_cache
            && config
                .add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            tracing::warn!("the kernel has no FUSE write-back cache; writes go through");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(Errno::EINVAL) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        match self.fs.lookup(self.blob(parent), name) {
            Ok(m) => reply.entry(&TTL, &self.attr(&m), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<Fh>, reply: ReplyAttr) {
        match self.fs.getattr(self.blob(ino)) {
            Ok(m) => reply.attr(&TTL, &self.attr(&m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<Fh>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // atime is not stored (it reads as mtime); setting it alone changes nothing.
        match self.set_attr(ino, mode, uid, gid, size, mtime, fh) {
            Ok(m) => reply.attr(&TTL, &self.attr(&m)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        reply.error(Errno::EINVAL); // there are no symbolic links
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let flags = OpenFlags {
            write: true,
            create: true,
            exclusive: true,
            ..Default::default()
        };
        let r = self
            .fs
            .create_at(self.blob(parent), name, flags)
            .and_then(|h| {
                let ino = h.ino();
                h.close()?;
                self.fs.getattr(ino)
            });
        match r {
            Ok(m) => reply.entry(&TTL, &self.attr(&m), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.mkdir_at(self.blob(parent), name) {
            Ok(m) => reply.entry(&TTL, &self.attr(&m), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(Errno::EINVAL) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        match self.fs.unlink_at(self.blob(parent), name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(Errno::EINVAL) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        match self.fs.rmdir_at(self.blob(parent), name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: FuseRenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(FuseRenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let (name, newname) = match (name_str(name), name_str(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let rf = RenameFlags {
            noreplace: flags.contains(FuseRenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(FuseRenameFlags::RENAME_EXCHANGE),
        };
        match self
            .fs
            .rename_at(self.blob(parent), name, self.blob(newparent), newname, rf)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: FuseOpenFlags, reply: ReplyOpen) {
        let blob = self.blob(ino);
        if blob == self.root || self.fs.kind_of(blob) == Some(FileType::Dir) {
            return reply.error(Errno::EISDIR);
        }
        let of = match Self::open_flags(flags.0) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        match self.fs.open_ino(blob, of) {
            Ok(h) => {
                let fh = self.insert(h);
                reply.opened(fh, FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        size: u32,
        _flags: FuseOpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        match h.read_at(offset, &mut buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: FuseOpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let Ok(n) = u32::try_from(data.len()) else {
            return reply.error(Errno::EINVAL);
        };
        match h.write_at(offset, data) {
            Ok(()) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) of one descriptor: nothing to do until the last one is released (which
        // persists the file); durability is fsync's job.
        if self.handle(fh).is_some() {
            reply.ok();
        } else {
            reply.error(Errno::EBADF);
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _flags: FuseOpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self
            .files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        match h.map(Arc::try_unwrap) {
            None => reply.error(Errno::EBADF),
            Some(Ok(h)) => match h.close() {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            },
            // A request still using it holds the last reference; dropping that closes it.
            Some(Err(_)) => reply.ok(),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: Fh, datasync: bool, reply: ReplyEmpty) {
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let r = if datasync { h.fdatasync() } else { h.fsync() };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: FuseOpenFlags, reply: ReplyOpen) {
        match self.snapshot(self.blob(ino)) {
            Ok(s) => {
                let id = self.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.dirs).insert(id, s);
                reply.opened(Fh(id), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let snap = match self.dir_snapshot(fh, self.blob(ino)) {
            Ok(s) => s,
            Err(e) => return reply.error(e),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (blob, kind, name)) in snap.iter().enumerate().skip(start) {
            if reply.add(self.fuse_ino(*blob), i as u64 + 1, ftype(*kind), name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let snap = match self.dir_snapshot(fh, self.blob(ino)) {
            Ok(s) => s,
            Err(e) => return reply.error(e),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (blob, _kind, name)) in snap.iter().enumerate().skip(start) {
            // An entry removed since the snapshot is skipped.
            let Ok(m) = self.fs.getattr(*blob) else {
                continue;
            };
            if reply.add(
                self.fuse_ino(*blob),
                i as u64 + 1,
                name,
                &TTL,
                &self.attr(&m),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _flags: FuseOpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: Fh, _ds: bool, reply: ReplyEmpty) {
        // Namespace operations commit deferred (no flush of their own): fsyncdir makes every
        // one completed so far durable (one device flush covers the whole log).
        match self.fs.getattr(self.blob(ino)).and_then(|_| self.fs.sync()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => {
                let blocks = s.total_bytes / STATFS_BSIZE;
                let bfree = s.free_bytes / STATFS_BSIZE;
                // blobfs has no inode table: an inode is a blob record in the metadata, which
                // may grow to `md_limit_bytes`. The free count is an estimate: the room left
                // there over the mean record so far (at least MIN_INODE_BYTES).
                let per = (s.md_used_bytes / s.files.max(1)).max(MIN_INODE_BYTES);
                let ffree = s.md_limit_bytes.saturating_sub(s.md_used_bytes) / per;
                reply.statfs(
                    blocks,
                    bfree,
                    bfree,
                    s.files + ffree,
                    ffree,
                    STATFS_BSIZE as u32,
                    NAME_MAX as u32,
                    STATFS_BSIZE as u32,
                );
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // ENOSYS makes the kernel answer every later getxattr itself with EOPNOTSUPP (what
        // callers see, here too) instead of asking on every write for security.capability.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        // As getxattr: the kernel turns ENOSYS into EOPNOTSUPP and stops asking.
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut of = match Self::open_flags(flags) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        // O_CREAT with O_RDONLY still creates: blobfs needs write access to create. The
        // handle keeps it (the kernel checks the descriptor's own mode): no reopen.
        of.write = true;
        of.read = true;
        let r = self
            .fs
            .create_at(self.blob(parent), name, of)
            .and_then(|h| {
                let m = self.fs.getattr(h.ino())?;
                Ok((h, m))
            });
        match r {
            Ok((h, m)) => {
                let fh = self.insert(h);
                reply.created(
                    &TTL,
                    &self.attr(&m),
                    Generation(0),
                    fh,
                    FopenFlags::FOPEN_KEEP_CACHE,
                );
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: Fh,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        // No preallocation, no holes punched, no ranges zeroed or collapsed: blobfs cannot
        // reserve space or free part of a file. posix_fallocate(3) falls back to writes.
        reply.error(Errno::EOPNOTSUPP);
    }
}

//! The inode-level API: the same operations as the path API, addressed by a directory inode
//! and a name (as FUSE addresses them). Every namespace operation here runs the very code of
//! its path twin (`fs.rs`, through [`Loc::At`]), under the same namespace lock, so the two
//! APIs cannot disagree.
//!
//! Inode numbers are blob ids and are never reused, so an inode number a client keeps cannot
//! come to name a different file later. The root's inode number is [`BlobFs::root_ino`] (it is
//! not necessarily 1).

use crate::attr::{enc_u64, now_ns, X_CTIME, X_MTIME};
use crate::error::{FsError, FsErrorKind, Result};
use crate::file::FileHandle;
use crate::fs::{BlobFs, DirEntry, FileType, Loc, Metadata, OpenFlags};

/// Flags of [`BlobFs::rename_at`] (the Linux `renameat2` flags blobfs knows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with `Exists` if the target exists (`RENAME_NOREPLACE`).
    pub noreplace: bool,
    /// Swap source and target (`RENAME_EXCHANGE`): not supported, `InvalidArgument`.
    pub exchange: bool,
}

/// How many times [`BlobFs::open_ino`] retries when a concurrent rename moves the inode
/// between reading its name and opening it.
const OPEN_RETRIES: usize = 16;

impl BlobFs {
    /// The root directory's inode number.
    pub fn root_ino(&self) -> u64 {
        self.inner.root
    }

    /// The absolute path of inode `ino` now (`/` for the root). Errors: `NotFound` (no such
    /// inode, or a file unlinked while open, which has no path any more).
    pub fn path_of(&self, ino: u64) -> Result<String> {
        let fs = &self.inner;
        fs.live("")?;
        let ns = fs.ns_read();
        let mut names = Vec::new();
        let mut cur = ns.pos_of(ino).ok_or_else(|| not_found(ino))?;
        while cur != ns.root() {
            let Some(parent) = ns.parent(cur).and_then(|d| ns.dir_pos(d)) else {
                return Err(not_found(ino));
            };
            names.push(ns.name(cur));
            cur = parent;
            if names.len() > ns.len() {
                return Err(FsError::new(
                    FsErrorKind::Corrupt,
                    "",
                    format!("inode {ino}: parent chain has a cycle"),
                ));
            }
        }
        if names.is_empty() {
            return Ok("/".to_string());
        }
        let mut p = String::new();
        for n in names.iter().rev() {
            p.push('/');
            p.push_str(n);
        }
        Ok(p)
    }

    /// A path for messages about `name` in directory `parent` (best effort: the directory's
    /// path now, or `<inode N>` if it has none).
    fn at_path(&self, parent: u64, name: &str) -> String {
        match self.path_of(parent) {
            Ok(p) if p == "/" => format!("/{name}"),
            Ok(p) => format!("{p}/{name}"),
            Err(_) => format!("<inode {parent}>/{name}"),
        }
    }

    /// Looks `name` up in directory `parent`: the entry's metadata, as [`BlobFs::stat`].
    /// Errors: `NotFound`, `NotADirectory` (`parent`), `NameTooLong`, `InvalidArgument`.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<Metadata> {
        let fs = &self.inner;
        let path = self.at_path(parent, name);
        fs.live(&path)?;
        let ns = fs.ns_read();
        let (_, s) = ns.resolve_existing(Loc::At(parent, name), &path, "no such entry")?;
        self.stat_pos(&ns, s, &path)
    }

    /// The metadata of inode `ino`, as [`BlobFs::stat`] (an open file's current size and
    /// times; a file unlinked while open is still found). Errors: `NotFound`.
    pub fn getattr(&self, ino: u64) -> Result<Metadata> {
        let fs = &self.inner;
        let path = format!("<inode {ino}>");
        fs.live(&path)?;
        let ns = fs.ns_read();
        self.stat_of(&ns, ino, &path)
    }

    /// The entries of directory `ino`, sorted by name. Errors: `NotFound`, `NotADirectory`.
    pub fn readdir_ino(&self, ino: u64) -> Result<Vec<DirEntry>> {
        self.readdir_ino_from(ino, None, usize::MAX)
    }

    /// A page of directory `ino`: up to `limit` entries whose names sort after `after`, as
    /// [`BlobFs::readdir_from`] (a name cursor: an entry that exists throughout a listing is
    /// returned exactly once). Errors: `NotFound`, `NotADirectory`.
    pub fn readdir_ino_from(
        &self,
        ino: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirEntry>> {
        let fs = &self.inner;
        let path = format!("<inode {ino}>");
        fs.live(&path)?;
        let ns = fs.ns_read();
        let s = ns.pos_of(ino).ok_or_else(|| not_found(ino))?;
        BlobFs::readdir_of(&ns, s, after, limit, &path)
    }

    /// Opens the existing file `ino`, as [`BlobFs::open`] (`create` and `exclusive` are
    /// ignored: the file exists). Errors: `NotFound` (no such inode, or unlinked),
    /// `IsADirectory`, `InvalidArgument` (bad flags), `ReadOnly`.
    pub fn open_ino(&self, ino: u64, flags: OpenFlags) -> Result<FileHandle> {
        if ino == self.inner.root {
            return Err(FsError::new(
                FsErrorKind::IsADirectory,
                "/",
                "the root is a directory",
            ));
        }
        // Open by the inode's current (parent, name); a rename between reading the name and
        // opening it is detected by the inode number and retried. Truncation waits until the
        // right file is open.
        let plain = OpenFlags {
            create: false,
            exclusive: false,
            truncate: false,
            ..flags
        };
        for _ in 0..OPEN_RETRIES {
            let (parent, name) = {
                let ns = self.inner.ns_read();
                let s = ns.pos_of(ino).ok_or_else(|| not_found(ino))?;
                let Some(p) = ns.parent(s) else {
                    return Err(not_found(ino));
                };
                (ns.dir_ino(p), ns.name(s).to_string())
            };
            let path = self.at_path(parent, &name);
            let h = match self.open_in(Loc::At(parent, &name), plain, &path) {
                Ok(h) => h,
                Err(e) if e.kind == FsErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if h.ino() != ino {
                // Not ours: another file took the name meanwhile. Nothing was changed.
                h.close()?;
                continue;
            }
            if flags.truncate {
                h.truncate(0)?;
            }
            return Ok(h);
        }
        Err(FsError::new(
            FsErrorKind::Io,
            &format!("<inode {ino}>"),
            "inode kept moving under concurrent renames",
        ))
    }

    /// Creates (or, without `exclusive`, opens) the file `name` in directory `parent`, as
    /// [`BlobFs::open`] with `create` set (forced on here). Creating is one transaction,
    /// durable on return. Errors: `Exists` (with `exclusive`), `IsADirectory`, `NotFound`/
    /// `NotADirectory` (`parent`), `NameTooLong`, `InvalidArgument`.
    pub fn create_at(&self, parent: u64, name: &str, flags: OpenFlags) -> Result<FileHandle> {
        let path = self.at_path(parent, name);
        let flags = OpenFlags {
            create: true,
            ..flags
        };
        self.open_in(Loc::At(parent, name), flags, &path)
    }

    /// Creates directory `name` in `parent` (one transaction, durable on return), as
    /// [`BlobFs::mkdir`]; returns its metadata.
    pub fn mkdir_at(&self, parent: u64, name: &str) -> Result<Metadata> {
        let fs = &self.inner;
        let path = self.at_path(parent, name);
        fs.writable(&path)?;
        let mut ns = fs.ns_write();
        let s = self.mkdir_locked(&mut ns, Loc::At(parent, name), &path)?;
        self.stat_pos(&ns, s, &path)
    }

    /// Removes the file `name` from `parent`, as [`BlobFs::unlink`].
    pub fn unlink_at(&self, parent: u64, name: &str) -> Result<()> {
        let path = self.at_path(parent, name);
        self.unlink_in(Loc::At(parent, name), &path)
    }

    /// Removes the empty directory `name` from `parent`, as [`BlobFs::rmdir`].
    pub fn rmdir_at(&self, parent: u64, name: &str) -> Result<()> {
        let path = self.at_path(parent, name);
        self.rmdir_in(Loc::At(parent, name), &path)
    }

    /// Renames `name` in `parent` to `new_name` in `new_parent`, as [`BlobFs::rename`] (one
    /// transaction). With `flags.noreplace`, an existing target is `Exists`;
    /// `flags.exchange` is `InvalidArgument` (not supported).
    pub fn rename_at(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        flags: RenameFlags,
    ) -> Result<()> {
        let from = self.at_path(parent, name);
        let to = self.at_path(new_parent, new_name);
        if flags.exchange {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                &to,
                "RENAME_EXCHANGE is not supported",
            ));
        }
        self.rename_in(
            Loc::At(parent, name),
            &from,
            Loc::At(new_parent, new_name),
            &to,
            flags.noreplace,
        )
    }

    /// Sets the modification time of `ino` (ns since the Unix epoch) and the change time to
    /// now; returns the new metadata. blobfs keeps no access time, so there is no atime to
    /// set. For a file that is open, the times change in its in-memory inode (every handle
    /// sees them) and are persisted by its next fsync, its last close or the unmount; otherwise
    /// they are written in one transaction, durable on return. Errors: `NotFound`, `ReadOnly`.
    pub fn set_times(&self, ino: u64, mtime_ns: u64) -> Result<Metadata> {
        let fs = &self.inner;
        let path = format!("<inode {ino}>");
        fs.writable(&path)?;
        let mut ns = fs.ns_write();
        let now = now_ns();
        if let Some(e) = ns.open.get(&ino) {
            e.inode.set_times(mtime_ns, now);
        } else {
            if ns.pos_of(ino).is_none() {
                return Err(not_found(ino));
            }
            fs.commit(&path, |t| {
                t.set_xattr(ino, X_MTIME, &enc_u64(mtime_ns));
                t.set_xattr(ino, X_CTIME, &enc_u64(now));
                Ok(())
            })?;
        }
        if let Some(s) = ns.pos_of(ino) {
            let i = ns.inode_mut(s);
            i.mtime = mtime_ns;
            i.ctime = now;
        }
        self.stat_of(&ns, ino, &path)
    }

    /// Whether `ino` is a directory (`None`: no such inode).
    pub fn kind_of(&self, ino: u64) -> Option<FileType> {
        let ns = self.inner.ns_read();
        ns.pos_of(ino).map(|s| ns.kind(s))
    }
}

fn not_found(ino: u64) -> FsError {
    FsError::new(
        FsErrorKind::NotFound,
        &format!("<inode {ino}>"),
        "no such inode",
    )
}

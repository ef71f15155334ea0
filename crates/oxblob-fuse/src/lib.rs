//! # oxblob-fuse — a blobfs image as an ordinary directory tree
//!
//! This crate owns the FUSE adapter: it translates the kernel's inode-addressed requests
//! (through [`fuser`] 0.18, which mounts with pure Rust as root, no libfuse) into calls of
//! blobfs's inode-level API (`BlobFs::lookup`, `getattr`, `open_ino`, `create_at`, ...), maps
//! `FsError`s to errnos with `FsError::errno`, keeps the table of open file handles and of
//! directory snapshots, checks mount points, runs the session with several worker threads, and
//! unmounts cleanly (kernel unmount, then `BlobFs::unmount`) when the mount goes away or on
//! SIGINT/SIGTERM.
//!
//! It does **not** own: the file system itself, its durability or its crash behaviour
//! (`oxblob-blobfs`); devices and image locking (`oxblob-bdev`: a second open of an image
//! file fails with `BdevError::InUse`); daemonizing and the command line (`oxblob mount` in
//! `oxblob-cli`).
//!
//! ## What the mount offers
//! - Regular files and directories; reads and writes at any offset (`max_write` 1 MiB, large
//!   reads), truncate through `setattr`, `mtime` through `utimensat` (persisted), `fsync` and
//!   `fdatasync` that make data and metadata durable (`FileHandle::fsync`), `fsyncdir`
//!   (namespace operations are already durable when they return), `statfs` with the real
//!   totals, `rename` with `RENAME_NOREPLACE`.
//! - Fixed ownership and permissions: every inode belongs to the user that mounted, files are
//!   `0644`, directories `0755` (blobfs stores neither). `chmod`/`chown` to these values
//!   succeed; to anything else they fail with `EPERM`. There is no access time: `atime`
//!   reads as `mtime` and setting it alone is accepted and ignored.
//! - `EOPNOTSUPP` for what blobfs does not have: `fallocate` (every mode), hard and symbolic
//!   links, extended attributes, `mknod` of anything but a regular file; `EINVAL` for
//!   `RENAME_EXCHANGE` and `RENAME_WHITEOUT`.
//! - The kernel page cache is used (`FOPEN_KEEP_CACHE`: every change goes through this one
//!   mount, so cached pages cannot go stale), with its write-back cache by default
//!   ([`MountConfig::writeback_cache`]): `write(2)` returns once the page cache has the data,
//!   the kernel sends dirty pages in large requests at the latest on `close`, `fsync`,
//!   `utimensat`, truncation and unmount, and owns size and mtime while it caches (it sends
//!   them back through `setattr`). Every handle that may write is opened read-write in blobfs,
//!   as the kernel reads the rest of a partly written page through it. Errors of delayed
//!   writes (`ENOSPC`) surface at `close`/`fsync`, as on NFS.
//! - Attributes and entries are cached by the kernel for 60 s, read-ahead is 1 MiB (raised
//!   through `/sys/class/bdi` when root), directory operations run in parallel
//!   (`FUSE_PARALLEL_DIROPS`) and reads asynchronously (`FUSE_ASYNC_READ`). The long TTL is
//!   safe because blobfs is the only writer of the image while it is mounted: the image lock
//!   (`BdevError::InUse`) refuses every other opener, and every change goes through the mount.
//! - No `allow_other` unless asked for ([`MountConfig::allow_other`]);
//!   `default_permissions` is always on, so the kernel checks the fixed modes.
//!
//! ## Concurrency contract
//! The session runs [`MountConfig::threads`] worker threads, each with its own cloned
//! `/dev/fuse` descriptor; any request may run on any of them at the same time as any other.
//! The adapter adds no lock around blobfs (whose own contract applies: namespace operations
//! serialize on its namespace lock, data I/O on a file's own lock) except two short ones: the
//! open-file table (a `RwLock`, taken shared to find a handle, exclusive to add or remove one)
//! and the directory-snapshot table (a `Mutex`). A `readdir` stream reads the snapshot taken
//! at `opendir`, so entries added or removed meanwhile do not shift its offsets. Inode
//! numbers are blob ids, never reused, so `forget` needs no bookkeeping; FUSE's inode 1 is
//! blobfs's root (its blob id swaps places with 1).
//!
//! ## Unmounting
//! The session ends when the kernel drops the mount (`umount`, `fusermount3 -u`,
//! `oxblob umount`, or [`Mounted::unmount`]); [`run`] then unmounts blobfs, which persists
//! every open file and unloads the store cleanly. On SIGINT or SIGTERM, [`run`] unmounts the
//! mount point itself (lazily if it is busy, so open files are closed first) and ends the
//! same way. After SIGKILL nothing is flushed: what was `fsync`ed survives, as after a power
//! cut, and the next mount recovers.

mod adapter;
mod mountpoint;

/// Read-ahead window of the mount (KiB): one largest FUSE request (`max_write`, 1 MiB).
const READAHEAD_KIB: u32 = 1024;
use mountpoint::raise_readahead;

pub use adapter::OxFuse;
pub use mountpoint::{
    check_mountpoint, find_mount, image_file, is_mounted, mounts, unmount_now, unmount_path,
    wait_image_released, MountEntry,
};

use oxblob_blobfs::{BlobFs, FsError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Let other users use the mount (`allow_other`). Off by default.
    pub allow_other: bool,
    /// Worker threads of the FUSE session (at least 1). Default 4.
    pub threads: usize,
    /// Shown as the mount's source in `/proc/self/mountinfo` and `df`, e.g. the image path.
    pub source: String,
    /// Mount read-only (the blobfs must be mounted read-only too).
    pub read_only: bool,
    /// Use the kernel's write-back cache (`FUSE_WRITEBACK_CACHE`): `write(2)` returns once
    /// the page cache has the data, which reaches blobfs later in large requests (at the
    /// latest on `close`, `fsync`, `utimensat`, truncation and unmount). `fsync` stays
    /// durable (the kernel sends its dirty pages first); after a crash of the server, what
    /// was not `fsync`ed may be lost either way. On by default.
    pub writeback_cache: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            allow_other: false,
            threads: 4,
            source: "oxblob".to_string(),
            read_only: false,
            writeback_cache: true,
        }
    }
}

/// Errors of mounting and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount point is unusable: missing, not a directory, not empty, already a mount.
    #[error("{path}: {why}")]
    MountPoint {
        /// The mount point.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The kernel mount or the FUSE session failed.
    #[error("{what}: {err}")]
    Fuse {
        /// What was being done.
        what: String,
        /// The I/O error.
        err: std::io::Error,
    },
    /// The final `BlobFs::unmount` failed: the image may need recovery at the next mount.
    #[error("unmounting the file system: {0}")]
    Unmount(FsError),
}

fn fuse_config(cfg: &MountConfig) -> fuser::Config {
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        fuser::MountOption::FSName(cfg.source.clone()),
        fuser::MountOption::Subtype("oxblob".to_string()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoAtime,
        if cfg.read_only {
            fuser::MountOption::RO
        } else {
            fuser::MountOption::RW
        },
    ];
    c.acl = if cfg.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    c.n_threads = Some(cfg.threads.max(1));
    c.clone_fd = true;
    c
}

fn session(
    fs: &BlobFs,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> Result<fuser::Session<OxFuse>, MountError> {
    check_mountpoint(mountpoint)?;
    let canonical = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let ox = OxFuse::new(fs.clone()).with_writeback_cache(cfg.writeback_cache && !cfg.read_only);
    let s =
        fuser::Session::new(ox, mountpoint, &fuse_config(cfg)).map_err(|err| MountError::Fuse {
            what: format!("mounting FUSE at {}", mountpoint.display()),
            err,
        })?;
    // The handshake is done: the kernel clipped `max_readahead` to its default window
    // (128 KiB); widen the window itself to a whole `max_write`.
    raise_readahead(&canonical, READAHEAD_KIB);
    Ok(s)
}

/// Mounts `fs` at `mountpoint` and serves it until the mount goes away or SIGINT/SIGTERM
/// arrives; then unmounts blobfs (everything persisted, the image clean). `ready` is called
/// once the mount is live (e.g. to print where it is). Blocks.
pub fn run(
    fs: BlobFs,
    mountpoint: &Path,
    cfg: &MountConfig,
    ready: impl FnOnce(&Path),
) -> Result<(), MountError> {
    let session = match session(&fs, mountpoint, cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = fs.unmount();
            return Err(e);
        }
    };
    let mp: PathBuf = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let stop = Arc::new(AtomicBool::new(false));
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]);
    let mut handle = None;
    match signals {
        Ok(mut signals) => {
            handle = Some(signals.handle());
            let mp = mp.clone();
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("oxblob-fuse-signals".to_string())
                .spawn(move || {
                    if signals.forever().next().is_some() {
                        stop.store(true, Ordering::Release);
                        if let Err(e) = unmount_path(&mp) {
                            tracing::warn!("unmounting {} on signal: {e}", mp.display());
                        }
                    }
                })
                .map_err(|err| MountError::Fuse {
                    what: "starting the signal thread".to_string(),
                    err,
                })?;
        }
        Err(e) => tracing::warn!("cannot catch SIGINT/SIGTERM: {e}"),
    }
    ready(&mp);
    let served = session.run().map_err(|err| MountError::Fuse {
        what: format!("serving FUSE at {}", mp.display()),
        err,
    });
    if let Some(h) = handle {
        h.close();
    }
    let unmounted = fs.unmount().map_err(MountError::Unmount);
    served.and(unmounted)
}

/// A mount served by background threads of this process (tests and embedding).
pub struct Mounted {
    fs: BlobFs,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .finish()
    }
}

/// Mounts `fs` at `mountpoint`, served by background threads; returns once the mount is live.
pub fn spawn(fs: BlobFs, mountpoint: &Path, cfg: &MountConfig) -> Result<Mounted, MountError> {
    let s = match session(&fs, mountpoint, cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = fs.unmount();
            return Err(e);
        }
    };
    let session = s.spawn().map_err(|err| MountError::Fuse {
        what: "starting the FUSE session".to_string(),
        err,
    })?;
    Ok(Mounted {
        fs,
        mountpoint: mountpoint
            .canonicalize()
            .unwrap_or_else(|_| mountpoint.to_path_buf()),
        session: Some(session),
    })
}

impl Mounted {
    /// The mount point (canonical).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts (the kernel mount, then blobfs: everything persisted, the image clean).
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), MountError> {
        let Some(s) = self.session.take() else {
            return Ok(());
        };
        let served = s.umount_and_join().map_err(|err| MountError::Fuse {
            what: format!("unmounting {}", self.mountpoint.display()),
            err,
        });
        let unmounted = self.fs.unmount().map_err(MountError::Unmount);
        served.and(unmounted)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("unmounting {}: {e}", self.mountpoint.display());
        }
    }
}

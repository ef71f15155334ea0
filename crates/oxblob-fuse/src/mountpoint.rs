//! Mount points: the checks before mounting, `/proc/self/mountinfo`, and unmounting.

use crate::MountError;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo` (the fields oxblob needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// File-system type, e.g. `fuse.oxblob`.
    pub fstype: String,
    /// The source, e.g. the image path.
    pub source: String,
}

fn bad(path: &Path, why: impl Into<String>) -> MountError {
    MountError::MountPoint {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// Checks that `path` can be a mount point: it exists, is a directory, is empty, and is not
/// already a mount point.
pub fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let md = std::fs::metadata(path).map_err(|e| bad(path, e.to_string()))?;
    if !md.is_dir() {
        return Err(bad(path, "not a directory"));
    }
    let mut rd = std::fs::read_dir(path).map_err(|e| bad(path, e.to_string()))?;
    if rd.next().is_some() {
        return Err(bad(path, "directory is not empty"));
    }
    if let Some(m) = find_mount(path) {
        return Err(bad(
            path,
            format!("already a mount point ({} from {})", m.fstype, m.source),
        ));
    }
    Ok(())
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount of this process's mount namespace.
pub fn mounts() -> Vec<MountEntry> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mountpoint = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let source = post.next().unwrap_or("");
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape(mountpoint)),
                fstype: unescape(fstype),
                source: unescape(source),
            })
        })
        .collect()
}

/// The mount whose mount point is `path` (canonicalized), if any (the last one, which is
/// the visible one).
pub fn find_mount(path: &Path) -> Option<MountEntry> {
    let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts().into_iter().rev().find(|m| m.mountpoint == p)
}

/// Whether `path` is an oxblob FUSE mount point.
pub fn is_mounted(path: &Path) -> bool {
    find_mount(path).is_some_and(|m| m.fstype == "fuse.oxblob" || m.fstype == "fuse")
}

/// Unmounts `path` with `umount2`; if it is busy, detaches it lazily (the kernel finishes
/// the unmount when its last open file is closed). Needs root (or use `fusermount3 -u`).
pub fn unmount_path(path: &Path) -> std::io::Result<()> {
    use rustix::mount::{unmount, UnmountFlags};
    match unmount(path, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::BUSY => {
            unmount(path, UnmountFlags::DETACH).map_err(std::io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Unmounts `path` with `umount2`, failing with `EBUSY` while files are open there (as
/// `umount` does). Needs root (or use `fusermount3 -u`).
pub fn unmount_now(path: &Path) -> std::io::Result<()> {
    rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty()).map_err(Into::into)
}

/// The image file behind a mount source that names one (`file:`, `psync:`, `uring:` or a bare
/// path, options after `?` dropped), if it exists.
pub fn image_file(source: &str) -> Option<PathBuf> {
    let s = ["file:", "psync:", "uring:"]
        .iter()
        .find_map(|p| source.strip_prefix(p))
        .unwrap_or(source);
    let s = s.split('?').next().unwrap_or(s);
    let p = PathBuf::from(s);
    p.is_file().then_some(p)
}

/// Waits until no process holds the image lock (`flock`) on `image` any more, i.e. the
/// daemon serving it has unmounted blobfs and exited. Returns false on timeout.
pub fn wait_image_released(image: &Path, timeout: std::time::Duration) -> std::io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    let f = std::fs::File::open(image)?;
    let start = std::time::Instant::now();
    loop {
        match flock(&f, FlockOperation::NonBlockingLockShared) {
            Ok(()) => {
                flock(&f, FlockOperation::Unlock)?;
                return Ok(true);
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
            Err(e) => return Err(e.into()),
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Raises the read-ahead window of the FUSE mount at `mp` (canonical) to `kib` KiB through
/// its backing-device entry `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`: the kernel caps the
/// `max_readahead` a FUSE server may ask for at that value (128 KiB by default), and only
/// root may raise it. Reads `/proc/self/mountinfo` only (never the mount itself, which may
/// not be served yet). Best effort: returns whether it was set.
pub(crate) fn raise_readahead(mp: &Path, kib: u32) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let dev = text.lines().rev().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut f = pre.split(' ');
        let dev = f.nth(2)?;
        let at = f.nth(1)?;
        (PathBuf::from(unescape(at)) == mp && post.starts_with("fuse")).then(|| dev.to_string())
    });
    let Some(dev) = dev else {
        return false;
    };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&path, kib.to_string()) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("raising the read-ahead of {}: {path}: {e}", mp.display());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn rejects_bad_mountpoints_by_reason() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("missing");
        assert!(check_mountpoint(&missing).is_err());
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = check_mountpoint(&file).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = check_mountpoint(d.path()).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        check_mountpoint(&empty).unwrap();
        let e = check_mountpoint(Path::new("/proc"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not empty") || e.contains("mount point"), "{e}");
    }
}

//! The inode attributes stored as blob xattrs (see `docs/format.md`, blobfs section), and their codecs.

use crate::error::{FsError, FsErrorKind, Result};

/// User xattr: inode type, one byte ([`TYPE_FILE`] or [`TYPE_DIR`]).
pub const X_TYPE: &str = "type";
/// User xattr: file size in bytes, u64 LE (absent on directories).
pub const X_SIZE: &str = "size";
/// User xattr: modification time, ns since the Unix epoch, u64 LE.
pub const X_MTIME: &str = "mtime";
/// User xattr: status-change time, ns since the Unix epoch, u64 LE.
pub const X_CTIME: &str = "ctime";
/// User xattr: parent directory inode, u64 LE (absent on the root and on orphans).
pub const X_PARENT: &str = "parent";
/// User xattr: the entry name in the parent, UTF-8, 1..=255 bytes (absent like `parent`).
pub const X_NAME: &str = "name";
/// User xattr: present (one byte, 1) on an inode unlinked while open; deleted at mount.
pub const X_ORPHAN: &str = "orphan";
/// Internal xattr: the data of an inline (small) file.
pub const X_INLINE: &str = "inline";

/// `type` value of a regular file.
pub const TYPE_FILE: u8 = 1;
/// `type` value of a directory.
pub const TYPE_DIR: u8 = 2;

/// Largest file kept inline in its blob's metadata (no cluster): 2 KiB.
pub const INLINE_MAX: u64 = 2048;

/// Encodes a u64 attribute.
pub fn enc_u64(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Decodes a u64 attribute of inode `ino`.
pub fn dec_u64(v: &[u8], what: &str, ino: u64) -> Result<u64> {
    let b: [u8; 8] = v.try_into().map_err(|_| {
        FsError::new(
            FsErrorKind::Corrupt,
            "",
            format!("inode {ino}: xattr {what} has {} bytes, not 8", v.len()),
        )
    })?;
    Ok(u64::from_le_bytes(b))
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

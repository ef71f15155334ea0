//! Path parsing: absolute paths with `/`, `.` and `..` resolved lexically (there are no
//! symbolic links, so lexical resolution is exact).

use crate::error::{FsError, FsErrorKind, Result};

/// Longest name of one directory entry, in bytes.
pub const NAME_MAX: usize = 255;

/// Splits an absolute path into its components after resolving `.`, `..` and repeated `/`.
/// `..` at the root stays at the root, as in POSIX. Errors: a relative or empty path, a NUL
/// byte (`InvalidArgument`), a component over [`NAME_MAX`] bytes (`NameTooLong`).
pub fn components(path: &str) -> Result<Vec<&str>> {
    if !path.starts_with('/') {
        return Err(FsError::new(
            FsErrorKind::InvalidArgument,
            path,
            "paths must be absolute (start with '/')",
        ));
    }
    if path.contains('\0') {
        return Err(FsError::new(
            FsErrorKind::InvalidArgument,
            path,
            "paths must not contain NUL",
        ));
    }
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            name => {
                if name.len() > NAME_MAX {
                    return Err(FsError::new(
                        FsErrorKind::NameTooLong,
                        path,
                        format!("component of {} bytes (max {NAME_MAX})", name.len()),
                    ));
                }
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// Checks a single entry name (as stored): 1..=255 bytes, no `/` or NUL, not `.` or `..`.
pub(crate) fn check_name(name: &str, path: &str) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::new(
            FsErrorKind::NameTooLong,
            path,
            format!("name of {} bytes (max {NAME_MAX})", name.len()),
        ));
    }
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(FsError::new(
            FsErrorKind::InvalidArgument,
            path,
            format!("invalid entry name {name:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolves_dots_and_slashes() {
        assert_eq!(components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(components("//a///b/").unwrap(), vec!["a", "b"]);
        assert_eq!(components("/a/./b/../c").unwrap(), vec!["a", "c"]);
        assert_eq!(components("/../..").unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn rejects_bad_paths_by_kind() {
        assert_eq!(
            components("a/b").unwrap_err().kind,
            FsErrorKind::InvalidArgument
        );
        assert_eq!(
            components("").unwrap_err().kind,
            FsErrorKind::InvalidArgument
        );
        assert_eq!(
            components("/a\0b").unwrap_err().kind,
            FsErrorKind::InvalidArgument
        );
        let long = format!("/{}", "x".repeat(256));
        assert_eq!(
            components(&long).unwrap_err().kind,
            FsErrorKind::NameTooLong
        );
        let ok = format!("/{}", "x".repeat(255));
        assert_eq!(components(&ok).unwrap().len(), 1);
    }
}

//! A blob's extended attributes ([`Xattrs`]), kept in memory in the same packed bytes as on
//! disk (see [`crate::blob`]).
//!
//! Every blob's record stays in memory while its store is loaded, so the representation of
//! its xattrs is paid once per blob: a blobfs inode has six of them (`type`, `size`, `mtime`,
//! `ctime`, `parent`, `name`). As a vector of structs (name, value, flag: 56 bytes each,
//! names and values inline) they took 336 bytes; packed, one buffer of about 110. Encoding
//! a record copies the buffer; decoding checks each entry and copies it once.

use crate::codec::Reader;
use crate::{DecodeError, MAX_XATTR_NAME, MAX_XATTR_VALUE};
use std::collections::BTreeSet;
use std::fmt;

/// Bytes of an entry before its name: flags u8, name_len u8, value_len u32 LE.
const HEAD: usize = 6;
/// Entry flag: internal to the blobstore.
const FLAG_INTERNAL: u8 = 1;

/// One extended attribute, borrowed from a record's [`Xattrs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrRef<'a> {
    /// Name, 1..=255 bytes of UTF-8.
    pub name: &'a str,
    /// Value, at most 64 KiB.
    pub value: &'a [u8],
    /// Internal to the blobstore (not listed with user xattrs).
    pub internal: bool,
}

/// The extended attributes of one blob, in insertion order: each entry is
/// `{ flags u8 (bit 0 INTERNAL), name_len u8, value_len u32 LE, name, value }`, back to back
/// in one buffer — exactly the record's on-disk encoding of them. No two entries share
/// (internal, name); names are 1..=255 bytes of UTF-8 and values at most
/// [`MAX_XATTR_VALUE`] bytes, enforced by every way in.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Xattrs {
    count: u32,
    bytes: Vec<u8>,
}

/// Iterator over [`Xattrs`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = XattrRef<'a>;

    fn next(&mut self) -> Option<XattrRef<'a>> {
        let (x, len) = entry(self.rest)?;
        self.rest = self.rest.get(len..).unwrap_or(&[]);
        Some(x)
    }
}

/// The entry at the start of `b` and its length in bytes (`None` at the end). The buffer
/// holds only entries checked on the way in, so the fallbacks never apply.
fn entry(b: &[u8]) -> Option<(XattrRef<'_>, usize)> {
    let head = b.get(..HEAD)?;
    let nl = usize::from(head[1]);
    let vl = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let name = b.get(HEAD..HEAD + nl)?;
    let value = b.get(HEAD + nl..HEAD + nl + vl)?;
    Some((
        XattrRef {
            name: std::str::from_utf8(name).unwrap_or_default(),
            value,
            internal: head[0] & FLAG_INTERNAL != 0,
        },
        HEAD + nl + vl,
    ))
}

fn check_lengths(name: &str, value: &[u8]) -> Result<(), DecodeError> {
    if name.is_empty() || name.len() > MAX_XATTR_NAME {
        return Err(DecodeError::invalid(
            "blob record xattr name",
            format!("length {} not in 1..=255", name.len()),
        ));
    }
    if value.len() > MAX_XATTR_VALUE {
        return Err(DecodeError::invalid(
            "blob record xattr value",
            format!("length {} exceeds {MAX_XATTR_VALUE}", value.len()),
        ));
    }
    Ok(())
}

/// Appends the encoding of one entry (lengths already checked).
fn put_entry(out: &mut Vec<u8>, name: &str, value: &[u8], internal: bool) {
    out.push(if internal { FLAG_INTERNAL } else { 0 });
    out.push(name.len() as u8);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(value);
}

impl Xattrs {
    /// No xattrs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of xattrs (user and internal).
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// No xattrs, with room for `bytes` bytes of entries (each takes 6 bytes plus its name
    /// and value).
    pub fn with_capacity(bytes: usize) -> Self {
        Xattrs {
            count: 0,
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// The xattrs in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.bytes }
    }

    /// Byte range of the entry (internal, name).
    fn find(&self, name: &str, internal: bool) -> Option<(usize, usize)> {
        let mut at = 0;
        while let Some((x, len)) = self.bytes.get(at..).and_then(entry) {
            if x.internal == internal && x.name == name {
                return Some((at, len));
            }
            at += len;
        }
        None
    }

    /// The value of xattr `name` (internal or user).
    pub fn get(&self, name: &str, internal: bool) -> Option<&[u8]> {
        let (at, len) = self.find(name, internal)?;
        let vstart = at + HEAD + name.len();
        self.bytes.get(vstart..at + len)
    }

    /// True when xattr `name` (internal or user) exists.
    pub fn contains(&self, name: &str, internal: bool) -> bool {
        self.find(name, internal).is_some()
    }

    /// Sets or replaces xattr `name`. A value of the same length is overwritten in place;
    /// the buffer grows by exactly what an entry needs (records stay in memory, so no slack).
    /// Errors: a name not of 1..=255 bytes, a value over [`MAX_XATTR_VALUE`] bytes.
    pub fn set(&mut self, name: &str, value: &[u8], internal: bool) -> Result<(), DecodeError> {
        check_lengths(name, value)?;
        match self.find(name, internal) {
            Some((at, len)) if len == HEAD + name.len() + value.len() => {
                self.bytes[at + HEAD + name.len()..at + len].copy_from_slice(value);
            }
            Some((at, len)) => {
                let mut e = Vec::with_capacity(HEAD + name.len() + value.len());
                put_entry(&mut e, name, value, internal);
                self.bytes.splice(at..at + len, e);
                self.bytes.shrink_to_fit();
            }
            None => {
                self.bytes.reserve_exact(HEAD + name.len() + value.len());
                put_entry(&mut self.bytes, name, value, internal);
                self.count += 1;
            }
        }
        Ok(())
    }

    /// Removes xattr `name` (internal or user); false if it was absent.
    pub fn remove(&mut self, name: &str, internal: bool) -> bool {
        match self.find(name, internal) {
            Some((at, len)) => {
                self.bytes.drain(at..at + len);
                self.bytes.shrink_to_fit();
                self.count -= 1;
                true
            }
            None => false,
        }
    }

    /// Keeps only the xattrs `keep` accepts, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(XattrRef<'_>) -> bool) {
        let mut out = Xattrs::new();
        for x in self.iter() {
            if keep(x) {
                put_entry(&mut out.bytes, x.name, x.value, x.internal);
                out.count += 1;
            }
        }
        if out.count != self.count {
            out.bytes.shrink_to_fit();
            *self = out;
        }
    }

    /// Bytes of the encoding (without the count, which the record holds).
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The encoding: the entries back to back.
    pub fn as_encoded(&self) -> &[u8] {
        &self.bytes
    }

    /// Reads `count` entries, checking flags, lengths and UTF-8 (duplicates are checked by
    /// [`Xattrs::validate`]), then copies them, already in their packed form, at once.
    pub(crate) fn read(r: &mut Reader<'_>, count: u32) -> Result<Self, DecodeError> {
        let start = r.rest();
        for _ in 0..count {
            let flags = r.u8()?;
            if flags & !FLAG_INTERNAL != 0 {
                return Err(DecodeError::invalid(
                    "blob record xattr flags",
                    format!("unknown bits {flags:#x}"),
                ));
            }
            let name_len = r.u8()? as usize;
            let value_len = r.u32()? as usize;
            if value_len > MAX_XATTR_VALUE {
                return Err(DecodeError::invalid(
                    "blob record xattr value",
                    format!("length {value_len} exceeds {MAX_XATTR_VALUE}"),
                ));
            }
            let name = std::str::from_utf8(r.bytes(name_len)?)
                .map_err(|_| DecodeError::invalid("blob record xattr name", "not UTF-8"))?;
            check_lengths(name, r.bytes(value_len)?)?;
        }
        let len = start.len() - r.rest().len();
        Ok(Xattrs {
            count,
            bytes: start[..len].to_vec(),
        })
    }

    /// Checks that no two entries share (internal, name): pairwise for the usual handful
    /// (no allocation), with a set beyond that.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let few = self.count <= 16;
        let mut names = BTreeSet::new();
        for (i, x) in self.iter().enumerate() {
            let dup = if few {
                self.iter()
                    .take(i)
                    .any(|y| y.internal == x.internal && y.name == x.name)
            } else {
                !names.insert((x.internal, x.name))
            };
            if dup {
                return Err(DecodeError::invalid(
                    "blob record xattr name",
                    format!("duplicate {:?}", x.name),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Xattrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(x: &Xattrs) -> Vec<(String, Vec<u8>, bool)> {
        x.iter()
            .map(|e| (e.name.to_string(), e.value.to_vec(), e.internal))
            .collect()
    }

    #[test]
    fn set_replaces_in_place_or_resizes_and_keeps_order() {
        let mut x = Xattrs::new();
        x.set("type", &[1], false).unwrap();
        x.set("size", &5u64.to_le_bytes(), false).unwrap();
        x.set("size", &5u64.to_le_bytes(), true).unwrap();
        x.set("name", b"a.sst", false).unwrap();
        assert_eq!(x.len(), 4);
        x.set("size", &7u64.to_le_bytes(), false).unwrap(); // same length
        x.set("name", b"a-much-longer-name.sst", false).unwrap(); // longer
        x.set("type", &[], false).unwrap(); // shorter
        assert_eq!(
            names(&x),
            vec![
                ("type".into(), vec![], false),
                ("size".into(), 7u64.to_le_bytes().to_vec(), false),
                ("size".into(), 5u64.to_le_bytes().to_vec(), true),
                ("name".into(), b"a-much-longer-name.sst".to_vec(), false),
            ]
        );
        assert_eq!(x.get("size", true), Some(&5u64.to_le_bytes()[..]));
        assert_eq!(x.get("name", true), None);
        assert_eq!(x.encoded_len(), x.as_encoded().len());
        assert_eq!(x.encoded_len(), 4 * HEAD + 4 + 4 + 4 + 4 + 8 + 8 + 22);
    }

    #[test]
    fn remove_and_retain() {
        let mut x = Xattrs::new();
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            x.set(n, &[i as u8; 3], i % 2 == 1).unwrap();
        }
        assert!(x.remove("b", true));
        assert!(!x.remove("b", true));
        assert!(!x.remove("c", true), "c is a user xattr");
        x.retain(|e| e.name != "c");
        assert_eq!(
            names(&x),
            vec![
                ("a".into(), vec![0; 3], false),
                ("d".into(), vec![3; 3], true)
            ]
        );
        assert_eq!(x.len(), 2);
        assert!(x.contains("d", true) && !x.contains("d", false));
    }

    #[test]
    fn bad_names_and_values_are_refused_and_change_nothing() {
        let mut x = Xattrs::new();
        x.set("k", b"v", false).unwrap();
        let before = x.clone();
        for (name, len) in [("", 1), (&*"n".repeat(256), 1), ("k", MAX_XATTR_VALUE + 1)] {
            let e = x.set(name, &vec![0; len], false).unwrap_err();
            assert!(matches!(e, DecodeError::Invalid { .. }), "{e}");
        }
        assert_eq!(x, before);
        x.set(&"n".repeat(255), &vec![9; MAX_XATTR_VALUE], false)
            .unwrap();
        assert_eq!(
            x.get(&"n".repeat(255), false).map(<[u8]>::len),
            Some(MAX_XATTR_VALUE)
        );
    }
}

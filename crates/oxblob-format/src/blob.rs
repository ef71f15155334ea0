//! Blob records: the complete metadata of one blob.
//!
//! ```text
//! off  size  field
//!   0     8  id             u64, never 0, never reused
//!   8     8  flags          u64: bit 0 THIN, bit 1 READ_ONLY, bit 2 SNAPSHOT; others must be 0
//!  16     8  num_clusters   u64, logical size in clusters
//!  24     8  parent         u64 blob id, 0 = none
//!  32     4  extent_count   u32
//!  36     4  xattr_count    u32
//!  40  24*n  extents        { logical u64, physical u64, count u64 }, sorted by logical,
//!                           non-overlapping, count > 0, logical + count <= num_clusters
//!   ..     .  xattrs        { flags u8 (bit 0 INTERNAL), name_len u8 (1..=255),
//!                             value_len u32 (<= 65536), name (UTF-8), value }
//!                           no two with the same (INTERNAL, name)
//! ```
//! `physical` is a cluster index in the data region; checking it against the region and against
//! other blobs is the blobstore's job.

use crate::codec::{Put, Reader};
pub use crate::xattr::{XattrRef, Xattrs};
use crate::DecodeError;

/// Blob flag: clusters are allocated on first write.
pub const FLAG_THIN: u64 = 1;
/// Blob flag: data and metadata are immutable.
pub const FLAG_READ_ONLY: u64 = 1 << 1;
/// Blob flag: the blob is a snapshot (read-only, may have clones).
pub const FLAG_SNAPSHOT: u64 = 1 << 2;
/// Every flag this version knows.
pub const KNOWN_FLAGS: u64 = FLAG_THIN | FLAG_READ_ONLY | FLAG_SNAPSHOT;

const WHAT: &str = "blob record";
const FIXED: usize = 40;
const EXTENT_SIZE: usize = 24;
const XATTR_MIN: usize = 1 + 1 + 4 + 1;

/// A run of allocated clusters: logical `logical..logical+count` maps to physical
/// `physical..physical+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// First logical cluster of the blob.
    pub logical: u64,
    /// First physical cluster (index in the data region).
    pub physical: u64,
    /// Number of clusters, at least 1.
    pub count: u64,
}

/// The complete metadata of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlobRecord {
    /// Blob id (never 0).
    pub id: u64,
    /// `FLAG_*` bits.
    pub flags: u64,
    /// Size in clusters.
    pub num_clusters: u64,
    /// Parent blob id (snapshot this blob is a clone of), 0 for none.
    pub parent: u64,
    /// Allocated clusters, sorted by logical cluster.
    pub extents: Vec<Extent>,
    /// Extended attributes, packed ([`Xattrs`]).
    pub xattrs: Xattrs,
}

impl BlobRecord {
    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        FIXED + self.extents.len() * EXTENT_SIZE + self.xattrs.encoded_len()
    }

    /// Appends the encoding to `out`. The record must satisfy [`BlobRecord::validate`]; an
    /// invalid record is refused rather than written.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.validate()?;
        out.reserve(self.encoded_len());
        out.put_u64(self.id);
        out.put_u64(self.flags);
        out.put_u64(self.num_clusters);
        out.put_u64(self.parent);
        out.put_u32(self.extents.len() as u32);
        out.put_u32(self.xattrs.len() as u32);
        for e in &self.extents {
            out.put_u64(e.logical);
            out.put_u64(e.physical);
            out.put_u64(e.count);
        }
        out.extend_from_slice(self.xattrs.as_encoded());
        Ok(())
    }

    /// The encoding as a new vector.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut v = Vec::new();
        self.encode_into(&mut v)?;
        Ok(v)
    }

    /// Decodes exactly `bytes` (no trailing bytes allowed).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, WHAT);
        let rec = Self::read(&mut r)?;
        r.finish()?;
        Ok(rec)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.u64()?;
        let flags = r.u64()?;
        let num_clusters = r.u64()?;
        let parent = r.u64()?;
        let n_ext = r.u32()?;
        let n_x = r.u32()?;
        r.check_count(u64::from(n_ext), EXTENT_SIZE as u64)?;
        let mut extents = Vec::with_capacity(n_ext as usize);
        for _ in 0..n_ext {
            extents.push(Extent {
                logical: r.u64()?,
                physical: r.u64()?,
                count: r.u64()?,
            });
        }
        r.check_count(u64::from(n_x), XATTR_MIN as u64)?;
        let xattrs = Xattrs::read(r, n_x)?;
        let rec = BlobRecord {
            id,
            flags,
            num_clusters,
            parent,
            extents,
            xattrs,
        };
        rec.validate()?;
        Ok(rec)
    }

    /// Checks every invariant that the record alone can prove.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.id == 0 {
            return Err(DecodeError::invalid("blob record id", "id 0 is reserved"));
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(DecodeError::invalid(
                "blob record flags",
                format!("unknown bits {:#x}", self.flags & !KNOWN_FLAGS),
            ));
        }
        if self.parent == self.id {
            return Err(DecodeError::invalid(
                "blob record parent",
                "blob is its own parent",
            ));
        }
        if self.extents.len() > u32::MAX as usize || self.xattrs.len() > u32::MAX as usize {
            return Err(DecodeError::invalid("blob record", "too many entries"));
        }
        let mut next_logical = 0u64;
        for e in &self.extents {
            if e.count == 0 {
                return Err(DecodeError::invalid("blob record extent", "count 0"));
            }
            if e.logical < next_logical {
                return Err(DecodeError::invalid(
                    "blob record extent",
                    format!("logical {} overlaps or is out of order", e.logical),
                ));
            }
            let end = e.logical.checked_add(e.count).ok_or_else(|| {
                DecodeError::invalid("blob record extent", "logical range overflows")
            })?;
            if e.physical.checked_add(e.count).is_none() {
                return Err(DecodeError::invalid(
                    "blob record extent",
                    "physical range overflows",
                ));
            }
            if end > self.num_clusters {
                return Err(DecodeError::invalid(
                    "blob record extent",
                    format!("ends at {end}, beyond size {}", self.num_clusters),
                ));
            }
            next_logical = end;
        }
        self.xattrs.validate()?;
        Ok(())
    }

    /// True when the `FLAG_THIN` bit is set.
    pub fn is_thin(&self) -> bool {
        self.flags & FLAG_THIN != 0
    }

    /// True when the `FLAG_READ_ONLY` bit is set.
    pub fn is_read_only(&self) -> bool {
        self.flags & FLAG_READ_ONLY != 0
    }

    /// Number of allocated clusters.
    pub fn allocated_clusters(&self) -> u64 {
        self.extents.iter().map(|e| e.count).sum()
    }

    /// The physical cluster backing logical cluster `logical`, if allocated.
    pub fn lookup(&self, logical: u64) -> Option<u64> {
        let i = self
            .extents
            .partition_point(|e| e.logical + e.count <= logical);
        let e = self.extents.get(i)?;
        (e.logical <= logical).then(|| e.physical + (logical - e.logical))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BlobRecord {
        BlobRecord {
            id: 7,
            flags: FLAG_THIN,
            num_clusters: 10,
            parent: 0,
            extents: vec![
                Extent {
                    logical: 0,
                    physical: 100,
                    count: 2,
                },
                Extent {
                    logical: 5,
                    physical: 3,
                    count: 5,
                },
            ],
            xattrs: {
                let mut x = Xattrs::new();
                x.set("name", b"file.sst", false).unwrap();
                x.set("name", &[1, 2], true).unwrap();
                x
            },
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let r = sample();
        let b = r.encode().unwrap();
        assert_eq!(b.len(), r.encoded_len());
        assert_eq!(&b[0..8], &7u64.to_le_bytes());
        assert_eq!(&b[32..36], &2u32.to_le_bytes());
        assert_eq!(&b[40..48], &0u64.to_le_bytes());
        assert_eq!(&b[48..56], &100u64.to_le_bytes());
        assert_eq!(BlobRecord::decode(&b).unwrap(), r);
    }

    #[test]
    fn lookup_finds_mapped_clusters_only() {
        let r = sample();
        assert_eq!(r.lookup(0), Some(100));
        assert_eq!(r.lookup(1), Some(101));
        assert_eq!(r.lookup(2), None);
        assert_eq!(r.lookup(4), None);
        assert_eq!(r.lookup(9), Some(7));
        assert_eq!(r.lookup(10), None);
        assert_eq!(r.allocated_clusters(), 7);
    }

    #[test]
    fn invalid_records_are_refused() {
        let mut r = sample();
        r.extents[1].logical = 1; // overlaps the first extent
        assert!(matches!(r.encode(), Err(DecodeError::Invalid { .. })));
        let mut r = sample();
        r.extents[1].count = 6; // beyond num_clusters
        assert!(matches!(r.encode(), Err(DecodeError::Invalid { .. })));
        // A duplicate name, as a corrupt image would hold it: the record's bytes with the
        // internal flag of the second xattr cleared.
        let b = sample().encode().unwrap();
        let second = b.len() - (6 + 4 + 2);
        assert_eq!(b[second], 1);
        let mut dup = b.clone();
        dup[second] = 0;
        assert!(matches!(
            BlobRecord::decode(&dup),
            Err(DecodeError::Invalid { .. })
        ));
        let mut r = sample();
        r.flags |= 1 << 40;
        assert!(matches!(r.encode(), Err(DecodeError::Invalid { .. })));
        let mut r = sample();
        r.id = 0;
        assert!(matches!(r.encode(), Err(DecodeError::Invalid { .. })));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let mut b = sample().encode().unwrap();
        b[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            BlobRecord::decode(&b),
            Err(DecodeError::Truncated { .. })
        ));
        let mut b = sample().encode().unwrap();
        b[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            BlobRecord::decode(&b),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn truncation_and_trailing_bytes() {
        let b = sample().encode().unwrap();
        for n in 0..b.len() {
            assert!(BlobRecord::decode(&b[..n]).is_err(), "prefix {n}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            BlobRecord::decode(&long),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
    }
}

//! The superblock: two self-checksummed slots at md pages 0 and 1.
//!
//! ```text
//! off  size  field
//!   0     8  magic              "OXBLOBSB"
//!   8     4  version            u32 = 1
//!  12     4  crc                CRC-32C of the whole 4096-byte page with this field zeroed
//!  16     8  compat             u64 feature bits: unknown ones are ignored
//!  24     8  ro_compat          u64 feature bits: unknown ones => load read-only
//!  32     8  incompat           u64 feature bits: unknown ones => refuse to load
//!  40    16  bstype             application tag (e.g. "BLOBFS"), zero-padded
//!  56     8  store_id           u64 random nonce chosen at init, repeated in every log record
//!  64     8  generation         u64; the valid slot with the highest generation wins
//!  72     4  md_page_size       u32 = 4096
//!  76     4  io_unit            u32 device block size (512..=4096, power of two)
//!  80     8  cluster_size       u64 power of two, 64 KiB ..= 256 MiB
//!  88     8  device_size        u64 bytes, at init
//!  96     8  md_first_page      u64 >= 2
//! 104     8  md_page_count      u64, a multiple of md_segment_pages
//! 112     4  md_segment_pages   u32 >= 2
//! 116     4  reserved           0
//! 120     8  data_first_byte    u64, cluster aligned, after the md region
//! 128     8  data_cluster_count u64 >= 1
//! 136     8  ckpt_first_page    u64 (absolute page number, inside the md region)
//! 144     8  ckpt_page_count    u64
//! 152     8  ckpt_len           u64 bytes of checkpoint payload
//! 160     4  ckpt_crc           u32 CRC-32C of the checkpoint payload
//! 164     4  reserved           0
//! 168     8  log_first_page     u64 first page of the first log segment (segment aligned)
//! 176     8  log_first_seq      u64 sequence number of the first log record
//! 184  3912  reserved           zero
//! ```
//! Records of the log that this superblock starts carry `epoch = generation`.

use crate::codec::{Put, Reader};
use crate::{DecodeError, FORMAT_VERSION, MAX_CLUSTER_SIZE, MD_PAGE_SIZE, MIN_CLUSTER_SIZE};

/// Magic bytes of a superblock slot.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"OXBLOBSB";
/// Incompatible feature bit: log transactions may carry `CheckData` mutations (a reader that
/// ignored them would replay a size over data that never reached the media).
pub const INCOMPAT_CHECKED_DATA: u64 = 1;
/// Incompatible feature bit: the records of this superblock's log are packed — each starts
/// at the next [`RECORD_ALIGN`](crate::record::RECORD_ALIGN)-byte boundary after the previous
/// one, several to a page — instead of each on whole pages of its own. A reader that assumed
/// whole pages would stop after the first record of a page.
pub const INCOMPAT_PACKED_LOG: u64 = 2;
/// Incompatible feature bit: log transactions may carry `WriteData` mutations (data logged
/// inline, written to its place in the blob later). A reader that ignored them would miss
/// acknowledged bytes that never reached their place.
pub const INCOMPAT_INLINE_DATA: u64 = 4;
/// Incompatible feature bits this version understands.
pub const KNOWN_INCOMPAT: u64 = INCOMPAT_CHECKED_DATA | INCOMPAT_PACKED_LOG | INCOMPAT_INLINE_DATA;
/// Read-only-compatible feature bits this version understands (none yet).
pub const KNOWN_RO_COMPAT: u64 = 0;
/// Number of superblock slots (pages 0 and 1).
pub const SLOTS: u64 = 2;

const WHAT: &str = "superblock";
const CRC_OFF: usize = 12;

/// Where the checkpoint is and what it must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointRef {
    /// First page (absolute md page number).
    pub first_page: u64,
    /// Number of pages reserved for it.
    pub page_count: u64,
    /// Payload length in bytes.
    pub len: u64,
    /// CRC-32C of the payload.
    pub crc: u32,
}

/// One decoded superblock slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Format version (1).
    pub version: u32,
    /// Compatible features (unknown bits ignored).
    pub compat: u64,
    /// Read-only compatible features (unknown bits: load read-only).
    pub ro_compat: u64,
    /// Incompatible features (unknown bits: refuse).
    pub incompat: u64,
    /// Application tag.
    pub bstype: [u8; 16],
    /// Random identity of this store, repeated in every log record.
    pub store_id: u64,
    /// Generation; the higher valid slot wins.
    pub generation: u64,
    /// Metadata page size (4096).
    pub md_page_size: u32,
    /// Device block size at init.
    pub io_unit: u32,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Device size in bytes at init.
    pub device_size: u64,
    /// First page of the md region.
    pub md_first_page: u64,
    /// Number of pages in the md region.
    pub md_page_count: u64,
    /// Pages per md segment.
    pub md_segment_pages: u32,
    /// Byte offset of cluster 0 of the data region.
    pub data_first_byte: u64,
    /// Number of clusters in the data region.
    pub data_cluster_count: u64,
    /// The current checkpoint.
    pub checkpoint: CheckpointRef,
    /// First page of the first log segment.
    pub log_first_page: u64,
    /// Sequence number of the first log record.
    pub log_first_seq: u64,
}

impl Superblock {
    /// Encodes one 4096-byte page with its checksum.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        self.validate()?;
        let mut b = Vec::with_capacity(MD_PAGE_SIZE);
        b.extend_from_slice(&SUPERBLOCK_MAGIC);
        b.put_u32(self.version);
        b.put_u32(0);
        b.put_u64(self.compat);
        b.put_u64(self.ro_compat);
        b.put_u64(self.incompat);
        b.extend_from_slice(&self.bstype);
        b.put_u64(self.store_id);
        b.put_u64(self.generation);
        b.put_u32(self.md_page_size);
        b.put_u32(self.io_unit);
        b.put_u64(self.cluster_size);
        b.put_u64(self.device_size);
        b.put_u64(self.md_first_page);
        b.put_u64(self.md_page_count);
        b.put_u32(self.md_segment_pages);
        b.put_u32(0);
        b.put_u64(self.data_first_byte);
        b.put_u64(self.data_cluster_count);
        b.put_u64(self.checkpoint.first_page);
        b.put_u64(self.checkpoint.page_count);
        b.put_u64(self.checkpoint.len);
        b.put_u32(self.checkpoint.crc);
        b.put_u32(0);
        b.put_u64(self.log_first_page);
        b.put_u64(self.log_first_seq);
        b.resize(MD_PAGE_SIZE, 0);
        let crc = crate::crc32c(&b);
        b[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(b)
    }

    /// Decodes and validates one slot (exactly 4096 bytes): magic, checksum, version, geometry.
    /// Feature bits are returned as found; [`Superblock::unknown_incompat`] and
    /// [`Superblock::unknown_ro_compat`] tell the caller what to do with them.
    pub fn decode(page: &[u8]) -> Result<Self, DecodeError> {
        if page.len() != MD_PAGE_SIZE {
            return Err(DecodeError::Truncated {
                what: WHAT,
                need: MD_PAGE_SIZE as u64,
                have: page.len() as u64,
            });
        }
        if page[0..8] != SUPERBLOCK_MAGIC {
            return Err(DecodeError::BadMagic { what: WHAT });
        }
        let mut r = Reader::new(page, WHAT);
        r.bytes(8)?;
        let version = r.u32()?;
        let stored = r.u32()?;
        let computed = {
            let mut h = crc32c::crc32c(&page[..CRC_OFF]);
            h = crc32c::crc32c_append(h, &[0u8; 4]);
            crc32c::crc32c_append(h, &page[CRC_OFF + 4..])
        };
        if stored != computed {
            return Err(DecodeError::BadChecksum {
                what: WHAT,
                stored,
                computed,
            });
        }
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: WHAT,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let compat = r.u64()?;
        let ro_compat = r.u64()?;
        let incompat = r.u64()?;
        let mut bstype = [0u8; 16];
        bstype.copy_from_slice(r.bytes(16)?);
        let store_id = r.u64()?;
        let generation = r.u64()?;
        let md_page_size = r.u32()?;
        let io_unit = r.u32()?;
        let cluster_size = r.u64()?;
        let device_size = r.u64()?;
        let md_first_page = r.u64()?;
        let md_page_count = r.u64()?;
        let md_segment_pages = r.u32()?;
        let _reserved = r.u32()?;
        let data_first_byte = r.u64()?;
        let data_cluster_count = r.u64()?;
        let checkpoint = CheckpointRef {
            first_page: r.u64()?,
            page_count: r.u64()?,
            len: r.u64()?,
            crc: r.u32()?,
        };
        let _reserved = r.u32()?;
        let log_first_page = r.u64()?;
        let log_first_seq = r.u64()?;
        let sb = Superblock {
            version,
            compat,
            ro_compat,
            incompat,
            bstype,
            store_id,
            generation,
            md_page_size,
            io_unit,
            cluster_size,
            device_size,
            md_first_page,
            md_page_count,
            md_segment_pages,
            data_first_byte,
            data_cluster_count,
            checkpoint,
            log_first_page,
            log_first_seq,
        };
        sb.validate()?;
        Ok(sb)
    }

    /// Incompatible feature bits this build does not know (non-zero: refuse to load).
    pub fn unknown_incompat(&self) -> u64 {
        self.incompat & !KNOWN_INCOMPAT
    }

    /// Read-only-compatible feature bits this build does not know (non-zero: load read-only).
    pub fn unknown_ro_compat(&self) -> u64 {
        self.ro_compat & !KNOWN_RO_COMPAT
    }

    /// End of the md region, in pages.
    pub fn md_end_page(&self) -> u64 {
        self.md_first_page + self.md_page_count
    }

    /// Checks every geometric invariant a slot alone can prove.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let bad = |field: &'static str, d: String| Err(DecodeError::invalid(field, d));
        let page = MD_PAGE_SIZE as u64;
        if self.md_page_size as usize != MD_PAGE_SIZE {
            return bad("superblock md_page_size", format!("{}", self.md_page_size));
        }
        if !self.io_unit.is_power_of_two() || !(512..=4096).contains(&self.io_unit) {
            return bad("superblock io_unit", format!("{}", self.io_unit));
        }
        if !self.cluster_size.is_power_of_two()
            || !(MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&self.cluster_size)
        {
            return bad("superblock cluster_size", format!("{}", self.cluster_size));
        }
        if self.md_first_page < SLOTS {
            return bad(
                "superblock md_first_page",
                format!("{} overlaps the superblock slots", self.md_first_page),
            );
        }
        let seg = u64::from(self.md_segment_pages);
        if seg < 2 || self.md_page_count == 0 || self.md_page_count % seg != 0 {
            return bad(
                "superblock md region",
                format!("{} pages in segments of {seg}", self.md_page_count),
            );
        }
        let md_end_byte = self
            .md_first_page
            .checked_add(self.md_page_count)
            .and_then(|p| p.checked_mul(page));
        let Some(md_end_byte) = md_end_byte else {
            return bad("superblock md region", "overflows".into());
        };
        if self.data_first_byte < md_end_byte || self.data_first_byte % self.cluster_size != 0 {
            return bad(
                "superblock data_first_byte",
                format!("{} (md region ends at {md_end_byte})", self.data_first_byte),
            );
        }
        let data_end = self
            .data_cluster_count
            .checked_mul(self.cluster_size)
            .and_then(|b| b.checked_add(self.data_first_byte));
        match data_end {
            Some(end) if self.data_cluster_count > 0 && end <= self.device_size => {}
            _ => {
                return bad(
                    "superblock data region",
                    format!(
                        "{} clusters from byte {} do not fit a {}-byte device",
                        self.data_cluster_count, self.data_first_byte, self.device_size
                    ),
                )
            }
        }
        let md = self.md_first_page..self.md_end_page();
        let c = &self.checkpoint;
        let ckpt_end = c.first_page.checked_add(c.page_count);
        if c.page_count == 0
            || !md.contains(&c.first_page)
            || ckpt_end.is_none_or(|e| e > md.end)
            || c.len > c.page_count.saturating_mul(page)
        {
            return bad(
                "superblock checkpoint",
                format!(
                    "pages {}+{} len {} outside md region {md:?}",
                    c.first_page, c.page_count, c.len
                ),
            );
        }
        if !md.contains(&self.log_first_page) || (self.log_first_page - md.start) % seg != 0 {
            return bad(
                "superblock log_first_page",
                format!("{} is not a segment start in {md:?}", self.log_first_page),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Superblock {
        Superblock {
            version: FORMAT_VERSION,
            compat: 0,
            ro_compat: 0,
            incompat: 0,
            bstype: *b"BLOBFS\0\0\0\0\0\0\0\0\0\0",
            store_id: 0xdead_beef_1234_5678,
            generation: 3,
            md_page_size: 4096,
            io_unit: 512,
            cluster_size: 1 << 20,
            device_size: 64 << 20,
            md_first_page: 2,
            md_page_count: 256,
            md_segment_pages: 64,
            data_first_byte: 2 << 20,
            data_cluster_count: 62,
            checkpoint: CheckpointRef {
                first_page: 2,
                page_count: 64,
                len: 100,
                crc: 0x1234,
            },
            log_first_page: 66,
            log_first_seq: 9,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let sb = sample();
        let p = sb.encode().unwrap();
        assert_eq!(p.len(), 4096);
        assert_eq!(&p[0..8], b"OXBLOBSB");
        assert_eq!(&p[64..72], &3u64.to_le_bytes());
        assert_eq!(&p[176..184], &9u64.to_le_bytes());
        assert!(p[184..].iter().all(|&b| b == 0));
        assert_eq!(Superblock::decode(&p).unwrap(), sb);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let p = sample().encode().unwrap();
        for byte in (0..4096).step_by(7) {
            let mut q = p.clone();
            q[byte] ^= 0x10;
            let e = Superblock::decode(&q).unwrap_err();
            if byte < 8 {
                assert!(matches!(e, DecodeError::BadMagic { .. }));
            } else {
                assert!(
                    matches!(e, DecodeError::BadChecksum { .. }),
                    "byte {byte}: {e}"
                );
            }
        }
    }

    #[test]
    fn typed_errors() {
        let mut sb = sample();
        sb.version = 2;
        // encode validates geometry only; version is checked at decode.
        let p = sb.encode().unwrap();
        assert!(matches!(
            Superblock::decode(&p),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
        let mut sb = sample();
        sb.cluster_size = 3 << 20;
        assert!(matches!(sb.encode(), Err(DecodeError::Invalid { .. })));
        let mut sb = sample();
        sb.data_cluster_count = 63;
        assert!(matches!(sb.encode(), Err(DecodeError::Invalid { .. })));
        let mut sb = sample();
        sb.checkpoint.first_page = 1;
        assert!(matches!(sb.encode(), Err(DecodeError::Invalid { .. })));
        let mut sb = sample();
        sb.log_first_page = 67;
        assert!(matches!(sb.encode(), Err(DecodeError::Invalid { .. })));
        assert!(matches!(
            Superblock::decode(&[0u8; 100]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            Superblock::decode(&[0u8; 4096]),
            Err(DecodeError::BadMagic { .. })
        ));
    }

    #[test]
    fn feature_bits() {
        let mut sb = sample();
        sb.incompat = 1 << 5;
        sb.ro_compat = 1 << 2;
        sb.compat = u64::MAX;
        let d = Superblock::decode(&sb.encode().unwrap()).unwrap();
        assert_eq!(d.unknown_incompat(), 1 << 5);
        assert_eq!(d.unknown_ro_compat(), 1 << 2);
    }
}

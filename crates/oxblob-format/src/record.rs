//! Metadata-log records and the transactions they carry.
//!
//! A record is a 64-byte header followed by its payload. In a **packed** log (superblock
//! feature `PACKED_LOG`, what this version writes) each record starts at the first
//! [`RECORD_ALIGN`]-byte boundary after the previous one, so many small records share a page
//! and a record may run over page boundaries ([`record_len`] bytes each). In a log without
//! the feature (older stores, still read), a record occupies whole md pages of its own
//! ([`record_pages`] pages each): its header starts a page.
//!
//! ```text
//! record header (64 bytes)
//! off  size  field
//!   0     8  magic         "OXBLOBLR"
//!   8     8  store_id      u64, the superblock's store_id
//!  16     8  epoch         u64, generation of the superblock that started this log
//!  24     8  seq           u64, strictly +1 per record along the log
//!  32     4  kind          u32: 1 = Txn, 2 = Link
//!  36     4  payload_len   u32 bytes
//!  40     4  payload_crc   u32 CRC-32C of the payload
//!  44     4  header_crc    u32 CRC-32C of bytes 0..44
//!  48    16  reserved      zero
//!  64     .  payload       then zero padding to the next 64-byte boundary (packed log)
//!                           or to the page boundary (page-aligned log)
//!
//! Txn payload:   count u32 (>= 1), then count x { tag u8, body_len u32, body }
//!   tag 1 PutBlob       body = blob record (see `blob`)
//!   tag 2 DeleteBlob    body = id u64
//!   tag 3 SetSuperBlob  body = id u64 (0 = none)
//!   tag 4 SetNextId     body = next id u64
//!   tag 5 CheckData     body = blob u64, offset u64, len u64, crc u32 (incompat feature
//!                       CHECKED_DATA): the transaction applies only if the blob's bytes
//!                       [offset, offset + len), read through the PutBlob of the same blob in
//!                       this transaction, have this CRC-32C; otherwise replay skips it whole
//!   tag 6 WriteData     body = blob u64, offset u64, then the bytes (1 ..= 1 MiB; incompat
//!                       feature INLINE_DATA): the blob's bytes at offset, logged inline;
//!                       replay writes them in place through the blob's final extents
//! Link payload:  next_segment_first_page u64
//! ```

use crate::codec::{Put, Reader};
use crate::{BlobRecord, DecodeError, MD_PAGE_SIZE};
use std::sync::Arc;

/// Magic bytes of a record header.
pub const RECORD_MAGIC: [u8; 8] = *b"OXBLOBLR";
/// Size of the record header in bytes.
pub const RECORD_HEADER_SIZE: usize = 64;

const WHAT: &str = "log record";

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A transaction: a list of mutations applied together.
    Txn,
    /// The log continues at the start of another segment.
    Link,
}

impl RecordKind {
    fn code(self) -> u32 {
        match self {
            RecordKind::Txn => 1,
            RecordKind::Link => 2,
        }
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Store identity.
    pub store_id: u64,
    /// Log epoch (generation of the superblock that started the log).
    pub epoch: u64,
    /// Sequence number.
    pub seq: u64,
    /// Kind of payload.
    pub kind: RecordKind,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// CRC-32C of the payload.
    pub payload_crc: u32,
}

impl RecordHeader {
    /// Number of md pages the whole record occupies in a page-aligned log.
    pub fn pages(&self) -> u64 {
        record_pages(self.payload_len as usize)
    }

    /// Bytes the whole record occupies in a packed log ([`record_len`]).
    pub fn packed_len(&self) -> u64 {
        record_len(self.payload_len as usize) as u64
    }
}

/// Number of md pages a record with a payload of `payload_len` bytes occupies in a
/// page-aligned log (without `PACKED_LOG`).
pub fn record_pages(payload_len: usize) -> u64 {
    ((RECORD_HEADER_SIZE + payload_len).div_ceil(MD_PAGE_SIZE)) as u64
}

/// Alignment, in bytes, of every record of a packed log: a record starts at a multiple of it
/// (counted from the start of the segment) and its footprint is a multiple of it.
pub const RECORD_ALIGN: usize = 64;

/// Bytes a record with a payload of `payload_len` bytes occupies in a packed log: header and
/// payload rounded up to [`RECORD_ALIGN`]. The next record starts right after.
pub fn record_len(payload_len: usize) -> usize {
    (RECORD_HEADER_SIZE + payload_len).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Footprint of a Link record in a packed log (a segment keeps this much room at its end).
pub const LINK_RECORD_LEN: usize = RECORD_HEADER_SIZE + RECORD_ALIGN;

/// One change of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// The complete new state of one blob (creates it if absent). Shared, not owned: the
    /// blobstore builds a transaction from a blob's in-memory record and, once the record is
    /// committed, keeps the very same allocation as the blob's state, so a commit copies no
    /// record. The record is immutable while shared (`Arc::make_mut` copies on write).
    PutBlob(Arc<BlobRecord>),
    /// The blob is gone; its clusters are free once this record is durable.
    DeleteBlob(u64),
    /// The application's root blob.
    SetSuperBlob(Option<u64>),
    /// The next id to hand out (ids are never reused).
    SetNextId(u64),
    /// A condition on data: the transaction is valid only if the blob's bytes
    /// `[offset, offset + len)` (through the extents of the `PutBlob` of the same blob in the
    /// same transaction) have CRC-32C `crc`. Replay skips a transaction whose check fails: it
    /// was written together with its data and never acknowledged, so it must not expose
    /// bytes that did not reach the media. This lets an appending fsync cost one flush.
    CheckData(DataCheck),
    /// Data logged inline: `data` is the blob's bytes at `offset` (through the extents of the
    /// `PutBlob` of the same blob in the same transaction, which must map every cluster of the
    /// range). Replay keeps the bytes and, once the log is replayed, writes them to their place
    /// in the blob (if the blob still maps them). This lets a small appending fsync cost one
    /// write (the record) and one flush; the bytes reach their place later, in bulk, and
    /// always before the log that holds them is dropped (a checkpoint).
    WriteData(DataWrite),
}

/// The body of [`Mutation::WriteData`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataWrite {
    /// Blob written.
    pub blob: u64,
    /// Byte offset in the blob.
    pub offset: u64,
    /// The bytes (1 ..= [`MAX_WRITE_LEN`] of them).
    pub data: Vec<u8>,
}

/// Largest [`DataWrite`]: inline data is for small synchronous writes; larger ones are cheaper
/// written in place once than logged and written again.
pub const MAX_WRITE_LEN: u64 = 1 << 20;

/// The body of [`Mutation::CheckData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataCheck {
    /// Blob whose bytes are checked.
    pub blob: u64,
    /// First byte checked.
    pub offset: u64,
    /// Bytes checked (at most [`MAX_CHECK_LEN`]).
    pub len: u64,
    /// CRC-32C of those bytes.
    pub crc: u32,
}

/// Largest range one [`DataCheck`] may cover: replay reads it back, so it stays small.
pub const MAX_CHECK_LEN: u64 = 16 << 20;

/// Encodes a whole record (header, payload, zero padding) as a page-multiple byte vector.
pub fn encode_record(
    store_id: u64,
    epoch: u64,
    seq: u64,
    kind: RecordKind,
    payload: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    let mut b = vec![0u8; record_pages(payload.len()) as usize * MD_PAGE_SIZE];
    encode_record_into(&mut b, store_id, epoch, seq, kind, payload)?;
    Ok(b)
}

/// Encodes a whole record into `out`: the header, the payload, then zeroes to the end of
/// `out`, which must be at least [`RECORD_HEADER_SIZE`]` + payload.len()` bytes long —
/// [`record_len`] bytes for a packed log, [`record_pages`] pages for a page-aligned one (the
/// same bytes as [`encode_record`]). Writes into a buffer the caller owns (an I/O buffer that
/// goes straight to the device).
pub fn encode_record_into(
    out: &mut [u8],
    store_id: u64,
    epoch: u64,
    seq: u64,
    kind: RecordKind,
    payload: &[u8],
) -> Result<(), DecodeError> {
    let payload_len = u32::try_from(payload.len())
        .map_err(|_| DecodeError::invalid("log record payload", "longer than 4 GiB"))?;
    if out.len() < RECORD_HEADER_SIZE + payload.len() {
        return Err(DecodeError::invalid(
            "log record buffer",
            "shorter than the header and payload",
        ));
    }
    // The header is built in place (no allocation per record): fields at 0..44, its CRC at
    // 44..48, zero to 64.
    let h = &mut out[..RECORD_HEADER_SIZE];
    h[0..8].copy_from_slice(&RECORD_MAGIC);
    h[8..16].copy_from_slice(&store_id.to_le_bytes());
    h[16..24].copy_from_slice(&epoch.to_le_bytes());
    h[24..32].copy_from_slice(&seq.to_le_bytes());
    h[32..36].copy_from_slice(&kind.code().to_le_bytes());
    h[36..40].copy_from_slice(&payload_len.to_le_bytes());
    h[40..44].copy_from_slice(&crate::crc32c(payload).to_le_bytes());
    let hcrc = crate::crc32c(&h[..44]);
    h[44..48].copy_from_slice(&hcrc.to_le_bytes());
    h[48..].fill(0);
    let end = RECORD_HEADER_SIZE + payload.len();
    out[RECORD_HEADER_SIZE..end].copy_from_slice(payload);
    out[end..].fill(0);
    Ok(())
}

/// Decodes the header at the start of `bytes` (at least 64 bytes) and checks its own CRC.
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, DecodeError> {
    let mut r = Reader::new(bytes, WHAT);
    let magic = r.bytes(8)?;
    if magic != RECORD_MAGIC {
        return Err(DecodeError::BadMagic { what: WHAT });
    }
    let store_id = r.u64()?;
    let epoch = r.u64()?;
    let seq = r.u64()?;
    let kind = r.u32()?;
    let payload_len = r.u32()?;
    let payload_crc = r.u32()?;
    let stored = r.u32()?;
    let computed = crate::crc32c(&bytes[..44]);
    if stored != computed {
        return Err(DecodeError::BadChecksum {
            what: "log record header",
            stored,
            computed,
        });
    }
    let kind = match kind {
        1 => RecordKind::Txn,
        2 => RecordKind::Link,
        k => return Err(DecodeError::invalid("log record kind", format!("{k}"))),
    };
    Ok(RecordHeader {
        store_id,
        epoch,
        seq,
        kind,
        payload_len,
        payload_crc,
    })
}

/// Decodes the record at the start of `bytes` (typically the rest of a segment): header, then
/// the payload, whose CRC is verified. Returns the header and the payload slice. Whether the
/// record belongs to the log being read (store id, epoch, seq) is the caller's check.
pub fn decode_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), DecodeError> {
    let h = decode_header(bytes)?;
    let end = RECORD_HEADER_SIZE + h.payload_len as usize;
    if end > bytes.len() {
        return Err(DecodeError::Truncated {
            what: WHAT,
            need: end as u64,
            have: bytes.len() as u64,
        });
    }
    let payload = &bytes[RECORD_HEADER_SIZE..end];
    let computed = crate::crc32c(payload);
    if computed != h.payload_crc {
        return Err(DecodeError::BadChecksum {
            what: "log record payload",
            stored: h.payload_crc,
            computed,
        });
    }
    Ok((h, payload))
}

/// Encodes a transaction payload.
pub fn encode_txn(mutations: &[Mutation]) -> Result<Vec<u8>, DecodeError> {
    let mut b = Vec::new();
    encode_txn_into(mutations, &mut b)?;
    Ok(b)
}

/// Encodes a transaction payload into `out` (cleared first): the bytes of [`encode_txn`],
/// in a buffer the caller reuses, with no allocation per mutation.
pub fn encode_txn_into(mutations: &[Mutation], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.clear();
    if mutations.is_empty() {
        return Err(DecodeError::invalid("transaction", "no mutations"));
    }
    out.put_u32(mutations.len() as u32);
    for m in mutations {
        let tag = match m {
            Mutation::PutBlob(_) => 1u8,
            Mutation::DeleteBlob(_) => 2,
            Mutation::SetSuperBlob(_) => 3,
            Mutation::SetNextId(_) => 4,
            Mutation::CheckData(_) => 5,
            Mutation::WriteData(_) => 6,
        };
        out.put_u8(tag);
        // The body length, patched once the body is in place.
        let len_at = out.len();
        out.put_u32(0);
        match m {
            Mutation::PutBlob(r) => r.encode_into(out)?,
            Mutation::DeleteBlob(id) => out.put_u64(*id),
            Mutation::SetSuperBlob(id) => out.put_u64(id.unwrap_or(0)),
            Mutation::SetNextId(id) => out.put_u64(*id),
            Mutation::CheckData(c) => {
                out.put_u64(c.blob);
                out.put_u64(c.offset);
                out.put_u64(c.len);
                out.put_u32(c.crc);
            }
            Mutation::WriteData(w) => {
                out.put_u64(w.blob);
                out.put_u64(w.offset);
                out.extend_from_slice(&w.data);
            }
        }
        let body = u32::try_from(out.len() - len_at - 4)
            .map_err(|_| DecodeError::invalid("transaction", "mutation longer than 4 GiB"))?;
        out[len_at..len_at + 4].copy_from_slice(&body.to_le_bytes());
    }
    Ok(())
}

/// Decodes a transaction payload.
pub fn decode_txn(payload: &[u8]) -> Result<Vec<Mutation>, DecodeError> {
    let mut r = Reader::new(payload, "transaction");
    let n = r.u32()?;
    if n == 0 {
        return Err(DecodeError::invalid("transaction", "no mutations"));
    }
    r.check_count(u64::from(n), 5)?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let tag = r.u8()?;
        let len = r.u32()? as usize;
        let body = r.bytes(len)?;
        let id = || -> Result<u64, DecodeError> {
            let mut br = Reader::new(body, "transaction mutation");
            let v = br.u64()?;
            br.finish()?;
            Ok(v)
        };
        out.push(match tag {
            1 => Mutation::PutBlob(Arc::new(BlobRecord::decode(body)?)),
            2 => {
                let v = id()?;
                if v == 0 {
                    return Err(DecodeError::invalid("transaction DeleteBlob", "id 0"));
                }
                Mutation::DeleteBlob(v)
            }
            3 => Mutation::SetSuperBlob(Some(id()?).filter(|&v| v != 0)),
            4 => Mutation::SetNextId(id()?),
            5 => {
                let mut br = Reader::new(body, "transaction CheckData");
                let c = DataCheck {
                    blob: br.u64()?,
                    offset: br.u64()?,
                    len: br.u64()?,
                    crc: br.u32()?,
                };
                br.finish()?;
                Mutation::CheckData(c)
            }
            6 => {
                let mut br = Reader::new(body, "transaction WriteData");
                let blob = br.u64()?;
                let offset = br.u64()?;
                Mutation::WriteData(DataWrite {
                    blob,
                    offset,
                    data: br.rest().to_vec(),
                })
            }
            t => return Err(DecodeError::invalid("transaction tag", format!("{t}"))),
        });
    }
    r.finish()?;
    validate_checks(&out)?;
    Ok(out)
}

/// A `CheckData` must name a blob the same transaction puts, with a range that fits in it
/// and is at most [`MAX_CHECK_LEN`] long; a `WriteData` a blob the same transaction puts,
/// with 1 ..= [`MAX_WRITE_LEN`] bytes whose range does not overflow.
fn validate_checks(muts: &[Mutation]) -> Result<(), DecodeError> {
    for m in muts {
        if let Mutation::WriteData(w) = m {
            let what = "transaction WriteData";
            if !muts
                .iter()
                .any(|m| matches!(m, Mutation::PutBlob(r) if r.id == w.blob))
            {
                return Err(DecodeError::invalid(
                    what,
                    format!("blob {:#x} is not put by the same transaction", w.blob),
                ));
            }
            let len = w.data.len() as u64;
            if len == 0 || len > MAX_WRITE_LEN || w.offset.checked_add(len).is_none() {
                return Err(DecodeError::invalid(
                    what,
                    format!("{len} bytes at {} are none, too many or overflow", w.offset),
                ));
            }
            continue;
        }
        let Mutation::CheckData(c) = m else { continue };
        let put = muts.iter().rev().find_map(|m| match m {
            Mutation::PutBlob(r) if r.id == c.blob => Some(r),
            _ => None,
        });
        let Some(put) = put else {
            return Err(DecodeError::invalid(
                "transaction CheckData",
                format!("blob {:#x} is not put by the same transaction", c.blob),
            ));
        };
        if c.len == 0 || c.len > MAX_CHECK_LEN || c.offset.checked_add(c.len).is_none() {
            return Err(DecodeError::invalid(
                "transaction CheckData",
                format!(
                    "range {}+{} is empty, too long or overflows",
                    c.offset, c.len
                ),
            ));
        }
        if put.parent != 0 {
            return Err(DecodeError::invalid(
                "transaction CheckData",
                format!("blob {:#x} is a clone", c.blob),
            ));
        }
    }
    Ok(())
}

/// Encodes a link payload.
pub fn encode_link(next_segment_first_page: u64) -> Vec<u8> {
    next_segment_first_page.to_le_bytes().to_vec()
}

/// Decodes a link payload.
pub fn decode_link(payload: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader::new(payload, "link record");
    let v = r.u64()?;
    r.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Extent;

    fn txn() -> Vec<Mutation> {
        vec![
            Mutation::PutBlob(Arc::new(BlobRecord {
                id: 3,
                num_clusters: 2,
                extents: vec![Extent {
                    logical: 1,
                    physical: 9,
                    count: 1,
                }],
                ..Default::default()
            })),
            Mutation::DeleteBlob(2),
            Mutation::SetSuperBlob(Some(3)),
            Mutation::SetSuperBlob(None),
            Mutation::SetNextId(4),
        ]
    }

    #[test]
    fn record_round_trip_and_layout() {
        let payload = encode_txn(&txn()).unwrap();
        let rec = encode_record(11, 5, 42, RecordKind::Txn, &payload).unwrap();
        assert_eq!(rec.len() % MD_PAGE_SIZE, 0);
        assert_eq!(&rec[0..8], b"OXBLOBLR");
        assert_eq!(&rec[24..32], &42u64.to_le_bytes());
        let (h, p) = decode_record(&rec).unwrap();
        assert_eq!(h.seq, 42);
        assert_eq!(h.epoch, 5);
        assert_eq!(h.store_id, 11);
        assert_eq!(h.kind, RecordKind::Txn);
        assert_eq!(h.pages(), 1);
        assert_eq!(decode_txn(p).unwrap(), txn());
    }

    #[test]
    fn encoding_into_a_dirty_buffer_gives_the_same_bytes() {
        let payload = vec![0x5au8; 5000];
        let rec = encode_record(3, 2, 9, RecordKind::Txn, &payload).unwrap();
        let mut buf = vec![0xffu8; rec.len()];
        encode_record_into(&mut buf, 3, 2, 9, RecordKind::Txn, &payload).unwrap();
        assert_eq!(buf, rec, "header, payload and zero padding all overwritten");
        let mut packed = vec![0xffu8; record_len(payload.len())];
        encode_record_into(&mut packed, 3, 2, 9, RecordKind::Txn, &payload).unwrap();
        assert_eq!(packed.len(), 5120, "64 + 5000 rounded up to 64");
        assert_eq!(packed[..], rec[..packed.len()]);
        let (h, p) = decode_record(&packed).unwrap();
        assert_eq!((h.seq, h.packed_len(), p), (9, 5120, &payload[..]));
        let mut short = vec![0u8; 64 + 4999];
        assert!(matches!(
            encode_record_into(&mut short, 3, 2, 9, RecordKind::Txn, &payload),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn multi_page_record_and_torn_tail() {
        let payload = vec![0xabu8; 9000];
        let rec = encode_record(1, 1, 1, RecordKind::Txn, &payload).unwrap();
        assert_eq!(rec.len(), 3 * MD_PAGE_SIZE);
        let mut torn = rec.clone();
        torn[2 * MD_PAGE_SIZE..].fill(0); // last page never written
        assert!(matches!(
            decode_record(&torn),
            Err(DecodeError::BadChecksum {
                what: "log record payload",
                ..
            })
        ));
        assert!(matches!(
            decode_record(&rec[..2 * MD_PAGE_SIZE]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut hdr = rec.clone();
        hdr[30] ^= 1; // seq changed without fixing the CRC
        assert!(matches!(
            decode_record(&hdr),
            Err(DecodeError::BadChecksum {
                what: "log record header",
                ..
            })
        ));
    }

    #[test]
    fn link_and_bad_txn() {
        let rec = encode_record(1, 1, 7, RecordKind::Link, &encode_link(130)).unwrap();
        let (h, p) = decode_record(&rec).unwrap();
        assert_eq!(h.kind, RecordKind::Link);
        assert_eq!(decode_link(p).unwrap(), 130);
        assert!(matches!(
            decode_txn(&[0, 0, 0, 0]),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            decode_txn(&[1, 0, 0, 0, 9, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            decode_txn(&[0xff, 0xff, 0xff, 0xff, 1]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(encode_txn(&[]).is_err());
    }

    fn put(id: u64) -> Mutation {
        Mutation::PutBlob(Arc::new(BlobRecord {
            id,
            num_clusters: 1,
            ..Default::default()
        }))
    }

    #[test]
    fn check_data_round_trip_and_validation() {
        let c = DataCheck {
            blob: 3,
            offset: 4000,
            len: 1200,
            crc: 0xdead_beef,
        };
        let muts = vec![put(3), Mutation::CheckData(c)];
        assert_eq!(decode_txn(&encode_txn(&muts).unwrap()).unwrap(), muts);
        // A check on a blob the transaction does not put.
        let bad = encode_txn(&[put(4), Mutation::CheckData(c)]).unwrap();
        assert!(matches!(
            decode_txn(&bad),
            Err(DecodeError::Invalid {
                what: "transaction CheckData",
                ..
            })
        ));
        // Empty, too long, overflowing ranges.
        for (offset, len) in [(0, 0), (0, MAX_CHECK_LEN + 1), (u64::MAX, 2)] {
            let c = DataCheck { offset, len, ..c };
            let b = encode_txn(&[put(3), Mutation::CheckData(c)]).unwrap();
            assert!(decode_txn(&b).is_err(), "{offset}+{len} accepted");
        }
        // A clone.
        let clone = Mutation::PutBlob(Arc::new(BlobRecord {
            id: 3,
            parent: 9,
            ..Default::default()
        }));
        let b = encode_txn(&[clone, Mutation::CheckData(c)]).unwrap();
        assert!(decode_txn(&b).is_err());
        // A body of the wrong length.
        let mut b = encode_txn(&[put(3), Mutation::CheckData(c)]).unwrap();
        let n = b.len();
        b.truncate(n - 1);
        assert!(decode_txn(&b).is_err());
    }

    #[test]
    fn write_data_round_trip_and_validation() {
        let w = DataWrite {
            blob: 3,
            offset: 4000,
            data: (0..1500u32).map(|i| (i * 7) as u8).collect(),
        };
        let muts = vec![put(3), Mutation::WriteData(w.clone())];
        let enc = encode_txn(&muts).unwrap();
        assert_eq!(decode_txn(&enc).unwrap(), muts);
        // The body is blob, offset, then the bytes themselves, last in the payload.
        let put_len = 4 + 1 + 4 + u32::from_le_bytes(enc[5..9].try_into().unwrap()) as usize;
        assert_eq!(enc[put_len], 6);
        let body = &enc[put_len + 1 + 4..];
        assert_eq!(body.len(), 16 + w.data.len());
        assert_eq!(&body[..8], &3u64.to_le_bytes());
        assert_eq!(&body[8..16], &4000u64.to_le_bytes());
        assert_eq!(&body[16..], &w.data[..]);
        let invalid = |muts: &[Mutation]| {
            matches!(
                decode_txn(&encode_txn(muts).unwrap()),
                Err(DecodeError::Invalid {
                    what: "transaction WriteData",
                    ..
                })
            )
        };
        // A blob the transaction does not put.
        assert!(invalid(&[put(4), Mutation::WriteData(w.clone())]));
        // No bytes, too many, an overflowing range.
        let empty = DataWrite {
            data: Vec::new(),
            ..w.clone()
        };
        assert!(invalid(&[put(3), Mutation::WriteData(empty)]));
        let big = DataWrite {
            data: vec![1; MAX_WRITE_LEN as usize + 1],
            ..w.clone()
        };
        assert!(invalid(&[put(3), Mutation::WriteData(big)]));
        let over = DataWrite {
            offset: u64::MAX - 10,
            ..w.clone()
        };
        assert!(invalid(&[put(3), Mutation::WriteData(over)]));
        // A body too short for its blob and offset.
        let mut b = encode_txn(&[put(3), Mutation::WriteData(w)]).unwrap();
        b.truncate(put_len);
        b.push(6);
        b.extend_from_slice(&10u32.to_le_bytes());
        b.extend_from_slice(&[0; 10]);
        assert!(matches!(decode_txn(&b), Err(DecodeError::Truncated { .. })));
    }
}

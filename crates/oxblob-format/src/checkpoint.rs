//! The checkpoint: the complete metadata state, written to free md pages.
//!
//! The superblock's checkpoint pointer carries the payload length and its CRC-32C, so the
//! checkpoint itself needs no checksum field.
//!
//! ```text
//! off  size  field
//!   0     8  magic          "OXBLOBCP"
//!   8     8  store_id       u64
//!  16     8  next_blob_id   u64 (>= 1; greater than every blob id)
//!  24     8  super_blob     u64 (0 = none)
//!  32     8  blob_count     u64
//!  40     .  blobs          blob_count x { len u32, blob record }, ids strictly increasing
//! ```

use crate::codec::{Put, Reader};
use crate::{BlobRecord, DecodeError};

/// Magic bytes of a checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"OXBLOBCP";

const WHAT: &str = "checkpoint";

/// The full metadata state at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Store identity.
    pub store_id: u64,
    /// Next blob id to hand out.
    pub next_blob_id: u64,
    /// The application's root blob.
    pub super_blob: Option<u64>,
    /// Every blob, sorted by id.
    pub blobs: Vec<BlobRecord>,
}

impl Checkpoint {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut e = CheckpointEncoder::new(self.store_id, self.next_blob_id, self.super_blob);
        for r in &self.blobs {
            e.push(r)?;
        }
        Ok(e.finish())
    }

    /// Decodes a payload (its CRC is checked by [`Checkpoint::decode_checked`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, WHAT);
        if r.bytes(8)? != CHECKPOINT_MAGIC {
            return Err(DecodeError::BadMagic { what: WHAT });
        }
        let store_id = r.u64()?;
        let next_blob_id = r.u64()?;
        let super_blob = Some(r.u64()?).filter(|&v| v != 0);
        let count = r.u64()?;
        r.check_count(count, 4 + 40)?;
        let mut blobs = Vec::with_capacity(count as usize);
        let mut last = 0u64;
        for _ in 0..count {
            let len = r.u32()? as usize;
            let rec = BlobRecord::decode(r.bytes(len)?)?;
            if rec.id <= last {
                return Err(DecodeError::invalid(
                    "checkpoint blobs",
                    "ids not increasing",
                ));
            }
            if rec.id >= next_blob_id {
                return Err(DecodeError::invalid(
                    "checkpoint blobs",
                    "id >= next_blob_id",
                ));
            }
            last = rec.id;
            blobs.push(rec);
        }
        r.finish()?;
        if next_blob_id == 0 {
            return Err(DecodeError::invalid("checkpoint next_blob_id", "0"));
        }
        Ok(Checkpoint {
            store_id,
            next_blob_id,
            super_blob,
            blobs,
        })
    }

    /// Verifies `bytes` against the CRC from the superblock's pointer, then decodes.
    pub fn decode_checked(bytes: &[u8], expected_crc: u32) -> Result<Self, DecodeError> {
        let computed = crate::crc32c(bytes);
        if computed != expected_crc {
            return Err(DecodeError::BadChecksum {
                what: WHAT,
                stored: expected_crc,
                computed,
            });
        }
        Self::decode(bytes)
    }
}

/// Encodes a checkpoint from blob records streamed in increasing id order, without collecting
/// them into a [`Checkpoint`] first (the blobstore serializes its live table this way).
/// Produces the same bytes as [`Checkpoint::encode`].
pub struct CheckpointEncoder {
    buf: Vec<u8>,
    next_blob_id: u64,
    last: u64,
    count: u64,
}

impl CheckpointEncoder {
    /// Starts a checkpoint with the given header fields.
    pub fn new(store_id: u64, next_blob_id: u64, super_blob: Option<u64>) -> Self {
        Self::with_capacity(store_id, next_blob_id, super_blob, 0)
    }

    /// As [`CheckpointEncoder::new`], reserving `bytes` of output up front.
    pub fn with_capacity(
        store_id: u64,
        next_blob_id: u64,
        super_blob: Option<u64>,
        bytes: usize,
    ) -> Self {
        Self::with_buffer(
            store_id,
            next_blob_id,
            super_blob,
            Vec::with_capacity(bytes.max(40)),
        )
    }

    /// As [`CheckpointEncoder::new`], encoding into `buf` (cleared first): a caller that
    /// checkpoints repeatedly hands back the previous payload's buffer, whose memory is
    /// already mapped, instead of allocating (and faulting in) a new one each time.
    pub fn with_buffer(
        store_id: u64,
        next_blob_id: u64,
        super_blob: Option<u64>,
        mut buf: Vec<u8>,
    ) -> Self {
        buf.clear();
        buf.extend_from_slice(&CHECKPOINT_MAGIC);
        buf.put_u64(store_id);
        buf.put_u64(next_blob_id);
        buf.put_u64(super_blob.unwrap_or(0));
        buf.put_u64(0); // blob_count, patched by `finish`
        CheckpointEncoder {
            buf,
            next_blob_id,
            last: 0,
            count: 0,
        }
    }

    /// Appends one blob record; ids must be strictly increasing and below `next_blob_id`.
    pub fn push(&mut self, r: &BlobRecord) -> Result<(), DecodeError> {
        if r.id <= self.last {
            return Err(DecodeError::invalid(
                "checkpoint blobs",
                "ids not increasing",
            ));
        }
        if r.id >= self.next_blob_id {
            return Err(DecodeError::invalid(
                "checkpoint blobs",
                "id >= next_blob_id",
            ));
        }
        let len = u32::try_from(r.encoded_len())
            .map_err(|_| DecodeError::invalid("checkpoint blob", "record over 4 GiB"))?;
        let at = self.buf.len();
        self.buf.put_u32(len);
        if let Err(e) = r.encode_into(&mut self.buf) {
            self.buf.truncate(at);
            return Err(e);
        }
        self.last = r.id;
        self.count += 1;
        Ok(())
    }

    /// The encoded payload.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[32..40].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            store_id: 5,
            next_blob_id: 10,
            super_blob: Some(4),
            blobs: vec![
                BlobRecord {
                    id: 4,
                    num_clusters: 1,
                    ..Default::default()
                },
                BlobRecord {
                    id: 9,
                    flags: crate::blob::FLAG_THIN,
                    num_clusters: 100,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_crc() {
        let c = sample();
        let b = c.encode().unwrap();
        assert_eq!(&b[0..8], b"OXBLOBCP");
        assert_eq!(&b[32..40], &2u64.to_le_bytes());
        let crc = crate::crc32c(&b);
        assert_eq!(Checkpoint::decode_checked(&b, crc).unwrap(), c);
        assert!(matches!(
            Checkpoint::decode_checked(&b, crc ^ 1),
            Err(DecodeError::BadChecksum { .. })
        ));
    }

    #[test]
    fn streaming_encoder_matches_and_refuses_disorder() {
        let c = sample();
        let mut e = CheckpointEncoder::new(c.store_id, c.next_blob_id, c.super_blob);
        for r in &c.blobs {
            e.push(r).unwrap();
        }
        assert_eq!(e.finish(), c.encode().unwrap());
        let mut e = CheckpointEncoder::new(c.store_id, c.next_blob_id, c.super_blob);
        e.push(&c.blobs[1]).unwrap();
        assert!(e.push(&c.blobs[0]).is_err());
        let bad = BlobRecord {
            id: 12,
            ..Default::default()
        };
        assert!(e.push(&bad).is_err());
        // A refused record leaves nothing behind.
        let one = Checkpoint {
            blobs: vec![c.blobs[1].clone()],
            ..c.clone()
        };
        assert_eq!(e.finish(), one.encode().unwrap());
    }

    #[test]
    fn ordering_and_bounds() {
        let mut c = sample();
        c.blobs.swap(0, 1);
        assert!(matches!(c.encode(), Err(DecodeError::Invalid { .. })));
        let mut c = sample();
        c.next_blob_id = 9;
        assert!(matches!(c.encode(), Err(DecodeError::Invalid { .. })));
        let mut b = sample().encode().unwrap();
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Checkpoint::decode(&b),
            Err(DecodeError::Truncated { .. })
        ));
    }
}

//! Property tests: every encoding round-trips, and no byte string (random, or a valid encoding
//! with random mutations) makes a decoder panic.

use oxblob_format::blob::KNOWN_FLAGS;
use oxblob_format::record::{self, Mutation, RecordKind};
use oxblob_format::{BlobRecord, Checkpoint, CheckpointRef, Extent, Superblock, Xattrs};
use proptest::prelude::*;
use std::sync::Arc;

#[allow(clippy::unwrap_used)] // test input: the generated names and values are within limits
fn blob_record(id: u64) -> impl Strategy<Value = BlobRecord> {
    (
        0..=KNOWN_FLAGS,
        prop::collection::vec((0u64..4, 0u64..1_000_000, 1u64..5), 0..6),
        0u64..4,
        prop::collection::vec(
            (
                "[a-z.]{1,20}",
                prop::collection::vec(any::<u8>(), 0..64),
                any::<bool>(),
            ),
            0..4,
        ),
        prop::option::of(1u64..1000),
    )
        .prop_map(move |(flags, gaps, tail, xs, parent)| {
            let mut extents = Vec::new();
            let mut at = 0;
            for (gap, physical, count) in gaps {
                at += gap;
                extents.push(Extent {
                    logical: at,
                    physical,
                    count,
                });
                at += count;
            }
            let mut xattrs = Xattrs::new();
            for (name, value, internal) in xs {
                // A later value of the same (internal, name) replaces the earlier one.
                xattrs.set(&name, &value, internal).unwrap();
            }
            BlobRecord {
                id,
                flags,
                num_clusters: at + tail,
                parent: parent.filter(|&p| p != id).unwrap_or(0),
                extents,
                xattrs,
            }
        })
}

fn superblock() -> impl Strategy<Value = Superblock> {
    (
        any::<u64>(),
        any::<u64>(),
        0u32..4,
        16u32..20,
        1u64..64,
        any::<u32>(),
        0u64..10_000,
    )
        .prop_map(
            |(store_id, generation, io_shift, cl_shift, data_clusters, crc, len)| {
                let cluster_size = 1u64 << cl_shift;
                let md_page_count = 64;
                let data_first_byte = (2 + md_page_count) * 4096u64;
                let data_first_byte = data_first_byte.div_ceil(cluster_size) * cluster_size;
                Superblock {
                    version: 1,
                    compat: 0,
                    ro_compat: 0,
                    incompat: 0,
                    bstype: [7; 16],
                    store_id,
                    generation,
                    md_page_size: 4096,
                    io_unit: 512 << io_shift,
                    cluster_size,
                    device_size: data_first_byte + data_clusters * cluster_size,
                    md_first_page: 2,
                    md_page_count,
                    md_segment_pages: 16,
                    data_first_byte,
                    data_cluster_count: data_clusters,
                    checkpoint: CheckpointRef {
                        first_page: 2,
                        page_count: 16,
                        len,
                        crc,
                    },
                    log_first_page: 18,
                    log_first_seq: generation / 2,
                }
            },
        )
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (1u64..100)
            .prop_flat_map(blob_record)
            .prop_map(|r| Mutation::PutBlob(Arc::new(r))),
        (1u64..100).prop_map(Mutation::DeleteBlob),
        prop::option::of(1u64..100).prop_map(Mutation::SetSuperBlob),
        any::<u64>().prop_map(Mutation::SetNextId),
    ]
}

fn decode_all(bytes: &[u8]) {
    let _ = BlobRecord::decode(bytes);
    let _ = Checkpoint::decode(bytes);
    let _ = record::decode_txn(bytes);
    let _ = record::decode_record(bytes);
    let _ = record::decode_link(bytes);
    let mut page = bytes.to_vec();
    page.resize(4096, 0);
    let _ = Superblock::decode(&page);
}

proptest! {
    #[test]
    fn blob_record_round_trips(r in (1u64..u64::MAX).prop_flat_map(blob_record)) {
        let b = r.encode().unwrap();
        prop_assert_eq!(b.len(), r.encoded_len());
        prop_assert_eq!(BlobRecord::decode(&b).unwrap(), r);
    }

    #[test]
    fn superblock_round_trips(sb in superblock()) {
        prop_assert_eq!(Superblock::decode(&sb.encode().unwrap()).unwrap(), sb);
    }

    #[test]
    fn txn_record_round_trips(ms in prop::collection::vec(mutation(), 1..6), seq: u64, epoch: u64) {
        let payload = record::encode_txn(&ms).unwrap();
        let rec = record::encode_record(3, epoch, seq, RecordKind::Txn, &payload).unwrap();
        let (h, p) = record::decode_record(&rec).unwrap();
        prop_assert_eq!(h.seq, seq);
        prop_assert_eq!(h.epoch, epoch);
        prop_assert_eq!(record::decode_txn(p).unwrap(), ms);
    }

    #[test]
    fn checkpoint_round_trips(ids in prop::collection::btree_set(1u64..1000, 0..8), sup in prop::option::of(1u64..1000)) {
        let blobs = ids.iter().map(|&id| BlobRecord { id, num_clusters: id % 7, ..Default::default() }).collect();
        let c = Checkpoint { store_id: 9, next_blob_id: 1000, super_blob: sup, blobs };
        let b = c.encode().unwrap();
        prop_assert_eq!(Checkpoint::decode_checked(&b, oxblob_format::crc32c(&b)).unwrap(), c);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(
        ms in prop::collection::vec(mutation(), 1..4),
        sb in superblock(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let payload = record::encode_txn(&ms).unwrap();
        let rec = record::encode_record(1, 1, 1, RecordKind::Txn, &payload).unwrap();
        let blobs: Vec<BlobRecord> = ms.iter().filter_map(|m| match m {
            Mutation::PutBlob(r) => Some(BlobRecord::clone(r)),
            _ => None,
        }).collect();
        let blob = blobs.first().cloned().unwrap_or(BlobRecord { id: 1, ..Default::default() });
        let mut ck_blobs = blobs.clone();
        ck_blobs.sort_by_key(|r| r.id);
        ck_blobs.dedup_by_key(|r| r.id);
        let ck = Checkpoint { store_id: 1, next_blob_id: 1000, super_blob: None, blobs: ck_blobs };
        for mut v in [payload, rec, blob.encode().unwrap(), ck.encode().unwrap(), sb.encode().unwrap()] {
            for (i, b) in &edits {
                let at = i.index(v.len());
                v[at] = *b;
            }
            decode_all(&v);
            // Checksummed structures: a decoder must also survive the payload alone.
            let _ = record::decode_txn(v.get(64..).unwrap_or(&[]));
            let at = cut.index(v.len() + 1);
            decode_all(&v[..at]);
        }
    }
}

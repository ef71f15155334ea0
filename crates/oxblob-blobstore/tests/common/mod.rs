//! Shared helpers for the blobstore integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity
)]

use oxblob_bdev::{BlockDevice, MallocDevice};
use oxblob_blobstore::{BlobInfo, BlobStore, InitOptions, LoadOptions};
use std::sync::Arc;

pub const CLUSTER: u64 = 64 * 1024;

/// A malloc device of `mib` MiB with `block`-byte blocks.
pub fn dev(mib: u64, block: u32) -> Arc<dyn BlockDevice> {
    Arc::new(MallocDevice::new("t", block, mib * 1024 * 1024 / u64::from(block)).unwrap())
}

/// Small geometry: 64 KiB clusters, 4-page segments, 256-page md region.
pub fn small_opts() -> InitOptions {
    InitOptions {
        cluster_size: CLUSTER,
        md_pages: Some(256),
        md_segment_pages: 4,
        bstype: oxblob_blobstore::bstype("TEST"),
    }
}

pub fn load(dev: &Arc<dyn BlockDevice>) -> BlobStore {
    BlobStore::load(Arc::clone(dev), LoadOptions::default()).unwrap()
}

/// A read-only load: the log replayed in memory, nothing written.
pub fn load_read_only(dev: &Arc<dyn BlockDevice>) -> oxblob_blobstore::Result<BlobStore> {
    BlobStore::load(
        Arc::clone(dev),
        LoadOptions {
            read_only: true,
            ..Default::default()
        },
    )
}

/// A new store (`small_opts`) on a `mib` MiB malloc device and a new thick blob of
/// `clusters` clusters.
pub fn store_with_blob(mib: u64, clusters: u64) -> (Arc<dyn BlockDevice>, BlobStore, u64) {
    let d = dev(mib, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let id = bs
        .create_blob(oxblob_blobstore::CreateOptions {
            num_clusters: clusters,
            ..Default::default()
        })
        .unwrap();
    (d, bs, id)
}

/// Deterministic pattern bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The store's whole observable metadata state.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct State {
    pub blobs: Vec<(
        BlobInfo,
        Vec<oxblob_blobstore::Extent>,
        Vec<(String, Vec<u8>)>,
    )>,
    pub super_blob: Option<u64>,
}

pub fn state(bs: &BlobStore) -> State {
    let blobs = bs
        .blobs()
        .unwrap()
        .into_iter()
        .map(|info| {
            let b = bs.open_blob(info.id).unwrap();
            let ext = b.extents();
            let mut internal: Vec<(String, Vec<u8>)> = Vec::new();
            for n in ["i1", "i2"] {
                if let Some(v) = b.get_internal_xattr(n) {
                    internal.push((n.to_string(), v));
                }
            }
            drop(b);
            (info, ext, internal)
        })
        .collect();
    State {
        blobs,
        super_blob: bs.super_blob().unwrap(),
    }
}

/// Checks the cross-blob invariants: no cluster owned twice, and free + owned = total.
pub fn check_invariants(bs: &BlobStore) {
    let mut seen = std::collections::BTreeSet::new();
    for info in bs.blobs().unwrap() {
        let b = bs.open_blob(info.id).unwrap();
        for e in b.extents() {
            for c in e.physical..e.physical + e.count {
                assert!(c < bs.total_clusters(), "cluster {c} out of range");
                assert!(seen.insert(c), "cluster {c} owned twice");
            }
        }
    }
    assert_eq!(
        bs.free_clusters().unwrap() + seen.len() as u64,
        bs.total_clusters(),
        "leaked or double-counted clusters"
    );
}

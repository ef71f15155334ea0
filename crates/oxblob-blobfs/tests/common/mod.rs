//! Shared helpers for the blobfs integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use oxblob_bdev::{BlockDevice, MallocDevice};
use oxblob_blobfs::{BlobFs, MkfsOptions, MountOptions};
use std::sync::Arc;

pub const CLUSTER: u64 = 64 * 1024;

/// A malloc device of `mib` MiB with `block`-byte blocks.
pub fn dev(mib: u64, block: u32) -> Arc<dyn BlockDevice> {
    Arc::new(MallocDevice::new("fs", block, mib * 1024 * 1024 / u64::from(block)).unwrap())
}

/// Small geometry: 64 KiB clusters, 4-page md segments.
pub fn small_mkfs() -> MkfsOptions {
    MkfsOptions {
        cluster_size: CLUSTER,
        md_segment_pages: 4,
        ..Default::default()
    }
}

/// A freshly formatted and mounted file system on a new malloc device.
pub fn fresh(mib: u64, block: u32) -> (Arc<dyn BlockDevice>, BlobFs) {
    let d = dev(mib, block);
    BlobFs::mkfs(Arc::clone(&d), small_mkfs()).unwrap();
    let fs = BlobFs::mount(Arc::clone(&d), MountOptions::default()).unwrap();
    (d, fs)
}

pub fn mount(d: &Arc<dyn BlockDevice>) -> BlobFs {
    BlobFs::mount(Arc::clone(d), MountOptions::default()).unwrap()
}

/// Mounts `d` with a data cache of `cache_bytes` (0: none).
pub fn mount_cached(d: &Arc<dyn BlockDevice>, cache_bytes: u64) -> BlobFs {
    let opts = MountOptions {
        cache_bytes,
        ..Default::default()
    };
    BlobFs::mount(Arc::clone(d), opts).unwrap()
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

/// Every path under `/` with its type and, for files, full contents (sorted by path).
pub fn snapshot(fs: &BlobFs) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(dir) = stack.pop() {
        for e in fs.readdir(&dir).unwrap() {
            let p = if dir == "/" {
                format!("/{}", e.name)
            } else {
                format!("{dir}/{}", e.name)
            };
            match e.kind {
                oxblob_blobfs::FileType::Dir => {
                    stack.push(p.clone());
                    out.insert(p, None);
                }
                oxblob_blobfs::FileType::File => {
                    let h = fs.open(&p, oxblob_blobfs::OpenFlags::read()).unwrap();
                    let len = usize::try_from(h.len()).unwrap();
                    let data = h.read_vec(0, len).unwrap();
                    assert_eq!(data.len(), len, "{p}: short read");
                    h.close().unwrap();
                    out.insert(p, Some(data));
                }
            }
        }
    }
    out
}

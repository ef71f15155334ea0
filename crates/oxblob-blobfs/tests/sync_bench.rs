//! Synced-append microbenchmark (ignored; prints, asserts only the bytes):
//! `cargo test --release -p oxblob-blobfs --test sync_bench -- --ignored --nocapture`.
//!
//! What a RocksDB WAL with `sync=true` asks of blobfs: 1,060-byte appends, each made durable
//! by `append_fdatasync` (how the plugin hands over a log's gathered appends on `Sync`). On a
//! RAM device there is no device latency, so the time per append is blobfs's and the
//! blobstore's own CPU cost of a durable append: the part of a synced write that is oxblob's
//! and not the disk's. Run with the cache off and on (the same call either way).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use oxblob_blobfs::BlobFs;
use std::sync::Arc;
use std::time::Instant;

/// Timed appends per configuration; `OXBLOB_SYNC_APPENDS` overrides (for a profiler).
const APPENDS: usize = 50_000;
const RECORD: usize = 1060;

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn synced_appends_cpu_cost() {
    let appends = std::env::var("OXBLOB_SYNC_APPENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(APPENDS);
    for cache in [0u64, 256 << 20] {
        let d = oxblob_bdev::spec::open("malloc:1GiB").unwrap();
        BlobFs::mkfs(Arc::clone(&d), Default::default()).unwrap();
        let fs = common::mount_cached(&d, cache);
        // Touch the RAM device's pages first (a file over most of it, then deleted), so the
        // kernel's first-touch page faults are not counted as blobfs's cost.
        let big = fs.create("/fill").unwrap();
        let piece = vec![0u8; 8 << 20];
        while big.len() < 800 << 20 {
            big.append(&piece).unwrap();
        }
        big.close().unwrap();
        fs.unlink("/fill").unwrap();
        let h = fs.create("/000001.log").unwrap();
        let rec: Vec<u8> = (0..RECORD).map(|i| (i * 7 + 3) as u8).collect();
        // Warm-up, as RocksDB's first appends are.
        for _ in 0..1000 {
            h.append_fdatasync(&rec).unwrap();
        }
        let t = Instant::now();
        for _ in 0..appends {
            h.append_fdatasync(&rec).unwrap();
        }
        let per = t.elapsed().as_secs_f64() * 1e9 / appends as f64;
        println!(
            "cache {:>4} MiB: {:>7.0} ns per synced {RECORD}-byte append ({:.0} appends/s)",
            cache >> 20,
            per,
            1e9 / per
        );
        let n = (appends + 1000) * RECORD;
        assert_eq!(h.len(), n as u64);
        let mut back = vec![0u8; RECORD];
        for i in [0, 1, appends / 2, appends] {
            assert_eq!(h.read_at((i * RECORD) as u64, &mut back).unwrap(), RECORD);
            assert_eq!(back, rec, "append {i}");
        }
        h.close().unwrap();
        fs.unmount().unwrap();
    }
}

//! Random-read microbenchmark (ignored; prints, asserts only the bytes):
//! `cargo test --release -p oxblob-blobfs --test read_bench -- --ignored --nocapture`.
//!
//! A 256 MiB file on a file image (`OXBLOB_BENCH_DIR`, default `/var/tmp`; `O_DIRECT` where the
//! host allows it) and on a RAM device (no device latency: what is left is blobfs's own CPU
//! cost per read). After a remount, 4 KiB random reads at 4 KiB-aligned offsets and at
//! arbitrary offsets (RocksDB's blocks are ~4 KiB at any offset), with the cache off and with a
//! cache that holds the whole file; two passes each (the second pass shows the warm cache).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use oxblob_blobfs::{BlobFs, MountOptions, OpenFlags};
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const FILE: u64 = 256 << 20;
const READS: usize = 20_000;

fn byte_at(off: u64) -> u8 {
    (off.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn run(spec_create: &str, spec_open: &str, label: &str) {
    for bound in [0u64, 512 << 20] {
        let d = oxblob_bdev::spec::open(spec_create).unwrap();
        BlobFs::mkfs(Arc::clone(&d), Default::default()).unwrap();
        let fs = BlobFs::mount(Arc::clone(&d), MountOptions::default()).unwrap();
        let h = fs.create("/sst").unwrap();
        let piece: u64 = 4 << 20;
        let mut buf = vec![0u8; piece as usize];
        for at in (0..FILE).step_by(piece as usize) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = byte_at(at + i as u64);
            }
            h.write_at(at, &buf).unwrap();
        }
        h.close().unwrap();
        let (fs, d) = if spec_open.is_empty() {
            // RAM device: remount on the same device.
            fs.unmount().unwrap();
            drop(fs);
            let fs = common::mount_cached(&d, bound);
            (fs, d)
        } else {
            fs.unmount().unwrap();
            drop(fs);
            drop(d);
            let d = oxblob_bdev::spec::open(spec_open).unwrap();
            let fs = common::mount_cached(&d, bound);
            (fs, d)
        };
        let h = fs.open("/sst", OpenFlags::read()).unwrap();
        let mut out = vec![0u8; 4096];
        for aligned in [true, false] {
            for pass in 1..=2 {
                let mut r = rand::rngs::StdRng::seed_from_u64(7);
                let t = std::time::Instant::now();
                for _ in 0..READS {
                    let mut off = r.gen_range(0..FILE - 4096);
                    if aligned {
                        off = off / 4096 * 4096;
                    }
                    let n = h.read_at(off, &mut out).unwrap();
                    assert_eq!(n, 4096);
                    assert_eq!(out[0], byte_at(off));
                    assert_eq!(out[4095], byte_at(off + 4095));
                }
                let e = t.elapsed();
                println!(
                    "{label:<5} cache {:>4} MiB {:<9} pass {pass}: {:>9.0} reads/s, {:>7.2} us/read",
                    bound >> 20,
                    if aligned { "aligned" } else { "unaligned" },
                    READS as f64 / e.as_secs_f64(),
                    e.as_secs_f64() * 1e6 / READS as f64
                );
            }
        }
        h.close().unwrap();
        fs.unmount().unwrap();
        drop(fs);
        drop(d);
    }
}

#[test]
#[ignore]
fn bench_random_4k_reads() {
    let dir = std::env::var("OXBLOB_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let path = format!("{dir}/oxblob-read-bench-{}.img", std::process::id());
    let _ = std::fs::remove_file(&path);
    run(
        &format!("file:{path}?create=400MiB"),
        &format!("file:{path}"),
        "file",
    );
    let _ = std::fs::remove_file(&path);
    run("malloc:400MiB", "", "ram");
}

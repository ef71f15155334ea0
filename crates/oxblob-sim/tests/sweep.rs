//! A crash sweep as the blobstore and blobfs tests run it, on a toy commit protocol: a data block,
//! then a commit block that points at it. The invariant after any crash: if the commit block is
//! there, the data it names is there.
//!
//! With a flush between data and commit the sweep finds no violation at any point and seed; with
//! the flush missing (the classic ordering bug) it finds one, and reports it as a replayable
//! `(point, seed)`. This is the proof that the crash device reorders and drops the way the fault
//! model says, and that a sweep over `image_at` catches ordering bugs.
//!
//! Quick by default (16 seeds per point); `OXBLOB_FULL=1` runs 512 seeds per point.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use oxblob_bdev::{blocking, BlockDevice, IoChannel, MallocDevice};
use oxblob_sim::rng::seed_from_env;
use oxblob_sim::{CrashDevice, CrashMode};
use std::sync::Arc;

const BS: usize = 4096;
const COMMIT_BLOCK: u64 = 0;

fn seeds_per_point() -> u64 {
    if std::env::var("OXBLOB_FULL").is_ok_and(|v| v == "1") {
        512
    } else {
        16
    }
}

/// Writes record `n`'s data (2 blocks at `8 + 2n`), then a commit block naming `n` and the data's
/// first byte; `flush_between` decides whether the data is flushed before the commit is written.
fn commit(ch: &mut dyn IoChannel, n: u8, flush_between: bool) {
    let data_at = (8 + 2 * u64::from(n)) * BS as u64;
    blocking::write_slice(ch, data_at, &vec![0x40 + n; 2 * BS]).unwrap();
    if flush_between {
        blocking::flush(ch).unwrap();
    }
    let mut c = vec![0u8; BS];
    c[0] = n;
    c[1] = 0x40 + n;
    blocking::write_slice(ch, COMMIT_BLOCK * BS as u64, &c).unwrap();
    blocking::flush(ch).unwrap();
}

/// The invariant: every record up to the committed one has all its data.
fn check(image: &[u8]) -> Result<(), String> {
    let n = image[0];
    if n == 0 {
        return Ok(()); // nothing committed
    }
    for k in 1..=n {
        let at = (8 + 2 * usize::from(k)) * BS;
        let want = 0x40 + k;
        if let Some(i) = image[at..at + 2 * BS].iter().position(|&b| b != want) {
            return Err(format!(
                "commit {n} but record {k} byte {i} is {:#x}",
                image[at + i]
            ));
        }
    }
    Ok(())
}

/// Runs the workload, then sweeps every point after the mark; returns the first violation.
fn sweep(flush_between: bool) -> Option<(usize, u64, CrashMode, String)> {
    let base_seed = seed_from_env(0x5eed);
    let crash = CrashDevice::new(Arc::new(MallocDevice::new("m", BS as u32, 64).unwrap())).unwrap();
    let mut ch = crash.channel().unwrap();
    commit(ch.as_mut(), 1, true); // setup, always correct
    crash.mark();
    for n in 2..=4 {
        commit(ch.as_mut(), n, flush_between);
    }
    for point in 0..=crash.history_len() {
        for mode in [CrashMode::DropAll, CrashMode::KeepAll] {
            let img = crash.image_bytes_at(point, 0, mode).unwrap();
            if let Err(e) = check(&img) {
                return Some((point, 0, mode, e));
            }
        }
        for seed in base_seed..base_seed + seeds_per_point() {
            let img = crash
                .image_bytes_at(point, seed, CrashMode::Random)
                .unwrap();
            if let Err(e) = check(&img) {
                return Some((point, seed, CrashMode::Random, e));
            }
        }
    }
    None
}

#[test]
fn correct_protocol_survives_every_crash_point() {
    if let Some((point, seed, mode, e)) = sweep(true) {
        panic!("crash point {point} seed {seed} {mode:?}: {e}");
    }
}

#[test]
fn missing_flush_is_caught_with_a_replayable_point_and_seed() {
    let (point, seed, mode, e) = sweep(false).expect("the sweep must catch the missing flush");
    // Replaying from (point, seed) alone gives the same broken image.
    let crash = CrashDevice::new(Arc::new(MallocDevice::new("m", BS as u32, 64).unwrap())).unwrap();
    let mut ch = crash.channel().unwrap();
    commit(ch.as_mut(), 1, true);
    crash.mark();
    for n in 2..=4 {
        commit(ch.as_mut(), n, false);
    }
    let img = crash.image_at(point, seed, mode).unwrap();
    let mut rch = img.channel().unwrap();
    let bytes = blocking::read(rch.as_mut(), 0, 64 * BS).unwrap();
    assert!(
        check(&bytes).is_err(),
        "replay of point {point} seed {seed} {mode:?} ({e}) passed"
    );
}

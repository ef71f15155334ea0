//! CrashDevice against a byte-level model: what each mode keeps, reproducibility from the seed,
//! torn writes, flush coverage, history points and the mark.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use oxblob_bdev::{blocking, BdevError, BlockDevice, Completion, IoBuf, IoOp, MallocDevice};
use oxblob_sim::rng::{rng, seed_from_env};
use oxblob_sim::{CrashDevice, CrashMode};
use rand::Rng;
use std::sync::Arc;

const BS: usize = 4096;
const BLOCKS: u64 = 256;

fn malloc() -> Arc<dyn BlockDevice> {
    Arc::new(MallocDevice::new("m", BS as u32, BLOCKS).unwrap())
}

/// Distinct, non-zero bytes for write number `tag`.
fn pattern(tag: u64, len: usize) -> Vec<u8> {
    let mut r = rng(tag.wrapping_mul(0x9e37_79b9) ^ 0x5a5a);
    (0..len).map(|_| r.gen_range(1..=255u8)).collect()
}

fn dump(dev: &dyn BlockDevice) -> Vec<u8> {
    let mut ch = dev.channel().unwrap();
    blocking::read(ch.as_mut(), 0, dev.info().size_bytes() as usize)
        .unwrap()
        .to_vec()
}

fn apply(model: &mut [u8], offset: u64, data: &[u8]) {
    model[offset as usize..offset as usize + data.len()].copy_from_slice(data);
}

#[test]
fn drop_all_loses_exactly_the_unflushed_writes_and_keep_all_keeps_them() {
    let crash = CrashDevice::new(malloc()).unwrap();
    let mut ch = crash.channel().unwrap();
    let mut durable = vec![0u8; BS * BLOCKS as usize];
    let a = pattern(1, 3 * BS);
    blocking::write_slice(ch.as_mut(), 0, &a).unwrap();
    blocking::flush(ch.as_mut()).unwrap();
    apply(&mut durable, 0, &a);
    let mut latest = durable.clone();
    let b = pattern(2, 2 * BS);
    let c = pattern(3, BS);
    blocking::write_slice(ch.as_mut(), BS as u64, &b).unwrap(); // overwrites part of a
    blocking::write_slice(ch.as_mut(), 100 * BS as u64, &c).unwrap();
    blocking::write_zeroes(ch.as_mut(), 0, BS as u64).unwrap();
    apply(&mut latest, BS as u64, &b);
    apply(&mut latest, 100 * BS as u64, &c);
    apply(&mut latest, 0, &vec![0u8; BS]);

    assert_eq!(crash.unflushed_writes(), 3);
    assert!(dump(crash.as_ref()) == latest, "reads see the latest data");
    let dropped = crash.crash_image(1, CrashMode::DropAll).unwrap();
    assert!(
        dump(dropped.as_ref()) == durable,
        "DropAll = durable data only"
    );
    let kept = crash.crash_image(1, CrashMode::KeepAll).unwrap();
    assert!(
        dump(kept.as_ref()) == latest,
        "KeepAll = everything completed"
    );
    assert_eq!(dropped.info().block_size, BS as u32);
    assert_eq!(dropped.info().num_blocks, BLOCKS);

    blocking::flush(ch.as_mut()).unwrap();
    assert_eq!(crash.unflushed_writes(), 0);
    let after = crash.crash_image(1, CrashMode::DropAll).unwrap();
    assert!(
        dump(after.as_ref()) == latest,
        "after a flush everything is durable"
    );
}

#[test]
fn inner_contents_at_creation_are_durable() {
    let inner = malloc();
    let first = pattern(9, 5 * BS);
    {
        let mut ch = inner.channel().unwrap();
        blocking::write_slice(ch.as_mut(), 7 * BS as u64, &first).unwrap();
    }
    let crash = CrashDevice::new(inner).unwrap();
    let image = crash.crash_image(0, CrashMode::DropAll).unwrap();
    let bytes = dump(image.as_ref());
    assert!(bytes[7 * BS..12 * BS] == first[..]);
}

#[test]
fn flush_covers_only_writes_completed_before_it_was_submitted() {
    let crash = CrashDevice::new(malloc()).unwrap();
    let mut ch = crash.channel().unwrap();
    let w = pattern(4, BS);
    // The write is submitted but its completion is not reaped before the flush is submitted:
    // it was not "completed" when the flush started, so the flush does not cover it.
    ch.submit(
        1,
        IoOp::Write {
            offset: 0,
            buf: IoBuf::from_slice(&w),
        },
    )
    .unwrap();
    ch.submit(2, IoOp::Flush).unwrap();
    let mut out: Vec<Completion> = Vec::new();
    while out.len() < 2 {
        ch.poll(&mut out, 2).unwrap();
    }
    assert!(out.iter().all(|c| c.result.is_ok()));
    let mut tokens: Vec<u64> = out.iter().map(|c| c.token).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, vec![1, 2], "caller tokens come back unchanged");
    assert_eq!(crash.unflushed_writes(), 1);
    let image = crash.crash_image(0, CrashMode::DropAll).unwrap();
    assert!(dump(image.as_ref())[..BS].iter().all(|&b| b == 0));
    // A flush submitted after the write's completion covers it.
    blocking::flush(ch.as_mut()).unwrap();
    let image = crash.crash_image(0, CrashMode::DropAll).unwrap();
    assert!(dump(image.as_ref())[..BS] == w[..]);
}

/// A workload of `n` writes (1–8 blocks, overlapping) with a flush every few writes.
/// Returns, for each history point, the (durable, latest) model images.
fn run_workload(crash: &CrashDevice, seed: u64, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut r = rng(seed);
    let mut ch = crash.channel().unwrap();
    let mut durable = dump(crash);
    let mut latest = durable.clone();
    let mut models = vec![(durable.clone(), latest.clone())];
    for i in 0..n {
        let blocks = r.gen_range(1..=8u64);
        let at = r.gen_range(0..=32 - blocks) * BS as u64; // a small region: many overlaps
        let data = pattern(seed ^ (i as u64) << 20, blocks as usize * BS);
        blocking::write_slice(ch.as_mut(), at, &data).unwrap();
        apply(&mut latest, at, &data);
        models.push((durable.clone(), latest.clone()));
        if r.gen_range(0..4) == 0 {
            blocking::flush(ch.as_mut()).unwrap();
            durable = latest.clone();
            models.push((durable.clone(), latest.clone()));
        }
    }
    models
}

#[test]
fn image_at_every_point_matches_the_model() {
    let seed = seed_from_env(0xc0ffee);
    let crash = CrashDevice::new(malloc()).unwrap();
    let models = run_workload(&crash, seed, 40);
    assert_eq!(crash.history_len() + 1, models.len(), "seed {seed}");
    let flushes = crash.flush_points();
    assert!(!flushes.is_empty(), "seed {seed}: workload has flushes");
    for (point, (durable, latest)) in models.iter().enumerate() {
        let d = crash.image_bytes_at(point, 7, CrashMode::DropAll).unwrap();
        assert!(
            &d == durable,
            "seed {seed} point {point}: DropAll differs from the model"
        );
        let k = crash.image_bytes_at(point, 7, CrashMode::KeepAll).unwrap();
        assert!(
            &k == latest,
            "seed {seed} point {point}: KeepAll differs from the model"
        );
    }
    for &p in &flushes {
        assert!(
            models[p].0 == models[p].1,
            "seed {seed}: at a flush point all is durable"
        );
    }
    let past = crash.image_at(models.len(), 7, CrashMode::DropAll);
    assert!(matches!(past, Err(BdevError::Config(_))), "seed {seed}");
}

#[test]
fn random_images_are_reproducible_and_blocks_are_atomic() {
    let seed = seed_from_env(0xbeef);
    let crash = CrashDevice::new(malloc()).unwrap();
    let mut ch = crash.channel().unwrap();
    let base = pattern(77, 64 * BS);
    blocking::write_slice(ch.as_mut(), 0, &base).unwrap();
    blocking::flush(ch.as_mut()).unwrap();
    // Unflushed: 12 writes of 4 blocks each, overlapping in pairs.
    let mut writes = Vec::new();
    for i in 0..12u64 {
        let at = (i / 2) * 6 * BS as u64 + (i % 2) * 2 * BS as u64;
        let data = pattern(1000 + i, 4 * BS);
        blocking::write_slice(ch.as_mut(), at, &data).unwrap();
        writes.push((at, data));
    }
    let mut images = Vec::new();
    for s in 0..16u64 {
        let s = seed.wrapping_add(s);
        let a = crash
            .image_bytes_at(crash.history_len(), s, CrashMode::Random)
            .unwrap();
        let b = crash
            .image_bytes_at(crash.history_len(), s, CrashMode::Random)
            .unwrap();
        assert!(a == b, "seed {s}: same seed must give the same image");
        let dev = crash.crash_image(s, CrashMode::Random).unwrap();
        assert!(
            dump(dev.as_ref()) == a,
            "seed {s}: device image equals the bytes"
        );
        // Every block holds either its durable contents or one whole block of a write covering it.
        for blk in 0..64usize {
            let got = &a[blk * BS..(blk + 1) * BS];
            let mut ok = got == &base[blk * BS..(blk + 1) * BS];
            for (at, data) in &writes {
                let first = *at as usize / BS;
                if (first..first + 4).contains(&blk) {
                    let k = blk - first;
                    ok |= got == &data[k * BS..(k + 1) * BS];
                }
            }
            assert!(ok, "seed {s}: block {blk} is not a whole old or new block");
        }
        images.push(a);
    }
    let distinct = {
        let mut v = images.clone();
        v.sort();
        v.dedup();
        v.len()
    };
    assert!(
        distinct > 8,
        "seed {seed}: different seeds give different images ({distinct}/16)"
    );
}

#[test]
fn random_mode_tears_and_reorders_for_some_seed() {
    let crash = CrashDevice::new(malloc()).unwrap();
    let mut ch = crash.channel().unwrap();
    let older = pattern(1, 8 * BS);
    let newer = pattern(2, 8 * BS);
    blocking::write_slice(ch.as_mut(), 0, &older).unwrap();
    blocking::write_slice(ch.as_mut(), 0, &newer).unwrap();
    let (mut torn, mut older_wins) = (None, None);
    for seed in 0..256u64 {
        let img = crash
            .image_bytes_at(crash.history_len(), seed, CrashMode::Random)
            .unwrap();
        let blocks: Vec<u8> = (0..8)
            .map(|b| {
                let got = &img[b * BS..(b + 1) * BS];
                if got == &newer[b * BS..(b + 1) * BS] {
                    2
                } else if got == &older[b * BS..(b + 1) * BS] {
                    1
                } else {
                    assert!(
                        got.iter().all(|&x| x == 0),
                        "seed {seed}: block {b} is garbage"
                    );
                    0
                }
            })
            .collect();
        let kinds = {
            let mut k = blocks.clone();
            k.sort_unstable();
            k.dedup();
            k.len()
        };
        if kinds > 1 && torn.is_none() {
            torn = Some(seed);
        }
        if blocks.iter().all(|&b| b == 1) && older_wins.is_none() {
            older_wins = Some(seed);
        }
    }
    assert!(torn.is_some(), "no seed in 0..256 tore a multi-block write");
    assert!(
        older_wins.is_some(),
        "no seed in 0..256 let the older write win everywhere"
    );
}

#[test]
fn mark_starts_the_history_and_keeps_pending_writes_pending() {
    let crash = CrashDevice::new(malloc()).unwrap();
    let mut ch = crash.channel().unwrap();
    let setup = pattern(5, 2 * BS);
    blocking::write_slice(ch.as_mut(), 0, &setup).unwrap();
    blocking::flush(ch.as_mut()).unwrap();
    let pending = pattern(6, BS);
    blocking::write_slice(ch.as_mut(), 10 * BS as u64, &pending).unwrap();
    crash.mark();
    assert_eq!(crash.history_len(), 0);
    assert_eq!(crash.unflushed_writes(), 1);
    let op = pattern(7, BS);
    blocking::write_slice(ch.as_mut(), 20 * BS as u64, &op).unwrap();
    blocking::flush(ch.as_mut()).unwrap();
    assert_eq!(crash.history_len(), 2);
    assert_eq!(crash.flush_points(), vec![2]);

    let p0 = crash.image_bytes_at(0, 1, CrashMode::DropAll).unwrap();
    assert!(p0[..2 * BS] == setup[..], "durable setup survives the mark");
    assert!(
        p0[10 * BS..11 * BS].iter().all(|&b| b == 0),
        "pending at mark may be dropped"
    );
    let p0k = crash.image_bytes_at(0, 1, CrashMode::KeepAll).unwrap();
    assert!(p0k[10 * BS..11 * BS] == pending[..]);
    assert!(
        p0k[20 * BS..21 * BS].iter().all(|&b| b == 0),
        "point 0 is before the operation"
    );
    let p2 = crash.image_bytes_at(2, 1, CrashMode::DropAll).unwrap();
    assert!(
        p2[10 * BS..11 * BS] == pending[..],
        "the flush after the mark covers it"
    );
    assert!(p2[20 * BS..21 * BS] == op[..]);
}

#[test]
fn failed_inner_requests_are_not_recorded_and_rejections_pass_through() {
    let crash = CrashDevice::new(malloc()).unwrap();
    let mut ch = crash.channel().unwrap();
    let r = ch.submit(
        1,
        IoOp::Write {
            offset: 3,
            buf: IoBuf::zeroed(BS),
        },
    );
    assert!(matches!(r, Err(rej) if matches!(rej.error, BdevError::Misaligned { .. })));
    assert_eq!(ch.in_flight(), 0);
    assert_eq!(crash.history_len(), 0);
    crash.close();
    let r = ch.submit(2, IoOp::Flush);
    assert!(matches!(r, Err(rej) if rej.error == BdevError::Closed));
    assert!(matches!(crash.channel(), Err(BdevError::Closed)));
}

//! TransformDevice stores scrambled bytes and reads back exact ones; CountingDevice counts by
//! kind; corrupt_block changes exactly the bytes it reports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use oxblob_bdev::{blocking, BdevError, BlockDevice, IoBuf, IoKind, IoOp, MallocDevice};
use oxblob_sim::rng::{rng, seed_from_env};
use oxblob_sim::{corrupt_block, CountingDevice, ErrorDevice, Fault, IoCounts, TransformDevice};
use rand::Rng;
use std::sync::Arc;

const BS: usize = 4096;

fn malloc(bs: u32) -> Arc<dyn BlockDevice> {
    Arc::new(MallocDevice::new("inner", bs, 512).unwrap())
}

fn read(dev: &dyn BlockDevice, offset: u64, len: usize) -> Vec<u8> {
    let mut ch = dev.channel().unwrap();
    blocking::read(ch.as_mut(), offset, len).unwrap().to_vec()
}

#[test]
fn stored_bytes_differ_and_reads_through_the_wrapper_are_exact() {
    let seed = seed_from_env(0x7a5);
    for bs in [512u32, 4096] {
        let inner = malloc(bs);
        let dev = TransformDevice::new(inner.clone(), seed);
        let mut ch = dev.channel().unwrap();
        let mut r = rng(seed);
        let bsz = bs as usize;
        let data: Vec<u8> = (0..32 * bsz).map(|_| r.gen()).collect();
        // Same data at two offsets: stored differently (per-block keys).
        blocking::write_slice(ch.as_mut(), 0, &data).unwrap();
        blocking::write_slice(ch.as_mut(), 64 * bs as u64, &data).unwrap();
        let got = blocking::read(ch.as_mut(), 0, data.len()).unwrap();
        assert!(
            got.as_slice() == data.as_slice(),
            "seed {seed} bs {bs}: read back differs"
        );
        let stored = read(inner.as_ref(), 0, data.len());
        let stored2 = read(inner.as_ref(), 64 * bs as u64, data.len());
        for b in 0..32 {
            let span = b * bsz..(b + 1) * bsz;
            assert_ne!(
                stored[span.clone()],
                data[span.clone()],
                "seed {seed}: block {b} stored plain"
            );
            assert_ne!(
                stored[span.clone()],
                stored2[span],
                "seed {seed}: same key at two blocks"
            );
        }
        // The wrapper's own encode agrees with what is stored.
        let mut enc = data[..bsz].to_vec();
        dev.encode(0, &mut enc);
        assert_eq!(enc, stored[..bsz]);
        dev.decode(0, &mut enc);
        assert_eq!(enc, data[..bsz]);
    }
}

#[test]
fn write_buffers_come_back_unchanged_and_vectored_io_is_exact() {
    let dev = TransformDevice::new(malloc(4096), 5);
    let mut ch = dev.channel().unwrap();
    let a = IoBuf::filled(BS, 0x42);
    let b = IoBuf::from_slice(&(0..2 * BS).map(|i| i as u8).collect::<Vec<_>>());
    let op = blocking::run(
        ch.as_mut(),
        IoOp::Writev {
            offset: 3 * BS as u64,
            bufs: vec![a.clone(), b.clone()],
        },
    )
    .unwrap();
    assert_eq!(op.into_bufs(), vec![a.clone(), b.clone()]);
    let op = blocking::run(
        ch.as_mut(),
        IoOp::Readv {
            offset: 3 * BS as u64,
            bufs: vec![IoBuf::zeroed(2 * BS), IoBuf::zeroed(BS)],
        },
    )
    .unwrap();
    let joined: Vec<u8> = op.into_bufs().iter().flat_map(|x| x.to_vec()).collect();
    let expect: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
    assert_eq!(joined, expect);
    // A rejected write hands back the caller's bytes, not scrambled ones.
    let rej = ch
        .submit(
            1,
            IoOp::Write {
                offset: 1 << 40,
                buf: a.clone(),
            },
        )
        .unwrap_err();
    assert!(matches!(rej.error, BdevError::OutOfRange { .. }));
    assert_eq!(rej.op.into_buf().unwrap(), a);
}

#[test]
fn a_failed_write_below_the_transform_returns_the_original_bytes() {
    let errs = ErrorDevice::new(malloc(4096));
    errs.faults().arm(Fault::always().kind(IoKind::Write));
    let dev = TransformDevice::new(errs, 11);
    let mut ch = dev.channel().unwrap();
    let data = IoBuf::filled(BS, 0x33);
    ch.submit(
        9,
        IoOp::Write {
            offset: 0,
            buf: data.clone(),
        },
    )
    .unwrap();
    let mut out = Vec::new();
    ch.poll(&mut out, 1).unwrap();
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].result, Err(BdevError::Io { .. })));
    let c = out.pop().unwrap();
    assert_eq!(c.op.into_buf().unwrap(), data);
}

#[test]
fn unmapped_blocks_read_as_zeroes_through_the_transform() {
    let dev = TransformDevice::new(malloc(4096), 77);
    let mut ch = dev.channel().unwrap();
    blocking::write_slice(ch.as_mut(), 0, &[0xee; 4 * BS]).unwrap();
    blocking::unmap(ch.as_mut(), BS as u64, BS as u64).unwrap();
    blocking::write_zeroes(ch.as_mut(), 2 * BS as u64, BS as u64).unwrap();
    let got = blocking::read(ch.as_mut(), 0, 4 * BS).unwrap();
    assert!(got[..BS].iter().all(|&b| b == 0xee));
    assert!(got[BS..3 * BS].iter().all(|&b| b == 0));
    assert!(got[3 * BS..].iter().all(|&b| b == 0xee));
}

#[test]
fn counting_device_counts_ops_and_bytes_by_kind_and_resets() {
    let errs = ErrorDevice::new(malloc(4096));
    let dev = CountingDevice::new(errs.clone());
    let mut ch = dev.channel().unwrap();
    blocking::write_slice(ch.as_mut(), 0, &[1; 3 * BS]).unwrap();
    blocking::write_slice(ch.as_mut(), 0, &[1; BS]).unwrap();
    blocking::read(ch.as_mut(), 0, 2 * BS).unwrap();
    blocking::flush(ch.as_mut()).unwrap();
    blocking::unmap(ch.as_mut(), 0, 5 * BS as u64).unwrap();
    blocking::write_zeroes(ch.as_mut(), 0, 6 * BS as u64).unwrap();
    // Rejected requests are not counted; failed ones are counted as errors.
    assert!(ch
        .submit(
            1,
            IoOp::Read {
                offset: 1,
                buf: IoBuf::zeroed(BS)
            }
        )
        .is_err());
    errs.faults().arm(Fault::nth(1).kind(IoKind::Read));
    assert!(blocking::read(ch.as_mut(), 0, BS).is_err());
    let c = dev.counts();
    assert_eq!(
        c,
        IoCounts {
            reads: 1,
            read_bytes: 2 * BS as u64,
            writes: 2,
            write_bytes: 4 * BS as u64,
            flushes: 1,
            unmaps: 1,
            unmap_bytes: 5 * BS as u64,
            write_zeroes: 1,
            write_zeroes_bytes: 6 * BS as u64,
            errors: 1,
        }
    );
    assert_eq!(
        (c.ops(IoKind::Write), c.bytes(IoKind::Write)),
        (2, 4 * BS as u64)
    );
    assert_eq!(c.bytes(IoKind::Flush), 0);
    dev.reset();
    assert_eq!(dev.counts(), IoCounts::default());
    blocking::read(ch.as_mut(), 0, BS).unwrap();
    assert_eq!(dev.counts().reads, 1);
}

#[test]
fn corrupt_block_changes_exactly_the_reported_bytes_of_one_block() {
    let seed = seed_from_env(0xc0);
    for s in seed..seed + 20 {
        let dev = malloc(4096);
        let mut ch = dev.channel().unwrap();
        let data: Vec<u8> = (0..3 * BS).map(|i| (i % 251) as u8).collect();
        blocking::write_slice(ch.as_mut(), 0, &data).unwrap();
        let flipped = corrupt_block(dev.as_ref(), 1, s).unwrap();
        assert!((1..=8).contains(&flipped.len()), "seed {s}: {flipped:?}");
        let after = read(dev.as_ref(), 0, 3 * BS);
        let changed: Vec<usize> = (0..3 * BS).filter(|&i| after[i] != data[i]).collect();
        let expect: Vec<usize> = flipped.iter().map(|&i| BS + i).collect();
        assert_eq!(changed, expect, "seed {s}");
        assert_eq!(
            corrupt_block(dev.as_ref(), 1, s).unwrap(),
            flipped,
            "seed {s}: reproducible"
        );
    }
    let dev = malloc(4096);
    assert!(matches!(
        corrupt_block(dev.as_ref(), 512, 1),
        Err(BdevError::OutOfRange { .. })
    ));
}

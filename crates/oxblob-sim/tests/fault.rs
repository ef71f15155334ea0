//! ErrorDevice: exactly the chosen requests fail, with the chosen errno, and failed writes do not
//! reach the inner device (or reach it torn when asked).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use oxblob_bdev::{
    blocking, BdevError, BlockDevice, Completion, IoBuf, IoKind, IoOp, MallocDevice,
};
use oxblob_sim::{CountingDevice, CrashDevice, CrashMode, ErrorDevice, Fault};
use std::sync::Arc;

const BS: usize = 4096;

fn malloc() -> Arc<dyn BlockDevice> {
    Arc::new(MallocDevice::new("inner", BS as u32, 1024).unwrap())
}

fn inner_bytes(dev: &dyn BlockDevice, offset: u64, len: usize) -> Vec<u8> {
    let mut ch = dev.channel().unwrap();
    blocking::read(ch.as_mut(), offset, len).unwrap().to_vec()
}

#[test]
fn fails_exactly_the_nth_write_with_the_chosen_errno() {
    let inner = malloc();
    let dev = ErrorDevice::new(inner.clone());
    let faults = dev.faults();
    let mut ch = dev.channel().unwrap();
    // Setup succeeds: nothing armed yet.
    for i in 0..5u64 {
        blocking::write_slice(ch.as_mut(), i * BS as u64, &[1u8; BS]).unwrap();
    }
    faults.arm(Fault::nth(3).kind(IoKind::Write).errno(libc::ENOSPC));
    let mut results = Vec::new();
    for i in 0..6u64 {
        // Reads in between do not count towards the 3rd write.
        blocking::read(ch.as_mut(), 0, BS).unwrap();
        let r = blocking::write_slice(ch.as_mut(), (10 + i) * BS as u64, &[0xa0 + i as u8; BS]);
        results.push(r);
    }
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            assert_eq!(
                r,
                &Err(BdevError::Io {
                    op: IoKind::Write,
                    offset: 12 * BS as u64,
                    errno: libc::ENOSPC
                })
            );
        } else {
            assert_eq!(r, &Ok(()), "write {i}");
        }
    }
    assert_eq!(faults.injected(), 1);
    assert_eq!(faults.armed(), 0, "an nth fault is spent after firing");
    // The failed write never reached the inner device; the others did.
    assert!(inner_bytes(inner.as_ref(), 12 * BS as u64, BS)
        .iter()
        .all(|&b| b == 0));
    assert!(inner_bytes(inner.as_ref(), 13 * BS as u64, BS)
        .iter()
        .all(|&b| b == 0xa3));
}

#[test]
fn nth_counts_across_channels_and_any_kind_when_unfiltered() {
    let dev = ErrorDevice::new(malloc());
    let faults = dev.faults();
    faults.arm(Fault::nth(4));
    let mut a = dev.channel().unwrap();
    let mut b = dev.channel().unwrap();
    assert_eq!(blocking::read(a.as_mut(), 0, BS).map(|_| ()), Ok(()));
    assert_eq!(blocking::flush(b.as_mut()), Ok(()));
    assert_eq!(blocking::write_slice(a.as_mut(), 0, &[3; BS]), Ok(()));
    assert_eq!(
        blocking::unmap(b.as_mut(), 8 * BS as u64, BS as u64),
        Err(BdevError::Io {
            op: IoKind::Unmap,
            offset: 8 * BS as u64,
            errno: libc::EIO
        })
    );
    assert_eq!(blocking::flush(a.as_mut()), Ok(()));
    assert_eq!(faults.requests_seen(), 5);
}

#[test]
fn fails_every_request_of_a_kind_until_disarmed() {
    let kinds = [
        IoKind::Read,
        IoKind::Write,
        IoKind::Flush,
        IoKind::Unmap,
        IoKind::WriteZeroes,
    ];
    for kind in kinds {
        let dev = ErrorDevice::new(malloc());
        let faults = dev.faults();
        let id = faults.arm(Fault::always().kind(kind).errno(libc::EROFS));
        let mut ch = dev.channel().unwrap();
        for round in 0..3 {
            let ops: Vec<(IoKind, Result<(), BdevError>)> = vec![
                (IoKind::Read, blocking::read(ch.as_mut(), 0, BS).map(|_| ())),
                (
                    IoKind::Read,
                    blocking::run(
                        ch.as_mut(),
                        IoOp::Readv {
                            offset: 0,
                            bufs: vec![IoBuf::zeroed(BS)],
                        },
                    )
                    .map(|_| ()),
                ),
                (
                    IoKind::Write,
                    blocking::write_slice(ch.as_mut(), 0, &[1; BS]),
                ),
                (IoKind::Flush, blocking::flush(ch.as_mut())),
                (IoKind::Unmap, blocking::unmap(ch.as_mut(), 0, BS as u64)),
                (
                    IoKind::WriteZeroes,
                    blocking::write_zeroes(ch.as_mut(), 0, BS as u64),
                ),
            ];
            for (k, r) in ops {
                if k == kind {
                    let failed = matches!(r, Err(BdevError::Io { op, errno, .. })
                        if op == kind && errno == libc::EROFS);
                    assert!(failed, "{kind} round {round}: {r:?}");
                } else {
                    assert_eq!(r, Ok(()), "{k} while failing {kind}");
                }
            }
        }
        assert!(faults.disarm(id));
        assert!(!faults.disarm(id), "disarming twice reports false");
        assert_eq!(blocking::flush(ch.as_mut()), Ok(()));
        assert_eq!(blocking::read(ch.as_mut(), 0, BS).map(|_| ()), Ok(()));
    }
}

#[test]
fn fails_requests_touching_a_byte_range() {
    let dev = ErrorDevice::new(malloc());
    let faults = dev.faults();
    faults.arm(Fault::always().range(10 * BS as u64, 2 * BS as u64));
    let mut ch = dev.channel().unwrap();
    let io = |offset: u64| BdevError::Io {
        op: IoKind::Read,
        offset,
        errno: libc::EIO,
    };
    // Blocks 8..=13, reads of 2 blocks at each: only those overlapping 10..12 fail.
    for first in 8u64..=13 {
        let off = first * BS as u64;
        let r = blocking::read(ch.as_mut(), off, 2 * BS).map(|_| ());
        let overlaps = first + 2 > 10 && first < 12;
        if overlaps {
            assert_eq!(r, Err(io(off)), "block {first}");
        } else {
            assert_eq!(r, Ok(()), "block {first}");
        }
    }
    assert_eq!(
        blocking::flush(ch.as_mut()),
        Ok(()),
        "flush touches no range"
    );
    faults.disarm_all();
    assert_eq!(
        blocking::read(ch.as_mut(), 10 * BS as u64, BS).map(|_| ()),
        Ok(())
    );
}

#[test]
fn a_torn_failed_write_lands_only_its_first_blocks() {
    let inner = malloc();
    let dev = ErrorDevice::new(inner.clone());
    dev.faults().arm(Fault::nth(1).kind(IoKind::Write).torn(3));
    let mut ch = dev.channel().unwrap();
    let data: Vec<u8> = (0..8 * BS).map(|i| (i / BS) as u8 + 1).collect();
    let bufs = vec![
        IoBuf::from_slice(&data[..2 * BS]),
        IoBuf::from_slice(&data[2 * BS..]),
    ];
    let r = blocking::run(ch.as_mut(), IoOp::Writev { offset: 0, bufs });
    assert!(
        matches!(
            r,
            Err(BdevError::Io {
                op: IoKind::Write,
                offset: 0,
                ..
            })
        ),
        "{r:?}"
    );
    let got = inner_bytes(inner.as_ref(), 0, 8 * BS);
    assert_eq!(&got[..3 * BS], &data[..3 * BS], "the first 3 blocks landed");
    assert!(got[3 * BS..].iter().all(|&b| b == 0), "the rest did not");
}

#[test]
fn injected_failures_come_back_with_their_buffers_at_poll() {
    let dev = ErrorDevice::new(malloc());
    dev.faults().arm(Fault::always().kind(IoKind::Write));
    let mut ch = dev.channel().unwrap();
    let payload = IoBuf::filled(2 * BS, 0x5c);
    ch.submit(
        77,
        IoOp::Write {
            offset: 0,
            buf: payload.clone(),
        },
    )
    .unwrap();
    ch.submit(78, IoOp::Flush).unwrap();
    assert_eq!(ch.in_flight(), 2);
    let mut out: Vec<Completion> = Vec::new();
    while out.len() < 2 {
        ch.poll(&mut out, 2).unwrap();
    }
    out.sort_by_key(|c| c.token);
    assert_eq!(out[0].token, 77);
    assert!(matches!(out[0].result, Err(BdevError::Io { .. })));
    assert_eq!(out[0].op.len(), 2 * BS as u64);
    let buf = std::mem::replace(&mut out[0].op, IoOp::Flush)
        .into_buf()
        .unwrap();
    assert_eq!(buf, payload, "the caller's buffer comes back intact");
    assert_eq!((out[1].token, out[1].result.clone()), (78, Ok(())));
    // Validation still comes first: a misaligned write is rejected, not failed by the fault.
    let rej = ch
        .submit(
            79,
            IoOp::Write {
                offset: 1,
                buf: IoBuf::zeroed(BS),
            },
        )
        .unwrap_err();
    assert!(matches!(rej.error, BdevError::Misaligned { .. }));
}

#[test]
fn rearming_at_runtime_fails_the_third_write_of_the_next_operation() {
    // The scenario an upper layer's test follows: let setup succeed, then fail a later write.
    let counting = CountingDevice::new(malloc());
    let dev = ErrorDevice::new(counting.clone());
    let faults = dev.faults();
    let mut ch = dev.channel().unwrap();
    for i in 0..4u64 {
        blocking::write_slice(ch.as_mut(), i * BS as u64, &[9; BS]).unwrap();
    }
    let before = counting.counts().writes;
    faults.arm(Fault::nth(3).kind(IoKind::Write));
    let outcome: Vec<bool> = (0..4u64)
        .map(|i| blocking::write_slice(ch.as_mut(), (20 + i) * BS as u64, &[7; BS]).is_ok())
        .collect();
    assert_eq!(outcome, vec![true, true, false, true]);
    assert_eq!(
        counting.counts().writes - before,
        3,
        "the failed write never reached inner"
    );
}

#[test]
fn a_torn_failed_write_over_a_crash_device_is_what_the_crash_image_sees() {
    let crash = CrashDevice::new(malloc()).unwrap();
    let dev = ErrorDevice::new(crash.clone());
    dev.faults().arm(Fault::nth(1).kind(IoKind::Write).torn(2));
    let mut ch = dev.channel().unwrap();
    let r = blocking::write_slice(ch.as_mut(), 0, &[0x11; 4 * BS]);
    assert!(matches!(r, Err(BdevError::Io { .. })));
    blocking::flush(ch.as_mut()).unwrap();
    let img = crash
        .image_bytes_at(crash.history_len(), 0, CrashMode::DropAll)
        .unwrap();
    assert!(img[..2 * BS].iter().all(|&b| b == 0x11));
    assert!(img[2 * BS..4 * BS].iter().all(|&b| b == 0));
}

//! Tests of the uring and psync file backends on temporary files.
//!
//! Files live under `/var/tmp` (ext4 here, so `O_DIRECT` is really in use) unless a test says
//! otherwise. Every test runs against both backends where it makes sense.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use oxblob_bdev::{
    blocking, BdevError, BlockDevice, Completion, FileOptions, IoBuf, IoKind, IoOp, PsyncDevice,
    UringDevice,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// Checks that an error is of the expected kind.
type ErrCheck = fn(&BdevError) -> bool;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Uring,
    Psync,
}

const BACKENDS: [Backend; 2] = [Backend::Uring, Backend::Psync];

fn open(b: Backend, path: &Path, opts: &FileOptions) -> Arc<dyn BlockDevice> {
    match b {
        Backend::Uring => Arc::new(UringDevice::open(path, opts).expect("open uring")),
        Backend::Psync => Arc::new(PsyncDevice::open(path, opts).expect("open psync")),
    }
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("oxblob-bdev-test")
        .tempdir_in("/var/tmp")
        .expect("tempdir in /var/tmp")
}

fn create(size: u64) -> FileOptions {
    FileOptions {
        create_size: Some(size),
        ..FileOptions::default()
    }
}

/// Deterministic pattern for block `block` written in round `round`.
fn pattern(len: usize, block: u64, round: u64) -> IoBuf {
    let mut b = IoBuf::zeroed(len);
    let mut x = block
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(round)
        .wrapping_add(1);
    for chunk in b.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    b
}

fn wait_all(ch: &mut dyn oxblob_bdev::IoChannel) -> Vec<Completion> {
    let mut out = Vec::new();
    while ch.in_flight() > 0 {
        let n = ch.in_flight();
        ch.poll(&mut out, n).expect("poll");
    }
    out
}

#[test]
fn geometry_and_caps_of_a_created_file() {
    let dir = tmpdir();
    for b in BACKENDS {
        let path = dir.path().join(format!("geo-{b:?}.img"));
        let dev = open(b, &path, &create(8 * MIB));
        let info = dev.info();
        assert_eq!(info.block_size, 4096);
        assert_eq!(info.num_blocks, 8 * MIB / 4096);
        assert_eq!(info.name, path.display().to_string());
        assert_eq!(
            info.backend,
            match b {
                Backend::Uring => "uring",
                Backend::Psync => "psync",
            }
        );
        assert!(info.caps.volatile_write_cache);
        assert!(info.caps.unmap && info.caps.write_zeroes);
        // /var/tmp is ext4 here: O_DIRECT must have been accepted.
        assert!(info.caps.direct_io, "{b:?}: O_DIRECT not in use on ext4");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 8 * MIB);
        drop(dev);

        // 512-byte blocks when asked, direct=false honoured.
        let opts = FileOptions {
            block_size: Some(512),
            direct: false,
            name: Some("Small".into()),
            ..FileOptions::default()
        };
        let dev = open(b, &path, &opts);
        assert_eq!(dev.info().block_size, 512);
        assert_eq!(dev.info().num_blocks, 8 * MIB / 512);
        assert_eq!(dev.info().name, "Small");
        assert!(!dev.info().caps.direct_io);
    }
}

#[test]
fn create_grows_but_never_shrinks() {
    let dir = tmpdir();
    let path = dir.path().join("grow.img");
    std::fs::write(&path, vec![7u8; 3 * 4096 + 100]).expect("write");
    let dev = open(Backend::Uring, &path, &create(MIB));
    assert_eq!(dev.info().num_blocks, MIB / 4096);
    drop(dev);
    let dev = open(Backend::Psync, &path, &create(4096));
    assert_eq!(dev.info().num_blocks, MIB / 4096);
    let mut ch = dev.channel().expect("channel");
    // Old content kept, grown tail reads as zeroes.
    assert_eq!(
        blocking::read(ch.as_mut(), 0, 4096).expect("read").to_vec(),
        vec![7u8; 4096]
    );
    assert_eq!(
        blocking::read(ch.as_mut(), 4 * 4096, 4096)
            .expect("read")
            .to_vec(),
        vec![0u8; 4096]
    );
}

#[test]
fn open_errors_by_kind() {
    let dir = tmpdir();
    let missing = dir.path().join("nope.img");
    for b in BACKENDS {
        let r = match b {
            Backend::Uring => UringDevice::open(&missing, &FileOptions::default()).map(|_| ()),
            Backend::Psync => PsyncDevice::open(&missing, &FileOptions::default()).map(|_| ()),
        };
        match r {
            Err(BdevError::Open { path, message }) => {
                assert_eq!(path, missing.display().to_string());
                assert!(message.contains("No such file"), "{message}");
            }
            other => panic!("{b:?}: expected Open error, got {other:?}"),
        }
    }
    // A file smaller than one block.
    let tiny = dir.path().join("tiny.img");
    std::fs::write(&tiny, [0u8; 100]).expect("write");
    assert!(matches!(
        UringDevice::open(&tiny, &FileOptions::default()),
        Err(BdevError::Open { .. })
    ));
    // Bad block size and queue depth.
    let ok = dir.path().join("ok.img");
    let bad_bs = FileOptions {
        block_size: Some(1000),
        ..create(MIB)
    };
    assert!(matches!(
        PsyncDevice::open(&ok, &bad_bs),
        Err(BdevError::Config(_))
    ));
    let bad_qd = FileOptions {
        queue_depth: 16,
        ..create(MIB)
    };
    assert!(matches!(
        UringDevice::open(&ok, &bad_qd),
        Err(BdevError::Config(_))
    ));
    // A directory is neither a file nor a block device.
    assert!(matches!(
        PsyncDevice::open(dir.path(), &FileOptions::default()),
        Err(BdevError::Open { .. })
    ));
}

#[test]
fn writes_and_reads_at_many_offsets_byte_for_byte() {
    let dir = tmpdir();
    for b in BACKENDS {
        let path = dir.path().join(format!("rw-{b:?}.img"));
        let dev = open(b, &path, &create(16 * MIB));
        let mut ch = dev.channel().expect("channel");
        let bs = 4096u64;
        let n = dev.info().num_blocks;
        // Single blocks at scattered offsets, multi-block writes, the first and last blocks.
        let mut spots: Vec<(u64, usize)> = vec![(0, 1), (n - 1, 1), (1, 3), (n - 9, 8)];
        let mut x = 12345u64;
        for _ in 0..60 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let blocks = 1 + (x >> 60) as usize; // 1..=16
            let start = (x >> 20) % (n - blocks as u64);
            spots.push((start, blocks));
        }
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        for (round, &(start, blocks)) in spots.iter().enumerate() {
            let data = pattern(blocks * bs as usize, start, round as u64);
            for i in 0..blocks {
                model.insert(
                    start + i as u64,
                    data[i * bs as usize..(i + 1) * bs as usize].to_vec(),
                );
            }
            let back = blocking::write(ch.as_mut(), start * bs, data.clone()).expect("write");
            assert_eq!(back, data, "{b:?}: write must return the buffer unchanged");
        }
        for (&blk, want) in &model {
            let got = blocking::read(ch.as_mut(), blk * bs, bs as usize).expect("read");
            assert_eq!(got.as_slice(), &want[..], "{b:?}: block {blk}");
        }
        // A block never written reads as zeroes.
        let never = (0..n)
            .find(|k| !model.contains_key(k))
            .expect("a free block");
        assert!(blocking::read(ch.as_mut(), never * bs, 4096)
            .expect("read")
            .iter()
            .all(|&x| x == 0));
        blocking::flush(ch.as_mut()).expect("flush");
        drop(ch);
        drop(dev);
        // The data is really in the file.
        let raw = std::fs::read(&path).expect("read file");
        for (&blk, want) in &model {
            let at = (blk * bs) as usize;
            assert_eq!(
                &raw[at..at + bs as usize],
                &want[..],
                "{b:?}: file block {blk}"
            );
        }
    }
}

#[test]
fn two_hundred_in_flight_on_one_channel() {
    let dir = tmpdir();
    for b in BACKENDS {
        let path = dir.path().join(format!("qd-{b:?}.img"));
        let dev = open(b, &path, &create(4 * MIB));
        let mut ch = dev.channel().expect("channel");
        assert!(ch.capacity() >= 200, "{b:?} capacity {}", ch.capacity());
        for i in 0..200u64 {
            ch.submit(
                i,
                IoOp::Write {
                    offset: i * 8192,
                    buf: pattern(8192, i, 1),
                },
            )
            .expect("submit write");
        }
        assert_eq!(ch.in_flight(), 200);
        let done = wait_all(ch.as_mut());
        assert_eq!(done.len(), 200);
        let mut tokens: Vec<u64> = done.iter().map(|c| c.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, (0..200).collect::<Vec<_>>());
        for c in &done {
            c.result.as_ref().expect("write ok");
            assert_eq!(c.op.kind(), IoKind::Write);
        }
        for i in 0..200u64 {
            ch.submit(
                1000 + i,
                IoOp::Read {
                    offset: i * 8192,
                    buf: IoBuf::zeroed(8192),
                },
            )
            .expect("submit read");
        }
        let done = wait_all(ch.as_mut());
        assert_eq!(done.len(), 200);
        for c in done {
            c.result.as_ref().expect("read ok");
            let i = c.token - 1000;
            assert_eq!(c.op.offset(), i * 8192);
            let buf = c.op.into_buf().expect("buf");
            assert_eq!(buf, pattern(8192, i, 1), "{b:?}: read {i}");
        }
    }
}

#[test]
fn queue_full_is_reported_and_the_request_returned() {
    let dir = tmpdir();
    let path = dir.path().join("full.img");
    let dev = open(
        Backend::Uring,
        &path,
        &FileOptions {
            queue_depth: 128,
            ..create(4 * MIB)
        },
    );
    let mut ch = dev.channel().expect("channel");
    assert_eq!(ch.capacity(), 128);
    for i in 0..128u64 {
        ch.submit(
            i,
            IoOp::Read {
                offset: i * 4096,
                buf: IoBuf::zeroed(4096),
            },
        )
        .expect("submit");
    }
    let r = ch.submit(
        999,
        IoOp::Write {
            offset: 0,
            buf: IoBuf::filled(4096, 3),
        },
    );
    match r {
        Err(rej) => {
            assert_eq!(rej.error, BdevError::QueueFull { capacity: 128 });
            assert_eq!(rej.op.into_buf().expect("buf"), IoBuf::filled(4096, 3));
        }
        Ok(()) => panic!("129th request accepted"),
    }
    assert_eq!(wait_all(ch.as_mut()).len(), 128);
}

#[test]
fn vectored_io_byte_for_byte() {
    let dir = tmpdir();
    for b in BACKENDS {
        let path = dir.path().join(format!("vec-{b:?}.img"));
        let dev = open(b, &path, &create(4 * MIB));
        let mut ch = dev.channel().expect("channel");
        let parts: Vec<IoBuf> = (0..5u64)
            .map(|i| pattern(4096 * (1 + i as usize % 3), i, 7))
            .collect();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut whole = Vec::with_capacity(total);
        for p in &parts {
            whole.extend_from_slice(p);
        }
        let op = blocking::run(
            ch.as_mut(),
            IoOp::Writev {
                offset: 12 * 4096,
                bufs: parts.clone(),
            },
        )
        .expect("writev");
        assert_eq!(op.into_bufs(), parts);
        let flat = blocking::read(ch.as_mut(), 12 * 4096, total).expect("read");
        assert_eq!(flat.as_slice(), &whole[..]);
        // Read back with a different split.
        let dst: Vec<IoBuf> = vec![
            IoBuf::zeroed(8192),
            IoBuf::zeroed(4096),
            IoBuf::zeroed(total - 12288),
        ];
        let op = blocking::run(
            ch.as_mut(),
            IoOp::Readv {
                offset: 12 * 4096,
                bufs: dst,
            },
        )
        .expect("readv");
        let got: Vec<u8> = op.into_bufs().iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(got, whole, "{b:?}");
    }
}

#[test]
fn unmap_and_write_zeroes_read_as_zero() {
    // On ext4 (fallocate works) and on tmpfs (/dev/shm refuses ZERO_RANGE: zero buffers).
    let ext4 = tmpdir();
    let shm = tempfile::Builder::new()
        .prefix("oxblob-bdev-test")
        .tempdir_in("/dev/shm")
        .ok();
    let mut dirs = vec![ext4.path().to_path_buf()];
    if let Some(d) = &shm {
        dirs.push(d.path().to_path_buf());
    }
    for dir in &dirs {
        for b in BACKENDS {
            let path = dir.join(format!("zero-{b:?}.img"));
            let dev = open(b, &path, &create(2 * MIB));
            let mut ch = dev.channel().expect("channel");
            let data = pattern(64 * 4096, 0, 3);
            blocking::write(ch.as_mut(), 0, data.clone()).expect("write");
            blocking::unmap(ch.as_mut(), 4 * 4096, 8 * 4096).expect("unmap");
            blocking::write_zeroes(ch.as_mut(), 20 * 4096, 3 * 4096).expect("write zeroes");
            // Twice: the second one goes straight to whichever method worked the first time.
            blocking::write_zeroes(ch.as_mut(), 40 * 4096, 4096).expect("write zeroes");
            blocking::unmap(ch.as_mut(), 50 * 4096, 2 * 4096).expect("unmap");
            let got = blocking::read(ch.as_mut(), 0, 64 * 4096).expect("read");
            let mut want = data.to_vec();
            for (blk, n) in [(4usize, 8usize), (20, 3), (40, 1), (50, 2)] {
                want[blk * 4096..(blk + n) * 4096].fill(0);
            }
            for blk in 0..64 {
                assert_eq!(
                    &got[blk * 4096..(blk + 1) * 4096],
                    &want[blk * 4096..(blk + 1) * 4096],
                    "{b:?} in {}: block {blk}",
                    dir.display()
                );
            }
            // Keep size: unmap must not shrink the file.
            assert_eq!(std::fs::metadata(&path).expect("stat").len(), 2 * MIB);
        }
    }
}

#[test]
fn invalid_requests_are_rejected_by_kind() {
    let dir = tmpdir();
    for b in BACKENDS {
        let path = dir.path().join(format!("bad-{b:?}.img"));
        let dev = open(b, &path, &create(MIB));
        let size = MIB;
        let mut ch = dev.channel().expect("channel");
        let cases: Vec<(IoOp, ErrCheck)> = vec![
            (
                IoOp::Read {
                    offset: size,
                    buf: IoBuf::zeroed(4096),
                },
                |e| {
                    matches!(
                        e,
                        BdevError::OutOfRange {
                            op: IoKind::Read,
                            ..
                        }
                    )
                },
            ),
            (
                IoOp::Write {
                    offset: size - 4096,
                    buf: IoBuf::zeroed(8192),
                },
                |e| {
                    matches!(
                        e,
                        BdevError::OutOfRange {
                            op: IoKind::Write,
                            ..
                        }
                    )
                },
            ),
            (
                IoOp::Read {
                    offset: 512,
                    buf: IoBuf::zeroed(4096),
                },
                |e| {
                    matches!(
                        e,
                        BdevError::Misaligned {
                            op: IoKind::Read,
                            what: "offset",
                            ..
                        }
                    )
                },
            ),
            (
                IoOp::Write {
                    offset: 0,
                    buf: IoBuf::zeroed(1000),
                },
                |e| {
                    matches!(
                        e,
                        BdevError::Misaligned {
                            op: IoKind::Write,
                            what: "length",
                            ..
                        }
                    )
                },
            ),
            (
                IoOp::Unmap {
                    offset: u64::MAX - 4095,
                    len: 8192,
                },
                |e| {
                    matches!(
                        e,
                        BdevError::OutOfRange {
                            op: IoKind::Unmap,
                            ..
                        }
                    )
                },
            ),
            (IoOp::WriteZeroes { offset: 0, len: 0 }, |e| {
                matches!(
                    e,
                    BdevError::Empty {
                        op: IoKind::WriteZeroes
                    }
                )
            }),
        ];
        for (op, check) in cases {
            let shown = format!("{op:?}");
            match ch.submit(1, op) {
                Err(rej) => assert!(check(&rej.error), "{b:?}: {shown}: got {:?}", rej.error),
                Ok(()) => panic!("{b:?}: {shown} accepted"),
            }
        }
        assert_eq!(ch.in_flight(), 0);
    }
}

#[test]
fn closed_device_refuses_io_but_finishes_in_flight() {
    let dir = tmpdir();
    for b in BACKENDS {
        let path = dir.path().join(format!("close-{b:?}.img"));
        let dev = open(b, &path, &create(MIB));
        let mut ch = dev.channel().expect("channel");
        ch.submit(
            5,
            IoOp::Write {
                offset: 0,
                buf: IoBuf::filled(4096, 0xAB),
            },
        )
        .expect("submit");
        assert!(!dev.is_closed());
        dev.close();
        dev.close();
        assert!(dev.is_closed());
        let r = ch.submit(
            6,
            IoOp::Read {
                offset: 0,
                buf: IoBuf::zeroed(4096),
            },
        );
        assert!(matches!(r, Err(ref rej) if rej.error == BdevError::Closed));
        assert!(matches!(dev.channel(), Err(BdevError::Closed)));
        let done = wait_all(ch.as_mut());
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].token, 5);
        assert_eq!(done[0].result, Ok(()));
        drop(ch);
        drop(dev);
        assert_eq!(
            &std::fs::read(&path).expect("read")[..4096],
            &[0xABu8; 4096][..]
        );
    }
}

#[test]
fn dropping_a_channel_waits_for_its_io() {
    let dir = tmpdir();
    let path = dir.path().join("drop.img");
    let dev = open(Backend::Uring, &path, &create(8 * MIB));
    for round in 0..3u64 {
        let mut ch = dev.channel().expect("channel");
        for i in 0..64u64 {
            ch.submit(
                i,
                IoOp::Write {
                    offset: i * 131072,
                    buf: pattern(131072, i, round),
                },
            )
            .expect("submit");
        }
        // Start them (no wait), then drop with all in flight.
        let mut out = Vec::new();
        ch.poll(&mut out, 0).expect("poll");
        drop(ch);
        let mut ch = dev.channel().expect("channel");
        for i in 0..64u64 {
            let got = blocking::read(ch.as_mut(), i * 131072, 131072).expect("read");
            assert_eq!(got, pattern(131072, i, round), "round {round} write {i}");
        }
    }
}

#[test]
fn four_threads_with_their_own_channels_on_disjoint_ranges() {
    let dir = tmpdir();
    for b in BACKENDS {
        let path = dir.path().join(format!("mt-{b:?}.img"));
        let dev = open(b, &path, &create(16 * MIB));
        let per = dev.info().num_blocks / 4;
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let dev = Arc::clone(&dev);
                s.spawn(move || {
                    let mut ch = dev.channel().expect("channel");
                    let base = t * per;
                    // Queue depth 32, several rounds over the thread's own range.
                    for round in 0..3u64 {
                        let mut next = 0u64;
                        let mut done = 0u64;
                        let mut out = Vec::new();
                        while done < per {
                            while next < per && ch.in_flight() < 32 {
                                ch.submit(
                                    next,
                                    IoOp::Write {
                                        offset: (base + next) * 4096,
                                        buf: pattern(4096, base + next, round),
                                    },
                                )
                                .expect("submit");
                                next += 1;
                            }
                            out.clear();
                            ch.poll(&mut out, 1).expect("poll");
                            for c in &out {
                                c.result.as_ref().expect("write");
                            }
                            done += out.len() as u64;
                        }
                    }
                    blocking::flush(ch.as_mut()).expect("flush");
                    for k in 0..per {
                        let got =
                            blocking::read(ch.as_mut(), (base + k) * 4096, 4096).expect("read");
                        assert_eq!(got, pattern(4096, base + k, 2), "thread {t} block {k}");
                    }
                });
            }
        });
        // And from a fresh channel on this thread: every thread's last round is there.
        let mut ch = dev.channel().expect("channel");
        let all = blocking::read(ch.as_mut(), 0, (4 * per * 4096) as usize).expect("read");
        for blk in 0..4 * per {
            let at = (blk * 4096) as usize;
            assert_eq!(
                &all[at..at + 4096],
                pattern(4096, blk, 2).as_slice(),
                "{b:?} block {blk}"
            );
        }
    }
}

#[test]
fn large_transfers_cross_many_iovecs() {
    // More than IOV_MAX (1024) buffers in one request: the uring backend continues the
    // transfer over several SQEs.
    let dir = tmpdir();
    for b in BACKENDS {
        let path = dir.path().join(format!("iov-{b:?}.img"));
        let dev = open(b, &path, &create(16 * MIB));
        let mut ch = dev.channel().expect("channel");
        let parts: Vec<IoBuf> = (0..1500u64).map(|i| pattern(4096, i, 9)).collect();
        blocking::run(
            ch.as_mut(),
            IoOp::Writev {
                offset: 4096,
                bufs: parts.clone(),
            },
        )
        .expect("writev");
        let dst: Vec<IoBuf> = (0..1500).map(|_| IoBuf::zeroed(4096)).collect();
        let op = blocking::run(
            ch.as_mut(),
            IoOp::Readv {
                offset: 4096,
                bufs: dst,
            },
        )
        .expect("readv");
        assert_eq!(op.into_bufs(), parts, "{b:?}");
    }
}

#[test]
fn io_errors_from_the_kernel_are_typed() {
    // Shrink the file behind the device's back: reads past the new end hit EOF, which both
    // backends report as an EIO I/O error at the request's offset.
    let dir = tmpdir();
    for b in BACKENDS {
        let path = dir.path().join(format!("eio-{b:?}.img"));
        let dev = open(b, &path, &create(MIB));
        let mut ch = dev.channel().expect("channel");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(8192)
            .expect("truncate");
        let eof = |offset| BdevError::Io {
            op: IoKind::Read,
            offset,
            errno: libc::EIO,
        };
        // Alone on the channel (for uring: one `pread` by the polling thread).
        let r = blocking::read(ch.as_mut(), 65536, 4096);
        assert_eq!(r.err(), Some(eof(65536)), "{b:?}");
        // Two at once (for uring: both through the ring): the one past the end fails, the
        // other returns the file's bytes.
        for (token, offset) in [(1u64, 131072u64), (2, 4096)] {
            ch.submit(
                token,
                IoOp::Read {
                    offset,
                    buf: IoBuf::zeroed(4096),
                },
            )
            .expect("submit");
        }
        let mut done = wait_all(ch.as_mut());
        done.sort_by_key(|c| c.token);
        assert_eq!(done.len(), 2, "{b:?}");
        assert_eq!(done[0].result.clone().err(), Some(eof(131072)), "{b:?}");
        assert_eq!(done[1].result, Ok(()), "{b:?}");
        match &done[1].op {
            IoOp::Read { buf, .. } => assert!(buf.iter().all(|&x| x == 0), "{b:?}"),
            other => panic!("{b:?}: completion carries {other:?}"),
        }
    }
}

/// A read or write submitted to an idle uring channel is held back: the next waiting `poll`
/// does it with one system call, anything else sends it to the ring. Every way is checked
/// byte for byte.
#[test]
fn a_lone_request_is_done_by_the_poller_or_joins_the_ring() {
    let dir = tmpdir();
    let path = dir.path().join("lone.img");
    let dev = open(Backend::Uring, &path, &create(4 * MIB));
    let read_back = |block: u64| {
        let mut ch = dev.channel().expect("channel");
        blocking::read(ch.as_mut(), block * 65536, 65536).expect("read")
    };
    let write = |block: u64, round: u64| IoOp::Write {
        offset: block * 65536,
        buf: pattern(65536, block, round),
    };
    let mut ch = dev.channel().expect("channel");

    // 1. Waited for alone: done by the poller.
    ch.submit(1, write(0, 1)).expect("submit");
    assert_eq!(ch.in_flight(), 1);
    let done = wait_all(ch.as_mut());
    assert_eq!(
        (done.len(), done[0].token, &done[0].result),
        (1, 1, &Ok(()))
    );
    assert_eq!(read_back(0), pattern(65536, 0, 1));

    // 2. A poll that must not block sends it to the ring; a later wait reaps it.
    ch.submit(2, write(1, 2)).expect("submit");
    let mut out = Vec::new();
    ch.poll(&mut out, 0).expect("poll");
    let mut done = out;
    done.extend(wait_all(ch.as_mut()));
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].token, &done[0].result), (2, &Ok(())));
    assert_eq!(read_back(1), pattern(65536, 1, 2));

    // 3. A second request joins it: both go through the ring.
    ch.submit(3, write(2, 3)).expect("submit");
    ch.submit(4, write(3, 3)).expect("submit");
    assert_eq!(ch.in_flight(), 2);
    let mut done = wait_all(ch.as_mut());
    done.sort_by_key(|c| c.token);
    let got: Vec<_> = done.iter().map(|c| (c.token, c.result.clone())).collect();
    assert_eq!(got, vec![(3, Ok(())), (4, Ok(()))]);
    assert_eq!(read_back(2), pattern(65536, 2, 3));
    assert_eq!(read_back(3), pattern(65536, 3, 3));

    // 4. A flush behind it: the write goes to the ring, the flush after it; both complete.
    ch.submit(5, write(4, 4)).expect("submit");
    ch.submit(6, IoOp::Flush).expect("submit");
    let mut done = wait_all(ch.as_mut());
    done.sort_by_key(|c| c.token);
    let got: Vec<_> = done.iter().map(|c| (c.token, c.result.clone())).collect();
    assert_eq!(got, vec![(5, Ok(())), (6, Ok(()))]);
    assert_eq!(read_back(4), pattern(65536, 4, 4));

    // 5. Never polled: dropping the channel still carries it out.
    ch.submit(7, write(5, 5)).expect("submit");
    drop(ch);
    assert_eq!(read_back(5), pattern(65536, 5, 5));

    // 6. A lone read returns the device's bytes into its own buffer.
    let mut ch = dev.channel().expect("channel");
    ch.submit(
        8,
        IoOp::Read {
            offset: 3 * 65536,
            buf: IoBuf::zeroed(65536),
        },
    )
    .expect("submit");
    let done = wait_all(ch.as_mut());
    assert_eq!(done.len(), 1);
    match &done[0].op {
        IoOp::Read { buf, .. } => assert_eq!(buf, &pattern(65536, 3, 3)),
        other => panic!("completion carries {other:?}"),
    }
}

#[test]
fn sqpoll_ring_does_io() {
    let dir = tmpdir();
    let path = dir.path().join("sqpoll.img");
    let opts = FileOptions {
        sqpoll: true,
        ..create(4 * MIB)
    };
    let dev = match UringDevice::open(&path, &opts) {
        Ok(d) => d,
        Err(e) => {
            println!("skipped: SQPOLL refused here: {e}");
            return;
        }
    };
    let mut ch = dev.channel().expect("channel");
    for i in 0..100u64 {
        ch.submit(
            i,
            IoOp::Write {
                offset: i * 4096,
                buf: pattern(4096, i, 4),
            },
        )
        .expect("submit");
    }
    for c in wait_all(ch.as_mut()) {
        assert_eq!(c.result, Ok(()));
    }
    blocking::flush(ch.as_mut()).expect("flush");
    for i in 0..100u64 {
        let got = blocking::read(ch.as_mut(), i * 4096, 4096).expect("read");
        assert_eq!(got, pattern(4096, i, 4), "block {i}");
    }
}

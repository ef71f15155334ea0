//! The uring and psync backends on a real loop block device (`losetup -f --show FILE`).
//!
//! Skipped, with the reason printed, where `losetup` is missing or fails (no root, no loop
//! driver). The loop device is always detached by a drop guard, even when an assertion fails.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use oxblob_bdev::{blocking, spec, BdevError, IoBuf, IoKind, IoOp};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device, detached on drop.
struct LoopDev(PathBuf);

impl LoopDev {
    fn attach(file: &Path, sector_size: Option<u32>) -> Result<Self, String> {
        let mut cmd = Command::new("losetup");
        if let Some(s) = sector_size {
            cmd.args(["--sector-size", &s.to_string()]);
        }
        let out = cmd
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !dev.starts_with("/dev/loop") {
            return Err(format!("losetup printed {dev:?}"));
        }
        Ok(LoopDev(PathBuf::from(dev)))
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn backing(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p
}

#[test]
fn uring_and_psync_on_a_loop_device() {
    let dir = tempfile::Builder::new()
        .prefix("oxblob-loop-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let size = 16u64 << 20;
    let file = backing(dir.path(), "backing.img", size);
    let lo = match LoopDev::attach(&file, None) {
        Ok(l) => l,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dev = spec::open(&format!("uring:{}", lo.0.display())).unwrap();
    let info = dev.info().clone();
    assert_eq!(info.backend, "uring");
    assert_eq!(info.size_bytes(), size, "size from BLKGETSIZE64");
    assert_eq!(info.block_size, 512, "loop default logical block size");
    assert!(info.caps.direct_io, "O_DIRECT on a loop device");

    let mut ch = dev.channel().unwrap();
    // Queue of writes across the whole device, including the last sector.
    let mut expected = vec![0u8; size as usize];
    for i in 0..64u64 {
        let off = i * (size / 64) + (i % 8) * 512;
        let len = 512 * (1 + (i as usize % 16));
        let off = off.min(size - len as u64);
        let data: Vec<u8> = (0..len).map(|k| (k as u64 * 31 + i * 7) as u8).collect();
        expected[off as usize..off as usize + len].copy_from_slice(&data);
        ch.submit(
            i,
            IoOp::Write {
                offset: off,
                buf: IoBuf::from_slice(&data),
            },
        )
        .unwrap();
    }
    let last = vec![0xEEu8; 512];
    expected[size as usize - 512..].copy_from_slice(&last);
    let mut out = Vec::new();
    while ch.in_flight() > 0 {
        ch.poll(&mut out, 1).unwrap();
    }
    for c in &out {
        assert_eq!(c.result, Ok(()), "write {}", c.token);
    }
    blocking::write_slice(ch.as_mut(), size - 512, &last).unwrap();
    blocking::flush(ch.as_mut()).unwrap();
    // Unmap and write-zeroes on a block device (fallocate on the bdev).
    blocking::unmap(ch.as_mut(), 1 << 20, 64 << 10).unwrap();
    blocking::write_zeroes(ch.as_mut(), 3 << 20, 8192).unwrap();
    expected[1 << 20..(1 << 20) + (64 << 10)].fill(0);
    expected[3 << 20..(3 << 20) + 8192].fill(0);
    let got = blocking::read(ch.as_mut(), 0, size as usize).unwrap();
    assert!(got.as_slice() == &expected[..], "device content differs");
    // Out of range by one sector.
    match ch.submit(
        0,
        IoOp::Read {
            offset: size,
            buf: IoBuf::zeroed(512),
        },
    ) {
        Err(r) => assert!(matches!(
            r.error,
            BdevError::OutOfRange {
                op: IoKind::Read,
                ..
            }
        )),
        Ok(()) => panic!("read past the end accepted"),
    }
    drop(ch);
    drop(dev);

    // psync sees the same bytes; after flush they are in the backing file too.
    let dev = spec::open(&format!("psync:{}", lo.0.display())).unwrap();
    assert_eq!(dev.info().size_bytes(), size);
    let mut ch = dev.channel().unwrap();
    let again = blocking::read(ch.as_mut(), 0, size as usize).unwrap();
    assert!(again.as_slice() == &expected[..], "psync content differs");
    drop(ch);
    drop(dev);
    drop(lo);
    assert!(
        std::fs::read(&file).unwrap() == expected,
        "backing file differs"
    );
}

#[test]
fn loop_device_with_4k_sectors() {
    let dir = tempfile::Builder::new()
        .prefix("oxblob-loop-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let file = backing(dir.path(), "b4k.img", 4 << 20);
    let lo = match LoopDev::attach(&file, Some(4096)) {
        Ok(l) => l,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dev = spec::open(&format!("uring:{}", lo.0.display())).unwrap();
    assert_eq!(dev.info().block_size, 4096, "BLKSSZGET");
    assert_eq!(dev.info().num_blocks, 1024);
    let mut ch = dev.channel().unwrap();
    blocking::write_slice(ch.as_mut(), 8192, &[0x42u8; 4096]).unwrap();
    assert_eq!(
        blocking::read(ch.as_mut(), 8192, 4096).unwrap().to_vec(),
        vec![0x42u8; 4096]
    );
    // 512-byte requests are misaligned for this device.
    match ch.submit(
        0,
        IoOp::Read {
            offset: 512,
            buf: IoBuf::zeroed(4096),
        },
    ) {
        Err(r) => assert!(matches!(
            r.error,
            BdevError::Misaligned { what: "offset", .. }
        )),
        Ok(()) => panic!("misaligned read accepted"),
    }
    // While the device is open, a second open is refused: the image is locked.
    let r = spec::open(&format!("uring:{}", lo.0.display()));
    assert!(matches!(r, Err(BdevError::InUse { .. })));
    drop(ch);
    drop(dev);
    // Asking for a size larger than the device is an error for block devices.
    let r = spec::open(&format!("uring:{}?create=8MiB", lo.0.display()));
    assert!(matches!(r, Err(BdevError::Open { .. })));
}

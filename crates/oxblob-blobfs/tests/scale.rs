//! Small files cost no cluster: 10,000 files of 1 KiB on a 512 MiB image (default mkfs: 1 MiB
//! clusters, md region 1/8 of the device), all inline, surviving a remount byte for byte.
//! `OXBLOB_FULL=1` also runs 100,000 files of 1 KiB on a 4 GiB sparse file under /var/tmp.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_bdev::{BlockDevice, FileOptions, PsyncDevice};
use oxblob_blobfs::{BlobFs, MkfsOptions, MountOptions, OpenFlags};
use std::sync::Arc;
use std::time::Instant;

fn many_small_files(d: Arc<dyn BlockDevice>, files: usize, per_dir: usize) {
    BlobFs::mkfs(Arc::clone(&d), MkfsOptions::default()).unwrap();
    let fs = BlobFs::mount(Arc::clone(&d), MountOptions::default()).unwrap();
    let t0 = Instant::now();
    for i in 0..files {
        if i % per_dir == 0 {
            fs.mkdir(&format!("/d{}", i / per_dir)).unwrap();
        }
        let h = fs.create(&format!("/d{}/f{i}", i / per_dir)).unwrap();
        h.write_at(0, &pattern(i as u64, 1024)).unwrap();
        h.close().unwrap();
    }
    let st = fs.statfs().unwrap();
    eprintln!(
        "{files} files of 1 KiB in {:.1?}; data region {} MiB, free {} MiB",
        t0.elapsed(),
        st.total_bytes >> 20,
        st.free_bytes >> 20
    );
    assert_eq!(
        st.free_bytes, st.total_bytes,
        "inline files must not use clusters"
    );
    assert_eq!(st.files as usize, files + files.div_ceil(per_dir) + 1);
    fs.unmount().unwrap();
    let t0 = Instant::now();
    let fs = BlobFs::mount(Arc::clone(&d), MountOptions::default()).unwrap();
    eprintln!("mount with {} inodes: {:.1?}", st.files, t0.elapsed());
    assert_eq!(fs.readdir("/").unwrap().len(), files.div_ceil(per_dir));
    for i in (0..files).step_by(7) {
        let h = fs
            .open(&format!("/d{}/f{i}", i / per_dir), OpenFlags::read())
            .unwrap();
        assert_eq!(
            h.read_vec(0, 2000).unwrap(),
            pattern(i as u64, 1024),
            "file {i}"
        );
    }
    fs.unmount().unwrap();
}

#[test]
fn ten_thousand_1k_files_on_512_mib() {
    many_small_files(dev(512, 4096), 10_000, 500);
}

#[test]
fn hundred_thousand_1k_files_on_4_gib_full() {
    if !std::env::var("OXBLOB_FULL").is_ok_and(|v| v == "1") {
        eprintln!("skipped: set OXBLOB_FULL=1");
        return;
    }
    let path = std::path::Path::new("/var/tmp/oxblob-blobfs-100k.img");
    let _ = std::fs::remove_file(path);
    let d = PsyncDevice::open(
        path,
        &FileOptions {
            direct: false,
            create_size: Some(4 << 30),
            ..FileOptions::default()
        },
    )
    .unwrap();
    many_small_files(Arc::new(d), 100_000, 1000);
    std::fs::remove_file(path).unwrap();
}

#![no_main]
//! Whole-image loader: a valid small blobstore image (built once: blobs thick and thin with
//! xattrs and data, a snapshot and a clone, a checkpoint and a log tail of synced changes) is
//! damaged by the input, then `BlobStore::load` (read-only and writable), `fsck` and a read of
//! every listed blob must return `Ok` or a typed error — never panic, hang or allocate absurdly.
//!
//! Input: `control` byte, then patches `{offset u32 LE, len u8, bytes}` applied in order
//! (offset modulo the image size). Control bits: 0 re-checksum both superblock slots, 1
//! re-checksum the checkpoint pointer, 2 re-checksum every page that starts with the record
//! magic, 3 skip the writable load; bits 4..8 = k ≠ 0 truncate the device to k/16 of its size.
//! The fix-ups let the fuzzer reach the validation behind each CRC.
use libfuzzer_sys::fuzz_target;
use oxblob_bdev::{blocking, BlockDevice, MallocDevice};
use oxblob_blobstore::{
    fsck, BlobStore, CreateOptions, Durability, FsckOptions, InitOptions, LoadOptions,
};
use oxblob_format::record::RECORD_MAGIC;
use oxblob_format::superblock::SUPERBLOCK_MAGIC;
use oxblob_format::{crc32c, MD_PAGE_SIZE};
use std::sync::{Arc, OnceLock};

const PAGE: usize = MD_PAGE_SIZE;
const DEV_BYTES: u64 = 1 << 20;
const CLUSTER: u64 = 64 * 1024;

static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();

fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

fn device(bytes: &[u8]) -> Arc<dyn BlockDevice> {
    let d = MallocDevice::new("fuzz", 4096, (bytes.len() / 4096).max(1) as u64).unwrap();
    let d: Arc<dyn BlockDevice> = Arc::new(d);
    let mut ch = d.channel().unwrap();
    // The device starts zeroed: write only the non-zero pages.
    for (i, piece) in bytes.chunks_exact(PAGE).enumerate() {
        if piece.iter().any(|&b| b != 0) {
            blocking::write_slice(ch.as_mut(), (i * PAGE) as u64, piece).unwrap();
        }
    }
    d
}

fn build() -> Vec<u8> {
    let d: Arc<dyn BlockDevice> =
        Arc::new(MallocDevice::new("fuzz", 4096, DEV_BYTES / 4096).unwrap());
    let opts = InitOptions {
        cluster_size: CLUSTER,
        md_pages: Some(32),
        md_segment_pages: 4,
        bstype: oxblob_blobstore::bstype("FUZZ"),
    };
    let bs = BlobStore::init(Arc::clone(&d), opts).unwrap();
    let mut ch = bs.channel().unwrap();
    let mut ids = Vec::new();
    for i in 0..6u64 {
        let id = bs
            .create_blob(CreateOptions {
                num_clusters: 1 + i % 2,
                thin: i % 2 == 1,
                xattrs: vec![(format!("name{i}"), pattern(i, 8 + i as usize))],
            })
            .unwrap();
        let b = bs.open_blob(id).unwrap();
        b.write(&mut ch, 4096 * i, &pattern(100 + i, 4096)).unwrap();
        b.close().unwrap();
        ids.push(id);
    }
    let snap = bs.snapshot(ids[0]).unwrap();
    let clone = bs.create_clone(snap).unwrap();
    let b = bs.open_blob(clone).unwrap();
    b.write(&mut ch, 8192, &pattern(7, 4096)).unwrap();
    b.close().unwrap();
    bs.delete_blob(ids[5]).unwrap();
    bs.unload().unwrap();
    // A second session leaves a log tail after the load-time checkpoint.
    let bs = BlobStore::load(Arc::clone(&d), LoadOptions::default()).unwrap();
    let mut ch = bs.channel().unwrap();
    let b = bs.open_blob(ids[1]).unwrap();
    b.set_xattr("tail", b"log").unwrap();
    b.resize(3).unwrap();
    b.write(&mut ch, 2 * CLUSTER, &pattern(9, 4096)).unwrap();
    b.sync_md().unwrap();
    // Checked records: replay reads their data back (patches may change either).
    let data = pattern(10, 8192);
    b.set_xattr("len", b"8192").unwrap();
    b.write_commit_checked(
        2 * CLUSTER + 4096,
        &data,
        2 * CLUSTER + 4096,
        8000,
        crc32c(&data[..8000]),
        Durability::Durable,
    )
    .unwrap();
    b.close().unwrap();
    bs.create_blob(CreateOptions::default()).unwrap();
    drop(bs);
    let mut ch = d.channel().unwrap();
    blocking::read(ch.as_mut(), 0, DEV_BYTES as usize)
        .unwrap()
        .to_vec()
}

fn fix_superblocks(img: &mut [u8]) {
    for slot in 0..2 {
        let p = &mut img[slot * PAGE..(slot + 1) * PAGE];
        if p[..8] == SUPERBLOCK_MAGIC {
            p[12..16].fill(0);
            let crc = crc32c(p);
            p[12..16].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

fn fix_checkpoint_pointers(img: &mut [u8]) {
    for slot in 0..2 {
        let first = le64(&img[slot * PAGE + 136..]);
        let len = le64(&img[slot * PAGE + 152..]);
        let start = first.saturating_mul(PAGE as u64);
        let Some(end) = start.checked_add(len) else {
            continue;
        };
        if end > img.len() as u64 {
            continue;
        }
        let crc = crc32c(&img[start as usize..end as usize]);
        img[slot * PAGE + 160..slot * PAGE + 164].copy_from_slice(&crc.to_le_bytes());
    }
}

fn fix_records(img: &mut [u8]) {
    for page in (2 * PAGE..img.len()).step_by(PAGE) {
        if img[page..page + 8] != RECORD_MAGIC {
            continue;
        }
        let len = u32::from_le_bytes(img[page + 36..page + 40].try_into().unwrap()) as usize;
        let start = page + 64;
        if let Some(end) = start.checked_add(len).filter(|&e| e <= img.len()) {
            let crc = crc32c(&img[start..end]);
            img[page + 40..page + 44].copy_from_slice(&crc.to_le_bytes());
        }
        let crc = crc32c(&img[page..page + 44]);
        img[page + 44..page + 48].copy_from_slice(&crc.to_le_bytes());
    }
}

fn exercise(d: &Arc<dyn BlockDevice>, read_only: bool) {
    let opts = LoadOptions {
        read_only,
        ..Default::default()
    };
    let Ok(bs) = BlobStore::load(Arc::clone(d), opts) else {
        return;
    };
    let Ok(mut ch) = bs.channel() else { return };
    for info in bs.blobs().unwrap_or_default() {
        let Ok(b) = bs.open_blob(info.id) else {
            continue;
        };
        let len = b.size_bytes().min(4 * CLUSTER);
        if len > 0 {
            let _ = b.read(&mut ch, 0, len as usize);
        }
        let _ = b.xattr_names();
        drop(b);
    }
    if !read_only {
        let _ = bs.create_blob(CreateOptions {
            num_clusters: 1,
            ..Default::default()
        });
        let _ = bs.unload();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut rest)) = data.split_first() else {
        return;
    };
    let mut img = IMAGE.get_or_init(build).clone();
    while rest.len() >= 5 {
        let off = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize % img.len();
        let n = (rest[4] as usize).min(rest.len() - 5);
        let n = n.min(img.len() - off);
        img[off..off + n].copy_from_slice(&rest[5..5 + n]);
        rest = &rest[5 + n..];
    }
    if control & 2 != 0 {
        fix_checkpoint_pointers(&mut img);
    }
    if control & 4 != 0 {
        fix_records(&mut img);
    }
    if control & 1 != 0 {
        fix_superblocks(&mut img);
    }
    let k = usize::from(control >> 4);
    if k != 0 {
        img.truncate((img.len() * k / 16) / PAGE * PAGE);
    }
    if img.is_empty() {
        return;
    }
    let d = device(&img);
    exercise(&d, true);
    let _ = fsck(&d, FsckOptions::default());
    if control & 8 == 0 {
        exercise(&d, false);
        let _ = fsck(&d, FsckOptions { repair: true });
    }
});

//! Checked commits (`Blob::commit_md_checked`): a record that carries a CRC of data written
//! just before it shares one flush with that data; a replay that finds other bytes skips the
//! record (it was never acknowledged), and `confirm_checked` makes in-place rewrites safe.
//! The power-cut sweeps over these paths are blobfs's `crash_append_fsync_*` and
//! `crash_rewrite_of_checked_append` tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_bdev::{blocking, BlockDevice};
use oxblob_blobstore::{
    fsck, BlobStore, BsError, CreateOptions, Durability, FindingKind, FsckOptions, Severity,
};
use std::sync::Arc;

const N: usize = 10_000;

/// A store with one 1-cluster blob holding `N` pattern bytes written (not flushed) and
/// committed with a check over them and a "len" xattr. Returns (device, blob id, data).
fn checked_blob() -> (Arc<dyn BlockDevice>, BlobStore, u64, Vec<u8>) {
    let (d, bs, id) = store_with_blob(16, 1);
    let b = bs.open_blob(id).unwrap();
    b.set_xattr("len", b"old").unwrap();
    b.sync_md().unwrap();
    let data = pattern(5, N);
    let mut ch = bs.channel().unwrap();
    let mut padded = data.clone();
    padded.resize(N.div_ceil(4096) * 4096, 0);
    b.write(&mut ch, 0, &padded).unwrap();
    b.set_xattr("len", b"new").unwrap();
    let f0 = bs.device_flushes();
    b.commit_md_checked(
        0,
        N as u64,
        oxblob_format::crc32c(&data),
        Durability::Durable,
    )
    .unwrap();
    assert_eq!(
        bs.device_flushes(),
        f0 + 1,
        "a checked commit costs one flush"
    );
    b.close().unwrap();
    (d, bs, id, data)
}

/// Byte offset of the blob's first cluster on the device.
fn cluster0(d: &Arc<dyn BlockDevice>, bs: &BlobStore, id: u64) -> u64 {
    let sb = oxblob_blobstore::inspect(d.as_ref()).unwrap().superblock;
    let e = bs.open_blob(id).unwrap().extents()[0];
    sb.data_first_byte + e.physical * sb.cluster_size
}

#[test]
fn checked_record_replays_when_its_data_is_there() {
    let (d, bs, id, data) = checked_blob();
    let b = bs.open_blob(id).unwrap();
    assert!(b.checked_overlaps(N as u64 - 1, 1));
    assert!(!b.checked_overlaps(N as u64, 4096), "appends never overlap");
    drop(b);
    drop(bs); // no unload: the load replays the log
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    assert!(ins.log.iter().all(|e| e.skipped.is_none()));
    let bs = load(&d);
    let b = bs.open_blob(id).unwrap();
    assert_eq!(b.get_xattr("len").unwrap(), b"new");
    let mut ch = bs.channel().unwrap();
    assert_eq!(b.read(&mut ch, 0, 12288).unwrap()[..N], data[..]);
    // The load checkpointed: the check no longer constrains rewrites.
    assert!(!b.checked_overlaps(0, N as u64));
}

#[test]
fn checked_record_is_skipped_when_its_data_is_missing() {
    let (d, bs, id, _) = checked_blob();
    let at = cluster0(&d, &bs, id);
    drop(bs);
    // The power cut kept the record but not the data: the device still has other bytes.
    blocking::write_slice(d.channel().unwrap().as_mut(), at + 4096, &[0xee; 4096]).unwrap();
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    let skipped: Vec<_> = ins.log.iter().filter_map(|e| e.skipped.clone()).collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("data check failed"), "{}", skipped[0]);
    let r = fsck(&d, FsckOptions::default()).unwrap();
    assert!(r.is_clean(), "{r}");
    assert!(r.has(FindingKind::SkippedRecord), "{r}");
    assert_eq!(r.count(Severity::Error), 0, "{r}");
    // The blob is as the last record before the skipped one left it.
    let bs = load(&d);
    let b = bs.open_blob(id).unwrap();
    assert_eq!(b.get_xattr("len").unwrap(), b"old");
    check_invariants(&bs);
    drop(b);
    bs.unload().unwrap();
    assert!(oxblob_blobstore::inspect(d.as_ref())
        .unwrap()
        .log
        .is_empty());
}

#[test]
fn confirm_makes_an_in_place_rewrite_safe() {
    let (d, bs, id, _) = checked_blob();
    let b = bs.open_blob(id).unwrap();
    let f0 = bs.device_flushes();
    b.confirm_checked().unwrap();
    assert_eq!(bs.device_flushes(), f0 + 1);
    assert!(!b.checked_overlaps(0, N as u64));
    // A second confirm has nothing to do.
    b.confirm_checked().unwrap();
    assert_eq!(bs.device_flushes(), f0 + 1);
    // Now the bytes change in place (and the crash comes before any other record).
    let mut ch = bs.channel().unwrap();
    let new = pattern(6, 4096);
    b.write(&mut ch, 4096, &new).unwrap();
    drop(b);
    drop(bs);
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    // The checked record fails its check, the confirming record holds the same state.
    assert_eq!(ins.log.iter().filter(|e| e.skipped.is_some()).count(), 1);
    let bs = load(&d);
    let b = bs.open_blob(id).unwrap();
    assert_eq!(
        b.get_xattr("len").unwrap(),
        b"new",
        "acknowledged state lost"
    );
    let mut ch = bs.channel().unwrap();
    assert_eq!(b.read(&mut ch, 4096, 4096).unwrap(), new);
}

#[test]
fn bad_checks_are_refused() {
    let (d, bs, id) = store_with_blob(32, 1);
    let b = bs.open_blob(id).unwrap();
    let bad = |r| matches!(r, Err(BsError::InvalidArgument(_)));
    // Past the blob's one cluster.
    assert!(bad(b.commit_md_checked(
        CLUSTER - 10,
        20,
        0,
        Durability::Durable
    )));
    assert!(bad(b.commit_md_checked(
        u64::MAX - 1,
        5,
        0,
        Durability::Durable
    )));
    // Longer than a replay reads back.
    b.resize(280).unwrap();
    assert!(bad(b.commit_md_checked(
        0,
        17 << 20,
        0,
        Durability::Durable
    )));
    // A clone.
    b.set_read_only().unwrap();
    b.sync_md().unwrap();
    let clone = bs.create_clone(id).unwrap();
    let c = bs.open_blob(clone).unwrap();
    assert!(bad(c.commit_md_checked(0, 10, 0, Durability::Durable)));
    // An empty range is a plain commit.
    let f0 = bs.device_flushes();
    c.set_xattr("k", b"v").unwrap();
    c.commit_md_checked(0, 0, 0, Durability::Durable).unwrap();
    assert!(bs.device_flushes() > f0);
    assert!(!c.checked_overlaps(0, u64::MAX));
    drop(c);
    drop(b);
    drop(bs);
    assert_eq!(
        load(&d).open_blob(clone).unwrap().get_xattr("k").unwrap(),
        b"v"
    );
}

#[test]
fn write_commit_checked_writes_data_and_record_in_one_round_trip() {
    let (d, bs, id) = store_with_blob(16, 2);
    let b = bs.open_blob(id).unwrap();
    b.sync_md().unwrap();
    // Spans the two clusters; the check covers the bytes past an "old size" of 1000.
    let at = CLUSTER - 8192;
    let data = pattern(9, 16384);
    b.set_xattr("len", b"new").unwrap();
    let f0 = bs.device_flushes();
    let crc = oxblob_format::crc32c(&data[1000..]);
    b.write_commit_checked(at, &data, at + 1000, 16384 - 1000, crc, Durability::Durable)
        .unwrap();
    assert_eq!(bs.device_flushes(), f0 + 1);
    assert!(b.checked_overlaps(at + 1000, 1));
    let mut ch = bs.channel().unwrap();
    assert_eq!(b.read(&mut ch, at, 16384).unwrap(), data);
    // Refused: unaligned, or a cluster not allocated (thin).
    let bad = |r| matches!(r, Err(BsError::InvalidArgument(_)));
    assert!(bad(b.write_commit_checked(
        100,
        &data[..4096],
        100,
        10,
        0,
        Durability::Durable
    )));
    let thin = bs
        .create_blob(CreateOptions {
            num_clusters: 1,
            thin: true,
            ..Default::default()
        })
        .unwrap();
    let t = bs.open_blob(thin).unwrap();
    assert!(!t.is_allocated(0, 4096));
    assert!(bad(t.write_commit_checked(
        0,
        &data[..4096],
        0,
        10,
        0,
        Durability::Durable
    )));
    drop(t);
    drop(ch);
    drop(b);
    drop(bs); // replay: the check holds
    let bs = load(&d);
    let b = bs.open_blob(id).unwrap();
    assert_eq!(b.get_xattr("len").unwrap(), b"new");
    let mut ch = bs.channel().unwrap();
    assert_eq!(b.read(&mut ch, at, 16384).unwrap(), data);
}

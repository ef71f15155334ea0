//! fsck: a clean store is clean, crash images are clean apart from info findings, and each
//! kind of damage (checkpoint byte, superblock slot, a log record in the middle of the chain,
//! crafted records with overlapping or out-of-range extents, missing parents, ids past
//! next_blob_id) is found by kind and, where fsck says it can, repaired.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_bdev::{blocking, BlockDevice};
use oxblob_blobstore::{
    fsck, inspect, BlobStore, BsError, CreateOptions, Extent, FindingKind, FsckOptions, FsckReport,
    LoadOptions, Severity,
};
use oxblob_format::record::{self, Mutation, RecordKind};
use oxblob_format::BlobRecord;
use oxblob_sim::{CrashDevice, CrashMode};
use std::sync::Arc;

fn check(dev: &Arc<dyn BlockDevice>) -> FsckReport {
    fsck(dev, FsckOptions { repair: false }).unwrap()
}

fn repair(dev: &Arc<dyn BlockDevice>) -> FsckReport {
    fsck(dev, FsckOptions { repair: true }).unwrap()
}

fn kinds(r: &FsckReport, sev: Severity) -> Vec<FindingKind> {
    r.findings
        .iter()
        .filter(|f| f.severity == sev)
        .map(|f| f.kind)
        .collect()
}

/// Only info findings (the end of the log).
fn assert_only_info(r: &FsckReport, ctx: &str) {
    assert!(
        r.findings.iter().all(|f| f.severity == Severity::Info),
        "{ctx}: {r}"
    );
    assert!(r.is_clean(), "{ctx}: {r}");
    assert!(r.has(FindingKind::LogEnd), "{ctx}: {r}");
}

fn thick(bs: &BlobStore, n: u64) -> u64 {
    bs.create_blob(CreateOptions {
        num_clusters: n,
        ..Default::default()
    })
    .unwrap()
}

fn write_blob(bs: &BlobStore, id: u64, seed: u64) -> Vec<u8> {
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    let data = pattern(seed, (b.num_clusters() * CLUSTER) as usize);
    b.write(&mut ch, 0, &data).unwrap();
    b.close().unwrap();
    data
}

fn read_blob(bs: &BlobStore, id: u64) -> Vec<u8> {
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    let v = b
        .read(&mut ch, 0, (b.num_clusters() * CLUSTER) as usize)
        .unwrap();
    drop(b);
    v
}

/// Appends a well-formed record (valid CRCs, this store's id, epoch and next seq) at the
/// tail of the live log, as a buggy writer would.
fn append_record(dev: &Arc<dyn BlockDevice>, muts: &[Mutation]) {
    let ins = inspect(dev.as_ref()).unwrap();
    let sb = &ins.superblock;
    assert!(ins.packed);
    let payload = record::encode_txn(muts).unwrap();
    let len = record::record_len(payload.len());
    // The tail's page holds the records before it: read the pages, put the record in place.
    let first = ins.tail_offset - ins.tail_offset % 4096;
    let head = (ins.tail_offset - first) as usize;
    let mut ch = dev.channel().unwrap();
    let mut pages = blocking::read(ch.as_mut(), first, (head + len).div_ceil(4096) * 4096)
        .unwrap()
        .to_vec();
    record::encode_record_into(
        &mut pages[head..head + len],
        sb.store_id,
        sb.generation,
        ins.next_seq,
        RecordKind::Txn,
        &payload,
    )
    .unwrap();
    blocking::write_slice(ch.as_mut(), first, &pages).unwrap();
    blocking::flush(ch.as_mut()).unwrap();
}

fn flip_byte(dev: &Arc<dyn BlockDevice>, offset: u64) {
    let mut ch = dev.channel().unwrap();
    let block = offset - offset % 4096;
    let mut buf = blocking::read(ch.as_mut(), block, 4096).unwrap();
    buf[(offset - block) as usize] ^= 0x5A;
    blocking::write(ch.as_mut(), block, buf).unwrap();
    blocking::flush(ch.as_mut()).unwrap();
}

#[test]
fn clean_store_is_clean_with_exact_counts() {
    let d = dev(8, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let a = thick(&bs, 3);
    let _b = bs
        .create_blob(CreateOptions {
            num_clusters: 10,
            thin: true,
            xattrs: vec![("name".into(), b"v".to_vec())],
        })
        .unwrap();
    let c = thick(&bs, 2);
    bs.delete_blob(c).unwrap();
    write_blob(&bs, a, 1);
    let total = bs.total_clusters();
    bs.unload().unwrap();
    let r = check(&d);
    assert_only_info(&r, "clean");
    assert_eq!(r.counts.blobs, 2);
    assert_eq!(r.counts.clusters_used, 3);
    assert_eq!(r.counts.clusters_total, total);
    assert_eq!(r.counts.clusters_free, total - 3);
    assert_eq!(
        r.counts.log_records, 0,
        "a clean unload leaves an empty log"
    );
    // checkpoint segment + log segment, 4 pages each in the small geometry.
    assert_eq!(r.counts.md_pages_used, 8);
    assert!(r.current_slot.is_some());
    assert!(r.to_string().ends_with("clean (0 warnings)"), "{r}");
}

#[test]
fn not_a_blobstore() {
    let d = dev(4, 4096);
    let r = check(&d);
    assert_eq!(kinds(&r, Severity::Error), vec![FindingKind::NotABlobstore]);
    assert!(!r.is_clean());
    let r = repair(&d);
    assert!(!r.is_clean());
    assert!(!r.unrepaired.is_empty());
}

#[test]
fn drop_without_unload_is_clean_but_for_info_and_repair_starts_a_fresh_log() {
    let d = dev(8, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let mut data = Vec::new();
    for i in 0..6 {
        let id = thick(&bs, 1 + i % 3);
        data.push((id, write_blob(&bs, id, i)));
    }
    let b = bs.open_blob(data[0].0).unwrap();
    b.set_xattr("k", b"v").unwrap();
    b.close().unwrap();
    drop(bs); // crash: no unload
    let r = check(&d);
    assert_only_info(&r, "after drop");
    assert!(r.counts.log_records >= 7, "{r}");
    assert_eq!(r.counts.blobs, 6);
    let r = repair(&d);
    assert!(r.is_clean(), "{r}");
    let after = r.after_repair.as_ref().unwrap();
    assert!(after.iter().all(|f| f.severity == Severity::Info), "{r}");
    assert_eq!(r.counts.log_records, 0, "repair leaves an empty log: {r}");
    let bs = load(&d);
    for (id, bytes) in &data {
        assert_eq!(&read_blob(&bs, *id), bytes, "blob {id}");
    }
    assert_eq!(
        bs.open_blob(data[0].0).unwrap().get_xattr("k").as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn crash_images_are_clean_apart_from_info() {
    let crash = CrashDevice::new(dev(8, 4096)).unwrap();
    let d: Arc<dyn BlockDevice> = crash.clone();
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    crash.mark();
    let mut ids = Vec::new();
    // Enough records to need Links across segments (4-page segments).
    for i in 0..12 {
        ids.push(
            bs.create_blob(CreateOptions {
                num_clusters: 1 + i % 2,
                thin: i % 3 == 0,
                xattrs: vec![("n".into(), vec![i as u8; 3000])],
            })
            .unwrap(),
        );
        if i % 4 == 3 {
            bs.delete_blob(ids.remove(0)).unwrap();
        }
    }
    let points = crash.history_len();
    let mut checked = 0;
    for p in (0..=points).step_by(3) {
        for (mode, seed) in [
            (CrashMode::DropAll, 0),
            (CrashMode::KeepAll, 0),
            (CrashMode::Random, 7 + p as u64),
        ] {
            let img = crash.image_at(p, seed, mode).unwrap();
            let r = check(&img);
            let ctx = format!("point {p} seed {seed} {mode:?}");
            assert!(r.is_clean(), "{ctx}: {r}");
            // The ambiguous lost-Link case is the only warning a crash may leave.
            assert!(
                r.findings.iter().all(|f| f.severity == Severity::Info
                    || f.kind == FindingKind::LogRecordLost && f.severity == Severity::Warning),
                "{ctx}: {r}"
            );
            // The library agrees: the image loads.
            BlobStore::load(img, LoadOptions::default()).unwrap();
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} images");
    drop(bs);
}

#[test]
fn corrupt_checkpoint_byte_is_found_and_not_repairable() {
    let d = dev(8, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    thick(&bs, 2);
    thick(&bs, 1);
    bs.unload().unwrap();
    let ck = inspect(d.as_ref()).unwrap().superblock.checkpoint;
    flip_byte(&d, ck.first_page * 4096 + ck.len / 2);
    let r = check(&d);
    assert_eq!(
        kinds(&r, Severity::Error),
        vec![FindingKind::CheckpointInvalid],
        "{r}"
    );
    assert!(!r.is_clean());
    assert!(matches!(
        BlobStore::load(Arc::clone(&d), LoadOptions::default()),
        Err(BsError::BadChecksum { .. })
    ));
    let r = repair(&d);
    assert!(!r.is_clean());
    assert!(r.unrepaired[0].contains("not repairable"), "{r}");
    assert!(r.repairs.is_empty());
}

#[test]
fn damaged_superblock_slot_is_a_warning_and_repair_rewrites_it() {
    let d = dev(8, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let id = thick(&bs, 2);
    let data = write_blob(&bs, id, 9);
    bs.unload().unwrap();
    let ins = inspect(d.as_ref()).unwrap();
    let other = 1 - ins.current_slot as u64;
    flip_byte(&d, other * 4096 + 100);
    let r = check(&d);
    assert_eq!(
        kinds(&r, Severity::Warning),
        vec![FindingKind::SuperblockSlotInvalid],
        "{r}"
    );
    assert!(kinds(&r, Severity::Error).is_empty(), "{r}");
    assert_eq!(r.current_slot, Some(ins.current_slot));
    assert!(r.is_clean());
    // Still loads, read-only (nothing written), with the data.
    let bs = BlobStore::load(
        Arc::clone(&d),
        LoadOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read_blob(&bs, id), data);
    drop(bs);
    let r = repair(&d);
    let after = r.after_repair.clone().unwrap();
    assert!(
        after
            .iter()
            .all(|f| f.kind != FindingKind::SuperblockSlotInvalid),
        "{r}"
    );
    assert!(check(&d)
        .findings
        .iter()
        .all(|f| f.severity == Severity::Info));
    assert_eq!(read_blob(&load(&d), id), data);
}

#[test]
fn both_slots_damaged_is_an_error() {
    let d = dev(8, 4096);
    BlobStore::init(Arc::clone(&d), small_opts())
        .unwrap()
        .unload()
        .unwrap();
    flip_byte(&d, 200);
    flip_byte(&d, 4096 + 200);
    let r = check(&d);
    let e = kinds(&r, Severity::Error);
    assert!(e.contains(&FindingKind::NoValidSuperblock), "{r}");
    assert!(e.contains(&FindingKind::SuperblockSlotInvalid), "{r}");
    assert!(!repair(&d).is_clean());
}

#[test]
fn damaged_record_in_the_middle_of_the_log_is_found_and_repair_keeps_the_prefix() {
    let d = dev(8, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let ids: Vec<u64> = (0..5).map(|_| thick(&bs, 1)).collect();
    drop(bs);
    let ins = inspect(d.as_ref()).unwrap();
    let txns: Vec<_> = ins.log.iter().filter(|e| e.link.is_none()).collect();
    assert_eq!(txns.len(), 5);
    // Damage the payload of the third record (its header still verifies).
    flip_byte(&d, txns[2].offset + 70);
    let r = check(&d);
    assert_eq!(
        kinds(&r, Severity::Error),
        vec![FindingKind::LogRecordLost],
        "{r}"
    );
    let lost = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::LogRecordLost)
        .unwrap();
    assert_eq!(lost.page, Some(txns[2].page));
    assert_eq!(
        r.counts.blobs, 2,
        "only the records before the damage replay"
    );
    // The library loads the prefix silently; fsck is what tells.
    let r = repair(&d);
    assert!(r.is_clean(), "{r}");
    assert!(
        r.repairs.iter().any(|a| a.contains("cannot be recovered")),
        "{r}"
    );
    let bs = load(&d);
    let have: Vec<u64> = bs.blobs().unwrap().iter().map(|b| b.id).collect();
    assert_eq!(have, ids[..2].to_vec());
    bs.unload().unwrap();
    assert!(check(&d).is_clean());
}

#[test]
fn crafted_overlapping_extent_is_found_and_repaired() {
    let d = dev(8, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let a = thick(&bs, 2);
    let b = thick(&bs, 2);
    let da = write_blob(&bs, a, 1);
    write_blob(&bs, b, 2);
    let ea = bs.open_blob(a).unwrap().extents();
    let eb = bs.open_blob(b).unwrap().extents();
    drop(bs);
    // Blob b now claims a's second cluster for its logical cluster 1.
    let stolen = ea[0].physical + 1;
    let rb = BlobRecord {
        id: b,
        num_clusters: 2,
        extents: vec![
            Extent {
                logical: 0,
                physical: eb[0].physical,
                count: 1,
            },
            Extent {
                logical: 1,
                physical: stolen,
                count: 1,
            },
        ],
        ..Default::default()
    };
    append_record(&d, &[Mutation::PutBlob(Arc::new(rb))]);
    let r = check(&d);
    assert_eq!(
        kinds(&r, Severity::Error),
        vec![FindingKind::ClusterOwnedTwice],
        "{r}"
    );
    let f = &r.findings[0];
    assert_eq!(f.blob, Some(b));
    assert!(f.message.contains(&format!("cluster {stolen}")), "{f}");
    assert!(matches!(
        BlobStore::load(Arc::clone(&d), LoadOptions::default()),
        Err(BsError::Corrupt { .. })
    ));
    let r = repair(&d);
    assert!(r.is_clean(), "{r}");
    assert!(
        r.repairs
            .iter()
            .any(|x| x.contains(&format!("blob {b}: unmapped 1"))),
        "{r}"
    );
    let bs = load(&d);
    assert_eq!(read_blob(&bs, a), da, "the lower id keeps its cluster");
    let blob_b = bs.open_blob(b).unwrap();
    assert!(blob_b.is_thin());
    assert_eq!(blob_b.allocated_clusters(), 1);
    let mut ch = bs.channel().unwrap();
    assert_eq!(
        blob_b.read(&mut ch, CLUSTER, CLUSTER as usize).unwrap(),
        vec![0u8; CLUSTER as usize]
    );
}

#[test]
fn crafted_invariant_violations_are_found_by_kind() {
    let d = dev(8, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let a = thick(&bs, 1);
    let total = bs.total_clusters();
    drop(bs);
    let far = BlobRecord {
        id: a + 1,
        num_clusters: 1,
        extents: vec![Extent {
            logical: 0,
            physical: total + 5,
            count: 1,
        }],
        ..Default::default()
    };
    let orphan = BlobRecord {
        id: a + 50,
        num_clusters: 1,
        flags: oxblob_format::blob::FLAG_THIN,
        parent: a + 40,
        ..Default::default()
    };
    // A clone of `a`, while `a` is writable.
    let clone = BlobRecord {
        id: a + 2,
        num_clusters: 1,
        flags: oxblob_format::blob::FLAG_THIN,
        parent: a,
        ..Default::default()
    };
    append_record(
        &d,
        &[
            Mutation::PutBlob(Arc::new(far)),
            Mutation::PutBlob(Arc::new(orphan)),
            Mutation::PutBlob(Arc::new(clone)),
            Mutation::DeleteBlob(a + 99),
            Mutation::SetSuperBlob(Some(a + 77)),
        ],
    );
    let r = check(&d);
    let e = kinds(&r, Severity::Error);
    for k in [
        FindingKind::ExtentOutsideData,
        FindingKind::BlobIdNotBelowNextId,
        FindingKind::ParentMissing,
        FindingKind::ParentNotReadOnly,
        FindingKind::DeleteOfUnknownBlob,
        FindingKind::SuperBlobMissing,
    ] {
        assert!(e.contains(&k), "{k:?} missing: {r}");
    }
    assert!(!e.contains(&FindingKind::ClusterOwnedTwice), "{r}");
    let r = repair(&d);
    assert!(r.is_clean(), "{r}");
    let bs = load(&d);
    let infos = bs.blobs().unwrap();
    let get = |id: u64| infos.iter().find(|i| i.id == id).unwrap().clone();
    assert_eq!(get(a + 1).allocated_clusters, 0);
    assert_eq!(get(a + 50).parent, 0);
    assert_ne!(get(a).flags & oxblob_format::blob::FLAG_READ_ONLY, 0);
    assert_eq!(bs.super_blob().unwrap(), None);
    // next_blob_id was raised: a new blob gets a fresh id.
    assert!(thick(&bs, 1) > a + 50);
}

//! Inline commits (`Blob::write_commit_inline`): bytes logged inside the record that commits
//! the blob (`WriteData`), read back at once, put in place later (settle), replayed after a
//! crash — read-only loads included — and retired by a checkpoint before anything could make
//! a replay write them over newer bytes or into other clusters. The power-cut sweeps over
//! this path are blobfs's `crash_wal_*` and `crash_inline_appends_past_settle` tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_bdev::{blocking, BlockDevice};
use oxblob_blobstore::{
    fsck, BlobStore, BsError, CreateOptions, Durability, FsckOptions, LoadOptions,
};
use oxblob_format::Mutation;
use std::sync::Arc;

/// Device bytes `[at, at + len)` of the blob's first cluster (what is in place).
fn in_place(d: &Arc<dyn BlockDevice>, bs: &BlobStore, id: u64, at: u64, len: usize) -> Vec<u8> {
    let sb = oxblob_blobstore::inspect(d.as_ref()).unwrap().superblock;
    let e = bs.open_blob(id).unwrap().extents()[0];
    let base = sb.data_first_byte + e.physical * sb.cluster_size;
    let mut ch = d.channel().unwrap();
    let a0 = (base + at) / 4096 * 4096;
    let a1 = (base + at + len as u64).div_ceil(4096) * 4096;
    let buf = blocking::read(ch.as_mut(), a0, (a1 - a0) as usize).unwrap();
    let s = (base + at - a0) as usize;
    buf[s..s + len].to_vec()
}

/// The blob's bytes `[0, len)` through a channel.
fn read(bs: &BlobStore, id: u64, len: usize) -> Vec<u8> {
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    let v = b.read(&mut ch, 0, len.div_ceil(4096) * 4096).unwrap();
    v[..len].to_vec()
}

/// `WriteData` mutations in the store's log: (blob, offset, bytes).
fn logged(d: &Arc<dyn BlockDevice>) -> Vec<(u64, u64, Vec<u8>)> {
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    ins.log
        .iter()
        .flat_map(|e| e.mutations.iter())
        .filter_map(|m| match m {
            Mutation::WriteData(w) => Some((w.blob, w.offset, w.data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn inline_bytes_cost_one_write_read_back_and_replay() {
    let (d, bs, id) = store_with_blob(16, 1);
    let counting = oxblob_sim::CountingDevice::new(Arc::clone(&d));
    drop(bs);
    let cd: Arc<dyn BlockDevice> = counting.clone();
    let bs = BlobStore::load(Arc::clone(&cd), LoadOptions::default()).unwrap();
    let b = bs.open_blob(id).unwrap();
    let data = pattern(3, 3000);
    b.set_xattr("len", b"4000").unwrap();
    let c0 = counting.counts();
    b.write_commit_inline(1000, &data, Durability::Durable)
        .unwrap();
    let c = counting.counts();
    assert_eq!(
        c.writes,
        c0.writes + 1,
        "one write: the record with the bytes"
    );
    assert_eq!(c.flushes, c0.flushes + 1, "one flush");
    assert_eq!(c.reads, c0.reads);
    // Reads see the bytes at once; the blob's cluster does not hold them yet.
    let mut want = vec![0u8; 4000];
    want[1000..].copy_from_slice(&data);
    assert_eq!(read(&bs, id, 4000), want);
    assert_eq!(in_place(&d, &bs, id, 1000, 3000), vec![0u8; 3000]);
    assert!(b.checked_overlaps(3999, 1));
    assert!(!b.checked_overlaps(4000, 4096), "appends never overlap");
    assert_eq!(logged(&d), vec![(id, 1000, data.clone())]);
    drop(b);
    drop(bs); // a crash: no unload

    // A read-only load replays the bytes into memory and reads them, writing nothing.
    let ro = load_read_only(&d).unwrap();
    assert_eq!(read(&ro, id, 4000), want);
    assert_eq!(in_place(&d, &ro, id, 1000, 3000), vec![0u8; 3000]);
    let b = ro.open_blob(id).unwrap();
    assert_eq!(b.get_xattr("len").unwrap(), b"4000");
    assert!(matches!(
        b.write_commit_inline(0, b"x", Durability::Durable),
        Err(BsError::ReadOnly)
    ));
    drop(b);
    drop(ro);
    let report = fsck(&d, FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report}");

    // A writable load puts them in place before its checkpoint drops the log.
    let bs = load(&d);
    assert_eq!(in_place(&d, &bs, id, 1000, 3000), data);
    assert!(logged(&d).is_empty());
    assert_eq!(read(&bs, id, 4000), want);
    bs.unload().unwrap();
    let bs = load(&d);
    assert_eq!(read(&bs, id, 4000), want);
}

#[test]
fn later_bytes_win_and_settle_keeps_the_rest_of_the_block() {
    let (d, bs, id) = store_with_blob(16, 2);
    let b = bs.open_blob(id).unwrap();
    // Bytes already in place around the logged ones stay.
    let base = pattern(1, 2 * CLUSTER as usize);
    let mut ch = bs.channel().unwrap();
    b.write(&mut ch, 0, &base).unwrap();
    b.sync_md().unwrap();
    let mut want = base.clone();
    // Appends that cross a cluster edge and overwrite the tail of the previous one.
    let mut at = CLUSTER - 2500;
    for i in 0..4u64 {
        let data = pattern(10 + i, 1500);
        b.write_commit_inline(at, &data, Durability::Durable)
            .unwrap();
        want[at as usize..at as usize + 1500].copy_from_slice(&data);
        at += 1000;
    }
    assert_eq!(read(&bs, id, want.len()), want);
    drop(b);
    drop(bs);
    let bs = load(&d);
    assert_eq!(read(&bs, id, want.len()), want);
    bs.unload().unwrap();
    let bs = load(&d);
    assert_eq!(read(&bs, id, want.len()), want);
}

#[test]
fn a_write_over_logged_bytes_settles_them_first() {
    let (d, bs, id) = store_with_blob(16, 1);
    let b = bs.open_blob(id).unwrap();
    let logged_bytes = pattern(4, 6000);
    b.write_commit_inline(100, &logged_bytes, Durability::Durable)
        .unwrap();
    // Rewriting the second block in place: confirm first (a checkpoint), as documented.
    b.confirm_checked().unwrap();
    assert!(!b.checked_overlaps(0, u64::MAX));
    assert!(logged(&d).is_empty(), "the checkpoint retired the log");
    let newer = pattern(5, 4096);
    let mut ch = bs.channel().unwrap();
    b.write(&mut ch, 4096, &newer).unwrap();
    b.sync_md().unwrap();
    let mut want = vec![0u8; 8192];
    want[100..6100].copy_from_slice(&logged_bytes);
    want[4096..].copy_from_slice(&newer);
    assert_eq!(read(&bs, id, 8192), want);
    drop(b);
    drop(bs);
    let bs = load(&d);
    assert_eq!(read(&bs, id, 8192), want);

    // Without a confirm the write still lands after the logged bytes (it settles them
    // first), so reads are right while the store runs.
    let b = bs.open_blob(id).unwrap();
    let more = pattern(6, 2000);
    b.write_commit_inline(9000, &more, Durability::Durable)
        .unwrap();
    let top = pattern(7, 4096);
    let mut ch = bs.channel().unwrap();
    b.write(&mut ch, 8192, &top).unwrap();
    let mut want2 = want.clone();
    want2.resize(12288, 0);
    want2[8192..].copy_from_slice(&top);
    assert_eq!(read(&bs, id, 12288), want2);
    assert_eq!(in_place(&d, &bs, id, 8192, 4096), top);
}

#[test]
fn shrink_delete_and_snapshot_retire_logged_bytes() {
    // Shrink past logged bytes, then grow again: the new cluster reads zeroes, before and
    // after a crash (the shrink checkpointed, so no replay writes the old bytes into it).
    let (d, bs, id) = store_with_blob(16, 2);
    let b = bs.open_blob(id).unwrap();
    let data = pattern(8, 3000);
    b.write_commit_inline(CLUSTER + 10, &data, Durability::Durable)
        .unwrap();
    assert_eq!(logged(&d).len(), 1);
    b.resize(1).unwrap();
    assert!(logged(&d).is_empty(), "the shrink checkpointed first");
    b.resize(2).unwrap();
    b.sync_md().unwrap();
    let mut ch = bs.channel().unwrap();
    assert_eq!(
        b.read(&mut ch, CLUSTER, 4096).unwrap(),
        vec![0u8; 4096],
        "a new cluster reads zeroes"
    );
    drop(b);
    drop(bs);
    let bs = load(&d);
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    assert_eq!(b.read(&mut ch, CLUSTER, 4096).unwrap(), vec![0u8; 4096]);
    drop(b);

    // Delete: the logged bytes go with the blob; its clusters go back.
    let free = bs.free_clusters().unwrap();
    let b = bs.open_blob(id).unwrap();
    b.write_commit_inline(0, &data, Durability::Durable)
        .unwrap();
    drop(b);
    bs.delete_blob(id).unwrap();
    assert_eq!(bs.free_clusters().unwrap(), free + 2);
    drop(bs);
    let bs = load(&d);
    assert!(bs.open_blob(id).is_err());
    drop(bs);

    // Snapshot: checkpoints first; the snapshot holds the bytes, the clone reads them.
    let (d, bs, id) = store_with_blob(16, 1);
    let b = bs.open_blob(id).unwrap();
    b.write_commit_inline(500, &data, Durability::Durable)
        .unwrap();
    drop(b);
    let snap = bs.snapshot(id).unwrap();
    assert!(logged(&d).is_empty());
    let mut want = vec![0u8; 3500];
    want[500..].copy_from_slice(&data);
    assert_eq!(read(&bs, snap, 3500), want);
    assert_eq!(read(&bs, id, 3500), want);
    drop(bs);
    let bs = load(&d);
    assert_eq!(read(&bs, snap, 3500), want);
    assert_eq!(read(&bs, id, 3500), want);
}

#[test]
fn inline_errors_change_nothing() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let thin = bs
        .create_blob(CreateOptions {
            num_clusters: 2,
            thin: true,
            ..Default::default()
        })
        .unwrap();
    let b = bs.open_blob(thin).unwrap();
    let e = b.write_commit_inline(0, b"abc", Durability::Durable);
    assert!(matches!(e, Err(BsError::InvalidArgument(_))), "{e:?}");
    let (_, bs2, id) = store_with_blob(16, 1);
    let b2 = bs2.open_blob(id).unwrap();
    for (at, len) in [(CLUSTER - 10, 20usize), (0, (1 << 20) + 1)] {
        let e = b2.write_commit_inline(at, &vec![7; len], Durability::Durable);
        assert!(
            matches!(e, Err(BsError::InvalidArgument(_))),
            "{at}+{len}: {e:?}"
        );
    }
    assert_eq!(read(&bs2, id, 4096), vec![0u8; 4096]);
    assert!(!b2.checked_overlaps(0, u64::MAX));
    b2.set_read_only().unwrap();
    let e = b2.write_commit_inline(0, b"abc", Durability::Durable);
    assert!(matches!(e, Err(BsError::ReadOnly)), "{e:?}");
}

/// A device error at each request of an inline commit and of the checkpoint that settles it:
/// the call fails with `Io` (or, for the flush after the record, succeeds through a
/// checkpoint), reads keep showing every acknowledged byte, and after the error clears an
/// unload and a reload find exactly those bytes.
#[test]
fn io_errors_in_inline_commit_and_settle_lose_no_acknowledged_byte() {
    let d1 = pattern(21, 2500);
    let d2 = pattern(22, 3100);
    let mut made = None;
    for n in 0u64.. {
        let base = dev(16, 4096);
        let err = oxblob_sim::ErrorDevice::new(Arc::clone(&base));
        let d: Arc<dyn BlockDevice> = err.clone();
        let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
        let id = bs
            .create_blob(CreateOptions {
                num_clusters: 1,
                ..Default::default()
            })
            .unwrap();
        let b = bs.open_blob(id).unwrap();
        b.write_commit_inline(0, &d1, Durability::Durable).unwrap();
        let faults = err.faults();
        let seen0 = faults.requests_seen();
        if n > 0 {
            faults.arm(oxblob_sim::Fault::nth(n));
        }
        let r2 = b.write_commit_inline(d1.len() as u64, &d2, Durability::Durable);
        let r3 = if r2.is_ok() {
            b.confirm_checked()
        } else {
            Ok(())
        };
        faults.disarm_all();
        let ctx = format!("request {n}: commit {r2:?}, confirm {r3:?}");
        if n == 0 {
            r2.unwrap();
            r3.unwrap();
            made = Some(faults.requests_seen() - seen0);
            assert!(made.unwrap() >= 4, "too few requests to test");
            continue;
        }
        for r in [&r2, &r3] {
            assert!(matches!(r, Ok(()) | Err(BsError::Io(_))), "{ctx}");
        }
        let mut want = d1.clone();
        if r2.is_ok() {
            want.extend_from_slice(&d2);
        }
        assert_eq!(read(&bs, id, want.len()), want, "{ctx}: live read");
        // What a power cut now would find: every acknowledged byte.
        let ro = load_read_only(&base)
            .unwrap_or_else(|e| panic!("{ctx}: load after the failure: {e:?}"));
        assert_eq!(read(&ro, id, want.len()), want, "{ctx}: after a crash");
        drop(ro);
        drop(b);
        bs.unload()
            .unwrap_or_else(|e| panic!("{ctx}: unload: {e:?}"));
        let bs = load(&base);
        assert_eq!(read(&bs, id, want.len()), want, "{ctx}: after reload");
        if n >= made.unwrap() {
            break;
        }
    }
}

//! Snapshots, clones, copy-on-write, inflate, decouple and delete-with-merge, checked byte for
//! byte, live and after a reload without unload.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;
use common::*;
use oxblob_blobstore::{BlobStore, BsError, CreateOptions};
use std::sync::Arc;

fn read_all(bs: &BlobStore, id: u64) -> Vec<u8> {
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    b.read(&mut ch, 0, b.size_bytes() as usize).unwrap()
}

#[test]
fn snapshot_clone_cow_merge() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let free0 = bs.free_clusters().unwrap();
    let id = bs
        .create_blob(CreateOptions {
            num_clusters: 4,
            ..Default::default()
        })
        .unwrap();
    let a = pattern(1, 4 * CLUSTER as usize);
    {
        let b = bs.open_blob(id).unwrap();
        let mut ch = bs.channel().unwrap();
        b.write(&mut ch, 0, &a).unwrap();
        b.close().unwrap();
    }
    let sid = bs.snapshot(id).unwrap();
    assert_eq!(
        bs.free_clusters().unwrap(),
        free0 - 4,
        "a snapshot allocates nothing"
    );
    let b = bs.open_blob(id).unwrap();
    assert_eq!(b.parent(), sid);
    assert!(b.is_thin());
    assert_eq!(b.allocated_clusters(), 0);
    assert_eq!(read_all(&bs, id), a);
    assert_eq!(read_all(&bs, sid), a);
    // The snapshot is read-only.
    let s = bs.open_blob(sid).unwrap();
    let mut ch = bs.channel().unwrap();
    assert!(matches!(
        s.write(&mut ch, 0, &[0; 4096]),
        Err(BsError::ReadOnly)
    ));
    drop(s);
    // Copy-on-write of one cluster: 8 KiB new, the rest of the cluster from the snapshot.
    let w = pattern(2, 8192);
    b.write(&mut ch, CLUSTER + 4096, &w).unwrap();
    assert_eq!(b.allocated_clusters(), 1);
    let mut expect = a.clone();
    let at = CLUSTER as usize + 4096;
    expect[at..at + 8192].copy_from_slice(&w);
    assert_eq!(read_all(&bs, id), expect);
    assert_eq!(read_all(&bs, sid), a, "the snapshot is unchanged");
    b.close().unwrap();
    // A clone of the snapshot sees the snapshot's data; a clone of a writable blob is refused.
    let cid = bs.create_clone(sid).unwrap();
    assert_eq!(read_all(&bs, cid), a);
    assert!(matches!(
        bs.create_clone(id),
        Err(BsError::InvalidArgument(_))
    ));
    // Two clones: refuse; one clone: merge.
    assert!(matches!(bs.delete_blob(sid), Err(BsError::HasClones(x)) if x == sid));
    bs.delete_blob(cid).unwrap();
    let before_merge = bs.free_clusters().unwrap();
    bs.delete_blob(sid).unwrap();
    let b = bs.open_blob(id).unwrap();
    assert_eq!(b.parent(), 0);
    assert_eq!(b.allocated_clusters(), 4);
    // The snapshot's copy of cluster 1 was shadowed by the clone's own: freed by the merge.
    assert_eq!(bs.free_clusters().unwrap(), before_merge + 1);
    drop(b);
    assert_eq!(read_all(&bs, id), expect);
    check_invariants(&bs);
    let st = state(&bs);
    drop(bs);
    let bs = load(&d);
    assert_eq!(state(&bs), st);
    assert_eq!(read_all(&bs, id), expect);
    check_invariants(&bs);
}

#[test]
fn inflate_and_decouple() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    // A thin blob with two of six clusters written, snapshotted, then cloned.
    let id = bs
        .create_blob(CreateOptions {
            num_clusters: 6,
            thin: true,
            ..Default::default()
        })
        .unwrap();
    let mut ch = bs.channel().unwrap();
    let w = pattern(3, CLUSTER as usize);
    {
        let b = bs.open_blob(id).unwrap();
        b.write(&mut ch, CLUSTER, &w).unwrap();
        b.write(&mut ch, 4 * CLUSTER, &w).unwrap();
        b.close().unwrap();
    }
    let content = read_all(&bs, id);
    let sid = bs.snapshot(id).unwrap();
    let cid = bs.create_clone(sid).unwrap();
    bs.decouple_parent(cid).unwrap();
    let c = bs.open_blob(cid).unwrap();
    assert_eq!(c.parent(), 0);
    assert!(c.is_thin());
    assert_eq!(c.allocated_clusters(), 2, "only clusters the chain had");
    drop(c);
    assert_eq!(read_all(&bs, cid), content);
    bs.inflate(id).unwrap();
    let b = bs.open_blob(id).unwrap();
    assert_eq!(b.parent(), 0);
    assert!(!b.is_thin());
    assert_eq!(b.allocated_clusters(), 6);
    drop(b);
    assert_eq!(read_all(&bs, id), content);
    // No clone left: the snapshot deletes plainly.
    bs.delete_blob(sid).unwrap();
    check_invariants(&bs);
    let st = state(&bs);
    drop(bs);
    let bs = load(&d);
    assert_eq!(state(&bs), st);
    assert_eq!(read_all(&bs, id), content);
    assert_eq!(read_all(&bs, cid), content);
}

//! `Blob::read_into`: a read straight into the caller's memory returns exactly what a read
//! through a channel returns — a clone's parent data (cluster 0), unallocated clusters
//! (zeroes: 1 and 3), its own copy-on-write cluster (2) with inline-logged bytes not yet in
//! place — and breaks no rule a channel read keeps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_bdev::{BlockDevice, IoBuf, PsyncDevice};
use oxblob_blobstore::{BlobStore, BsError, CreateOptions, Durability, LoadOptions};
use std::sync::Arc;

fn thin(n: u64) -> CreateOptions {
    CreateOptions {
        num_clusters: n,
        thin: true,
        xattrs: Vec::new(),
    }
}

/// `read_into` of `[at, at + len)` into an aligned buffer, which must be done.
fn direct(b: &oxblob_blobstore::Blob, at: u64, len: usize) -> Vec<u8> {
    let mut buf = IoBuf::zeroed(len);
    assert!(b.read_into(at, &mut buf).unwrap(), "read_into declined");
    buf.to_vec()
}

/// Every kind of range a blob has, read both ways, on a device that reads into the caller's
/// memory (RAM, and a file through `pread`).
fn check_matches_channel_reads(d: Arc<dyn BlockDevice>) {
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let cs = CLUSTER as usize;
    let parent = bs.create_blob(thin(4)).unwrap();
    let p = bs.open_blob(parent).unwrap();
    let mut ch = bs.channel().unwrap();
    // Parent: clusters 0 and 2 written, 1 and 3 never.
    p.write(&mut ch, 0, &pattern(1, cs)).unwrap();
    p.write(&mut ch, 2 * CLUSTER, &pattern(2, cs)).unwrap();
    p.close().unwrap();
    let snap = bs.snapshot(parent).unwrap();
    let clone = bs.create_clone(snap).unwrap();
    let c = bs.open_blob(clone).unwrap();
    // The clone's own data in cluster 2 (over the parent's), half of it.
    c.write(&mut ch, 2 * CLUSTER + 4096, &pattern(3, cs / 2))
        .unwrap();
    // Inline-logged bytes not yet in place, at the end of cluster 2 (the clone's own).
    c.write_commit_inline(3 * CLUSTER - 5000, &pattern(4, 4000), Durability::Durable)
        .unwrap();
    let all = 4 * cs;
    let want = c.read(&mut ch, 0, all).unwrap();
    assert_eq!(&want[..cs], &pattern(1, cs)[..], "the parent's cluster 0");
    assert_eq!(&want[3 * cs - 5000..3 * cs - 1000], &pattern(4, 4000)[..]);
    assert_eq!(direct(&c, 0, all), want, "the whole blob");
    for (at, len) in [
        (0, 4096),
        (CLUSTER - 8192, 16384),
        (CLUSTER, cs),
        (2 * CLUSTER, 8192),
        (3 * CLUSTER - 8192, 8192),
        (3 * CLUSTER - 4096, 8192),
        (3 * CLUSTER, cs),
    ] {
        let s = at as usize;
        assert_eq!(
            direct(&c, at, len),
            &want[s..s + len],
            "{len} bytes at {at}"
        );
    }
    // The rules of a channel read, as errors.
    let mut one = IoBuf::zeroed(4096);
    for (what, at, len) in [
        ("misaligned offset", 100, 4096),
        ("misaligned length", 0, 100),
        ("empty", 0, 0),
        ("past the end", 4 * CLUSTER, 4096),
    ] {
        match c.read_into(at, &mut one[..len]) {
            Err(BsError::InvalidArgument(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    c.close().unwrap();
    bs.unload().unwrap();
}

#[test]
fn read_into_matches_channel_reads_on_ram() {
    check_matches_channel_reads(dev(16, 4096));
}

#[test]
fn read_into_matches_channel_reads_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let opts = oxblob_bdev::FileOptions {
        create_size: Some(16 << 20),
        ..Default::default()
    };
    let d: Arc<dyn BlockDevice> =
        Arc::new(PsyncDevice::open(dir.path().join("img"), &opts).unwrap());
    check_matches_channel_reads(d);
}

#[test]
fn a_device_that_declines_leaves_the_read_to_a_channel() {
    // A counting wrapper keeps the default `read_into` (declines), so its reads stay
    // countable: the blob read declines too, and reads nothing.
    let (d, bs, id) = store_with_blob(16, 1);
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    b.write(&mut ch, 0, &pattern(5, 8192)).unwrap();
    b.close().unwrap();
    drop(ch);
    bs.unload().unwrap();
    let counting = oxblob_sim::CountingDevice::new(Arc::clone(&d));
    let cd: Arc<dyn BlockDevice> = counting.clone();
    let bs = BlobStore::load(cd, LoadOptions::default()).unwrap();
    let b = bs.open_blob(id).unwrap();
    let c0 = counting.counts();
    let mut buf = IoBuf::zeroed(8192);
    assert!(!b.read_into(0, &mut buf).unwrap());
    assert_eq!(counting.counts().reads, c0.reads);
    let mut ch = bs.channel().unwrap();
    assert_eq!(b.read(&mut ch, 0, 8192).unwrap(), pattern(5, 8192));
}

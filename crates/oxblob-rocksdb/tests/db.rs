//! The Rust `Db` API over the plugin: bulk put/get/delete across a reopen, compaction through
//! many SST files, batches, iterators, locks, and two databases sharing one mounted image.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_rocksdb::{Code, Db, Options, WriteBatch};

const N: u64 = 100_000;

#[test]
fn put_get_delete_100k_then_reopen() {
    let dir = scratch();
    let img = dir.path().join("db.img");
    let db = Db::open(&mkfs_uri(&img), "/db", &Options::default()).unwrap();
    for i in 0..N {
        db.put(&key(i), &value(i, 0)).unwrap();
    }
    // Overwrite every 7th key, delete every 5th.
    for i in (0..N).step_by(7) {
        db.put(&key(i), &value(i, 1)).unwrap();
    }
    for i in (0..N).step_by(5) {
        db.delete(&key(i)).unwrap();
    }
    let expect = |i: u64| -> Option<Vec<u8>> {
        if i % 5 == 0 {
            None
        } else if i % 7 == 0 {
            Some(value(i, 1))
        } else {
            Some(value(i, 0))
        }
    };
    for i in (0..N).step_by(97) {
        assert_eq!(db.get(&key(i)).unwrap(), expect(i), "key {i} before close");
    }
    db.close().unwrap();

    // Reopen from the image: every key byte for byte.
    let o = Options {
        create_if_missing: false,
        ..Default::default()
    };
    let db = Db::open(&uri(&img), "/db", &o).unwrap();
    for i in 0..N {
        assert_eq!(db.get(&key(i)).unwrap(), expect(i), "key {i} after reopen");
    }
    assert_eq!(db.get(b"never-written").unwrap(), None);
    // The iterator sees exactly the live keys, in order.
    let mut it = db.iter().unwrap();
    it.seek_to_first();
    let mut i = 0;
    while it.valid() {
        while expect(i).is_none() {
            i += 1;
        }
        assert_eq!(it.key().unwrap(), key(i).as_slice());
        assert_eq!(
            it.value().unwrap(),
            value(i, u64::from(i % 7 == 0)).as_slice()
        );
        it.next();
        i += 1;
    }
    it.status().unwrap();
    assert_eq!(i, N, "iteration ended early");
    drop(it);
    db.close().unwrap();
}

#[test]
fn compaction_through_many_sst_files() {
    let dir = scratch();
    let img = dir.path().join("db.img");
    let o = Options {
        write_buffer_size: Some(64 << 10),
        target_file_size_base: Some(64 << 10),
        max_bytes_for_level_base: Some(256 << 10),
        ..Default::default()
    };
    let n = 10_000u64;
    let db = Db::open(&mkfs_uri(&img), "/db", &o).unwrap();
    // Three generations over a shuffled key order: compaction must keep only the newest.
    for g in 0..3u64 {
        for j in 0..n {
            let i = (j * 7919) % n;
            db.put(&key(i), &value(i, g)).unwrap();
        }
    }
    db.flush().unwrap();
    let files = |db: &Db| -> u64 {
        (0..7)
            .map(|l| {
                db.property(&format!("rocksdb.num-files-at-level{l}"))
                    .unwrap()
                    .trim()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    let before = files(&db);
    assert!(
        before >= 10,
        "only {before} SST files: write buffer not small"
    );
    db.compact_range(None, None).unwrap();
    let after = files(&db);
    assert!(after >= 2, "target file size not applied ({after} files)");
    for i in 0..n {
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i, 2)), "key {i}");
    }
    db.close().unwrap();
    let db = Db::open(&uri(&img), "/db", &o).unwrap();
    for i in (0..n).step_by(3) {
        assert_eq!(
            db.get(&key(i)).unwrap(),
            Some(value(i, 2)),
            "key {i} after reopen"
        );
    }
    db.close().unwrap();
}

#[test]
fn batches_iterator_seek_and_sync_writes() {
    let dir = scratch();
    let img = dir.path().join("db.img");
    let o = Options {
        sync: true,
        ..Default::default()
    };
    let db = Db::open(&mkfs_uri(&img), "/db", &o).unwrap();
    let mut b = WriteBatch::new().unwrap();
    for i in 0..1000 {
        b.put(&key(i), &value(i, 0));
    }
    b.delete(&key(500));
    db.write_batch(b).unwrap();
    let mut it = db.iter().unwrap();
    it.seek(&key(499));
    assert_eq!(it.key().unwrap(), key(499).as_slice());
    it.next();
    assert_eq!(it.key().unwrap(), key(501).as_slice());
    assert_eq!(it.value().unwrap(), value(501, 0).as_slice());
    it.seek(b"zzz");
    assert!(!it.valid());
    assert_eq!(it.key(), None);
    drop(it);
    db.close().unwrap();
}

#[test]
fn second_open_of_a_db_in_the_same_process_fails_with_lock_held() {
    let dir = scratch();
    let img = dir.path().join("db.img");
    let db = Db::open(&mkfs_uri(&img), "/a", &Options::default()).unwrap();
    db.put(b"k", b"a").unwrap();
    // Same image (shared mount), same DB: RocksDB's LockFile must fail.
    let e = Db::open(&uri(&img), "/a", &Options::default()).unwrap_err();
    assert_eq!(e.code, Code::IoError, "{e}");
    assert!(e.message.contains("lock held"), "{e}");
    // A second DB in another directory of the same image works alongside.
    let db2 = Db::open(&uri(&img), "/nested/b", &Options::default()).unwrap();
    db2.put(b"k", b"b").unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(db2.get(b"k").unwrap().as_deref(), Some(&b"b"[..]));
    db.close().unwrap();
    // The lock is released by close: /a opens again while /nested/b keeps the image mounted.
    let db = Db::open(&uri(&img), "/a", &Options::default()).unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"a"[..]));
    db.close().unwrap();
    db2.close().unwrap();
    // Everything unmounted: the image is free for a new mount.
    let db2 = Db::open(&uri(&img), "/nested/b", &Options::default()).unwrap();
    assert_eq!(db2.get(b"k").unwrap().as_deref(), Some(&b"b"[..]));
    db2.close().unwrap();
}

/// A full image: the write fails with RocksDB's NoSpace status carrying blobfs's own message
/// (which file, how many clusters were needed), and the image still mounts and checks clean.
#[test]
fn full_image_gives_no_space_with_the_file_system_message() {
    let dir = scratch();
    let img = dir.path().join("small.img");
    let uri = format!("oxblob://{}?mkfs=1&size=32MiB", img.display());
    let db = Db::open(&uri, "/db", &Options::default()).unwrap();
    let big = vec![0x5au8; 64 << 10];
    let mut failed = None;
    for i in 0..10_000u64 {
        if let Err(e) = db.put(&key(i), &big) {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("a 32 MiB image filled without an error");
    assert_eq!(e.code, Code::IoError, "{e:?}");
    assert_eq!(e.subcode, oxblob_rocksdb::SubCode::NoSpace, "{e:?}");
    assert!(e.message.contains("no space"), "{}", e.message);
    assert!(e.message.contains("/db/"), "names the file: {}", e.message);
    drop(db);
    let dev = oxblob_bdev::spec::open(&img.display().to_string()).unwrap();
    let fs = oxblob_blobfs::BlobFs::mount(dev, oxblob_blobfs::MountOptions::default()).unwrap();
    assert!(fs.exists("/db/CURRENT").unwrap());
    fs.unmount().unwrap();
}

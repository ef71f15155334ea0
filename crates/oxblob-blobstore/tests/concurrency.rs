//! Four threads doing data I/O on their own blobs through their own channels while a fifth
//! runs metadata operations; afterwards every byte and every record is checked, live and after
//! a reload.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;
use common::*;
use oxblob_bdev::IoBuf;
use oxblob_blobstore::{BlobStore, CreateOptions};
use std::sync::Arc;
use std::thread;

#[test]
fn four_io_threads_and_metadata_ops() {
    let d = dev(32, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let clusters = 6u64;
    let mut handles = Vec::new();
    for t in 0..4u64 {
        let bs = bs.clone();
        handles.push(thread::spawn(move || {
            let id = bs
                .create_blob(CreateOptions {
                    num_clusters: clusters,
                    thin: t % 2 == 1,
                    xattrs: vec![("owner".into(), t.to_le_bytes().to_vec())],
                })
                .unwrap();
            let blob = bs.open_blob(id).unwrap();
            let mut ch = bs.channel().unwrap();
            let size = (clusters * CLUSTER) as usize;
            let mut image = vec![0u8; size];
            for round in 0..4u64 {
                // 16 KiB chunks in a shuffled order, 32 in flight at a time.
                let chunk = 16384usize;
                let mut offs: Vec<usize> = (0..size).step_by(chunk).collect();
                let r = (t * 31 + round * 7) as usize;
                let k = r % offs.len();
                offs.rotate_left(k);
                for batch in offs.chunks(32) {
                    for &off in batch {
                        let data = pattern(t * 1000 + round * 100 + off as u64, chunk);
                        image[off..off + chunk].copy_from_slice(&data);
                        blob.submit_write(
                            &mut ch,
                            off as u64,
                            IoBuf::from_slice(&data),
                            off as u64,
                        )
                        .unwrap();
                    }
                    let mut done = Vec::new();
                    while ch.in_flight() > 0 {
                        ch.poll(&mut done, 1).unwrap();
                    }
                    assert!(done.iter().all(|c| c.result.is_ok()));
                }
                assert_eq!(blob.read(&mut ch, 0, size).unwrap(), image);
                blob.set_xattr("round", &round.to_le_bytes()).unwrap();
                blob.sync_md().unwrap();
            }
            blob.close().unwrap();
            (id, image)
        }));
    }
    let md_thread = {
        let bs = bs.clone();
        thread::spawn(move || {
            let mut kept = Vec::new();
            for i in 0..60u64 {
                let id = bs
                    .create_blob(CreateOptions {
                        num_clusters: i % 2,
                        thin: false,
                        xattrs: vec![("i".into(), i.to_le_bytes().to_vec())],
                    })
                    .unwrap();
                if i % 3 == 0 {
                    bs.delete_blob(id).unwrap();
                } else {
                    let b = bs.open_blob(id).unwrap();
                    b.set_xattr("touched", b"yes").unwrap();
                    b.close().unwrap();
                    kept.push(id);
                }
            }
            kept
        })
    };
    let results: Vec<(u64, Vec<u8>)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let kept = md_thread.join().unwrap();
    let check = |bs: &BlobStore| {
        let mut ch = bs.channel().unwrap();
        for (t, (id, image)) in results.iter().enumerate() {
            let b = bs.open_blob(*id).unwrap();
            assert_eq!(
                b.read(&mut ch, 0, image.len()).unwrap(),
                *image,
                "thread {t}"
            );
            assert_eq!(b.get_xattr("owner").unwrap(), (t as u64).to_le_bytes());
            assert_eq!(b.get_xattr("round").unwrap(), 3u64.to_le_bytes());
        }
        for id in &kept {
            assert_eq!(
                bs.open_blob(*id).unwrap().get_xattr("touched").unwrap(),
                b"yes"
            );
        }
        assert_eq!(bs.blobs().unwrap().len(), 4 + kept.len());
        check_invariants(bs);
    };
    check(&bs);
    let before = state(&bs);
    drop(bs); // reload without unload
    let bs = load(&d);
    assert_eq!(state(&bs), before);
    check(&bs);
    bs.unload().unwrap();
    let bs = load(&d);
    check(&bs);
}

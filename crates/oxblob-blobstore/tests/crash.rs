//! Crash sweeps (`docs/fault-model.md`): each metadata operation runs on a `CrashDevice`; for
//! every history point after setup, the image a power cut would leave is rebuilt (unflushed
//! writes dropped, kept, or seeded drop/reorder/tear), loaded, and checked: the load succeeds,
//! no cluster is owned twice and none leaks, the state equals the model before or after the
//! operation (after, once its last flush completed), synced data is intact byte for byte, and
//! a new cluster never shows another blob's old bytes. The recovered store must also take a new
//! operation and reload again.
//!
//! Default: every point with DropAll, KeepAll and 2 random seeds. `OXBLOB_FULL=1`: enough
//! random seeds for at least 1,000 variants per operation. Failures print (point, seed, mode);
//! `OXBLOB_SEED` shifts the random seeds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;
use common::*;
use oxblob_bdev::BlockDevice;
use oxblob_blobstore::{BlobStore, CreateOptions};
use oxblob_sim::{CrashDevice, CrashMode};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// What the setup leaves for the operation and the checks.
struct Ctx {
    ids: Vec<u64>,
    /// Blob id → its synced contents (whole blob), checked byte for byte when the blob exists.
    data: Vec<(u64, Vec<u8>)>,
}

/// Fills the data region with 0xEE through a deleted blob, so stale bytes are recognisable.
fn dirty_data_region(bs: &BlobStore) {
    let n = bs.free_clusters().unwrap();
    let id = bs
        .create_blob(CreateOptions {
            num_clusters: n,
            ..Default::default()
        })
        .unwrap();
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    b.write(&mut ch, 0, &vec![0xEE; (n * CLUSTER) as usize])
        .unwrap();
    b.close().unwrap();
    bs.delete_blob(id).unwrap();
}

fn blob_with_data(bs: &BlobStore, n: u64, seed: u64) -> (u64, Vec<u8>) {
    let id = bs
        .create_blob(CreateOptions {
            num_clusters: n,
            ..Default::default()
        })
        .unwrap();
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    let data = pattern(seed, (n * CLUSTER) as usize);
    b.write(&mut ch, 0, &data).unwrap();
    // The close of a clean blob does no I/O: the data is made durable by a flush.
    b.sync_md().unwrap();
    b.close().unwrap();
    (id, data)
}

fn variants(points: usize) -> Vec<(CrashMode, u64)> {
    let base = oxblob_sim::rng::seed_from_env(0x0B10_B000);
    let full = std::env::var("OXBLOB_FULL").is_ok_and(|v| v == "1");
    let random = if full {
        1000usize.div_ceil(points).max(4)
    } else {
        2
    };
    let mut v = vec![(CrashMode::DropAll, 0), (CrashMode::KeepAll, 0)];
    v.extend((0..random as u64).map(|s| (CrashMode::Random, base.wrapping_add(s))));
    v
}

/// Per-blob check after recovery: the blob's contents given `after` and `final_point`.
type Verify = dyn Fn(&BlobStore, &Ctx, bool, bool);

fn sweep(
    name: &str,
    block: u32,
    setup: impl Fn(&BlobStore) -> Ctx,
    steps: Vec<Box<dyn Fn(&BlobStore, &Ctx)>>,
    verify: &Verify,
) {
    let base = dev(2, block);
    let crash = CrashDevice::new(base).unwrap();
    let d: Arc<dyn BlockDevice> = crash.clone();
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    dirty_data_region(&bs);
    let ctx = setup(&bs);
    // states[k]: the model after k steps; ends[k]: history point where step k+1 returned.
    let mut states = vec![state(&bs)];
    let mut ends = Vec::new();
    crash.mark();
    for step in &steps {
        step(&bs, &ctx);
        states.push(state(&bs));
        ends.push(crash.history_len());
    }
    let before = states[0].clone();
    let after = states[states.len() - 1].clone();
    assert_ne!(before, after, "{name}: the operations changed nothing");
    let n = crash.history_len();
    assert!(n > 0);
    let mut seen_before = false;
    let mut seen_after = false;
    let mut count = 0usize;
    for p in 0..=n {
        for &(mode, seed) in &variants(n + 1) {
            count += 1;
            let img = crash.image_at(p, seed, mode).unwrap();
            let r = catch_unwind(AssertUnwindSafe(|| {
                let bs2 = load(&img);
                let s = state(&bs2);
                // Steps that returned by point p are durable; the one in progress is all or
                // nothing.
                let done = ends.iter().filter(|&&e| e <= p).count();
                let ok = s == states[done] || (done < steps.len() && s == states[done + 1]);
                assert!(
                    ok,
                    "state after {done} durable steps is neither the model after {done} nor after {} steps:\n{s:#?}\nexpected {:#?}",
                    done + 1,
                    states[done]
                );
                let is_after = s == after;
                if p == n {
                    assert!(is_after, "the operation completed but is not there");
                }
                check_invariants(&bs2);
                for (id, data) in &ctx.data {
                    if let Ok(b) = bs2.open_blob(*id) {
                        let mut ch = bs2.channel().unwrap();
                        let got = b
                            .read(&mut ch, 0, data.len().min(b.size_bytes() as usize))
                            .unwrap();
                        assert!(got == data[..got.len()], "synced data of blob {id} changed");
                    }
                }
                verify(&bs2, &ctx, is_after, p == n);
                // The recovered store works and survives another reload.
                let id = bs2
                    .create_blob(CreateOptions {
                        num_clusters: 1,
                        ..Default::default()
                    })
                    .unwrap();
                let s2 = state(&bs2);
                drop(bs2);
                let bs3 = load(&img);
                assert_eq!(state(&bs3), s2);
                assert!(bs3.open_blob(id).is_ok());
                check_invariants(&bs3);
                is_after
            }));
            match r {
                Ok(true) => seen_after = true,
                Ok(false) => seen_before = true,
                Err(e) => {
                    let msg = oxblob_sim::panic_message(e.as_ref());
                    panic!("{name}: crash at point {p}/{n}, mode {mode:?}, seed {seed:#x}: {msg}");
                }
            }
        }
    }
    assert!(
        seen_before && seen_after,
        "{name}: the sweep saw both outcomes"
    );
    eprintln!("{name}: {n} history points, {count} crash images checked");
}

fn no_verify(_: &BlobStore, _: &Ctx, _: bool, _: bool) {}

#[test]
fn crash_create() {
    sweep(
        "create",
        4096,
        |bs| {
            let (a, da) = blob_with_data(bs, 2, 1);
            Ctx {
                ids: vec![a],
                data: vec![(a, da)],
            }
        },
        vec![Box::new(|bs, _| {
            bs.create_blob(CreateOptions {
                num_clusters: 3,
                thin: false,
                xattrs: vec![("name".into(), b"new".to_vec())],
            })
            .unwrap();
        })],
        &|bs, _, after, _| {
            if after {
                // The new thick blob reads zeroes, never the 0xEE of the deleted blob.
                let id = bs.blobs().unwrap().last().unwrap().id;
                let b = bs.open_blob(id).unwrap();
                let mut ch = bs.channel().unwrap();
                assert!(b
                    .read(&mut ch, 0, 3 * CLUSTER as usize)
                    .unwrap()
                    .iter()
                    .all(|&x| x == 0));
            }
        },
    );
}

#[test]
fn crash_delete() {
    sweep(
        "delete",
        512,
        |bs| {
            let (a, da) = blob_with_data(bs, 2, 2);
            let (b, db) = blob_with_data(bs, 3, 3);
            Ctx {
                ids: vec![a, b],
                data: vec![(a, da), (b, db)],
            }
        },
        vec![Box::new(|bs, c| bs.delete_blob(c.ids[1]).unwrap())],
        &no_verify,
    );
}

#[test]
fn crash_resize_grow_and_shrink() {
    sweep(
        "resize",
        4096,
        |bs| {
            let (a, da) = blob_with_data(bs, 4, 4);
            let (b, db) = blob_with_data(bs, 2, 5);
            Ctx {
                ids: vec![a, b],
                data: vec![(a, da), (b, db)],
            }
        },
        vec![
            Box::new(|bs, c| {
                let a = bs.open_blob(c.ids[0]).unwrap();
                a.resize(1).unwrap();
                a.sync_md().unwrap();
            }),
            Box::new(|bs, c| {
                let b = bs.open_blob(c.ids[1]).unwrap();
                b.resize(6).unwrap();
                b.close().unwrap();
            }),
        ],
        &|bs, c, _, _| {
            // Grown clusters read zeroes, never stale bytes.
            let b = bs.open_blob(c.ids[1]).unwrap();
            let mut ch = bs.channel().unwrap();
            if b.num_clusters() == 6 {
                let tail = b.read(&mut ch, 2 * CLUSTER, 4 * CLUSTER as usize).unwrap();
                assert!(
                    tail.iter().all(|&x| x == 0),
                    "grown clusters show old bytes"
                );
            }
        },
    );
}

#[test]
fn crash_xattr_sync_md() {
    sweep(
        "xattr+sync_md",
        4096,
        |bs| {
            let (a, da) = blob_with_data(bs, 1, 6);
            let b = bs.open_blob(a).unwrap();
            b.set_xattr("keep", b"v1").unwrap();
            b.set_xattr("gone", b"x").unwrap();
            b.close().unwrap();
            Ctx {
                ids: vec![a],
                data: vec![(a, da)],
            }
        },
        vec![Box::new(|bs, c| {
            let b = bs.open_blob(c.ids[0]).unwrap();
            b.set_xattr("keep", &pattern(9, 5000)).unwrap();
            b.remove_xattr("gone").unwrap();
            b.set_internal_xattr("i1", b"internal").unwrap();
            b.sync_md().unwrap();
        })],
        &no_verify,
    );
}

#[test]
fn crash_thin_write_sync_md() {
    sweep(
        "thin write+sync_md",
        512,
        |bs| {
            let id = bs
                .create_blob(CreateOptions {
                    num_clusters: 8,
                    thin: true,
                    ..Default::default()
                })
                .unwrap();
            Ctx {
                ids: vec![id],
                data: vec![],
            }
        },
        vec![Box::new(|bs, c| {
            let b = bs.open_blob(c.ids[0]).unwrap();
            let mut ch = bs.channel().unwrap();
            b.write(&mut ch, 2 * CLUSTER + 4096, &pattern(7, 8192))
                .unwrap();
            b.write(&mut ch, 5 * CLUSTER, &pattern(8, CLUSTER as usize))
                .unwrap();
            b.sync_md().unwrap();
        })],
        &|bs, c, after, final_point| {
            let b = bs.open_blob(c.ids[0]).unwrap();
            let mut ch = bs.channel().unwrap();
            let all = b.read(&mut ch, 0, 8 * CLUSTER as usize).unwrap();
            let mut expect = vec![0u8; all.len()];
            let w1 = 2 * CLUSTER as usize + 4096;
            expect[w1..w1 + 8192].copy_from_slice(&pattern(7, 8192));
            let w2 = 5 * CLUSTER as usize;
            expect[w2..w2 + CLUSTER as usize].copy_from_slice(&pattern(8, CLUSTER as usize));
            if final_point {
                assert_eq!(all, expect, "synced thin data differs");
            }
            // Block by block: zero or the written bytes, never 0xEE.
            for (i, (g, e)) in all.chunks(512).zip(expect.chunks(512)).enumerate() {
                assert!(
                    g.iter().all(|&x| x == 0) || g == e,
                    "block {i} shows foreign bytes (after={after})"
                );
            }
        },
    );
}

#[test]
fn crash_transaction() {
    sweep(
        "transaction",
        4096,
        |bs| {
            let dir = bs
                .create_blob(CreateOptions {
                    num_clusters: 1,
                    thin: true,
                    ..Default::default()
                })
                .unwrap();
            let (old, dold) = blob_with_data(bs, 2, 10);
            let (keep, dkeep) = blob_with_data(bs, 1, 11);
            Ctx {
                ids: vec![dir, old, keep],
                data: vec![(old, dold), (keep, dkeep)],
            }
        },
        vec![Box::new(|bs, c| {
            bs.transaction(|t| {
                let new = t.create(CreateOptions {
                    num_clusters: 2,
                    ..Default::default()
                })?;
                t.set_xattr(c.ids[0], "entry", &new.to_le_bytes());
                t.delete(c.ids[1]);
                t.set_super_blob(Some(c.ids[0]));
                Ok(())
            })
            .unwrap();
        })],
        &no_verify,
    );
}

#[test]
fn crash_checkpoint_and_log_wrap() {
    // Enough commits to link segments and take threshold checkpoints inside the swept window.
    sweep(
        "many creates (links, checkpoint)",
        4096,
        |bs| {
            let (a, da) = blob_with_data(bs, 1, 12);
            let generation = bs.superblock().unwrap().generation;
            Ctx {
                ids: vec![a, generation],
                data: vec![(a, da)],
            }
        },
        (0..20u64)
            .map(|i| -> Box<dyn Fn(&BlobStore, &Ctx)> {
                Box::new(move |bs, c| {
                    // Records of 2.2 pages: each takes a 4-page segment (two do not fit),
                    // so the log links every record and passes the checkpoint threshold (64
                    // pages) within the window.
                    bs.create_blob(CreateOptions {
                        num_clusters: 0,
                        thin: true,
                        xattrs: vec![("x".into(), pattern(i, 9000))],
                    })
                    .unwrap();
                    if i == 19 {
                        assert!(bs.superblock().unwrap().generation > c.ids[1]);
                    }
                })
            })
            .collect(),
        &no_verify,
    );
}

#[test]
fn crash_snapshot_then_merge() {
    sweep(
        "snapshot, clone write, delete-merge",
        4096,
        |bs| {
            // Its data changes in step 2, so the generic synced-data check does not apply;
            // `verify` checks old-or-new instead.
            let (a, _) = blob_with_data(bs, 3, 13);
            Ctx {
                ids: vec![a],
                data: vec![],
            }
        },
        vec![
            Box::new(|bs, c| {
                bs.snapshot(c.ids[0]).unwrap();
            }),
            Box::new(|bs, c| {
                let b = bs.open_blob(c.ids[0]).unwrap();
                let mut ch = bs.channel().unwrap();
                b.write(&mut ch, CLUSTER, &pattern(14, 4096)).unwrap();
                b.close().unwrap();
            }),
            Box::new(|bs, c| {
                let sid = bs.open_blob(c.ids[0]).unwrap().parent();
                bs.delete_blob(sid).unwrap();
            }),
        ],
        &|bs, c, _, _| {
            // Whatever survived, blob 1 reads its data with the 4 KiB patch or without it.
            let b = bs.open_blob(c.ids[0]).unwrap();
            let mut ch = bs.channel().unwrap();
            let got = b.read(&mut ch, 0, 3 * CLUSTER as usize).unwrap();
            let old = pattern(13, 3 * CLUSTER as usize);
            let mut patched = old.clone();
            patched[CLUSTER as usize..CLUSTER as usize + 4096].copy_from_slice(&pattern(14, 4096));
            assert!(
                got == old || got == patched,
                "blob data is neither old nor new"
            );
        },
    );
}

/// Deferred commits (`Txn::commit_deferred`, `Blob::commit_md_deferred`): no flush of their
/// own. At every crash point the store holds the state after a prefix of them, in commit order
/// (each whole or absent); once `BlobStore::flush` returned, all of them, in every image.
/// Includes a deferred delete, whose clusters must not be reused (a later create maps new
/// clusters) before the flush.
#[test]
fn crash_deferred_commits_form_a_prefix() {
    let base = dev(2, 4096);
    let crash = CrashDevice::new(base).unwrap();
    let d: Arc<dyn BlockDevice> = crash.clone();
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let (a, _) = blob_with_data(&bs, 2, 41);
    let (b, _) = blob_with_data(&bs, 1, 42);
    crash.mark();
    let mut states = vec![state(&bs)];
    bs.transaction_with(oxblob_blobstore::Durability::Deferred, |t| {
        t.set_xattr(a, "k", b"1");
        Ok(())
    })
    .unwrap();
    states.push(state(&bs));
    let mut t = bs.begin();
    t.delete(b);
    t.commit_deferred().unwrap();
    states.push(state(&bs));
    let blob = bs.open_blob(a).unwrap();
    blob.set_xattr("k", b"2").unwrap();
    blob.resize(1).unwrap();
    blob.commit_md_deferred().unwrap();
    blob.close().unwrap();
    states.push(state(&bs));
    let mut t = bs.begin();
    t.create(CreateOptions {
        num_clusters: 2,
        ..Default::default()
    })
    .unwrap();
    t.commit_deferred().unwrap();
    states.push(state(&bs));
    let before_flush = crash.history_len();
    bs.flush().unwrap();
    let flushed = crash.history_len();
    assert!(flushed > before_flush);
    let last = states.len() - 1;
    for p in 0..=flushed {
        for (mode, seed) in variants(flushed + 1) {
            let img = crash.image_at(p, seed, mode).unwrap();
            let r = catch_unwind(AssertUnwindSafe(|| {
                let bs2 = load(&img);
                let s = state(&bs2);
                let k = states.iter().position(|x| *x == s);
                assert!(k.is_some(), "not a prefix of the deferred commits: {s:#?}");
                if p == flushed {
                    assert_eq!(k, Some(last), "flush returned but a commit is missing");
                }
                check_invariants(&bs2);
            }));
            if let Err(e) = r {
                let msg = oxblob_sim::panic_message(e.as_ref());
                panic!(
                    "deferred: crash at point {p}/{flushed}, mode {mode:?}, seed {seed:#x}: {msg}"
                );
            }
        }
    }
}

//! Device errors during metadata operations: the call fails with `Io`, the in-memory state is
//! unchanged (except a failed flush after a written record: the store retries through a
//! checkpoint and the call succeeds, durable), the store keeps working, and a reload finds the state before or after the
//! operation (never a mix), with no cluster owned twice or leaked.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;
use common::*;
use oxblob_bdev::BlockDevice;
use oxblob_blobstore::{BlobStore, BsError, CreateOptions};
use oxblob_sim::{ErrorDevice, Fault};
use std::sync::Arc;

type Op = dyn Fn(&BlobStore, &[u64]) -> Result<(), BsError>;

/// The blob list with the ids of blobs created by the op blanked: a failed create consumes its
/// id (the failed record might still replay after a crash, so the id must never be reused).
fn blobs(bs: &BlobStore, setup_ids: &[u64]) -> Vec<oxblob_blobstore::BlobInfo> {
    bs.blobs()
        .unwrap()
        .into_iter()
        .map(|mut b| {
            if !setup_ids.contains(&b.id) {
                b.id = 0;
            }
            b
        })
        .collect()
}

fn setup(bs: &BlobStore) -> Vec<u64> {
    let a = bs
        .create_blob(CreateOptions {
            num_clusters: 2,
            ..Default::default()
        })
        .unwrap();
    let b = bs
        .create_blob(CreateOptions {
            num_clusters: 4,
            thin: true,
            ..Default::default()
        })
        .unwrap();
    let c = bs
        .create_blob(CreateOptions {
            num_clusters: 1,
            ..Default::default()
        })
        .unwrap();
    vec![a, b, c]
}

/// Runs `op` once without faults (the reference), then once per request it makes with that
/// request failing. `single` says the op is one call (its failure must leave memory unchanged);
/// composite ops (resize then sync) only promise that disk holds before or after.
fn each_failure(name: &str, single: bool, op: &Op) {
    let mut requests = 0;
    let mut after_ref = None;
    for n in 0u64.. {
        let base = dev(4, 4096);
        let err = ErrorDevice::new(Arc::clone(&base));
        let d: Arc<dyn BlockDevice> = err.clone();
        let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
        let ids = setup(&bs);
        let before = state(&bs);
        let faults = err.faults();
        let seen0 = faults.requests_seen();
        if n > 0 {
            faults.arm(Fault::nth(n));
        }
        let r = op(&bs, &ids);
        faults.disarm_all();
        if n == 0 {
            r.unwrap();
            requests = faults.requests_seen() - seen0;
            after_ref = Some(blobs(&bs, &ids));
            assert!(
                requests >= 2,
                "{name}: the op made too few requests to test"
            );
            continue;
        }
        let after_ref = after_ref.clone().unwrap();
        let ctx = format!("{name}: request {n} of {requests} failed");
        match r {
            Err(BsError::Io(_)) => {}
            Ok(()) if n == requests => {
                // The failed request was the flush after the record: the record is already
                // applied, and the store makes it durable through a checkpoint (a new epoch)
                // instead of failing the call. The operation must then be durable.
                assert_eq!(blobs(&bs, &ids), after_ref, "{ctx}: retried commit differs");
                drop(bs);
                let bs = load(&base);
                assert_eq!(blobs(&bs, &ids), after_ref, "{ctx}: reload differs");
                check_invariants(&bs);
                break;
            }
            other => panic!("{ctx}: expected an I/O error, got {other:?}"),
        }
        if single {
            assert_eq!(state(&bs), before, "{ctx}: in-memory state changed");
        }
        // What a crash right now would find: before or after, never a mix.
        let ro = BlobStore::load(
            Arc::clone(&base),
            oxblob_blobstore::LoadOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{ctx}: load after the failure: {e:?}"));
        let on_disk = state(&ro);
        assert!(
            on_disk == before || blobs(&ro, &ids) == after_ref,
            "{ctx}: disk holds neither before nor after: {on_disk:#?}"
        );
        drop(ro);
        // The store keeps working: the same operation now succeeds, nothing leaks.
        op(&bs, &ids).unwrap_or_else(|e| panic!("{ctx}: retry failed: {e:?}"));
        assert_eq!(blobs(&bs, &ids), after_ref, "{ctx}: retry result differs");
        check_invariants(&bs);
        drop(bs);
        let bs = load(&base);
        assert_eq!(blobs(&bs, &ids), after_ref, "{ctx}: reload differs");
        check_invariants(&bs);
        if n == requests {
            break;
        }
    }
}

#[test]
fn io_error_in_create() {
    each_failure("create", true, &|bs, _| {
        bs.create_blob(CreateOptions {
            num_clusters: 2,
            thin: false,
            xattrs: vec![("k".into(), b"v".to_vec())],
        })
        .map(|_| ())
    });
}

#[test]
fn io_error_in_delete() {
    each_failure("delete", true, &|bs, ids| bs.delete_blob(ids[0]));
}

#[test]
fn io_error_in_resize_sync() {
    each_failure("resize+sync", false, &|bs, ids| {
        let b = bs.open_blob(ids[0])?;
        if b.num_clusters() != 5 {
            b.resize(5)?;
        }
        b.sync_md()
    });
}

#[test]
fn io_error_in_thin_write_sync() {
    each_failure("thin write+sync", false, &|bs, ids| {
        let b = bs.open_blob(ids[1])?;
        let mut ch = bs.channel()?;
        b.write(&mut ch, CLUSTER, &pattern(3, 8192))?;
        b.sync_md()
    });
}

#[test]
fn io_error_in_transaction() {
    each_failure("transaction", true, &|bs, ids| {
        bs.transaction(|t| {
            t.create(CreateOptions {
                num_clusters: 1,
                ..Default::default()
            })?;
            t.set_xattr(ids[1], "entry", b"x");
            t.delete(ids[2]);
            Ok(())
        })
    });
}

//! Blobstore behaviour on the malloc device: lifecycle, data byte for byte, xattrs, thin
//! provisioning, transactions, typed errors, reload with and without unload.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;
use common::*;
use oxblob_bdev::{blocking, BlockDevice, IoBuf};
use oxblob_blobstore::{BlobStore, BsCompletion, BsError, CreateOptions, InitOptions, LoadOptions};
use oxblob_format::Superblock;
use std::sync::Arc;

fn thick(n: u64) -> CreateOptions {
    CreateOptions {
        num_clusters: n,
        ..Default::default()
    }
}

fn thin(n: u64) -> CreateOptions {
    CreateOptions {
        num_clusters: n,
        thin: true,
        ..Default::default()
    }
}

#[test]
fn init_unload_load_empty() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let total = bs.total_clusters();
    assert!(total > 200);
    assert_eq!(bs.free_clusters().unwrap(), total);
    assert_eq!(bs.cluster_size(), CLUSTER);
    bs.unload().unwrap();
    assert!(matches!(bs.free_clusters(), Err(BsError::Unloaded)));
    let bs = load(&d);
    assert_eq!(bs.total_clusters(), total);
    assert!(bs.blobs().unwrap().is_empty());
    assert_eq!(bs.super_blob().unwrap(), None);
}

#[test]
fn data_round_trip_across_clusters_many_in_flight() {
    for block in [512u32, 4096] {
        let d = dev(16, block);
        let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
        let id = bs.create_blob(thick(8)).unwrap();
        let blob = bs.open_blob(id).unwrap();
        let mut ch = bs.channel().unwrap();
        let size = blob.size_bytes() as usize;
        let image = pattern(u64::from(block), size);
        // 64 writes of 8 KiB at odd offsets, all in flight at once; some cross clusters.
        let chunk = 8192usize;
        for (i, off) in (0..size).step_by(chunk).enumerate() {
            let buf = IoBuf::from_slice(&image[off..off + chunk]);
            blob.submit_write(&mut ch, off as u64, buf, i as u64)
                .unwrap();
        }
        let mut done: Vec<BsCompletion> = Vec::new();
        while ch.in_flight() > 0 {
            ch.poll(&mut done, 1).unwrap();
        }
        assert_eq!(done.len(), size / chunk);
        assert!(done.iter().all(|c| c.result.is_ok()));
        // Unaligned-to-cluster reads (cross boundaries), via readv with uneven buffers.
        let off = CLUSTER - 3 * u64::from(block);
        let bufs = vec![
            IoBuf::zeroed(block as usize),
            IoBuf::zeroed(5 * block as usize),
        ];
        blob.submit_readv(&mut ch, off, bufs, 77).unwrap();
        let mut out = Vec::new();
        ch.poll(&mut out, 1).unwrap();
        assert_eq!(out[0].token, 77);
        let got: Vec<u8> = out
            .pop()
            .unwrap()
            .bufs
            .iter()
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(got, &image[off as usize..off as usize + 6 * block as usize]);
        assert_eq!(blob.read(&mut ch, 0, size).unwrap(), image);
        // A writev straddling three clusters.
        let off = CLUSTER - u64::from(block);
        let data = pattern(99, 2 * CLUSTER as usize);
        let bufs = vec![
            IoBuf::from_slice(&data[..block as usize]),
            IoBuf::from_slice(&data[block as usize..]),
        ];
        blob.submit_writev(&mut ch, off, bufs, 5).unwrap();
        let mut out = Vec::new();
        ch.poll(&mut out, 1).unwrap();
        assert!(out[0].result.is_ok());
        assert_eq!(blob.read(&mut ch, off, data.len()).unwrap(), data);
        blob.close().unwrap();
        bs.unload().unwrap();
        let bs = load(&d);
        let blob = bs.open_blob(id).unwrap();
        let mut ch = bs.channel().unwrap();
        let mut expect = image.clone();
        expect[off as usize..off as usize + data.len()].copy_from_slice(&data);
        assert_eq!(blob.read(&mut ch, 0, size).unwrap(), expect);
    }
}

/// A request over clusters that lie side by side on the device is one device I/O; where
/// they do not, it is split at the gap. Bytes are exact either way, through uneven vectored
/// buffers, and after a reload.
#[test]
fn adjacent_clusters_make_one_device_io_and_gaps_split_it() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    drop(bs);
    let counting = oxblob_sim::CountingDevice::new(Arc::clone(&d));
    let cd: Arc<dyn BlockDevice> = counting.clone();
    let bs = BlobStore::load(Arc::clone(&cd), LoadOptions::default()).unwrap();
    let (a, b) = (
        bs.create_blob(thin(4)).unwrap(),
        bs.create_blob(thin(1)).unwrap(),
    );
    let (a, b) = (bs.open_blob(a).unwrap(), bs.open_blob(b).unwrap());
    let mut ch = bs.channel().unwrap();
    let cs = CLUSTER as usize;
    // a's clusters 0 and 1 allocated together (adjacent), then b's, then a's 2 and 3: a's
    // layout on the device is [0 1] gap [2 3].
    let image = pattern(41, 4 * cs);
    a.write(&mut ch, 0, &image[..2 * cs]).unwrap();
    b.write(&mut ch, 0, &pattern(42, cs)).unwrap();
    a.write(&mut ch, 2 * CLUSTER, &image[2 * cs..]).unwrap();
    let read_across = |from: usize, to: usize, ch: &mut oxblob_blobstore::BsChannel| {
        let c0 = counting.counts();
        // Uneven buffers: 3 blocks, then the rest.
        let bufs = vec![IoBuf::zeroed(3 * 4096), IoBuf::zeroed(to - from - 3 * 4096)];
        a.submit_readv(ch, from as u64, bufs, 9).unwrap();
        let mut out = Vec::new();
        while out.is_empty() {
            ch.poll(&mut out, 1).unwrap();
        }
        let c = out.pop().unwrap();
        assert!(c.result.is_ok());
        let got: Vec<u8> = c.bufs.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(got, &image[from..to]);
        counting.counts().reads - c0.reads
    };
    // Across the adjacent pair: one read. Across the gap: two.
    assert_eq!(read_across(4096, 2 * cs - 4096, &mut ch), 1);
    assert_eq!(read_across(cs, 3 * cs, &mut ch), 2);
    assert_eq!(read_across(0, 4 * cs, &mut ch), 2);
    // A write across the adjacent pair is one device write too.
    let c0 = counting.counts();
    let patch = pattern(43, cs + 8192);
    a.write(&mut ch, CLUSTER / 2, &patch).unwrap();
    assert_eq!(counting.counts().writes - c0.writes, 1);
    let mut want = image.clone();
    want[cs / 2..cs / 2 + patch.len()].copy_from_slice(&patch);
    assert_eq!(a.read(&mut ch, 0, 4 * cs).unwrap(), want);
    drop(ch);
    let id = a.id();
    a.close().unwrap();
    b.close().unwrap();
    bs.unload().unwrap();
    let bs = load(&d);
    let a = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    assert_eq!(a.read(&mut ch, 0, 4 * cs).unwrap(), want);
}

/// A new store whose first `n` clusters hold old bytes (0xAA): a thick blob written and then
/// deleted, every cluster free again.
fn store_with_stale_clusters(n: u64) -> (Arc<dyn BlockDevice>, BlobStore) {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let old = bs.create_blob(thick(n)).unwrap();
    let b = bs.open_blob(old).unwrap();
    let mut ch = bs.channel().unwrap();
    b.write(&mut ch, 0, &vec![0xAA; (n * CLUSTER) as usize])
        .unwrap();
    b.close().unwrap();
    bs.delete_blob(old).unwrap();
    (d, bs)
}

/// `write_buf_within`: a new cluster is zeroed before the write and from its end up to the
/// caller's valid end; past that it is not written at all (the old bytes stay), which is
/// the point: an append costs no write of zeroes.
#[test]
fn writes_within_a_valid_end_zero_only_what_the_caller_may_read() {
    let (_d, bs) = store_with_stale_clusters(4);
    let mut ch = bs.channel().unwrap();
    let id = bs.create_blob(thin(8)).unwrap();
    let b = bs.open_blob(id).unwrap();
    let c = CLUSTER as usize;
    // Cluster 1: valid end at 3 blocks past the write's end; cluster 2: an append (the
    // valid end is where the write starts).
    let data = pattern(5, 8192);
    let at = CLUSTER + 4 * 4096;
    b.write_buf_within(
        &mut ch,
        at,
        IoBuf::from_slice(&data),
        at + 8192 + 3 * 4096 - 100,
    )
    .unwrap();
    let app = pattern(6, 4096);
    b.write_buf_within(&mut ch, 2 * CLUSTER, IoBuf::from_slice(&app), 2 * CLUSTER)
        .unwrap();
    assert_eq!(b.allocated_clusters(), 2);
    let got = b.read(&mut ch, CLUSTER, 2 * c).unwrap();
    assert!(
        got[..4 * 4096].iter().all(|&x| x == 0),
        "zeroed before the write"
    );
    assert_eq!(&got[4 * 4096..6 * 4096], &data[..]);
    // Up to the valid end, rounded up to the io unit: zeroes; past it, untouched.
    assert!(got[6 * 4096..9 * 4096].iter().all(|&x| x == 0));
    assert!(got[9 * 4096..c].iter().all(|&x| x == 0xAA));
    assert_eq!(&got[c..c + 4096], &app[..]);
    assert!(got[c + 4096..].iter().all(|&x| x == 0xAA));
    // A plain write still zeroes its whole new cluster.
    b.write(&mut ch, 3 * CLUSTER + 4096, &app).unwrap();
    let got = b.read(&mut ch, 3 * CLUSTER, c).unwrap();
    assert!(got[..4096].iter().all(|&x| x == 0));
    assert_eq!(&got[4096..8192], &app[..]);
    assert!(got[8192..].iter().all(|&x| x == 0));
}

#[test]
fn thin_blobs_allocate_on_write_and_read_zeroes() {
    let (d, bs) = store_with_stale_clusters(4);
    let free0 = bs.total_clusters();
    assert_eq!(bs.free_clusters().unwrap(), free0);
    let mut ch = bs.channel().unwrap();

    let id = bs.create_blob(thin(100)).unwrap();
    assert_eq!(bs.free_clusters().unwrap(), free0);
    let b = bs.open_blob(id).unwrap();
    assert_eq!(
        b.read(&mut ch, 0, 3 * CLUSTER as usize).unwrap(),
        vec![0; 3 * CLUSTER as usize]
    );
    b.write(
        &mut ch,
        5 * CLUSTER + 4096,
        b"hello thin world".repeat(256).as_slice(),
    )
    .unwrap();
    assert_eq!(b.allocated_clusters(), 1);
    assert_eq!(bs.free_clusters().unwrap(), free0 - 1);
    // The rest of the newly allocated cluster is zero, not 0xAA.
    let c = b.read(&mut ch, 5 * CLUSTER, CLUSTER as usize).unwrap();
    assert!(c[..4096].iter().all(|&x| x == 0));
    assert_eq!(
        &c[4096..4096 + 4096],
        b"hello thin world".repeat(256).as_slice()
    );
    assert!(c[8192..].iter().all(|&x| x == 0));
    assert!(b.is_dirty());
    b.sync_md().unwrap();
    assert!(!b.is_dirty());
    drop(b);
    // Crash-like reload (no unload): the synced mapping and data survive.
    drop(bs);
    let bs = load(&d);
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    assert_eq!(b.allocated_clusters(), 1);
    assert_eq!(
        &b.read(&mut ch, 5 * CLUSTER + 4096, 4096).unwrap(),
        b"hello thin world".repeat(256).as_slice()
    );
    check_invariants(&bs);
}

#[test]
fn xattrs_read_only_and_reload() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let id = bs
        .create_blob(CreateOptions {
            num_clusters: 2,
            thin: false,
            xattrs: vec![("name".into(), b"a.sst".to_vec())],
        })
        .unwrap();
    let b = bs.open_blob(id).unwrap();
    assert_eq!(b.get_xattr("name").unwrap(), b"a.sst");
    b.set_xattr("len", &42u64.to_le_bytes()).unwrap();
    b.set_xattr("big", &vec![7u8; 65536]).unwrap();
    b.set_internal_xattr("i1", b"internal").unwrap();
    assert_eq!(b.xattr_names(), vec!["big", "len", "name"]);
    assert!(b.remove_xattr("name").unwrap());
    assert!(!b.remove_xattr("name").unwrap());
    assert!(matches!(
        b.set_xattr("", b"x"),
        Err(BsError::InvalidArgument(_))
    ));
    assert!(matches!(
        b.set_xattr(&"n".repeat(256), b"x"),
        Err(BsError::InvalidArgument(_))
    ));
    assert!(matches!(
        b.set_xattr("v", &vec![0; 65537]),
        Err(BsError::InvalidArgument(_))
    ));
    b.set_read_only().unwrap();
    assert!(matches!(b.set_xattr("x", b"y"), Err(BsError::ReadOnly)));
    assert!(matches!(b.resize(5), Err(BsError::ReadOnly)));
    let mut ch = bs.channel().unwrap();
    assert!(matches!(
        b.write(&mut ch, 0, &[0; 4096]),
        Err(BsError::ReadOnly)
    ));
    b.close().unwrap();
    let before = state(&bs);
    bs.unload().unwrap();
    let bs = load(&d);
    assert_eq!(state(&bs), before);
    let b = bs.open_blob(id).unwrap();
    assert!(b.is_read_only());
    assert_eq!(b.get_xattr("big").unwrap(), vec![7u8; 65536]);
    assert_eq!(b.get_internal_xattr("i1").unwrap(), b"internal");
    assert_eq!(b.get_xattr("name"), None);
}

#[test]
fn resize_grow_shrink_and_deferred_free() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let free0 = bs.free_clusters().unwrap();
    let id = bs.create_blob(thick(4)).unwrap();
    let b = bs.open_blob(id).unwrap();
    b.resize(10).unwrap();
    assert_eq!(b.allocated_clusters(), 10);
    assert_eq!(bs.free_clusters().unwrap(), free0 - 10);
    b.sync_md().unwrap();
    b.resize(3).unwrap();
    // Shrunk in memory only: the durable record still names them, so they are not reusable.
    assert_eq!(bs.free_clusters().unwrap(), free0 - 10);
    b.sync_md().unwrap();
    assert_eq!(bs.free_clusters().unwrap(), free0 - 3);
    // A resize to the size it has changes nothing, so there is nothing to sync.
    assert!(!b.is_dirty());
    b.resize(3).unwrap();
    assert!(!b.is_dirty());
    assert_eq!((b.num_clusters(), b.allocated_clusters()), (3, 3));
    // Grow then shrink before any sync: never durable, freed at once.
    b.resize(6).unwrap();
    b.resize(3).unwrap();
    assert_eq!(bs.free_clusters().unwrap(), free0 - 3);
    // Grow, then shrink below the durable size: the never-durable clusters are freed at
    // once, the one the durable record still names waits for the next sync.
    b.resize(8).unwrap();
    b.resize(2).unwrap();
    assert_eq!(bs.free_clusters().unwrap(), free0 - 3);
    b.sync_md().unwrap();
    assert_eq!(bs.free_clusters().unwrap(), free0 - 2);
    b.resize(3).unwrap();
    b.sync_md().unwrap();
    b.resize(5).unwrap();
    drop(b); // not synced: the resize to 5 is lost on a crash
    drop(bs);
    let bs = load(&d);
    let b = bs.open_blob(id).unwrap();
    assert_eq!(b.num_clusters(), 3);
    assert_eq!(bs.free_clusters().unwrap(), free0 - 3);
    check_invariants(&bs);
}

#[test]
fn typed_errors() {
    let d = dev(16, 4096);
    // Blank device.
    assert!(matches!(
        BlobStore::load(Arc::clone(&d), LoadOptions::default()),
        Err(BsError::NotABlobstore)
    ));
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    assert!(matches!(bs.open_blob(999), Err(BsError::NotFound(999))));
    assert!(matches!(bs.delete_blob(999), Err(BsError::NotFound(999))));
    assert!(matches!(
        bs.set_super_blob(Some(5)),
        Err(BsError::NotFound(5))
    ));
    let id = bs.create_blob(thick(1)).unwrap();
    let b = bs.open_blob(id).unwrap();
    assert!(matches!(bs.delete_blob(id), Err(BsError::BlobOpen(x)) if x == id));
    let mut ch = bs.channel().unwrap();
    assert!(matches!(
        b.read(&mut ch, 1, 4096),
        Err(BsError::InvalidArgument(_))
    ));
    assert!(matches!(
        b.read(&mut ch, 0, 100),
        Err(BsError::InvalidArgument(_))
    ));
    assert!(matches!(
        b.read(&mut ch, CLUSTER - 4096, 8192),
        Err(BsError::InvalidArgument(_))
    ));
    let r = b
        .submit_write(&mut ch, CLUSTER, IoBuf::zeroed(4096), 1)
        .unwrap_err();
    assert!(matches!(r.error, BsError::InvalidArgument(_)));
    assert_eq!(r.bufs.len(), 1, "the buffer comes back");
    drop(b);
    bs.unload().unwrap();
    // Wrong bstype; an all-zero bstype is a wildcard.
    assert!(matches!(
        BlobStore::load(
            Arc::clone(&d),
            LoadOptions {
                bstype: oxblob_blobstore::bstype("OTHER"),
                read_only: false
            }
        ),
        Err(BsError::WrongType { .. })
    ));
    // Bad init options.
    let d2 = dev(1, 4096);
    assert!(matches!(
        BlobStore::init(
            Arc::clone(&d2),
            InitOptions {
                cluster_size: 3 << 16,
                ..small_opts()
            }
        ),
        Err(BsError::InvalidArgument(_))
    ));
    assert!(matches!(
        BlobStore::init(
            Arc::clone(&d2),
            InitOptions {
                md_pages: Some(400),
                ..small_opts()
            }
        ),
        Err(BsError::DeviceTooSmall(_))
    ));
}

fn rewrite_superblocks(d: &Arc<dyn BlockDevice>, f: impl Fn(&mut Superblock)) {
    let mut ch = d.channel().unwrap();
    for slot in 0..2u64 {
        let p = blocking::read(ch.as_mut(), slot * 4096, 4096).unwrap();
        if let Ok(mut sb) = Superblock::decode(&p) {
            f(&mut sb);
            blocking::write_slice(ch.as_mut(), slot * 4096, &sb.encode().unwrap()).unwrap();
        }
    }
}

/// A store written before packed logs (no `PACKED_LOG` bit: one record per page) still
/// replays every record, and its first writable load moves it to a packed log.
#[test]
fn page_aligned_log_of_an_older_store_replays() {
    use oxblob_format::record::{encode_record, encode_txn, Mutation, RecordKind};
    use oxblob_format::superblock::INCOMPAT_PACKED_LOG;
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let ids: Vec<u64> = (0..3).map(|_| bs.create_blob(thick(1)).unwrap()).collect();
    bs.unload().unwrap();
    rewrite_superblocks(&d, |sb| sb.incompat &= !INCOMPAT_PACKED_LOG);
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    assert!(!ins.packed && ins.log.is_empty());
    let sb = ins.superblock;
    // Two records, each on a page of its own, as an older build wrote them.
    let mut ch = d.channel().unwrap();
    for (k, muts) in [
        vec![Mutation::SetSuperBlob(Some(ids[0]))],
        vec![
            Mutation::SetSuperBlob(Some(ids[1])),
            Mutation::DeleteBlob(ids[2]),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let rec = encode_record(
            sb.store_id,
            sb.generation,
            ins.next_seq + k as u64,
            RecordKind::Txn,
            &encode_txn(&muts).unwrap(),
        )
        .unwrap();
        assert_eq!(rec.len(), 4096);
        let at = (sb.log_first_page + k as u64) * 4096;
        blocking::write_slice(ch.as_mut(), at, &rec).unwrap();
    }
    blocking::flush(ch.as_mut()).unwrap();
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    assert_eq!(ins.log.len(), 2, "{}", ins.stop_reason);
    assert_eq!(ins.tail_offset, (sb.log_first_page + 2) * 4096);
    // Read-only: replayed, nothing written.
    let ro = load_read_only(&d).unwrap();
    assert_eq!(ro.super_blob().unwrap(), Some(ids[1]));
    assert!(matches!(ro.open_blob(ids[2]), Err(BsError::NotFound(_))));
    drop(ro);
    // Writable: the same state, now on a packed log that survives a crash.
    let bs = load(&d);
    assert_eq!(bs.super_blob().unwrap(), Some(ids[1]));
    assert!(bs.superblock().unwrap().incompat & INCOMPAT_PACKED_LOG != 0);
    let new = bs.create_blob(thick(1)).unwrap();
    let more = bs.create_blob(thick(2)).unwrap();
    drop(bs);
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    assert!(ins.packed);
    assert_eq!(ins.log.len(), 2);
    assert_eq!(
        ins.log[1].offset - ins.log[0].offset,
        ins.log[0].header.packed_len(),
        "the second record follows the first in the same page"
    );
    assert_eq!(ins.log[0].page, ins.log[1].page);
    let bs = load(&d);
    assert_eq!(bs.super_blob().unwrap(), Some(ids[1]));
    assert_eq!(bs.open_blob(new).unwrap().num_clusters(), 1);
    assert_eq!(bs.open_blob(more).unwrap().num_clusters(), 2);
    assert!(matches!(bs.open_blob(ids[2]), Err(BsError::NotFound(_))));
}

#[test]
fn feature_flags_and_damaged_superblocks() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let id = bs.create_blob(thick(1)).unwrap();
    bs.unload().unwrap();
    rewrite_superblocks(&d, |sb| sb.compat = 1 << 9);
    let bs = load(&d);
    assert!(!bs.is_read_only());
    bs.unload().unwrap();
    rewrite_superblocks(&d, |sb| sb.ro_compat = 1 << 3);
    let bs = load(&d);
    assert!(bs.is_read_only());
    assert!(matches!(bs.create_blob(thick(1)), Err(BsError::ReadOnly)));
    let b = bs.open_blob(id).unwrap();
    let mut ch = bs.channel().unwrap();
    assert!(matches!(
        b.write(&mut ch, 0, &[1; 4096]),
        Err(BsError::ReadOnly)
    ));
    assert_eq!(b.read(&mut ch, 0, 4096).unwrap(), vec![0; 4096]);
    drop(b);
    rewrite_superblocks(&d, |sb| {
        sb.ro_compat = 0;
        sb.incompat = 1 << 5
    });
    assert!(matches!(
        BlobStore::load(Arc::clone(&d), LoadOptions::default()),
        Err(BsError::UnknownFeature { bits: 32 })
    ));
    rewrite_superblocks(&d, |sb| sb.incompat = 0);
    // Corrupt the current slot: the other (older) one is used.
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    let cur = ins.current_slot as u64;
    oxblob_sim_free_corrupt(&d, cur);
    let ins2 = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    assert_eq!(ins2.current_slot as u64, 1 - cur);
    // Corrupt both: typed checksum error.
    oxblob_sim_free_corrupt(&d, 1 - cur);
    assert!(matches!(
        BlobStore::load(Arc::clone(&d), LoadOptions::default()),
        Err(BsError::BadChecksum { .. })
    ));
}

/// Flips one byte in the middle of superblock slot `slot`.
fn oxblob_sim_free_corrupt(d: &Arc<dyn BlockDevice>, slot: u64) {
    let mut ch = d.channel().unwrap();
    let mut p = blocking::read(ch.as_mut(), slot * 4096, 4096).unwrap();
    p[100] ^= 0x5a;
    blocking::write(ch.as_mut(), slot * 4096, p).unwrap();
}

#[test]
fn no_space_leaves_everything_intact() {
    let d = dev(4, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let total = bs.total_clusters();
    let a = bs.create_blob(thick(total - 2)).unwrap();
    let t = bs.create_blob(thin(10)).unwrap();
    let before = state(&bs);
    assert!(matches!(
        bs.create_blob(thick(3)),
        Err(BsError::NoSpace { needed: 3, free: 2 })
    ));
    let ba = bs.open_blob(a).unwrap();
    assert!(matches!(ba.resize(total + 5), Err(BsError::NoSpace { .. })));
    assert_eq!(ba.num_clusters(), total - 2);
    let bt = bs.open_blob(t).unwrap();
    let mut ch = bs.channel().unwrap();
    bt.write(&mut ch, 0, &[1; 4096]).unwrap();
    bt.write(&mut ch, CLUSTER, &[2; 4096]).unwrap();
    assert!(matches!(
        bt.write(&mut ch, 2 * CLUSTER, &[3; 4096]),
        Err(BsError::NoSpace { .. })
    ));
    // A multi-cluster write needing more than is free allocates nothing.
    assert!(matches!(
        bt.write(&mut ch, 3 * CLUSTER, &vec![3; 2 * CLUSTER as usize]),
        Err(BsError::NoSpace { .. })
    ));
    assert_eq!(bt.allocated_clusters(), 2);
    assert_eq!(bs.free_clusters().unwrap(), 0);
    assert_eq!(bt.read(&mut ch, CLUSTER, 4096).unwrap(), vec![2; 4096]);
    drop((ba, bt));
    let mut after = state(&bs);
    // Only the two successful thin allocations differ.
    after.blobs[1].0.allocated_clusters = 0;
    after.blobs[1].1.clear();
    assert_eq!(after, before);
    check_invariants(&bs);
}

#[test]
fn many_records_links_and_checkpoints_survive_crash_reload() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let gen0 = bs.superblock().unwrap().generation;
    let mut ids = Vec::new();
    for i in 0..160u64 {
        let id = bs
            .create_blob(CreateOptions {
                num_clusters: i % 3,
                thin: i % 2 == 0,
                xattrs: vec![("n".into(), pattern(i, 3000 + (i as usize * 37) % 3000))],
            })
            .unwrap();
        ids.push(id);
        // Three of every four deleted: about 180 KB stay, under a quarter of the md region
        // (the most a store may grow to), after 700 KB of records.
        if i % 4 == 3 {
            for k in i - 2..=i {
                bs.delete_blob(ids[k as usize]).unwrap();
            }
        }
    }
    bs.set_super_blob(Some(ids[0])).unwrap();
    // 4-page segments and a 64-page md region: the log linked segments and checkpointed.
    assert!(bs.superblock().unwrap().generation > gen0 + 1);
    let before = state(&bs);
    drop(bs); // no unload
    let bs = load(&d);
    assert_eq!(state(&bs), before);
    check_invariants(&bs);
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    assert!(ins.log.is_empty(), "the load checkpointed the replayed log");
    // Deleting the super blob clears it.
    bs.delete_blob(ids[0]).unwrap();
    assert_eq!(bs.super_blob().unwrap(), None);
    drop(bs);
    assert_eq!(load(&d).super_blob().unwrap(), None);
}

#[test]
fn oversized_transaction_commits_through_a_checkpoint() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    // Three 64 KiB xattrs: far more than one 4-page segment (and under a quarter of the md
    // region, the most a store may grow to).
    let id = bs
        .transaction(|t| {
            let id = t.create(thin(1))?;
            for k in 0..3u64 {
                t.set_xattr(id, &format!("x{k}"), &pattern(k, 65536));
            }
            Ok(id)
        })
        .unwrap();
    drop(bs);
    let bs = load(&d);
    let b = bs.open_blob(id).unwrap();
    for k in 0..3u64 {
        assert_eq!(b.get_xattr(&format!("x{k}")).unwrap(), pattern(k, 65536));
    }
}

#[test]
fn transaction_is_all_or_nothing() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let dir = bs.create_blob(thin(1)).unwrap();
    let old = bs.create_blob(thick(2)).unwrap();
    let free = bs.free_clusters().unwrap();
    let new = bs
        .transaction(|t| {
            let new = t.create(thick(1))?;
            t.set_xattr(dir, "entry", &new.to_le_bytes());
            t.delete(old);
            t.set_super_blob(Some(dir));
            Ok(new)
        })
        .unwrap();
    assert_eq!(bs.free_clusters().unwrap(), free + 1);
    assert!(matches!(bs.open_blob(old), Err(BsError::NotFound(_))));
    // A failing transaction (delete of a missing blob) changes nothing, even its creates.
    let before = state(&bs);
    let free = bs.free_clusters().unwrap();
    let r = bs.transaction(|t| {
        t.create(thick(3))?;
        t.set_xattr(dir, "entry", b"changed");
        t.delete(old);
        Ok(())
    });
    assert!(matches!(r, Err(BsError::NotFound(x)) if x == old));
    assert_eq!(state(&bs), before);
    assert_eq!(bs.free_clusters().unwrap(), free);
    // Deleting an open blob inside a transaction fails the whole transaction.
    let h = bs.open_blob(new).unwrap();
    let r = bs.transaction(|t| {
        t.set_xattr(dir, "entry", b"x");
        t.delete(new);
        Ok(())
    });
    assert!(matches!(r, Err(BsError::BlobOpen(_))));
    drop(h);
    assert_eq!(state(&bs), before);
    drop(bs);
    let bs = load(&d);
    assert_eq!(state(&bs), before);
    let b = bs.open_blob(dir).unwrap();
    assert_eq!(b.get_xattr("entry").unwrap(), new.to_le_bytes());
    assert_eq!(bs.super_blob().unwrap(), Some(dir));
}

#[test]
fn clean_load_reads_little_and_writes_one_page() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    for _ in 0..20 {
        bs.create_blob(thin(3)).unwrap();
    }
    bs.unload().unwrap();
    let ins = oxblob_blobstore::inspect(d.as_ref()).unwrap();
    assert!(ins.log.is_empty());
    assert_eq!(ins.checkpoint.blobs.len(), 20);
    let g = ins.superblock.generation;
    let bs = load(&d);
    assert_eq!(bs.superblock().unwrap().generation, g + 1);
    assert_eq!(
        bs.superblock().unwrap().checkpoint,
        ins.superblock.checkpoint
    );
}

#[test]
fn destroy_wipes_the_superblocks() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    bs.create_blob(thick(1)).unwrap();
    bs.destroy().unwrap();
    assert!(matches!(
        BlobStore::load(Arc::clone(&d), LoadOptions::default()),
        Err(BsError::NotABlobstore)
    ));
    // A new store on the same device does not see the old one's log.
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    assert!(bs.blobs().unwrap().is_empty());
    drop(bs);
    assert!(load(&d).blobs().unwrap().is_empty());
}

/// A store driven against its metadata limit, over and over: blobs of random sizes created
/// until a create fails, then a random share deleted, for many rounds (the free space around
/// each checkpoint takes every shape). Growth past a quarter of the md region fails with
/// `NoMetadataSpace` and changes nothing; a delete never fails; a blob's xattr rewritten at
/// its own size always commits; a crash and a writable load keep the state exactly.
#[test]
fn metadata_limit_refuses_growth_and_never_blocks_deletes() {
    let d = dev(16, 4096);
    let mut bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut live: Vec<u64> = Vec::new();
    let mut refusals = 0;
    for round in 0..100u64 {
        loop {
            let len = 500 + rnd(9_000) as usize;
            let before = state(&bs);
            match bs.create_blob(CreateOptions {
                num_clusters: rnd(2),
                thin: true,
                xattrs: vec![("v".into(), pattern(round * 1_000 + live.len() as u64, len))],
            }) {
                Ok(id) => live.push(id),
                Err(BsError::NoMetadataSpace) => {
                    assert_eq!(
                        state(&bs),
                        before,
                        "round {round}: a refused create changed the store"
                    );
                    refusals += 1;
                    break;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
            assert!(live.len() < 10_000, "the md region never filled");
        }
        // Same-size rewrites commit at the limit.
        for _ in 0..5 {
            let id = live[rnd(live.len() as u64) as usize];
            let b = bs.open_blob(id).unwrap();
            let len = b.get_xattr("v").unwrap().len();
            b.set_xattr("v", &pattern(round + 7, len)).unwrap();
            b.sync_md().unwrap();
        }
        // Delete between a third and all of them.
        let keep = rnd(live.len() as u64 * 2 / 3) as usize;
        while live.len() > keep {
            let id = live.swap_remove(rnd(live.len() as u64) as usize);
            bs.delete_blob(id).unwrap();
        }
        // A crash now and then: the next load replays the log and checkpoints.
        if round % 8 == 7 {
            let before = state(&bs);
            drop(bs);
            bs = load(&d);
            assert_eq!(state(&bs), before, "round {round}: after a crash");
            check_invariants(&bs);
        }
    }
    assert!(refusals >= 7, "{refusals} refusals");
}

/// A transaction that creates blobs and deletes some of them again: the deleted ones'
/// clusters go straight back to the free pool (no record names them), the kept ones' stay
/// allocated, before and after a reload.
#[test]
fn clusters_of_blobs_created_and_deleted_in_one_transaction_are_free_again() {
    let d = dev(16, 4096);
    let bs = BlobStore::init(Arc::clone(&d), small_opts()).unwrap();
    let before = bs.free_clusters().unwrap();
    let kept = bs
        .transaction(|t| {
            let a = t.create(thick(3))?;
            let gone = t.create(thick(4))?;
            let b = t.create(thick(2))?;
            let gone2 = t.create(thick(1))?;
            t.delete(gone);
            t.delete(gone2);
            Ok([a, b])
        })
        .unwrap();
    assert_eq!(bs.free_clusters().unwrap(), before - 5);
    for (id, n) in kept.iter().zip([3u64, 2]) {
        assert_eq!(bs.open_blob(*id).unwrap().num_clusters(), n);
    }
    // The freed clusters are usable: a blob as large as what is left fits exactly.
    let rest = bs.free_clusters().unwrap();
    let big = bs.create_blob(thick(rest)).unwrap();
    assert_eq!(bs.free_clusters().unwrap(), 0);
    bs.delete_blob(big).unwrap();
    drop(bs);
    let bs = load(&d);
    assert_eq!(bs.free_clusters().unwrap(), before - 5);
}

//! Crash sweeps (`docs/fault-model.md`): every namespace and data operation runs on a
//! `CrashDevice` after a durable setup; for every history point of the operation, images a
//! power cut would leave (unflushed writes dropped, kept, or seeded drop/reorder/tear) are
//! mounted and checked: the mount succeeds, the whole tree (names, types, file contents byte
//! for byte) equals the state before or after the operation — after, once the operation
//! returned — no inode leaks (every blob is a reachable inode: orphans were reclaimed), and
//! the recovered file system takes a new operation and remounts.
//!
//! Default: every point with DropAll, KeepAll and random seeds (at least 2 per point and 64
//! per operation). `OXBLOB_FULL=1`: at least 1,000 random images per operation. Failures print (op, point, mode, seed); `OXBLOB_SEED` shifts the seeds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_bdev::{BlockDevice, IoBuf};
use oxblob_blobfs::{
    BlobFs, FsErrorKind, MkfsOptions, MountOptions, OpenFlags, DEFAULT_CACHE_BYTES,
};
use oxblob_sim::{CrashDevice, CrashMode};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

type Tree = BTreeMap<String, Option<Vec<u8>>>;

fn write_file(fs: &BlobFs, path: &str, data: &[u8]) {
    let h = fs.create(path).unwrap();
    h.write_at(0, data).unwrap();
    h.close().unwrap();
}

/// The durable starting tree: directories, an inline file, files in clusters.
fn setup(fs: &BlobFs) {
    fs.mkdir_all("/d1").unwrap();
    fs.mkdir_all("/d2/sub").unwrap();
    fs.mkdir("/d3").unwrap();
    write_file(fs, "/d1/f", &pattern(1, 150_000));
    write_file(fs, "/d1/s", &pattern(2, 1000));
    write_file(fs, "/d2/x", &pattern(3, 70_000));
    write_file(fs, "/d2/sub/y", b"why");
}

/// The modes and seeds tried at each of `points` history points: at least 60 random
/// variants per operation by default (short histories get more seeds per point), at least
/// 1,000 with `OXBLOB_FULL=1`.
fn variants(points: usize) -> Vec<(CrashMode, u64)> {
    let base = oxblob_sim::rng::seed_from_env(0xB10B_F500);
    let full = std::env::var("OXBLOB_FULL").is_ok_and(|v| v == "1");
    let budget: usize = if full { 1000 } else { 64 };
    let random = budget.div_ceil(points.max(1)).max(2) as u64;
    let mut v = vec![(CrashMode::DropAll, 0), (CrashMode::KeepAll, 0)];
    v.extend((0..random).map(|s| (CrashMode::Random, base.wrapping_add(s))));
    v
}

fn check_image(img: Arc<dyn BlockDevice>, before: &Tree, after: &Tree, done: bool, reuse: bool) {
    let fs = BlobFs::mount(Arc::clone(&img), MountOptions::default()).unwrap();
    let got = snapshot(&fs);
    if done {
        assert_eq!(&got, after, "completed operation not durable");
    } else {
        assert!(
            &got == before || &got == after,
            "state is neither before nor after:\n got {:?}\n before {:?}\n after {:?}",
            summary(&got),
            summary(before),
            summary(after)
        );
    }
    // No leaked inode: every blob is a reachable inode (orphans were reclaimed).
    let blobs = fs.store().blobs().unwrap().len();
    assert_eq!(blobs, got.len() + 1, "blobs vs inodes (root included)");
    assert_eq!(fs.statfs().unwrap().files as usize, blobs);
    if !reuse {
        return;
    }
    // The recovered file system keeps working and remounts.
    write_file(&fs, "/post-crash", b"alive");
    fs.unmount().unwrap();
    let fs = BlobFs::mount(img, MountOptions::default()).unwrap();
    let h = fs.open("/post-crash", OpenFlags::read()).unwrap();
    assert_eq!(h.read_vec(0, 10).unwrap(), b"alive");
}

fn summary(t: &Tree) -> Vec<(String, Option<usize>)> {
    t.iter()
        .map(|(k, v)| (k.clone(), v.as_ref().map(|d| d.len())))
        .collect()
}

/// A crash device holding a new file system with the setup tree, made durable, mounted
/// with `cache_bytes` of data cache.
fn crash_fs(cache_bytes: u64) -> (Arc<CrashDevice>, BlobFs) {
    let crash = CrashDevice::new(dev(8, 4096)).unwrap();
    let cdev: Arc<dyn BlockDevice> = crash.clone();
    BlobFs::mkfs(Arc::clone(&cdev), small_mkfs()).unwrap();
    let opts = MountOptions {
        cache_bytes,
        ..Default::default()
    };
    let fs = BlobFs::mount(cdev, opts).unwrap();
    setup(&fs);
    // Namespace operations and close commit deferred: a sync makes the setup durable.
    fs.sync().unwrap();
    (crash, fs)
}

/// Calls `check(point, end, mode, image)` for every image a power cut since the mark could
/// leave (every history point, `variants` each); a failure is re-raised naming `what`, the
/// point, the mode and the seed.
fn each_image(
    what: &str,
    crash: &CrashDevice,
    mut check: impl FnMut(usize, usize, CrashMode, Arc<dyn BlockDevice>),
) {
    let end = crash.history_len();
    let mut checked = 0;
    for point in 0..=end {
        for (mode, seed) in variants(end + 1) {
            let img = crash.image_at(point, seed, mode).unwrap();
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(point, end, mode, img))) {
                let msg = oxblob_sim::panic_message(e.as_ref());
                panic!("{what}: crash point {point}/{end} mode {mode:?} seed {seed:#x}: {msg}");
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
    // The sweep's size, for reports (shown with `--no-capture`).
    eprintln!(
        "{what}: {checked} crash images checked over {} points",
        end + 1
    );
}

/// Formats `d` with `mk`, mounts it with the cache off and creates `/wal`: the mount
/// options (for remounts), the mount and the file.
fn uncached_wal(
    d: &Arc<dyn BlockDevice>,
    mk: MkfsOptions,
) -> (MountOptions, BlobFs, oxblob_blobfs::FileHandle) {
    BlobFs::mkfs(Arc::clone(d), mk).unwrap();
    let opts = MountOptions {
        cache_bytes: 0,
        ..Default::default()
    };
    let fs = BlobFs::mount(Arc::clone(d), opts.clone()).unwrap();
    let h = fs.create("/wal").unwrap();
    (opts, fs, h)
}

/// Runs `op` after the setup on a crash device and checks every crash image.
fn sweep(name: &str, op: impl FnOnce(&BlobFs)) {
    sweep_cache(DEFAULT_CACHE_BYTES, name, op);
}

/// [`sweep`] on a mount with a cache of `cache_bytes`.
fn sweep_cache(cache_bytes: u64, name: &str, op: impl FnOnce(&BlobFs)) {
    let (crash, fs) = crash_fs(cache_bytes);
    let before = snapshot(&fs);
    crash.mark();
    op(&fs);
    // The operation is committed (deferred unless it fsyncs); it is durable after a later
    // sync. Before that, every crash image shows the state before or after it (a prefix).
    fs.sync().unwrap();
    let after = snapshot(&fs);
    assert_ne!(before, after, "{name}: the operation changed nothing");
    each_image(&format!("op {name}"), &crash, |point, end, mode, img| {
        check_image(
            img,
            &before,
            &after,
            point == end && mode == CrashMode::DropAll,
            mode != CrashMode::Random,
        )
    });
}

#[test]
fn crash_create() {
    sweep("create", |fs| {
        fs.create("/d1/new").unwrap().close().unwrap()
    });
}

#[test]
fn crash_append_fsync_in_clusters() {
    sweep("append+fsync", |fs| {
        let h = fs.open("/d1/f", OpenFlags::read_write()).unwrap();
        h.append(&pattern(9, 100_000)).unwrap();
        h.fsync().unwrap();
        h.close().unwrap();
    });
}

/// The append stays inside an allocated cluster: no allocation, so only the file system's
/// own flush orders the data before the size record.
#[test]
fn crash_append_fsync_within_cluster() {
    sweep("append+fsync within cluster", |fs| {
        let h = fs.open("/d1/f", OpenFlags::read_write()).unwrap();
        h.append(&pattern(12, 20_000)).unwrap();
        h.fsync().unwrap();
        h.close().unwrap();
    });
}

/// With the cache off, an I/O buffer handed over (`write_buf_at`, the RocksDB plugin's
/// appends) goes to the device as it is: here past the end, over a gap that must read as
/// zeroes, across two clusters.
#[test]
fn crash_write_buf_past_the_end_without_cache() {
    sweep_cache(0, "write_buf past the end (cache off)", |fs| {
        let h = fs.open("/d1/f", OpenFlags::read_write()).unwrap();
        let at = h.len().div_ceil(4096) * 4096 + 8192;
        h.write_buf_at(at, IoBuf::from_slice(&pattern(21, 3 * 65536)))
            .unwrap();
        h.fsync().unwrap();
        h.close().unwrap();
    });
}

#[test]
fn crash_write_fsync_inline_to_clusters() {
    sweep("inline->clusters", |fs| {
        let h = fs.open("/d1/s", OpenFlags::read_write()).unwrap();
        h.write_at(900, &pattern(10, 5000)).unwrap();
        h.fsync().unwrap();
        h.close().unwrap();
    });
}

#[test]
fn crash_write_fsync_inline() {
    sweep("inline write", |fs| {
        let h = fs.open("/d1/s", OpenFlags::read_write()).unwrap();
        h.write_at(10, b"changed in place").unwrap();
        h.fsync().unwrap();
        h.close().unwrap();
    });
}

#[test]
fn crash_truncate_shrink() {
    sweep("truncate shrink", |fs| {
        let h = fs.open("/d1/f", OpenFlags::read_write()).unwrap();
        h.truncate(70_000).unwrap();
        h.fsync().unwrap();
        h.close().unwrap();
    });
}

#[test]
fn crash_truncate_grow() {
    sweep("truncate grow", |fs| {
        let h = fs.open("/d2/x", OpenFlags::read_write()).unwrap();
        h.truncate(200_001).unwrap();
        h.fsync().unwrap();
        h.close().unwrap();
    });
}

#[test]
fn crash_unlink() {
    sweep("unlink", |fs| fs.unlink("/d2/x").unwrap());
}

#[test]
fn crash_unlink_while_open() {
    sweep("unlink while open", |fs| {
        let h = fs.open("/d1/f", OpenFlags::read_write()).unwrap();
        fs.unlink("/d1/f").unwrap();
        h.write_at(0, b"still mine").unwrap();
        assert_eq!(h.read_vec(0, 10).unwrap(), b"still mine");
        h.close().unwrap();
    });
}

#[test]
fn crash_mkdir() {
    sweep("mkdir", |fs| {
        fs.mkdir("/d2/sub/new").unwrap();
    });
}

#[test]
fn crash_rmdir() {
    sweep("rmdir", |fs| fs.rmdir("/d3").unwrap());
}

#[test]
fn crash_rename_file() {
    sweep("rename file", |fs| fs.rename("/d1/f", "/d2/g").unwrap());
}

#[test]
fn crash_rename_directory() {
    sweep("rename dir", |fs| {
        fs.rename("/d1", "/d2/sub/moved").unwrap()
    });
}

#[test]
fn crash_rename_replacing_file() {
    sweep("rename over file", |fs| {
        fs.rename("/d2/x", "/d1/s").unwrap()
    });
}

#[test]
fn crash_rename_replacing_open_file() {
    sweep("rename over open file", |fs| {
        let h = fs.open("/d1/s", OpenFlags::read()).unwrap();
        fs.rename("/d2/x", "/d1/s").unwrap();
        assert_eq!(h.read_vec(0, 1000).unwrap(), pattern(2, 1000));
        h.close().unwrap();
    });
}

#[test]
fn crash_rename_replacing_directory() {
    sweep("rename over dir", |fs| fs.rename("/d2/sub", "/d3").unwrap());
}

/// Namespace operations and `close` commit deferred (no flush): several of them, then the
/// fsync of one unrelated file. At every crash point before that fsync returned, the tree is
/// the state after some prefix of the operations, in order (never a later operation without
/// an earlier one, never half of one); from the point the fsync returned, every image
/// (dropped, kept or randomly torn unflushed writes) holds all of them.
#[test]
fn crash_deferred_ops_then_fsync_of_one_file() {
    let (crash, fs) = crash_fs(DEFAULT_CACHE_BYTES);
    crash.mark();
    type Op = Box<dyn Fn(&BlobFs)>;
    let ops: Vec<Op> = vec![
        Box::new(|fs| fs.create("/d3/a").unwrap().close().unwrap()),
        Box::new(|fs| {
            fs.mkdir("/d3/n").unwrap();
        }),
        Box::new(|fs| fs.rename("/d1/s", "/d3/n/s").unwrap()),
        Box::new(|fs| fs.unlink("/d2/x").unwrap()),
    ];
    let mut states = vec![snapshot(&fs)];
    for op in &ops {
        op(&fs);
        states.push(snapshot(&fs));
    }
    let before_fsync = crash.history_len();
    let h = fs.open("/d2/sub/y", OpenFlags::read_write()).unwrap();
    h.fsync().unwrap();
    let synced = crash.history_len();
    h.close().unwrap();
    assert!(synced > before_fsync);
    let last = states.len() - 1;
    each_image("deferred ops", &crash, |point, _, _, img| {
        let fs2 = BlobFs::mount(img, MountOptions::default()).unwrap();
        let got = snapshot(&fs2);
        let k = states.iter().position(|s| *s == got);
        assert!(
            k.is_some(),
            "not a prefix of the operations: {:?}",
            summary(&got)
        );
        if point >= synced {
            assert_eq!(k, Some(last), "fsync returned but not every op is durable");
        }
        let blobs = fs2.store().blobs().unwrap().len();
        assert_eq!(blobs, got.len() + 1, "blobs vs inodes (root included)");
    });
}

/// An fsync'ed append is committed with a data check (one flush); rewriting those bytes in
/// place must not let a crash drop that acknowledged record (the check would fail on the
/// new bytes): at every crash point of the rewrite, the file holds the acknowledged append,
/// with the rewrite or without it.
#[test]
fn crash_rewrite_of_checked_append() {
    let (crash, fs) = crash_fs(DEFAULT_CACHE_BYTES);
    let h = fs.open("/d1/f", OpenFlags::read_write()).unwrap();
    h.append(&pattern(21, 5000)).unwrap();
    h.fsync().unwrap();
    let acked = snapshot(&fs);
    crash.mark();
    // Bytes 152,000..154,000: inside the checked range [150,000, 155,000), one io block.
    h.write_at(152_000, &pattern(22, 2000)).unwrap();
    h.fsync().unwrap();
    h.close().unwrap();
    let after = snapshot(&fs);
    assert_ne!(acked, after);
    each_image("rewrite", &crash, |point, end, mode, img| {
        check_image(
            img,
            &acked,
            &after,
            point == end && mode == CrashMode::DropAll,
            false,
        )
    });
}

/// A WAL: small appends, each fsync'ed, through the write-behind buffer. From the second
/// fsync on, the buffer and the checked record go to the device in one round trip
/// (`append_commit`). At every crash point the file is exactly one of the fsync'ed states,
/// never older than the last fsync that returned and never a size over missing data.
#[test]
fn crash_wal_appends_with_fsync() {
    wal_sweep(true);
}

/// The same WAL with the cache off, through `append_fdatasync`: the appended bytes and the
/// record go to the device together although nothing is buffered.
#[test]
fn crash_wal_append_fdatasync_without_cache() {
    wal_sweep(false);
}

fn wal_sweep(cache: bool) {
    // 1,000 bytes + 3 x 1,500 + one append across a block edge: past the inline limit, so
    // the file moves to a cluster and then takes the one-round-trip path.
    wal_sweep_sizes(cache, &[1500, 1500, 1500, 3000]);
}

/// Synced appends of 9 to 30 KB (odd sizes), 330 KB in all, cache off: logged inline, and
/// past 256 KiB the blobstore settles them in place (reads of partial edge blocks, writes)
/// between two fsyncs. Every crash image mounts and shows every acknowledged append.
#[test]
fn crash_inline_appends_past_settle() {
    let sizes: Vec<usize> = (0..20).map(|i| 9_001 + (i * 7_919) % 21_000).collect();
    assert!(sizes.iter().sum::<usize>() > (256 << 10) + 50_000);
    assert!(sizes.iter().all(|&n| n <= 32 << 10 && n % 4096 != 0));
    wal_sweep_sizes(false, &sizes);
}

fn wal_sweep_sizes(cache: bool, sizes: &[usize]) {
    let (crash, fs) = crash_fs(if cache { DEFAULT_CACHE_BYTES } else { 0 });
    let mut states = vec![snapshot(&fs)];
    crash.mark();
    let mut acked_at = vec![0usize];
    let h = fs.open("/d1/s", OpenFlags::read_write()).unwrap();
    for (i, &n) in sizes.iter().enumerate() {
        let data = pattern(40 + i as u64, n);
        if cache {
            h.append(&data).unwrap();
            h.fsync().unwrap();
        } else {
            h.append_fdatasync(&data).unwrap();
        }
        states.push(snapshot(&fs));
        acked_at.push(crash.history_len());
    }
    h.close().unwrap();
    // States by hash: hundreds of states of hundreds of KB each are not compared one by one.
    let hash = |t: &Tree| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        t.hash(&mut h);
        h.finish()
    };
    let mut by_hash: std::collections::HashMap<u64, Vec<usize>> = Default::default();
    for (k, st) in states.iter().enumerate() {
        by_hash.entry(hash(st)).or_default().push(k);
    }
    each_image("wal", &crash, |point, _, _, img| {
        let acked = acked_at.iter().rposition(|&a| a <= point).unwrap_or(0);
        let fs = BlobFs::mount(img, MountOptions::default()).unwrap();
        let got = snapshot(&fs);
        let k = by_hash
            .get(&hash(&got))
            .and_then(|ks| ks.iter().copied().find(|&k| states[k] == got));
        assert!(
            k.is_some_and(|k| k >= acked),
            "state {k:?} (acked {acked}): {:?}",
            summary(&got)
        );
    });
}

/// `append_fdatasync` with the cache off: after the first (which moves the file out of its
/// inline form), each costs one device write (the record, carrying the bytes inline) and one
/// flush, and the data reads back: at once (the blobstore's overlay), after the overlay was
/// settled in place (past 256 KiB), after a clean remount, and after a mount that ended
/// without unmount (replayed from the log).
#[test]
fn append_fdatasync_costs_one_write_and_one_flush() {
    let d = dev(8, 4096);
    let counting = oxblob_sim::CountingDevice::new(Arc::clone(&d));
    let cd: Arc<dyn BlockDevice> = counting.clone();
    // Segments long enough that no Link record falls among the measured commits.
    let mk = MkfsOptions {
        md_segment_pages: 64,
        ..small_mkfs()
    };
    let (opts, fs, h) = uncached_wal(&cd, mk);
    let mut all = Vec::new();
    for i in 0..6u64 {
        let data = pattern(60 + i, 1100);
        let c0 = counting.counts();
        assert_eq!(h.append_fdatasync(&data).unwrap(), all.len() as u64);
        all.extend_from_slice(&data);
        if i >= 2 {
            let c = counting.counts();
            assert_eq!(c.flushes, c0.flushes + 1, "append_fdatasync {i}: flushes");
            assert_eq!(
                c.writes,
                c0.writes + 1,
                "append_fdatasync {i}: one write, the record with the bytes"
            );
            assert_eq!(c.reads, c0.reads, "append_fdatasync {i}: no read");
        }
    }
    assert_eq!(h.read_vec(0, 100_000).unwrap(), all);
    fs.unmount().unwrap();
    let fs = BlobFs::mount(Arc::clone(&cd), opts.clone()).unwrap();
    let h = fs.open("/wal", OpenFlags::read_write()).unwrap();
    assert_eq!(h.read_vec(0, 1 << 20).unwrap(), all);
    // Past the overlay's bound: settled in place on the way, read back throughout.
    for i in 0..300u64 {
        let data = pattern(1000 + i, 1000 + (i as usize * 37) % 900);
        assert_eq!(h.append_fdatasync(&data).unwrap(), all.len() as u64);
        all.extend_from_slice(&data);
        if i % 50 == 49 {
            assert_eq!(h.read_vec(0, 1 << 20).unwrap(), all, "after append {i}");
        }
    }
    assert!(all.len() > (256 << 10) + 100_000);
    // No unmount: the next mount replays the log, inline bytes and all.
    drop(h);
    drop(fs);
    let fs = BlobFs::mount(Arc::clone(&cd), MountOptions::default()).unwrap();
    let h = fs.open("/wal", OpenFlags::read()).unwrap();
    assert_eq!(h.read_vec(0, 1 << 20).unwrap(), all);
    h.close().unwrap();
    fs.unmount().unwrap();
    let fs = BlobFs::mount(cd, MountOptions::default()).unwrap();
    let h = fs.open("/wal", OpenFlags::read()).unwrap();
    assert_eq!(h.read_vec(0, 1 << 20).unwrap(), all);
}

/// Flush counts of the new contract: namespace operations and close cost no flush; fsync of
/// a file whose size did not change costs exactly one; `fsync_dir` and `sync` one each.
#[test]
fn flush_counts() {
    let d = dev(8, 4096);
    BlobFs::mkfs(Arc::clone(&d), small_mkfs()).unwrap();
    let fs = BlobFs::mount(Arc::clone(&d), MountOptions::default()).unwrap();
    let flushes = || fs.store().device_flushes();
    write_file(&fs, "/big", &pattern(7, 200_000));
    fs.sync().unwrap();
    let f0 = flushes();
    fs.mkdir("/d").unwrap();
    fs.create("/d/e").unwrap().close().unwrap();
    fs.rename("/d/e", "/d/g").unwrap();
    fs.unlink("/d/g").unwrap();
    assert_eq!(flushes(), f0, "namespace operations flushed");
    fs.fsync_dir("/d").unwrap();
    assert_eq!(flushes(), f0 + 1, "fsync_dir");
    let h = fs.open("/big", OpenFlags::read_write()).unwrap();
    h.write_at(4096, &pattern(8, 8192)).unwrap();
    let f1 = flushes();
    h.fsync().unwrap();
    assert_eq!(flushes(), f1 + 1, "fsync with the size unchanged");
    // Appends inside the allocated cluster: the record checks the new bytes, one flush.
    for i in 0..3u64 {
        h.append(&pattern(20 + i, 1000)).unwrap();
        let f = flushes();
        h.fsync().unwrap();
        assert_eq!(flushes(), f + 1, "appending fsync {i}");
    }
    // An in-place rewrite of checked bytes confirms first: one flush more.
    h.write_at(200_500, &pattern(30, 100)).unwrap();
    let f = flushes();
    h.fsync().unwrap();
    assert_eq!(flushes(), f + 1, "fsync of the rewrite");
    let f = flushes();
    h.write_at(201_500, &pattern(31, 100)).unwrap();
    h.fsync().unwrap();
    assert_eq!(flushes(), f + 1, "confirmed already: no extra flush");
    h.close().unwrap();
    fs.sync().unwrap();
    fs.unmount().unwrap();
}

/// A device error while an appending fsync writes its data and checked record together
/// fails the sync with `Io` and loses nothing: the buffered bytes stay, the next sync
/// writes them, and a remount reads every byte of the file — with the cache on (the
/// write-behind path) and off (`append_fdatasync`).
#[test]
fn failed_append_sync_keeps_the_data_for_the_next_sync() {
    for cache in [true, false] {
        let faulty = oxblob_sim::ErrorDevice::new(dev(8, 4096));
        let d: Arc<dyn BlockDevice> = faulty.clone();
        BlobFs::mkfs(Arc::clone(&d), small_mkfs()).unwrap();
        let opts = MountOptions {
            cache_bytes: if cache { DEFAULT_CACHE_BYTES } else { 0 },
            ..Default::default()
        };
        let fs = BlobFs::mount(Arc::clone(&d), opts).unwrap();
        let h = fs.create("/wal").unwrap();
        let mut all = pattern(70, 5000);
        h.append(&all).unwrap();
        h.fsync().unwrap();
        let more = pattern(71, 1500);
        // The next write request (the data and record submission, or the record) fails.
        let id = faulty
            .faults()
            .arm(oxblob_sim::Fault::nth(1).kind(oxblob_bdev::IoKind::Write));
        let r = if cache {
            h.append(&more).unwrap();
            h.fsync()
        } else {
            h.append_fdatasync(&more).map(|_| ())
        };
        assert_eq!(
            r.unwrap_err().kind,
            oxblob_blobfs::FsErrorKind::Io,
            "cache {cache}"
        );
        assert_eq!(faulty.faults().injected(), 1);
        faulty.faults().disarm(id);
        if !cache {
            // Nothing was appended: the caller still holds the bytes and retries.
            assert_eq!(h.len(), 5000);
            h.append_fdatasync(&more).unwrap();
        } else {
            h.fsync().unwrap();
        }
        all.extend_from_slice(&more);
        assert_eq!(h.read_vec(0, 100_000).unwrap(), all, "cache {cache}");
        h.close().unwrap();
        fs.unmount().unwrap();
        let fs = BlobFs::mount(d, MountOptions::default()).unwrap();
        let h = fs.open("/wal", OpenFlags::read()).unwrap();
        assert_eq!(
            h.read_vec(0, 100_000).unwrap(),
            all,
            "after remount, cache {cache}"
        );
    }
}

/// A file's new clusters are zeroed only where the file could read them before writing them
/// (`Blob::write_buf_within`). The clusters of a deleted file, still holding its bytes, are
/// reused by appends (across cluster boundaries, each fsync'ed), a growing truncate, and a
/// write into the hole it opened; with the data cache and without it. The final file is
/// exactly the bytes written with zeroes in the hole, after a remount too; and in every
/// image a power cut during all this leaves, the file (if there) has one of the sizes an
/// fsync made durable, and every byte of it is the final byte or zero — never the deleted
/// file's.
#[test]
fn new_clusters_never_show_old_bytes() {
    for cache in [DEFAULT_CACHE_BYTES, 0] {
        let (crash, fs) = crash_fs(cache);
        let old = vec![0xEEu8; 9 * CLUSTER as usize];
        write_file(&fs, "/old", &old);
        fs.sync().unwrap();
        fs.unlink("/old").unwrap();
        fs.sync().unwrap();
        crash.mark();
        let mut want: Vec<u8> = Vec::new();
        let mut sizes = vec![None, Some(0)];
        let h = fs.create("/g").unwrap();
        for (i, n) in [3000usize, 70_000, 5, 130_000].into_iter().enumerate() {
            let p: Vec<u8> = pattern(40 + i as u64, n).iter().map(|b| b & 0x7F).collect();
            h.write_at(want.len() as u64, &p).unwrap();
            want.extend_from_slice(&p);
            h.fsync().unwrap();
            sizes.push(Some(want.len()));
        }
        let grown = want.len() + 3 * CLUSTER as usize + 1234;
        h.truncate(grown as u64).unwrap();
        want.resize(grown, 0);
        h.fsync().unwrap();
        sizes.push(Some(grown));
        let island_at = grown - CLUSTER as usize - 777;
        h.write_at(island_at as u64, b"island").unwrap();
        want[island_at..island_at + 6].copy_from_slice(b"island");
        h.fsync().unwrap();
        h.close().unwrap();
        fs.sync().unwrap();
        let read = |fs: &BlobFs| {
            let h = fs.open("/g", OpenFlags::read()).unwrap();
            h.read_vec(0, want.len() + 10).unwrap()
        };
        assert!(read(&fs) == want, "cache {cache}: contents");
        each_image(
            &format!("new clusters, cache {cache}"),
            &crash,
            |_, _, _, img| {
                let fs = BlobFs::mount(img, MountOptions::default()).unwrap();
                let got = snapshot(&fs);
                assert!(!got.contains_key("/old"), "the deleted file is back");
                let g = got.get("/g").cloned().flatten();
                assert!(
                    sizes.contains(&g.as_ref().map(Vec::len)),
                    "size {:?} is none an fsync made durable",
                    g.as_ref().map(Vec::len)
                );
                if let Some(g) = g {
                    if let Some(i) = (0..g.len()).find(|&i| g[i] != want[i] && g[i] != 0) {
                        panic!("byte {i} is {:#x}: neither written nor zero", g[i]);
                    }
                }
            },
        );
        fs.unmount().unwrap();
        let fs = BlobFs::mount(crash.clone(), MountOptions::default()).unwrap();
        assert!(read(&fs) == want, "cache {cache}: contents after remount");
    }
}

/// A full md region stays usable. Creates fail with `NoSpace` once the state reaches the
/// blobstore's limit, before anything is written; then synced appends (which do not grow the
/// state; 20 KB ones do not fit in a log segment and go through a checkpoint) still commit,
/// a delete frees room for a create, and a mount that ended without unmount mounts writable,
/// with every acknowledged byte and every synced namespace change. fsck finds it clean.
#[test]
fn a_full_metadata_region_stays_usable() {
    let d = dev(16, 4096);
    // A 256 KiB md region of 16 KiB segments.
    let mk = MkfsOptions {
        md_fraction: 64,
        ..small_mkfs()
    };
    let (opts, fs, h) = uncached_wal(&d, mk);
    let mut all = Vec::new();
    let append = |h: &oxblob_blobfs::FileHandle, all: &mut Vec<u8>, seed: u64, n: usize| {
        let data = pattern(seed, n);
        assert_eq!(h.append_fdatasync(&data).unwrap(), all.len() as u64);
        all.extend_from_slice(&data);
    };
    append(&h, &mut all, 70, 5_000);
    let name = |n: u32| format!("/{}{n:06}", "m".repeat(240));
    // Fill the md region with long-named files until a create fails.
    let mut files = 0u32;
    let e = loop {
        match fs.create(&name(files)) {
            Ok(f) => {
                f.close().unwrap();
                files += 1;
            }
            Err(e) => break e,
        }
        assert!(files < 100_000, "the md region never filled");
    };
    assert_eq!(e.kind, FsErrorKind::NoSpace, "{e}");
    assert!(files > 100, "{files} files");
    assert!(
        fs.mkdir(&format!("/{}", "d".repeat(246)))
            .is_err_and(|e| e.kind == FsErrorKind::NoSpace),
        "mkdir with the md region full"
    );
    // Appends of the existing file go on, the large ones through checkpoints.
    for i in 0..6u64 {
        append(&h, &mut all, 700 + i, 9_000 + i as usize * 3_001);
    }
    // A delete makes room for a create.
    fs.unlink(&name(0)).unwrap();
    fs.unlink(&name(1)).unwrap();
    fs.create("/after-delete").unwrap().close().unwrap();
    fs.sync().unwrap();
    assert_eq!(&h.read_vec(0, 1 << 20).unwrap()[..], &all[..], "live");
    let read_wal = |fs: &BlobFs| {
        fs.open("/wal", OpenFlags::read())
            .unwrap()
            .read_vec(0, 1 << 20)
            .unwrap()
    };
    // No unmount: the next mount replays the log and takes its checkpoint.
    drop(h);
    drop(fs);
    let fs = BlobFs::mount(Arc::clone(&d), opts.clone()).unwrap();
    let got = read_wal(&fs);
    assert_eq!(got, all, "after a mount without unmount");
    assert!(fs.stat("/after-delete").is_ok());
    assert!(fs
        .stat(&name(0))
        .is_err_and(|e| e.kind == FsErrorKind::NotFound));
    assert!(fs.stat(&name(2)).is_ok());
    let h = fs.open("/wal", OpenFlags::read_write()).unwrap();
    append(&h, &mut all, 900, 20_000);
    h.close().unwrap();
    fs.unmount().unwrap();
    let report = oxblob_blobfs::fsck(&d, oxblob_blobfs::FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let fs = BlobFs::mount(Arc::clone(&d), opts).unwrap();
    let got = read_wal(&fs);
    assert_eq!(got, all, "after a clean remount");
}

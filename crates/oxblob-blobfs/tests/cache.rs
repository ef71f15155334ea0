//! The data cache (`MountOptions::cache_bytes`): write-behind, read-ahead, the clean-chunk
//! cache and the memory bound. Every check is byte for byte against a model; the same
//! scenarios run with the cache off (0), with a tiny bound that forces evictions and
//! flushes on memory pressure, and with the default bound. A crash sweep checks that
//! fsync'ed data survives every crash point and that unflushed data never shows as anything
//! but the old or the new bytes. The throughput comparison is an ignored test
//! (`bench_appends_then_sequential_read`), never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_bdev::{BlockDevice, IoBuf};
use oxblob_blobfs::{BlobFs, FsErrorKind, MountOptions, OpenFlags, DEFAULT_CACHE_BYTES};
use oxblob_sim::{CrashDevice, CrashMode};
use rand::{Rng, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// 256 KiB: 64 KiB write-behind buffers, four clean chunks in all.
const TINY: u64 = 256 * 1024;

fn opts(cache_bytes: u64) -> MountOptions {
    MountOptions {
        cache_bytes,
        ..Default::default()
    }
}

fn fresh_with(mib: u64, cache_bytes: u64) -> (Arc<dyn BlockDevice>, BlobFs) {
    let d = dev(mib, 4096);
    BlobFs::mkfs(Arc::clone(&d), small_mkfs()).unwrap();
    let fs = BlobFs::mount(Arc::clone(&d), opts(cache_bytes)).unwrap();
    (d, fs)
}

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(oxblob_sim::rng::seed_from_env(seed))
}

/// Bytes of file data the cache holds: all it holds but its spare frames (memory of
/// dropped chunks kept for new ones).
fn data_bytes(fs: &BlobFs) -> u64 {
    let st = fs.cache_stats();
    assert!(st.spare_bytes <= st.used_bytes, "{st:?}");
    st.used_bytes - st.spare_bytes
}

/// Bounds tried by most tests: off, tiny, default.
const BOUNDS: [u64; 3] = [0, TINY, DEFAULT_CACHE_BYTES];

#[test]
fn small_appends_read_back_before_and_after_fsync_across_handles() {
    for bound in BOUNDS {
        let (d, fs) = fresh_with(32, bound);
        let full = pattern(1, 3 << 20);
        let w = fs.create("/log").unwrap();
        let r = fs.open("/log", OpenFlags::read()).unwrap();
        let mut rng = rng(11);
        let mut len = 0usize;
        let mut fsynced = 0usize;
        let mut i = 0;
        while len < full.len() - 5000 {
            let n = rng.gen_range(1..5000);
            let at = w.append(&full[len..len + n]).unwrap();
            assert_eq!(at, len as u64, "bound {bound}: append offset");
            len += n;
            i += 1;
            // The other handle sees the latest bytes at once.
            if i % 37 == 0 {
                let o = rng.gen_range(0..len);
                let got = r.read_vec(o as u64, 10_000).unwrap();
                assert_eq!(
                    got,
                    full[o..len.min(o + 10_000)],
                    "bound {bound}: read at {o}"
                );
                assert_eq!(r.len(), len as u64);
            }
            if i % 500 == 0 {
                w.fsync().unwrap();
                fsynced = len;
            }
        }
        assert_eq!(
            r.read_vec(0, len + 10).unwrap(),
            full[..len],
            "bound {bound}"
        );
        // Without unmount only what fsync covered must survive; with it, everything.
        drop(r);
        drop(w);
        drop(fs);
        let fs = BlobFs::mount(Arc::clone(&d), opts(bound)).unwrap();
        let h = fs.open("/log", OpenFlags::read()).unwrap();
        // Handles were dropped (a close persists), so every byte is there.
        assert_eq!(h.len(), len as u64, "bound {bound}");
        assert!(fsynced > 0);
        assert_eq!(h.read_vec(0, len).unwrap(), full[..len], "bound {bound}");
        drop(h);
        fs.unmount().unwrap();
    }
}

#[test]
fn fsync_makes_buffered_appends_durable_without_close() {
    for bound in BOUNDS {
        let (d, fs) = fresh_with(16, bound);
        let w = fs.create("/f").unwrap();
        let data = pattern(2, 300_000);
        for c in data.chunks(4096 + 17) {
            w.append(c).unwrap();
        }
        w.fsync().unwrap();
        w.append(b"after the fsync").unwrap();
        // Simulate a crash: the device image as it is now, no close, no unmount.
        let img = copy_device(&d);
        std::mem::forget(w);
        let fs2 = BlobFs::mount(img, opts(bound)).unwrap();
        let h = fs2.open("/f", OpenFlags::read()).unwrap();
        assert_eq!(h.len(), data.len() as u64, "bound {bound}");
        assert_eq!(h.read_vec(0, data.len()).unwrap(), data, "bound {bound}");
        drop(fs);
    }
}

/// A byte copy of a malloc device (a crash image without the crash device: every completed
/// write is in it, no unflushed one is lost).
fn copy_device(d: &Arc<dyn BlockDevice>) -> Arc<dyn BlockDevice> {
    let info = d.info();
    let bs = info.block_size;
    let bytes = info.size_bytes();
    let out = dev(bytes >> 20, bs);
    let mut rc = d.channel().unwrap();
    let mut wc = out.channel().unwrap();
    let step = 1 << 20;
    let mut at = 0;
    while at < bytes {
        let n = step.min(bytes - at) as usize;
        let b = oxblob_bdev::blocking::read(rc.as_mut(), at, n).unwrap();
        oxblob_bdev::blocking::write(wc.as_mut(), at, b).unwrap();
        at += n as u64;
    }
    out
}

#[test]
fn appends_from_threads_and_concurrent_readers_see_exact_bytes() {
    for bound in BOUNDS {
        let (_d, fs) = fresh_with(64, bound);
        let threads = 4;
        let per = 600_000usize;
        std::thread::scope(|s| {
            for t in 0..threads {
                let fs = fs.clone();
                s.spawn(move || {
                    let path = format!("/t{t}");
                    let data = pattern(100 + t, per);
                    let w = fs.create(&path).unwrap();
                    let r = fs.open(&path, OpenFlags::read()).unwrap();
                    let mut len = 0;
                    let mut rng = rng(t);
                    while len < per {
                        let n = rng.gen_range(1..3000).min(per - len);
                        w.append(&data[len..len + n]).unwrap();
                        len += n;
                        let o = rng.gen_range(0..len);
                        let got = r.read_vec(o as u64, 2000).unwrap();
                        assert_eq!(got, data[o..len.min(o + 2000)], "thread {t} bound {bound}");
                    }
                    w.close().unwrap();
                });
            }
            // A reader thread on a file being written by another thread: whatever length it
            // sees, the bytes are a prefix of the data.
            let fs2 = fs.clone();
            let shared = pattern(7, 2 << 20);
            let w = fs.create("/shared").unwrap();
            let sh = shared.clone();
            s.spawn(move || {
                let r = fs2.open("/shared", OpenFlags::read()).unwrap();
                let mut rng = rng(99);
                for _ in 0..400 {
                    let len = r.len() as usize;
                    if len == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    let o = rng.gen_range(0..len);
                    let got = r.read_vec(o as u64, 8192).unwrap();
                    assert!(got.len() <= sh.len() - o);
                    assert_eq!(got, sh[o..o + got.len()], "shared read at {o}");
                }
            });
            for c in shared.chunks(1000) {
                w.append(c).unwrap();
            }
            w.close().unwrap();
        });
        for t in 0..threads {
            let h = fs.open(&format!("/t{t}"), OpenFlags::read()).unwrap();
            assert_eq!(h.read_vec(0, per + 1).unwrap(), pattern(100 + t, per));
        }
        // Clean chunks may stay cached after every file is closed, within the bound; the
        // files' deletion releases them.
        assert!(fs.cache_stats().used_bytes <= bound, "every file closed");
        for t in 0..threads {
            fs.unlink(&format!("/t{t}")).unwrap();
        }
        fs.unlink("/shared").unwrap();
        assert_eq!(data_bytes(&fs), 0, "every file unlinked");
    }
}

/// Random writes, reads, truncates and fsyncs on three files against a model; single
/// threaded, so the memory bound holds after every operation.
fn model_run(bound: u64, seed: u64, steps: usize) {
    let (d, fs) = fresh_with(48, bound);
    let names = ["/a", "/b", "/c"];
    let handles: Vec<_> = names.iter().map(|n| fs.create(n).unwrap()).collect();
    let mut models: Vec<Vec<u8>> = vec![Vec::new(); names.len()];
    let mut rng = rng(seed);
    let mut seq_at = [0u64; 3];
    for step in 0..steps {
        let f = rng.gen_range(0..names.len());
        let (h, m) = (&handles[f], &mut models[f]);
        let ctx = format!("bound {bound} seed {seed:#x} step {step} file {}", names[f]);
        match rng.gen_range(0..100) {
            // Small appends (the common case).
            0..=29 => {
                let n = rng.gen_range(1..6000);
                let data = pattern(rng.gen(), n);
                h.append(&data).unwrap();
                m.extend_from_slice(&data);
            }
            // Writes anywhere, sometimes past the end (a hole), sometimes large.
            // A third of them whole 4 KiB blocks handed over in an I/O buffer
            // (`write_buf_at`: with the cache off, written as it is).
            30..=49 => {
                let mut off = rng.gen_range(0..m.len() as u64 + 100_000);
                let mut n: usize = if rng.gen_bool(0.1) {
                    rng.gen_range(60_000..400_000)
                } else {
                    rng.gen_range(1..9000)
                };
                let owned = rng.gen_bool(0.33);
                if owned {
                    off = off / 4096 * 4096;
                    n = n.div_ceil(4096) * 4096;
                }
                let data = pattern(rng.gen(), n);
                if owned {
                    h.write_buf_at(off, IoBuf::from_slice(&data)).unwrap();
                } else {
                    h.write_at(off, &data).unwrap();
                }
                let end = off as usize + n;
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[off as usize..end].copy_from_slice(&data);
            }
            // Random reads.
            // A third of them whole blocks (with the cache off, read straight into the
            // caller's buffer).
            50..=69 => {
                let mut off = rng.gen_range(0..m.len() as u64 + 10);
                let mut n: usize = rng.gen_range(0..70_000);
                if rng.gen_bool(0.33) {
                    off = off / 4096 * 4096;
                    n = n / 4096 * 4096;
                }
                let got = h.read_vec(off, n).unwrap();
                let s = (off as usize).min(m.len());
                assert_eq!(got, m[s..(s + n).min(m.len())], "{ctx}: read {n} at {off}");
            }
            // Sequential reads (read-ahead).
            70..=84 => {
                if seq_at[f] >= m.len() as u64 {
                    seq_at[f] = 0;
                }
                let n = rng.gen_range(1..40_000);
                let off = seq_at[f];
                let got = h.read_vec(off, n).unwrap();
                let s = off as usize;
                assert_eq!(
                    got,
                    m[s..(s + n).min(m.len())],
                    "{ctx}: seq read {n} at {off}"
                );
                seq_at[f] += got.len() as u64;
            }
            85..=92 => {
                let new = if rng.gen_bool(0.5) {
                    rng.gen_range(0..m.len() as u64 + 1)
                } else {
                    rng.gen_range(0..m.len() as u64 + 200_000)
                };
                h.truncate(new).unwrap();
                m.resize(new as usize, 0);
            }
            _ => {
                if rng.gen_bool(0.5) {
                    h.fsync().unwrap();
                } else {
                    h.fdatasync().unwrap();
                }
            }
        }
        assert_eq!(h.len(), m.len() as u64, "{ctx}: size");
        let st = fs.cache_stats();
        assert_eq!(st.limit_bytes, bound);
        assert!(
            st.used_bytes <= bound,
            "{ctx}: cache holds {} bytes over the bound {bound}",
            st.used_bytes
        );
    }
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(
            h.read_vec(0, models[i].len() + 1).unwrap(),
            models[i],
            "bound {bound} seed {seed:#x}: final {}",
            names[i]
        );
        h.fsync().unwrap();
    }
    // fsync'ed state survives a remount without unmount or close.
    let img = copy_device(&d);
    std::mem::forget(handles);
    let fs2 = BlobFs::mount(img, opts(bound)).unwrap();
    for (i, n) in names.iter().enumerate() {
        let h = fs2.open(n, OpenFlags::read()).unwrap();
        assert_eq!(h.len(), models[i].len() as u64, "{n} after remount");
        assert_eq!(h.read_vec(0, models[i].len()).unwrap(), models[i], "{n}");
    }
}

#[test]
fn model_random_io_cache_off() {
    model_run(0, 0xCAC0, 1500);
}

#[test]
fn model_random_io_tiny_bound_forces_evictions() {
    for seed in [0xCAC1, 0xCAC2, 0xCAC3] {
        model_run(TINY, seed, 1500);
    }
}

/// A bound smaller than one chunk: nothing can be cached clean, buffers are 16 KiB.
#[test]
fn model_random_io_bound_below_one_chunk() {
    model_run(64 * 1024, 0xCAC4, 1200);
}

#[test]
fn model_random_io_default_bound() {
    model_run(DEFAULT_CACHE_BYTES, 0xCAC5, 1500);
}

#[test]
fn sequential_read_of_32_mib_returns_exact_bytes() {
    let d = dev(80, 4096);
    BlobFs::mkfs(Arc::clone(&d), small_mkfs()).unwrap();
    let data = pattern(5, 32 << 20);
    {
        let fs = BlobFs::mount(Arc::clone(&d), opts(0)).unwrap();
        let h = fs.create("/big").unwrap();
        h.write_at(0, &data).unwrap();
        h.close().unwrap();
        fs.unmount().unwrap();
    }
    for bound in [DEFAULT_CACHE_BYTES, 1 << 20, TINY, 0] {
        let fs = BlobFs::mount(Arc::clone(&d), opts(bound)).unwrap();
        let h = fs.open("/big", OpenFlags::read()).unwrap();
        for piece in [4096usize, 65_536 + 123, 1_000_000] {
            let mut at = 0usize;
            let mut buf = vec![0u8; piece];
            while at < data.len() {
                let n = h.read_at(at as u64, &mut buf).unwrap();
                assert_eq!(n, piece.min(data.len() - at));
                assert!(
                    buf[..n] == data[at..at + n],
                    "bound {bound}: piece {piece} at {at}"
                );
                at += n;
            }
            assert_eq!(h.read_at(at as u64, &mut buf).unwrap(), 0);
            assert!(fs.cache_stats().used_bytes <= bound);
        }
        // Re-reading after the file was read once (clean chunks, where they fit).
        assert!(h.read_vec(12_345_678, 100_000).unwrap() == data[12_345_678..12_445_678]);
        h.close().unwrap();
        assert!(fs.cache_stats().used_bytes <= bound);
        fs.unmount().unwrap();
        assert_eq!(fs.cache_stats().used_bytes, 0, "unmount drops the cache");
    }
}

/// Reads see writes made after the chunks they overlap were cached, and after a truncate.
#[test]
fn cached_chunks_follow_writes_and_truncates() {
    for bound in [DEFAULT_CACHE_BYTES, TINY] {
        let (_d, fs) = fresh_with(16, bound);
        let h = fs.create("/f").unwrap();
        let mut m = pattern(8, 1 << 20);
        h.write_at(0, &m).unwrap();
        h.fsync().unwrap();
        // Sequential read fills chunks; random re-reads of one chunk admit it.
        for i in 0..16u64 {
            h.read_vec(i * 65_536, 65_536).unwrap();
        }
        h.read_vec(500_000, 100).unwrap();
        h.read_vec(500_000, 100).unwrap();
        // A small write (buffered), a large one (direct), a flush, then reads.
        let small = pattern(9, 3000);
        h.write_at(70_000, &small).unwrap();
        m[70_000..73_000].copy_from_slice(&small);
        assert_eq!(h.read_vec(69_000, 5000).unwrap(), m[69_000..74_000]);
        let large = pattern(10, 300_000);
        h.write_at(400_000, &large).unwrap();
        m[400_000..700_000].copy_from_slice(&large);
        h.fsync().unwrap();
        assert_eq!(h.read_vec(0, m.len()).unwrap(), m, "bound {bound}");
        // Shrink into a cached chunk, grow again: the cut bytes read as zeroes.
        h.truncate(300_001).unwrap();
        h.truncate(900_000).unwrap();
        m.truncate(300_001);
        m.resize(900_000, 0);
        for i in 0..14u64 {
            let got = h.read_vec(i * 65_536, 65_536).unwrap();
            let s = (i * 65_536) as usize;
            assert_eq!(
                got,
                m[s..(s + 65_536).min(m.len())],
                "bound {bound} chunk {i}"
            );
        }
    }
}

#[test]
fn truncate_with_dirty_buffers() {
    for bound in BOUNDS {
        let (d, fs) = fresh_with(16, bound);
        let h = fs.create("/f").unwrap();
        let mut m = pattern(3, 200_000);
        h.write_at(0, &m).unwrap();
        h.fsync().unwrap();
        // Dirty appends, then a cut in the middle of the buffered bytes.
        let more = pattern(4, 50_000);
        for c in more.chunks(1000) {
            h.append(c).unwrap();
        }
        m.extend_from_slice(&more);
        h.truncate(225_555).unwrap();
        m.truncate(225_555);
        assert_eq!(
            h.read_vec(0, 300_000).unwrap(),
            m,
            "bound {bound}: cut in buffer"
        );
        // Dirty appends after a hole, then a cut before all of them (inside the hole).
        h.write_at(260_000, &pattern(5, 7000)).unwrap();
        h.append(&pattern(6, 500)).unwrap();
        h.truncate(240_000).unwrap();
        m.resize(240_000, 0);
        assert_eq!(
            h.read_vec(0, 300_000).unwrap(),
            m,
            "bound {bound}: cut in hole"
        );
        // Grow with dirty bytes: old bytes past the cut never come back.
        h.write_at(100, b"dirty").unwrap();
        m[100..105].copy_from_slice(b"dirty");
        h.truncate(50).unwrap();
        h.truncate(400_000).unwrap();
        m.truncate(50);
        m.resize(400_000, 0);
        assert_eq!(h.read_vec(0, 500_000).unwrap(), m, "bound {bound}: grow");
        // Truncate to 0 with a dirty buffer, write again.
        h.append(b"x").unwrap();
        h.truncate(0).unwrap();
        h.append(b"fresh").unwrap();
        assert_eq!(h.read_vec(0, 100).unwrap(), b"fresh");
        h.fsync().unwrap();
        std::mem::forget(h);
        let fs2 = BlobFs::mount(copy_device(&d), opts(bound)).unwrap();
        assert_eq!(
            fs2.open("/f", OpenFlags::read())
                .unwrap()
                .read_vec(0, 100)
                .unwrap(),
            b"fresh"
        );
        drop(fs);
    }
}

#[test]
fn unlink_and_rename_with_dirty_buffers() {
    for bound in BOUNDS {
        let (d, fs) = fresh_with(16, bound);
        let free0 = fs.statfs().unwrap().free_bytes;
        // Unlink while dirty: the handle keeps reading its bytes; the last close deletes it.
        let h = fs.create("/gone").unwrap();
        let data = pattern(20, 150_000);
        for c in data.chunks(999) {
            h.append(c).unwrap();
        }
        fs.unlink("/gone").unwrap();
        assert_eq!(
            fs.stat("/gone").unwrap_err().kind,
            FsErrorKind::NotFound,
            "bound {bound}"
        );
        assert_eq!(h.read_vec(0, data.len()).unwrap(), data, "bound {bound}");
        h.append(b"more").unwrap();
        h.close().unwrap();
        assert_eq!(data_bytes(&fs), 0, "bound {bound}");
        // The last close deletes the orphan with a deferred record: its clusters are free
        // once a flush makes the delete durable.
        fs.sync().unwrap();
        assert_eq!(fs.statfs().unwrap().free_bytes, free0, "bound {bound}");
        // Rename while dirty: the data follows the inode, fsync through the old handle.
        let h = fs.create("/old").unwrap();
        for c in data.chunks(777) {
            h.append(c).unwrap();
        }
        fs.rename("/old", "/new").unwrap();
        h.append(b"tail").unwrap();
        h.fsync().unwrap();
        let mut want = data.clone();
        want.extend_from_slice(b"tail");
        // Rename over a file that has dirty buffers of its own (it becomes an orphan).
        let v = fs.create("/victim").unwrap();
        v.write_at(0, &pattern(21, 80_000)).unwrap();
        v.append(&pattern(22, 3000)).unwrap();
        let w = fs.create("/winner").unwrap();
        w.append(b"winner bytes").unwrap();
        w.close().unwrap();
        fs.rename("/winner", "/victim").unwrap();
        assert_eq!(v.read_vec(80_000, 3000).unwrap(), pattern(22, 3000));
        v.close().unwrap();
        std::mem::forget(h);
        let fs2 = BlobFs::mount(copy_device(&d), opts(bound)).unwrap();
        let r = fs2.open("/new", OpenFlags::read()).unwrap();
        assert_eq!(
            r.read_vec(0, want.len() + 1).unwrap(),
            want,
            "bound {bound}"
        );
        assert!(!fs2.exists("/old").unwrap());
        let r = fs2.open("/victim", OpenFlags::read()).unwrap();
        assert_eq!(r.read_vec(0, 100).unwrap(), b"winner bytes");
        // Root, /new, /victim: nothing leaked.
        assert_eq!(fs2.store().blobs().unwrap().len(), 3, "bound {bound}");
        drop(fs);
    }
}

#[test]
fn memory_bound_holds_across_many_files() {
    let (_d, fs) = fresh_with(64, TINY);
    let hs: Vec<_> = (0..12)
        .map(|i| fs.create(&format!("/f{i}")).unwrap())
        .collect();
    let mut models = vec![Vec::new(); hs.len()];
    let mut rng = rng(5);
    for step in 0..3000 {
        let i = rng.gen_range(0..hs.len());
        let d = pattern(step, rng.gen_range(1..4000));
        hs[i].append(&d).unwrap();
        models[i].extend_from_slice(&d);
        if step % 7 == 0 {
            let j = rng.gen_range(0..hs.len());
            let len = models[j].len();
            if len > 0 {
                let o = rng.gen_range(0..len);
                let got = hs[j].read_vec(o as u64, 30_000).unwrap();
                assert_eq!(got, models[j][o..len.min(o + 30_000)]);
            }
        }
        assert!(fs.cache_stats().used_bytes <= TINY, "step {step}");
    }
    for (h, m) in hs.iter().zip(&models) {
        assert_eq!(&h.read_vec(0, m.len()).unwrap(), m);
    }
    drop(hs);
    assert!(fs.cache_stats().used_bytes <= TINY);
    for i in 0..models.len() {
        fs.unlink(&format!("/f{i}")).unwrap();
    }
    assert_eq!(data_bytes(&fs), 0);
}

/// Crash sweep with the cache on. A durable 150,000-byte file gets 1,000-byte appends and an
/// fsync, then (not synced) 500-byte overwrites inside the synced bytes and more appends,
/// with a tiny bound so buffers reach the device on memory pressure before any fsync; the
/// handle is closed at the end. At every crash point the file is:
/// - before the fsync returned: exactly the old file or exactly the synced one;
/// - after it: the synced size or the final size, and every byte is the synced byte or the
///   final byte at that offset (unsynced writes may be partly on the device; a byte never
///   shows anything else — no zeroes, no stale data);
/// - at the end (DropAll at the last point, after the close and a `sync`): exactly the final
///   file.
#[test]
fn crash_sweep_buffered_appends_and_overwrites() {
    for bound in [TINY, DEFAULT_CACHE_BYTES] {
        crash_sweep(bound);
    }
}

fn crash_sweep(bound: u64) {
    let malloc = dev(8, 4096);
    let crash = CrashDevice::new(malloc).unwrap();
    let cdev: Arc<dyn BlockDevice> = crash.clone();
    BlobFs::mkfs(Arc::clone(&cdev), small_mkfs()).unwrap();
    let fs = BlobFs::mount(Arc::clone(&cdev), opts(bound)).unwrap();
    let old = pattern(30, 150_000);
    let h = fs.create("/f").unwrap();
    h.write_at(0, &old).unwrap();
    h.close().unwrap();
    // close commits deferred: the setup is made durable by a sync.
    fs.sync().unwrap();
    crash.mark();
    let mut synced = old.clone();
    let h = fs.open("/f", OpenFlags::read_write()).unwrap();
    for i in 0..200 {
        let d = pattern(1000 + i, 1000);
        h.append(&d).unwrap();
        synced.extend_from_slice(&d);
    }
    h.fsync().unwrap();
    let fsync_point = crash.history_len();
    let mut fin = synced.clone();
    for i in 0..100u64 {
        let off = 10_000 + (i * 2011) % 300_000;
        let d = pattern(5000 + i, 500);
        h.write_at(off, &d).unwrap();
        fin[off as usize..off as usize + 500].copy_from_slice(&d);
    }
    for i in 0..60 {
        let d = pattern(9000 + i, 1000);
        h.append(&d).unwrap();
        fin.extend_from_slice(&d);
    }
    h.close().unwrap();
    // close does not fsync (its record is deferred); the final state is durable after a sync.
    fs.sync().unwrap();
    let end = crash.history_len();
    assert!(fsync_point > 0 && end > fsync_point);
    let base = oxblob_sim::rng::seed_from_env(0xCAC8_E000);
    let randoms = (96 / (end + 1)).max(1) as u64;
    for point in 0..=end {
        let mut variants = vec![(CrashMode::DropAll, 0), (CrashMode::KeepAll, 0)];
        variants.extend((0..randoms).map(|s| (CrashMode::Random, base + s + point as u64)));
        for (mode, seed) in variants {
            let img = crash.image_at(point, seed, mode).unwrap();
            let r = catch_unwind(AssertUnwindSafe(|| {
                let fs = BlobFs::mount(img, opts(bound)).unwrap();
                let h = fs.open("/f", OpenFlags::read()).unwrap();
                let got = h.read_vec(0, fin.len() + 10).unwrap();
                if point < fsync_point {
                    assert!(got == old || got == synced, "len {}", got.len());
                } else if point == end && mode == CrashMode::DropAll {
                    assert!(got == fin, "completed close not durable");
                } else {
                    assert!(
                        got.len() == synced.len() || got.len() == fin.len(),
                        "len {}",
                        got.len()
                    );
                    let bad = (0..got.len())
                        .find(|&i| got[i] != fin[i] && (i >= synced.len() || got[i] != synced[i]));
                    assert!(bad.is_none(), "byte {bad:?} is neither synced nor final");
                }
                assert_eq!(fs.store().blobs().unwrap().len(), 2);
            }));
            if let Err(e) = r {
                let msg = oxblob_sim::panic_message(e.as_ref());
                panic!("bound {bound}: crash point {point}/{end} (fsync at {fsync_point}) mode {mode:?} seed {seed:#x}: {msg}");
            }
        }
    }
}

/// Throughput with and without the cache on a file image (`OXBLOB_BENCH_DIR`, default
/// `/var/tmp`): 64 MiB of 4 KiB appends, an fsync, then a sequential read in 4 KiB pieces
/// after a remount. Prints MB/s; asserts only the bytes. Run with
/// `cargo test --release -p oxblob-blobfs --test cache -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_appends_then_sequential_read() {
    let dir = std::env::var("OXBLOB_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let total: usize = 64 << 20;
    let piece = 4096;
    let data = pattern(77, total);
    for bound in [0, DEFAULT_CACHE_BYTES] {
        let path = format!("{dir}/oxblob-cache-bench-{}.img", std::process::id());
        let _ = std::fs::remove_file(&path);
        let spec = format!("file:{path}?create=512MiB");
        let d = oxblob_bdev::spec::open(&spec).unwrap();
        BlobFs::mkfs(Arc::clone(&d), Default::default()).unwrap();
        let fs = BlobFs::mount(Arc::clone(&d), opts(bound)).unwrap();
        let h = fs.create("/wal").unwrap();
        let t = std::time::Instant::now();
        for c in data.chunks(piece) {
            h.append(c).unwrap();
        }
        h.fsync().unwrap();
        let w = t.elapsed();
        h.close().unwrap();
        fs.unmount().unwrap();
        drop(fs);
        drop(d);
        let d = oxblob_bdev::spec::open(&format!("file:{path}")).unwrap();
        let direct_io = d.info().caps.direct_io;
        let fs = BlobFs::mount(Arc::clone(&d), opts(bound)).unwrap();
        let h = fs.open("/wal", OpenFlags::read()).unwrap();
        let mut buf = vec![0u8; piece];
        let t = std::time::Instant::now();
        let mut at = 0usize;
        while at < total {
            let n = h.read_at(at as u64, &mut buf).unwrap();
            assert!(buf[..n] == data[at..at + n]);
            at += n;
        }
        let r = t.elapsed();
        let mb = total as f64 / 1e6;
        println!(
            "cache_bytes {bound:>9}: 4 KiB appends {:>8.1} MB/s ({:.2} s), 4 KiB sequential reads {:>8.1} MB/s ({:.2} s), O_DIRECT {direct_io}",
            mb / w.as_secs_f64(),
            w.as_secs_f64(),
            mb / r.as_secs_f64(),
            r.as_secs_f64()
        );
        h.close().unwrap();
        fs.unmount().unwrap();
        drop(fs);
        drop(d);
        let _ = std::fs::remove_file(&path);
    }
}

/// Write-through: what a write-behind flush wrote stays cached as clean chunks while the
/// cache has room (the buffer's memory turns into chunks), reads of it are right — the
/// tail chunk past the end reads as zeroes until later appends patch it — and the bound
/// holds with a tiny cache.
#[test]
fn flushed_writes_stay_cached_as_clean_chunks_within_the_bound() {
    for bound in [DEFAULT_CACHE_BYTES, TINY] {
        let (_d, fs) = fresh_with(32, bound);
        let full = pattern(21, (3 << 20) + 12_345);
        let h = fs.create("/t.sst").unwrap();
        let half = full.len() / 2 + 777;
        for c in full[..half].chunks(4000) {
            h.append(c).unwrap();
            assert!(fs.cache_stats().used_bytes <= bound, "bound {bound}");
        }
        h.fdatasync().unwrap();
        let used = fs.cache_stats().used_bytes;
        assert!(used <= bound, "bound {bound}: {used}");
        if bound == DEFAULT_CACHE_BYTES {
            // Every chunk written, the unaligned last one included, is held.
            assert_eq!(used, (half as u64).div_ceil(65_536) * 65_536, "kept chunks");
        }
        for c in full[half..].chunks(4000) {
            h.append(c).unwrap();
        }
        h.fdatasync().unwrap();
        assert!(fs.cache_stats().used_bytes <= bound, "bound {bound}");
        let r = fs.open("/t.sst", OpenFlags::read()).unwrap();
        let mut rng = rng(5);
        for _ in 0..300 {
            let off = rng.gen_range(0..full.len());
            let n = rng.gen_range(1..9000).min(full.len() - off);
            assert!(
                r.read_vec(off as u64, n).unwrap() == full[off..off + n],
                "bound {bound}: read at {off}+{n}"
            );
        }
        assert_eq!(r.read_vec(0, full.len() + 10).unwrap(), full);
        drop(r);
        h.close().unwrap();
        // The clean chunks outlive the close (within the bound) and are right for a new open.
        assert!(fs.cache_stats().used_bytes <= bound, "bound {bound}");
        let r = fs.open("/t.sst", OpenFlags::read()).unwrap();
        assert_eq!(r.read_vec(0, full.len() + 10).unwrap(), full);
        drop(r);
        fs.unlink("/t.sst").unwrap();
        assert_eq!(data_bytes(&fs), 0, "bound {bound}: unlinked");
    }
}

/// Clean chunks survive the last close (like a page cache): a new open reads them, and
/// writes, truncates and extensions through a later handle keep them exact — never stale.
#[test]
fn clean_chunks_outlive_close_and_stay_exact_through_later_handles() {
    for bound in BOUNDS {
        let (d, fs) = fresh_with(32, bound);
        let mut m = pattern(30, 1_000_000 + 4321);
        let h = fs.create("/f").unwrap();
        h.write_at(0, &m).unwrap();
        h.close().unwrap();
        // Cache every chunk through a reader, then close it.
        let r = fs.open("/f", OpenFlags::read()).unwrap();
        assert_eq!(r.read_vec(0, m.len()).unwrap(), m, "bound {bound}");
        for o in [70_000u64, 333_333, 999_999] {
            r.read_vec(o, 100).unwrap();
            r.read_vec(o, 100).unwrap();
        }
        r.close().unwrap();
        let kept = fs.cache_stats().used_bytes;
        assert!(kept <= bound, "bound {bound}");
        if bound == DEFAULT_CACHE_BYTES {
            assert_eq!(kept, (m.len() as u64).div_ceil(65_536) * 65_536, "kept");
        }
        // A second handle writes after the first closed: small (buffered), unaligned,
        // large (direct), and past the end (the gap reads as zeroes).
        let w = fs.open("/f", OpenFlags::read_write()).unwrap();
        let small = pattern(31, 777);
        w.write_at(70_001, &small).unwrap();
        m[70_001..70_778].copy_from_slice(&small);
        let large = pattern(32, 1 << 20);
        w.write_at(200_003, &large).unwrap();
        m.resize(m.len().max(200_003 + large.len()), 0);
        m[200_003..200_003 + large.len()].copy_from_slice(&large);
        w.write_at(1_400_000, b"tail").unwrap();
        m.resize(1_400_000, 0);
        m.extend_from_slice(b"tail");
        w.close().unwrap();
        let r = fs.open("/f", OpenFlags::read()).unwrap();
        assert_eq!(
            r.read_vec(0, m.len() + 1).unwrap(),
            m,
            "bound {bound}: writes"
        );
        let mut rng = rng(31);
        for _ in 0..200 {
            let o = rng.gen_range(0..m.len());
            let n = rng.gen_range(1..70_000).min(m.len() - o);
            assert!(
                r.read_vec(o as u64, n).unwrap() == m[o..o + n],
                "bound {bound}: read at {o}+{n}"
            );
        }
        r.close().unwrap();
        // Shrink into a cached chunk through a third handle, then grow: zeroes, not the
        // old bytes.
        let t = fs.open("/f", OpenFlags::read_write()).unwrap();
        t.truncate(100_005).unwrap();
        t.close().unwrap();
        let t = fs.open("/f", OpenFlags::read_write()).unwrap();
        t.truncate(300_000).unwrap();
        m.truncate(100_005);
        m.resize(300_000, 0);
        t.close().unwrap();
        let r = fs.open("/f", OpenFlags::read()).unwrap();
        assert_eq!(r.read_vec(0, m.len() + 1).unwrap(), m, "bound {bound}: cut");
        r.close().unwrap();
        // open(truncate) then new bytes.
        let t = fs.open("/f", OpenFlags::create_truncate()).unwrap();
        t.append(b"new").unwrap();
        t.close().unwrap();
        let r = fs.open("/f", OpenFlags::read()).unwrap();
        assert_eq!(r.read_vec(0, 100).unwrap(), b"new", "bound {bound}");
        r.close().unwrap();
        assert!(fs.cache_stats().used_bytes <= bound, "bound {bound}");
        // What the device holds agrees (another mount, cold cache).
        fs.sync().unwrap();
        let fs2 = BlobFs::mount(copy_device(&d), opts(bound)).unwrap();
        let r2 = fs2.open("/f", OpenFlags::read()).unwrap();
        assert_eq!(r2.read_vec(0, 100).unwrap(), b"new", "bound {bound}");
    }
}

/// Deleting a file releases its clean chunks: unlink, rename over it, and the last close of
/// an unlinked open file; a new file never sees another file's bytes.
#[test]
fn deleting_a_file_releases_its_clean_chunks() {
    for bound in [TINY, DEFAULT_CACHE_BYTES] {
        let (_d, fs) = fresh_with(32, bound);
        let fill = |path: &str, seed: u64| {
            let data = pattern(seed, 200_000);
            let h = fs.create(path).unwrap();
            h.write_at(0, &data).unwrap();
            h.close().unwrap();
            let r = fs.open(path, OpenFlags::read()).unwrap();
            assert_eq!(r.read_vec(0, data.len()).unwrap(), data);
            r.close().unwrap();
            data
        };
        fill("/a", 40);
        assert!(
            fs.cache_stats().used_bytes > 0,
            "bound {bound}: cached after close"
        );
        fs.unlink("/a").unwrap();
        assert_eq!(data_bytes(&fs), 0, "bound {bound}: unlink");
        // Rename over a closed file.
        fill("/b", 41);
        let c = fill("/c", 42);
        fs.rename("/c", "/b").unwrap();
        let r = fs.open("/b", OpenFlags::read()).unwrap();
        assert_eq!(r.read_vec(0, c.len() + 1).unwrap(), c, "bound {bound}");
        r.close().unwrap();
        fs.unlink("/b").unwrap();
        assert_eq!(data_bytes(&fs), 0, "bound {bound}: rename over");
        // Unlinked while open: the chunks go at its last close.
        let e = fill("/e", 43);
        let h = fs.open("/e", OpenFlags::read()).unwrap();
        fs.unlink("/e").unwrap();
        assert_eq!(h.read_vec(0, e.len()).unwrap(), e);
        h.close().unwrap();
        assert_eq!(data_bytes(&fs), 0, "bound {bound}: orphan");
        // A file created at the same path reads its own bytes.
        let f = fill("/e", 44);
        let r = fs.open("/e", OpenFlags::read()).unwrap();
        assert_eq!(r.read_vec(0, f.len() + 1).unwrap(), f, "bound {bound}");
        r.close().unwrap();
        fs.unlink("/e").unwrap();
        fs.mkdir("/d").unwrap();
        fs.rmdir("/d").unwrap();
        assert_eq!(data_bytes(&fs), 0, "bound {bound}: end");
    }
}

/// `OpenFlags::no_reuse` (a log): what is written is not kept as clean chunks, while the
/// same appends to an ordinary file are; both read back byte for byte, before and after a
/// remount, through the opening handle and through others.
#[test]
fn no_reuse_files_keep_no_written_bytes_in_the_cache() {
    let (d, fs) = fresh_with(64, DEFAULT_CACHE_BYTES);
    let log = OpenFlags {
        no_reuse: true,
        ..OpenFlags::create_truncate()
    };
    let mut want = Vec::new();
    let mut used = Vec::new();
    for (name, flags) in [
        ("/wal.log", log),
        ("/table.sst", OpenFlags::create_truncate()),
    ] {
        let before = fs.cache_stats().used_bytes;
        let h = fs.open(name, flags).unwrap();
        let mut all = Vec::new();
        for i in 0..40u64 {
            let p = pattern(i + 1, 100_003);
            h.append(&p).unwrap();
            all.extend_from_slice(&p);
        }
        h.fsync().unwrap();
        used.push(fs.cache_stats().used_bytes - before);
        let r = fs.open(name, OpenFlags::read()).unwrap();
        assert!(r.read_vec(0, all.len() + 1).unwrap() == all, "{name}");
        h.close().unwrap();
        r.close().unwrap();
        want.push((name, all));
    }
    // 4 MB written to each: the log kept at most one buffer's worth of clean chunks (the
    // read above may cache its tail), the ordinary file most of it.
    assert!(used[0] < 1 << 20, "log kept {} bytes", used[0]);
    assert!(used[1] >= 3 << 20, "ordinary file kept {} bytes", used[1]);
    fs.unmount().unwrap();
    let fs = BlobFs::mount(d, opts(DEFAULT_CACHE_BYTES)).unwrap();
    for (name, all) in want {
        let h = fs.open(name, OpenFlags::read()).unwrap();
        assert!(
            h.read_vec(0, all.len() + 1).unwrap() == all,
            "{name} after remount"
        );
    }
}

/// A deleted file's chunks become spare frames, and the chunks made from them hold only
/// their own file's bytes: a short write's chunk reads as zeroes past it (also after the
/// file grows over it), and chunks filled by read misses and read-ahead read back exactly.
#[test]
fn recycled_frames_never_show_a_deleted_files_bytes() {
    let (_d, fs) = fresh_with(32, DEFAULT_CACHE_BYTES);
    let old = vec![0xAAu8; 2 << 20];
    let h = fs.create("/old").unwrap();
    h.write_at(0, &old).unwrap();
    h.close().unwrap();
    fs.unlink("/old").unwrap();
    let spare0 = fs.cache_stats().spare_bytes;
    assert!(spare0 >= 16 * 65_536, "{:?}", fs.cache_stats());
    assert_eq!(data_bytes(&fs), 0);

    // A file ending inside its second chunk (too long to live in its record): both
    // chunks are recycled frames, the second zero past the end.
    let short = pattern(7, 70_000);
    let h = fs.create("/short").unwrap();
    h.write_at(0, &short).unwrap();
    h.close().unwrap();
    let h = fs.open("/short", OpenFlags::read_write()).unwrap();
    h.truncate(3 * 65_536 + 5).unwrap();
    let mut want = short.clone();
    want.resize(3 * 65_536 + 5, 0);
    assert!(
        h.read_vec(0, want.len() + 10).unwrap() == want,
        "short file"
    );
    h.close().unwrap();

    // Chunks filled by random misses (a chunk is cached at its second miss) and by
    // read-ahead: the file is written as a log (`no_reuse`: its written bytes are not
    // kept), so every chunk of it comes from a read.
    let data = pattern(8, 700_000);
    let log = OpenFlags {
        no_reuse: true,
        ..OpenFlags::create_truncate()
    };
    let h = fs.open("/data", log).unwrap();
    h.write_at(0, &data).unwrap();
    h.close().unwrap();
    fs.unlink("/short").unwrap();
    let before = data_bytes(&fs);
    let r = fs.open("/data", OpenFlags::read()).unwrap();
    for off in [300_001usize, 90_000, 300_001, 90_000, 650_000] {
        assert!(r.read_vec(off as u64, 5_000).unwrap() == data[off..(off + 5_000).min(700_000)]);
    }
    assert!(r.read_vec(0, data.len() + 1).unwrap() == data, "whole file");
    r.close().unwrap();
    assert!(
        data_bytes(&fs) >= before + 10 * 65_536,
        "reads cached no chunks"
    );
    let st = fs.cache_stats();
    assert!(
        st.spare_bytes + 10 * 65_536 <= spare0,
        "frames were not reused: {st:?}"
    );
    assert!(st.used_bytes <= st.limit_bytes, "{st:?}");
}

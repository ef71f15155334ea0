//! Damaged images never panic: a store with a checkpoint *and* a log tail (about 20 blobs,
//! thick and thin, xattrs, data, a snapshot and a clone) is imaged, then damaged in many seeded
//! ways — random byte flips, zeroed 512-byte runs, an md page copied over another, a truncated
//! device, swapped superblock slots, extreme superblock fields with a recomputed CRC, log
//! records and the checkpoint altered with their CRCs recomputed. For every variant
//! `BlobStore::load` (read-only and writable) returns `Ok` or a typed [`BsError`]; `fsck` never
//! panics; when the load succeeds, every listed blob opens and reads without a panic.
//!
//! "Never allocate absurd memory" is enforced by this binary's global allocator: one allocation
//! over 512 MiB aborts with the variant's seed. "Never hang" by a watchdog: a variant that runs
//! for more than 60 s aborts with its seed. A failing variant's seed is printed and the damaged
//! image is saved under `/var/tmp`; `OXBLOB_SEED` shifts the seeds.
//!
//! Default: 400 variants. `OXBLOB_FULL=1`: 40,000. `OXBLOB_VARIANTS=n`: n.
//!
//! Specific cases by kind: random bytes and zeroes are `NotABlobstore`; a truncated device is
//! `DeviceTooSmall`; a wrong `bstype` is `WrongType`; an unknown incompat bit is
//! `UnknownFeature`; an unknown ro_compat bit loads read-only and refuses writes with
//! `ReadOnly`; a device too small at init is `DeviceTooSmall`.

// The size-limiting global allocator below needs `unsafe impl GlobalAlloc`.
#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;
use common::*;
use oxblob_bdev::{blocking, BlockDevice, MallocDevice};
use oxblob_blobstore::{
    fsck, inspect, BlobStore, BsError, CreateOptions, Durability, FsckOptions, InitOptions,
    LoadOptions,
};
use oxblob_format::record::RECORD_MAGIC;
use oxblob_format::{crc32c, Superblock, MD_PAGE_SIZE};
use rand::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const PAGE: usize = MD_PAGE_SIZE;
const DEV_MIB: u64 = 3;
/// md region of the base image, in pages (4-page segments).
const MD_PAGES: u64 = 64;
static ZERO_PAGE: [u8; PAGE] = [0; PAGE];
/// Largest single allocation a load, fsck or blob read may make here.
const ALLOC_LIMIT: usize = 512 << 20;

thread_local! {
    /// The variant this thread is running (u64::MAX: none), for the allocator's message.
    static SEED: Cell<u64> = const { Cell::new(u64::MAX) };
}

struct Limited;

unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn check_size(size: usize) {
    if size > ALLOC_LIMIT {
        let seed = SEED.with(|s| s.get());
        eprintln!("absurd allocation of {size} bytes in variant seed {seed:#x}");
        std::process::abort();
    }
}

#[global_allocator]
static ALLOC: Limited = Limited;

/// Variant counter and start time, watched by one watchdog thread.
static RUNNING: AtomicU64 = AtomicU64::new(u64::MAX);
static STARTED_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_millis() as u64
}

fn start_watchdog() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let seed = RUNNING.load(Ordering::Acquire);
            if seed != u64::MAX && now_ms() - STARTED_MS.load(Ordering::Acquire) > 60_000 {
                eprintln!("variant seed {seed:#x} ran for over 60 s: hang");
                std::process::abort();
            }
        });
    });
}

fn device_from(bytes: &[u8]) -> Arc<dyn BlockDevice> {
    let blocks = (bytes.len() / 512).max(1) as u64;
    let d: Arc<dyn BlockDevice> = Arc::new(MallocDevice::new("img", 512, blocks).unwrap());
    // The device starts zeroed: write only the non-zero 4 KiB pieces (fast in debug builds).
    let mut ch = d.channel().unwrap();
    for (i, piece) in bytes.chunks(PAGE).enumerate() {
        let piece = &piece[..piece.len() / 512 * 512];
        if !piece.is_empty() && piece != &ZERO_PAGE[..piece.len()] {
            blocking::write_slice(ch.as_mut(), (i * PAGE) as u64, piece).unwrap();
        }
    }
    d
}

fn image_of(d: &Arc<dyn BlockDevice>) -> Vec<u8> {
    let mut ch = d.channel().unwrap();
    blocking::read(ch.as_mut(), 0, d.info().size_bytes() as usize)
        .unwrap()
        .to_vec()
}

/// The base image: built once, a checkpoint with ~20 blobs and a log tail of synced changes.
fn base() -> &'static Vec<u8> {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        let d = dev(DEV_MIB, 4096);
        let opts = InitOptions {
            md_pages: Some(MD_PAGES),
            ..small_opts()
        };
        let bs = BlobStore::init(Arc::clone(&d), opts).unwrap();
        let mut ch = bs.channel().unwrap();
        let mut ids = Vec::new();
        for i in 0..20u64 {
            let id = bs
                .create_blob(CreateOptions {
                    num_clusters: 1 + i % 2,
                    thin: i % 2 == 1,
                    xattrs: (0..1 + i % 3)
                        .map(|k| (format!("x{k}"), pattern(i * 10 + k, (i * 7 + k) as usize)))
                        .collect(),
                })
                .unwrap();
            let b = bs.open_blob(id).unwrap();
            if i % 4 != 3 {
                b.write(&mut ch, 4096 * (i % 8), &pattern(1000 + i, 8192))
                    .unwrap();
            }
            if i % 5 == 0 {
                b.set_internal_xattr("i1", &pattern(i, 40)).unwrap();
            }
            b.close().unwrap();
            ids.push(id);
        }
        let snap = bs.snapshot(ids[2]).unwrap();
        let clone = bs.create_clone(snap).unwrap();
        let b = bs.open_blob(clone).unwrap();
        b.write(&mut ch, 0, &pattern(77, 4096)).unwrap();
        b.close().unwrap();
        bs.set_super_blob(Some(ids[0])).unwrap();
        bs.unload().unwrap();
        // Second session: synced changes stay in the log after the load-time checkpoint.
        let bs = load(&d);
        let mut ch = bs.channel().unwrap();
        for &id in &ids[..6] {
            let b = bs.open_blob(id).unwrap();
            b.set_xattr("tail", &id.to_le_bytes()).unwrap();
            b.resize(b.num_clusters() + 1).unwrap();
            b.write(&mut ch, b.size_bytes() - 4096, &pattern(id, 4096))
                .unwrap();
            b.sync_md().unwrap();
            b.close().unwrap();
        }
        // Checked commits in the log: replay verifies their data, which damage may change.
        for &id in &ids[6..8] {
            let b = bs.open_blob(id).unwrap();
            let data = pattern(id + 500, 4096);
            b.write(&mut ch, 0, &data).unwrap();
            b.set_xattr("len", b"4096").unwrap();
            let crc = oxblob_format::crc32c(&data);
            b.commit_md_checked(0, 4096, crc, Durability::Durable)
                .unwrap();
            b.close().unwrap();
        }
        let b = bs.open_blob(ids[8]).unwrap();
        let data = pattern(888, 8192);
        let crc = oxblob_format::crc32c(&data[100..8100]);
        b.write_commit_checked(0, &data, 100, 8000, crc, Durability::Durable)
            .unwrap();
        b.close().unwrap();
        bs.delete_blob(ids[19]).unwrap();
        bs.create_blob(CreateOptions {
            num_clusters: 2,
            ..Default::default()
        })
        .unwrap();
        drop(bs);
        let ins = inspect(d.as_ref()).unwrap();
        assert!(
            ins.checkpoint.blobs.len() >= 20,
            "checkpoint holds the blobs"
        );
        assert!(ins.log.len() >= 8, "log tail: {} records", ins.log.len());
        let checks = ins
            .log
            .iter()
            .flat_map(|e| &e.mutations)
            .filter(|m| matches!(m, oxblob_format::record::Mutation::CheckData(_)))
            .count();
        assert_eq!(checks, 3, "checked records in the log tail");
        assert!(ins.log.iter().all(|e| e.skipped.is_none()));
        let report = fsck(&d, FsckOptions::default()).unwrap();
        assert!(report.is_clean(), "base image is clean: {report}");
        image_of(&d)
    })
}

/// The md region's end in bytes (superblock slots + md region) of the base image.
fn md_end() -> usize {
    (2 + MD_PAGES as usize) * PAGE
}

fn recrc_superblock(img: &mut [u8], slot: usize) {
    let p = &mut img[slot * PAGE..(slot + 1) * PAGE];
    p[12..16].fill(0);
    let crc = crc32c(p);
    p[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn current_slot(img: &[u8]) -> usize {
    let g = |s: usize| Superblock::decode(&img[s * PAGE..(s + 1) * PAGE]).map(|sb| sb.generation);
    match (g(0), g(1)) {
        (Ok(a), Ok(b)) if b > a => 1,
        (Err(_), Ok(_)) => 1,
        _ => 0,
    }
}

/// Byte offsets of the 8-byte superblock fields (and 4-byte ones, marked by `false`).
const SB_FIELDS: &[(usize, bool)] = &[
    (8, false),
    (16, true),
    (24, true),
    (32, true),
    (56, true),
    (64, true),
    (72, false),
    (76, false),
    (80, true),
    (88, true),
    (96, true),
    (104, true),
    (112, false),
    (120, true),
    (128, true),
    (136, true),
    (144, true),
    (152, true),
    (160, false),
    (168, true),
    (176, true),
];

fn extreme(rng: &mut impl Rng, old: u64) -> u64 {
    match rng.gen_range(0..10) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::MAX / 2,
        4 => 1 << 63,
        5 => old.wrapping_add(1),
        6 => old.wrapping_sub(1),
        7 => old.wrapping_mul(2),
        8 => 1 << rng.gen_range(0..64),
        _ => rng.gen(),
    }
}

/// Pages of the base image's md region that start a valid-looking record.
fn record_pages(img: &[u8]) -> Vec<usize> {
    (2..md_end() / PAGE)
        .filter(|p| img[p * PAGE..p * PAGE + 8] == RECORD_MAGIC)
        .collect()
}

/// A random offset, 80% inside the superblocks and md region.
fn offset(rng: &mut impl Rng, len: usize) -> usize {
    if rng.gen_bool(0.8) {
        rng.gen_range(0..md_end().min(len))
    } else {
        rng.gen_range(0..len)
    }
}

/// Applies one kind of damage; returns its name.
fn damage(rng: &mut impl Rng, img: &mut Vec<u8>, kind: u32) -> &'static str {
    let len = img.len();
    if len < md_end() && kind != 3 {
        // A second damage after a truncation: the other kinds need the whole md region.
        return "skipped after truncation";
    }
    match kind {
        0 => {
            for _ in 0..rng.gen_range(1..=16) {
                let o = offset(rng, len);
                img[o] ^= 1 << rng.gen_range(0..8);
            }
            "flip bits"
        }
        1 => {
            for _ in 0..rng.gen_range(1..=4) {
                let o = offset(rng, len) / 512 * 512;
                img[o..o + 512].fill(0);
            }
            "zero 512-byte runs"
        }
        2 => {
            let pages = md_end() / PAGE;
            let from = rng.gen_range(0..pages);
            let to = rng.gen_range(0..pages);
            let src = img[from * PAGE..(from + 1) * PAGE].to_vec();
            img[to * PAGE..(to + 1) * PAGE].copy_from_slice(&src);
            "copy an md page over another"
        }
        3 => {
            let keep = rng.gen_range(0..len / 512) * 512;
            img.truncate(keep);
            "truncate the device"
        }
        4 => {
            let (a, b) = img.split_at_mut(PAGE);
            a.swap_with_slice(&mut b[..PAGE]);
            "swap the superblock slots"
        }
        5 => {
            let slot = if rng.gen_bool(0.8) {
                current_slot(img)
            } else {
                rng.gen_range(0..2)
            };
            for _ in 0..rng.gen_range(1..=3) {
                let (off, wide) = SB_FIELDS[rng.gen_range(0..SB_FIELDS.len())];
                let at = slot * PAGE + off;
                if wide {
                    let old = u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
                    let v = extreme(rng, old);
                    img[at..at + 8].copy_from_slice(&v.to_le_bytes());
                } else {
                    let old = u32::from_le_bytes(img[at..at + 4].try_into().unwrap());
                    let v = extreme(rng, u64::from(old)) as u32;
                    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            recrc_superblock(img, slot);
            "extreme superblock fields, CRC recomputed"
        }
        6 => {
            // Through the encoder: a geometry-valid superblock pointing somewhere else.
            let slot = current_slot(img);
            let Ok(mut sb) = Superblock::decode(&img[slot * PAGE..(slot + 1) * PAGE]) else {
                return "encoder (no valid slot)";
            };
            let seg = u64::from(sb.md_segment_pages);
            let segs = sb.md_page_count / seg;
            match rng.gen_range(0..6) {
                0 => sb.log_first_page = sb.md_first_page + rng.gen_range(0..segs) * seg,
                1 => sb.checkpoint.first_page = sb.md_first_page + rng.gen_range(0..segs) * seg,
                2 => sb.checkpoint.len = rng.gen_range(0..=sb.checkpoint.page_count * 4096),
                3 => sb.log_first_seq = extreme(rng, sb.log_first_seq),
                4 => sb.generation = extreme(rng, sb.generation),
                _ => sb.store_id ^= 1,
            }
            if let Ok(page) = sb.encode() {
                img[slot * PAGE..(slot + 1) * PAGE].copy_from_slice(&page);
            }
            "superblock re-encoded with another pointer"
        }
        7 => {
            // A log record altered behind valid CRCs.
            let pages = record_pages(img);
            if pages.is_empty() {
                return "record (none)";
            }
            let p = pages[rng.gen_range(0..pages.len())] * PAGE;
            let plen = u32::from_le_bytes(img[p + 36..p + 40].try_into().unwrap()) as usize;
            let plen = plen.min(len - p - 64);
            for _ in 0..rng.gen_range(1..=4) {
                if plen > 0 && rng.gen_bool(0.8) {
                    let o = p + 64 + rng.gen_range(0..plen);
                    img[o] = if rng.gen_bool(0.5) { rng.gen() } else { 0xFF };
                } else {
                    let o = p + rng.gen_range(8..44);
                    img[o] ^= 1 << rng.gen_range(0..8);
                }
            }
            let crc = crc32c(&img[p + 64..p + 64 + plen]);
            img[p + 40..p + 44].copy_from_slice(&crc.to_le_bytes());
            let crc = crc32c(&img[p..p + 44]);
            img[p + 44..p + 48].copy_from_slice(&crc.to_le_bytes());
            "log record altered, CRCs recomputed"
        }
        _ => {
            // The checkpoint altered behind a recomputed pointer CRC.
            let slot = current_slot(img);
            let Ok(mut sb) = Superblock::decode(&img[slot * PAGE..(slot + 1) * PAGE]) else {
                return "checkpoint (no valid slot)";
            };
            let start = (sb.checkpoint.first_page as usize) * PAGE;
            let n = sb.checkpoint.len as usize;
            if n == 0 || start + n > len {
                return "checkpoint (out of the image)";
            }
            for _ in 0..rng.gen_range(1..=4) {
                let o = start + rng.gen_range(0..n);
                img[o] = match rng.gen_range(0..3) {
                    0 => rng.gen(),
                    1 => 0xFF,
                    _ => img[o] ^ 1,
                };
            }
            sb.checkpoint.crc = crc32c(&img[start..start + n]);
            if let Ok(page) = sb.encode() {
                img[slot * PAGE..(slot + 1) * PAGE].copy_from_slice(&page);
            }
            "checkpoint altered, pointer CRC recomputed"
        }
    }
}

/// Load outcome counts, to show the variants reach both sides.
#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    errs: std::collections::BTreeMap<String, u64>,
}

fn kind(e: &BsError) -> String {
    let s = format!("{e:?}");
    s.split(['(', ' ', '{']).next().unwrap_or("").to_string()
}

/// Loads, fscks and reads; panics only through a bug in the store.
fn exercise(img: &[u8], tally: &mut Tally) {
    let d = device_from(img);
    let report = fsck(&d, FsckOptions::default());
    for read_only in [true, false] {
        let r = BlobStore::load(
            Arc::clone(&d),
            LoadOptions {
                read_only,
                ..Default::default()
            },
        );
        let bs = match r {
            Ok(bs) => bs,
            Err(e) => {
                if read_only {
                    *tally.errs.entry(kind(&e)).or_default() += 1;
                }
                continue;
            }
        };
        if read_only {
            tally.ok += 1;
        }
        let _ = fsck(&d, FsckOptions::default());
        let mut ch = bs.channel().unwrap();
        for info in bs.blobs().unwrap() {
            let b = match bs.open_blob(info.id) {
                Ok(b) => b,
                Err(e) => panic!("listed blob {:#x} does not open: {e:?}", info.id),
            };
            let cs = bs.cluster_size();
            // The first and last 4 KiB of every cluster up to 16, and of the last cluster: every
            // extent lookup and the parent chain are exercised without copying whole clusters.
            let n = b.num_clusters();
            for c in (0..n.min(16)).chain((n > 16).then_some(n - 1)) {
                let _ = b.read(&mut ch, c * cs, PAGE);
                let _ = b.read(&mut ch, (c + 1) * cs - PAGE as u64, PAGE);
            }
            let _ = b.xattr_names();
            drop(b);
        }
        if !read_only {
            let _ = bs.create_blob(CreateOptions {
                num_clusters: 1,
                ..Default::default()
            });
            let _ = bs.unload();
        }
    }
    if report.is_ok_and(|r| !r.is_clean()) {
        // Repair must not panic either; afterwards the store loads or says why not.
        let _ = fsck(&d, FsckOptions { repair: true });
        let _ = BlobStore::load(Arc::clone(&d), LoadOptions::default());
    }
}

fn run_variants(count: u64, first: u64) -> Tally {
    start_watchdog();
    let base = base();
    let mut tally = Tally::default();
    for i in 0..count {
        let seed = first.wrapping_add(i);
        let mut rng = oxblob_sim::rng::rng(seed);
        let mut img = base.clone();
        let mut what = Vec::new();
        for _ in 0..if rng.gen_bool(0.2) { 2 } else { 1 } {
            let k = rng.gen_range(0..9);
            what.push(damage(&mut rng, &mut img, k));
        }
        SEED.with(|s| s.set(seed));
        STARTED_MS.store(now_ms(), Ordering::Release);
        RUNNING.store(seed, Ordering::Release);
        let r = catch_unwind(AssertUnwindSafe(|| exercise(&img, &mut tally)));
        RUNNING.store(u64::MAX, Ordering::Release);
        SEED.with(|s| s.set(u64::MAX));
        if let Err(p) = r {
            let path = format!("/var/tmp/oxblob-corrupt-{seed:#x}.img");
            let _ = std::fs::write(&path, &img);
            let msg = oxblob_sim::panic_message(p.as_ref());
            panic!("variant seed {seed:#x} ({what:?}) panicked: {msg}; image saved to {path}");
        }
    }
    tally
}

#[test]
fn seeded_damage_never_panics() {
    let full = std::env::var("OXBLOB_FULL").is_ok_and(|v| v == "1");
    let count = std::env::var("OXBLOB_VARIANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 40_000 } else { 400 });
    let first = oxblob_sim::rng::seed_from_env(0xC0_2200);
    let t = Instant::now();
    let tally = run_variants(count, first);
    eprintln!(
        "{count} variants from seed {first:#x} in {:?}: {} loaded, errors {:?}",
        t.elapsed(),
        tally.ok,
        tally.errs
    );
    // The damage is real: both outcomes occur, and several error kinds.
    assert!(tally.ok > count / 20, "too few variants load: {tally:?}");
    assert!(
        tally.errs.values().sum::<u64>() > count / 20,
        "too few variants fail: {tally:?}"
    );
    assert!(tally.errs.len() >= 3, "error kinds: {tally:?}");
}

fn load_err(img: &[u8], opts: LoadOptions) -> BsError {
    match BlobStore::load(device_from(img), opts) {
        Ok(_) => panic!("damaged image loaded"),
        Err(e) => e,
    }
}

#[test]
fn not_a_blobstore() {
    let len = base().len();
    let e = load_err(&vec![0u8; len], LoadOptions::default());
    assert_eq!(e, BsError::NotABlobstore);
    let e = load_err(&pattern(5, len), LoadOptions::default());
    assert_eq!(e, BsError::NotABlobstore);
    // Both slots with the magic but zeroed bytes after it: a damaged blobstore, not a stranger.
    let mut img = vec![0u8; len];
    img[..8].copy_from_slice(b"OXBLOBSB");
    assert!(matches!(
        load_err(&img, LoadOptions::default()),
        BsError::BadChecksum { .. }
    ));
}

#[test]
fn truncated_device_is_device_too_small() {
    let img = base();
    // Cut inside the data region, inside the md region, and by one block.
    for keep in [img.len() / 2, 64 * PAGE, 3 * PAGE, img.len() - 512] {
        let e = load_err(&img[..keep], LoadOptions::default());
        assert!(
            matches!(e, BsError::DeviceTooSmall(_)),
            "kept {keep} bytes: {e:?}"
        );
    }
}

#[test]
fn wrong_bstype() {
    let e = load_err(
        base(),
        LoadOptions {
            bstype: oxblob_blobstore::bstype("OTHER"),
            read_only: false,
        },
    );
    assert_eq!(
        e,
        BsError::WrongType {
            expected: oxblob_blobstore::bstype("OTHER"),
            found: oxblob_blobstore::bstype("TEST"),
        }
    );
    // The right tag loads.
    BlobStore::load(
        device_from(base()),
        LoadOptions {
            bstype: oxblob_blobstore::bstype("TEST"),
            read_only: true,
        },
    )
    .unwrap();
}

/// The base image with `f` applied to its current superblock (re-encoded, so the CRC holds).
fn with_superblock(f: impl Fn(&mut Superblock)) -> Vec<u8> {
    let mut img = base().clone();
    let slot = current_slot(&img);
    let mut sb = Superblock::decode(&img[slot * PAGE..(slot + 1) * PAGE]).unwrap();
    f(&mut sb);
    img[slot * PAGE..(slot + 1) * PAGE].copy_from_slice(&sb.encode().unwrap());
    img
}

#[test]
fn unknown_incompat_feature_refuses() {
    let img = with_superblock(|sb| sb.incompat |= 1 << 40);
    for read_only in [false, true] {
        let e = load_err(
            &img,
            LoadOptions {
                read_only,
                ..Default::default()
            },
        );
        assert_eq!(e, BsError::UnknownFeature { bits: 1 << 40 });
    }
}

#[test]
fn unknown_ro_compat_feature_loads_read_only() {
    let img = with_superblock(|sb| sb.ro_compat |= 1 << 3);
    let d = device_from(&img);
    let bs = BlobStore::load(Arc::clone(&d), LoadOptions::default()).unwrap();
    assert!(bs.is_read_only());
    assert!(bs.blobs().unwrap().len() >= 20);
    assert_eq!(
        bs.create_blob(CreateOptions::default()),
        Err(BsError::ReadOnly)
    );
    let id = bs.blobs().unwrap()[0].id;
    assert_eq!(bs.delete_blob(id), Err(BsError::ReadOnly));
    let b = bs.open_blob(id).unwrap();
    assert_eq!(b.set_xattr("n", b"v"), Err(BsError::ReadOnly));
    assert_eq!(b.resize(9), Err(BsError::ReadOnly));
    let mut ch = bs.channel().unwrap();
    assert_eq!(b.write(&mut ch, 0, &[1u8; 4096]), Err(BsError::ReadOnly));
    drop(b);
    bs.unload().unwrap();
    // Nothing was written: not even the load-time superblock.
    assert!(image_of(&d) == img, "a read-only load changed the image");
}

#[test]
fn device_too_small_at_init() {
    let d: Arc<dyn BlockDevice> = Arc::new(MallocDevice::new("tiny", 4096, 64).unwrap());
    match BlobStore::init(d, small_opts()) {
        Err(BsError::DeviceTooSmall(_)) => {}
        other => panic!("expected DeviceTooSmall, got {:?}", other.err()),
    }
    // Exactly one data cluster after the md region is enough.
    let opts = InitOptions {
        md_pages: Some(16),
        ..small_opts()
    };
    let need = (((2 + 16) * PAGE as u64).div_ceil(CLUSTER) + 1) * CLUSTER;
    let d: Arc<dyn BlockDevice> = Arc::new(MallocDevice::new("min", 4096, need / 4096).unwrap());
    let bs = BlobStore::init(Arc::clone(&d), opts.clone()).unwrap();
    assert_eq!(bs.total_clusters(), 1);
    let d: Arc<dyn BlockDevice> =
        Arc::new(MallocDevice::new("min-1", 4096, need / 4096 - 1).unwrap());
    assert!(matches!(
        BlobStore::init(d, opts),
        Err(BsError::DeviceTooSmall(_))
    ));
}

/// The base image with one more Txn record appended at the log tail (valid CRCs, store id,
/// epoch and seq), carrying `muts`.
fn with_record(muts: Vec<oxblob_format::record::Mutation>) -> Vec<u8> {
    use oxblob_format::record::{encode_record_into, encode_txn, record_len, RecordKind};
    let d = device_from(base());
    let ins = inspect(d.as_ref()).unwrap();
    assert!(ins.packed);
    let sb = &ins.superblock;
    let payload = encode_txn(&muts).unwrap();
    let mut img = base().clone();
    let at = ins.tail_offset as usize;
    encode_record_into(
        &mut img[at..at + record_len(payload.len())],
        sb.store_id,
        sb.generation,
        ins.next_seq,
        RecordKind::Txn,
        &payload,
    )
    .unwrap();
    // Sanity: the record is live (the load replays it).
    let again = inspect(device_from(&img).as_ref()).unwrap();
    assert_eq!(again.log.len(), ins.log.len() + 1);
    img
}

/// Regression: a superblock whose generation or log_first_seq is near `u64::MAX` made the next
/// commit overflow (`next_seq += 1`, `generation += 1`); now the load refuses it as corrupt.
#[test]
fn counters_near_u64_max_are_corrupt() {
    for img in [
        with_superblock(|sb| sb.log_first_seq = u64::MAX),
        with_superblock(|sb| sb.generation = u64::MAX),
    ] {
        for read_only in [false, true] {
            let e = load_err(
                &img,
                LoadOptions {
                    read_only,
                    ..Default::default()
                },
            );
            assert!(matches!(e, BsError::Corrupt { .. }), "{e:?}");
        }
    }
    // A logged SetNextId near the end of the id space: corrupt, not an overflow at create.
    use oxblob_format::record::Mutation;
    let img = with_record(vec![Mutation::SetNextId(u64::MAX)]);
    let e = load_err(&img, LoadOptions::default());
    assert!(matches!(e, BsError::Corrupt { .. }), "{e:?}");
}

/// Regression: a blob record whose size in bytes overflows u64 panicked in `size_bytes`; now
/// the load refuses it, and `resize`/`create` refuse such sizes with `InvalidArgument`.
#[test]
fn blob_size_overflow_is_refused() {
    use oxblob_format::record::Mutation;
    let d = device_from(base());
    let bs = BlobStore::load(
        Arc::clone(&d),
        LoadOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let info = bs
        .blobs()
        .unwrap()
        .into_iter()
        .find(|b| b.flags & 1 != 0)
        .unwrap();
    let b = bs.open_blob(info.id).unwrap();
    let rec = oxblob_blobstore::BlobRecord {
        id: info.id,
        flags: info.flags,
        num_clusters: u64::MAX / 2,
        parent: info.parent,
        extents: b.extents(),
        xattrs: Default::default(),
    };
    drop(b);
    drop(bs);
    let img = with_record(vec![Mutation::PutBlob(Arc::new(rec))]);
    let e = load_err(&img, LoadOptions::default());
    assert!(matches!(e, BsError::Corrupt { .. }), "{e:?}");

    let bs = BlobStore::load(device_from(base()), LoadOptions::default()).unwrap();
    let b = bs.open_blob(info.id).unwrap();
    assert!(matches!(
        b.resize(u64::MAX / 2),
        Err(BsError::InvalidArgument(_))
    ));
    assert_eq!(b.num_clusters(), info.num_clusters);
    drop(b);
    assert!(matches!(
        bs.create_blob(CreateOptions {
            num_clusters: u64::MAX,
            thin: true,
            ..Default::default()
        }),
        Err(BsError::InvalidArgument(_))
    ));
}
